//! `dissuade bench`: end-to-end throughput and latency through Kafka, against the ceiling the
//! Kafka I/O itself allows on the same machine.
//!
//! 1. **Preload**: N synthetic events (keyed by callee, one every `event_interval_ms` of event
//!    time) are produced into a fresh input topic.
//! 2. **Baseline**: a pass-through consumer group copies every record to an output topic with
//!    the processor's client settings ([`consumer_config`], [`producer_config`]) and no
//!    processing: the Kafka ceiling.
//! 3. **Processor**: [`processor::spawn`] consumes the same records in its own group, as
//!    `dissuade run` would. RSS is sampled while it runs.
//! 4. **Latency** (optional): a fixed rate is offered to a pass-through copier (the Kafka
//!    floor), then to a fresh processor; every output read back is timed from the moment its
//!    event was *scheduled* to be sent, so a stall delays the clock of every event behind it
//!    (no coordinated omission).
//!
//! Rates count from the first record a group receives to the last output acknowledged, so
//! the group join is reported apart, as start-up. Every topic is named after the run and
//! deleted once its phase is over: the embedded broker holds records in memory, and a
//! benchmark's broker keeps all of them (no retention: its input is written before it is read).

use std::io::BufRead;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{consumer_config, ensure_topics, processor, producer_config};
use crate::config::{Config, KafkaConfig};
use crate::http::Health;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::synth::{Synth, SynthConfig};

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Events preloaded and consumed by each group.
    pub events: u64,
    /// Bootstrap servers of a real cluster; `None` starts the embedded broker.
    pub brokers: Option<String>,
    /// Run the embedded broker in a child process (so this process's RSS is the clients'
    /// and the processor's alone). Ignored with `brokers`.
    pub broker_process: bool,
    /// Partitions of the topics created; `None`: the config's.
    pub partitions: Option<i32>,
    pub seed: u64,
    /// Event-time spacing of preloaded events (drives suppression: 10 ms puts 180,000 events
    /// in one 30-minute window).
    pub event_interval_ms: i64,
    /// Skip the pass-through baseline.
    pub skip_baseline: bool,
    /// Run the latency phase after the throughput phases.
    pub latency: bool,
    /// Offered rate of the latency phase; `None`: half the measured processor rate.
    pub rate: Option<f64>,
    pub latency_duration: Duration,
    /// How often RSS is sampled during the processor phase.
    pub rss_interval: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            events: 10_000_000,
            brokers: None,
            broker_process: false,
            partitions: None,
            seed: 2026,
            event_interval_ms: 10,
            skip_baseline: false,
            latency: false,
            rate: None,
            latency_duration: Duration::from_secs(30),
            rss_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub date: String,
    pub commit: Option<String>,
    /// `in-process`, `child-process` or the bootstrap servers of a real cluster.
    pub broker: String,
    pub partitions: i32,
    pub workers: usize,
    pub events: u64,
    pub tasks: u64,
    pub suppressed: u64,
    pub dead_letters: u64,
    pub preload_events_per_s: f64,
    pub baseline_events_per_s: Option<f64>,
    pub processor_events_per_s: f64,
    /// processor / baseline.
    pub ratio: Option<f64>,
    /// Seconds from subscribing to the first record (group join).
    pub baseline_startup_s: Option<f64>,
    pub processor_startup_s: f64,
    /// The latency mode through the processor (`--latency`).
    pub latency: Option<LatencyReport>,
    /// The same offered rate through the pass-through copier: the Kafka floor.
    pub baseline_latency: Option<LatencyReport>,
    pub rss: RssReport,
    pub machine: Machine,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub offered_rate: f64,
    pub achieved_rate: f64,
    pub duration_s: f64,
    pub events: u64,
    /// Tasks timed (events that became tasks and were read back).
    pub samples: u64,
    /// From the event's scheduled send time to the task read back by a consumer of the task
    /// topic (coordinated-omission free).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The processor's own histogram: event time (ms, the scheduled send time) to the task
    /// acknowledged by the broker (`None` for the pass-through).
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    /// How far the sender fell behind its schedule at worst.
    pub max_send_lag_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RssReport {
    /// VmHWM of this process at the end.
    pub peak_mib: f64,
    pub before_preload_mib: f64,
    pub after_preload_mib: f64,
    /// (after - before preload) / events: what the in-process broker keeps per event.
    pub broker_bytes_per_event: Option<f64>,
    pub processor_start_mib: f64,
    pub processor_end_mib: f64,
    pub processor_max_mib: f64,
    /// RSS during the processor phase: (seconds, events consumed, MiB).
    pub processor_samples: Vec<(f64, u64, f64)>,
    /// VmHWM of the broker child process (`--broker-process`).
    pub broker_peak_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub mem_total_mib: f64,
}

