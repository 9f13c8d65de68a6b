#![cfg(feature = "embedded-broker")]
//! The service against a real Kafka protocol implementation: the embedded broker, real
//! rdkafka producers and consumers, the shipped sample city.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use dissuade::kafka::processor::{
    HEADER_ERROR, HEADER_ERROR_FIELD, HEADER_ERROR_KIND, HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION, HEADER_SOURCE_TOPIC,
};
use dissuade::task::TaskSummary;
use rdkafka::message::{Headers, Message};

const WAIT: Duration = Duration::from_secs(60);

fn by_id(tasks: &[TaskSummary]) -> BTreeMap<String, TaskSummary> {
    tasks
        .iter()
        .map(|t| (t.task_id.clone(), t.clone()))
        .collect()
}

/// Asserts the two task lists are equal as multisets: the same ids with the same content,
/// each exactly once. Reports counts and a few examples rather than thousands of ids.
fn assert_same_tasks(got: &[TaskSummary], expected: &[TaskSummary]) {
    assert_eq!(
        duplicated_ids(expected),
        [],
        "the reference has each task once"
    );
    let duplicated = duplicated_ids(got);
    assert!(
        duplicated.is_empty(),
        "{} task ids delivered more than once (of {} records), e.g. {:?}",
        duplicated.len(),
        got.len(),
        duplicated.iter().take(3).collect::<Vec<_>>()
    );
    let (got, want) = (by_id(got), by_id(expected));
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let differ: Vec<_> = want
        .iter()
        .filter(|(k, t)| got.get(*k).is_some_and(|g| g != *t))
        .map(|(k, t)| (t.clone(), got[k].clone()))
        .take(3)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "{} expected, {} got: {} missing (e.g. {:?}), {} unexpected (e.g. {:?}), differing: {:#?}",
        want.len(),
        got.len(),
        missing.len(),
        missing.iter().take(3).collect::<Vec<_>>(),
        extra.len(),
        extra.iter().take(3).collect::<Vec<_>>(),
        differ
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_event_yields_exactly_the_expected_tasks() {
    // Few victims, many risky calls: repeats exercise suppression and upgrades.
    let Scenario {
        broker: _broker,
        cfg,
        events,
        expected,
    } = Scenario::new(4, 1500, 7, 300).await;
    assert!(expected.len() > 100, "the sample should produce tasks");
    assert!(expected.iter().any(|t| t.kind == "upgrade"));

    let p = RunningProcessor::start(&cfg);
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &events).await;
    let got = consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        expected.len(),
        WAIT,
    );
    assert!(p.wait_consumed(events.len() as u64, WAIT));
    p.stop();

    // No task lost, none duplicated.
    let got_tasks = tasks_of(&got);
    assert_same_tasks(&got_tasks, &expected);
    // Keyed by assignee: each officer's tasks on one partition.
    for m in &got {
        let task: TaskSummary = serde_json::from_slice(m.payload().unwrap()).unwrap();
        assert_eq!(m.key(), Some(task.assignee.id.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_records_go_to_the_dead_letter_topic_with_headers() {
    let broker = start_broker().await;
    let cfg = sample_config(&broker.bootstrap(), 1);
    create_topics(&cfg).await;
    let good = synthetic_events(&cfg, 50, 11, 50, 0.0);
    let bad: Vec<(String, Vec<u8>)> = vec![
        ("k1".into(), b"{not json".to_vec()),
        (
            "k2".into(),
            br#"{"event_id":"b2","occurred_at":1,"caller_number":"1","call_duration_s":3}"#.to_vec(),
        ),
        (
            "k3".into(),
            br#"{"event_id":"b3","occurred_at":1,"caller_number":"1","callee_number":"2","call_duration_s":3,"callee_location":{"lon":117.2,"lat":91}}"#
                .to_vec(),
        ),
    ];
    let mut records = bad.clone();
    records.extend(good.iter().cloned());
    let expected = expected_tasks(&cfg, &good);

    let p = RunningProcessor::start(&cfg);
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &records).await;
    let dead = consume_settled(&cfg.kafka.brokers, &cfg.kafka.dlq_topic, 3, WAIT);
    let tasks = consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        expected.len(),
        WAIT,
    );
    assert!(p.wait_consumed(records.len() as u64, WAIT));
    assert_eq!(p.metrics.dead_letters(), 3);
    p.stop();

    assert_eq!(dead.len(), 3);
    let expectations = [
        ("k1", "malformed", None, 0),
        ("k2", "missing_field", Some("callee_number"), 1),
        ("k3", "out_of_range", Some("callee_location.lat"), 2),
    ];
    for (m, (key, kind, field, offset)) in dead.iter().zip(expectations) {
        assert_eq!(m.key(), Some(key.as_bytes()));
        let original = &bad.iter().find(|(k, _)| k == key).unwrap().1;
        assert_eq!(m.payload(), Some(original.as_slice()), "payload unchanged");
        let headers: BTreeMap<&str, String> = m
            .headers()
            .expect("headers")
            .iter()
            .map(|h| {
                (
                    h.key,
                    String::from_utf8_lossy(h.value.unwrap()).into_owned(),
                )
            })
            .collect();
        assert_eq!(headers[HEADER_ERROR_KIND], kind);
        assert_eq!(headers.get(HEADER_ERROR_FIELD).map(String::as_str), field);
        assert!(!headers[HEADER_ERROR].is_empty());
        assert_eq!(headers[HEADER_SOURCE_TOPIC], cfg.kafka.input_topic);
        assert_eq!(headers[HEADER_SOURCE_PARTITION], "0");
        assert_eq!(headers[HEADER_SOURCE_OFFSET], offset.to_string());
    }
    // The consumer kept going after the bad records.
    assert_same_tasks(&tasks_of(&tasks), &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_mid_stream_loses_no_task() {
    // One event per victim, so the expected tasks do not depend on which instance saw what.
    let Scenario {
        broker: _broker,
        cfg,
        events,
        expected,
    } = Scenario::new(4, 4000, 13, 1_000_000).await;

    let first = RunningProcessor::start(&cfg);
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &events[..2000]).await;
    assert!(first.wait_consumed(1000, WAIT));
    first.stop();

    let second = RunningProcessor::start(&cfg);
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &events[2000..]).await;
    let got = consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        expected.len(),
        WAIT,
    );
    second.stop();

    // A graceful stop commits everything it delivered: nothing is redelivered, so no task
    // is duplicated.
    assert_same_tasks(&tasks_of(&got), &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processors_split_the_partitions_and_emit_each_task_once() {
    let Scenario {
        broker: _broker,
        cfg,
        events,
        expected,
    } = Scenario::new(4, 4000, 17, 1_000_000).await;

    let a = RunningProcessor::start(&cfg);
    let b = RunningProcessor::start(&cfg);
    // Both members must hold partitions before the load arrives.
    let deadline = std::time::Instant::now() + WAIT;
    while a.metrics.assigned_partitions.get() + b.metrics.assigned_partitions.get() < 4
        || a.metrics.assigned_partitions.get() == 0
        || b.metrics.assigned_partitions.get() == 0
    {
        assert!(std::time::Instant::now() < deadline, "group did not settle");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &events).await;
    let got = consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        expected.len(),
        WAIT,
    );
    let (ca, cb) = (
        a.metrics.events_consumed.get(),
        b.metrics.events_consumed.get(),
    );
    a.stop();
    b.stop();

    assert!(ca > 0 && cb > 0, "both instances worked: {ca} and {cb}");
    assert_eq!(ca + cb, events.len() as u64, "each event consumed once");
    assert_same_tasks(&tasks_of(&got), &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn run_drains_commits_and_exits_zero_on_sigterm() {
    use std::io::{BufRead, BufReader};

    // One event per victim: the tasks do not depend on which instance saw which event.
    let Scenario {
        broker: _broker,
        cfg,
        events,
        expected,
    } = Scenario::new(4, 2000, 23, 1_000_000).await;
    let (first, second) = events.split_at(1000);
    let first_tasks = expected_tasks(&cfg, first);
    assert!(!first_tasks.is_empty() && first_tasks.len() < expected.len());
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, first).await;

    // Offsets are committed only when it stops (the interval is an hour): had the stop not
    // committed, the second instance would process the first events again and duplicate
    // their tasks.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = run_command(&cfg)
        .env("DISSUADE__KAFKA__COMMIT_INTERVAL", "\"1h\"")
        .env("DISSUADE__METRICS__LISTEN", format!("\"127.0.0.1:{port}\""))
        .env("RUST_LOG", "dissuade=info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dissuade run starts");
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    });
    let some = consume(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        first_tasks.len(),
        WAIT,
    );
    assert_eq!(
        some.len(),
        first_tasks.len(),
        "the first instance did its work"
    );
    // Every event read, so the commit at the stop lands at the end of what was produced (the
    // embedded broker cannot resume inside a record batch; see the crash test below).
    let deadline = std::time::Instant::now() + WAIT;
    while metric(port, "dissuade_events_consumed_total") < first.len() as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "first events not all consumed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let started = std::time::Instant::now();
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let log = log.join().unwrap();
    assert!(status.success(), "{status:?}: {log:#?}");
    assert!(started.elapsed() < cfg.kafka.shutdown_timeout, "{log:#?}");
    assert!(
        log.iter().any(|l| l.contains("processor stopped")),
        "{log:#?}"
    );

    // A second instance takes the rest and redoes nothing the first one did.
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, second).await;
    let p = RunningProcessor::start(&cfg);
    let got = consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        expected.len(),
        WAIT,
    );
    let consumed = p.metrics.events_consumed.get();
    p.stop();
    assert_eq!(consumed, second.len() as u64, "only the second events");
    assert_same_tasks(&tasks_of(&got), &expected);
}

