//! A Kafka-compatible broker in this process (tansu with the patches in `vendor/`, in-memory
//! storage), so the demo and the tests run the real Kafka path with nothing installed. It
//! listens on loopback only and keeps its records in memory, within a [`Retention`] per
//! partition.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tansu_broker::broker::Broker;
use tansu_broker::coordinator::group::administrator::Controller;
use tansu_storage::StorageContainer;
use tokio::task::JoinHandle;
use url::Url;

use super::KafkaSetupError;

/// How much of each partition the broker keeps: older batches go first once either bound is
/// passed, as with Kafka's `retention.bytes` and `retention.ms` (which a topic's own configs
/// override). The broker does not compact, so a compacted topic (the open-task state) is
/// bounded by age only: cutting it by size would drop the only record of its oldest keys.
/// `None` is unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub bytes: Option<u64>,
    pub age: Option<Duration>,
}

impl Retention {
    /// The retention `kafka.embedded_retention_bytes` and `kafka.embedded_retention` set.
    pub fn configured(k: &crate::config::KafkaConfig) -> Retention {
        Retention {
            bytes: Some(k.embedded_retention_bytes),
            age: Some(k.embedded_retention),
        }
    }

    /// The storage URL that carries this retention to tansu's memory store.
    fn storage_url(&self) -> Url {
        let mut url = Url::parse("memory://tansu/").expect("static URL");
        if let Some(b) = self.bytes {
            url.query_pairs_mut()
                .append_pair("retention.bytes", &b.to_string());
        }
        if let Some(age) = self.age {
            url.query_pairs_mut()
                .append_pair("retention.ms", &age.as_millis().to_string());
        }
        url
    }
}

pub struct EmbeddedBroker {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl EmbeddedBroker {
    /// Starts the broker on `127.0.0.1:port` (0 picks a free port) and waits until it
    /// accepts connections.
    pub async fn start(port: u16, retention: Retention) -> Result<EmbeddedBroker, KafkaSetupError> {
        // The broker binds inside its own task, and the readiness check below only connects:
        // with the port taken, this process would silently use someone else's broker (and
        // join its consumer groups). Binding first turns that into a clear error. A free port
        // picked for port 0 can be taken by another process before that bind (seen in
        // parallel tests): then another is picked.
        let mut attempts = if port == 0 { 10 } else { 1 };
        let addr = loop {
            let addr = SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                if port == 0 { free_port()? } else { port },
            ));
            attempts -= 1;
            match std::net::TcpListener::bind(addr) {
                Ok(listener) => {
                    drop(listener);
                    break addr;
                }
                Err(e) if attempts == 0 || e.kind() != std::io::ErrorKind::AddrInUse => {
                    return Err(KafkaSetupError::Embedded(format!(
                        "cannot listen on {addr}: {e} (another broker or demo running? \
                         set kafka.embedded_port, or 0 for a free port)"
                    )))
                }
                Err(_) => continue,
            }
        };
        let url = Url::parse(&format!("tcp://{addr}"))
            .map_err(|e| KafkaSetupError::Embedded(e.to_string()))?;
        let storage = retention.storage_url();
        let mut broker = Broker::<Controller<StorageContainer>, StorageContainer>::builder()
            .node_id(tansu_broker::NODE_ID)
            .cluster_id("dissuade-embedded")
            .incarnation_id(uuid::Uuid::now_v7())
            .advertised_listener(url.clone())
            .storage(storage)
            .listener(url)
            .schema_registry(None)
            .lake_house(None)
            .otlp_endpoint_url(None)
            .authentication(false)
            .tls_server_config(None)
            .silent(true)
            .build()
            .await
            .map_err(|e| KafkaSetupError::Embedded(format!("{e:?}")))?;
        // `serve`, not `main`: `main` installs its own SIGINT/SIGTERM handlers and would stop
        // the broker while the processor is still draining.
        let task = tokio::spawn(async move {
            if let Err(e) = broker.serve(tokio::time::Instant::now()).await {
                tracing::error!(error = ?e, "embedded broker stopped");
            }
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if task.is_finished() || Instant::now() > deadline {
                task.abort();
                return Err(KafkaSetupError::Embedded(format!(
                    "broker did not listen on {addr} (is the port in use?)"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(EmbeddedBroker { addr, task })
    }

    /// The bootstrap address for clients.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn free_port() -> Result<u16, KafkaSetupError> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| KafkaSetupError::Embedded(format!("finding a free port: {e}")))?;
    Ok(l.local_addr()
        .map_err(|e| KafkaSetupError::Embedded(e.to_string()))?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_travels_in_the_storage_url() {
        assert_eq!(
            Retention::default().storage_url().as_str(),
            "memory://tansu/"
        );
        let r = Retention {
            bytes: Some(1024),
            age: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            r.storage_url().as_str(),
            "memory://tansu/?retention.bytes=1024&retention.ms=60000"
        );
    }
}
