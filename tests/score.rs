//! Hand-written events through the shipped sample configuration (the Tianjin map and the
//! sample rules): exact levels, grids and assignees, worked out by hand from
//! config/rules.toml, config/grid/ and the dispatch settings.

use serde_json::json;
use std::path::Path;
use std::process::{Command, Stdio};

use dissuade::config::Config;
use dissuade::pipeline::{Action, Outcome, Pipeline};
use dissuade::task::TaskId;

const EVENTS: &str = include_str!("data/events.jsonl");

/// Writes the shipped rules, changed by `edit`, to `dest` (list files still found in
/// `config/lists/`).
fn write_rules_edited(dest: &Path, edit: impl FnOnce(String) -> String) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let text = edit(std::fs::read_to_string(root.join("rules.toml")).unwrap()).replace(
        "file = \"lists/",
        &format!("file = \"{}/lists/", root.display()),
    );
    std::fs::write(dest, text).unwrap();
}

/// Runs the `dissuade` binary from the repository root with `input` on stdin.
fn dissuade(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissuade"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs the binary with its standard output a pipe whose reader is gone before it writes,
/// as in `dissuade check | (exit 0)`.
fn dissuade_with_closed_stdout(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_dissuade"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    // It may stop reading its input once it finds its output gone.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

/// The sample configuration copied into `dir` with `edit` applied, its paths still pointing
/// at the shipped rules and grid.
fn edited_config(dir: &Path, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let config = std::fs::read_to_string(root.join("dissuade.toml"))
        .unwrap()
        .replace("\"grid/", &format!("\"{}/grid/", root.display()))
        .replace(
            "\"rules.toml\"",
            &format!("\"{}/rules.toml\"", root.display()),
        );
    let path = dir.join("dissuade.toml");
    std::fs::write(&path, edit(config)).unwrap();
    path
}

fn config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dissuade.toml");
    Config::load_with_env(&path, []).expect("sample config loads")
}

/// (event, kind, level, score, grid match, grid id, assignee id)
type Expected = (
    &'static str,
    &'static str,
    &'static str,
    i64,
    &'static str,
    Option<&'static str>,
    &'static str,
);

const EXPECTED_TASKS: [Expected; 9] = [
    // spoofed official (60) + overseas (20) + 25-minute call to a 76-year-old (30)
    (
        "e01",
        "new",
        "critical",
        110,
        "inside",
        Some("120101-01-006"),
        "po-120101-01-006",
    ),
    // blacklisted alone (60)
    (
        "e02",
        "new",
        "high",
        60,
        "inside",
        Some("120116-17-013"),
        "po-120116-17-013",
    ),
    // spoofed bank (40) + payment link (30); located through base-station cell 460-00-1-1
    (
        "e05",
        "new",
        "high",
        70,
        "inside",
        Some("120101-01-004"),
        "po-120101-01-004",
    ),
    // no location at all: the fallback desk, never dropped
    (
        "e06",
        "new",
        "high",
        60,
        "unmatched",
        None,
        "tianjin-anti-fraud-centre-duty-desk",
    ),
    // 200 m outside the edge of Jinghai: snapped to the nearest cell
    (
        "e07",
        "new",
        "high",
        60,
        "snapped",
        Some("120118-15-002"),
        "po-120118-15-002",
    ),
    // Beijing, far outside the map
    (
        "e08",
        "new",
        "high",
        60,
        "unmatched",
        None,
        "tianjin-anti-fraud-centre-duty-desk",
    ),
    // a cell with no community officer: its station's duty desk
    (
        "e09",
        "new",
        "high",
        60,
        "inside",
        Some("120102-02-003"),
        "desk-120102-02",
    ),
    // same callee as e02 five minutes later at a higher level: an upgrade
    (
        "e11",
        "upgrade",
        "critical",
        120,
        "inside",
        Some("120116-17-013"),
        "po-120116-17-013",
    ),
    // same callee 35 minutes after the upgrade: the window has passed, a new task; blacklisted
    // (60), and the third different flagged number calling this person within the hour (40)
    (
        "e12",
        "new",
        "critical",
        100,
        "inside",
        Some("120116-17-013"),
        "po-120116-17-013",
    ),
];

fn check_task(task: &serde_json::Value, expected: &Expected) {
    let (event, kind, level, score, match_kind, grid_id, assignee) = *expected;
    assert_eq!(task["event_id"], event);
    assert_eq!(task["kind"], kind, "{event}");
    assert_eq!(task["level"], level, "{event}");
    assert_eq!(task["score"], score, "{event}");
    assert_eq!(task["grid"]["match"], match_kind, "{event}");
    assert_eq!(task["grid"]["grid_id"].as_str(), grid_id, "{event}");
    assert_eq!(task["assignee"]["id"], assignee, "{event}");
    let callee = task["victim"]["number"].as_str().unwrap();
    assert_eq!(
        task["task_id"],
        TaskId::for_event(event, callee).to_string()
    );
    assert!(task["rules_version"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}

#[test]
fn sample_events_yield_the_hand_computed_tasks() {
    let (pipeline, warnings) = Pipeline::load(&config()).unwrap();
    assert!(
        warnings.is_empty(),
        "the shipped map is clean: {warnings:?}"
    );
    let mut tasks = Vec::new();
    let (mut suppressed, mut below, mut rejected) = (Vec::new(), Vec::new(), Vec::new());
    let mut buf = Vec::new();
    for line in EVENTS.lines() {
        buf.clear();
        // The service's clock a few hours after the sample calls (2026-11-24T05:33:20Z).
        match pipeline.process(line.as_bytes(), 0, 1_795_500_000_000, &mut buf) {
            Outcome::Rejected(e) => rejected.push(e.to_string()),
            Outcome::Scored(s) => match s.action {
                Action::Task(_) => {
                    tasks.push(serde_json::from_slice::<serde_json::Value>(&buf).unwrap())
                }
                Action::Suppressed { open } => suppressed.push(open),
                Action::BelowThreshold => below.push(s.level),
            },
        }
    }
    assert_eq!(tasks.len(), EXPECTED_TASKS.len());
    for (task, expected) in tasks.iter().zip(&EXPECTED_TASKS) {
        check_task(task, expected);
    }
    // e10 repeats e01's callee at a lower level inside the window.
    assert_eq!(suppressed, [TaskId::for_event("e01", "13800000001")]);
    // e03 scores nothing, e04 (overseas alone) is low: counted, not dispatched.
    assert_eq!(
        below.iter().map(|l| l.as_str()).collect::<Vec<_>>(),
        ["none", "low"]
    );
    assert_eq!(
        rejected,
        [
            "missing required field `callee_number`",
            "field `callee_location.lat` is out of range: 139.1 is not a latitude in [-90, 90]"
        ]
    );

    let e01 = &tasks[0];
    assert_eq!(
        e01["deadline"], "2026-11-24T00:10:00.000Z",
        "critical: 10 minutes"
    );
    assert_eq!(e01["victim"]["number"], "13800000001");
    assert_eq!(e01["victim"]["location"]["source"], "event");
    assert_eq!(e01["also_notify"].as_array().unwrap().len(), 2);
    assert_eq!(e01["fraud_type"], "impersonate_police");
    assert!(e01["script"].as_str().unwrap().contains("safe account"));
    let reasons: Vec<_> = e01["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["rule_id"].as_str().unwrap(), r["score"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("impersonates_official", 60),
            ("overseas_caller", 20),
            ("long_call_to_elderly", 30)
        ]
    );
    // The caller's number is masked in explanations.
    assert!(!e01.to_string().contains("+85251234567"));
    assert_eq!(tasks[2]["victim"]["location"]["source"], "cell_id");
    assert_eq!(tasks[4]["grid"]["distance_m"], 200.4);
    assert_eq!(
        tasks[7]["upgrade_of"],
        TaskId::for_event("e02", "13800000002").to_string()
    );
}

#[test]
fn score_command_prints_tasks_and_reports_bad_lines() {
    let out = dissuade(
        &["score", "--now", "2026-11-24T08:45:00+08:00"],
        EVENTS.as_bytes(),
    );
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let tasks: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tasks.len(), EXPECTED_TASKS.len());
    for (task, expected) in tasks.iter().zip(&EXPECTED_TASKS) {
        check_task(task, expected);
        assert_eq!(task["created_at"], "2026-11-24T00:45:00.000Z");
    }
    assert!(
        stderr.contains("line 13: missing required field `callee_number`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("line 14: field `callee_location.lat` is out of range"),
        "{stderr}"
    );
    assert!(
        stderr.contains("14 events in")
            && stderr.contains(
                "9 tasks (8 new, 1 upgrades), 1 suppressed, 2 below threshold, 2 rejected"
            ),
        "{stderr}"
    );
    assert!(
        !stderr.contains("13800000"),
        "no phone number on stderr: {stderr}"
    );
}

#[test]
fn check_command_summarises_the_sample_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_dissuade"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("config/dissuade.toml: OK"), "{stdout}");
    assert!(stdout.contains("18 rules"), "{stdout}");
    assert!(
        stdout.contains(
            "3332 cells, 270 stations, 10283 roster entries; 67 cells with no community officer"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("810 base-station cells"), "{stdout}");
}

#[test]
fn check_command_fails_with_the_rule_id_on_a_bad_rule_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let rules = std::fs::read_to_string(root.join("rules.toml"))
        .unwrap()
        .replacen("score = 60", "score = \"sixty\"", 1)
        .replace(
            "file = \"lists/",
            &format!("file = \"{}/lists/", root.display()),
        );
    std::fs::write(dir.path().join("rules.toml"), rules).unwrap();
    let config = std::fs::read_to_string(root.join("dissuade.toml"))
        .unwrap()
        .replace("\"grid/", &format!("\"{}/grid/", root.display()));
    std::fs::write(dir.path().join("dissuade.toml"), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dissuade"))
        .args(["--config"])
        .arg(dir.path().join("dissuade.toml"))
        .arg("check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(
            "rules.toml: 1 problem in the rule set:\n  rule `blacklisted_caller` (#1, line 169): \
             score: invalid type: string \"sixty\", expected i64"
        ),
        "{stderr}"
    );
}

#[test]
fn locate_jsonl_keeps_one_output_line_per_input_line() {
    let out = dissuade(
        &["locate", "--jsonl"],
        b"{\"lon\":117.21034,\"lat\":39.1325}\n{\"lon\":\"x\"}\n{\"lon\":116.745,\"lat\":38.826}\n{\"lon\":116.4,\"lat\":39.9}\n\n \r\n{\"lon\":13912345678,\"lat\":39.9}\n\xff\n{\"lon\":117.21034,\"lat\":39.1325}",
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad line makes the exit code 2"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 9, "{lines:#?}");
    assert_eq!(lines[0]["grid_id"], "120101-01-006");
    assert_eq!(lines[0]["match"], "inside");
    assert!(lines[1]["error"].is_string());
    assert_eq!(lines[2]["grid_id"], "120118-15-002");
    assert_eq!(lines[2]["match"], "snapped");
    assert_eq!(lines[3]["match"], "unmatched");
    // Blank lines, a number that may be a phone number, bytes that are not UTF-8: each gives
    // its error line, and the next line its result.
    assert!(lines[4]["error"].as_str().unwrap().contains("empty line"));
    assert!(lines[5]["error"].as_str().unwrap().contains("empty line"));
    assert_eq!(
        lines[6]["error"],
        "lon 139****5678 is not a longitude in [-180, 180]"
    );
    assert!(lines[7]["error"].is_string());
    assert_eq!(lines[8]["grid_id"], "120101-01-006");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("line 2:"), "{stderr}");
    assert!(stderr.contains("line 5: empty line"), "{stderr}");
    assert!(!stderr.contains("13912345678"), "{stderr}");
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    for (args, input) in [
        (&["check"][..], &b""[..]),
        (&["locate", "117.21034", "39.1325"], b""),
        (
            &["locate", "--jsonl"],
            b"{\"lon\":117.21034,\"lat\":39.1325}\n",
        ),
        (
            &["score", "--now", "2026-11-25T10:00:00Z"],
            EVENTS.as_bytes(),
        ),
    ] {
        let out = dissuade_with_closed_stdout(args, input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("error:"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn check_command_names_a_mistyped_script_key_and_the_closest_fraud_type() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited_config(dir.path(), |c| {
        c.replacen("impersonate_police = ", "impersonate_polise = ", 1)
    });
    let out = Command::new(env!("CARGO_BIN_EXE_dissuade"))
        .arg("--config")
        .arg(&path)
        .arg("check")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "{}: invalid configuration:\n  - scripts.impersonate_polise: `impersonate_polise` \
             is not a fraud type the rules know (did you mean `impersonate_police`?",
            path.display()
        )),
        "{stderr}"
    );
}

/// `score --explain` says what became of every line: a task with its reasons, the repeat
/// suppressed by that task, a quiet call below the threshold, a bad line rejected with its
/// masked reason; no number in clear outside the task.
#[test]
fn explain_says_why_each_event_did_or_did_not_become_a_task() {
    let at = "2026-11-24T08:00:00+08:00";
    let loc = r#""callee_location":{"lon":117.196623,"lat":39.132584}"#;
    let input = [
        format!(r#"{{"event_id":"e1","occurred_at":"{at}","caller_number":"13911110001","callee_number":"13800000001","call_duration_s":120,"caller_flags":["blacklisted"],{loc}}}"#),
        format!(r#"{{"event_id":"e2","occurred_at":"{at}","caller_number":"13911110001","callee_number":"13800000001","call_duration_s":120,"caller_flags":["blacklisted"],{loc}}}"#),
        format!(r#"{{"event_id":"e3","occurred_at":"{at}","caller_number":"13911110002","callee_number":"13800000002","call_duration_s":20}}"#),
        r#"{"event_id":"e4","occurred_at":"13800000003","callee_number":"13800000003"}"#.to_string(),
    ]
    .join("\n");
    let out = dissuade(
        &["score", "--explain", "--now", "2026-11-24T00:01:00Z"],
        input.as_bytes(),
    );
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let result: Vec<&str> = lines
        .iter()
        .map(|l| l["result"].as_str().unwrap())
        .collect();
    assert_eq!(
        result,
        ["task", "suppressed", "below_threshold", "rejected"]
    );
    assert_eq!(lines[0]["fired"][0]["rule_id"], "blacklisted_caller");
    assert_eq!(lines[0]["level"], "high");
    assert_eq!(lines[1]["suppressed_by"], lines[0]["task_id"]);
    assert_eq!(
        (
            lines[2]["score"].as_i64(),
            lines[2]["dispatch_level"].as_str()
        ),
        (Some(0), Some("medium"))
    );
    // Figures of the features the sample keeps; none for one no enabled rule reads.
    let figures = lines[0]["figures"].as_object().unwrap();
    assert_eq!(figures["flagged_callers_1h"], 1);
    assert!(!figures.contains_key("elderly_callees_10m"), "{figures:?}");
    assert!(lines[3]["error"].as_str().unwrap().contains("occurred_at"));
    assert!(
        !lines[3].to_string().contains("13800000003"),
        "{}",
        lines[3]
    );
}

#[test]
fn rules_lists_every_rule_with_its_score_and_the_thresholds() {
    let out = dissuade(&["rules", "--json"], b"");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["levels"]["medium"], 40);
    assert_eq!(v["dispatch_min_level"], "medium");
    // The entry of `section` whose id is `id`.
    let entry = |section: &str, id: &str| {
        v[section]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("no {section} entry {id}"))
            .clone()
    };
    let blacklisted = entry("rules", "blacklisted_caller");
    assert_eq!(
        (
            blacklisted["score"].as_i64(),
            blacklisted["enabled"].as_bool()
        ),
        (Some(60), Some(true))
    );
    // The lists with their sizes, the features with their windows.
    assert_eq!(entry("lists", "official_numbers")["entries"], 11);
    let flagged = entry("features", "flagged_callers_1h");
    assert_eq!(
        (
            &flagged["key"],
            &flagged["aggregate"],
            &flagged["window"],
            &flagged["kept"]
        ),
        (
            &json!("callee"),
            &json!("distinct"),
            &json!("1h"),
            &json!(true)
        )
    );
    // Read only by `burst_to_elderly`, which ships disabled.
    assert_eq!(entry("features", "elderly_callees_10m")["kept"], false);
    assert_eq!(v["windows"]["allowed_lateness"], "2m");
    let table = String::from_utf8(dissuade(&["rules"], b"").stdout).unwrap();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("blacklisted_caller") && l.contains("60")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("official_numbers") && l.contains("11 entries")),
        "{table}"
    );
    for (feature, state) in [
        ("flagged_callers_1h", "kept"),
        ("elderly_callees_10m", "unused"),
    ] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(feature) && l.split_whitespace().nth(1) == Some(state)),
            "{table}"
        );
    }
}

