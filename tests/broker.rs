//! The embedded broker behaves like Kafka where clients depend on it: a fetch that starts
//! inside a record batch, and an ApiVersions answer that older librdkafka (Debian's kcat)
//! can parse. See vendor/README.md for the patches these tests hold in place.
#![cfg(feature = "embedded-broker")]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{start_broker, unique};
use dissuade::kafka::embedded::{EmbeddedBroker, Retention};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Sends `n` records fast enough, with a long linger, that librdkafka packs them into one
/// batch; returns the offsets the broker gave them.
async fn produce_one_batch(bootstrap: &str, topic: &str, n: usize) -> Vec<i64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "200")
        .set("batch.num.messages", "10000")
        .create()
        .unwrap();
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let payload = format!("record {i}");
            producer
                .send_result(FutureRecord::<(), _>::to(topic).payload(&payload))
                .map_err(|(e, _)| e)
                .unwrap()
        })
        .collect();
    let mut offsets = Vec::new();
    for s in sends {
        offsets.push(s.await.unwrap().unwrap().offset);
    }
    offsets
}

/// Reads partition 0 of `topic` from `from` until it has been quiet for a second.
fn read_from(bootstrap: &str, topic: &str, from: i64) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("midbatch"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(from))
        .unwrap();
    c.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while last.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(50)) {
            got.push(m.unwrap().offset());
            last = Instant::now();
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_from_inside_a_batch_returns_the_rest_of_it() {
    let broker = start_broker().await;
    let topic = unique("midbatch");
    let cfg = common::sample_config(&broker.bootstrap(), 1);
    dissuade::kafka::ensure_topics(&cfg.kafka, &broker.bootstrap(), &[&topic])
        .await
        .unwrap();
    let offsets = produce_one_batch(&broker.bootstrap(), &topic, 200).await;
    assert_eq!(offsets, (0..200).collect::<Vec<_>>());

    for from in [0, 1, 50, 199] {
        let got = read_from(&broker.bootstrap(), &topic, from);
        assert_eq!(
            got,
            (from..200).collect::<Vec<_>>(),
            "reading from offset {from}"
        );
    }
}

/// librdkafka before 2.2 (Debian's kcat 1.7.1 has 2.0.2) skips one byte too few for each
/// tagged field it does not know, so a broker must leave default-valued tagged fields out of
/// ApiVersions v3, as Apache Kafka does. This sends the request librdkafka 2.0.2 sends and
/// checks that the response ends with an empty tagged-field section.
#[tokio::test(flavor = "multi_thread")]
async fn api_versions_v3_carries_no_default_tagged_fields() {
    let broker = start_broker().await;
    let mut s = std::net::TcpStream::connect(broker.bootstrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let compact = |v: &str| [&[v.len() as u8 + 1][..], v.as_bytes()].concat();
    let mut req = Vec::new();
    req.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    req.extend_from_slice(&3i16.to_be_bytes());
    req.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&4i16.to_be_bytes());
    req.extend_from_slice(b"kcat");
    req.push(0); // header tagged fields
    req.extend_from_slice(&compact("librdkafka"));
    req.extend_from_slice(&compact("2.0.2"));
    req.push(0); // body tagged fields
    s.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    s.write_all(&req).unwrap();

    let mut size = [0u8; 4];
    s.read_exact(&mut size).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(size) as usize];
    s.read_exact(&mut resp).unwrap();
    let body = &resp[4..]; // after the correlation id (response header v0)
    assert_eq!(&body[..2], &[0, 0], "error code");
    let api_keys = body[2] as usize - 1;
    assert!(api_keys > 10, "{api_keys} api keys");
    // error code, array length, 7 bytes per key (key, min, max, no tags), throttle time
    let tags_at = 2 + 1 + 7 * api_keys + 4;
    assert_eq!(
        &body[tags_at..],
        &[0],
        "the top-level tagged fields of a {}-byte body",
        body.len()
    );
}

