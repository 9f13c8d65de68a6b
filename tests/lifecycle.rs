#![cfg(feature = "embedded-broker")]
//! The task lifecycle on the embedded broker: hand-written tasks and feedback in, exact
//! states on the changelog, escalations on the task topic, dead letters with their reasons;
//! a restart in the middle; two instances in one group. A hand-moved clock drives deadlines,
//! except in the last test: the whole loop in `dissuade run` processes on the wall clock, one of
//! them killed.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dissuade::config::Config;
use dissuade::http::Health;
use dissuade::kafka::lifecycle::{self, LifecycleHandle, LifecycleOptions};
use dissuade::kafka::processor::{HEADER_ERROR, HEADER_ERROR_KIND, HEADER_SOURCE_TOPIC};
use dissuade::lifecycle::{Change, Escalation, Status, TaskState};
use dissuade::metrics::Metrics;
use dissuade::pipeline::Pipeline;
use dissuade::task::TaskId;
use rdkafka::message::{Headers, Message};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);
const T0: i64 = 1_795_480_200_000;
const MIN: i64 = 60_000;
const STATION: &str = "120101-01";
const DESK: &str = "desk-120101-01";
/// The sample config's fallback desk: the centre's desk by default.
const CENTRE: &str = "tianjin-anti-fraud-centre-duty-desk";

fn id(n: u8) -> TaskId {
    TaskId([n; 16])
}

fn config(bootstrap: &str, partitions: i32) -> Config {
    let mut cfg = sample_config(bootstrap, partitions);
    let t = unique("lc");
    cfg.kafka.feedback_topic = format!("{t}-feedback");
    cfg.kafka.feedback_dlq_topic = format!("{t}-feedback-dlq");
    cfg.kafka.lifecycle_topic = format!("{t}-lifecycle");
    cfg
}

/// A lifecycle edge running in this process, as `dissuade run` starts it.
struct Running {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
    handle: LifecycleHandle,
}

impl Running {
    fn start(cfg: &Config, clock: &Arc<AtomicI64>) -> Running {
        let (pipeline, _) = Pipeline::load(cfg).expect("pipeline loads");
        let metrics = Arc::new(Metrics::new(
            &pipeline.rules(),
            pipeline.grid().cells().len(),
        ));
        let health = Arc::new(Health::default());
        let shutdown = CancellationToken::new();
        let now = clock.clone();
        let handle = lifecycle::spawn(
            cfg,
            &cfg.kafka.brokers,
            metrics.clone(),
            health.clone(),
            shutdown.clone(),
            LifecycleOptions {
                clock: Arc::new(move || now.load(Ordering::SeqCst)),
                desks: {
                    let grid = pipeline.grid();
                    lifecycle::station_desks(move || grid.clone())
                },
            },
        )
        .expect("lifecycle starts");
        Running {
            metrics,
            health,
            shutdown,
            handle,
        }
    }

    fn records(&self, input: &str) -> u64 {
        self.metrics
            .lifecycle
            .records
            .with_label_values(&[input])
            .get()
    }

