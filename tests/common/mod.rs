//! Helpers shared by the integration tests: an embedded broker per test, the sample config
//! pointed at it with unique topic and group names, and small produce/consume utilities.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dissuade::config::Config;
use dissuade::http::Health;
use dissuade::kafka::embedded::EmbeddedBroker;
use dissuade::kafka::processor::{self, ProcessorHandle};
use dissuade::metrics::Metrics;
use dissuade::pipeline::{Action, Outcome, Pipeline};
use dissuade::task::TaskSummary;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The shipped sample configuration, pointed at `bootstrap` with fresh topic and group names.
pub fn sample_config(bootstrap: &str, partitions: i32) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dissuade.toml");
    let t = unique("t");
    let env = [
        ("KAFKA__BROKERS", bootstrap.to_string()),
        ("KAFKA__PARTITIONS", partitions.to_string()),
        ("KAFKA__INPUT_TOPIC", format!("\"{t}-in\"")),
        ("KAFKA__TASK_TOPIC", format!("\"{t}-tasks\"")),
        ("KAFKA__DLQ_TOPIC", format!("\"{t}-dlq\"")),
        ("KAFKA__GROUP_ID", format!("\"{t}-group\"")),
        ("KAFKA__WORKERS", "2".to_string()),
        ("KAFKA__COMMIT_INTERVAL", "\"100ms\"".to_string()),
        ("METRICS__LISTEN", "\"\"".to_string()),
        // The views bind a port of their own: tests that want them set one.
        ("WEB__LISTEN", "\"\"".to_string()),
    ]
    .map(|(k, v)| (format!("DISSUADE__{k}"), v));
    Config::load_with_env(&path, env).expect("sample config loads")
}

/// Writes the shipped rules, changed by `edit`, to `dir/rules.toml` (list files still found
/// in `config/lists/`) and returns its path.
pub fn sample_rules_edited(dir: &Path, edit: impl FnOnce(String) -> String) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let text = edit(std::fs::read_to_string(root.join("rules.toml")).expect("sample rules"))
        .replace(
            "file = \"lists/",
            &format!("file = \"{}/lists/", root.display()),
        );
    let path = dir.join("rules.toml");
    std::fs::write(&path, text).expect("rules copy written");
    path
}

/// Logs to the test output, filtered by `RUST_LOG` (off by default).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub async fn start_broker() -> EmbeddedBroker {
    init_logging();
    EmbeddedBroker::start(0, Default::default())
        .await
        .expect("embedded broker starts")
}

pub async fn create_topics(cfg: &Config) {
    let k = &cfg.kafka;
    dissuade::kafka::ensure_topics(
        k,
        &k.brokers,
        &[&k.input_topic, &k.task_topic, &k.dlq_topic],
    )
    .await
    .expect("topics created");
}

/// Produces `records` (key, payload) and waits for every delivery.
pub async fn produce(bootstrap: &str, topic: &str, records: &[(String, Vec<u8>)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        // The expected tasks assume the topic keeps the order records were sent in.
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let futures: Vec<_> = records
        .iter()
        .map(|(k, v)| {
            producer
                .send_result(
                    FutureRecord::to(topic)
                        .key(k.as_str())
                        .payload(v.as_slice()),
                )
                .map_err(|(e, _)| e)
        })
        .collect::<Result<_, _>>()
        .expect("enqueue");
    for f in futures {
        f.await.expect("delivery report").expect("delivered");
    }
}

/// A consumer of `topic` from its beginning, in a group of its own.
pub fn reader(bootstrap: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        // librdkafka's default, written out: records of open or aborted transactions
        // (exactly-once delivery) are not read.
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Reads `topic` from the beginning until `n` records arrived or `timeout` passed.
pub fn consume(bootstrap: &str, topic: &str, n: usize, timeout: Duration) -> Vec<OwnedMessage> {
    let consumer = reader(bootstrap, topic);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.expect("consume").detach());
        }
    }
    out
}

/// How long a topic must stay quiet before [`consume_settled`] takes it as complete.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Reads `topic` from the beginning until at least `n` records arrived and then none for
/// [`SETTLE`], so that records beyond `n` (duplicates) are read too; `timeout` bounds the
/// whole read.
pub fn consume_settled(
    bootstrap: &str,
    topic: &str,
    n: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let consumer = reader(bootstrap, topic);
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while Instant::now() < deadline && (out.len() < n || last.elapsed() < SETTLE) {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.expect("consume").detach());
            last = Instant::now();
        }
    }
    out
}

/// Task ids that occur more than once in `tasks`, with their counts.
pub fn duplicated_ids(tasks: &[TaskSummary]) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for t in tasks {
        *counts.entry(t.task_id.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|&(_, n)| n > 1)
        .map(|(id, n)| (id.to_string(), n))
        .collect()
}

pub fn tasks_of(messages: &[OwnedMessage]) -> Vec<TaskSummary> {
    messages
        .iter()
        .map(|m| serde_json::from_slice(m.payload().expect("payload")).expect("task JSON"))
        .collect()
}

/// What the pipeline makes of `events` processed in order, in one process: the reference
/// the Kafka path must reproduce.
pub fn expected_tasks(cfg: &Config, events: &[(String, Vec<u8>)]) -> Vec<TaskSummary> {
    let (pipeline, _) = Pipeline::load(cfg).expect("pipeline loads");
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let now = chrono::Utc::now().timestamp_millis();
    for (_, e) in events {
        buf.clear();
        if let Outcome::Scored(s) = pipeline.process(e, 0, now, &mut buf) {
            if let Action::Task(_) = s.action {
                out.push(serde_json::from_slice(&buf).expect("task JSON"));
            }
        }
    }
    out
}

