//! Stock Kafka clients against `dissuade broker`, the embedded broker run alone: Debian's kcat
//! (1.7.1 on librdkafka 2.0.2), Python's confluent-kafka and kafkajs, a node client that is not
//! librdkafka. Each lists the metadata, produces keyed records and reads them back with the
//! same keys and values, in production order within each partition.
//!
//! `scripts/install-test-deps` installs the clients (kcat from apt, confluent-kafka into
//! tests/clients/.venv, kafkajs into tests/clients/node_modules). A test whose client is
//! missing says `skipped: ...` on stderr and passes. The Python and node programs are in
//! tests/clients/; each prints one JSON line with what it saw, judged here.
#![cfg(feature = "embedded-broker")]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::Value;

const RECORDS: usize = 500;
const PARTITIONS: i32 = 3;
/// The longest any one client run may take; each takes about a second.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

/// `dissuade broker --port 0`, stopped with SIGTERM on drop.
struct Broker {
    child: Child,
    bootstrap: String,
}

impl Broker {
    fn start() -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dissuade"))
            .args(["broker", "--port", "0"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dissuade broker starts");
        forward_lines("broker", child.stderr.take().unwrap());
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading so the broker never blocks on a full pipe.
            for _ in lines {}
        });
        let first = rx.recv_timeout(Duration::from_secs(30));
        let bootstrap = match first {
            Ok(Some(Ok(line))) => line
                .strip_prefix("listening ")
                .unwrap_or_else(|| panic!("first line of dissuade broker: {line:?}"))
                .to_string(),
            other => {
                let _ = child.kill();
                panic!("dissuade broker printed no `listening` line: {other:?}");
            }
        };
        Broker { child, bootstrap }
    }

    /// Creates `topic` with the Rust client (rdkafka): kcat cannot create topics, and the
    /// broker does not create them on first use.
    fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.bootstrap)
            .create()
            .unwrap();
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = futures::executor::block_on(admin.create_topics([&new], &opts))
            .expect("CreateTopics answered");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies a child's output to this test's stderr (captured by the harness, shown on failure).
fn forward_lines(name: &'static str, from: impl Read + Send + 'static) {
    thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            eprintln!("[{name}] {line}");
        }
    });
}

struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `cmd` with `input` on stdin, killing it after `CLIENT_TIMEOUT`.
fn run(cmd: &mut Command, input: &[u8]) -> Run {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let read_all = |mut r: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read_all(Box::new(child.stdout.take().unwrap()));
    let err = read_all(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > CLIENT_TIMEOUT {
            let _ = child.kill();
            let stderr = err.join().unwrap();
            panic!("{cmd:?} still running after {CLIENT_TIMEOUT:?}; stderr:\n{stderr}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    writer.join().unwrap();
    let run = Run {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        took: started.elapsed(),
    };
    assert!(
        run.status.success(),
        "{cmd:?} failed ({}); stderr:\n{}",
        run.status,
        run.stderr
    );
    run
}

/// The records every client produces: 37 keys, so each partition holds several keys and each
/// key many records; the value carries the production index and some non-ASCII text.
fn records(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("key-{}", i % 37), format!("value-{i}-电话")))
        .collect()
}

/// One record as a consumer saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    partition: i32,
    offset: i64,
    key: String,
    value: String,
}

/// Every record sent comes back exactly once with its key and value; each partition holds a
/// dense run of offsets from 0 in production order; a key stays in one partition. Returns the
/// number of records per partition.
fn check_round_trip(client: &str, sent: &[(String, String)], seen: &[Seen]) -> BTreeMap<i32, i64> {
    let index: HashMap<&str, usize> = sent
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (v.as_str(), i))
        .collect();
    assert_eq!(index.len(), sent.len(), "values are unique");
    assert_eq!(
        seen.len(),
        sent.len(),
        "{client}: consumed {} records, produced {}",
        seen.len(),
        sent.len()
    );
    let mut by_partition: BTreeMap<i32, Vec<&Seen>> = BTreeMap::new();
    let mut key_partition: HashMap<&str, i32> = HashMap::new();
    let mut found = vec![false; sent.len()];
    for s in seen {
        let i = *index
            .get(s.value.as_str())
            .unwrap_or_else(|| panic!("{client}: consumed a value never produced: {s:?}"));
        assert_eq!(s.key, sent[i].0, "{client}: key of {:?}", s.value);
        assert!(!found[i], "{client}: {:?} consumed twice", s.value);
        found[i] = true;
        let p = *key_partition.entry(s.key.as_str()).or_insert(s.partition);
        assert_eq!(p, s.partition, "{client}: key {} in two partitions", s.key);
        by_partition.entry(s.partition).or_default().push(s);
    }
    let mut counts = BTreeMap::new();
    for (p, records) in by_partition {
        let offsets: Vec<i64> = records.iter().map(|s| s.offset).collect();
        let dense: Vec<i64> = (0..records.len() as i64).collect();
        assert_eq!(offsets, dense, "{client}: offsets of partition {p}");
        let order: Vec<usize> = records.iter().map(|s| index[s.value.as_str()]).collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{client}: partition {p} out of production order: {order:?}"
        );
        counts.insert(p, records.len() as i64);
    }
    assert!(
        counts.len() > 1,
        "{client}: every record went to one partition: {counts:?}"
    );
    counts
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Says why a test did nothing. Written to the process's stderr, past the harness's capture,
/// so that `cargo test` shows it although the test passes.
fn skipped(why: &str) {
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

// --- kcat ------------------------------------------------------------------------------------

fn kcat_installed() -> bool {
    let ok = Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        skipped("kcat not installed (scripts/install-test-deps installs it)");
    }
    ok
}

