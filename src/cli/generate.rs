use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::grid::cell_table::CellTable;
use crate::kafka::generate::{generate, GenerateCounters, GenerateOptions};
use crate::kafka::producer_config;
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
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let brokers = args.brokers.unwrap_or_else(|| config.kafka.brokers.clone());
    anyhow::ensure!(
        brokers != crate::config::EMBEDDED,
        "`generate` writes to a running cluster: pass --brokers HOST:PORT (the demo has its own generator)"
    );
    let cells = match &config.grid.cell_table {
        Some(p) => CellTable::load(&config.resolve(p)).context("loading the cell table")?,
        None => anyhow::bail!("`grid.cell_table` is needed to place synthetic victims"),
    };
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
    eprintln!(
        "sent {} events to {} in {:.1}s ({:.0}/s): {} delivered, {} failed",
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
