//! Kafka ingestion: one consumer in the group `kafka.consumer_group`,
//! subscribed to one topic per enabled event type.
//!
//! Delivery is at least once, with no loss:
//! - automatic offset storing is off; a message's offset is stored (and so
//!   committed, by librdkafka's auto-commit or by us) only once every event
//!   of its poll is durably stored and every invalid message of it is in the
//!   dead-letter topic;
//! - offsets are stored strictly in poll order, so a committed offset never
//!   passes an event that is not stored;
//! - on partition revocation the in-flight polls are waited for and what is
//!   done is committed synchronously; on shutdown likewise;
//! - a redelivery after a crash is absorbed by the event id: the message's
//!   `event_id`, else an id derived from topic, partition and offset.
//!
//! Invalid messages go to the dead-letter topic with the reason and origin
//! in headers and never stall their partition. When the pipeline is full
//! the assignment is paused (the poll loop keeps running, so the consumer
//! stays in its group) and resumed when the held poll is accepted.
//!
//! Parts: [`consumer`] (the poll loop), [`offsets`] (what may be stored),
//! [`context`] (statistics and rebalances), [`message`] (a message's event
//! or dead-letter reason), [`dead_letter`], [`results`],
//! [`topics`] (creation), [`status`] (what the API and /metrics see).

mod consumer;
mod context;
mod dead_letter;
mod message;
mod offsets;
mod results;
mod status;
mod topics;

pub use dead_letter::DeadLetterReason;
pub use status::{KafkaStatus, PartitionProgress};

use consumer::Worker;
use context::Ctx;
use offsets::Inflight;
use status::KafkaMetrics;

use crate::config::Config;
use crate::pipeline::PipelineHandle;
use crate::telemetry::{Metrics, supervise};
use anyhow::Context as _;
use hxp_plugin_sdk::EventKind;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::FutureProducer;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The running consumer.
pub struct KafkaSource {
    pub status: Arc<KafkaStatus>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl KafkaSource {
    /// Stop polling, finish what is in flight, commit, leave the group.
    /// Blocks.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Topic of each enabled event type.
pub fn topics(config: &Config) -> Vec<(EventKind, String)> {
    let enabled = config.event_consumers.enabled();
    EventKind::ALL
        .into_iter()
        .filter(|k| enabled[k.index()])
        .filter_map(|k| {
            config
                .kafka
                .topics
                .get(k.as_str())
                .filter(|t| !t.is_empty())
                .map(|t| (k, t.clone()))
        })
        .collect()
}

/// A topic the consumer subscribes to, once however many types it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    pub name: String,
    /// The type its messages default to when they name none; `None` when
    /// several types share the topic, so each message must say its type.
    pub default_kind: Option<EventKind>,
}

/// The topics to subscribe to, each once (many producers write every type
/// to one topic), in the order of their first type.
pub fn subscription(config: &Config) -> Vec<Topic> {
    let mut out: Vec<Topic> = Vec::new();
    for (kind, name) in topics(config) {
        match out.iter_mut().find(|t| t.name == name) {
            Some(shared) => shared.default_kind = None,
            None => out.push(Topic {
                name,
                default_kind: Some(kind),
            }),
        }
    }
    out
}

/// The librdkafka settings of the `kafka` section.
pub fn client_config(config: &Config) -> ClientConfig {
    let k = &config.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers)
        .set("client.id", &config.service.name)
        .set("reconnect.backoff.max.ms", "2000")
        .set("topic.metadata.refresh.interval.ms", "10000");
    // TLS and SASL (`security.protocol`, `ssl.*`, `sasl.*`) and any other
    // tuning; keys the consumer manages itself are refused at config load.
    for (key, value) in &k.properties {
        c.set(key, value);
    }
    c
}

/// Start consuming. Returns once the consumer thread runs; topic creation
/// and the subscription happen there (retried while the broker is away).
/// The thread is supervised: a consumer that fails or panics is replaced
/// by a new one, which reads on from the committed offsets.
pub fn start(
    config: Arc<Config>,
    pipeline: Arc<PipelineHandle>,
    metrics: Arc<Metrics>,
    validators: Arc<rayon::ThreadPool>,
    namespace: u64,
) -> anyhow::Result<KafkaSource> {
    let k = &config.kafka;
    let topics = subscription(&config);
    let status = Arc::new(KafkaStatus {
        group: k.consumer_group.clone(),
        topics: topics.iter().map(|t| t.name.clone()).collect(),
        ..Default::default()
    });
    let parts = Parts {
        kmetrics: KafkaMetrics::new(&metrics),
        config,
        topics,
        pipeline,
        metrics,
        status: status.clone(),
        validators,
        namespace,
        stop: Arc::new(AtomicBool::new(false)),
        runtime: tokio::runtime::Handle::current(),
    };
    // Settings librdkafka refuses fail the start, not the thread.
    let mut first = Some(parts.worker()?);
    let stop = parts.stop.clone();
    tokio::spawn(status::watch_stall(
        status.clone(),
        parts.kmetrics.stalled.clone(),
        Duration::from_millis(parts.config.kafka.stall_after_ms),
        stop.clone(),
    ));
    let thread = std::thread::Builder::new()
        .name("kafka-consumer".into())
        .spawn(move || {
            supervise(&parts.metrics.workers, WORKER, &parts.stop, || {
                let worker = match first.take() {
                    Some(w) => w,
                    None => parts.worker().map_err(|e| format!("{e:#}"))?,
                };
                worker.run()
            })
        })?;
    Ok(KafkaSource {
        status,
        stop,
        thread: Some(thread),
    })
}

