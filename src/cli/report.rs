use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::config::Config;
use crate::report::{self, Dimension, Format, Request, Window};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap servers (defaults to the config's `kafka.brokers`).
    #[arg(long)]
    brokers: Option<String>,
    /// Tasks created at or after this time: RFC 3339, a date (`2026-11-01`, midnight Beijing
    /// time), or a duration ago (`30d`, `12h`).
    #[arg(long, value_parser = parse_time)]
    from: Option<i64>,
    /// Tasks created before this time (same forms as `--from`); deadlines are judged at this
    /// time, or at the start of the report when absent.
    #[arg(long, value_parser = parse_time)]
    to: Option<i64>,
    /// Rows per district, station, grid cell or rule (a task counts under each rule that
    /// fired).
    #[arg(long, value_enum, default_value_t = By::Station)]
    by: By,
    #[arg(long, value_enum, default_value_t = OutFormat::Table)]
    format: OutFormat,
    /// Task topic (defaults to the config's `kafka.task_topic`).
    #[arg(long)]
    task_topic: Option<String>,
    /// Feedback topic (defaults to the config's `kafka.feedback_topic`).
    #[arg(long)]
    feedback_topic: Option<String>,
    /// Give up when no record arrives for this long while some are still expected.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    stall_timeout: Duration,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum By {
    District,
    Station,
    Grid,
    Rule,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum OutFormat {
    Table,
    Csv,
    Json,
    StationList,
}

/// Beijing time: the centre's and the stations' day.
const BEIJING: i32 = 8 * 3600;

fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let offset = chrono::FixedOffset::east_opt(BEIJING).expect("a valid offset");
        return d
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(offset).single())
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| format!("`{s}` is not a date"));
    }
    humantime::parse_duration(s)
        .map(|ago| super::now_ms() - i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))
        .map_err(|_| {
            format!("`{s}` is not an RFC 3339 time, a date (2026-11-01) or a duration ago (30d)")
        })
}

/// Station id → district code, from the grid map's stations file.
fn districts(config: &Config) -> anyhow::Result<HashMap<String, String>> {
    #[derive(serde::Deserialize)]
    struct Station {
        station_id: String,
        district_code: String,
    }
    let path = config.resolve(&config.grid.stations);
    let mut reader =
        csv::Reader::from_path(&path).with_context(|| format!("reading {}", path.display()))?;
    reader
        .deserialize::<Station>()
        .map(|s| s.map(|s| (s.station_id, s.district_code)))
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", path.display()))
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let brokers = args.brokers.unwrap_or_else(|| config.kafka.brokers.clone());
    anyhow::ensure!(
        brokers != crate::config::EMBEDDED,
        "`report` reads a running cluster: pass --brokers HOST:PORT"
    );
    if let (Some(from), Some(to)) = (args.from, args.to) {
        anyhow::ensure!(from < to, "--from must be before --to");
    }
    let req = Request {
        client: report::client_config(&config.kafka, &brokers),
        task_topic: args
            .task_topic
            .unwrap_or_else(|| config.kafka.task_topic.clone()),
        feedback_topic: args
            .feedback_topic
            .unwrap_or_else(|| config.kafka.feedback_topic.clone()),
        window: Window {
            from_ms: args.from,
            to_ms: args.to,
        },
        by: match args.by {
            By::District => Dimension::District,
            By::Station => Dimension::Station,
            By::Grid => Dimension::Grid,
            By::Rule => Dimension::Rule,
        },
        format: match args.format {
            OutFormat::Table => Format::Table,
            OutFormat::Csv => Format::Csv,
            OutFormat::Json => Format::Json,
            OutFormat::StationList => Format::StationList,
        },
        as_of_ms: args.to.unwrap_or_else(super::now_ms),
        districts: districts(config)?,
        stall_timeout: args.stall_timeout,
    };
    let interactive = std::io::stderr().is_terminal();
    // On a terminal, one line per topic rewritten in place; in a log, a line each time.
    let open_line: std::cell::RefCell<Option<String>> = Default::default();
    let mut progress = |topic: &str, read: u64, total: u64| {
        if !interactive {
            eprintln!("reading {topic}: {read} / {total} records");
            return;
        }
        let mut open = open_line.borrow_mut();
        if open.as_deref().is_some_and(|t| t != topic) {
            eprintln!();
        }
        eprint!("\rreading {topic}: {read} / {total} records");
        *open = Some(topic.to_string());
    };
    let mut out = super::stdout();
    let summary = report::run(&req, &mut out, &mut progress).context("building the report")?;
    out.flush()?;
    if open_line.borrow().is_some() {
        eprintln!();
    }
    eprintln!(
        "read {} task-topic records ({} skipped) and {} feedback records ({} skipped){}; {} \
         tasks in the window",
        summary.task_records,
        summary.skipped_task_records,
        summary.feedback_records,
        summary.skipped_feedback_records,
        if summary.no_feedback_topic {
            format!(" (topic {} does not exist yet)", req.feedback_topic)
        } else {
            String::new()
        },
        summary.tasks_in_window
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_beijing_dates_or_durations_ago() {
        assert_eq!(parse_time("2026-11-01T00:00:00Z"), Ok(1_793_491_200_000));
        // Midnight in Beijing is 16:00 UTC the day before.
        assert_eq!(
            parse_time("2026-11-01"),
            Ok(1_793_491_200_000 - 8 * 3_600_000)
        );
        let ago = parse_time("1h").unwrap();
        assert!((super::super::now_ms() - 3_600_000 - ago).abs() < 5_000);
        assert!(parse_time("last month").is_err());
    }
}
