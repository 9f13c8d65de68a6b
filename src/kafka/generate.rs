//! Writes synthetic events to a topic at a chosen rate: the demo's feed and a load test for
//! real clusters. Records are keyed by callee number, as the centre should key them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;

use crate::synth::Synth;

#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    pub topic: String,
    /// Stop after this many events.
    pub events: Option<u64>,
    /// Events per second; unlimited when `None`.
    pub rate: Option<f64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    pub progress: bool,
}

/// Counts kept while generating; readable from other threads.
#[derive(Debug, Default)]
pub struct GenerateCounters {
    pub sent: AtomicU64,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    /// Why the first failed record failed.
    first_error: Mutex<Option<KafkaError>>,
}

#[derive(Debug, Clone)]
pub struct GenerateReport {
    pub sent: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Why the first failed record failed, if one did.
    pub first_error: Option<KafkaError>,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(
        "topic `{0}` does not exist: create it first (`dissuade run --create-topics` creates \
         the topics the service uses), or let the cluster create topics on first use"
    )]
    NoSuchTopic(String),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

struct Counting(Arc<GenerateCounters>);

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let counter = match result {
            Ok(_) => &self.0.delivered,
            Err((e, _)) => {
                self.0
                    .first_error
                    .lock()
                    .expect("first-error lock")
                    .get_or_insert_with(|| e.clone());
                &self.0.failed
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Produces events until a bound is reached or `shutdown` is cancelled, then waits for every
/// delivery report. A topic the cluster says does not exist is an error before anything is
/// sent: otherwise every record would wait out its delivery timeout and fail.
pub fn generate(
    producer_config: &ClientConfig,
    mut synth: Synth,
    opts: &GenerateOptions,
    counters: Arc<GenerateCounters>,
    shutdown: &CancellationToken,
) -> Result<GenerateReport, GenerateError> {
    let producer: ThreadedProducer<Counting> =
        producer_config.create_with_context(Counting(counters.clone()))?;
    let metadata = producer
        .client()
        .fetch_metadata(Some(&opts.topic), Duration::from_secs(10))?;
    if metadata.topics().iter().any(|t| {
        t.name() == opts.topic
            && t.error() == Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
    }) {
        return Err(GenerateError::NoSuchTopic(opts.topic.clone()));
    }
    let bar = opts.progress.then(|| progress_bar(opts.events));
    let started = Instant::now();
    let mut buf = Vec::with_capacity(512);
    let mut sent = 0u64;
    loop {
        if shutdown.is_cancelled()
            || opts.events.is_some_and(|n| sent >= n)
            || opts.duration.is_some_and(|d| started.elapsed() >= d)
        {
            break;
        }
        if let Some(rate) = opts.rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
                continue;
            }
        }
        buf.clear();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let victim = synth.next_event(now_ms, &mut buf);
        let key = synth.callee_number(victim);
        let mut record = BaseRecord::to(&opts.topic).key(key).payload(buf.as_slice());
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        sent += 1;
        counters.sent.store(sent, Ordering::Relaxed);
        if let Some(bar) = &bar {
            if sent.is_multiple_of(1024) {
                bar.set_position(sent);
            }
        }
    }
    producer.flush(Duration::from_secs(60))?;
    if let Some(bar) = bar {
        bar.set_position(sent);
        bar.finish();
    }
    Ok(GenerateReport {
        sent,
        delivered: counters.delivered.load(Ordering::Relaxed),
        failed: counters.failed.load(Ordering::Relaxed),
        first_error: counters
            .first_error
            .lock()
            .expect("first-error lock")
            .clone(),
        elapsed: started.elapsed(),
    })
}

fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {human_pos}/{human_len} events, {per_sec}, eta {eta}",
            )
            .expect("valid template"),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template("{spinner} {human_pos} events, {per_sec}")
                .expect("valid template"),
        ),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(4));
    bar
}
