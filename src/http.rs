//! The operations endpoint: `/metrics` (Prometheus text format), `/healthz` (the process is
//! alive: 200 whenever it answers) and `/readyz` (200 once the configuration is loaded, the
//! broker is reachable, input partitions are assigned and the lifecycle's state is restored;
//! 503 with the reasons otherwise).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// What `/readyz` reports, updated by the service as it starts and runs.
#[derive(Debug, Default)]
pub struct Health {
    pub config_loaded: AtomicBool,
    pub broker_reachable: AtomicBool,
    pub partitions_assigned: AtomicUsize,
    /// Set while the lifecycle has no restored task partitions yet (from its start to its
    /// first assignment) or is reading an assignment's state back.
    pub lifecycle_restoring: AtomicBool,
}

impl Health {
    /// The reasons the service is not ready; empty when it is.
    pub fn not_ready(&self) -> Vec<&'static str> {
        let mut why = Vec::new();
        if !self.config_loaded.load(Ordering::Relaxed) {
            why.push("configuration not loaded");
        }
        if !self.broker_reachable.load(Ordering::Relaxed) {
            why.push("broker not reachable");
        }
        if self.partitions_assigned.load(Ordering::Relaxed) == 0 {
            why.push("no input partitions assigned");
        }
        if self.lifecycle_restoring.load(Ordering::Relaxed) {
            why.push("lifecycle state not restored");
        }
        why
    }
}

const INDEX: &str = "dissuade operations endpoint\n\
    /metrics  Prometheus metrics (text format 0.0.4)\n\
    /healthz  200 while the process runs\n\
    /readyz   200 when configured, connected, assigned input partitions and lifecycle state restored; 503 and why otherwise\n";

#[derive(Clone)]
struct AppState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready_handler))
        .route("/", get(|| async { INDEX }))
        .with_state(AppState { metrics, health })
}

async fn metrics_handler(State(s): State<AppState>) -> impl IntoResponse {
    s.metrics.set_health(&s.health);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn ready_handler(State(s): State<AppState>) -> impl IntoResponse {
    let why = s.health.not_ready();
    if why.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", why.join(", ")),
        )
    }
}

/// Binds the endpoint and serves it until `shutdown` is cancelled. Returns the bound address
/// (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    serve_router(addr, router(metrics, health), shutdown).await
}

/// Serves `app` (the [`router`], with more routes merged in) on `addr`.
pub async fn serve_router(
    addr: SocketAddr,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const RULES: &str = r#"
        [levels]
        low = 20
        medium = 40
        high = 60
        critical = 90

        [[rule]]
        id = "blacklisted_caller"
        description = "d"
        reason = "r"
        score = 60
        when = "caller_flags has blacklisted"
    "#;

    /// One HTTP/1.1 GET; returns the status code and the body.
    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).await.unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1.to_string();
        (status, body)
    }

    async fn start(health: Arc<Health>) -> (SocketAddr, CancellationToken) {
        let rules = RuleSet::from_toml_str(RULES, "test").unwrap();
        let metrics = Arc::new(Metrics::new(&rules, 3));
        let shutdown = CancellationToken::new();
        let addr = serve(
            "127.0.0.1:0".parse().unwrap(),
            metrics,
            health,
            shutdown.clone(),
        )
        .await
        .unwrap();
        (addr, shutdown)
    }

    #[test]
    fn nothing_set_is_not_ready_for_every_reason() {
        assert_eq!(
            Health::default().not_ready(),
            [
                "configuration not loaded",
                "broker not reachable",
                "no input partitions assigned"
            ]
        );
    }

    #[tokio::test]
    async fn readyz_is_503_with_reasons_until_partitions_are_assigned() {
        let health = Arc::new(Health::default());
        let (addr, shutdown) = start(health.clone()).await;

        assert_eq!(get(addr, "/healthz").await, (200, "ok\n".into()));
        assert_eq!(
            get(addr, "/readyz").await,
            (
                503,
                "not ready: configuration not loaded, broker not reachable, \
                 no input partitions assigned\n"
                    .into()
            )
        );
        health.config_loaded.store(true, Ordering::Relaxed);
        health.broker_reachable.store(true, Ordering::Relaxed);
        assert_eq!(
            get(addr, "/readyz").await,
            (503, "not ready: no input partitions assigned\n".into())
        );
        health.partitions_assigned.store(2, Ordering::Relaxed);
        assert_eq!(get(addr, "/readyz").await, (200, "ready\n".into()));
        health.broker_reachable.store(false, Ordering::Relaxed);
        assert_eq!(
            get(addr, "/readyz").await,
            (503, "not ready: broker not reachable\n".into())
        );
        health.broker_reachable.store(true, Ordering::Relaxed);
        health.lifecycle_restoring.store(true, Ordering::Relaxed);
        assert_eq!(
            get(addr, "/readyz").await,
            (503, "not ready: lifecycle state not restored\n".into())
        );
        health.lifecycle_restoring.store(false, Ordering::Relaxed);

        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("dissuade_events_consumed_total 0\n"),
            "{body}"
        );
        assert_eq!(get(addr, "/nope").await.0, 404);
        assert!(get(addr, "/").await.1.contains("/readyz"));
        shutdown.cancel();
    }
}
