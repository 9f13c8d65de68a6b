use std::fs::File;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use serde_json::json;

use crate::config::Config;
use crate::pipeline::{Action, Outcome, Pipeline};
use crate::privacy::mask_digits;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also write each rejected input line, unchanged, to this file.
    #[arg(long)]
    rejected: Option<PathBuf>,
    /// Stamp tasks with this creation time (RFC 3339) instead of the clock: reproducible
    /// output for replays and tests.
    #[arg(long, value_parser = parse_time)]
    now: Option<i64>,
    /// Print one line per input line instead of the tasks: its score, level, the rules that
    /// fired, the figures of the windowed features it saw (those an enabled rule reads), and
    /// what became of it (task, below threshold, suppressed by which task, or rejected and
    /// why), so an analyst sees why an event did not become a task.
    #[arg(long)]
    explain: bool,
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
        let outcome = pipeline.process(&line, 0, now, &mut buf);
        if args.explain {
            let why = explain(&pipeline, n + 1, &line, &outcome, &buf);
            serde_json::to_writer(&mut out, &why)?;
            out.write_all(b"\n")?;
        }
        match outcome {
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
                    if !args.explain {
                        out.write_all(&buf)?;
                        out.write_all(b"\n")?;
                    }
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

/// One input line explained. The rules are named with their scores; a task's own reasons
/// (with the event's figures) are in the task. Error messages are masked like the logs.
fn explain(
    pipeline: &Pipeline,
    line_no: usize,
    line: &[u8],
    outcome: &Outcome,
    task: &[u8],
) -> serde_json::Value {
    let event_id = serde_json::from_slice::<serde_json::Value>(line)
        .ok()
        .and_then(|v| {
            v.get("event_id")
                .and_then(|e| e.as_str())
                .map(str::to_string)
        });
    match outcome {
        Outcome::Rejected(e) => json!({
            "line": line_no,
            "event_id": event_id,
            "result": "rejected",
            "error": mask_digits(&e.to_string()),
        }),
        Outcome::Scored(s) => {
            let rule_set = pipeline.rules();
            let rules = rule_set.rules();
            let fired: Vec<_> = s
                .fired
                .iter()
                .map(|&i| {
                    let r = &rules[i as usize];
                    json!({"rule_id": r.id, "score": r.score})
                })
                .collect();
            // The figures this event saw, one per kept feature (a feature no enabled rule
            // reads has no window, so no figure to show); null where there is none.
            let figures: serde_json::Map<String, serde_json::Value> = pipeline
                .rules()
                .features()
                .iter()
                .zip(s.figures)
                .filter(|(f, _)| f.used)
                .map(|(f, x)| (f.id.clone(), figure_json(x)))
                .collect();
            let mut v = json!({
                "line": line_no,
                "event_id": event_id,
                "score": s.score,
                "level": s.level,
                "fired": fired,
                "figures": figures,
            });
            let o = v.as_object_mut().expect("an object");
            match &s.action {
                Action::BelowThreshold => {
                    o.insert("result".into(), json!("below_threshold"));
                    o.insert(
                        "dispatch_level".into(),
                        json!(pipeline.dispatch_min_level()),
                    );
                }
                Action::Suppressed { open } => {
                    o.insert("result".into(), json!("suppressed"));
                    o.insert("suppressed_by".into(), json!(open));
                }
                Action::Task(t) => {
                    o.insert(
                        "result".into(),
                        json!(if t.upgrade_of.is_some() {
                            "upgrade"
                        } else {
                            "task"
                        }),
                    );
                    o.insert("task_id".into(), json!(t.task_id));
                    let reasons = serde_json::from_slice::<serde_json::Value>(task)
                        .ok()
                        .and_then(|t| t.get("reasons").cloned());
                    o.insert("reasons".into(), reasons.unwrap_or(json!([])));
                }
            }
            v
        }
    }
}

/// A figure as JSON: whole numbers as integers, none as null.
fn figure_json(x: f64) -> serde_json::Value {
    if !x.is_finite() {
        serde_json::Value::Null
    } else if x.fract() == 0.0 && x.abs() < 9e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}
