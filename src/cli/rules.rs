//! `dissuade rules`: the loaded rule set as analysts need to see it: each rule's id, score,
//! state and reason, the number lists, the windowed features, the level thresholds and the version tasks are
//! stamped with.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use crate::config::Config;
use crate::rules::{Level, RuleSet};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The rule file to read (default: the config's `rules.path`).
    #[arg(long, value_name = "FILE")]
    file: Option<std::path::PathBuf>,
    /// Check the file, then publish it on `kafka.rules_topic`: every running instance checks
    /// it again and runs it in place of its rules file (an invalid one changes nothing).
    #[arg(long)]
    publish: bool,
    /// Bootstrap servers to publish to (default: `kafka.brokers`; with the embedded broker,
    /// the one a `dissuade run` on this machine listens on).
    #[arg(long, value_name = "HOST:PORT", requires = "publish")]
    brokers: Option<String>,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let path = args
        .file
        .clone()
        .unwrap_or_else(|| config.resolve(&config.rules.path));
    if args.publish {
        return publish(config, &args, &path);
    }
    let rules = RuleSet::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let mut out = super::stdout();
    let levels = [Level::Low, Level::Medium, Level::High, Level::Critical];
    let t = rules.thresholds();
    if args.json {
        let v = json!({
            "version": rules.version(),
            "levels": levels.iter().map(|&l| (l.as_str(), t.min_score(l))).collect::<std::collections::BTreeMap<_, _>>(),
            "dispatch_min_level": config.dispatch.min_level,
            "rules": rules.rules().iter().map(|r| json!({
                "id": r.id,
                "score": r.score,
                "enabled": r.enabled,
                "description": r.description,
                "reason": r.reason_template,
            })).collect::<Vec<_>>(),
            "features": rules.features().iter().map(|f| json!({
                "id": f.id,
                "key": f.key,
                "aggregate": f.aggregate,
                "window": humantime::format_duration(f.window).to_string(),
                "where": f.filter,
                "description": f.description,
                "kept": f.used,
            })).collect::<Vec<_>>(),
            "lists": rules.lists().iter().map(|l| json!({
                "id": l.id,
                "description": l.description,
                "file": l.file.display().to_string(),
                "entries": l.len(),
            })).collect::<Vec<_>>(),
            "windows": {
                "allowed_lateness": humantime::format_duration(rules.window_limits().allowed_lateness).to_string(),
                "max_calls_per_key": rules.window_limits().max_calls_per_key,
            },
        });
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(out, "rules {} ({})", path.display(), rules.version())?;
    let thresholds: Vec<String> = levels
        .iter()
        .filter_map(|&l| t.min_score(l).map(|s| format!("{} {s}", l.as_str())))
        .collect();
    writeln!(
        out,
        "levels: {}; tasks from {} up",
        thresholds.join(", "),
        config.dispatch.min_level.as_str()
    )?;
    let width = rules.rules().iter().map(|r| r.id.len()).max().unwrap_or(2);
    writeln!(out, "{:width$}  score  state     description", "id")?;
    for r in rules.rules() {
        writeln!(
            out,
            "{:width$}  {:>5}  {:8}  {}",
            r.id,
            r.score,
            if r.enabled { "enabled" } else { "disabled" },
            r.description
        )?;
    }
    if !rules.lists().is_empty() {
        writeln!(out, "\nlists:")?;
        let width = rules.lists().iter().map(|l| l.id.len()).max().unwrap_or(2);
        for l in rules.lists() {
            writeln!(
                out,
                "{:width$}  {} entries from {}: {}",
                l.id,
                l.len(),
                l.file.display(),
                l.description
            )?;
        }
    }
    if !rules.features().is_empty() {
        let limits = rules.window_limits();
        writeln!(
            out,
            "\nfeatures (late calls allowed {}; at most {} calls per key; `unused`: no enabled \
             rule reads it, so no window is kept for it):",
            humantime::format_duration(limits.allowed_lateness),
            limits.max_calls_per_key
        )?;
        let width = rules
            .features()
            .iter()
            .map(|f| f.id.len())
            .max()
            .unwrap_or(2);
        for f in rules.features() {
            let filter = f
                .filter
                .as_deref()
                .map(|w| format!(" where {w}"))
                .unwrap_or_default();
            writeln!(
                out,
                "{:width$}  {:6}  {} of the {} over {}{filter}: {}",
                f.id,
                if f.used { "kept" } else { "unused" },
                f.aggregate.as_str(),
                f.key.as_str(),
                humantime::format_duration(f.window),
                f.description
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Publishes the rule file on the rules topic after the checks a reload makes of the rules.
fn publish(config: &Config, args: &Args, path: &Path) -> anyhow::Result<ExitCode> {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // Instances read the list files a published set names beside their own rules file.
    let local = config.resolve(&config.rules.path);
    let rules = RuleSet::from_toml_str_in(
        &text,
        &path.display().to_string(),
        local.parent().unwrap_or(Path::new(".")),
    )
    .with_context(|| {
        format!(
            "checking {} (list files as found beside {})",
            path.display(),
            local.display()
        )
    })?;
    config.check_scripts(&rules.fraud_types().collect::<Vec<_>>())?;
    let k = &config.kafka;
    let brokers = match &args.brokers {
        Some(b) => b.clone(),
        None if k.is_embedded() => format!("127.0.0.1:{}", k.embedded_port),
        None => k.brokers.clone(),
    };
    let producer: FutureProducer = crate::kafka::producer_config(k, &brokers)
        .set("message.timeout.ms", "30000")
        .create()
        .context("creating the producer")?;
    let record = FutureRecord::to(&k.rules_topic)
        .key(crate::kafka::rules_topic::KEY)
        .payload(&text);
    let delivered = producer
        .send_result(record)
        .map_err(|(e, _)| e)
        .map(futures::executor::block_on);
    let failed = |e: rdkafka::error::KafkaError| {
        anyhow::anyhow!("publishing to {} at {brokers}: {e}", k.rules_topic)
    };
    match delivered {
        Ok(Ok(Ok(_))) => {}
        Ok(Ok(Err((e, _)))) | Err(e) => return Err(failed(e)),
        Ok(Err(_)) => return Err(failed(rdkafka::error::KafkaError::Canceled)),
    }
    writeln!(
        super::stdout(),
        "published {} ({}) on {} at {brokers}; each instance logs and counts whether it applied it \
         (dissuade_config_reloads_total, dissuade_rules_info)",
        path.display(),
        rules.version(),
        k.rules_topic
    )?;
    Ok(ExitCode::SUCCESS)
}
