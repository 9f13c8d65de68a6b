#![cfg(feature = "embedded-broker")]
//! Rules changed while the service runs: applied without a restart, refused when invalid or
//! when only a restart can apply them, windows kept or refilled from the input.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dissuade::reload::{Reloaded, ShadowReloaded};
use dissuade::rules::RuleSet;
use rdkafka::message::Message;

const WAIT: Duration = Duration::from_secs(60);

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A call to a 75-year-old in the sample city; `flags` are the caller's.
fn call(id: &str, caller: &str, callee: &str, flags: &str, duration_s: u32) -> (String, Vec<u8>) {
    let payload = format!(
        r#"{{"event_id":"{id}","occurred_at":{},"caller_number":"{caller}","callee_number":"{callee}","call_duration_s":{duration_s},"caller_flags":[{flags}],"callee_age":75,"callee_location":{{"lon":117.196623,"lat":39.132584}}}}"#,
        now_ms()
    );
    (callee.to_owned(), payload.into_bytes())
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const ELDERLY_RULE: &str = "\n[[rule]]\nid = \"reload_test_elderly\"\ndescription = \"Added \
                            while running.\"\nreason = \"Callee aged 70 or more.\"\nscore = \
                            100\nwhen = \"callee_age >= 70\"\n";

/// A rule added to the file is live within the watch interval and names its version on the
/// tasks; an invalid file is refused with its line and rule id, and the set before it keeps
/// working; a change only a restart can apply is refused as such.
#[tokio::test(flavor = "multi_thread")]
async fn a_rules_change_is_applied_while_running_and_an_invalid_one_keeps_the_live_set() {
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 1);
    let dir = tempfile::tempdir().unwrap();
    cfg.rules.path = sample_rules_edited(dir.path(), |r| r);
    cfg.rules.watch_interval = Duration::from_millis(100);
    create_topics(&cfg).await;
    let shipped = std::fs::read_to_string(&cfg.rules.path).unwrap();
    let p = RunningProcessor::start(&cfg);
    let bootstrap = broker.bootstrap();
    let input = cfg.kafka.input_topic.clone();

    produce(
        &bootstrap,
        &input,
        &[call("before", "13700001234", "13800000001", "", 60)],
    )
    .await;
    assert!(p.wait_consumed(1, WAIT));

    std::fs::write(&cfg.rules.path, format!("{shipped}{ELDERLY_RULE}")).unwrap();
    let version = RuleSet::load(&cfg.rules.path).unwrap().version().to_owned();
    wait_for("the file change to be applied", || {
        p.metrics.reloads("applied") == 1
    });
    assert_eq!(p.pipeline.rules().version(), version);
    let text = p.metrics.render();
    assert!(
        text.contains(&format!("version=\"{version}\"}} 1")),
        "live version in /metrics:\n{text}"
    );
    assert_eq!(
        text.matches("dissuade_rules_info{").count(),
        1,
        "only the live version is exported:\n{text}"
    );
    produce(
        &bootstrap,
        &input,
        &[call("after", "13700001234", "13800000002", "", 60)],
    )
    .await;
    let tasks = consume(&bootstrap, &cfg.kafka.task_topic, 1, WAIT);
    assert_eq!(
        tasks.len(),
        1,
        "the call before the change made no task, the one after did"
    );
    let task: serde_json::Value = serde_json::from_slice(tasks[0].payload().unwrap()).unwrap();
    assert_eq!(task["event_id"], "after");
    assert_eq!(task["rules_version"], version.as_str());
    assert!(
        task["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == "reload_test_elderly"),
        "{task}"
    );

    // An invalid rule: refused, with the file, the line and the rule's id.
    std::fs::write(
        &cfg.rules.path,
        format!(
            "{shipped}{ELDERLY_RULE}\n[[rule]]\nid = \"broken\"\ndescription = \"d\"\n\
             reason = \"r\"\nscore = 10\nwhen = \"callee_age >= old\"\n"
        ),
    )
    .unwrap();
    wait_for("the invalid change to be refused", || {
        p.metrics.reloads("invalid") == 1
    });
    let error = p.reload.reload().await.unwrap_err();
    assert!(
        error.contains("rules.toml") && error.contains("broken") && error.contains("line"),
        "{error}"
    );
    assert!(p
        .metrics
        .render()
        .contains("dissuade_config_last_reload_successful 0"));
    assert_eq!(p.pipeline.rules().version(), version, "the live set stays");
    produce(
        &bootstrap,
        &input,
        &[call("kept", "13700001234", "13800000003", "", 60)],
    )
    .await;
    let tasks = consume(&bootstrap, &cfg.kafka.task_topic, 2, WAIT);
    assert_eq!(tasks.len(), 2, "the live set still makes tasks");

    // Caller-side windows need the by-caller stages, which start only with the service.
    std::fs::write(
        &cfg.rules.path,
        format!("{shipped}{ELDERLY_RULE}").replacen("enabled = false", "enabled = true", 1),
    )
    .unwrap();
    wait_for("the change to be refused", || {
        p.metrics.reloads("refused") >= 1
    });
    let error = p.reload.reload().await.unwrap_err();
    assert!(error.contains("restart"), "{error}");

    // The shipped file again: applied, and the service is healthy.
    std::fs::write(&cfg.rules.path, &shipped).unwrap();
    wait_for("the shipped file to be applied", || {
        p.metrics.reloads("applied") == 2
    });
    assert_eq!(p.reload.reload().await.unwrap(), Reloaded::Unchanged);
    assert!(p
        .metrics
        .render()
        .contains("dissuade_config_last_reload_successful 1"));
    p.stop();
}

/// A changed feature gets new windows, filled from the input before the new set is live: two
/// flagged callers before the reload and a third after it make "worked by several numbers",
/// which new empty windows would not see.
#[tokio::test(flavor = "multi_thread")]
async fn a_feature_change_refills_the_new_windows_from_the_input() {
    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 2);
    let dir = tempfile::tempdir().unwrap();
    cfg.rules.path = sample_rules_edited(dir.path(), |r| r);
    cfg.rules.watch_interval = Duration::ZERO;
    create_topics(&cfg).await;
    let p = RunningProcessor::start(&cfg);
    let bootstrap = broker.bootstrap();
    let input = cfg.kafka.input_topic.clone();
    let callee = "13800000077";

    produce(
        &bootstrap,
        &input,
        &[
            call("voip-1", "17000000001", callee, "\"voip\"", 300),
            call("voip-2", "17000000002", callee, "\"voip\"", 300),
        ],
    )
    .await;
    assert!(p.wait_consumed(2, WAIT));
    let before = p.pipeline.rules().version().to_owned();

    sample_rules_edited(dir.path(), |r| {
        assert!(r.contains("window = \"1h\""));
        r.replace("window = \"1h\"", "window = \"2h\"")
    });
    let reloaded = p.reload.reload().await.unwrap();
    assert!(
        matches!(
            reloaded,
            Reloaded::Applied {
                windows_rebuilt: true,
                ..
            }
        ),
        "{reloaded:?}"
    );
    wait_for("the processor to install the new set", || {
        p.pipeline.rules().version() != before
    });

    produce(
        &bootstrap,
        &input,
        &[call("voip-3", "17000000003", callee, "\"voip\"", 300)],
    )
    .await;
    let tasks = consume(&bootstrap, &cfg.kafka.task_topic, 1, WAIT);
    assert_eq!(tasks.len(), 1, "the third flagged caller made no task");
    let task: serde_json::Value = serde_json::from_slice(tasks[0].payload().unwrap()).unwrap();
    assert_eq!(task["event_id"], "voip-3");
    assert!(
        task["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule_id"] == "worked_by_several_numbers"),
        "{task}"
    );
    p.stop();
}

