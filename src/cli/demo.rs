use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::kafka::generate::{generate, GenerateCounters, GenerateOptions};
use crate::kafka::producer_config;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::synth::{Synth, SynthConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Synthetic events per second.
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Send this many events, wait until all are processed, print totals and exit.
    #[arg(long)]
    events: Option<u64>,
    /// Stop generating after this long (default 10m when --events is not given).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Seed of the victim population and event mix.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Share of deliberately invalid records, to show the dead-letter path.
    #[arg(long, default_value_t = 0.002)]
    bad_share: f64,
    /// Seconds between summary lines.
    #[arg(long, default_value_t = 2)]
    every: u64,
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(demo(config, args))
}

async fn demo(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = CancellationToken::new();
    let service = Service::start(&config, true, shutdown.clone())
        .await
        .context("starting the service")?;
    tokio::spawn(super::run::stop_on_signal(shutdown.clone()));
    let k = &config.kafka;
    eprintln!(
        "dissuade demo: broker {} (any Kafka client can connect, e.g. \
         `kcat -b {} -C -t {}`), metrics {}",
        service.bootstrap,
        service.bootstrap,
        k.task_topic,
        service
            .metrics_addr
            .map_or("off".to_string(), |a| format!("http://{a}/metrics")),
    );
    eprintln!(
        "generating {} at {} events/s; Ctrl-C stops",
        match (args.events, args.duration) {
            (Some(n), _) => format!("{n} events"),
            (None, Some(d)) => format!("for {}", humantime::format_duration(d)),
            (None, None) => "for 10m".into(),
        },
        args.rate
    );

    let cells = service.pipeline.cell_table();
    let synth = Synth::new(
        cells,
        SynthConfig {
            seed: args.seed,
            bad_share: args.bad_share,
            ..SynthConfig::default()
        },
    );
    let opts = GenerateOptions {
        topic: k.input_topic.clone(),
        events: args.events,
        rate: Some(args.rate),
        duration: args
            .duration
            .or(args.events.is_none().then(|| Duration::from_secs(600))),
        progress: false,
    };
    let counters = Arc::new(GenerateCounters::default());
    let producer = producer_config(k, &service.bootstrap);
    let gen_counters = counters.clone();
    let gen_stop = shutdown.clone();
    let generator = tokio::task::spawn_blocking(move || {
        generate(&producer, synth, &opts, gen_counters, &gen_stop)
    });

    let metrics = service.metrics.clone();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    ticker.tick().await;
    let mut last = (Instant::now(), 0u64);
    let mut generated: Option<u64> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let now = Instant::now();
                let consumed = metrics.events_consumed.get();
                let rate = (consumed - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, consumed);
                eprintln!("{}", summary_line(&metrics, started.elapsed(), rate));
            }
            _ = shutdown.cancelled() => break,
        }
        if generated.is_none() && generator.is_finished() {
            generated = Some(counters.delivered.load(Ordering::Relaxed));
        }
        // With --events the demo ends by itself once every event is processed and delivered.
        if let (Some(n), Some(_)) = (generated, args.events) {
            if metrics.events_consumed.get() >= n && metrics.in_flight.get() == 0 {
                break;
            }
        }
        if args.events.is_none() && generated.is_some() {
            break;
        }
    }
    shutdown.cancel();
    let report = generator.await.context("generator task")?;
    let result = service.wait().await;
    eprintln!("{}", summary_line(&metrics, started.elapsed(), 0.0));
    let mut out = super::stdout();
    let printed =
        print_totals(&mut out, &metrics, report.ok().map(|r| r.sent)).and_then(|()| out.flush());
    result?;
    printed?;
    Ok(ExitCode::SUCCESS)
}

fn summary_line(m: &Metrics, elapsed: Duration, rate: f64) -> String {
    let [_, low, medium, high, critical] = m.tasks_by_level();
    let ([_, p99, _], n) = m.recent_end_to_end_quantiles();
    format!(
        "[{:>5}s] {:>7.0} ev/s | consumed {:>9} | tasks {:>7} (critical {}, high {}, medium {}, low {}) \
         | upgrades {} | suppressed {} | dead letters {} | lag {} | e2e p99 (last {}s) {}",
        elapsed.as_secs(),
        rate,
        m.events_consumed.get(),
        low + medium + high + critical,
        critical,
        high,
        medium,
        low,
        m.upgrades.get(),
        m.suppressed(),
        m.dead_letters(),
        m.total_lag(),
        crate::metrics::RECENT.as_secs(),
        if n == 0 {
            "-".to_string()
        } else {
            format!("{:.1} ms", p99 as f64 / 1000.0)
        }
    )
}

fn print_totals(out: &mut impl Write, m: &Metrics, sent: Option<u64>) -> std::io::Result<()> {
    let [_, low, medium, high, critical] = m.tasks_by_level();
    let ([p50, p99, p999], _) = m.end_to_end_quantiles();
    writeln!(
        out,
        "events sent        {}",
        sent.map_or("?".into(), |s| s.to_string())
    )?;
    writeln!(out, "events consumed    {}", m.events_consumed.get())?;
    writeln!(
        out,
        "tasks              {} (critical {critical}, high {high}, medium {medium}, low {low}), {} upgrades",
        low + medium + high + critical,
        m.upgrades.get()
    )?;
    writeln!(out, "tasks delivered    {}", m.tasks_delivered.get())?;
    writeln!(out, "suppressed         {}", m.suppressed())?;
    writeln!(out, "dead letters       {}", m.dead_letters())?;
    writeln!(
        out,
        "end-to-end         p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms",
        p50 as f64 / 1000.0,
        p99 as f64 / 1000.0,
        p999 as f64 / 1000.0
    )?;
    Ok(())
}