    fn stop(self) {
        self.shutdown.cancel();
        self.handle.join().expect("lifecycle stops cleanly");
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn task(n: u8, assignee: &str, deadline_min: i64) -> (String, Vec<u8>) {
    let json = format!(
        r#"{{"task_id":"{}","event_id":"e{n}","kind":"new","created_at":{T0},"occurred_at":{T0},"deadline":{},"level":"critical","score":90,"assignee":{{"kind":"officer","id":"{assignee}"}},"grid":{{"match":"inside","grid_id":"120101-01-001","station_id":"{STATION}"}},"also_notify":[{{"kind":"officer","id":"{assignee}-gw"}}]}}"#,
        id(n),
        T0 + deadline_min * MIN
    );
    (assignee.to_string(), json.into_bytes())
}

fn feedback(key: &str, n: u8, actor: &str, at_min: i64, outcome: &str) -> (String, Vec<u8>) {
    let json = format!(
        r#"{{"task_id":"{}","actor_id":"{actor}","at":{},"outcome":"{outcome}"}}"#,
        id(n),
        T0 + at_min * MIN
    );
    (key.to_string(), json.into_bytes())
}

/// The changelog as compaction would leave it: the latest state per task, tombstones removed.
fn states(cfg: &Config, at_least: usize) -> std::collections::HashMap<TaskId, TaskState> {
    let records = consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.lifecycle_topic,
        at_least,
        WAIT,
    );
    let mut out = std::collections::HashMap::new();
    for m in &records {
        let change = Change::decode(m.key().unwrap(), m.payload()).expect("changelog record");
        match change.state {
            Some(s) => out.insert(change.task_id, s),
            None => out.remove(&change.task_id),
        };
    }
    out
}

/// Escalation records on the task topic: (id, tier, desk, key).
fn escalations(cfg: &Config, tasks: usize, at_least: usize) -> Vec<(String, u64, String, String)> {
    consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        tasks + at_least,
        WAIT,
    )
    .iter()
    .filter_map(|m| {
        let v: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
        (v["kind"] == "escalation").then(|| {
            (
                v["task_id"].as_str().unwrap().to_string(),
                v["tier"].as_u64().unwrap(),
                v["assignee"]["id"].as_str().unwrap().to_string(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
            )
        })
    })
    .collect()
}

fn tracked(
    states: &std::collections::HashMap<TaskId, TaskState>,
    n: u8,
) -> &dissuade::lifecycle::TrackedState {
    match &states[&id(n)] {
        TaskState::Tracked(t) => t,
        other => panic!("task {n} is not tracked: {other:?}"),
    }
}

fn closed(
    states: &std::collections::HashMap<TaskId, TaskState>,
    n: u8,
) -> &dissuade::lifecycle::ClosedState {
    match &states[&id(n)] {
        TaskState::Closed(c) => c,
        other => panic!("task {n} is not closed: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn feedback_closes_tasks_overdue_ones_escalate_once_and_bad_feedback_is_dead_lettered() {
    let broker = start_broker().await;
    // One partition: a wrongly keyed record meets its task and is told apart as wrong_key.
    let cfg = config(&broker.bootstrap(), 1);
    create_topics(&cfg).await;
    let clock = Arc::new(AtomicI64::new(T0));
    let first = Running::start(&cfg, &clock);
    wait_for("the first restore", || {
        first.metrics.lifecycle.assigned_partitions.get() == 1
            && !first.health.lifecycle_restoring.load(Ordering::SeqCst)
    });

    // 1: reached by phone. 2: nobody answers. 3: a false alarm closed by the station's desk.
    // 5: its acknowledgement is written before the task itself.
    let tasks = [
        task(1, "po-1", 10),
        task(2, "po-1", 10),
        task(3, "po-1", 10),
    ];
    let fb = [
        feedback("po-1", 5, "po-1", 1, "acknowledged"),
        feedback("po-1", 9, "po-1", 1, "acknowledged"), // never a task: unknown_task
        feedback("po-1", 1, "po-1", 1, "acknowledged"),
        feedback("po-1", 1, "po-1", 5, "reached_by_phone"),
        feedback("po-1", 2, "po-999", 6, "false_alarm"), // not_authorized
        feedback("po-2", 2, "po-1", 6, "acknowledged"),  // wrong_key
        feedback("po-1", 3, DESK, 2, "false_alarm"),
        feedback("po-1", 3, "po-1-gw", 3, "reached_in_person"), // closed
        (
            "po-1".to_string(),
            b"{not json".to_vec(), // malformed
        ),
        feedback("po-1", 2, "po-1", 6, "teleported"), // unknown_outcome
    ];
    produce(&cfg.kafka.brokers, &cfg.kafka.task_topic, &tasks).await;
    produce(&cfg.kafka.brokers, &cfg.kafka.feedback_topic, &fb).await;
    produce(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        &[task(5, "po-1", 120)],
    )
    .await;
    wait_for("every record read", || {
        first.records("task") == 4 && first.records("feedback") == fb.len() as u64
    });
    let dead = consume_settled(&cfg.kafka.brokers, &cfg.kafka.feedback_dlq_topic, 5, WAIT);
    assert_eq!(dead.len(), 5, "task 9's feedback waits out its grace");

    // Past the grace, the feedback on task 9 is tried once more and dead-lettered.
    clock.store(T0 + 31_000, Ordering::SeqCst);
    let dead = consume_settled(&cfg.kafka.brokers, &cfg.kafka.feedback_dlq_topic, 6, WAIT);
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|m| {
            let h: BTreeMap<&str, String> = m
                .headers()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h.key,
                        String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                    )
                })
                .collect();
            assert_eq!(h[HEADER_SOURCE_TOPIC], cfg.kafka.feedback_topic);
            assert!(!h[HEADER_ERROR].is_empty());
            let original = fb.iter().find(|(_, v)| Some(v.as_slice()) == m.payload());
            assert!(original.is_some(), "the original payload");
            (
                h[HEADER_ERROR_KIND].clone(),
                String::from_utf8(m.key().unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    let mut kinds: Vec<&str> = reasons.iter().map(|(k, _)| k.as_str()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "closed",
            "malformed",
            "not_authorized",
            "unknown_outcome",
            "unknown_task",
            "wrong_key"
        ]
    );
    assert!(reasons.contains(&("wrong_key".into(), "po-2".into())));
    assert_eq!(first.metrics.lifecycle.rejected("unknown_task"), 1);
    assert_eq!(first.metrics.lifecycle.people_reached(), 1);

    // Tasks 1 and 3 are closed; at task 2's deadline it goes to the station's desk.
    clock.store(T0 + 10 * MIN, Ordering::SeqCst);
    let tier1 = (
        Escalation::id_for(id(2), 1).to_string(),
        1,
        DESK.to_string(),
        DESK.to_string(),
    );
    wait_for("the tier-1 escalation", || {
        first.metrics.lifecycle.escalations(1) == 1
    });
    assert_eq!(escalations(&cfg, 4, 1), std::slice::from_ref(&tier1));

    // A restart in the middle: a new instance restores every state and does not escalate
    // task 2 again.
    first.stop();
    let second = Running::start(&cfg, &clock);
    wait_for("the second restore", || {
        second.metrics.lifecycle.assigned_partitions.get() == 1
            && !second.health.lifecycle_restoring.load(Ordering::SeqCst)
    });
    clock.store(T0 + 11 * MIN, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(second.metrics.lifecycle.escalations(1), 0);
    assert_eq!(
        second
            .metrics
            .lifecycle
            .tasks
            .with_label_values(&["overdue"])
            .get(),
        1
    );

    // Still not closed an hour after the deadline: the centre's desk.
    clock.store(T0 + 70 * MIN, Ordering::SeqCst);
    wait_for("the tier-2 escalation", || {
        second.metrics.lifecycle.escalations(2) == 1
    });
    second.stop();
    let tier2 = (
        Escalation::id_for(id(2), 2).to_string(),
        2,
        CENTRE.to_string(),
        CENTRE.to_string(),
    );
    assert_eq!(escalations(&cfg, 4, 2), [tier1, tier2]);

    let states = states(&cfg, 1);
    assert_eq!(states.len(), 4, "{states:#?}");
    let one = closed(&states, 1);
    assert_eq!(
        (one.outcome.as_str(), one.closed_at_ms, one.tier),
        ("reached_by_phone", T0 + 5 * MIN, 0)
    );
    let three = closed(&states, 3);
    assert_eq!(
        (three.outcome.as_str(), three.closed_at_ms, three.tier),
        ("false_alarm", T0 + 2 * MIN, 0)
    );
    let two = tracked(&states, 2);
    assert_eq!(two.status, Status::Overdue);
    assert_eq!(two.tier, 2);
    assert_eq!(two.escalated_to, [DESK, CENTRE]);
    assert_eq!(two.overdue_since_ms, Some(T0 + 10 * MIN));
    assert_eq!(two.station_desk.as_deref(), Some(DESK));
    assert_eq!(two.acknowledged_at_ms, None);
    let five = tracked(&states, 5);
    assert_eq!(five.status, Status::Acknowledged);
    assert_eq!(five.acknowledged_at_ms, Some(T0 + MIN));
    assert_eq!(five.tier, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_split_the_partitions_and_escalate_each_task_once() {
    let broker = start_broker().await;
    let cfg = config(&broker.bootstrap(), 4);
    create_topics(&cfg).await;
    let clock = Arc::new(AtomicI64::new(T0));
    let a = Running::start(&cfg, &clock);
    let b = Running::start(&cfg, &clock);
    wait_for("both members hold partitions", || {
        let (pa, pb) = (
            a.metrics.lifecycle.assigned_partitions.get(),
            b.metrics.lifecycle.assigned_partitions.get(),
        );
        pa + pb == 4 && pa > 0 && pb > 0
    });
    let officers: Vec<String> = (0..12).map(|i| format!("po-{i}")).collect();
    let tasks: Vec<_> = officers
        .iter()
        .enumerate()
        .map(|(i, o)| task(i as u8 + 1, o, 10))
        .collect();
    // Every other task is acknowledged: acknowledged tasks escalate too, with the time.
    let fb: Vec<_> = officers
        .iter()
        .enumerate()
        .step_by(2)
        .map(|(i, o)| feedback(o, i as u8 + 1, o, 1, "acknowledged"))
        .collect();
    produce(&cfg.kafka.brokers, &cfg.kafka.task_topic, &tasks).await;
    produce(&cfg.kafka.brokers, &cfg.kafka.feedback_topic, &fb).await;
    wait_for("every record read", || {
        a.records("task") + b.records("task") == 12
            && a.records("feedback") + b.records("feedback") == fb.len() as u64
    });
    assert!(
        a.records("task") > 0 && b.records("task") > 0,
        "both worked"
    );
    clock.store(T0 + 10 * MIN, Ordering::SeqCst);
    wait_for("every tier-1 escalation", || {
        a.metrics.lifecycle.escalations(1) + b.metrics.lifecycle.escalations(1) == 12
    });
    a.stop();
    b.stop();

    let mut got = escalations(&cfg, 12, 12);
    got.sort();
    let mut expected: Vec<_> = (1..=12)
        .map(|n| {
            (
                Escalation::id_for(id(n), 1).to_string(),
                1,
                DESK.to_string(),
                DESK.to_string(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(got, expected, "each task escalated exactly once");
    let states = states(&cfg, 12);
    assert_eq!(states.len(), 12);
    for n in 1..=12u8 {
        let t = tracked(&states, n);
        let acknowledged = (n - 1) % 2 == 0;
        assert_eq!(
            (t.status, t.tier, t.acknowledged_at_ms),
            (Status::Overdue, 1, acknowledged.then_some(T0 + MIN)),
            "task {n}"
        );
    }
}

/// `dissuade run` with the whole loop on `cfg`'s topics: every SLA `sla`, the second
/// escalation `second` after the deadline.
fn loop_process(cfg: &Config, sla: &str, second: &str) -> std::process::Child {
    let k = &cfg.kafka;
    let mut c = run_command(cfg);
    c.env("DISSUADE__LIFECYCLE__ENABLED", "true")
        .env(
            "DISSUADE__LIFECYCLE__SECOND_ESCALATION_AFTER",
            format!("\"{second}\""),
        )
        .env(
            "DISSUADE__KAFKA__FEEDBACK_TOPIC",
            format!("\"{}\"", k.feedback_topic),
        )
        .env(
            "DISSUADE__KAFKA__FEEDBACK_DLQ_TOPIC",
            format!("\"{}\"", k.feedback_dlq_topic),
        )
        .env(
            "DISSUADE__KAFKA__LIFECYCLE_TOPIC",
            format!("\"{}\"", k.lifecycle_topic),
        )
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null());
    for level in ["LOW", "MEDIUM", "HIGH", "CRITICAL"] {
        c.env(
            format!("DISSUADE__DISPATCH__SLA__{level}"),
            format!("\"{sla}\""),
        );
    }
    c.spawn().expect("dissuade run starts")
}

fn terminate(mut child: std::process::Child) {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// What the officers answer to the `j`-th task in task id order: nothing (a quarter, half of
/// them after an acknowledgement), reached in person or by phone, a false alarm or a loss.
fn answers(j: usize, task: &serde_json::Value) -> Vec<(String, Vec<u8>)> {
    let assignee = task["assignee"]["id"].as_str().unwrap();
    let created = chrono::DateTime::parse_from_rfc3339(task["created_at"].as_str().unwrap())
        .unwrap()
        .timestamp_millis();
    let one = |outcome: &str, extra: &str, after_ms: i64| {
        let json = format!(
            r#"{{"task_id":{},"actor_id":"{assignee}","at":{},"outcome":"{outcome}"{extra}}}"#,
            task["task_id"],
            created + after_ms
        );
        (assignee.to_string(), json.into_bytes())
    };
    let after = 1000 + (j % 5) as i64 * 1000;
    match j % 8 {
        0 => vec![one("acknowledged", "", after)],
        4 => vec![],
        1 | 5 => vec![one("reached_in_person", "", after)],
        2 | 6 => vec![
            one("acknowledged", "", after),
            one("reached_by_phone", "", after + 2_000),
        ],
        3 => vec![one("false_alarm", "", after)],
        _ => vec![one("already_defrauded", r#","loss_cny":5000"#, after)],
    }
}

/// How many escalations an unanswered task gets: an officer's task goes to the station's desk,
/// then to the centre's; a task of the station's desk, or of no station, to the centre's only.
fn tiers(task: &serde_json::Value) -> usize {
    let officer = task["assignee"]["kind"] == "officer";
    let station = task["grid"]["station_id"].is_string();
    if officer && station {
        2
    } else {
        1
    }
}

/// `dissuade report` over `cfg`'s topics as JSON.
fn report_json(cfg: &Config, by: &str, from_ms: i64, to_ms: i64) -> serde_json::Value {
    let time = |ms| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dissuade"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["report", "--brokers", &cfg.kafka.brokers])
        .args(["--task-topic", &cfg.kafka.task_topic])
        .args(["--feedback-topic", &cfg.kafka.feedback_topic])
        .args(["--from", &time(from_ms), "--to", &time(to_ms)])
        .args(["--by", by, "--format", "json"])
        .output()
        .expect("dissuade report runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the report is JSON")
}

/// Task records on the topic, at least `n` of them.
fn task_records(cfg: &Config, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
    consume(&cfg.kafka.brokers, &cfg.kafka.task_topic, n, timeout)
        .iter()
        .map(|m| serde_json::from_slice(m.payload().unwrap()).unwrap())
        .collect()
}

/// The whole loop in `dissuade run` processes, on the wall clock: events in, tasks out,
/// officers' answers, deadlines passing, both tiers of escalation. Once with one process, once
/// with two in one group, one of which is killed with SIGKILL and restarted between the
/// answers and the deadlines. The reports of both must be the same, and exact.
#[tokio::test(flavor = "multi_thread")]
async fn two_processes_one_killed_report_what_one_process_reports() {
    let broker = start_broker().await;
    let single = config(&broker.bootstrap(), 4);
    let pair = config(&broker.bootstrap(), 4);
    create_topics(&single).await;
    create_topics(&pair).await;
    // Every task is due 45 s after its event: long enough for the answers to arrive first on
    // a busy machine, short enough for a test.
    let (sla, second) = ("45s", "10s");
    let start = chrono::Utc::now().timestamp_millis();
    // One task per person: events that would upgrade a task are left out.
    let mut events = synthetic_events_at(&single, 400, 11, 100_000, 0.0, start, 1);
    let expected = loop {
        let expected = expected_tasks(&single, &events);
        let upgrades: std::collections::HashSet<String> = expected
            .iter()
            .filter(|t| t.kind != "new")
            .map(|t| format!("\"{}\"", t.event_id))
            .collect();
        if upgrades.is_empty() {
            break expected;
        }
        events.retain(|(_, e)| {
            let e = String::from_utf8_lossy(e);
            !upgrades.iter().any(|id| e.contains(id.as_str()))
        });
    };
    assert!(expected.len() > 100, "{} tasks", expected.len());

    let one = loop_process(&single, sla, second);
    let mut two = [
        loop_process(&pair, sla, second),
        loop_process(&pair, sla, second),
    ];
    for cfg in [&single, &pair] {
        produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &events).await;
    }

    // The officers answer each run's tasks (their `created_at` differs between the runs; the
    // answers' times follow it so that time to first contact is the same).
    let (mut unanswered, mut escalated) = (0, 0);
    for cfg in [&single, &pair] {
        let mut tasks = task_records(cfg, expected.len(), WAIT);
        assert_eq!(tasks.len(), expected.len());
        tasks.sort_by(|a, b| a["task_id"].as_str().cmp(&b["task_id"].as_str()));
        let fb: Vec<_> = tasks
            .iter()
            .enumerate()
            .flat_map(|(j, t)| answers(j, t))
            .collect();
        produce(&cfg.kafka.brokers, &cfg.kafka.feedback_topic, &fb).await;
        let silent: Vec<_> = tasks.iter().step_by(4).collect();
        unanswered = silent.len();
        escalated = silent.iter().map(|t| tiers(t)).sum();
    }
    std::thread::sleep(Duration::from_secs(1));
    two[0].kill().expect("SIGKILL");
    two[0].wait().unwrap();
    two[0] = loop_process(&pair, sla, second);

    // Every escalation of every unanswered task, in both runs.
    let all = expected.len() + escalated;
    let runs: Vec<Vec<serde_json::Value>> = [&single, &pair]
        .iter()
        .map(|cfg| task_records(cfg, all, Duration::from_secs(90)))
        .collect();
    terminate(one);
    for child in two {
        terminate(child);
    }
    for (run, records) in ["one process", "two processes"].iter().zip(&runs) {
        let escalations: Vec<_> = records
            .iter()
            .filter(|t| t["kind"] == "escalation")
            .collect();
        let distinct: std::collections::HashSet<_> =
            escalations.iter().map(|t| t["task_id"].as_str()).collect();
        eprintln!(
            "{run}: {} escalation records, {} distinct",
            escalations.len(),
            distinct.len()
        );
        let mut tiers: std::collections::BTreeMap<&str, Vec<u64>> = Default::default();
        for e in &escalations {
            tiers
                .entry(e["escalation_of"].as_str().unwrap_or("?"))
                .or_default()
                .push(e["tier"].as_u64().unwrap());
        }
        assert_eq!(distinct.len(), escalated, "{run}: {tiers:?}");
    }

    let (from, to) = (start - 3_600_000, start + 3_600_000);
    for by in ["station", "rule"] {
        let a = report_json(&single, by, from, to);
        let b = report_json(&pair, by, from, to);
        assert_eq!(a, b, "--by {by}");
    }
    let report = report_json(&single, "station", from, to);
    assert!(report["rows"].as_array().unwrap().len() > 1, "{report:#}");
    let total = &report["total"];
    let n = expected.len() as u64;
    let share = |r: std::ops::Range<usize>, of: usize| {
        (0..expected.len())
            .filter(|j| r.contains(&(j % of)))
            .count() as u64
    };
    assert_eq!(total["tasks"], n);
    assert_eq!(total["people"], n);
    assert_eq!(total["reached"], share(1..3, 4));
    assert_eq!(total["escalated"], unanswered as u64);
    assert_eq!(total["overdue"], unanswered as u64);
    assert_eq!(total["false_alarms"], share(3..4, 8));
    assert_eq!(total["losses_cny"], 5000.0 * share(7..8, 8) as f64);
}
