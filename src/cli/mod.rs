//! Command-line glue: argument parsing and one function per subcommand. Errors get their
//! context here (`anyhow`); the library below returns typed errors.

mod backtest;
mod bench;
#[cfg(feature = "embedded-broker")]
mod broker;
mod check;
mod demo;
mod gen_grid;
mod generate;
mod locate;
mod logging;
mod report;
mod rules;
mod run;
mod score;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_PATH};

#[derive(Debug, Parser)]
#[command(
    name = "dissuade",
    version,
    about = "Anti-fraud early warning: score suspicious calls, \
    find the police grid, dispatch point-to-point dissuasion tasks"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, default_value = DEFAULT_PATH, env = "DISSUADE_CONFIG")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate every configuration file and print a summary.
    Check(check::Args),
    /// Find the police grid cell for a point (or for JSON lines on stdin).
    Locate(locate::Args),
    /// Score events (JSON lines on stdin) and print tasks (JSON lines on stdout), or, with
    /// `--explain`, what became of each event and why.
    Score(score::Args),
    /// List the rules with their ids, scores and state, and the level thresholds.
    Rules(rules::Args),
    /// Replay history through the configured rules and a candidate: tasks added, removed and
    /// changed in level per rule; with labels, precision and recall per rule and level.
    Backtest(backtest::Args),
    /// Build a police-grid map (cells, stations, roster, cell table) from a district file.
    GenGrid(gen_grid::Args),
    /// Run the service: consume events from Kafka, produce tasks and dead letters.
    Run(run::Args),
    /// Start the embedded broker, generate realistic traffic, run the service, show it live.
    Demo(demo::Args),
    /// Write synthetic events to a Kafka cluster (load testing), or labelled ones to a file
    /// (`--out`) for `dissuade backtest`.
    Generate(generate::Args),
    /// Benchmark end to end through Kafka: throughput against a pass-through baseline, latency.
    Bench(bench::Args),
    /// The reach figures per district, station, grid cell or rule, read from the task and
    /// feedback topics; or the per-station task list.
    Report(report::Args),
    /// Make a sign-in token for the desk and officer views, and the config entry admitting it.
    Token(token::Args),
    /// Run the embedded Kafka-compatible broker alone on loopback (for development, other
    /// tools and tests).
    #[cfg(feature = "embedded-broker")]
    Broker(broker::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let result = match cli.command {
        Command::Check(args) => check::run(&cli.config, args),
        Command::Locate(args) => locate::run(&load_config(&cli.config)?, args),
        Command::Score(args) => score::run(&load_config(&cli.config)?, args),
        Command::Rules(args) => rules::run(&load_config(&cli.config)?, args),
        Command::Backtest(args) => backtest::run(&load_config(&cli.config)?, args),
        Command::GenGrid(args) => gen_grid::run(args),
        Command::Run(args) => run::run(load_config(&cli.config)?, args),
        Command::Demo(args) => demo::run(load_config(&cli.config)?, args),
        Command::Generate(args) => generate::run(load_config(&cli.config)?, args),
        Command::Bench(args) => bench::run(load_config(&cli.config)?, args),
        Command::Report(args) => report::run(&load_config(&cli.config)?, args),
        Command::Token(args) => token::run(&load_config(&cli.config)?, args),
        #[cfg(feature = "embedded-broker")]
        Command::Broker(args) => broker::run(load_config(&cli.config)?, args),
    };
    match result {
        // Like any Unix filter: `dissuade check | head -1` is a normal end, not an error.
        Err(e) if stdout_closed(&e) => Ok(ExitCode::SUCCESS),
        other => other,
    }
}

/// Standard output, where every command writes its data (buffered: flush at the end). A
/// reader that goes away (`| head`) turns into an error that [`run`] treats as a normal end;
/// `println!` would panic instead.
pub(crate) fn stdout() -> Stdout {
    Stdout(std::io::BufWriter::new(std::io::stdout().lock()))
}

pub(crate) struct Stdout(std::io::BufWriter<std::io::StdoutLock<'static>>);

/// Marks the error of a write to a standard output whose reader has gone.
#[derive(Debug, thiserror::Error)]
#[error("standard output closed by its reader")]
struct StdoutClosed;

fn mark_closed(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(mark_closed)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(mark_closed)
    }
}

/// Whether `e` came from writing to a closed standard output (and not from some other
/// broken pipe, such as a network connection).
fn stdout_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

pub(crate) fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("loading configuration {}", path.display()))
}

/// What went wrong, for the one line a failed command ends with: the error and its causes,
/// each said once. Most of this crate's errors end with their cause's message (so that a log
/// line showing only the error is whole), which `{:#}` would print a second time.
pub fn error_message(e: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if said.ends_with(&text) {
            continue;
        }
        if !said.is_empty() {
            said.push_str(": ");
        }
        said.push_str(&text);
    }
    said
}

/// Sets up logging: see [`logging`].
pub fn init_logging() {
    logging::init();
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_message_says_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = anyhow::Error::new(crate::config::ConfigError::Read {
            path: "x.toml".into(),
            source: io,
        })
        .context("loading configuration x.toml");
        assert_eq!(
            error_message(&e),
            "loading configuration x.toml: x.toml: cannot read: no such file"
        );
        // A cause that its error does not repeat is kept.
        let e = anyhow::anyhow!("no such file").context("reading x");
        assert_eq!(error_message(&e), "reading x: no such file");
    }
}
