#![cfg(feature = "embedded-broker")]
//! The desk and officer views in a real browser: the service (processor, lifecycle and web
//! views) on the embedded broker, and `tests/browser/web.mjs` driving Debian's headless
//! Chromium through playwright-core against it. The program signs in as two stations' desks
//! and an officer, watches a task this test causes appear live, submits an outcome from the
//! officer's page and sees the task close on the desk; without a token, with a wrong one and
//! with the other station's it sees no task data.
//!
//! `scripts/install-test-deps` installs Chromium and playwright-core; without them (or without
//! node) the test says `skipped: ...` on stderr and passes.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use dissuade::config::{Config, WebToken};
use dissuade::service::Service;
use geo::InteriorPoint;
use rdkafka::message::Message;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

const STATION_A: &str = "120101-01";
const STATION_B: &str = "120102-01";
/// The whole browser run; it bounds each of its own waits at 30 s.
const RUN: Duration = Duration::from_secs(300);

/// A high-level event (a blacklisted caller) for `callee`, located in cell `grid_id`.
fn event(cfg: &Config, id: &str, callee: &str, grid_id: &str) -> (String, Vec<u8>) {
    let (grid, _) = dissuade::pipeline::load_grid(cfg).expect("grid loads");
    let cell = grid.find_cell(grid_id).expect("the cell exists");
    let p = grid
        .geometry(cell)
        .interior_point()
        .expect("a point inside");
    let now = chrono::Utc::now().timestamp_millis();
    let json = format!(
        r#"{{"event_id":"{id}","occurred_at":{now},"caller_number":"13911110001","callee_number":"{callee}","call_duration_s":120,"caller_flags":["blacklisted"],"callee_location":{{"lon":{},"lat":{}}}}}"#,
        p.x(),
        p.y()
    );
    (callee.to_string(), json.into_bytes())
}

fn token(cfg: &mut Config, scope: &str, id: Option<&str>) -> String {
    let (token, sha256) = dissuade::web::auth::new_token();
    cfg.web.tokens.push(WebToken {
        scope: scope.into(),
        id: id.map(str::to_string),
        sha256,
    });
    token
}

/// The id of the task made of event `event_id`, once it is on the task topic.
fn task_of(cfg: &Config, event_id: &str, at_least: usize) -> String {
    let records = consume(
        &cfg.kafka.brokers,
        &cfg.kafka.task_topic,
        at_least,
        Duration::from_secs(60),
    );
    records
        .iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(m.payload()?).ok())
        .find(|t| t["event_id"] == event_id)
        .and_then(|t| t["task_id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no task for {event_id}"))
}

/// One HTTP/1.1 request; returns the status, the headers and the body.
async fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut raw)
        .await
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head[9..12].parse().unwrap();
    (status, head.to_string(), body.to_string())
}

/// Creates `cfg`'s topics and starts the service with its views: the service, what stops
/// it, and the views' base URL.
async fn start_with_views(cfg: &Config) -> (Service, CancellationToken, String) {
    create_topics(cfg).await;
    let shutdown = CancellationToken::new();
    let service = Service::start(cfg, true, shutdown.clone())
        .await
        .expect("the service starts");
    let base = format!("http://{}", service.web_addr.expect("views served"));
    (service, shutdown, base)
}

