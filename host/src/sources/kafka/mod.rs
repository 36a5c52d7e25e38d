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
//! [`context`] (statistics and rebalances), [`dead_letter`], [`results`],
//! [`topics`] (creation), [`status`] (what the API and /metrics see).

mod consumer;
mod context;
mod dead_letter;
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
use crate::telemetry::Metrics;
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

/// The librdkafka settings of the `kafka` section.
pub fn client_config(config: &Config) -> ClientConfig {
    let k = &config.kafka;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.bootstrap_servers)
        .set("client.id", &config.service.name)
        .set("reconnect.backoff.max.ms", "2000")
        .set("topic.metadata.refresh.interval.ms", "10000");
    c
}

/// Start consuming. Returns once the consumer thread runs; topic creation
/// and the subscription happen there (retried while the broker is away).
pub fn start(
    config: Arc<Config>,
    pipeline: Arc<PipelineHandle>,
    metrics: Arc<Metrics>,
    validators: Arc<rayon::ThreadPool>,
    namespace: u64,
) -> anyhow::Result<KafkaSource> {
    let k = &config.kafka;
    let topics = topics(&config);
    let status = Arc::new(KafkaStatus {
        group: k.consumer_group.clone(),
        topics: topics.iter().map(|(_, t)| t.clone()).collect(),
        ..Default::default()
    });
    let kmetrics = KafkaMetrics::new(&metrics);
    let inflight = Arc::new(Inflight::default());
    let ctx = Ctx {
        status: status.clone(),
        inflight: inflight.clone(),
        metrics: kmetrics.clone(),
        revoke_wait: Duration::from_millis((k.session_timeout_ms / 2).clamp(1000, 15_000)),
    };
    let mut cc = client_config(&config);
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
        .set(
            "fetch.message.max.bytes",
            (k.max_message_bytes + 65536).to_string(),
        );
    let consumer: BaseConsumer<Ctx> = cc
        .create_with_context(ctx)
        .context("creating the Kafka consumer")?;
    let producer: FutureProducer = client_config(&config)
        .set(
            "message.max.bytes",
            (k.max_message_bytes * 2 + 65536).to_string(),
        )
        .set("linger.ms", "5")
        .create()
        .context("creating the Kafka producer (dead letters, results)")?;
    let admin: AdminClient<DefaultClientContext> = client_config(&config)
        .create()
        .context("creating the Kafka admin client")?;
    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Handle::current();
    let worker = Worker {
        config: config.clone(),
        topics,
        consumer,
        producer,
        admin,
        pipeline,
        metrics,
        kmetrics,
        status: status.clone(),
        inflight,
        validators,
        namespace,
        stop: stop.clone(),
        runtime,
    };
    let thread = std::thread::Builder::new()
        .name("kafka-consumer".into())
        .spawn(move || worker.run())?;
    Ok(KafkaSource {
        status,
        stop,
        thread: Some(thread),
    })
}
