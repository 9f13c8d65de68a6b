use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::service::Service;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Create the input, task and dead-letter topics if they are missing (always done for
    /// the embedded broker).
    #[arg(long)]
    create_topics: bool,
}

pub fn run(config: Config, args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let service = Service::start(&config, args.create_topics, shutdown.clone())
            .await
            .context("starting the service")?;
        for w in &service.warnings {
            warn!(%w, "repaired grid polygon");
        }
        info!(bootstrap = %service.bootstrap, "dissuade running; SIGINT or SIGTERM stops it");
        tokio::spawn(stop_on_signal(shutdown));
        service.wait().await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM; a second signal exits at once.
pub(crate) async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = shutdown.cancelled() => return,
    }
    info!("stopping: finishing in-flight work (a second signal stops at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    warn!("second signal: exiting without draining");
    std::process::exit(130);
}
