use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::kafka::embedded::{EmbeddedBroker, Retention};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Port on 127.0.0.1 (default: `kafka.embedded_port`; 0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
}

/// The embedded broker alone, with the configured retention, until SIGINT or SIGTERM. The
/// first line on stdout is `listening HOST:PORT`.
pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let k = &config.kafka;
    let retention = Retention::configured(k);
    let port = args.port.unwrap_or(k.embedded_port);
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let broker = EmbeddedBroker::start(port, retention).await?;
        let mut out = super::stdout();
        writeln!(out, "listening {}", broker.bootstrap())?;
        out.flush()?;
        info!(bootstrap = %broker.bootstrap(), ?retention, "embedded broker running; SIGINT or SIGTERM stops it");
        let stop = CancellationToken::new();
        tokio::spawn(super::run::stop_on_signal(stop.clone()));
        stop.cancelled().await;
        Ok(ExitCode::SUCCESS)
    })
}