/// `kcat -b BOOTSTRAP ARGS...`.
fn kcat(b: &Broker, args: &[&str], input: &[u8]) -> Run {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", &b.bootstrap]).args(args);
    run(&mut cmd, input)
}

/// `kcat -P` of `records` as `key|value` lines; kcat exits once all are delivered.
fn kcat_produce(b: &Broker, topic: &str, records: &[(String, String)]) -> Run {
    let lines: String = records.iter().map(|(k, v)| format!("{k}|{v}\n")).collect();
    let r = kcat(
        b,
        &[
            "-P",
            "-t",
            topic,
            "-K",
            "|",
            "-X",
            "message.timeout.ms=20000",
        ],
        lines.as_bytes(),
    );
    assert!(
        !r.stderr.contains("Delivery failed"),
        "kcat -P: {}",
        r.stderr
    );
    r
}

/// Parses kcat's `-J` consumer output, one JSON object per record.
fn kcat_records(stdout: &str) -> Vec<Seen> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            Seen {
                partition: v["partition"].as_i64().unwrap() as i32,
                offset: v["offset"].as_i64().unwrap(),
                key: v["key"].as_str().unwrap_or_default().to_string(),
                value: v["payload"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect()
}

#[test]
fn kcat_lists_produces_and_consumes() {
    if !kcat_installed() {
        return;
    }
    let started = Instant::now();
    let b = Broker::start();
    let topic = unique("kcat");
    b.create_topic(&topic, PARTITIONS);

    // -L: the topic and its partitions, led by the one broker.
    let md = kcat(&b, &["-L", "-J", "-t", &topic], b"");
    let md: Value = serde_json::from_str(md.stdout.trim()).unwrap();
    let topics = md["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 1, "kcat -L: {md}");
    assert_eq!(topics[0]["topic"], topic.as_str(), "kcat -L: {md}");
    assert!(topics[0].get("error").is_none(), "kcat -L: {md}");
    assert_eq!(
        topics[0]["partitions"].as_array().unwrap().len(),
        PARTITIONS as usize
    );
    let broker_id = &md["brokers"][0]["id"];
    for p in topics[0]["partitions"].as_array().unwrap() {
        assert_eq!(&p["leader"], broker_id, "kcat -L: {md}");
    }

    let sent = records(RECORDS);
    let produced = kcat_produce(&b, &topic, &sent);

    // -C from the beginning, exiting at the end of every partition.
    let consumed = kcat(
        &b,
        &["-C", "-J", "-t", &topic, "-o", "beginning", "-e"],
        b"",
    );
    let counts = check_round_trip("kcat -C", &sent, &kcat_records(&consumed.stdout));
    eprintln!(
        "kcat: produced {RECORDS} records in {:?}, consumed them in {:?}, per partition {counts:?}",
        produced.took, consumed.took
    );

    // -G: a balanced consumer group reads everything from the beginning and commits; the
    // same group run again has nothing left to read.
    let group = unique("kcat-group");
    let g = kcat(
        &b,
        &["-G", &group, "-J", "-o", "beginning", "-e", &topic],
        b"",
    );
    assert!(g.stderr.contains("rebalanced"), "kcat -G: {}", g.stderr);
    check_round_trip("kcat -G", &sent, &kcat_records(&g.stdout));
    let again = kcat(&b, &["-G", &group, "-J", "-e", &topic], b"");
    assert_eq!(
        kcat_records(&again.stdout),
        vec![],
        "kcat -G again after the group committed: {}",
        again.stderr
    );
    eprintln!(
        "kcat -G: consumed {RECORDS} records in {:?}; total {:?}",
        g.took,
        started.elapsed()
    );
}

/// `kcat -o end` must start at the high watermark. tansu 0.6 answered ListOffsets(Latest)
/// with the base offset of the partition's newest batch + 1, so a consumer starting at the
/// end re-read all but the first record of that batch (two `kcat -P` runs of 250 records:
/// Latest 116/68/69 where the high watermarks were 231/132/137, and `kcat -o end -e` re-read
/// 247 records); vendor/README.md has the fix.
#[test]
fn kcat_consumes_from_the_end() {
    if !kcat_installed() {
        return;
    }
    let b = Broker::start();
    let topic = unique("kcat-end");
    b.create_topic(&topic, PARTITIONS);
    let sent = records(RECORDS);
    kcat_produce(&b, &topic, &sent[..RECORDS / 2]);
    kcat_produce(&b, &topic, &sent[RECORDS / 2..]);
    let all = kcat(
        &b,
        &["-C", "-J", "-t", &topic, "-o", "beginning", "-e"],
        b"",
    );
    let counts = check_round_trip("kcat -C", &sent, &kcat_records(&all.stdout));

    // ListOffsets(Latest), as `kcat -Q` asks it (timestamp -1), is the high watermark.
    for (p, n) in &counts {
        let q = kcat(&b, &["-Q", "-t", &format!("{topic}:{p}:-1")], b"");
        assert_eq!(
            q.stdout.trim(),
            format!("{topic} [{p}] offset {n}"),
            "kcat -Q latest of partition {p}, which holds {n} records"
        );
    }
    // Consuming from the end reads nothing old.
    let end = kcat(&b, &["-C", "-J", "-t", &topic, "-o", "end", "-e"], b"");
    let reread = kcat_records(&end.stdout);
    assert!(
        reread.is_empty(),
        "kcat -o end re-read {} old records: {:?}",
        reread.len(),
        reread
            .iter()
            .map(|s| (s.partition, s.offset))
            .collect::<Vec<_>>()
    );
}

// --- the JSON-line programs in tests/clients -------------------------------------------------

/// Runs a client program and judges its JSON line: the topic in metadata, every record back,
/// and the group's committed offsets at the end of each partition.
fn judge_program(client: &str, run: &Run, topic: &str) -> Value {
    let line = run
        .stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("{client} printed no JSON line; stderr:\n{}", run.stderr));
    let out: Value = serde_json::from_str(line).unwrap();
    assert_eq!(
        out["errors"].as_array().map(Vec::len),
        Some(0),
        "{client}: {}\nstderr:\n{}",
        out["errors"],
        run.stderr
    );
    let topics: Vec<&str> = out["metadata_topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        topics.contains(&topic),
        "{client}: metadata lists {topics:?}"
    );
    assert_eq!(out["metadata_partitions"], PARTITIONS, "{client}");

    let pairs = |v: &Value| -> Vec<(String, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r[0].as_str().unwrap().to_string(),
                    r[1].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let seen = |v: &Value| -> Vec<Seen> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| Seen {
                partition: r[0].as_i64().unwrap() as i32,
                offset: r[1].as_i64().unwrap(),
                key: r[2].as_str().unwrap().to_string(),
                value: r[3].as_str().unwrap().to_string(),
            })
            .collect()
    };
    let sent = pairs(&out["sent"]);
    assert_eq!(sent, records(RECORDS), "{client}: what it sent");
    let consumed = seen(&out["consumed"]);
    let counts = check_round_trip(client, &sent, &consumed);

    // Where the client reports each delivery, the offsets are the ones consumed.
    if let Some(produced) = out.get("produced") {
        let mut produced = seen(produced);
        let mut consumed = consumed.clone();
        produced.sort();
        consumed.sort();
        assert_eq!(produced, consumed, "{client}: delivered vs consumed");
    }
    let committed: BTreeMap<i32, i64> = out["committed"]
        .as_object()
        .unwrap_or_else(|| panic!("{client}: no committed offsets: {}", out["committed"]))
        .iter()
        .map(|(p, o)| (p.parse().unwrap(), o.as_i64().unwrap()))
        .collect();
    assert_eq!(committed, counts, "{client}: committed offsets");
    eprintln!(
        "{} ({}): {RECORDS} records produced in {} s, consumed in {} s, per partition {counts:?}; run {:?}",
        out["client"], client, out["produce_s"], out["consume_s"], run.took
    );
    out
}