/// The name of the consumer thread in /health and `worker_*` metrics.
const WORKER: &str = "kafka-consumer";

/// What every consumer the thread starts shares.
struct Parts {
    config: Arc<Config>,
    topics: Vec<Topic>,
    pipeline: Arc<PipelineHandle>,
    metrics: Arc<Metrics>,
    kmetrics: KafkaMetrics,
    status: Arc<KafkaStatus>,
    validators: Arc<rayon::ThreadPool>,
    namespace: u64,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
}

impl Parts {
    /// A new consumer (with its producer and admin client) in the group.
    fn worker(&self) -> anyhow::Result<Worker> {
        let inflight = Arc::new(Inflight::default());
        let ctx = Ctx {
            status: self.status.clone(),
            inflight: inflight.clone(),
            metrics: self.kmetrics.clone(),
            revoke_wait: Duration::from_millis(
                (self.config.kafka.session_timeout_ms / 2).clamp(1000, 15_000),
            ),
        };
        let consumer: BaseConsumer<Ctx> = consumer_config(&self.config)
            .create_with_context(ctx)
            .context("creating the Kafka consumer")?;
        let producer: FutureProducer = client_config(&self.config)
            .set(
                "message.max.bytes",
                (self.config.kafka.max_message_bytes * 2 + 65536).to_string(),
            )
            .set("linger.ms", "5")
            .create()
            .context("creating the Kafka producer (dead letters, results)")?;
        let admin: AdminClient<DefaultClientContext> = client_config(&self.config)
            .create()
            .context("creating the Kafka admin client")?;
        Ok(Worker {
            config: self.config.clone(),
            topics: self.topics.clone(),
            consumer,
            producer,
            admin,
            pipeline: self.pipeline.clone(),
            metrics: self.metrics.clone(),
            kmetrics: self.kmetrics.clone(),
            status: self.status.clone(),
            inflight,
            validators: self.validators.clone(),
            namespace: self.namespace,
            stop: self.stop.clone(),
            runtime: self.runtime.clone(),
        })
    }
}

/// The consumer's librdkafka settings.
fn consumer_config(config: &Config) -> ClientConfig {
    let k = &config.kafka;
    let mut cc = client_config(config);
    cc.set("group.id", &k.consumer_group)
        .set("enable.auto.commit", k.auto_commit.to_string())
        .set(
            "auto.commit.interval.ms",
            k.auto_commit_interval_ms.to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("heartbeat.interval.ms", k.heartbeat_interval_ms.to_string())
        .set("auto.offset.reset", &k.auto_offset_reset)
        .set("statistics.interval.ms", "1000")
        // One fetch request per broker is outstanding at a time; while it
        // waits for data on idle topics, a resumed partition waits with it.
        // 100 ms instead of 500 bounds that delay after a pause.
        .set("fetch.wait.max.ms", "100")
        .set(
            "fetch.message.max.bytes",
            (k.max_message_bytes + 65536).to_string(),
        );
    cc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_topics(pairs: &[(&str, &str)]) -> Config {
        let mut c = Config::default();
        c.kafka.topics = pairs
            .iter()
            .map(|(k, t)| (k.to_string(), t.to_string()))
            .collect();
        c
    }

    #[test]
    fn a_topic_shared_by_several_types_is_subscribed_once_without_a_default_type() {
        let c = with_topics(&[
            ("llm_request", "events"),
            ("user_feedback", "feedback"),
            ("error_event", "events"),
        ]);
        let names: Vec<_> = subscription(&c)
            .into_iter()
            .map(|t| (t.name, t.default_kind))
            .collect();
        assert_eq!(
            names,
            vec![
                ("events".to_string(), None),
                ("feedback".to_string(), Some(EventKind::UserFeedback)),
            ]
        );
    }

    /// librdkafka is built with TLS and SASL: clients with each
    /// mechanism the README documents are created (creation checks the
    /// properties; a build without them refuses `security.protocol`).
    #[test]
    fn the_client_takes_tls_and_sasl_properties() {
        for mechanism in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
            let mut c = Config::default();
            c.kafka.bootstrap_servers = "127.0.0.1:9".into();
            for (k, v) in [
                ("security.protocol", "sasl_ssl"),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "svc"),
                ("sasl.password", "pw"),
            ] {
                c.kafka.properties.insert(k.into(), v.into());
            }
            let made: Result<rdkafka::consumer::BaseConsumer, _> =
                client_config(&c).set("group.id", "g").create();
            assert!(made.is_ok(), "{mechanism}: {:?}", made.err());
        }
        let mut c = Config::default();
        c.kafka.bootstrap_servers = "127.0.0.1:9".into();
        c.kafka
            .properties
            .insert("security.protocol".into(), "tls_please".into());
        let made: Result<rdkafka::consumer::BaseConsumer, _> =
            client_config(&c).set("group.id", "g").create();
        assert!(made.is_err());
    }

    #[test]
    fn one_topic_per_type_keeps_each_type_as_its_default() {
        let subs = subscription(&Config::default());
        assert_eq!(subs.len(), 5);
        assert!(subs.iter().all(|t| t.default_kind.is_some()));
    }
}
