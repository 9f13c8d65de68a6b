#![cfg(feature = "embedded-broker")]
//! `dissuade report` against the embedded broker: hand-written tasks, an escalation and
//! feedback on real topics, exact rows per station and per rule, the same output from the
//! library and the binary, and the same output twice.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use dissuade::config::Config;
use dissuade::report::{self, Dimension, Format, Request, Window};
use serde_json::{json, Value};

const HEPING: (&str, &str, &str) = ("120101-01", "和平区第1派出所", "120101-01-006");
const HEDONG: (&str, &str, &str) = ("120102-01", "河东区第1派出所", "120102-01-002");

fn t(hh_mm_ss: &str) -> String {
    format!("2026-11-24T{hh_mm_ss}.000Z")
}

/// A task record as the service writes it (see README, "Task").
#[allow(clippy::too_many_arguments)]
fn task(
    n: u8,
    upgrade_of: Option<u8>,
    victim: &str,
    (station, station_name, grid): (&str, &str, &str),
    rules: &[&str],
    created: &str,
    deadline: &str,
) -> (String, Vec<u8>) {
    let officer = format!("po-{grid}");
    let mut v = json!({
        "task_id": format!("{n:032x}"),
        "event_id": format!("e{n}"),
        "kind": if upgrade_of.is_some() { "upgrade" } else { "new" },
        "created_at": created,
        "occurred_at": created,
        "deadline": deadline,
        "level": "high",
        "score": 70,
        "reasons": rules.iter().map(|r| json!({"rule_id": r, "reason": "why", "score": 30})).collect::<Vec<_>>(),
        "victim": {"number": victim, "location": null},
        "grid": {"match": "inside", "grid_id": grid, "name": "cell", "station_id": station, "station_name": station_name},
        "assignee": {"kind": "officer", "id": officer, "name": "谢丽", "role": "community_officer", "phone": "022-25238146"},
        "also_notify": [],
        "script": "hang up",
        "rules_version": "sha256:f1f092ee20a534a8",
    });
    if let Some(p) = upgrade_of {
        v["upgrade_of"] = json!(format!("{p:032x}"));
    }
    (officer, serde_json::to_vec(&v).unwrap())
}

fn feedback(n: u8, key: &str, at: &str, outcome: &str, extra: Value) -> (String, Vec<u8>) {
    let mut v = json!({
        "task_id": format!("{n:032x}"),
        "actor_id": key,
        "at": at,
        "outcome": outcome,
    });
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    (key.to_string(), serde_json::to_vec(&v).unwrap())
}

/// (key, payload) records for one topic.
type Records = Vec<(String, Vec<u8>)>;