/// `dissuade rules --publish` checks a file and puts it on the rules topic: a running
/// instance applies it, one that starts afterwards runs it from its first event, and an
/// invalid record on the topic changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_rules_file_published_on_the_rules_topic_reaches_running_and_starting_instances() {
    use dissuade::service::Service;
    use tokio_util::sync::CancellationToken;

    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 1);
    cfg.lifecycle.enabled = false;
    let dir = tempfile::tempdir().unwrap();
    cfg.rules.path = sample_rules_edited(dir.path(), |r| r);
    let shipped = RuleSet::load(&cfg.rules.path).unwrap().version().to_owned();
    let published_dir = tempfile::tempdir().unwrap();
    let published = sample_rules_edited(published_dir.path(), |r| format!("{r}{ELDERLY_RULE}"));
    let version = RuleSet::load(&published).unwrap().version().to_owned();

    let shutdown = CancellationToken::new();
    let first = Service::start(&cfg, true, shutdown.clone()).await.unwrap();
    assert_eq!(first.pipeline.rules().version(), shipped);

    let publish = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dissuade"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args([
                "rules",
                "--publish",
                "--brokers",
                &broker.bootstrap(),
                "--file",
            ])
            .arg(file)
            .output()
            .unwrap()
    };
    let out = publish(&published);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the running instance to apply the published rules", || {
        first.pipeline.rules().version() == version
    });

    // A second instance reads the topic before its first event.
    let second = Service::start(&cfg, true, shutdown.clone()).await.unwrap();
    assert_eq!(second.pipeline.rules().version(), version);

    // The command refuses an invalid file; one written to the topic by other means is
    // refused by every instance, which keep the published set.
    let broken = published_dir.path().join("broken.toml");
    std::fs::write(&broken, "[[rule]]\nid = \"broken\"\n").unwrap();
    let out = publish(&broken);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.toml"), "{stderr}");
    produce(
        &broker.bootstrap(),
        &cfg.kafka.rules_topic,
        &[("rules".into(), b"[[rule]]\nid = \"broken\"\n".to_vec())],
    )
    .await;
    wait_for("both instances to refuse the invalid record", || {
        first.metrics.reloads("invalid") == 1 && second.metrics.reloads("invalid") == 1
    });
    assert_eq!(first.pipeline.rules().version(), version);
    assert_eq!(second.pipeline.rules().version(), version);
    // Editing the local rules file changes nothing while published rules are in force.
    std::fs::write(&cfg.rules.path, "not rules").unwrap();
    assert_eq!(first.reload.reload().await.unwrap(), Reloaded::Unchanged);
    std::fs::write(&cfg.rules.path, std::fs::read(&published).unwrap()).unwrap();

    // Caller-side windows: refused while running, as a restart is what applies them; an
    // instance that starts afterwards runs them, with the by-caller stages.
    let callers = published_dir.path().join("callers.toml");
    std::fs::write(
        &callers,
        std::fs::read_to_string(&published).unwrap().replacen(
            "enabled = false",
            "enabled = true",
            1,
        ),
    )
    .unwrap();
    let callers_version = RuleSet::load(&callers).unwrap().version().to_owned();
    let out = publish(&callers);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the running instances to refuse caller-side windows",
        || first.metrics.reloads("refused") == 1 && second.metrics.reloads("refused") == 1,
    );
    assert_eq!(first.pipeline.rules().version(), version);
    let restarted = Service::start(&cfg, true, shutdown.clone()).await.unwrap();
    assert_eq!(restarted.pipeline.rules().version(), callers_version);
    assert!(restarted.pipeline.caller_figures_in_records());

    shutdown.cancel();
    first.wait().await.unwrap();
    second.wait().await.unwrap();
    restarted.wait().await.unwrap();
}