/// One sample from the `/metrics` of an instance listening on `port` (0 while it is not up).
fn metric(port: u16, series: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0.0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    if s.write_all(request.as_bytes()).is_err() {
        return 0.0;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Starts `dissuade run` against `cfg`'s broker, with `cfg`'s topics and group.
fn spawn_run(cfg: &dissuade::config::Config) -> std::process::Child {
    run_command(cfg)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dissuade run starts")
}

/// Kills `dissuade run` mid-stream and restarts it: the restarted instance resumes each
/// partition from its committed offset, which usually lies inside a record batch (the
/// embedded broker returns the containing batch, as Kafka does; see tests/broker.rs).
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_stream_loses_no_task_and_redelivery_keeps_task_ids() {
    let Scenario {
        broker: _broker,
        cfg,
        events,
        expected,
    } = Scenario::new(4, 6000, 19, 1_000_000).await;
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &events).await;

    // Kill the first instance without warning once it has produced some tasks.
    let mut first = spawn_run(&cfg);
    let some = consume(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        expected.len() / 3,
        WAIT,
    );
    assert!(!some.is_empty(), "the first instance produced tasks");
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = spawn_run(&cfg);
    // Redelivery duplicates some tasks, so read until every distinct task is there.
    let deadline = std::time::Instant::now() + WAIT;
    let mut got = Vec::new();
    while std::time::Instant::now() < deadline {
        got = tasks_of(&consume(
            &cfg.kafka.brokers,
            &cfg.kafka.task_topic,
            usize::MAX,
            Duration::from_secs(2),
        ));
        if by_id(&got).len() >= expected.len() {
            break;
        }
    }
    second.kill().unwrap();
    second.wait().unwrap();

    // Redelivered events reproduce their task ids: the distinct ids are exactly the expected
    // ones, and duplicates are only re-sent copies of the same task.
    let distinct = by_id(&got);
    let expected_by_id = by_id(&expected);
    let missing = expected_by_id
        .keys()
        .filter(|k| !distinct.contains_key(*k))
        .count();
    let unexpected = distinct
        .keys()
        .filter(|k| !expected_by_id.contains_key(*k))
        .count();
    assert_eq!(
        (missing, unexpected),
        (0, 0),
        "{} expected tasks, {} distinct after the crash ({} records)",
        expected.len(),
        distinct.len(),
        got.len()
    );
    for t in &got {
        assert_eq!(t.event_id, expected_by_id[&t.task_id].event_id);
    }
}

/// With `kafka.delivery = "exactly-once"`, kills mid-stream leave no repeat for a
/// read_committed reader: what a killed instance had produced in its open transaction is
/// aborted when its successor (same transactional id) starts, and the successor redoes it
/// from the offsets committed with the last transaction. The same scenario at least once
/// repeats tasks (the test above), so this one fails if the transactions do not hold.
#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_kills_mid_stream_leave_each_task_once_for_a_read_committed_reader() {
    let Scenario {
        broker: _broker,
        cfg,
        events,
        expected,
    } = Scenario::new(4, 6000, 23, 1_000_000).await;
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &events).await;
    let transactional_id = unique("txn");
    let exactly_once = || {
        let mut c = run_command(&cfg);
        c.env("DISSUADE__KAFKA__DELIVERY", "\"exactly-once\"")
            .env(
                "DISSUADE__KAFKA__TRANSACTIONAL_ID",
                format!("\"{transactional_id}\""),
            )
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dissuade run starts")
    };

    // Two instances killed without warning once more of the tasks are visible each time.
    for share in [4, 2] {
        let mut killed = exactly_once();
        let some = consume(
            &cfg.kafka.brokers,
            &cfg.kafka.task_topic,
            expected.len() / share,
            WAIT,
        );
        assert!(!some.is_empty(), "the instance produced tasks");
        killed.kill().unwrap();
        killed.wait().unwrap();
    }
    let mut last = exactly_once();
    let got = tasks_of(&consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        expected.len(),
        WAIT,
    ));
    last.kill().unwrap();
    last.wait().unwrap();
    assert_same_tasks(&got, &expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn created_topics_get_the_configured_replication_factor() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 2);
    let replicas = |topic: &str| {
        let c: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .create()
            .unwrap();
        let md = c
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        md.topics()[0]
            .partitions()
            .iter()
            .map(|p| p.replicas().len())
            .collect::<Vec<_>>()
    };
    // Unset: the cluster's default (-1), which the embedded broker takes as 1.
    let k = cfg.kafka.clone();
    dissuade::kafka::ensure_topics(&k, &k.brokers, &[&k.input_topic])
        .await
        .unwrap();
    assert_eq!(replicas(&k.input_topic), [1, 1]);
    cfg.kafka.replication_factor = Some(2);
    let k = &cfg.kafka;
    dissuade::kafka::ensure_topics(k, &k.brokers, &[&k.task_topic])
        .await
        .unwrap();
    assert_eq!(replicas(&k.task_topic), [2, 2]);
}