fn records() -> (Records, Records) {
    let po_heping = format!("po-{}", HEPING.2);
    let po_hedong = format!("po-{}", HEDONG.2);
    let official = "impersonates_official";
    let overseas = "overseas_caller";
    let elderly = "long_call_to_elderly";
    let mut tasks = vec![
        // Reached in person four minutes after the task.
        task(
            1,
            None,
            "13800000001",
            HEPING,
            &[official, overseas],
            &t("00:00:20"),
            &t("00:10:00"),
        ),
        // A false alarm.
        task(
            2,
            None,
            "13800000002",
            HEPING,
            &[overseas],
            &t("01:00:00"),
            &t("01:30:00"),
        ),
        // Nobody answers: escalated.
        task(
            3,
            None,
            "13800000003",
            HEDONG,
            &[elderly],
            &t("02:00:00"),
            &t("02:10:00"),
        ),
        // Raised by an upgrade; the feedback names the first task.
        task(
            4,
            None,
            "13800000004",
            HEDONG,
            &[elderly],
            &t("03:00:00"),
            &t("07:00:00"),
        ),
        task(
            5,
            Some(4),
            "13800000004",
            HEDONG,
            &[elderly, official],
            &t("03:30:00"),
            &t("03:40:00"),
        ),
        // The person of task 1 again: defrauded, reported late.
        task(
            6,
            None,
            "13800000001",
            HEDONG,
            &[official],
            &t("05:00:00"),
            &t("05:10:00"),
        ),
        // Before the window.
        task(
            7,
            None,
            "13800000007",
            HEPING,
            &[overseas],
            "2026-11-23T23:00:00.000Z",
            "2026-11-23T23:10:00.000Z",
        ),
    ];
    // A redelivery.
    tasks.push(tasks[0].clone());
    let escalation = json!({
        "task_id": "e3000000000000000000000000000000",
        "kind": "escalation",
        "escalation_of": format!("{:032x}", 3),
        "tier": 1,
        "created_at": t("02:00:00"),
        "deadline": t("02:10:00"),
        "overdue_since": t("02:10:00"),
        "level": "high",
        "assignee": {"kind": "duty_desk", "id": "desk-120102-01"},
        "original_assignee": po_hedong,
        "station_id": "120102-01",
        "not_responded": [po_hedong],
        "acknowledged_at": null,
        "attempts": 0,
    });
    tasks.push((
        "desk-120102-01".into(),
        serde_json::to_vec(&escalation).unwrap(),
    ));
    let none = json!({});
    let feedback = vec![
        feedback(1, &po_heping, &t("00:01:00"), "acknowledged", none.clone()),
        feedback(
            1,
            &po_heping,
            &t("00:04:20"),
            "reached_in_person",
            json!({"note": "已上门劝阻", "photos": ["s3://fb/1.jpg"]}),
        ),
        feedback(2, &po_heping, &t("01:10:00"), "false_alarm", none.clone()),
        feedback(
            4,
            &po_hedong,
            &t("03:35:00"),
            "reached_by_phone",
            none.clone(),
        ),
        feedback(
            6,
            &po_hedong,
            &t("05:20:00"),
            "already_defrauded",
            json!({"loss_cny": 5000}),
        ),
        // The same record again: the loss counts once.
        feedback(
            6,
            &po_hedong,
            &t("05:20:00"),
            "already_defrauded",
            json!({"loss_cny": 5000}),
        ),
        feedback(7, &po_heping, &t("00:05:00"), "reached_by_phone", none),
        (po_heping, b"not json".to_vec()),
    ];
    (tasks, feedback)
}

fn request(cfg: &Config, by: Dimension, format: Format) -> Request {
    let to = chrono::DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    Request {
        client: report::client_config(&cfg.kafka, &cfg.kafka.brokers),
        task_topic: cfg.kafka.task_topic.clone(),
        feedback_topic: cfg.kafka.feedback_topic.clone(),
        window: Window {
            from_ms: Some(to - 86_400_000),
            to_ms: Some(to),
        },
        by,
        format,
        as_of_ms: to,
        districts: HashMap::from([
            ("120101-01".into(), "120101".into()),
            ("120102-01".into(), "120102".into()),
        ]),
        stall_timeout: Duration::from_secs(30),
    }
}

fn run(req: &Request) -> String {
    let mut out = Vec::new();
    let summary = report::run(req, &mut out, &mut |_, _, _| {}).expect("report runs");
    assert_eq!(
        (
            summary.task_records,
            summary.feedback_records,
            summary.skipped_feedback_records,
            summary.tasks_in_window
        ),
        (9, 8, 1, 6)
    );
    String::from_utf8(out).unwrap()
}

const HEADER: &str = "name,tasks,people,reached,reach_rate,median_first_contact_s,\
p90_first_contact_s,overdue,escalated,false_alarms,losses_cny";
const TOTAL: &str = "total,,6,4,2,0.5,240,2100,2,1,1,5000.00";

