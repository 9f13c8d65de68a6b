//! The duty desk's and the officers' views in the browser (docs/web.md): [`board`] is the
//! read model of the task and feedback topics, [`feed`] keeps it current, [`map`] draws the
//! grid, [`views`] keeps what the views take from the grid current across reloads, [`auth`]
//! decides who sees what, and [`api`] serves the pages and their JSON.

pub mod api;
pub mod auth;
pub mod board;
mod feed;
pub mod map;
pub mod views;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rdkafka::producer::FutureProducer;
use thiserror::Error;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::grid::GridMap;
use crate::metrics::Metrics;

use api::Web;
use auth::{Sessions, TokenError, Tokens};
use board::Board;

#[derive(Debug, Error)]
pub enum WebError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("web views: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("binding the web views on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Starts the views on `config.web.listen` (which must not be empty): returns the bound
/// address. `grid` gives the grid map in use (a reload may swap it). They stop when
/// `shutdown` is cancelled.
pub async fn serve(
    config: &Config,
    bootstrap: &str,
    grid: impl Fn() -> Arc<GridMap> + Send + Sync + 'static,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<SocketAddr, WebError> {
    let grid = views::grid_source(grid);
    let tokens = Tokens::new(&config.web.tokens, &grid.grid())?;
    if tokens.is_empty() {
        warn!("web.tokens is empty: the views are served but nobody can sign in (`dissuade token` makes one)");
    }
    let (views, _) = grid.current();
    let districts = views.districts.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let board = Arc::new(Mutex::new(Board::new(now, districts)));
    let (changes, _) = broadcast::channel(4096);
    feed::spawn(
        &config.kafka,
        bootstrap,
        board.clone(),
        changes.clone(),
        metrics.web.board_tasks.clone(),
        shutdown.clone(),
    )?;
    let producer: FutureProducer =
        crate::kafka::producer_config(&config.kafka, bootstrap).create()?;
    let web = Arc::new(Web {
        board,
        grid,
        tokens,
        sessions: Sessions::new(config.web.session_ttl),
        changes,
        producer,
        feedback_topic: config.kafka.feedback_topic.clone(),
        centre_desk: config
            .lifecycle
            .centre_desk
            .clone()
            .unwrap_or_else(|| config.dispatch.fallback_desk.clone()),
        secure_cookie: config.web.secure_cookie,
        metrics,
        shutdown: shutdown.clone(),
    });
    let addr = &config.web.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WebError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| WebError::Bind {
        addr: addr.clone(),
        source,
    })?;
    tokio::spawn(async move {
        let app = api::router(web);
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "web views stopped");
        }
    });
    info!(addr = %bound, "desk view on http://{bound}/desk, officer view on http://{bound}/officer");
    Ok(bound)
}
