//! `dissuade bench`: end-to-end throughput through Kafka against the pass-through ceiling,
//! and latency at a fixed offered rate. Prints a table, then one JSON line (the last line of
//! stdout) for scripts and BENCHMARKS.md.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::kafka::bench::{self, BenchOptions, BenchReport};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events preloaded into the input topic. The embedded broker keeps every record in
    /// memory: about 0.5 GiB per million events for the input and baseline topics together.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Bootstrap servers of a real cluster (default: the embedded broker, in this process).
    #[arg(long)]
    brokers: Option<String>,
    /// Run the embedded broker in a child process, so that this process's RSS is the
    /// processor's and the clients' alone.
    #[arg(long, conflicts_with = "brokers")]
    broker_process: bool,
    /// Partitions of the benchmark topics (default: the config's).
    #[arg(long)]
    partitions: Option<i32>,
    /// Seed of the synthetic events.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Event-time spacing of the preloaded events, in milliseconds.
    #[arg(long, default_value_t = 10)]
    event_interval_ms: i64,
    /// Skip the pass-through baseline.
    #[arg(long)]
    skip_baseline: bool,
    /// Then offer a fixed rate, first to a pass-through copier (the Kafka floor, unless
    /// --skip-baseline), then to a fresh processor, and measure end-to-end latency from each
    /// event's scheduled send time (corrected for coordinated omission).
    #[arg(long)]
    latency: bool,
    /// Offered rate of the latency phase, events/s (default: half the measured processor
    /// rate).
    #[arg(long, requires = "latency")]
    rate: Option<f64>,
    /// Length of the latency phase.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    latency_duration: Duration,
    /// RSS sampling interval during the processor phase.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    rss_interval: Duration,
    /// Internal: serve the embedded broker on this port (0: any) until stdin closes.
    #[arg(long, hide = true)]
    serve_broker: Option<u16>,
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    if let Some(port) = args.serve_broker {
        #[cfg(feature = "embedded-broker")]
        {
            bench::serve_broker(port, &rt)?;
            return Ok(ExitCode::SUCCESS);
        }
        #[cfg(not(feature = "embedded-broker"))]
        {
            let _ = port;
            anyhow::bail!(crate::kafka::KafkaSetupError::EmbeddedUnavailable);
        }
    }
    anyhow::ensure!(args.events > 0, "--events must be at least 1");
    let opts = BenchOptions {
        events: args.events,
        brokers: args.brokers,
        broker_process: args.broker_process,
        partitions: args.partitions,
        seed: args.seed,
        event_interval_ms: args.event_interval_ms,
        skip_baseline: args.skip_baseline,
        latency: args.latency,
        rate: args.rate,
        latency_duration: args.latency_duration,
        rss_interval: args.rss_interval,
    };
    let mut progress = |line: &str| eprintln!("bench: {line}");
    let report = bench::run(&config, &opts, &rt, &mut progress)?;
    // The runtime still holds the embedded broker's tasks; do not wait for them.
    rt.shutdown_background();
    let mut out = super::stdout();
    write!(out, "{}", table(&report))?;
    writeln!(
        out,
        "{}",
        serde_json::to_string(&report).context("encoding the report")?
    )?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn table(r: &BenchReport) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let rate = |x: f64| format!("{:>12.0} events/s", x);
    let _ = writeln!(
        t,
        "\ndissuade bench  {}  commit {}  broker {}  {} partitions, {} worker(s)",
        r.date,
        r.commit.as_deref().unwrap_or("?"),
        r.broker,
        r.partitions,
        r.workers
    );
    let _ = writeln!(
        t,
        "machine         {} cores, {}, {:.1} GiB",
        r.machine.cores,
        r.machine.cpu_model,
        r.machine.mem_total_mib / 1024.0
    );
    let _ = writeln!(t, "{:-<72}", "");
    let _ = writeln!(t, "events          {:>12}", r.events);
    let _ = writeln!(
        t,
        "tasks           {:>12}  (suppressed {}, dead letters {})",
        r.tasks, r.suppressed, r.dead_letters
    );
    let _ = writeln!(t, "preload         {}", rate(r.preload_events_per_s));
    match (r.baseline_events_per_s, r.baseline_startup_s) {
        (Some(b), Some(s)) => {
            let _ = writeln!(t, "baseline        {}  (group join {s:.1} s)", rate(b));
        }
        _ => {
            let _ = writeln!(t, "baseline        skipped");
        }
    }
    let _ = writeln!(
        t,
        "processor       {}  (group join {:.1} s)",
        rate(r.processor_events_per_s),
        r.processor_startup_s
    );
    if let Some(ratio) = r.ratio {
        let _ = writeln!(t, "ratio           {ratio:>12.2}  processor / baseline");
    }
    match &r.latency {
        Some(l) => {
            let _ = writeln!(
                t,
                "latency at      {:>12.0} events/s offered (from each event's scheduled send time)",
                l.offered_rate
            );
            for (name, l) in [
                ("pass-through", r.baseline_latency.as_ref()),
                ("processor", Some(l)),
            ] {
                let Some(l) = l else { continue };
                let _ = writeln!(
                    t,
                    "  {name:<13} p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms  \
                     ({} read back; {:.0}/s achieved, max send lag {:.1} ms)",
                    l.p50_ms,
                    l.p99_ms,
                    l.p999_ms,
                    l.max_ms,
                    l.samples,
                    l.achieved_rate,
                    l.max_send_lag_ms
                );
            }
            if let (Some(a50), Some(a99)) = (l.ack_p50_ms, l.ack_p99_ms) {
                let _ = writeln!(
                    t,
                    "  to task ack   p50 {a50:.2} ms  p99 {a99:.2} ms  (processor's own histogram)"
                );
            }
        }
        None => {
            let _ = writeln!(t, "latency         not measured (--latency)");
        }
    }
    let m = &r.rss;
    let _ = writeln!(
        t,
        "RSS             peak {:.0} MiB; preload {:.0} -> {:.0} MiB{}",
        m.peak_mib,
        m.before_preload_mib,
        m.after_preload_mib,
        m.broker_bytes_per_event.map_or(String::new(), |b| format!(
            " ({b:.0} B/event in the broker)"
        ))
    );
    let _ = writeln!(
        t,
        "  processor     start {:.0} MiB, max {:.0} MiB, end {:.0} MiB over {} samples",
        m.processor_start_mib,
        m.processor_max_mib,
        m.processor_end_mib,
        m.processor_samples.len()
    );
    if let Some(b) = m.broker_peak_mib {
        let _ = writeln!(t, "  broker child  peak {b:.0} MiB");
    }
    t
}
