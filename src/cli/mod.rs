//! Command-line glue: argument parsing and one function per subcommand. Errors get their
//! context here (`anyhow`); the library below returns typed errors.

mod bench;
mod check;
mod demo;
mod gen_grid;
mod generate;
mod locate;
mod run;
mod score;

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
    /// Score events (JSON lines on stdin) and print tasks (JSON lines on stdout).
    Score(score::Args),
    /// Build a police-grid map (cells, stations, roster, cell table) from a district file.
    GenGrid(gen_grid::Args),
    /// Run the service: consume events from Kafka, produce tasks and dead letters.
    Run(run::Args),
    /// Start the embedded broker, generate realistic traffic, run the service, show it live.
    Demo(demo::Args),
    /// Write synthetic events to a Kafka cluster (load testing).
    Generate(generate::Args),
    /// Benchmark end to end through Kafka: throughput against a pass-through baseline, latency.
    Bench(bench::Args),
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(&cli.config, args),
        Command::Locate(args) => locate::run(&load_config(&cli.config)?, args),
        Command::Score(args) => score::run(&load_config(&cli.config)?, args),
        Command::GenGrid(args) => gen_grid::run(args),
        Command::Run(args) => run::run(load_config(&cli.config)?, args),
        Command::Demo(args) => demo::run(load_config(&cli.config)?, args),
        Command::Generate(args) => generate::run(load_config(&cli.config)?, args),
        Command::Bench(args) => bench::run(load_config(&cli.config)?, args),
    }
}

pub(crate) fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("loading configuration {}", path.display()))
}

/// Logs go to stderr (stdout carries data); `RUST_LOG` filters. By default this crate logs
/// at `info` and its dependencies (the embedded broker logs every request at `info`) at
/// `warn`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,dissuade=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
