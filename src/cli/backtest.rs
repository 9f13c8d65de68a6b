//! `dissuade backtest`: replays history through the baseline and a candidate rule set and
//! prints what the candidate would change, and, with labels, each set's precision and
//! recall per rule and per level (see [`crate::backtest`]).

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;

use crate::backtest::{compare, replay, share, FeedbackLabels, Report};
use crate::config::Config;
use crate::pipeline::Pipeline;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The events to replay: JSON lines, one event each, in the order they happened.
    #[arg(long, required_unless_present = "topic", conflicts_with = "topic")]
    events: Option<PathBuf>,
    /// Or read them from this topic of `kafka.brokers`, every partition from its beginning to
    /// its current end, ordered by record time.
    #[arg(long)]
    topic: Option<String>,
    /// The candidate rule file.
    #[arg(long)]
    rules: PathBuf,
    /// The rule file to compare with (default: the config's `rules.path`).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// The truth about the events: JSON lines `{"event_id": ..., "fraud": true|false}`, as
    /// `dissuade generate --labels` writes them.
    #[arg(long, conflicts_with = "labels_from_feedback")]
    labels: Option<PathBuf>,
    /// Take the truth from the officers instead: the outcome each task on `kafka.task_topic`
    /// was closed with on `kafka.feedback_topic` (reached or already defrauded: fraud; false
    /// alarm: not fraud), read from `kafka.brokers`. Only events that became closed tasks
    /// are labelled.
    #[arg(long)]
    labels_from_feedback: bool,
    /// Print the report as one JSON object instead of tables.
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let events = match (&args.events, &args.topic) {
        (Some(path), _) => read_events(path)?,
        (None, Some(topic)) => read_topic(config, topic)?,
        (None, None) => anyhow::bail!("give --events FILE or --topic TOPIC"),
    };
    let labels = match &args.labels {
        Some(path) => Some(read_labels(path)?),
        None if args.labels_from_feedback => Some(feedback_labels(config)?),
        None => None,
    };
    // Files named on the command line are relative to the working directory; the config's
    // rules path to the config file.
    let cwd = std::env::current_dir().context("the working directory")?;
    let baseline_path = match &args.baseline {
        Some(p) => cwd.join(p),
        None => config.resolve(&config.rules.path),
    };
    let load = |path: &Path| -> anyhow::Result<Pipeline> {
        let mut c = config.clone();
        c.rules.path = cwd.join(path);
        Ok(Pipeline::load(&c)
            .with_context(|| format!("loading the pipeline with {}", path.display()))?
            .0)
    };
    let pipelines = [load(&baseline_path)?, load(&args.rules)?];
    let now = super::now_ms();
    let verdicts = [
        replay(&pipelines[0], events.iter().map(Vec::as_slice), now),
        replay(&pipelines[1], events.iter().map(Vec::as_slice), now),
    ];
    let ids: Vec<Option<String>> = events.iter().map(|e| event_id(e)).collect();
    let report = compare(
        [&pipelines[0].rules(), &pipelines[1].rules()],
        [&verdicts[0], &verdicts[1]],
        &ids,
        labels.as_ref(),
    );
    let mut out = super::stdout();
    if args.json {
        let v = serde_json::json!({
            "baseline": { "file": baseline_path.display().to_string(), "version": pipelines[0].rules().version() },
            "candidate": { "file": args.rules.display().to_string(), "version": pipelines[1].rules().version() },
            "report": report,
        });
        serde_json::to_writer(&mut out, &v)?;
        writeln!(out)?;
    } else {
        let names = [
            format!(
                "{} ({})",
                baseline_path.display(),
                pipelines[0].rules().version()
            ),
            format!(
                "{} ({})",
                args.rules.display(),
                pipelines[1].rules().version()
            ),
        ];
        print_tables(&mut out, &report, &names, labels.is_some())?;
    }
    out.flush()?;
    eprintln!(
        "backtest: {} events through two rule sets in {:.1}s",
        report.events,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn read_events(path: &Path) -> anyhow::Result<Vec<Vec<u8>>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut events = Vec::new();
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if !line.iter().all(u8::is_ascii_whitespace) {
            events.push(line);
        }
    }
    Ok(events)
}

fn read_topic(config: &Config, topic: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::message::Message;

    use crate::kafka::store::{partition_count, Reader};

    anyhow::ensure!(
        !config.kafka.is_embedded(),
        "--topic reads a running cluster: set kafka.brokers (or DISSUADE__KAFKA__BROKERS)"
    );
    let client = crate::kafka::consumer_config(&config.kafka, &config.kafka.brokers);
    let timeout = std::time::Duration::from_secs(30);
    let probe: BaseConsumer = client.create().context("connecting to the cluster")?;
    let partitions = partition_count(&probe, topic, timeout)?
        .with_context(|| format!("topic {topic} does not exist"))?;
    let reader = Reader::new(&client, "backtest events", topic)?;
    let mut records: Vec<(i64, Vec<u8>)> = Vec::new();
    let all: Vec<i32> = (0..partitions as i32).collect();
    reader.read_to_end(&all, std::time::Duration::from_secs(3600), |m| {
        let at = m.timestamp().to_millis().unwrap_or(0);
        records.push((at, m.payload().unwrap_or_default().to_vec()));
    })?;
    records.sort_by_key(|(at, _)| *at);
    Ok(records.into_iter().map(|(_, p)| p).collect())
}