/// The pipeline as `dissuade run` builds it: rules that read caller-side windows take their
/// caller figures from the by-caller stages, which the processor then starts in front of it,
/// so that their two hops are measured too.
fn service_pipeline(config: &Config) -> anyhow::Result<Pipeline> {
    use anyhow::Context;
    let (mut pipeline, _) = Pipeline::load(config).context("loading the pipeline")?;
    pipeline.take_caller_figures_from_records();
    Ok(pipeline)
}

/// Reports progress lines (to stderr in the CLI).
pub type Progress<'a> = &'a mut dyn FnMut(&str);

/// Runs the whole benchmark. The embedded broker needs `rt` (a multi-threaded runtime).
pub fn run(
    config: &Config,
    opts: &BenchOptions,
    rt: &tokio::runtime::Runtime,
    progress: Progress<'_>,
) -> anyhow::Result<BenchReport> {
    use anyhow::Context;
    let mut k = config.kafka.clone();
    if let Some(p) = opts.partitions {
        k.partitions = p;
    }
    let workers = match k.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        n => n,
    };
    let (broker, bootstrap) = start_broker(opts, rt)?;
    progress(&format!("broker: {} ({bootstrap})", broker.describe()));

    let id = format!(
        "bench-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp()
    );
    let topic = |s: &str| format!("{id}-{s}");
    k.input_topic = topic("in");
    k.task_topic = topic("tasks");
    k.dlq_topic = topic("dlq");
    k.state_topic = topic("state");
    k.by_caller_topic = topic("by-caller");
    k.with_caller_figures_topic = topic("with-caller-figures");
    let copy_topic = topic("copy");
    rt.block_on(ensure_topics(
        &k,
        &bootstrap,
        &[&k.input_topic, &k.task_topic, &k.dlq_topic, &copy_topic],
    ))
    .context("creating the benchmark topics")?;

    let pipeline = service_pipeline(config)?;
    let before_preload = rss_mib();
    progress(&format!(
        "preloading {} events into {}",
        opts.events, k.input_topic
    ));
    let synth = Synth::new(
        &pipeline.cell_table(),
        SynthConfig {
            seed: opts.seed,
            ..SynthConfig::default()
        },
    )
    .with_run_id(&id);
    let preload_rate = preload(&k, &bootstrap, synth, opts, progress)?;
    let after_preload = rss_mib();
    progress(&format!(
        "preloaded at {preload_rate:.0} events/s; RSS {before_preload:.0} -> {after_preload:.0} MiB"
    ));

    let baseline = if opts.skip_baseline {
        None
    } else {
        let mut kb = k.clone();
        kb.group_id = topic("copy-group");
        progress("baseline: pass-through copy, same client settings, no processing");
        let b = pass_through(
            &kb,
            &bootstrap,
            &copy_topic,
            Until::Count(opts.events),
            &AtomicBool::new(false),
            progress,
        )?;
        progress(&format!(
            "baseline: {:.0} events/s (group join {:.1} s)",
            b.rate, b.startup_s
        ));
        delete_topics(rt, &k, &bootstrap, &[&copy_topic], progress);
        Some(b)
    };

    let mut kp = k.clone();
    kp.group_id = topic("proc-group");
    progress("processor: the same records through the pipeline");
    let proc = run_processor(&kp, &bootstrap, pipeline, opts, progress)?;
    progress(&format!(
        "processor: {:.0} events/s (group join {:.1} s)",
        proc.rate, proc.startup_s
    ));
    delete_topics(
        rt,
        &k,
        &bootstrap,
        &[&k.input_topic, &k.task_topic, &k.dlq_topic, &k.state_topic],
        progress,
    );

    let (latency, baseline_latency) = if opts.latency {
        let rate = opts.rate.unwrap_or(proc.rate / 2.0);
        let pipeline = service_pipeline(config)?;
        let cells = pipeline.cell_table().clone();
        let topics = |tag: &str| {
            let mut kl = k.clone();
            kl.input_topic = topic(&format!("{tag}-in"));
            kl.task_topic = topic(&format!("{tag}-tasks"));
            kl.dlq_topic = topic(&format!("{tag}-dlq"));
            kl.state_topic = topic(&format!("{tag}-state"));
            kl.by_caller_topic = topic(&format!("{tag}-by-caller"));
            kl.with_caller_figures_topic = topic(&format!("{tag}-with-caller-figures"));
            kl.group_id = topic(&format!("{tag}-group"));
            kl
        };
        let baseline = if opts.skip_baseline {
            None
        } else {
            let kl = topics("lat-copy");
            let copy = format!("{}-copy", kl.input_topic);
            rt.block_on(ensure_topics(&kl, &bootstrap, &[&kl.input_topic, &copy]))
                .context("creating the latency topics")?;
            progress(&format!(
                "latency baseline: pass-through at {rate:.0} events/s for {}",
                humantime::format_duration(opts.latency_duration)
            ));
            let l = latency_phase(
                &kl,
                &bootstrap,
                Hop::PassThrough,
                &cells,
                rate,
                opts,
                &topic("lat-copy"),
            )?;
            progress(&format!(
                "latency baseline: p50 {:.1} ms, p99 {:.1} ms",
                l.p50_ms, l.p99_ms
            ));
            delete_topics(rt, &kl, &bootstrap, &[&kl.input_topic, &copy], progress);
            Some(l)
        };
        let kl = topics("lat");
        rt.block_on(ensure_topics(
            &kl,
            &bootstrap,
            &[&kl.input_topic, &kl.task_topic, &kl.dlq_topic],
        ))
        .context("creating the latency topics")?;
        progress(&format!(
            "latency: processor at {rate:.0} events/s for {}",
            humantime::format_duration(opts.latency_duration)
        ));
        let l = latency_phase(
            &kl,
            &bootstrap,
            Hop::Processor(Box::new(pipeline)),
            &cells,
            rate,
            opts,
            &topic("lat"),
        )?;
        progress(&format!(
            "latency: p50 {:.1} ms, p99 {:.1} ms",
            l.p50_ms, l.p99_ms
        ));
        delete_topics(
            rt,
            &kl,
            &bootstrap,
            &[
                &kl.input_topic,
                &kl.task_topic,
                &kl.dlq_topic,
                &kl.state_topic,
            ],
            progress,
        );
        (Some(l), baseline)
    } else {
        (None, None)
    };

    let broker_peak_mib = broker.peak_mib();
    let before = before_preload;
    let samples = proc.rss;
    let report = BenchReport {
        date: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        commit: git_commit(),
        broker: match &broker {
            Broker::External => bootstrap.clone(),
            b => b.describe().to_string(),
        },
        partitions: k.partitions,
        workers,
        events: opts.events,
        tasks: proc.tasks,
        suppressed: proc.suppressed,
        dead_letters: proc.dead_letters,
        preload_events_per_s: preload_rate,
        baseline_events_per_s: baseline.as_ref().map(|b| b.rate),
        processor_events_per_s: proc.rate,
        ratio: baseline.as_ref().map(|b| proc.rate / b.rate),
        baseline_startup_s: baseline.as_ref().map(|b| b.startup_s),
        processor_startup_s: proc.startup_s,
        latency,
        baseline_latency,
        rss: RssReport {
            peak_mib: status_kib("self", "VmHWM").unwrap_or(0) as f64 / 1024.0,
            before_preload_mib: before,
            after_preload_mib: after_preload,
            broker_bytes_per_event: matches!(broker, Broker::InProcess(_))
                .then(|| (after_preload - before) * 1024.0 * 1024.0 / opts.events.max(1) as f64),
            processor_start_mib: samples.first().map_or(0.0, |s| s.2),
            processor_end_mib: samples.last().map_or(0.0, |s| s.2),
            processor_max_mib: samples.iter().map(|s| s.2).fold(0.0, f64::max),
            processor_samples: samples,
            broker_peak_mib,
        },
        machine: machine(),
    };
    drop(broker);
    Ok(report)
}

