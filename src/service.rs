//! The service assembled: configuration → pipeline → (embedded broker) → topics → metrics
//! endpoint → processor and task lifecycle. `dissuade run` and `dissuade demo` both start it
//! this way.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::grid::GridWarning;
use crate::http::{self, Health};
use crate::kafka::lifecycle::{self, Clock, LifecycleHandle, LifecycleOptions};
use crate::kafka::processor::{self, ProcessorHandle};
use crate::kafka::{ensure_topics, KafkaSetupError};
use crate::metrics::Metrics;
use crate::pipeline::{LoadError, Pipeline};
use crate::reload::{self, ReloadHandle, Reloader};
use crate::rules::RuleSet;
use crate::shadow::Shadow;

#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("loading the pipeline: {0}")]
    Load(#[from] LoadError),
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    #[error("binding the metrics endpoint {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
    #[error("processor: {0}")]
    Processor(String),
    #[error("lifecycle: {0}")]
    Lifecycle(String),
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
}

pub struct Service {
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Bootstrap servers the service uses (the embedded broker's address when embedded).
    pub bootstrap: String,
    pub metrics_addr: Option<SocketAddr>,
    /// Where the desk and officer views are served, when they are.
    pub web_addr: Option<SocketAddr>,
    pub warnings: Vec<GridWarning>,
    /// Reloads the rules, lists, grid map and roster (as SIGHUP does).
    pub reload: ReloadHandle,
    processor: ProcessorHandle,
    lifecycle: Option<LifecycleHandle>,
    /// The threads following the lists and rules topics: they stop with the token and are
    /// joined before the embedded broker stops, so that none is left calling a broker that
    /// is gone (librdkafka logs that as an error).
    followers: Vec<std::thread::JoinHandle<()>>,
    shutdown: CancellationToken,
    #[cfg(feature = "embedded-broker")]
    _broker: Option<crate::kafka::embedded::EmbeddedBroker>,
}

impl Service {
    /// Starts everything; `create_topics` also creates them on a real cluster.
    pub async fn start(
        config: &Config,
        create_topics: bool,
        shutdown: CancellationToken,
    ) -> Result<Service, ServiceError> {
        Self::start_with_clock(config, create_topics, shutdown, lifecycle::wall_clock()).await
    }