/// Labels from the task and feedback topics (see [`FeedbackLabels`]).
fn feedback_labels(config: &Config) -> anyhow::Result<HashMap<String, bool>> {
    use crate::report::record::FeedbackRecord;
    use crate::report::{read, TaskTopicRecord};
    use rdkafka::consumer::BaseConsumer;

    let k = &config.kafka;
    anyhow::ensure!(
        !k.is_embedded(),
        "--labels-from-feedback reads a running cluster: set kafka.brokers (or DISSUADE__KAFKA__BROKERS)"
    );
    let client = crate::report::client_config(k, &k.brokers);
    let consumer: BaseConsumer = client.create().context("connecting to the cluster")?;
    let timeout = std::time::Duration::from_secs(30);
    let tasks = read::snapshot(&consumer, &k.task_topic, timeout)?;
    let feedback = read::snapshot(&consumer, &k.feedback_topic, timeout)?;
    let mut labels = FeedbackLabels::default();
    read::read(
        &consumer,
        &tasks,
        timeout,
        &mut |payload| match TaskTopicRecord::decode(payload) {
            Ok(TaskTopicRecord::Task(t)) => labels.add_task(&t),
            Ok(TaskTopicRecord::Escalation(e)) => labels.add_escalation(&e),
            Err(_) => {}
        },
        &mut |_, _| {},
    )?;
    read::read(
        &consumer,
        &feedback,
        timeout,
        &mut |payload| {
            if let Ok(fb) = FeedbackRecord::decode(payload) {
                labels.add_feedback(&fb);
            }
        },
        &mut |_, _| {},
    )?;
    let labels = labels.labels();
    eprintln!(
        "labels from feedback: {} events of closed tasks ({} fraud, {} false alarms)",
        labels.len(),
        labels.values().filter(|f| **f).count(),
        labels.values().filter(|f| !**f).count()
    );
    Ok(labels)
}

fn read_labels(path: &Path) -> anyhow::Result<HashMap<String, bool>> {
    #[derive(serde::Deserialize)]
    struct Line {
        event_id: String,
        fraud: bool,
    }
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut labels = HashMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Line = serde_json::from_str(&line).with_context(|| {
            format!(
                "{}:{}: not a label (want {{\"event_id\": ..., \"fraud\": true|false}})",
                path.display(),
                n + 1
            )
        })?;
        labels.insert(l.event_id, l.fraud);
    }
    Ok(labels)
}

fn event_id(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        event_id: String,
    }
    serde_json::from_slice::<Id>(payload)
        .ok()
        .map(|i| i.event_id)
}

fn ratio(part: u64, whole: u64) -> String {
    share(part, whole).map_or_else(|| "-".into(), |s| format!("{s:.3}"))
}

fn print_tables(
    out: &mut impl Write,
    r: &Report,
    names: &[String; 2],
    labelled: bool,
) -> std::io::Result<()> {
    writeln!(out, "baseline:  {}", names[0])?;
    writeln!(out, "candidate: {}", names[1])?;
    writeln!(
        out,
        "events: {} ({} rejected by both)",
        r.events, r.rejected
    )?;
    writeln!(
        out,
        "tasks: baseline {}, candidate {}: {} added, {} removed, {} up a level, {} down",
        r.tasks[0], r.tasks[1], r.added, r.removed, r.level_up, r.level_down
    )?;
    if r.from_earlier_events > 0 {
        writeln!(
            out,
            "  of those changes, {} on events every rule scored alike: earlier tasks made the \
             difference (suppression, upgrades)",
            r.from_earlier_events
        )?;
    }
    if labelled {
        writeln!(
            out,
            "\nlabels: {} events labelled, {} fraud, {} people called by fraud",
            r.labelled, r.fraud_events, r.fraud_people
        )?;
        writeln!(out, "{:<38} {:>12} {:>12}", "", "baseline", "candidate")?;
        writeln!(
            out,
            "{:<38} {:>12} {:>12}",
            "task precision (tasks on fraud)",
            ratio(r.tasks_on_fraud[0], r.tasks[0]),
            ratio(r.tasks_on_fraud[1], r.tasks[1])
        )?;
        writeln!(
            out,
            "{:<38} {:>12} {:>12}",
            "people reached (fraud victims)",
            ratio(r.fraud_people_reached[0], r.fraud_people),
            ratio(r.fraud_people_reached[1], r.fraud_people)
        )?;
        for l in &r.levels {
            writeln!(
                out,
                "{:<38} {:>12} {:>12}",
                format!("level >= {}: precision / recall", l.level),
                format!(
                    "{}/{}",
                    ratio(l.fraud[0], l.detected[0]),
                    ratio(l.fraud[0], r.fraud_events)
                ),
                format!(
                    "{}/{}",
                    ratio(l.fraud[1], l.detected[1]),
                    ratio(l.fraud[1], r.fraud_events)
                ),
            )?;
        }
    }
    writeln!(out)?;
    write!(
        out,
        "{:<36} {:>9} {:>15} {:>7} {:>7} {:>7}",
        "rule", "score b/c", "fired b/c", "added", "removed", "level"
    )?;
    if labelled {
        write!(out, " {:>13} {:>13}", "precision b/c", "recall b/c")?;
    }
    writeln!(out)?;
    let score = |s: Option<i32>| s.map_or_else(|| "-".into(), |s| s.to_string());
    for l in &r.rules {
        write!(
            out,
            "{:<36} {:>9} {:>15} {:>7} {:>7} {:>7}",
            l.id,
            format!("{}/{}", score(l.score[0]), score(l.score[1])),
            format!("{}/{}", l.fired[0], l.fired[1]),
            l.added,
            l.removed,
            l.changed
        )?;
        if labelled {
            write!(
                out,
                " {:>13} {:>13}",
                format!(
                    "{}/{}",
                    ratio(l.fraud[0], l.fired[0]),
                    ratio(l.fraud[1], l.fired[1])
                ),
                format!(
                    "{}/{}",
                    ratio(l.fraud[0], r.fraud_events),
                    ratio(l.fraud[1], r.fraud_events)
                ),
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}
