use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::config::Config;
use crate::pipeline::{Action, Outcome, Pipeline};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also write each rejected input line, unchanged, to this file.
    #[arg(long)]
    rejected: Option<PathBuf>,
    /// Stamp tasks with this creation time (RFC 3339) instead of the clock: reproducible
    /// output for replays and tests.
    #[arg(long, value_parser = parse_time)]
    now: Option<i64>,
}

fn parse_time(s: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

#[derive(Default)]
struct Totals {
    events: u64,
    new: u64,
    upgrades: u64,
    suppressed: u64,
    below: u64,
    rejected: u64,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let (pipeline, _) = Pipeline::load(config).context("loading the pipeline")?;
    let mut rejected_out = match &args.rejected {
        Some(p) => Some(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let mut out = super::stdout();
    let mut buf = Vec::with_capacity(4096);
    let mut totals = Totals::default();
    let started = Instant::now();
    for (n, line) in std::io::stdin().lock().split(b'\n').enumerate() {
        let line = line.context("reading stdin")?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        totals.events += 1;
        let now = args.now.unwrap_or_else(super::now_ms);
        buf.clear();
        match pipeline.process(&line, 0, now, &mut buf) {
            Outcome::Rejected(e) => {
                totals.rejected += 1;
                eprintln!("line {}: {e}", n + 1);
                if let Some(w) = rejected_out.as_mut() {
                    w.write_all(&line)?;
                    w.write_all(b"\n")?;
                }
            }
            Outcome::Scored(s) => match s.action {
                Action::BelowThreshold => totals.below += 1,
                Action::Suppressed { .. } => totals.suppressed += 1,
                Action::Task(t) => {
                    if t.upgrade_of.is_some() {
                        totals.upgrades += 1;
                    } else {
                        totals.new += 1;
                    }
                    out.write_all(&buf)?;
                    out.write_all(b"\n")?;
                }
            },
        }
    }
    out.flush()?;
    if let Some(w) = rejected_out.as_mut() {
        w.flush()?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "scored {} events in {:.2}s: {} tasks ({} new, {} upgrades), {} suppressed, \
         {} below threshold, {} rejected",
        totals.events,
        secs,
        totals.new + totals.upgrades,
        totals.new,
        totals.upgrades,
        totals.suppressed,
        totals.below,
        totals.rejected
    );
    Ok(ExitCode::SUCCESS)
}
