//! The embedded broker behaves like Kafka where clients depend on it: a fetch that starts
//! inside a record batch, an ApiVersions answer that older librdkafka (Debian's kcat)
//! can parse, and transactions (read_committed, offsets committed with a transaction,
//! fencing). See vendor/README.md for the patches these tests hold in place.
#![cfg(feature = "embedded-broker")]

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{start_broker, unique};
use dissuade::kafka::embedded::{EmbeddedBroker, Retention};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, BaseRecord, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};

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
/// (millisecond timestamps have thirteen digits), nor of a hash or token: the demo prints
/// three random 64-digit hex sign-in tokens, whose digit runs now and then look like one.
fn mobile_numbers(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !(word.len() >= 32 && word.chars().all(|c| c.is_ascii_hexdigit())))
        .flat_map(|word| word.split(|c: char| !c.is_ascii_digit()))
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
    // From a demo's sign-in token (CI, 2026-11-27).
    let token = "be907f8cda3a30c5450e4a16656785780d1adb72236eaed30528fb10633e63ed";
    assert!(mobile_numbers(&format!("  {token}  officer po-1")).is_empty());
    assert_eq!(mobile_numbers("callee=13912345678,"), ["13912345678"]);
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

// Transactions (KIP-98 / KIP-447) on the embedded broker: see
// docs/embedded-broker/tansu-storage-transactions.patch.

/// Creates `topic` with `partitions` partitions.
async fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            [&NewTopic::new(
                topic,
                partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert!(created.iter().all(|r| r.is_ok()), "{created:?}");
}

const TXN_TIMEOUT: Duration = Duration::from_secs(15);

/// A transactional producer that has run `init_transactions`.
fn transactional_producer(bootstrap: &str, transactional_id: &str) -> BaseProducer {
    transactional_producer_timing_out(bootstrap, transactional_id, Duration::from_secs(60))
}

/// A transactional producer whose transactions the broker aborts after `timeout`.
fn transactional_producer_timing_out(
    bootstrap: &str,
    transactional_id: &str,
    timeout: Duration,
) -> BaseProducer {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", transactional_id)
        .set("linger.ms", "5")
        .set("transaction.timeout.ms", timeout.as_millis().to_string())
        .create()
        .unwrap();
    p.init_transactions(TXN_TIMEOUT).unwrap();
    p
}

/// Sends `payloads` to `topic` (partition `i % partitions`) and waits until the broker has
/// them all (they are in its log, inside the producer's open transaction if it has one).
fn send_all(p: &BaseProducer, topic: &str, partitions: i32, payloads: &[&str]) {
    for (i, v) in payloads.iter().enumerate() {
        p.send(
            BaseRecord::<(), str>::to(topic)
                .partition(i as i32 % partitions)
                .payload(*v),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    }
    p.flush(TXN_TIMEOUT).unwrap();
}

/// A plain (non-transactional) send of one record to partition 0, acknowledged.
fn send_plain(bootstrap: &str, topic: &str, payload: &str) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    send_all(&p, topic, 1, &[payload]);
}

fn consumer(bootstrap: &str, isolation: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .set("fetch.wait.max.ms", "20")
        .create()
        .unwrap()
}

/// Assigns partitions `0..partitions` of `topic` from the start.
fn assign_from_start(c: &BaseConsumer, topic: &str, partitions: i32) {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
}

/// Polls `c` until `done` holds for the payloads read so far, or `within` has passed; returns
/// them in the order read (per partition, log order).
fn poll_until(
    c: &BaseConsumer,
    within: Duration,
    mut done: impl FnMut(&[String]) -> bool,
) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    while !done(&got) && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(50)) {
            let m = m.unwrap();
            got.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    got
}

/// Reads partitions `0..partitions` of `topic` from the start with `isolation` until
/// `last` has been read (each partition's log up to it, for one partition).
fn read_until(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    last: &str,
) -> Vec<String> {
    let c = consumer(bootstrap, isolation, &unique("txn-reader"));
    assign_from_start(&c, topic, partitions);
    let got = poll_until(&c, Duration::from_secs(20), |got| {
        got.iter().any(|v| v == last)
    });
    assert!(
        got.iter().any(|v| v == last),
        "{isolation} never read {last:?}; read {got:?}"
    );
    got
}