/// Deletes a finished phase's topics, so that the embedded broker (which keeps every record
/// in memory) frees them before the next phase. Best effort: a failure is reported only.
fn delete_topics(
    rt: &tokio::runtime::Runtime,
    k: &KafkaConfig,
    bootstrap: &str,
    topics: &[&str],
    progress: Progress<'_>,
) {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (key, v) in &k.properties {
        c.set(key, v);
    }
    let result = c
        .create::<AdminClient<DefaultClientContext>>()
        .map_err(|e| e.to_string())
        .and_then(|admin| {
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            rt.block_on(admin.delete_topics(topics, &opts))
                .map_err(|e| e.to_string())
        });
    let failed: Vec<String> = match result {
        Ok(results) => results
            .into_iter()
            .filter_map(|r| r.err().map(|(t, code)| format!("{t}: {code}")))
            .collect(),
        Err(e) => vec![e],
    };
    if !failed.is_empty() {
        progress(&format!("could not delete topics: {}", failed.join(", ")));
    }
}

// ---------------------------------------------------------------------------------------
// The broker.

enum Broker {
    /// Held for its `Drop`, which stops the broker.
    #[cfg(feature = "embedded-broker")]
    InProcess(#[allow(dead_code)] super::embedded::EmbeddedBroker),
    Child(std::process::Child),
    External,
    #[cfg(not(feature = "embedded-broker"))]
    #[allow(dead_code)]
    InProcess(()),
}

impl Broker {
    fn describe(&self) -> &'static str {
        match self {
            Broker::InProcess(_) => "in-process",
            Broker::Child(_) => "child-process",
            Broker::External => "external",
        }
    }

