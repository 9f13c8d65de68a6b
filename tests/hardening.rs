#![cfg(feature = "embedded-broker")]
//! The first half under the faults that used to break it: an oversized record, an output the
//! broker refuses, a wrongly dated event, one number written three ways, one event id reused
//! for two people, a redelivered upgrade, and the owner of a partition killed while another
//! instance takes over.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use dissuade::kafka::processor::{
    HEADER_ERROR, HEADER_ERROR_FIELD, HEADER_ERROR_KIND, HEADER_ORIGINAL_SIZE, HEADER_OUTPUT_TOPIC,
    HEADER_SOURCE_OFFSET, HEADER_TRUNCATED,
};
use dissuade::pipeline::{Action, Outcome, Pipeline};
use dissuade::task::TaskSummary;
use rdkafka::message::{Headers, Message, OwnedMessage};

const WAIT: Duration = Duration::from_secs(60);

/// Outcomes worked out from config/rules.toml: `blacklisted` alone is high (60), a bank
/// impersonation alone is medium (40), police impersonation from overseas to an elderly
/// person with a payment link is critical.
const HIGH: &str = r#","call_duration_s":120,"caller_flags":["blacklisted"],"callee_location":{"lon":117.196623,"lat":39.132584}"#;
const MEDIUM: &str = r#","call_duration_s":60,"caller_flags":["spoofed_bank"],"callee_location":{"lon":117.196623,"lat":39.132584}"#;
const CRITICAL: &str = r#","call_duration_s":742,"caller_flags":["overseas","spoofed_official"],"callee_age":71,"sms_with_link":true,"fraud_type_hint":"impersonate_police","callee_location":{"lon":117.196623,"lat":39.132584}"#;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// One event keyed by its callee as written.
fn event(id: &str, at_ms: i64, callee: &str, extra: &str) -> (String, Vec<u8>) {
    let json = format!(
        r#"{{"event_id":"{id}","occurred_at":{at_ms},"caller_number":"13911110001","callee_number":"{callee}"{extra}}}"#
    );
    (callee.to_string(), json.into_bytes())
}

fn header<'a>(m: &'a OwnedMessage, key: &str) -> Option<&'a str> {
    m.headers()?
        .iter()
        .find(|h| h.key == key)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
}

