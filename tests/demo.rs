//! `dissuade demo` closes the loop: the simulated officers' feedback reaches people, tasks
//! nobody answers escalate, and nothing the officers write is dead-lettered.
#![cfg(feature = "embedded-broker")]

/// The number after `label` at the start of a line of the demo's totals.
fn total(stdout: &str, label: &str) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` in the totals:\n{stdout}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in `{line}`"))
}

#[test]
fn a_short_demo_with_officers_reaches_people_escalates_and_rejects_no_feedback() {
    // SLAs at 0.5 %: a critical task is due after 3 s, a high one after 9 s, so tasks nobody
    // answers escalate within the 12 s of traffic. A low rate keeps the lifecycle current on
    // a busy machine.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dissuade"))
        .args([
            "demo",
            "--rate",
            "300",
            "--duration",
            "12s",
            "--sla-scale",
            "0.005",
            "--every",
            "1",
        ])
        .env("DISSUADE__METRICS__LISTEN", "\"127.0.0.1:0\"")
        .env("DISSUADE__WEB__LISTEN", "\"127.0.0.1:0\"")
        .env("DISSUADE__KAFKA__EMBEDDED_PORT", "0")
        .env("RUST_LOG", "warn")
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
        stderr.contains("loop | feedback"),
        "no loop line:\n{stderr}"
    );
    assert!(total(&stdout, "feedback written") > 0, "{stdout}");
    assert!(total(&stdout, "people reached") > 0, "{stdout}");
    assert!(total(&stdout, "escalated") > 0, "{stdout}");
    // The officers key by the assignee id, report only as the assignee, a copied officer or
    // the desk an escalation went to, and let one actor close a task: nothing is rejected.
    // `unknown_task` would need feedback to wait longer than lifecycle.unknown_task_grace
    // (30 s, longer than this demo) for its task.
    assert_eq!(total(&stdout, "feedback rejected"), 0, "{stdout}");
}