/// Runs a client-side body (librdkafka's blocking calls) off the runtime's workers, which
/// the broker needs.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_committed_transaction_is_read_whole_by_read_committed() {
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let topic = unique("txn-commit");
    create_topic(&bootstrap, &topic, 2).await;
    blocking(move || {
        let p = transactional_producer(&bootstrap, &unique("txn-commit"));
        p.begin_transaction().unwrap();
        let sent: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
        let refs: Vec<&str> = sent.iter().map(String::as_str).collect();
        send_all(&p, &topic, 2, &refs);
        p.commit_transaction(TXN_TIMEOUT).unwrap();

        let c = consumer(&bootstrap, "read_committed", &unique("txn-reader"));
        assign_from_start(&c, &topic, 2);
        let mut got = poll_until(&c, Duration::from_secs(20), |got| got.len() >= 10);
        got.sort();
        let mut want = sent.clone();
        want.sort();
        assert_eq!(got, want);
        // Each partition's log holds its five records and the commit marker.
        for partition in 0..2 {
            let (low, high) = c
                .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                .unwrap();
            assert_eq!((low, high), (0, 6), "partition {partition}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_transaction_is_hidden_from_read_committed_only() {
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let topic = unique("txn-abort");
    create_topic(&bootstrap, &topic, 1).await;
    blocking(move || {
        let p = transactional_producer(&bootstrap, &unique("txn-abort"));
        p.begin_transaction().unwrap();
        send_all(&p, &topic, 1, &["a1", "a2", "a3"]);
        p.abort_transaction(TXN_TIMEOUT).unwrap();
        p.begin_transaction().unwrap();
        send_all(&p, &topic, 1, &["c1", "c2"]);
        p.commit_transaction(TXN_TIMEOUT).unwrap();

        assert_eq!(
            read_until(&bootstrap, &topic, 1, "read_committed", "c2"),
            ["c1", "c2"]
        );
        assert_eq!(
            read_until(&bootstrap, &topic, 1, "read_uncommitted", "c2"),
            ["a1", "a2", "a3", "c1", "c2"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_sent_to_a_transaction_are_committed_with_it_and_dropped_on_abort() {
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let (input, output) = (unique("txn-in"), unique("txn-out"));
    create_topic(&bootstrap, &input, 1).await;
    create_topic(&bootstrap, &output, 1).await;
    blocking(move || {
        let group = unique("txn-group");
        // the consume side of consume-transform-produce: its group's metadata goes with the
        // offsets
        let source = consumer(&bootstrap, "read_committed", &group);
        assign_from_start(&source, &input, 1);
        let metadata = source.group_metadata().unwrap();
        let committed = || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&input, 0);
            source
                .committed_offsets(tpl, Duration::from_secs(10))
                .unwrap()
                .find_partition(&input, 0)
                .unwrap()
                .offset()
        };
        let offsets = |at: i64| {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&input, 0, Offset::Offset(at))
                .unwrap();
            tpl
        };

        let p = transactional_producer(&bootstrap, &unique("txn-offsets"));
        p.begin_transaction().unwrap();
        send_all(&p, &output, 1, &["out1"]);
        p.send_offsets_to_transaction(&offsets(5), &metadata, TXN_TIMEOUT)
            .unwrap();
        assert_eq!(committed(), Offset::Invalid, "pending, not yet the group's");
        p.commit_transaction(TXN_TIMEOUT).unwrap();
        assert_eq!(
            committed(),
            Offset::Offset(5),
            "committed with the transaction"
        );

        p.begin_transaction().unwrap();
        send_all(&p, &output, 1, &["out2"]);
        p.send_offsets_to_transaction(&offsets(9), &metadata, TXN_TIMEOUT)
            .unwrap();
        p.abort_transaction(TXN_TIMEOUT).unwrap();
        assert_eq!(committed(), Offset::Offset(5), "dropped with the abort");

        // input that produced nothing: a transaction of offsets alone
        p.begin_transaction().unwrap();
        p.send_offsets_to_transaction(&offsets(12), &metadata, TXN_TIMEOUT)
            .unwrap();
        p.commit_transaction(TXN_TIMEOUT).unwrap();
        assert_eq!(
            committed(),
            Offset::Offset(12),
            "an offsets-only transaction"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_transaction_holds_read_committed_at_the_last_stable_offset() {
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let topic = unique("txn-open");
    create_topic(&bootstrap, &topic, 1).await;
    blocking(move || {
        send_plain(&bootstrap, &topic, "before");
        let p = transactional_producer(&bootstrap, &unique("txn-open"));
        p.begin_transaction().unwrap();
        send_all(&p, &topic, 1, &["t1", "t2", "t3"]);
        send_plain(&bootstrap, &topic, "after");

        let committed = consumer(&bootstrap, "read_committed", &unique("txn-reader"));
        assign_from_start(&committed, &topic, 1);
        // Everything is in the log (offsets 0-4) but only "before" is below the LSO (1).
        let got = poll_until(&committed, Duration::from_millis(1500), |_| false);
        assert_eq!(got, ["before"]);
        let wait = Duration::from_secs(10);
        assert_eq!(
            committed.fetch_watermarks(&topic, 0, wait).unwrap(),
            (0, 1),
            "ListOffsets(latest) for read_committed answers the LSO"
        );
        let uncommitted = consumer(&bootstrap, "read_uncommitted", &unique("txn-reader"));
        assert_eq!(
            uncommitted.fetch_watermarks(&topic, 0, wait).unwrap(),
            (0, 5)
        );

        p.commit_transaction(TXN_TIMEOUT).unwrap();
        let got = poll_until(&committed, Duration::from_secs(20), |got| {
            got.iter().any(|v| v == "after")
        });
        assert_eq!(got, ["t1", "t2", "t3", "after"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_producer_with_the_same_transactional_id_fences_the_first() {
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let topic = unique("txn-fence");
    create_topic(&bootstrap, &topic, 1).await;
    blocking(move || {
        let id = unique("txn-fence");
        let first = transactional_producer(&bootstrap, &id);
        first.begin_transaction().unwrap();
        send_all(&first, &topic, 1, &["zombie"]);

        // The newer instance takes over: its init aborts the older one's open transaction.
        let second = transactional_producer(&bootstrap, &id);
        let err = first.commit_transaction(TXN_TIMEOUT).unwrap_err();
        // librdkafka reports the broker's PRODUCER_FENCED as its own fatal "fenced"
        assert!(
            matches!(
                err.rdkafka_error_code(),
                Some(RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced)
            ),
            "{err}"
        );

        second.begin_transaction().unwrap();
        send_all(&second, &topic, 1, &["successor"]);
        second.commit_transaction(TXN_TIMEOUT).unwrap();
        assert_eq!(
            read_until(&bootstrap, &topic, 1, "read_committed", "successor"),
            ["successor"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let topic = unique("txn-timeout");
    create_topic(&bootstrap, &topic, 1).await;
    blocking(move || {
        let timeout = Duration::from_millis(1000);
        let stalled =
            transactional_producer_timing_out(&bootstrap, &unique("txn-timeout"), timeout);
        stalled.begin_transaction().unwrap();
        send_all(&stalled, &topic, 1, &["stalled"]);
        let started = Instant::now();
        send_plain(&bootstrap, &topic, "after");

        // held back at the stalled transaction until the broker aborts it
        let got = read_until(&bootstrap, &topic, 1, "read_committed", "after");
        assert_eq!(got, ["after"]);
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());

        // as with Kafka, the stalled producer cannot commit what was aborted
        assert!(stalled.commit_transaction(TXN_TIMEOUT).is_err());
    })
    .await;
}

// Group rebalances: the eager protocol's promise that no member is given a partition before
// the member that had it has finished revoking it (committing its offsets, in a transaction
// or not). See docs/embedded-broker/tansu-broker-rebalance-barrier.patch.

/// One member's rebalance step: who, "revoked" (when its revocation ended) or "assigned"
/// (when its assignment began), and the partitions.
type RebalanceStep = (String, &'static str, Instant, Vec<i32>);

/// What the members of a group saw of its rebalances, in order.
#[derive(Clone, Default)]
struct RebalanceLog(Arc<Mutex<Vec<RebalanceStep>>>);

impl RebalanceLog {
    fn events(&self) -> Vec<RebalanceStep> {
        self.0.lock().unwrap().clone()
    }

    fn assigned(&self, who: &str, after: Instant) -> bool {
        self.events().iter().any(|(w, what, at, parts)| {
            w == who && *what == "assigned" && *at > after && !parts.is_empty()
        })
    }
}

/// A member that takes `revoke_for` to revoke its partitions (a slow commit).
struct Member {
    name: String,
    revoke_for: Duration,
    log: RebalanceLog,
}

impl ClientContext for Member {}

impl ConsumerContext for Member {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            if !parts.is_empty() {
                std::thread::sleep(self.revoke_for);
            }
            let entry = (self.name.clone(), "revoked", Instant::now(), parts);
            self.log.0.lock().unwrap().push(entry);
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            let entry = (self.name.clone(), "assigned", Instant::now(), parts);
            self.log.0.lock().unwrap().push(entry);
        }
    }
}

/// Runs a group member on its own thread, polling until `stop`.
fn run_member(
    bootstrap: &str,
    group: &str,
    topic: &str,
    name: &str,
    revoke_for: Duration,
    log: &RebalanceLog,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let context = Member {
        name: name.into(),
        revoke_for,
        log: log.clone(),
    };
    let c: BaseConsumer<Member> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", name)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "100")
        .create_with_context(context)
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let stop = stop.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            c.poll(Duration::from_millis(50));
        }
    })
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_member_is_assigned_before_a_slow_member_has_revoked() {
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let topic = unique("rebalance");
    create_topic(&bootstrap, &topic, 4).await;
    blocking(move || {
        let group = unique("rebalance");
        let log = RebalanceLog::default();
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let fast = Duration::ZERO;
        let mut members = vec![run_member(&bootstrap, &group, &topic, "leader", fast, &log, &stop)];
        wait_for("the leader's assignment", Duration::from_secs(30), || log.assigned("leader", start));
        members.push(run_member(&bootstrap, &group, &topic, "slow", Duration::from_secs(3), &log, &stop));
        wait_for("the slow member's assignment", Duration::from_secs(60), || log.assigned("slow", start));

        // A third member joins: the leader revokes at once and rejoins, the slow member
        // takes three seconds to revoke what it holds.
        let joined = Instant::now();
        members.push(run_member(&bootstrap, &group, &topic, "late", fast, &log, &stop));
        wait_for("the late member's assignment", Duration::from_secs(60), || log.assigned("late", joined));
        stop.store(true, Ordering::Relaxed);
        for m in members {
            m.join().unwrap();
        }

        let events = log.events();
        let slow_revoked = events
            .iter()
            .find(|(who, what, at, parts)| {
                who == "slow" && *what == "revoked" && *at > joined && !parts.is_empty()
            })
            .map(|e| e.2)
            .expect("the slow member revoked its partitions");
        let early: Vec<_> = events
            .iter()
            .filter(|(_, what, at, _)| *what == "assigned" && *at > joined && *at < slow_revoked)
            .map(|(who, _, at, parts)| (who, slow_revoked.duration_since(*at), parts))
            .collect();
        assert!(
            early.is_empty(),
            "assigned while the slow member was still revoking (who, how early, partitions): {early:?}"
        );
    })
    .await;
}

/// A consumer in `group` subscribed to `topic` (default context).
fn subscribed(bootstrap: &str, group: &str, topic: &str) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("heartbeat.interval.ms", "100")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// Polls every member until each holds a share of the partitions.
fn poll_until_assigned(members: &[&BaseConsumer]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !members.iter().all(|c| c.assignment().unwrap().count() > 0) {
        assert!(
            Instant::now() < deadline,
            "the group never assigned every member"
        );
        for c in members {
            c.poll(Duration::from_millis(20));
        }
    }
}

/// Sends offset `offset` of partition 0 to a transaction under `group`'s metadata and
/// commits it; the error if the broker refused it (the transaction is then aborted).
fn commit_offset_in_transaction(
    p: &BaseProducer,
    topic: &str,
    offset: i64,
    group: &rdkafka::consumer::ConsumerGroupMetadata,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut offsets = TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, 0, Offset::Offset(offset))
        .unwrap();
    p.begin_transaction().unwrap();
    let result = p
        .send_offsets_to_transaction(&offsets, group, TXN_TIMEOUT)
        .and_then(|()| p.commit_transaction(TXN_TIMEOUT));
    if result.is_err() {
        p.abort_transaction(TXN_TIMEOUT).unwrap();
    }
    result
}

#[tokio::test(flavor = "multi_thread")]
async fn offsets_sent_for_a_member_that_left_or_rejoined_since_are_fenced() {
    let broker = start_broker().await;
    let bootstrap = broker.bootstrap();
    let topic = unique("txn-group-fence");
    create_topic(&bootstrap, &topic, 2).await;
    blocking(move || {
        let group = unique("txn-group-fence");
        let first = subscribed(&bootstrap, &group, &topic);
        poll_until_assigned(&[&first]);
        let alone = first.group_metadata().unwrap();
        let p = transactional_producer(&bootstrap, &unique("txn-group-fence"));
        commit_offset_in_transaction(&p, &topic, 1, &alone).expect("a current member commits");

        // A second member joins: the first rejoins in a new generation, and what it sent
        // under the old one is refused (it may have lost the partition meanwhile).
        let second = subscribed(&bootstrap, &group, &topic);
        poll_until_assigned(&[&first, &second]);
        let stale = commit_offset_in_transaction(&p, &topic, 2, &alone)
            .expect_err("the previous generation is fenced");
        let now = first.group_metadata().unwrap();
        commit_offset_in_transaction(&p, &topic, 3, &now).expect("the current generation commits");

        // The first member leaves: it is no longer a member at all.
        drop(first);
        let gone = commit_offset_in_transaction(&p, &topic, 4, &now)
            .expect_err("a member that left is fenced");

        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, 0);
        let committed = second.committed_offsets(tpl, TXN_TIMEOUT).unwrap();
        assert_eq!(
            committed.find_partition(&topic, 0).unwrap().offset(),
            Offset::Offset(3),
            "only the current members' commits count (stale: {stale}; gone: {gone})"
        );
    })
    .await;
}