/// Task records grouped by id: a redelivery shows up as a second, identical copy.
fn copies(tasks: &[TaskSummary]) -> BTreeMap<String, Vec<TaskSummary>> {
    let mut by_id: BTreeMap<String, Vec<TaskSummary>> = BTreeMap::new();
    for t in tasks {
        by_id.entry(t.task_id.clone()).or_default().push(t.clone());
    }
    by_id
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_record_is_dead_lettered_cut_to_fit_and_the_next_event_gets_its_task() {
    let broker = start_broker().await;
    let cfg = sample_config(&broker.bootstrap(), 2);
    create_topics(&cfg).await;
    let now = now_ms();
    // Valid JSON with a 700 KB string where a number belongs: before, its dead letter quoted
    // the string twice over, the broker refused it and the service stopped for good.
    let huge = format!(
        r#"{{"event_id":"big","occurred_at":{now},"caller_number":"13911110001","callee_number":"13800000001","call_duration_s":60,"callee_age":"{}"}}"#,
        "x".repeat(700_000)
    );
    let records = vec![
        ("13800000001".to_string(), huge.clone().into_bytes()),
        event("after-big", now - 1000, "13800000001", HIGH),
    ];
    let p = RunningProcessor::start(&cfg);
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &records).await;
    assert!(p.wait_consumed(2, WAIT));

    let tasks = tasks_of(&consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        1,
        WAIT,
    ));
    assert_eq!(
        tasks
            .iter()
            .map(|t| t.event_id.as_str())
            .collect::<Vec<_>>(),
        ["after-big"]
    );
    let dead = consume_settled(&cfg.kafka.brokers, &cfg.kafka.dlq_topic, 1, WAIT);
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    let max = cfg.input.max_record_bytes;
    assert_eq!(header(d, HEADER_ERROR_KIND), Some("too_large"));
    assert_eq!(
        header(d, HEADER_ERROR),
        Some(
            format!(
                "record is {} bytes, larger than the limit of {max} bytes",
                huge.len()
            )
            .as_str()
        )
    );
    assert_eq!(
        header(d, HEADER_ORIGINAL_SIZE),
        Some(huge.len().to_string().as_str())
    );
    assert_eq!(header(d, HEADER_TRUNCATED), Some("true"));
    assert_eq!(header(d, HEADER_SOURCE_OFFSET), Some("0"));
    assert_eq!(d.payload(), Some(&huge.as_bytes()[..max]));
    assert!(!p.handle_finished(), "the processor is still running");
    p.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_output_the_broker_refuses_is_dead_lettered_and_processing_goes_on() {
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 2);
    // A producer limit below the input limit: the dead letter of a large bad record is
    // refused as a record (MSG_SIZE_TOO_LARGE), which used to stop the service.
    cfg.kafka
        .producer_properties
        .insert("message.max.bytes".into(), "8000".into());
    create_topics(&cfg).await;
    let now = now_ms();
    let bad = format!(
        r#"{{"event_id":"bad","occurred_at":{now},"caller_number":"13911110001","call_duration_s":60,"note":"{}"}}"#,
        "n".repeat(20_000)
    );
    let records = vec![
        ("13800000002".to_string(), bad.clone().into_bytes()),
        event("after-bad", now - 1000, "13800000002", HIGH),
    ];
    let p = RunningProcessor::start(&cfg);
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &records).await;
    assert!(p.wait_consumed(2, WAIT));
    let tasks = tasks_of(&consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        1,
        WAIT,
    ));
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].event_id, "after-bad");
    let dead = consume_settled(&cfg.kafka.brokers, &cfg.kafka.dlq_topic, 1, WAIT);
    assert_eq!(dead.len(), 1);
    let d = &dead[0];
    assert_eq!(header(d, HEADER_ERROR_KIND), Some("output_rejected"));
    assert_eq!(
        header(d, HEADER_ORIGINAL_SIZE),
        Some(bad.len().to_string().as_str())
    );
    assert_eq!(header(d, HEADER_OUTPUT_TOPIC), None);
    assert_eq!(d.payload().unwrap_or_default(), b"");
    assert!(
        header(d, HEADER_ERROR).is_some_and(|e| e.contains("payload was dropped")),
        "{:?}",
        header(d, HEADER_ERROR)
    );
    assert_eq!(p.metrics.outputs_rejected.get(), 1);
    p.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_far_future_event_is_dead_lettered_and_cannot_switch_off_suppression() {
    let broker = start_broker().await;
    let cfg = sample_config(&broker.bootstrap(), 1);
    create_topics(&cfg).await;
    let now = now_ms();
    let five_years = 5 * 365 * 24 * 3600 * 1000;
    let records = vec![
        event("first", now - 120_000, "13800000001", HIGH),
        event("future", now + five_years, "13800000002", HIGH),
        event("repeat", now - 60_000, "13800000001", HIGH),
    ];
    let p = RunningProcessor::start(&cfg);
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &records).await;
    assert!(p.wait_consumed(3, WAIT));
    // Housekeeping (expiry) runs every second: give it a few turns before the repeat is
    // judged, as the five-year watermark used to empty the state.
    std::thread::sleep(Duration::from_millis(2500));
    // Keyed by another spelling of its callee: processed, and counted as a key mismatch
    // (the producer's partitioning may split this person over two partitions).
    let (_, spelled) = event("spelled", now - 20_000, "13800000009", HIGH);
    produce(
        &cfg.kafka.brokers,
        &cfg.kafka.input_topic,
        &[
            event("repeat-later", now - 30_000, "13800000001", HIGH),
            ("+86 138 0000 0009".to_string(), spelled),
        ],
    )
    .await;
    assert!(p.wait_consumed(5, WAIT));
    assert_eq!(p.metrics.key_mismatches.get(), 1);

    let tasks = tasks_of(&consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        2,
        WAIT,
    ));
    assert_eq!(
        tasks
            .iter()
            .map(|t| t.event_id.as_str())
            .collect::<Vec<_>>(),
        ["first", "spelled"],
        "the repeats are suppressed"
    );
    let dead = consume_settled(&cfg.kafka.brokers, &cfg.kafka.dlq_topic, 1, WAIT);
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], HEADER_ERROR_FIELD), Some("occurred_at"));
    assert_eq!(header(&dead[0], HEADER_ERROR_KIND), Some("out_of_range"));
    p.stop();
}

