//! What ops see: a known set of events through the embedded broker and a real processor, then
//! `/metrics`, `/healthz` and `/readyz` scraped over HTTP like Prometheus does. Every counter
//! is checked against values worked out by hand from `config/rules.toml` and the sample grid.
#![cfg(feature = "embedded-broker")]

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use dissuade::http::{self, Health};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);

/// Every phone number in the input; none may appear in the scrape.
const NUMBERS: [&str; 14] = [
    "13800000001",
    "13800000002",
    "13800000003",
    "13800000006",
    "13800000007",
    "13800000008",
    "13800000009",
    "13911110001",
    "85251234567",
    "13911110003",
    "13911110006",
    "13911110007",
    "13911110008",
    "13911110009",
];

/// One suspicious-call event as the anti-fraud centre writes it, keyed by callee.
fn event(id: &str, at_ms: i64, callee: &str, caller: &str, extra: &str) -> (String, Vec<u8>) {
    let json = format!(
        r#"{{"event_id":"{id}","occurred_at":{at_ms},"caller_number":"{caller}","callee_number":"{callee}"{extra}}}"#
    );
    (callee.to_string(), json.into_bytes())
}

fn bad(key: &str, payload: &str) -> (String, Vec<u8>) {
    (key.to_string(), payload.as_bytes().to_vec())
}

/// One HTTP/1.1 GET over a plain socket; returns the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read the response");
    let status = response[9..12].parse().expect("status code");
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "expected a plain body: {head}"
    );
    (status, body.to_string())
}