/// Signs in with `token`: the answer's head and the session cookie.
async fn sign_in(base: &str, token: &str) -> (String, String) {
    let json = [("Content-Type", "application/json")];
    let body = format!(r#"{{"token":"{token}"}}"#);
    let (status, head, _) = http(base, "POST", "/api/session", &json, &body).await;
    assert_eq!(status, 204, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    (head, cookie)
}

/// Changes from another origin, or without the session's CSRF token, are refused even with
/// a valid session cookie; the same change from the service's own origin goes through the
/// check (and fails later, for the unknown task).
#[tokio::test(flavor = "multi_thread")]
async fn a_change_from_another_origin_or_without_the_csrf_token_is_refused() {
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 1);
    cfg.web.listen = "127.0.0.1:0".into();
    cfg.lifecycle.enabled = false;
    let centre = token(&mut cfg, "centre", None);
    let (service, shutdown, base) = start_with_views(&cfg).await;
    let host = base.trim_start_matches("http://").to_string();

    let json = [("Content-Type", "application/json")];
    let (status, _, _) = http(&base, "POST", "/api/session", &json, r#"{"token":"wrong"}"#).await;
    assert_eq!(status, 401);
    let (head, cookie) = sign_in(&base, &centre).await;
    assert!(head.contains("HttpOnly; SameSite=Strict"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-security-policy: default-src 'self'; script-src 'self'"),
        "{head}"
    );
    let (status, _, me) = http(&base, "GET", "/api/me", &[("Cookie", &cookie)], "").await;
    assert_eq!(status, 200);
    let csrf = serde_json::from_str::<serde_json::Value>(&me).unwrap()["csrf"]
        .as_str()
        .unwrap()
        .to_string();

    let body = r#"{"task_id":"00000000000000000000000000000000","outcome":"false_alarm"}"#;
    let post = |origin: Option<String>, csrf: Option<String>| {
        let (cookie, base) = (cookie.clone(), base.clone());
        async move {
            let mut h = vec![
                ("Content-Type", "application/json".to_string()),
                ("Cookie", cookie),
            ];
            if let Some(o) = origin {
                h.push(("Origin", o));
            }
            if let Some(c) = csrf {
                h.push(("X-CSRF-Token", c));
            }
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http(&base, "POST", "/api/feedback", &h, body).await.0
        }
    };
    let own = format!("http://{host}");
    assert_eq!(
        post(Some("http://evil.example".into()), Some(csrf.clone())).await,
        403
    );
    assert_eq!(post(Some(own.clone()), None).await, 403);
    assert_eq!(post(Some(own.clone()), Some("0".repeat(64))).await, 403);
    assert_eq!(
        post(Some(own), Some(csrf.clone())).await,
        404,
        "past the checks: no such task"
    );
    // Signed out, the session is gone.
    let h = [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str())];
    assert_eq!(http(&base, "DELETE", "/api/session", &h, "").await.0, 204);
    assert_eq!(
        http(&base, "GET", "/api/me", &[("Cookie", &cookie)], "")
            .await
            .0,
        401
    );
    shutdown.cancel();
    service.wait().await.expect("the service stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn desks_and_officers_see_their_area_live_and_close_the_loop_in_a_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "skipped: no `node` here (scripts/install-test-deps needs npm and Debian's chromium)"
        );
        return;
    }
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 2);
    let t = unique("web");
    cfg.kafka.feedback_topic = format!("{t}-feedback");
    cfg.kafka.feedback_dlq_topic = format!("{t}-feedback-dlq");
    cfg.kafka.lifecycle_topic = format!("{t}-lifecycle");
    cfg.web.listen = "127.0.0.1:0".into();
    let (grid, _) = dissuade::pipeline::load_grid(&cfg).expect("grid loads");
    let cell_a = format!("{STATION_A}-001");
    let officer = grid
        .community_officer(grid.find_cell(&cell_a).unwrap())
        .expect("cell A has a community officer")
        .officer_id
        .clone();
    let station_token = token(&mut cfg, "station", Some(STATION_A));
    let other_token = token(&mut cfg, "station", Some(STATION_B));
    let officer_token = token(&mut cfg, "officer", Some(&officer));
    let centre_token = token(&mut cfg, "centre", None);
    let (service, shutdown, base) = start_with_views(&cfg).await;

    // Two people at risk in station A's first cell, one in station B's.
    let cell_b = format!("{STATION_B}-001");
    let first = [
        event(&cfg, "a-1", "13800000101", &cell_a),
        event(&cfg, "a-2", "13800000102", &cell_a),
        event(&cfg, "b-1", "13800000201", &cell_b),
    ];
    produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &first).await;
    task_of(&cfg, "b-1", 3);

    let shots = std::env::temp_dir().join(unique("web-shots"));
    std::fs::create_dir_all(&shots).unwrap();
    let mut child = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/web.mjs"))
        .current_dir(root)
        .env("BASE_URL", &base)
        .env("STATION_TOKEN", &station_token)
        .env("OTHER_STATION_TOKEN", &other_token)
        .env("OFFICER_TOKEN", &officer_token)
        .env("CENTRE_TOKEN", &centre_token)
        .env("SHOTS_DIR", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut last = serde_json::Value::Null;
    let run = async {
        while let Some(line) = lines.next_line().await.expect("reading the browser test") {
            eprintln!("browser: {line}");
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["need"] == "new_task" {
                let new = event(&cfg, "a-live", "13800000103", &cell_a);
                produce(&cfg.kafka.brokers, &cfg.kafka.input_topic, &[new]).await;
                let id = task_of(&cfg, "a-live", 4);
                let answer = format!("{}\n", serde_json::json!({ "task_id": id }));
                stdin.write_all(answer.as_bytes()).await.unwrap();
                stdin.flush().await.unwrap();
            }
            last = v;
        }
    };
    tokio::time::timeout(RUN, run)
        .await
        .expect("the browser test finishes in time");
    let status = child.wait().await.unwrap();
    let web = &service.metrics.web;
    let (written, refused, signed_in) = (
        web.feedback.with_label_values(&["written"]).get(),
        web.sign_ins.with_label_values(&["refused"]).get(),
        web.sign_ins.with_label_values(&["ok"]).get(),
    );
    shutdown.cancel();
    service.wait().await.expect("the service stops cleanly");

    if let Some(why) = last["skip"].as_str() {
        eprintln!("skipped: {why}");
        return;
    }
    assert!(status.success() && last["ok"] == true, "{last}");
    // The officer's one report, the wrong token, and the desks' and officer's sign-ins.
    assert_eq!(written, 1);
    assert!(
        refused >= 1 && signed_in >= 3,
        "refused {refused}, signed in {signed_in}"
    );
    for png in ["desk.png", "officer.png", "officer-task.png"] {
        let size = std::fs::metadata(shots.join(png))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 1000, "{png}: {size} bytes");
    }
}