    fn peak_mib(&self) -> Option<f64> {
        match self {
            Broker::Child(c) => status_kib(&c.id().to_string(), "VmHWM").map(|k| k as f64 / 1024.0),
            _ => None,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Child(c) = self {
            // Closing its stdin stops it; kill it if it does not go.
            drop(c.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_broker(
    opts: &BenchOptions,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(Broker, String)> {
    if let Some(b) = &opts.brokers {
        return Ok((Broker::External, b.clone()));
    }
    if opts.broker_process {
        return spawn_broker_process();
    }
    #[cfg(feature = "embedded-broker")]
    {
        // Unbounded: a benchmark's input is written before it is read, and must all stay.
        let b = rt.block_on(super::embedded::EmbeddedBroker::start(
            0,
            Default::default(),
        ))?;
        let bootstrap = b.bootstrap();
        Ok((Broker::InProcess(b), bootstrap))
    }
    #[cfg(not(feature = "embedded-broker"))]
    {
        let _ = rt;
        Err(super::KafkaSetupError::EmbeddedUnavailable.into())
    }
}

/// Starts `<this executable> bench --serve-broker 0` and reads the address it prints.
fn spawn_broker_process() -> anyhow::Result<(Broker, String)> {
    use anyhow::Context;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut child = Command::new(exe)
        .args(["bench", "--serve-broker", "0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the broker process")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .context("reading the broker process's address")?;
    let bootstrap = line
        .trim()
        .strip_prefix("listening ")
        .map(str::to_owned)
        .with_context(|| format!("unexpected broker process output {line:?}"))?;
    Ok((Broker::Child(child), bootstrap))
}

/// `dissuade bench --serve-broker PORT`: the embedded broker alone, until stdin closes.
#[cfg(feature = "embedded-broker")]
pub fn serve_broker(port: u16, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let b = rt.block_on(super::embedded::EmbeddedBroker::start(
        port,
        Default::default(),
    ))?;
    println!("listening {}", b.bootstrap());
    use std::io::{Read, Write};
    std::io::stdout().flush()?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(b);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Phases.

/// Counts delivery reports.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
}

struct Counting(Arc<Deliveries>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let c = if result.is_ok() {
            &self.0.ok
        } else {
            &self.0.failed
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn counting_producer(
    k: &KafkaConfig,
    bootstrap: &str,
) -> anyhow::Result<(ThreadedProducer<Counting>, Arc<Deliveries>)> {
    let d = Arc::new(Deliveries::default());
    let p = producer_config(k, bootstrap).create_with_context(Counting(d.clone()))?;
    Ok((p, d))
}

/// Sends, waiting while the producer queue is full.
fn send(
    producer: &ThreadedProducer<Counting>,
    mut record: BaseRecord<'_, [u8], [u8]>,
) -> anyhow::Result<()> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

fn flush_all(
    producer: &ThreadedProducer<Counting>,
    d: &Deliveries,
    expected: u64,
    what: &str,
) -> anyhow::Result<()> {
    producer.flush(Duration::from_secs(120))?;
    let (ok, failed) = (
        d.ok.load(Ordering::Relaxed),
        d.failed.load(Ordering::Relaxed),
    );
    anyhow::ensure!(
        ok == expected && failed == 0,
        "{what}: {ok} of {expected} records delivered, {failed} failed"
    );
    Ok(())
}

/// Produces `opts.events` synthetic events as fast as the producer takes them; returns the
/// rate (events/s, until every delivery is acknowledged).
fn preload(
    k: &KafkaConfig,
    bootstrap: &str,
    mut synth: Synth,
    opts: &BenchOptions,
    progress: Progress<'_>,
) -> anyhow::Result<f64> {
    let (producer, d) = counting_producer(k, bootstrap)?;
    let n = opts.events;
    // Event times end now: the last event is the newest.
    let t0 = chrono::Utc::now().timestamp_millis() - n as i64 * opts.event_interval_ms;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut buf = Vec::with_capacity(512);
    for i in 0..n {
        buf.clear();
        let v = synth.next_event(t0 + i as i64 * opts.event_interval_ms, &mut buf);
        let record = BaseRecord::to(&k.input_topic)
            .key(synth.callee_number(v).as_bytes())
            .payload(buf.as_slice());
        send(&producer, record)?;
        if last_report.elapsed() >= Duration::from_secs(5) {
            progress(&format!("  preloaded {i} / {n}"));
            last_report = Instant::now();
        }
    }
    flush_all(&producer, &d, n, "preload")?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

struct Pass {
    rate: f64,
    startup_s: f64,
}

/// When the pass-through copier stops.
enum Until<'a> {
    /// After copying this many records and flushing them.
    Count(u64),
    /// When the flag is set (and then flushes what it copied).
    Stopped(&'a AtomicBool),
}

/// The Kafka ceiling: consume the input topic and produce every record unchanged (same key)
/// to `out_topic`, committing positions as often as the processor commits. `assigned` is set
/// once the group has given it partitions.
fn pass_through(
    k: &KafkaConfig,
    bootstrap: &str,
    out_topic: &str,
    until: Until<'_>,
    assigned: &AtomicBool,
    progress: Progress<'_>,
) -> anyhow::Result<Pass> {
    let consumer: BaseConsumer = consumer_config(k, bootstrap).create()?;
    consumer.subscribe(&[&k.input_topic])?;
    let (producer, d) = counting_producer(k, bootstrap)?;
    let subscribed = Instant::now();
    let mut first: Option<Instant> = None;
    let mut consumed = 0u64;
    let mut last_commit = Instant::now();
    let mut last_report = Instant::now();
    loop {
        match until {
            Until::Count(n) if consumed >= n => break,
            Until::Stopped(flag) if flag.load(Ordering::Acquire) => break,
            _ => {}
        }
        match consumer.poll(Duration::from_millis(20)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                let mut record = BaseRecord::to(out_topic).payload(m.payload().unwrap_or(&[]));
                if let Some(key) = m.key() {
                    record = record.key(key);
                }
                send(&producer, record)?;
                consumed += 1;
            }
            Some(Err(e)) => anyhow::bail!("pass-through consumer: {e}"),
            None => {
                anyhow::ensure!(
                    subscribed.elapsed() < Duration::from_secs(120)
                        || first.is_some()
                        || matches!(until, Until::Stopped(_)),
                    "pass-through: no record within 120 s of subscribing"
                );
            }
        }
        if !assigned.load(Ordering::Relaxed) && consumer.assignment().is_ok_and(|a| a.count() > 0) {
            assigned.store(true, Ordering::Release);
        }
        if last_commit.elapsed() >= k.commit_interval {
            if let Ok(tpl) = consumer.position() {
                let _ = consumer.commit(&tpl, CommitMode::Async);
            }
            last_commit = Instant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            progress(&format!("  copied {consumed}"));
            last_report = Instant::now();
        }
    }
    flush_all(&producer, &d, consumed, "pass-through")?;
    let first = first.unwrap_or(subscribed);
    let rate = consumed as f64 / first.elapsed().as_secs_f64();
    if let Ok(tpl) = consumer.position() {
        let _ = consumer.commit(&tpl, CommitMode::Sync);
    }
    consumer.unsubscribe();
    Ok(Pass {
        rate,
        startup_s: (first - subscribed).as_secs_f64(),
    })
}

struct ProcessorRun {
    rate: f64,
    startup_s: f64,
    tasks: u64,
    suppressed: u64,
    dead_letters: u64,
    rss: Vec<(f64, u64, f64)>,
}

fn run_processor(
    k: &KafkaConfig,
    bootstrap: &str,
    pipeline: Pipeline,
    opts: &BenchOptions,
    progress: Progress<'_>,
) -> anyhow::Result<ProcessorRun> {
    let metrics = Arc::new(Metrics::new(
        &pipeline.rules(),
        pipeline.grid().cells().len(),
    ));
    let shutdown = CancellationToken::new();
    let spawned = Instant::now();
    let handle = processor::spawn(
        k,
        bootstrap,
        Arc::new(pipeline),
        metrics.clone(),
        Arc::new(Health::default()),
        shutdown.clone(),
    )?;
    let n = opts.events;
    let mut first: Option<Instant> = None;
    let mut rss = vec![(0.0, 0, rss_mib())];
    let mut last_sample = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let consumed = metrics.events_consumed.get();
        if first.is_none() && consumed > 0 {
            first = Some(Instant::now());
        }
        if consumed >= n && metrics.in_flight.get() == 0 {
            break;
        }
        if handle.is_finished() {
            break;
        }
        anyhow::ensure!(
            first.is_some() || spawned.elapsed() < Duration::from_secs(120),
            "processor: no record within 120 s of subscribing"
        );
        if last_sample.elapsed() >= opts.rss_interval {
            let t = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            rss.push((t, consumed, rss_mib()));
            last_sample = Instant::now();
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            progress(&format!(
                "  processed {consumed} / {n}, {} outputs in flight",
                metrics.in_flight.get()
            ));
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let end = Instant::now();
    let first = first.unwrap_or(spawned);
    rss.push((
        (end - first).as_secs_f64(),
        metrics.events_consumed.get(),
        rss_mib(),
    ));
    shutdown.cancel();
    handle
        .join()
        .map_err(|e| anyhow::anyhow!("processor: {e}"))?;
    let consumed = metrics.events_consumed.get();
    anyhow::ensure!(consumed >= n, "processor stopped after {consumed} of {n}");
    Ok(ProcessorRun {
        rate: n as f64 / (end - first).as_secs_f64(),
        startup_s: (first - spawned).as_secs_f64(),
        tasks: metrics.tasks_by_level().iter().sum(),
        suppressed: metrics.suppressed(),
        dead_letters: metrics.dead_letters(),
        rss,
    })
}

/// What sits between the input topic and the topic the latency reader reads.
enum Hop {
    /// A pass-through copier: the Kafka floor.
    PassThrough,
    /// The processor; the reader reads its task topic.
    Processor(Box<Pipeline>),
}

fn latency_phase(
    k: &KafkaConfig,
    bootstrap: &str,
    hop: Hop,
    cells: &crate::grid::CellTable,
    rate: f64,
    opts: &BenchOptions,
    run_id: &str,
) -> anyhow::Result<LatencyReport> {
    anyhow::ensure!(rate.is_finite() && rate > 0.0, "latency: bad rate {rate}");
    let out_topic = match hop {
        Hop::PassThrough => format!("{}-copy", k.input_topic),
        Hop::Processor(_) => k.task_topic.clone(),
    };
    let synth = Synth::new(
        cells,
        SynthConfig {
            seed: opts.seed + 1,
            ..SynthConfig::default()
        },
    )
    .with_run_id(run_id);

    // The hop under test, started first so that it is assigned before the first event.
    let shutdown = CancellationToken::new();
    let stop_copier = Arc::new(AtomicBool::new(false));
    let hop_assigned = Arc::new(AtomicBool::new(false));
    let (metrics, processor, copier) = match hop {
        Hop::Processor(pipeline) => {
            let metrics = Arc::new(Metrics::new(
                &pipeline.rules(),
                pipeline.grid().cells().len(),
            ));
            let health = Arc::new(Health::default());
            let handle = processor::spawn(
                k,
                bootstrap,
                Arc::new(*pipeline),
                metrics.clone(),
                health.clone(),
                shutdown.clone(),
            )?;
            let assigned = hop_assigned.clone();
            std::thread::spawn(move || {
                while health.partitions_assigned.load(Ordering::Relaxed) == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                assigned.store(true, Ordering::Release);
            });
            (Some(metrics), Some(handle), None)
        }
        Hop::PassThrough => {
            let (k, bootstrap, out) = (k.clone(), bootstrap.to_string(), out_topic.clone());
            let (stop, assigned) = (stop_copier.clone(), hop_assigned.clone());
            let t = std::thread::spawn(move || {
                let mut quiet = |_: &str| {};
                pass_through(
                    &k,
                    &bootstrap,
                    &out,
                    Until::Stopped(&stop),
                    &assigned,
                    &mut quiet,
                )
                .map(|_| ())
            });
            (None, None, Some(t))
        }
    };

    // A reader of the output topic, as an officer's app would be.
    let mut reader_cfg = consumer_config(k, bootstrap);
    reader_cfg.set("group.id", format!("{run_id}-reader"));
    let reader: BaseConsumer = reader_cfg.create()?;
    reader.subscribe(&[&out_topic])?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !hop_assigned.load(Ordering::Acquire) || reader.assignment().map_or(0, |a| a.count()) == 0
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "latency: groups not assigned within 120 s"
        );
        let _ = reader.poll(Duration::from_millis(20));
    }

    let (producer, d) = counting_producer(k, bootstrap)?;
    let start = Instant::now();
    let wall0_us = chrono::Utc::now().timestamp_micros();
    let total = (rate * opts.latency_duration.as_secs_f64()).round() as u64;
    let sending_done = Arc::new(AtomicBool::new(false));
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let reader_thread = {
        let (done, expected) = (sending_done.clone(), expected.clone());
        std::thread::spawn(move || read_outputs(reader, start, rate, &done, &expected))
    };

    let mut synth = synth;
    let mut buf = Vec::with_capacity(512);
    let mut max_lag = Duration::ZERO;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            max_lag = max_lag.max(now - due);
        }
        // The event time is the scheduled send time, so the processor's own end-to-end
        // histogram is also free of coordinated omission (to the millisecond).
        let occurred_ms = (wall0_us + (i as f64 * 1e6 / rate) as i64) / 1000;
        buf.clear();
        let v = synth.next_event(occurred_ms, &mut buf);
        let record = BaseRecord::to(&k.input_topic)
            .key(synth.callee_number(v).as_bytes())
            .payload(buf.as_slice());
        send(&producer, record)?;
    }
    let sent_in = start.elapsed();
    flush_all(&producer, &d, total, "latency phase")?;

    // Wait until the hop has handled everything, then tell the reader how many outputs to
    // expect.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ack = (0, 0);
    if let (Some(metrics), Some(handle)) = (&metrics, processor) {
        while (metrics.events_consumed.get() < total || metrics.in_flight.get() > 0)
            && Instant::now() < deadline
            && !handle.is_finished()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        expected.store(metrics.tasks_delivered.get(), Ordering::Release);
        shutdown.cancel();
        handle
            .join()
            .map_err(|e| anyhow::anyhow!("processor: {e}"))?;
        let ([p50, p99, _], _) = metrics.end_to_end_quantiles();
        ack = (p50, p99);
    } else {
        expected.store(total, Ordering::Release);
    }
    sending_done.store(true, Ordering::Release);
    let hist = reader_thread
        .join()
        .map_err(|_| anyhow::anyhow!("latency reader panicked"))?;
    if let Some(t) = copier {
        stop_copier.store(true, Ordering::Release);
        t.join()
            .map_err(|_| anyhow::anyhow!("pass-through copier panicked"))??;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(LatencyReport {
        offered_rate: rate,
        achieved_rate: total as f64 / sent_in.as_secs_f64(),
        duration_s: sent_in.as_secs_f64(),
        events: total,
        samples: hist.len(),
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
        ack_p50_ms: metrics.as_ref().map(|_| ms(ack.0)),
        ack_p99_ms: metrics.as_ref().map(|_| ms(ack.1)),
        max_send_lag_ms: max_lag.as_secs_f64() * 1000.0,
    })
}

/// Reads the output topic until `done` and `expected` records were read (or 10 s without
/// any). Each record's latency is measured from its event's scheduled send time, recovered
/// from the event id (`<run id>-<sequence>`, the sequence counting from 1 at `start`), which
/// tasks and events both carry.
fn read_outputs(
    reader: BaseConsumer,
    start: Instant,
    rate: f64,
    done: &AtomicBool,
    expected: &AtomicU64,
) -> Histogram<u64> {
    #[derive(serde::Deserialize)]
    struct Id<'a> {
        #[serde(borrow)]
        event_id: std::borrow::Cow<'a, str>,
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
    let mut read = 0u64;
    let mut idle_since: Option<Instant> = None;
    loop {
        match reader.poll(Duration::from_millis(20)) {
            Some(Ok(m)) => {
                let now = Instant::now();
                idle_since = None;
                read += 1;
                let Some(seq) = m
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Id<'_>>(p).ok())
                    .and_then(|t| t.event_id.rsplit_once('-')?.1.parse::<u64>().ok())
                else {
                    continue;
                };
                let due = start + Duration::from_secs_f64(seq.saturating_sub(1) as f64 / rate);
                hist.saturating_record(now.saturating_duration_since(due).as_micros() as u64);
            }
            Some(Err(e)) => tracing::warn!(error = %e, "latency reader"),
            None => {
                if done.load(Ordering::Acquire) {
                    if read >= expected.load(Ordering::Acquire) {
                        break;
                    }
                    let idle = *idle_since.get_or_insert_with(Instant::now);
                    if idle.elapsed() > Duration::from_secs(10) {
                        tracing::warn!(
                            read,
                            "latency reader: gave up waiting for the last outputs"
                        );
                        break;
                    }
                }
            }
        }
    }
    reader.unsubscribe();
    hist
}

// ---------------------------------------------------------------------------------------
// The machine and the process.

/// A `kB` field of `/proc/<pid>/status` (`pid` may be `self`).
pub fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn rss_mib() -> f64 {
    status_kib("self", "VmRSS").unwrap_or(0) as f64 / 1024.0
}

pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let mem_total_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0) as f64
        / 1024.0;
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu_model,
        mem_total_mib,
    }
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