/// The worked example of config/rules.toml: harmless-looking calls from one number to
/// elderly people raise tasks once five different ones were called within 10 minutes, while
/// one such call alone does not.
#[test]
fn a_burst_of_harmless_calls_to_elderly_people_raises_tasks_and_one_alone_does_not() {
    let loc = r#""callee_location":{"lon":117.196623,"lat":39.132584}"#;
    let call = |id: &str, minute: u32, callee: &str, age: u32| {
        format!(
            r#"{{"event_id":"{id}","occurred_at":"2026-11-24T10:{minute:02}:00+08:00","caller_number":"13700001234","callee_number":"{callee}","call_duration_s":60,"callee_age":{age},{loc}}}"#
        )
    };
    let input = [
        call("b1", 0, "13800000061", 61),
        call("b2", 1, "13800000074", 74),
        call("b3", 2, "13800000068", 68),
        call("b4", 4, "13800000080", 80),
        call("b5", 6, "13800000077", 77),
        call("b6", 7, "13800000074", 74),
        // The same kind of call from another number, alone.
        format!(
            r#"{{"event_id":"alone","occurred_at":"2026-11-24T10:07:00+08:00","caller_number":"13700009999","callee_number":"13800000090","call_duration_s":60,"callee_age":90,{loc}}}"#
        ),
    ]
    .join("\n");
    // The windowed rules ship disabled (see config/rules.toml): enable them.
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    write_rules_edited(&rules, |r| r.replace("enabled = false", "enabled = true"));
    let out = {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_dissuade"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env(
                "DISSUADE__RULES__PATH",
                format!("{:?}", rules.display().to_string()),
            )
            .args(["score", "--explain", "--now", "2026-11-24T02:10:00Z"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(i64, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["figures"]["elderly_callees_10m"].as_i64().unwrap(),
                l["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (1, "below_threshold"),
            (2, "below_threshold"),
            (3, "below_threshold"),
            (4, "below_threshold"),
            (5, "task"),
            (5, "task"),
            (1, "below_threshold"),
        ]
    );
    assert_eq!(lines[4]["level"], "medium");
    assert_eq!(
        lines[4]["reasons"][0]["reason"],
        "Caller 137****1234 called 5 different people aged 60+ within 10 minutes."
    );
    assert_eq!(lines[6]["score"], 0);
    assert!(lines[0]["figures"]["since_last_task_s"].is_null());
}

/// The sample lists: a known fraud number in another spelling, and an official bank number
/// shown on an overseas call.
#[test]
fn callers_on_the_sample_lists_fire_their_rules() {
    let at = "2026-11-24T08:00:00+08:00";
    let input = [
        format!(r#"{{"event_id":"l1","occurred_at":"{at}","caller_number":"0085251239901","callee_number":"13800000001","call_duration_s":120}}"#),
        format!(r#"{{"event_id":"l2","occurred_at":"{at}","caller_number":"95588","callee_number":"13800000002","call_duration_s":120,"caller_flags":["overseas"]}}"#),
        format!(r#"{{"event_id":"l3","occurred_at":"{at}","caller_number":"95588","callee_number":"13800000003","call_duration_s":120}}"#),
    ]
    .join("\n");
    let out = dissuade(
        &["score", "--explain", "--now", "2026-11-24T00:01:00Z"],
        input.as_bytes(),
    );
    assert!(out.status.success());
    let fired: Vec<Vec<String>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["fired"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["rule_id"].as_str().unwrap().to_owned())
                .collect()
        })
        .collect();
    assert_eq!(
        fired,
        [
            vec!["known_fraud_number", "overseas_caller"],
            vec!["spoofed_official_number", "overseas_caller"],
            vec![],
        ]
    );
}

/// The analyst's loop as the README gives it: labelled traffic, then a backtest of a
/// candidate (the shipped rules with `burst_to_elderly` enabled) against the shipped rules.
/// It is the only difference, so every task added, removed or moved a level is credited to
/// it (or, when every rule scored the event alike, to an earlier task) and to no other rule,
/// and every other rule fires as often in both.
#[test]
fn a_backtest_on_labelled_traffic_credits_every_change_to_the_rule_that_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    let (events, labels, candidate) = (path("events.jsonl"), path("labels.jsonl"), path("c.toml"));
    let generated = dissuade(
        &[
            "generate", "--out", &events, "--labels", &labels, "--events", "20000", "--seed", "3",
            "--rate", "50",
        ],
        b"",
    );
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );
    write_rules_edited(Path::new(&candidate), |r| {
        r.replace("score = 45\nenabled = false\n", "score = 45\n")
    });
    let out = dissuade(
        &[
            "backtest", "--events", &events, "--labels", &labels, "--rules", &candidate, "--json",
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["report"];
    let fraud = std::fs::read_to_string(&labels)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"fraud\":true"))
        .count();
    assert_eq!(r["events"], 20000);
    assert_eq!(r["rejected"], 0);
    assert_eq!(r["labelled"], 20000);
    assert_eq!(r["fraud_events"], fraud as u64);
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert!(n(&r["added"]) > 0, "enabling the rule adds tasks: {r}");
    assert!(n(&r["tasks"][1]) > n(&r["tasks"][0]));
    // A change where every rule scored alike comes from an earlier task (a task the
    // candidate made covers a later event that the baseline made a task of).
    let mut credited = n(&r["from_earlier_events"]);
    for rule in r["rules"].as_array().unwrap() {
        let changes = [&rule["added"], &rule["removed"], &rule["changed"]].map(n);
        credited += changes.iter().sum::<u64>();
        if rule["id"] == "burst_to_elderly" {
            assert_eq!(rule["score"], serde_json::json!([null, 45]));
            assert_eq!(n(&rule["fired"][0]), 0);
        } else {
            assert_eq!(changes, [0, 0, 0], "{rule}");
            assert_eq!(rule["fired"][0], rule["fired"][1], "{rule}");
        }
    }
    let changed = ["added", "removed", "level_up", "level_down"]
        .iter()
        .map(|k| n(&r[k]))
        .sum::<u64>();
    assert_eq!(credited, changed, "every change is credited once: {r}");
    let table = dissuade(
        &[
            "backtest", "--events", &events, "--labels", &labels, "--rules", &candidate,
        ],
        b"",
    );
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("task precision") && table.contains("burst_to_elderly"),
        "{table}"
    );
}