/// Numbers added to and removed from a list through the lists topic reach the loaded rule
/// set while it runs; records that are not changes are counted and skipped.
#[tokio::test(flavor = "multi_thread")]
async fn the_lists_topic_changes_a_loaded_list_while_running_and_a_reload_keeps_the_changes() {
    use dissuade::pipeline::Pipeline;
    use dissuade::reload::{Reloaded, Reloader};
    use std::borrow::Cow;
    use std::sync::Arc;

    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 1);
    let k = &cfg.kafka;
    dissuade::kafka::ensure_topics(k, &k.brokers, &[&k.lists_topic])
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fraud.txt"), "+852 5123 9901\n").unwrap();
    let rules_file = |score: i32| {
        format!(
            "[levels]\nlow = 20\nmedium = 40\nhigh = 60\ncritical = 90\n\n\
             [[list]]\nid = \"known_fraud\"\ndescription = \"d\"\nfile = \"fraud.txt\"\n\n\
             [[rule]]\nid = \"listed\"\ndescription = \"d\"\nreason = \"x\"\nscore = {score}\n\
             when = \"caller_number in_list known_fraud\"\n"
        )
    };
    cfg.rules.path = dir.path().join("rules.toml");
    std::fs::write(&cfg.rules.path, rules_file(60)).unwrap();
    let (pipeline, _) = Pipeline::load(&cfg).unwrap();
    let pipeline = Arc::new(pipeline);
    let metrics = Arc::new(dissuade::metrics::Metrics::new(&pipeline.rules(), 0));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let k = &cfg.kafka;
    let reader = dissuade::kafka::lists::spawn(
        k,
        &broker.bootstrap(),
        pipeline.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .unwrap();
    let change = |list: &str, number: &str, op: &str| {
        (
            number.to_owned(),
            format!(r#"{{"list":"{list}","number":"{number}","op":"{op}"}}"#).into_bytes(),
        )
    };
    produce(
        &broker.bootstrap(),
        &k.lists_topic,
        &[
            change("known_fraud", "13900001111", "add"),
            change("known_fraud", "0085251239901", "remove"),
            change("official", "110", "add"),
            change("known_fraud", "not a number", "add"),
            ("x".into(), b"not json".to_vec()),
        ],
    )
    .await;
    let text = || metrics.render();
    let deadline = std::time::Instant::now() + WAIT;
    while !text().contains("dissuade_list_changes_total{result=\"invalid\"} 2") {
        assert!(std::time::Instant::now() < deadline, "{}", text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let score = |caller: &str| {
        let mut e = dissuade::event::Event::decode(
            br#"{"event_id":"e","occurred_at":1795480200000,"caller_number":"1","callee_number":"13812345678","call_duration_s":60}"#,
        )
        .unwrap();
        e.caller_number = Cow::Owned(caller.to_owned());
        pipeline.rules().score(&e).total
    };
    assert_eq!(score("139 0000 1111"), 60, "added");
    assert_eq!(score("+85251239901"), 0, "removed");
    let t = text();
    for line in [
        "dissuade_list_changes_total{result=\"applied\"} 2",
        "dissuade_list_changes_total{result=\"unknown_list\"} 1",
    ] {
        assert!(t.contains(line), "{line} in\n{t}");
    }

    // A reload reads the list file again: the topic's changes still hold on the new set.
    let mut reloader = Reloader::new(cfg.clone(), pipeline.clone(), metrics.clone(), None);
    std::fs::write(&cfg.rules.path, rules_file(70)).unwrap();
    assert!(matches!(
        reloader.reload("test").unwrap(),
        Reloaded::Applied {
            windows_rebuilt: false,
            ..
        }
    ));
    assert_eq!(score("139 0000 1111"), 70, "added, after the reload");
    assert_eq!(score("+85251239901"), 0, "removed, after the reload");
    shutdown.cancel();
    reader.join().unwrap();
}

/// The feature windows survive a restart: calls processed before it are read back from the
/// input when the partition is assigned again, so the fifth elderly person called by one
/// number raises a task although the first three were seen by the previous run.
#[tokio::test(flavor = "multi_thread")]
async fn feature_windows_are_rebuilt_from_the_input_after_a_restart() {
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 1);
    // The sample's windowed rules ship disabled: enable them in a copy.
    let dir = tempfile::tempdir().unwrap();
    cfg.rules.path = sample_rules_edited(dir.path(), |r| {
        r.replace("enabled = false", "enabled = true")
    });
    create_topics(&cfg).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let call = |i: i64| {
        let callee = format!("1380000007{i}");
        let payload = format!(
            r#"{{"event_id":"burst-{i}","occurred_at":{},"caller_number":"13700001234","callee_number":"{callee}","call_duration_s":60,"callee_age":75,"callee_location":{{"lon":117.196623,"lat":39.132584}}}}"#,
            now - 300_000 + i * 30_000
        );
        (callee, payload.into_bytes())
    };
    let first = RunningProcessor::start(&cfg);
    produce(
        &broker.bootstrap(),
        &cfg.kafka.input_topic,
        &[call(1), call(2), call(3)],
    )
    .await;
    assert!(first.wait_consumed(3, WAIT));
    first.stop();

    let second = RunningProcessor::start(&cfg);
    produce(
        &broker.bootstrap(),
        &cfg.kafka.input_topic,
        &[call(4), call(5)],
    )
    .await;
    assert!(second.wait_consumed(2, WAIT));
    let tasks = consume(&broker.bootstrap(), &cfg.kafka.task_topic, 1, WAIT);
    second.stop();
    assert_eq!(
        tasks.len(),
        1,
        "the fifth call made no task: the windows were not rebuilt"
    );
    let task: serde_json::Value = serde_json::from_slice(tasks[0].payload().unwrap()).unwrap();
    assert_eq!(task["event_id"], "burst-5");
    assert_eq!(
        task["reasons"][0]["reason"],
        "Caller 137****1234 called 5 different people aged 60+ within 10 minutes."
    );
}

/// Produces each `(partition, key, payload)` to its partition and waits for the deliveries.
async fn produce_to(bootstrap: &str, topic: &str, records: &[(i32, String, Vec<u8>)]) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("producer");
    for (partition, key, payload) in records {
        producer
            .send(
                FutureRecord::to(topic)
                    .partition(*partition)
                    .key(key.as_str())
                    .payload(payload.as_slice()),
                Duration::from_secs(10),
            )
            .await
            .expect("delivered");
    }
}

/// A caller's bursts over eight input partitions and two instances: the by-caller stages
/// gather the calls of one caller wherever their callees' partitions are, so the fifth
/// elderly person called makes the task. The first burst is decisive: its first four calls
/// go to partitions 0, 2, 4 and 6 and the fifth to 1, so with the range or the round-robin
/// assignor the instance scoring the fifth processed at most two of the others (checked:
/// with each instance keeping caller windows of its own, this fails). The second burst has
/// an instance leave and another join in its middle.
#[tokio::test(flavor = "multi_thread")]
async fn a_callers_burst_is_seen_whole_across_partitions_instances_and_a_rebalance() {
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 8);
    let dir = tempfile::tempdir().unwrap();
    cfg.rules.path = sample_rules_edited(dir.path(), |r| {
        r.replace("score = 45\nenabled = false\n", "score = 45\n")
    });
    create_topics(&cfg).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let call = |burst: &str, caller: &str, i: i64, partition: i32| {
        let callee = format!("139{burst}{i:06}");
        let payload = format!(
            r#"{{"event_id":"{burst}-{i}","occurred_at":{},"caller_number":"{caller}","callee_number":"{callee}","call_duration_s":60,"callee_age":70,"callee_location":{{"lon":117.196623,"lat":39.132584}}}}"#,
            now - 300_000 + i * 30_000
        );
        (partition, callee, payload.into_bytes())
    };
    let consumed = |instances: &[&RunningProcessor]| {
        instances
            .iter()
            .map(|r| r.metrics.events_consumed.get())
            .sum::<u64>()
    };
    // Waits until the processors have consumed `n` records and share the eight partitions,
    // each holding some.
    let settle = |instances: &[&RunningProcessor], n: u64| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let assigned: Vec<usize> = instances
                .iter()
                .map(|r| {
                    r.health
                        .partitions_assigned
                        .load(std::sync::atomic::Ordering::Relaxed)
                })
                .collect();
            let settled = assigned.iter().all(|a| *a > 0) && assigned.iter().sum::<usize>() == 8;
            if settled && consumed(instances) >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {n} calls processed, partitions {assigned:?}",
                consumed(instances)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let bootstrap = broker.bootstrap();
    let input = cfg.kafka.input_topic.clone();
    let task_ids = |n: usize| -> Vec<(String, String)> {
        let tasks = consume_settled(&broker.bootstrap(), &cfg.kafka.task_topic, n, WAIT);
        let mut seen: Vec<(String, String)> = tasks
            .iter()
            .map(|m| {
                let t: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
                (
                    t["event_id"].as_str().unwrap().to_owned(),
                    t["reasons"][0]["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        // Redelivered copies of a task are the same task.
        seen.sort();
        seen.dedup();
        seen
    };

    // One call at a time, each through to the processor before the next: the figure each
    // call sees is then the one a single uninterrupted instance would compute.
    let a = RunningProcessor::start(&cfg);
    let b = RunningProcessor::start(&cfg);
    settle(&[&a, &b], 0);
    // A record that is not an event goes past the stages to the processor, whose dead
    // letter names its place in the input, not in the internal topic.
    produce_to(
        &bootstrap,
        &input,
        &[(3, "13900000000".into(), b"not json".to_vec())],
    )
    .await;
    settle(&[&a, &b], 1);
    for (i, partition) in [(1, 0), (2, 2), (3, 4), (4, 6), (5, 1)] {
        let before = consumed(&[&a, &b]);
        produce_to(
            &bootstrap,
            &input,
            &[call("01", "13700005678", i, partition)],
        )
        .await;
        settle(&[&a, &b], before + 1);
    }
    // Both stages passed every call on, and report their lag (the rekey stage's is the
    // input's) once the clients' statistics come in.
    let scrape = |r: &RunningProcessor, series: &str| -> Option<f64> {
        r.metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    };
    let deadline = std::time::Instant::now() + WAIT;
    let forwarded = |stage: &str| {
        [&a, &b]
            .iter()
            .filter_map(|r| {
                scrape(
                    r,
                    &format!(
                        "dissuade_by_caller_records_total{{outcome=\"forwarded\",stage=\"{stage}\"}}"
                    ),
                )
            })
            .sum::<f64>()
    };
    while forwarded("callers") < 5.0
        || [&a, &b].iter().any(|r| {
            scrape(r, "dissuade_by_caller_lag_records{stage=\"rekey\"}").is_none_or(|l| l > 0.0)
        })
    {
        assert!(std::time::Instant::now() < deadline, "stage metrics");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(forwarded("rekey") >= 5.0);
    assert_eq!(
        task_ids(1),
        [(
            "01-5".to_string(),
            "Caller 137****5678 called 5 different people aged 60+ within 10 minutes.".to_string()
        )],
        "the fifth call of the first burst makes the one task"
    );

    let letters = consume(&bootstrap, &cfg.kafka.dlq_topic, 1, WAIT);
    let header = |name: &str| {
        letters[0]
            .headers()
            .and_then(|h| h.iter().find(|x| x.key == name)?.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(header(HEADER_SOURCE_TOPIC).as_deref(), Some(input.as_str()));
    assert_eq!(header(HEADER_SOURCE_PARTITION).as_deref(), Some("3"));
    assert_eq!(header(HEADER_SOURCE_OFFSET).as_deref(), Some("0"));
    assert_eq!(letters[0].payload(), Some(&b"not json"[..]));

    // The second burst: three calls, an instance leaves, one call, another joins, one call.
    for (i, partition) in [(1, 3), (2, 5), (3, 7)] {
        let before = consumed(&[&a, &b]);
        produce_to(
            &bootstrap,
            &input,
            &[call("02", "13700009999", i, partition)],
        )
        .await;
        settle(&[&a, &b], before + 1);
    }
    a.stop();
    let before = b.metrics.events_consumed.get();
    produce_to(&bootstrap, &input, &[call("02", "13700009999", 4, 0)]).await;
    settle(&[&b], before + 1);
    let c = RunningProcessor::start(&cfg);
    settle(&[&b, &c], 0);
    produce_to(&bootstrap, &input, &[call("02", "13700009999", 5, 2)]).await;
    let tasks = task_ids(2);
    b.stop();
    c.stop();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    assert_eq!(tasks[1].0, "02-5");
    assert_eq!(
        tasks[1].1,
        "Caller 137****9999 called 5 different people aged 60+ within 10 minutes."
    );
}

/// `seconds_since_last_task` after a restart, for a task closed long before: the open-task
/// changelog keeps each person's last task, and the restore hands it to the windows. (Before,
/// only tasks still open were known after a restart, so this fired only without one.)
#[tokio::test(flavor = "multi_thread")]
async fn a_persons_last_task_is_remembered_across_a_restart_after_it_closed() {
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 2);
    let dir = tempfile::tempdir().unwrap();
    cfg.rules.path = sample_rules_edited(dir.path(), |r| {
        r.replace("score = 25\nenabled = false\n", "score = 25\n")
    });
    create_topics(&cfg).await;

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let callee = "13800000456".to_string();
    let call = |id: &str, at: i64| {
        let payload = format!(
            r#"{{"event_id":"{id}","occurred_at":{at},"caller_number":"+85251234567","callee_number":"{callee}","call_duration_s":742,"caller_flags":["overseas","spoofed_official"],"fraud_type_hint":"impersonate_police","callee_age":71,"callee_location":{{"lon":117.196623,"lat":39.132584}}}}"#
        );
        (callee.clone(), payload.into_bytes())
    };
    // Two hours ago: a task, closed long since (the suppression window is 30 minutes).
    let first = RunningProcessor::start(&cfg);
    produce(
        &broker.bootstrap(),
        &cfg.kafka.input_topic,
        &[call("before", now - 7_200_000)],
    )
    .await;
    assert!(first.wait_consumed(1, WAIT));
    assert_eq!(
        consume(&broker.bootstrap(), &cfg.kafka.task_topic, 1, WAIT).len(),
        1
    );
    first.stop();

    let second = RunningProcessor::start(&cfg);
    produce(
        &broker.bootstrap(),
        &cfg.kafka.input_topic,
        &[call("again", now)],
    )
    .await;
    assert!(second.wait_consumed(1, WAIT));
    let tasks = consume(&broker.bootstrap(), &cfg.kafka.task_topic, 2, WAIT);
    second.stop();
    assert_eq!(tasks.len(), 2);
    let task: serde_json::Value = serde_json::from_slice(tasks[1].payload().unwrap()).unwrap();
    assert_eq!(task["event_id"], "again");
    let reasons: Vec<&str> = task["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert!(
        reasons
            .contains(&"A flagged number called again 7200 s after the last task for this person."),
        "{reasons:?}"
    );
}

/// `dissuade generate --brokers` refuses a topic the cluster does not have before sending
/// anything, naming it (each record used to wait out its delivery timeout and fail with no
/// reason given); once the topic exists, every record lands in it.
#[tokio::test(flavor = "multi_thread")]
async fn generate_names_a_missing_topic_and_fills_one_that_exists() {
    let broker = start_broker().await;
    let cfg = sample_config(&broker.bootstrap(), 2);
    let topic = cfg.kafka.input_topic.clone();
    let generate = {
        let (bootstrap, topic) = (broker.bootstrap(), topic.clone());
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_dissuade"))
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args(["generate", "--brokers", &bootstrap, "--topic", &topic])
                .args(["--events", "200"])
                .output()
                .expect("generate runs")
        }
    };
    let out = tokio::task::spawn_blocking(generate.clone()).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("topic `{topic}` does not exist")),
        "{stderr}"
    );
    create_topics(&cfg).await;
    let out = tokio::task::spawn_blocking(generate).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("200 delivered, 0 failed"), "{stderr}");
    let bootstrap = broker.bootstrap();
    let read = tokio::task::spawn_blocking(move || consume(&bootstrap, &topic, 200, WAIT))
        .await
        .unwrap();
    assert_eq!(read.len(), 200);
}
