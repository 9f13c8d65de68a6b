use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::grid::cell_table::CellTable;
use crate::kafka::generate::{generate, GenerateCounters, GenerateOptions};
use crate::kafka::producer_config;
use crate::synth::campaigns::{CampaignConfig, Campaigns};
use crate::synth::{Synth, SynthConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers (defaults to the config's `kafka.brokers`).
    #[arg(long)]
    brokers: Option<String>,
    /// Topic to write to (defaults to the config's input topic).
    #[arg(long)]
    topic: Option<String>,
    /// Events per second (unlimited when absent).
    #[arg(long)]
    rate: Option<f64>,
    /// Number of events to write.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Stop after this long (e.g. `5m`).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Seed of the victim population and event mix.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Share of deliberately invalid records (to exercise the dead-letter path).
    #[arg(long, default_value_t = 0.0)]
    bad_share: f64,
    /// Write labelled events to this file (JSON lines) instead of Kafka: ordinary calls,
    /// harmless look-alikes and fraud campaigns, for `dissuade backtest --labels`. Event
    /// times are spaced by --rate (default 100/s) and end now.
    #[arg(long, requires = "labels")]
    out: Option<PathBuf>,
    /// With --out: the truth about each event, one JSON line `{"event_id", "fraud", "kind"}`.
    #[arg(long, requires = "out")]
    labels: Option<PathBuf>,
    /// With --out: the share of events that are fraud.
    #[arg(long, default_value_t = 0.05)]
    fraud_share: f64,
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    if let (Some(out), Some(labels)) = (&args.out, &args.labels) {
        return write_labelled(&config, &args, out, labels);
    }
    let brokers = args.brokers.unwrap_or_else(|| config.kafka.brokers.clone());
    anyhow::ensure!(
        brokers != crate::config::EMBEDDED,
        "`generate` writes to a running cluster: pass --brokers HOST:PORT (the demo has its own generator)"
    );
    let cells = load_cells(&config)?;
    let synth = Synth::new(
        &cells,
        SynthConfig {
            seed: args.seed,
            bad_share: args.bad_share,
            ..SynthConfig::default()
        },
    );
    let opts = GenerateOptions {
        topic: args
            .topic
            .unwrap_or_else(|| config.kafka.input_topic.clone()),
        events: Some(args.events),
        rate: args.rate,
        duration: args.duration,
        progress: true,
    };
    let shutdown = CancellationToken::new();
    let stopper = shutdown.clone();
    ctrlc_cancel(stopper);
    let report = generate(
        &producer_config(&config.kafka, &brokers),
        synth,
        &opts,
        Arc::new(GenerateCounters::default()),
        &shutdown,
    )
    .context("producing events")?;
    let why = report
        .first_error
        .as_ref()
        .map(|e| format!(" (the first: {e})"))
        .unwrap_or_default();
    eprintln!(
        "sent {} events to {} in {:.1}s ({:.0}/s): {} delivered, {} failed{why}",
        report.sent,
        opts.topic,
        report.elapsed.as_secs_f64(),
        report.sent as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.delivered,
        report.failed
    );
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Writes `args.events` labelled events and their labels (see [`crate::synth::campaigns`]).
/// Fraud calls use the numbers of the rule set's `known_fraud_numbers` and
/// `official_numbers` lists, when it declares them.
fn write_labelled(
    config: &Config,
    args: &Args,
    out: &Path,
    labels: &Path,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.fraud_share),
        "--fraud-share must be between 0 and 1"
    );
    let cells = load_cells(config)?;
    let rules_path = config.resolve(&config.rules.path);
    let rules = crate::rules::RuleSet::load(&rules_path)
        .with_context(|| format!("loading {}", rules_path.display()))?;
    let list = |id: &str| -> anyhow::Result<Vec<String>> {
        match rules.lists().iter().find(|l| l.id == id) {
            Some(l) => list_numbers(&l.file),
            None => Ok(Vec::new()),
        }
    };
    let mut cfg = CampaignConfig {
        seed: args.seed,
        fraud_share: args.fraud_share,
        known_fraud_numbers: list("known_fraud_numbers")?,
        ..CampaignConfig::default()
    };
    let official = list("official_numbers")?;
    if !official.is_empty() {
        cfg.official_numbers = official;
    }
    let mut gen = Campaigns::new(&cells, cfg, &format!("lab{:x}", args.seed));
    let create = |p: &Path| -> anyhow::Result<BufWriter<File>> {
        Ok(BufWriter::new(
            File::create(p).with_context(|| format!("creating {}", p.display()))?,
        ))
    };
    let (mut events, mut truth) = (create(out)?, create(labels)?);
    let step_ms = 1000.0 / args.rate.unwrap_or(100.0).max(1e-3);
    let start = super::now_ms() - (args.events as f64 * step_ms) as i64;
    let mut buf = Vec::with_capacity(1024);
    let mut fraud = 0u64;
    for i in 0..args.events {
        buf.clear();
        let (label, _) = gen.next_event(start + (i as f64 * step_ms) as i64, &mut buf);
        fraud += u64::from(label.fraud);
        events.write_all(&buf)?;
        events.write_all(b"\n")?;
        serde_json::to_writer(&mut truth, &label)?;
        truth.write_all(b"\n")?;
    }
    events.flush()?;
    truth.flush()?;
    eprintln!(
        "wrote {} events ({} fraud) to {} and their labels to {}",
        args.events,
        fraud,
        out.display(),
        labels.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn load_cells(config: &Config) -> anyhow::Result<CellTable> {
    match &config.grid.cell_table {
        Some(p) => CellTable::load(&config.resolve(p)).context("loading the cell table"),
        None => anyhow::bail!("`grid.cell_table` is needed to place synthetic victims"),
    }
}

/// The numbers of a list file as written (one per line, `#` comments).
fn list_numbers(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Cancels `token` on SIGINT/SIGTERM from a small runtime of its own.
fn ctrlc_cancel(token: CancellationToken) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("signal runtime");
        rt.block_on(super::run::stop_on_signal(token));
    });
}
