//! The shipped Prometheus alerting rules (`docker/prometheus/alerts.yml`): their unit tests
//! pass under `promtool test rules`, and every dissuade metric they read is one the service
//! exports.

use std::path::Path;
use std::process::Command;

fn prometheus_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/prometheus")
}

/// Runs `promtool ARGS` in the Prometheus directory; `None` when promtool is not installed.
fn promtool(args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(prometheus_dir())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

#[test]
fn the_alerting_rules_pass_their_promtool_unit_tests() {
    let Some((ok, text)) = promtool(&["check", "rules", "alerts.yml"]) else {
        println!(
            "promtool: skipped: promtool not installed (apt-get install prometheus, or \
             scripts/install-test-deps)"
        );
        return;
    };
    assert!(ok, "promtool check rules:\n{text}");
    let (ok, text) = promtool(&["test", "rules", "alerts.test.yml"]).expect("promtool runs");
    assert!(ok, "promtool test rules:\n{text}");
    let (ok, text) = promtool(&["check", "config", "prometheus.yml"]).expect("promtool runs");
    assert!(ok, "promtool check config:\n{text}");
}

#[test]
fn every_metric_an_alert_reads_is_exported() {
    let rules = std::fs::read_to_string(prometheus_dir().join("alerts.yml")).unwrap();
    let config = dissuade::config::Config::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dissuade.toml"),
    )
    .unwrap();
    let (pipeline, _) = dissuade::pipeline::Pipeline::load(&config).unwrap();
    let metrics = dissuade::metrics::Metrics::new(&pipeline.rules(), 1);
    // Per-partition lag appears once a partition's lag is known.
    metrics.consumer_lag.with_label_values(&["0"]).set(0);
    let exported = metrics.render();
    let mut read = Vec::new();
    for line in rules
        .lines()
        .filter(|l| l.trim_start().starts_with("expr:"))
    {
        let mut rest = line;
        while let Some(at) = rest.find("dissuade_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            read.push(name);
        }
    }
    assert!(read.len() >= 10, "{read:?}");
    for name in read {
        let family = name.trim_end_matches("_bucket");
        assert!(
            exported.contains(&format!("# TYPE {family} ")),
            "alerts.yml reads {name}, which the service does not export"
        );
    }
}