/// Shadow rules score every event beside the live ones and make nothing: the event only the
/// shadow would make a task of is counted as added, per rule, in `/metrics` and `/shadow`.
#[tokio::test(flavor = "multi_thread")]
async fn shadow_rules_count_what_they_would_do_differently_and_make_nothing() {
    use dissuade::service::Service;
    use tokio_util::sync::CancellationToken;

    let broker = start_broker().await;
    let mut cfg = sample_config(&broker.bootstrap(), 1);
    cfg.lifecycle.enabled = false;
    cfg.metrics.listen = "127.0.0.1:0".into();
    let dir = tempfile::tempdir().unwrap();
    let candidate = sample_rules_edited(dir.path(), |r| format!("{r}{ELDERLY_RULE}"));
    cfg.rules.shadow = Some(candidate.clone());
    let shutdown = CancellationToken::new();
    let service = Service::start(&cfg, true, shutdown.clone()).await.unwrap();
    let bootstrap = broker.bootstrap();
    let input = cfg.kafka.input_topic.clone();

    produce(
        &bootstrap,
        &input,
        &[
            // Elderly, nothing else: only the shadow makes a task.
            call("elderly", "13700001234", "13800000011", "", 60),
            // Blacklisted: both make one, the shadow at a higher level.
            call("both", "13700001235", "13800000012", "\"blacklisted\"", 60),
        ],
    )
    .await;
    wait_for("both events through the shadow", || {
        service
            .metrics
            .render()
            .contains("dissuade_shadow_events_total{change=\"added\"} 1")
            && service
                .metrics
                .render()
                .contains("dissuade_shadow_events_total{change=\"level_up\"} 1")
    });
    let addr = service.metrics_addr.unwrap();
    let body = http_get(&format!("http://{addr}/shadow")).await;
    let shadow: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        shadow["shadow_version"],
        RuleSet::load(&candidate).unwrap().version()
    );
    let report = &shadow["report"];
    assert_eq!(report["events"], 2, "{report}");
    assert_eq!(report["tasks"], serde_json::json!([1, 2]), "{report}");
    assert_eq!(report["added"], 1);
    assert_eq!(report["level_up"], 1);
    let line = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == "reload_test_elderly")
        .unwrap();
    assert_eq!(line["fired"], serde_json::json!([0, 2]), "{line}");
    assert_eq!(line["added"], 1);
    assert_eq!(line["changed"], 1);

    // Only the live set's task reached the task topic.
    let tasks = consume(&bootstrap, &cfg.kafka.task_topic, 2, Duration::from_secs(5));
    assert_eq!(tasks.len(), 1);
    shutdown.cancel();
    service.wait().await.unwrap();
}