#[test]
fn one_number_written_three_ways_is_one_person_and_a_reused_event_id_is_two_tasks() {
    let cfg = sample_config("127.0.0.1:1", 1);
    let (pipeline, _) = Pipeline::load(&cfg).unwrap();
    let now = now_ms();
    let mut tasks = Vec::new();
    let mut suppressed = 0;
    let mut buf = Vec::new();
    for (id, callee) in [
        ("a", "13912345678"),
        ("b", "+8613912345678"),
        ("c", "139 1234 5678"),
        // One event id reused for two different people.
        ("d", "13700000001"),
        ("d", "13700000002"),
    ] {
        buf.clear();
        let (_, e) = event(id, now - 1000, callee, HIGH);
        match pipeline.process(&e, 0, now, &mut buf) {
            Outcome::Scored(s) => match s.action {
                Action::Task(_) => tasks.push(serde_json::from_slice::<TaskSummary>(&buf).unwrap()),
                Action::Suppressed { .. } => suppressed += 1,
                Action::BelowThreshold => panic!("{id} is high"),
            },
            Outcome::Rejected(e) => panic!("{id}: {e}"),
        }
    }
    assert_eq!(suppressed, 2, "b and c are a's person");
    let ids: Vec<&str> = tasks.iter().map(|t| t.event_id.as_str()).collect();
    assert_eq!(ids, ["a", "d", "d"]);
    assert_ne!(tasks[1].task_id, tasks[2].task_id);

    buf.clear();
    let (_, e) = event("x", now, "not a phone", HIGH);
    match pipeline.process(&e, 0, now, &mut buf) {
        Outcome::Rejected(e) => {
            assert_eq!(e.field(), Some("callee_number"));
            assert!(!e.to_string().contains("not a phone"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_upgrade_keeps_its_kind_and_its_original_is_not_lost() {
    let broker = start_broker().await;
    let cfg = sample_config(&broker.bootstrap(), 2);
    create_topics(&cfg).await;
    let now = now_ms();
    let records = vec![
        event("medium", now - 120_000, "13800000005", MEDIUM),
        event("critical", now - 60_000, "13800000005", CRITICAL),
    ];
    let first = RunningProcessor::start(&cfg);
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &records).await;
    assert!(first.wait_consumed(2, WAIT));
    let before = tasks_of(&consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        2,
        WAIT,
    ));
    first.stop();
    assert_eq!(before.len(), 2);
    assert_eq!(
        (before[0].kind.as_str(), before[1].kind.as_str()),
        ("new", "upgrade")
    );
    assert_eq!(before[1].upgrade_of.as_ref(), Some(&before[0].task_id));

    // Every record redelivered, as after a crash before any commit: a second group reads
    // the input from the start. The changelog holds the first group's state, all of it
    // written past the second group's (empty) commit, so none is restored: the redelivered
    // events meet the state they met the first time, not the upgrade that followed them.
    let mut again = cfg.clone();
    again.kafka.group_id = unique("redelivery");
    let second = RunningProcessor::start(&again);
    assert!(second.wait_consumed(2, WAIT));
    let all = tasks_of(&consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        4,
        WAIT,
    ));
    assert_eq!(
        second.metrics.state_restored.get(),
        0,
        "state ahead of the commit is left for redelivery"
    );
    second.stop();
    let by_id = copies(&all);
    assert_eq!(by_id.len(), 2, "{all:#?}");
    for (id, copies) in &by_id {
        assert_eq!(copies.len(), 2, "{id} delivered once and redelivered once");
        assert_eq!(copies[0], copies[1], "a redelivery is the same task");
    }
    assert_eq!(by_id[&before[1].task_id][1].kind, "upgrade");
}

/// `dissuade run` on `cfg`'s broker and topics, with its metrics on `port`.
fn spawn_instance(cfg: &dissuade::config::Config, port: u16) -> std::process::Child {
    run_command(cfg)
        .env("DISSUADE__METRICS__LISTEN", format!("\"127.0.0.1:{port}\""))
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dissuade run starts")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One sample of an instance's `/metrics`, 0 while it is not up.
fn metric(port: u16, series: &str) -> f64 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0.0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return 0.0;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn when_the_owner_of_a_partition_is_killed_the_survivor_still_suppresses_the_repeat() {
    let broker = start_broker().await;
    let cfg = sample_config(&broker.bootstrap(), 2);
    create_topics(&cfg).await;
    let ports = [free_port(), free_port()];
    let mut instances = [
        spawn_instance(&cfg, ports[0]),
        spawn_instance(&cfg, ports[1]),
    ];
    let assigned = |i: usize| metric(ports[i], "dissuade_assigned_partitions");
    wait_for("both instances to own a partition", || {
        assigned(0) == 1.0 && assigned(1) == 1.0
    });

    let now = now_ms();
    produce(
        &cfg.kafka.brokers,
        &cfg.kafka.input_topic,
        &[event("before-kill", now - 120_000, "13800000007", HIGH)],
    )
    .await;
    let consumed = |i: usize| metric(ports[i], "dissuade_events_consumed_total");
    wait_for("the event to be consumed", || {
        consumed(0) + consumed(1) == 1.0
    });
    let owner = if consumed(0) == 1.0 { 0 } else { 1 };
    let survivor = 1 - owner;
    let first = consume_settled(&cfg.kafka.brokers, &cfg.kafka.task_topic, 1, WAIT);
    assert_eq!(first.len(), 1);
    // Let the owner commit the event's offset, then kill it without warning.
    std::thread::sleep(Duration::from_millis(500));
    instances[owner].kill().unwrap();
    instances[owner].wait().unwrap();

    wait_for("the survivor to take the partition over", || {
        assigned(survivor) == 2.0
    });
    produce(
        &cfg.kafka.brokers,
        &cfg.kafka.input_topic,
        &[event("after-kill", now - 60_000, "13800000007", HIGH)],
    )
    .await;
    wait_for("the survivor to consume the repeat", || {
        consumed(survivor) >= 1.0
    });
    let suppressed = metric(
        ports[survivor],
        "dissuade_events_total{outcome=\"suppressed\"}",
    );
    let restored = metric(ports[survivor], "dissuade_state_restored_records_total");
    instances[survivor].kill().unwrap();
    instances[survivor].wait().unwrap();

    let tasks = tasks_of(&consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        1,
        WAIT,
    ));
    assert_eq!(
        tasks
            .iter()
            .map(|t| t.event_id.as_str())
            .collect::<Vec<_>>(),
        ["before-kill"],
        "no second task for the same person"
    );
    assert_eq!(suppressed, 1.0);
    assert!(restored >= 1.0, "the survivor read the dead owner's state");
}
