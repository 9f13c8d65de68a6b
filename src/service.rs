//! The service assembled: configuration → pipeline → (embedded broker) → topics → metrics
//! endpoint → processor. `dissuade run` and `dissuade demo` both start it this way.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::grid::GridWarning;
use crate::http::{self, Health};
use crate::kafka::processor::{self, ProcessorHandle};
use crate::kafka::{ensure_topics, KafkaSetupError};
use crate::metrics::Metrics;
use crate::pipeline::{LoadError, Pipeline};

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
}

pub struct Service {
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Bootstrap servers the service uses (the embedded broker's address when embedded).
    pub bootstrap: String,
    pub metrics_addr: Option<SocketAddr>,
    pub warnings: Vec<GridWarning>,
    processor: ProcessorHandle,
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
        let (pipeline, warnings) = Pipeline::load(config)?;
        let pipeline = Arc::new(pipeline);
        let health = Arc::new(Health::default());
        health.config_loaded.store(true, Ordering::Relaxed);
        let metrics = Arc::new(Metrics::new(
            pipeline.rules(),
            pipeline.grid().cells().len(),
        ));
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

        if create_topics || k.is_embedded() {
            ensure_topics(
                k,
                &bootstrap,
                &[&k.input_topic, &k.task_topic, &k.dlq_topic],
            )
            .await?;
        }
        let metrics_addr = if config.metrics.listen.is_empty() {
            None
        } else {
            let addr: SocketAddr = config.metrics.listen.parse().expect("validated at load");
            let bound = http::serve(addr, metrics.clone(), health.clone(), shutdown.clone())
                .await
                .map_err(|source| ServiceError::Metrics {
                    addr: config.metrics.listen.clone(),
                    source,
                })?;
            info!(addr = %bound, "metrics on http://{bound}/metrics");
            Some(bound)
        };
        let processor = processor::spawn(
            k,
            &bootstrap,
            pipeline.clone(),
            metrics.clone(),
            health.clone(),
            shutdown.clone(),
        )?;
        Ok(Service {
            pipeline,
            metrics,
            health,
            bootstrap,
            metrics_addr,
            warnings,
            processor,
            shutdown,
            #[cfg(feature = "embedded-broker")]
            _broker: broker,
        })
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Waits for the processor to stop (after the token is cancelled, or on a fatal error),
    /// then stops the embedded broker.
    pub async fn wait(self) -> Result<(), ServiceError> {
        let processor = self.processor;
        let result = tokio::task::spawn_blocking(move || processor.join())
            .await
            .unwrap_or_else(|e| Err(format!("processor task: {e}")));
        self.shutdown.cancel();
        result.map_err(ServiceError::Processor)
    }
}