/// The venv that scripts/install-test-deps makes, else a `python3` that has the module.
fn python_with_confluent_kafka() -> Option<PathBuf> {
    let venv = clients_dir().join(".venv/bin/python");
    [venv, PathBuf::from("python3")].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import confluent_kafka"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

#[test]
fn confluent_kafka_round_trip() {
    let Some(python) = python_with_confluent_kafka() else {
        skipped(
            "confluent-kafka not installed (scripts/install-test-deps installs it \
             into tests/clients/.venv)",
        );
        return;
    };
    let b = Broker::start();
    let topic = unique("confluent");
    let mut cmd = Command::new(python);
    cmd.arg(clients_dir().join("confluent_roundtrip.py")).args([
        &b.bootstrap,
        &topic,
        &RECORDS.to_string(),
    ]);
    let r = run(&mut cmd, b"");
    let out = judge_program("confluent-kafka", &r, &topic);
    assert!(out.get("produced").is_some());
}

#[test]
fn kafkajs_round_trip() {
    let dir = clients_dir();
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node || !dir.join("node_modules/kafkajs/package.json").is_file() {
        skipped(
            "kafkajs not installed (scripts/install-test-deps runs npm ci in \
             tests/clients; it needs node and npm)",
        );
        return;
    }
    let b = Broker::start();
    let topic = unique("kafkajs");
    let mut cmd = Command::new("node");
    cmd.arg(dir.join("kafkajs_roundtrip.mjs"))
        .args([&b.bootstrap, &topic, &RECORDS.to_string()])
        .current_dir(&dir);
    let r = run(&mut cmd, b"");
    judge_program("kafkajs", &r, &topic);
}