/// A roster change applied by a reload reaches the views: the cell's officers are those of
/// the new roster, without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_reloaded_roster_is_what_the_views_show() {
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 1);
    cfg.web.listen = "127.0.0.1:0".into();
    cfg.lifecycle.enabled = false;
    let dir = tempfile::tempdir().unwrap();
    let roster = dir.path().join("roster.csv");
    let rows = std::fs::read_to_string(cfg.resolve(&cfg.grid.roster)).unwrap();
    std::fs::write(&roster, &rows).unwrap();
    cfg.grid.roster = roster.clone();
    let centre = token(&mut cfg, "centre", None);
    let (service, shutdown, base) = start_with_views(&cfg).await;
    let (_, cookie) = sign_in(&base, &centre).await;
    // The first roster row: its officer is dropped from the file.
    let first = rows.lines().nth(1).unwrap();
    let mut fields = first.split(',');
    let (grid_id, officer) = (fields.next().unwrap(), fields.next().unwrap());
    let officers = |body: &str| -> Vec<String> {
        serde_json::from_str::<serde_json::Value>(body).unwrap()["officers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["officer_id"].as_str().unwrap().to_string())
            .collect()
    };
    let cell = format!("/api/cells/{grid_id}");
    let (status, _, before) = http(&base, "GET", &cell, &[("Cookie", &cookie)], "").await;
    assert_eq!(status, 200, "{before}");
    assert!(officers(&before).contains(&officer.to_string()), "{before}");

    let kept: Vec<&str> = rows.lines().filter(|l| *l != first).collect();
    std::fs::write(&roster, kept.join("\n") + "\n").unwrap();
    service
        .reload
        .reload()
        .await
        .expect("the new roster is valid");
    let (status, _, after) = http(&base, "GET", &cell, &[("Cookie", &cookie)], "").await;
    assert_eq!(status, 200, "{after}");
    assert!(!officers(&after).contains(&officer.to_string()), "{after}");
    assert_eq!(officers(&after).len(), officers(&before).len() - 1);

    shutdown.cancel();
    service.wait().await.expect("the service stops cleanly");
}