/// A processor running in this process, as `dissuade run` would.
pub struct RunningProcessor {
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    /// Reloads the rules, lists and grid from `cfg`'s files, as SIGHUP does in `run`.
    pub reload: dissuade::reload::ReloadHandle,
    pub health: Arc<Health>,
    pub shutdown: CancellationToken,
    handle: ProcessorHandle,
}

impl RunningProcessor {
    pub fn start(cfg: &Config) -> RunningProcessor {
        let (mut pipeline, _) = Pipeline::load(cfg).expect("pipeline loads");
        pipeline.take_caller_figures_from_records();
        let metrics = Arc::new(Metrics::new(
            &pipeline.rules(),
            pipeline.grid().cells().len(),
        ));
        let health = Arc::new(Health::default());
        let shutdown = CancellationToken::new();
        let pipeline = Arc::new(pipeline);
        let handle = processor::spawn(
            &cfg.kafka,
            &cfg.kafka.brokers,
            pipeline.clone(),
            metrics.clone(),
            health.clone(),
            shutdown.clone(),
        )
        .expect("processor starts");
        let reload = dissuade::reload::spawn(
            dissuade::reload::Reloader::new(cfg.clone(), pipeline.clone(), metrics.clone(), None),
            shutdown.clone(),
        );
        RunningProcessor {
            pipeline,
            reload,
            metrics,
            health,
            shutdown,
            handle,
        }
    }

    /// Waits until this processor has consumed at least `n` records.
    pub fn wait_consumed(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.metrics.events_consumed.get() < n {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Whether the processor has stopped (on its own, it only does so on a fatal error).
    pub fn handle_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Graceful stop: drain, commit, leave the group.
    pub fn stop(self) {
        self.shutdown.cancel();
        self.handle.join().expect("processor stops cleanly");
    }
}

/// A broker, the sample config on it with fresh topics, synthetic events (see
/// [`synthetic_events`]) and the tasks the pipeline makes of them in order.
pub struct Scenario {
    pub broker: EmbeddedBroker,
    pub cfg: Config,
    pub events: Vec<(String, Vec<u8>)>,
    pub expected: Vec<TaskSummary>,
}

impl Scenario {
    pub async fn new(partitions: i32, n: usize, seed: u64, victims: usize) -> Scenario {
        let broker = start_broker().await;
        let cfg = sample_config(&broker.bootstrap(), partitions);
        create_topics(&cfg).await;
        let events = synthetic_events(&cfg, n, seed, victims, 0.0);
        let expected = expected_tasks(&cfg, &events);
        Scenario {
            broker,
            cfg,
            events,
            expected,
        }
    }
}

/// Synthetic events from the sample city, keyed by callee as the centre should key them.
pub fn synthetic_events(
    cfg: &Config,
    n: usize,
    seed: u64,
    victims: usize,
    bad_share: f64,
) -> Vec<(String, Vec<u8>)> {
    synthetic_events_at(cfg, n, seed, victims, bad_share, 1_795_480_200_000, 1000)
}

/// As [`synthetic_events`], the first dated `start_ms` and each next one `step_ms` later.
pub fn synthetic_events_at(
    cfg: &Config,
    n: usize,
    seed: u64,
    victims: usize,
    bad_share: f64,
    start_ms: i64,
    step_ms: i64,
) -> Vec<(String, Vec<u8>)> {
    use dissuade::grid::cell_table::CellTable;
    use dissuade::synth::{Synth, SynthConfig};
    let cells = CellTable::load(&cfg.resolve(cfg.grid.cell_table.as_ref().unwrap())).unwrap();
    let mut synth = Synth::new(
        &cells,
        SynthConfig {
            seed,
            victims,
            risky_share: 0.5,
            bad_share,
            ..SynthConfig::default()
        },
    )
    .with_run_id(&unique("ev"));
    (0..n)
        .map(|i| {
            let mut buf = Vec::new();
            let v = synth.next_event(start_ms + i as i64 * step_ms, &mut buf);
            (synth.callee_number(v).to_string(), buf)
        })
        .collect()
}

/// `dissuade run` against `cfg`'s broker, with `cfg`'s topics and group.
pub fn run_command(cfg: &dissuade::config::Config) -> std::process::Command {
    let k = &cfg.kafka;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_dissuade"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("run")
        .env("DISSUADE__KAFKA__BROKERS", &k.brokers)
        .env(
            "DISSUADE__KAFKA__INPUT_TOPIC",
            format!("\"{}\"", k.input_topic),
        )
        .env(
            "DISSUADE__KAFKA__TASK_TOPIC",
            format!("\"{}\"", k.task_topic),
        )
        .env("DISSUADE__KAFKA__DLQ_TOPIC", format!("\"{}\"", k.dlq_topic))
        .env(
            "DISSUADE__KAFKA__STATE_TOPIC",
            format!("\"{}\"", k.state_topic),
        )
        .env("DISSUADE__KAFKA__GROUP_ID", format!("\"{}\"", k.group_id))
        .env("DISSUADE__KAFKA__COMMIT_INTERVAL", "\"100ms\"")
        // These tests read the task topic as the processor's tasks. The synthetic events are
        // dated 2026-11-24, so on the wall clock every task is past its deadline and the
        // lifecycle would add an escalation per task to that topic (tests/lifecycle.rs
        // covers it, with a clock of its own).
        .env("DISSUADE__LIFECYCLE__ENABLED", "false")
        // A killed member keeps its partitions until its session times out (45 s default).
        .env(
            "DISSUADE__KAFKA__CONSUMER_PROPERTIES__SESSION.TIMEOUT.MS",
            "\"6000\"",
        )
        .env("DISSUADE__METRICS__LISTEN", "\"\"")
        // Several instances run at once: the views' default port would clash.
        .env("DISSUADE__WEB__LISTEN", "\"\"");
    c
}