/// A plain HTTP/1.1 GET of `url` (`http://host:port/path`), returning the body.
async fn http_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The shadow rule file is watched beside the live set: an edited candidate replaces the
/// running one (its version shows it), an invalid one is refused with its line and the
/// candidate before it keeps running, and the live set is not touched either way.
#[test]
fn an_edited_shadow_file_replaces_the_candidate_and_an_invalid_one_keeps_it() {
    let mut cfg = sample_config("127.0.0.1:9", 1);
    let dir = tempfile::tempdir().unwrap();
    let candidate = sample_rules_edited(dir.path(), |r| r);
    cfg.rules.shadow = Some(candidate.clone());
    let (pipeline, _) = dissuade::pipeline::Pipeline::load(&cfg).unwrap();
    let shadow = dissuade::shadow::Shadow::load(&cfg, &pipeline)
        .unwrap()
        .expect("a shadow is configured");
    let first = shadow.version();
    pipeline.set_shadow(shadow);
    let pipeline = std::sync::Arc::new(pipeline);
    let live = pipeline.rules().version().to_owned();
    let metrics = std::sync::Arc::new(dissuade::metrics::Metrics::new(
        &pipeline.rules(),
        pipeline.grid().cells().len(),
    ));
    let mut reloader =
        dissuade::reload::Reloader::new(cfg.clone(), pipeline.clone(), metrics.clone(), None);
    let shadow_version = || pipeline.shadow().as_ref().unwrap().version();

    assert_eq!(reloader.reload_shadow(true), None, "unchanged bytes");
    let shipped = std::fs::read_to_string(&candidate).unwrap();
    std::fs::write(&candidate, format!("{shipped}{ELDERLY_RULE}")).unwrap();
    let Some(ShadowReloaded::Replaced { version }) = reloader.reload_shadow(true) else {
        panic!("the edited candidate was not taken");
    };
    assert_ne!(version, first);
    assert_eq!(shadow_version(), version);
    assert!(metrics.render().contains(&format!(
        "dissuade_shadow_rules_info{{version=\"{version}\"}} 1"
    )));

    std::fs::write(
        &candidate,
        format!("{shipped}\n[[rule]]\nid = \"broken\"\n"),
    )
    .unwrap();
    let Some(ShadowReloaded::Invalid { error }) = reloader.reload_shadow(true) else {
        panic!("the invalid candidate was not refused");
    };
    assert!(
        error.contains("rules.toml") && error.contains("broken"),
        "{error}"
    );
    assert_eq!(shadow_version(), version, "the candidate before stays");
    assert_eq!(
        pipeline.rules().version(),
        live,
        "the live set is not touched"
    );
}