#[tokio::test(flavor = "multi_thread")]
async fn report_rows_per_station_and_rule_are_exact_and_reproducible() {
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 2);
    cfg.kafka.feedback_topic = unique("t-feedback");
    let k = &cfg.kafka;
    dissuade::kafka::ensure_topics(k, &k.brokers, &[&k.task_topic, &k.feedback_topic])
        .await
        .expect("topics created");
    let (tasks, feedback) = records();
    produce(&k.brokers, &k.task_topic, &tasks).await;
    produce(&k.brokers, &k.feedback_topic, &feedback).await;

    let by_station = run(&request(&cfg, Dimension::Station, Format::Csv));
    assert_eq!(
        by_station,
        [
            format!("station,{HEADER}").as_str(),
            "120101-01,和平区第1派出所,2,2,1,0.5,240,240,0,0,1,0.00",
            // Task 3 overdue and escalated; 4 raised by 5 before its deadline; 5 closed in
            // time through feedback on 4 (35 minutes after 4); 6 closed late.
            "120102-01,河东区第1派出所,4,3,1,0.3333,2100,2100,2,1,0,5000.00",
            TOTAL,
            "",
        ]
        .join("\n")
    );

    let by_rule = run(&request(&cfg, Dimension::Rule, Format::Csv));
    assert_eq!(
        by_rule,
        [
            format!("rule,{HEADER}").as_str(),
            "impersonates_official,,3,2,2,1,240,300,1,0,0,5000.00",
            "long_call_to_elderly,,3,2,1,0.5,2100,2100,1,1,0,0.00",
            "overseas_caller,,2,2,1,0.5,240,240,0,0,1,0.00",
            TOTAL,
            "",
        ]
        .join("\n")
    );
    // The same topics, the same report.
    assert_eq!(run(&request(&cfg, Dimension::Rule, Format::Csv)), by_rule);

    // JSON carries the same figures and the window.
    let by_district: Value =
        serde_json::from_str(&run(&request(&cfg, Dimension::District, Format::Json))).unwrap();
    assert_eq!(by_district["by"], "district");
    assert_eq!(by_district["as_of"], "2026-11-25T00:00:00Z");
    assert_eq!(by_district["from"], "2026-11-24T00:00:00Z");
    let keys: Vec<&str> = by_district["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["120101", "120102"]);
    assert_eq!(
        by_district["total"],
        json!({"key": "total", "name": null, "tasks": 6, "people": 4, "reached": 2,
               "reach_rate": 0.5, "median_first_contact_s": 240.0, "p90_first_contact_s": 2100.0,
               "overdue": 2, "escalated": 1, "false_alarms": 1, "losses_cny": 5000.0})
    );

    // The table aligns what the CSV says (printed for docs/report.md with --nocapture).
    let table = run(&request(&cfg, Dimension::Station, Format::Table));
    println!("{table}");
    assert!(
        table
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("120102-01  河东区第1派出所      4       3        1  33.3%"),
        "{table}"
    );

    // The printed station list masks numbers.
    let list = run(&request(&cfg, Dimension::Station, Format::StationList));
    assert!(list.contains("138****0003"), "{list}");
    assert!(!list.contains("13800000003"), "{list}");
    println!("{list}");
    assert!(
        list.contains(
            "Station 120102-01 河东区第1派出所, district 120102: 4 tasks, 1 open, 2 overdue"
        ),
        "{list}"
    );

    // The binary prints what the library prints.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dissuade"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "report",
            "--brokers",
            &k.brokers,
            "--task-topic",
            &k.task_topic,
            "--feedback-topic",
            &k.feedback_topic,
            "--from",
            "2026-11-24T00:00:00Z",
            "--to",
            "2026-11-25T00:00:00Z",
            "--by",
            "rule",
            "--format",
            "csv",
        ])
        .output()
        .expect("dissuade report runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), by_rule);
    assert!(
        stderr.contains("read 9 task-topic records (0 skipped) and 8 feedback records (1 skipped)"),
        "{stderr}"
    );
    assert!(!stderr.contains("13800000"), "{stderr}");
}