/// Samples of the text format: `name{labels}` (labels sorted, as written) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            let value = match value {
                "NaN" => f64::NAN,
                v => v.parse().unwrap_or_else(|_| panic!("value of {l}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

/// The label pairs of one series, unescaped.
fn labels(series: &str) -> Vec<(String, String)> {
    let Some(open) = series.find('{') else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut chars = series[open + 1..].chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|&c| c != '=').collect();
        if name.is_empty() {
            break;
        }
        assert_eq!(chars.next(), Some('"'), "{series}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => value.push(chars.next().unwrap()),
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((name.trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&'}') {
            break;
        }
    }
    out
}

fn has_digit_run(s: &str, n: usize) -> bool {
    let mut run = 0;
    for c in s.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run >= n {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn scrape_shows_exact_counts_for_a_known_input() {
    let broker = start_broker().await;
    let cfg = sample_config(&broker.bootstrap(), 2);
    create_topics(&cfg).await;

    // Before anything runs: not ready, and it says why.
    let early = Arc::new(Health::default());
    early.config_loaded.store(true, Ordering::Relaxed);
    let shutdown = CancellationToken::new();
    let rules = dissuade::rules::RuleSet::load(&cfg.resolve(&cfg.rules.path)).unwrap();
    let early_addr = http::serve(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(dissuade::metrics::Metrics::new(&rules, 0)),
        early,
        shutdown.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        get(early_addr, "/readyz"),
        (
            503,
            "not ready: broker not reachable, no input partitions assigned\n".into()
        )
    );

    let p = RunningProcessor::start(&cfg);
    // `dissuade run` marks the configuration loaded once the pipeline is built.
    p.health.config_loaded.store(true, Ordering::Relaxed);
    let addr = http::serve(
        "127.0.0.1:0".parse().unwrap(),
        p.metrics.clone(),
        p.health.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    assert_eq!(get(addr, "/healthz"), (200, "ok\n".into()));

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let t0 = now_ms - 120_000;
    // Levels with config/rules.toml (medium 40, high 60, critical 90; tasks from medium):
    let first = vec![
        // blacklisted_caller 60 = high; inside grid 120101-01-004.
        event(
            "m1",
            t0,
            "13800000001",
            "13911110001",
            r#","call_duration_s":120,"caller_flags":["blacklisted"],"callee_location":{"lon":117.196623,"lat":39.132584}"#,
        ),
        // impersonates_official 60 + overseas_caller 20 + long_call_to_elderly 30
        // + payment_link_sms 30 = 140 = critical; 258 m west of the map: snapped.
        event(
            "m2",
            t0,
            "13800000002",
            "+85251234567",
            r#","call_duration_s":742,"caller_flags":["overseas","spoofed_official"],"callee_age":71,"sms_with_link":true,"fraud_type_hint":"impersonate_police","callee_location":{"lon":116.706,"lat":38.917189}"#,
        ),
        // impersonates_bank 40 = medium; no location at all: unmatched (duty desk).
        event(
            "m3",
            t0,
            "13800000003",
            "13911110003",
            r#","call_duration_s":60,"caller_flags":["spoofed_bank"]"#,
        ),
        // voip_caller 20 = low: below the dispatch level.
        event(
            "m6",
            t0,
            "13800000006",
            "13911110006",
            r#","call_duration_s":30,"caller_flags":["voip"]"#,
        ),
        // short_call_without_strong_signals -20: level none.
        event(
            "m7",
            t0,
            "13800000007",
            "13911110007",
            r#","call_duration_s":10"#,
        ),
        // loan_or_part_time_job_hint 15 (forwarded_call is disabled): level none.
        event(
            "m8",
            t0,
            "13800000008",
            "13911110008",
            r#","call_duration_s":300,"caller_flags":["forwarded"],"fraud_type_hint":"loan""#,
        ),
        // blacklisted_caller 60 + voip_caller 20 = 80 = high; Beijing: unmatched.
        event(
            "m9",
            t0,
            "13800000009",
            "13911110009",
            r#","call_duration_s":200,"caller_flags":["blacklisted","voip"],"callee_location":{"lon":116.4,"lat":39.9}"#,
        ),
        bad("d1", "this is not json"),
        bad("d2", "[1,2]"),
        bad(
            "d3",
            r#"{"event_id":"d3","occurred_at":1,"caller_number":"1","call_duration_s":3}"#,
        ),
        bad(
            "d4",
            r#"{"event_id":"d4","occurred_at":"yesterday","caller_number":"1","callee_number":"2","call_duration_s":3}"#,
        ),
        bad(
            "d5",
            r#"{"event_id":"d5","occurred_at":1,"caller_number":"1","callee_number":"2","call_duration_s":3,"callee_location":{"lon":117.2,"lat":91}}"#,
        ),
        bad("d6", ""),
    ];
    let t1 = t0 + 60_000;
    // Within the 30-minute window of the open tasks above.
    let second = vec![
        // high again for an open high task: suppressed.
        event(
            "m4",
            t1,
            "13800000001",
            "13911110001",
            r#","call_duration_s":90,"caller_flags":["blacklisted"]"#,
        ),
        // impersonates_bank 40 + payment_link_sms 30 = 70 = high > medium: an upgrade,
        // located by base-station cell 460-00-2-1, inside grid 120101-02-007.
        event(
            "m5",
            t1,
            "13800000003",
            "13911110003",
            r#","call_duration_s":60,"caller_flags":["spoofed_bank"],"sms_with_link":true,"cell_id":"460-00-2-1""#,
        ),
        // high under an open critical task: suppressed.
        event(
            "m10",
            t1,
            "13800000002",
            "13911110001",
            r#","call_duration_s":90,"caller_flags":["blacklisted"]"#,
        ),
    ];

    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &first).await;
    assert!(
        p.wait_consumed(first.len() as u64, WAIT),
        "first batch consumed"
    );
    // The repeats go after the tasks they repeat are open.
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &second).await;
    let total = (first.len() + second.len()) as u64;
    assert!(p.wait_consumed(total, WAIT), "second batch consumed");

    // Outputs delivered, housekeeping and lag statistics caught up, partitions assigned.
    let deadline = Instant::now() + WAIT;
    let (text, s) = loop {
        let (status, text) = get(addr, "/metrics");
        assert_eq!(status, 200);
        let s = samples(&text);
        let settled = s["dissuade_tasks_delivered_total"] == 5.0
            && s["dissuade_in_flight_records"] == 0.0
            && s["dissuade_open_tasks"] == 4.0
            && s.get("dissuade_consumer_lag_records{partition=\"0\"}") == Some(&0.0)
            && s.get("dissuade_consumer_lag_records{partition=\"1\"}") == Some(&0.0);
        if settled {
            break (text, s);
        }
        assert!(Instant::now() < deadline, "metrics never settled:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(get(addr, "/readyz"), (200, "ready\n".into()));
    assert_eq!(get(addr, "/healthz"), (200, "ok\n".into()));

    let expect = |series: &str, value: f64| {
        assert_eq!(s.get(series).copied(), Some(value), "{series} in\n{text}");
    };
    expect("dissuade_events_consumed_total", 16.0);
    expect("dissuade_events_total{outcome=\"task\"}", 5.0);
    expect("dissuade_events_total{outcome=\"suppressed\"}", 2.0);
    expect("dissuade_events_total{outcome=\"below_threshold\"}", 3.0);
    expect("dissuade_events_total{outcome=\"dead_letter\"}", 6.0);
    expect("dissuade_dead_letters_total{reason=\"malformed\"}", 2.0);
    expect("dissuade_dead_letters_total{reason=\"missing_field\"}", 1.0);
    expect("dissuade_dead_letters_total{reason=\"invalid_field\"}", 1.0);
    expect("dissuade_dead_letters_total{reason=\"out_of_range\"}", 1.0);
    expect("dissuade_dead_letters_total{reason=\"empty_record\"}", 1.0);

    let mut tasks = BTreeMap::new();
    for level in ["low", "medium", "high", "critical"] {
        for kind in ["inside", "snapped", "unmatched"] {
            tasks.insert((level, kind), 0.0);
        }
    }
    tasks.insert(("high", "inside"), 2.0); // m1, m5 (the upgrade)
    tasks.insert(("critical", "snapped"), 1.0); // m2
    tasks.insert(("medium", "unmatched"), 1.0); // m3
    tasks.insert(("high", "unmatched"), 1.0); // m9
    for ((level, kind), n) in tasks {
        expect(
            &format!("dissuade_tasks_total{{level=\"{level}\",match=\"{kind}\"}}"),
            n,
        );
    }
    expect("dissuade_task_upgrades_total", 1.0);
    expect("dissuade_tasks_delivered_total", 5.0);
    expect("dissuade_delivery_failures_total", 0.0);

    for (rule, n) in [
        ("blacklisted_caller", 4.0), // m1 m9 m4 m10
        ("impersonates_official", 1.0),
        ("impersonates_bank", 2.0), // m3 m5
        ("overseas_caller", 1.0),
        ("voip_caller", 2.0), // m6 m9
        ("new_or_busy_number", 0.0),
        ("long_call_to_elderly", 1.0),
        ("payment_link_sms", 2.0), // m2 m5
        ("prior_victim", 0.0),
        ("investment_or_romance_long_call", 0.0),
        ("loan_or_part_time_job_hint", 1.0),
        ("short_call_without_strong_signals", 1.0),
        ("forwarded_call", 0.0), // disabled
    ] {
        expect(&format!("dissuade_rule_hits_total{{rule=\"{rule}\"}}"), n);
    }

    expect("dissuade_assigned_partitions", 2.0);
    expect("dissuade_open_tasks", 4.0); // callees 1, 2, 3 and 9
    expect("dissuade_rules_loaded", 18.0);
    expect("dissuade_end_to_end_latency_seconds_count", 5.0);
    expect("dissuade_end_to_end_latency_quantile_seconds_count", 5.0);
    // The events happened 60 to 120 s ago; the tasks were delivered within a minute after.
    let p99 = s["dissuade_end_to_end_latency_quantile_seconds{quantile=\"0.99\"}"];
    assert!((60.0..180.0).contains(&p99), "e2e p99 {p99}");
    let cells = s["dissuade_grid_cells_loaded"];
    assert!(cells > 1000.0, "{cells} grid cells");
    // The lifecycle's families are exposed from the start, with their bounded label sets
    // (this processor runs without the lifecycle: tests/lifecycle.rs counts them).
    for series in [
        "dissuade_feedback_total{outcome=\"reached_by_phone\"}",
        "dissuade_feedback_rejected_total{reason=\"wrong_key\"}",
        "dissuade_tasks_closed_total{outcome=\"false_alarm\"}",
        "dissuade_people_reached_total",
        "dissuade_escalations_total{tier=\"1\"}",
        "dissuade_escalations_total{tier=\"2\"}",
        "dissuade_lifecycle_tasks{status=\"overdue\"}",
        "dissuade_time_to_first_contact_seconds_count",
        "dissuade_lifecycle_evicted_total{was=\"unclosed\"}",
    ] {
        expect(series, 0.0);
    }
    assert!(!text.contains("microseconds"));

    // No label carries a phone number: no run of 7 digits in any label value (bucket bounds
    // and quantiles are numbers by definition, the rule-set version is a content hash).
    for series in s.keys() {
        for (name, value) in labels(series) {
            if name == "le" || name == "quantile" || value.starts_with("sha256:") {
                continue;
            }
            assert!(
                !has_digit_run(&value, 7),
                "label {name}=\"{value}\" of {series} looks like a phone number"
            );
        }
    }
    for number in NUMBERS {
        assert!(!text.contains(number), "{number} in the scrape");
    }

    // The accessors the demo's live summary uses agree with the scrape.
    assert_eq!(p.metrics.tasks_by_level(), [0, 0, 1, 3, 1]);
    assert_eq!(p.metrics.suppressed(), 2);
    assert_eq!(p.metrics.dead_letters(), 6);
    assert_eq!(p.metrics.total_lag(), 0);
    assert_eq!(p.metrics.end_to_end_quantiles().1, 5);

    promtool_check(&text);

    // The topic agrees: five tasks, each once (read until it has been quiet for a while, so
    // that a duplicate would be seen).
    let tasks = tasks_of(&consume_settled(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        5,
        WAIT,
    ));
    assert_eq!(duplicated_ids(&tasks), []);
    let mut events: Vec<&str> = tasks.iter().map(|t| t.event_id.as_str()).collect();
    events.sort_unstable();
    assert_eq!(events, ["m1", "m2", "m3", "m5", "m9"]);

    shutdown.cancel();
    p.stop();
}

/// `promtool check metrics` on the scrape, where promtool is installed.
fn promtool_check(text: &str) {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!(
            "promtool check metrics: skipped: promtool not installed \
             (apt-get install prometheus, or scripts/install-test-deps)"
        );
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics: {}\n{report}",
        out.status
    );
    println!("promtool check metrics: clean");
}