/// Exactly eleven digits starting 13-19: a mainland mobile number, not part of a longer run
/// (millisecond timestamps have thirteen digits).
fn mobile_numbers(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter(|run| run.len() == 11 && run.starts_with('1') && run.as_bytes()[1] >= b'3')
        .collect()
}

#[test]
fn a_demo_at_trace_level_logs_no_phone_number() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dissuade"))
        .args(["demo", "--events", "1500", "--rate", "1500"])
        .env("RUST_LOG", "trace")
        .env("DISSUADE__METRICS__LISTEN", "\"127.0.0.1:0\"")
        .env("DISSUADE__WEB__LISTEN", "\"127.0.0.1:0\"")
        .env("DISSUADE__KAFKA__EMBEDDED_PORT", "0")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("demo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}",
        &stderr[stderr.len().saturating_sub(2000)..]
    );
    assert!(
        stderr.contains("tansu"),
        "the broker logged nothing, so this test would prove nothing"
    );
    for (name, text) in [("stderr", &stderr), ("stdout", &stdout)] {
        let found = mobile_numbers(text);
        assert!(
            found.is_empty(),
            "{} phone numbers on {name}, e.g. in: {}",
            found.len(),
            text.lines()
                .find(|l| !mobile_numbers(l).is_empty())
                .unwrap_or_default()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_taken_port_is_an_error_not_someone_elses_broker() {
    let first = start_broker().await;
    let port: u16 = first
        .bootstrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let err = EmbeddedBroker::start(port, Retention::default())
        .await
        .err()
        .expect("the port is taken");
    assert!(err.to_string().contains("cannot listen on"), "{err}");
}

#[test]
fn mobile_numbers_are_found_and_timestamps_are_not() {
    assert_eq!(
        mobile_numbers(r#"b"{\"callee_number\":\"13912345678\"}" at 1795480200000"#),
        ["13912345678"]
    );
    assert!(mobile_numbers("139****5678 offset=12345678901234").is_empty());
}

/// Sends `n` records of `size` bytes to partition 0 of `topic`, a few at a time so that
/// they form many batches, and waits for every delivery.
async fn produce_many(bootstrap: &str, topic: &str, n: usize, size: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .set("batch.num.messages", "10")
        .create()
        .unwrap();
    let payload = vec![b'x'; size];
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|i| {
                let key = format!("k{}", i % 50);
                producer
                    .send_result(
                        FutureRecord::to(topic)
                            .partition(0)
                            .key(&key)
                            .payload(&payload),
                    )
                    .map_err(|(e, _)| e)
                    .unwrap()
            })
            .collect();
        for s in sends {
            s.await.unwrap().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_bounds_a_partition_by_size_but_not_a_compacted_one() {
    let broker = EmbeddedBroker::start(
        0,
        Retention {
            bytes: Some(1024 * 1024),
            age: None,
        },
    )
    .await
    .unwrap();
    let bootstrap = broker.bootstrap();
    let cfg = common::sample_config(&bootstrap, 1);
    let (plain, compacted) = (unique("plain"), unique("compacted"));
    dissuade::kafka::ensure_topics(&cfg.kafka, &bootstrap, &[&plain])
        .await
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    admin
        .create_topics(
            [&NewTopic::new(&compacted, 1, TopicReplication::Fixed(1))
                .set("cleanup.policy", "compact")],
            &AdminOptions::new(),
        )
        .await
        .unwrap();

    // 4 MiB into each: four times the bound.
    for topic in [&plain, &compacted] {
        produce_many(&bootstrap, topic, 1000, 4096).await;
    }
    let kept = read_from(&bootstrap, &plain, 0);
    assert!(
        (200..=300).contains(&kept.len()),
        "{} of 1000 records of 4 KiB kept under a 1 MiB bound",
        kept.len()
    );
    assert_eq!(kept.last(), Some(&999), "the newest records stay");
    assert_eq!(
        kept,
        (kept[0]..1000).collect::<Vec<_>>(),
        "what stays is the tail"
    );
    assert_eq!(read_from(&bootstrap, &compacted, 0).len(), 1000);
}