    /// [`Service::start`] with the lifecycle's deadlines on `clock`.
    pub async fn start_with_clock(
        config: &Config,
        create_topics: bool,
        shutdown: CancellationToken,
        clock: Clock,
    ) -> Result<Service, ServiceError> {
        // Checked before anything starts; the rules topic may still replace them below.
        let file_rules =
            RuleSet::load(&config.resolve(&config.rules.path)).map_err(LoadError::from)?;
        let k = &config.kafka;

        #[cfg(feature = "embedded-broker")]
        let (broker, bootstrap) = if k.is_embedded() {
            let b = crate::kafka::embedded::EmbeddedBroker::start(
                k.embedded_port,
                crate::kafka::embedded::Retention::configured(k),
            )
            .await?;
            let bootstrap = b.bootstrap();
            info!(%bootstrap, "embedded broker listening (loopback only)");
            (Some(b), bootstrap)
        } else {
            (None, k.brokers.clone())
        };
        #[cfg(not(feature = "embedded-broker"))]
        let bootstrap = if k.is_embedded() {
            return Err(KafkaSetupError::EmbeddedUnavailable.into());
        } else {
            k.brokers.clone()
        };

        let create_topics = create_topics || k.is_embedded();
        if create_topics {
            let topics = [
                k.input_topic.as_str(),
                &k.task_topic,
                &k.dlq_topic,
                &k.rules_topic,
            ];
            ensure_topics(k, &bootstrap, &topics).await?;
        }
        let published = {
            let (k, bootstrap) = (k.clone(), bootstrap.clone());
            let read = tokio::task::spawn_blocking(move || {
                crate::kafka::rules_topic::published(&k, &bootstrap).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
            read.unwrap_or_else(|error| {
                warn!(%error, "rules topic: not read; starting on the rules file");
                Vec::new()
            })
        };
        let (rules, published) = reload::starting_rules(config, published, file_rules);
        let (mut pipeline, warnings) = Pipeline::load_with(config, rules)?;
        let shadow = Shadow::load(config, &pipeline)?;
        let shadow_version = shadow.as_ref().map(Shadow::version);
        if let Some(shadow) = shadow {
            pipeline.set_shadow(shadow);
        }
        // Caller-side windows need the calls grouped by caller: the processor then starts the
        // by-caller stages in front of it (`kafka::by_caller`).
        pipeline.take_caller_figures_from_records();
        let pipeline = Arc::new(pipeline);
        let health = Arc::new(Health::default());
        health.config_loaded.store(true, Ordering::Relaxed);
        let metrics = Arc::new(Metrics::new(
            &pipeline.rules(),
            pipeline.grid().cells().len(),
        ));
        if let Some(version) = &shadow_version {
            metrics.shadow_started(version);
            info!(version, "shadow rules: scored beside the live rules; report at /shadow on the metrics endpoint");
        }
        // Right after the load: a file changed from here on is a change to reload.
        let reload = reload::spawn(
            Reloader::new(config.clone(), pipeline.clone(), metrics.clone(), published),
            shutdown.clone(),
        );
        let has_lists = !pipeline.rules().lists().is_empty();
        if create_topics && has_lists {
            ensure_topics(k, &bootstrap, &[&k.lists_topic]).await?;
        }
        let metrics_addr = if config.metrics.listen.is_empty() {
            None
        } else {
            let addr: SocketAddr = config.metrics.listen.parse().expect("validated at load");
            let mut app = http::router(metrics.clone(), health.clone());
            if shadow_version.is_some() {
                let pipeline = pipeline.clone();
                app = app.route(
                    "/shadow",
                    axum::routing::get(move || async move {
                        axum::Json(pipeline.shadow().as_ref().map(|s| s.report()))
                    }),
                );
            }
            let bound = http::serve_router(addr, app, shutdown.clone())
                .await
                .map_err(|source| ServiceError::Metrics {
                    addr: config.metrics.listen.clone(),
                    source,
                })?;
            info!(addr = %bound, "metrics on http://{bound}/metrics");
            Some(bound)
        };
        let mut followers = Vec::new();
        if has_lists {
            // Applies list changes until the shutdown token; nothing of it needs draining.
            followers.push(
                crate::kafka::lists::spawn(
                    k,
                    &bootstrap,
                    pipeline.clone(),
                    metrics.clone(),
                    shutdown.clone(),
                )
                .map_err(KafkaSetupError::Client)?,
            );
        }
        // Runs until the shutdown token; nothing of it needs draining.
        followers.push(
            crate::kafka::rules_topic::spawn(k, &bootstrap, reload.clone(), shutdown.clone())
                .map_err(KafkaSetupError::Client)?,
        );
        let processor = processor::spawn(
            k,
            &bootstrap,
            pipeline.clone(),
            metrics.clone(),
            health.clone(),
            shutdown.clone(),
        )?;
        let lifecycle = if config.lifecycle.enabled {
            let options = LifecycleOptions {
                clock,
                desks: {
                    let live = pipeline.clone();
                    lifecycle::station_desks(move || live.grid())
                },
            };
            let started = lifecycle::spawn(
                config,
                &bootstrap,
                metrics.clone(),
                health.clone(),
                shutdown.clone(),
                options,
            );
            match started {
                Ok(handle) => Some(handle),
                Err(e) => {
                    shutdown.cancel();
                    let _ = tokio::task::spawn_blocking(move || processor.join()).await;
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let web_addr = if config.web.listen.is_empty() {
            None
        } else {
            let live = pipeline.clone();
            match crate::web::serve(
                config,
                &bootstrap,
                move || live.grid(),
                metrics.clone(),
                shutdown.clone(),
            )
            .await
            {
                Ok(addr) => Some(addr),
                Err(e) => {
                    shutdown.cancel();
                    let _ = tokio::task::spawn_blocking(move || {
                        processor.join().ok();
                        lifecycle.map(LifecycleHandle::join);
                    })
                    .await;
                    return Err(e.into());
                }
            }
        };
        Ok(Service {
            reload,
            pipeline,
            metrics,
            health,
            bootstrap,
            metrics_addr,
            web_addr,
            warnings,
            processor,
            lifecycle,
            followers,
            shutdown,
            #[cfg(feature = "embedded-broker")]
            _broker: broker,
        })
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Waits for the processor and the lifecycle to stop (after the token is cancelled, or
    /// when either fails: then the other is stopped too), then stops the embedded broker.
    pub async fn wait(self) -> Result<(), ServiceError> {
        let (processor, lifecycle) = (self.processor, self.lifecycle);
        while !self.shutdown.is_cancelled()
            && !processor.is_finished()
            && !lifecycle.as_ref().is_some_and(LifecycleHandle::is_finished)
        {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        self.shutdown.cancel();
        let followers = self.followers;
        let (p, l) = tokio::task::spawn_blocking(move || {
            let stopped = (processor.join(), lifecycle.map(LifecycleHandle::join));
            for follower in followers {
                // A follower that panicked has already reported it; the stop goes on.
                let _ = follower.join();
            }
            stopped
        })
        .await
        .unwrap_or_else(|e| (Err(format!("processor task: {e}")), None));
        p.map_err(ServiceError::Processor)?;
        l.unwrap_or(Ok(())).map_err(ServiceError::Lifecycle)
    }
}
