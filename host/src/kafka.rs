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

use crate::config::Config;
use crate::event::{self, Defaults, EventError, ValidEvent};
use crate::pipeline::{PipelineHandle, Receipt, SubmitError};
use crate::telemetry::{EventStatus, Metrics};
use anyhow::Context as _;
use hxp_plugin_sdk::EventKind;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::Serialize;
use serde_json::json;
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Progress of one assigned partition, from the client's statistics.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PartitionProgress {
    pub topic: String,
    pub partition: i32,
    /// Next offset the application will get.
    pub position: i64,
    /// Offset stored for commit (next to read after a restart).
    pub stored: i64,
    pub committed: i64,
    /// As the broker reports it (some brokers report it late).
    pub high_watermark: i64,
    /// high watermark − committed offset.
    pub lag: i64,
}

/// What the API and /health read.
#[derive(Debug, Default)]
pub struct KafkaStatus {
    pub group: String,
    pub topics: Vec<String>,
    /// A broker connection is up.
    pub connected: AtomicBool,
    /// Topics exist and the subscription is in place.
    pub subscribed: AtomicBool,
    pub paused: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    pub consumed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub polls_in_flight: AtomicU64,
    pub partitions: Mutex<BTreeMap<(String, i32), PartitionProgress>>,
    pub assignment: Mutex<Vec<(String, i32)>>,
    pub rebalances: AtomicU64,
}

impl KafkaStatus {
    /// `None` when healthy, else why not.
    pub fn problem(&self) -> Option<String> {
        let err = || {
            self.last_error
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_else(|| "no broker connection yet".into())
        };
        if !self.connected.load(Ordering::Relaxed) {
            return Some(format!("broker unreachable: {}", err()));
        }
        if !self.subscribed.load(Ordering::Relaxed) {
            return Some(format!("topics not ready: {}", err()));
        }
        None
    }

    pub fn json(&self) -> serde_json::Value {
        let partitions: Vec<PartitionProgress> = {
            let assigned = self.assignment.lock().expect("lock").clone();
            let all = self.partitions.lock().expect("lock");
            assigned
                .iter()
                .map(|(t, p)| {
                    all.get(&(t.clone(), *p))
                        .cloned()
                        .unwrap_or_else(|| PartitionProgress {
                            topic: t.clone(),
                            partition: *p,
                            position: -1,
                            stored: -1,
                            committed: -1,
                            high_watermark: -1,
                            lag: -1,
                        })
                })
                .collect()
        };
        json!({
            "enabled": true,
            "status": match self.problem() { None => "ok".to_string(), Some(p) => p },
            "group": self.group,
            "topics": self.topics,
            "connected": self.connected.load(Ordering::Relaxed),
            "paused": self.paused.load(Ordering::Relaxed),
            "consumed": self.consumed.load(Ordering::Relaxed),
            "dead_lettered": self.dead_lettered.load(Ordering::Relaxed),
            "polls_in_flight": self.polls_in_flight.load(Ordering::Relaxed),
            "rebalances": self.rebalances.load(Ordering::Relaxed),
            "last_error": self.last_error.lock().expect("lock").clone(),
            "partitions": partitions,
        })
    }
}

/// Kafka metrics, in the service's registry.
#[derive(Clone)]
struct KafkaMetrics {
    messages: IntCounterVec,
    dead_letters: IntCounterVec,
    lag: IntGaugeVec,
    position: IntGaugeVec,
    committed: IntGaugeVec,
    connected: IntGauge,
    paused: IntGauge,
    commit_errors: IntCounter,
    rebalances: IntCounter,
}

impl KafkaMetrics {
    fn new(m: &Metrics) -> KafkaMetrics {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            m.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let gauge_vec = |name: &str, help: &str| {
            m.register(
                IntGaugeVec::new(Opts::new(name, help), &["topic", "partition"])
                    .expect("valid metric"),
            )
        };
        let gauge =
            |name: &str, help: &str| m.register(IntGauge::new(name, help).expect("valid metric"));
        let counter =
            |name: &str, help: &str| m.register(IntCounter::new(name, help).expect("valid metric"));
        KafkaMetrics {
            messages: counter_vec(
                "kafka_messages_total",
                "Kafka messages consumed, by topic and outcome (accepted | dead_letter)",
                &["topic", "outcome"],
            ),
            dead_letters: counter_vec(
                "kafka_dead_letters_total",
                "Messages sent to the dead-letter topic, by reason",
                &["reason"],
            ),
            lag: gauge_vec(
                "kafka_consumer_lag",
                "High watermark minus committed offset, per assigned partition",
            ),
            position: gauge_vec(
                "kafka_consumer_position",
                "Next offset the service reads, per assigned partition",
            ),
            committed: gauge_vec(
                "kafka_consumer_committed_offset",
                "Committed offset, per assigned partition",
            ),
            connected: gauge("kafka_broker_connected", "1 when a broker connection is up"),
            paused: gauge(
                "kafka_consumer_paused",
                "1 while consumption is paused because the processing queue is full",
            ),
            commit_errors: counter(
                "kafka_commit_errors_total",
                "Offset commits that failed (retried with the next commit)",
            ),
            rebalances: counter(
                "kafka_rebalances_total",
                "Partition assignments and revocations",
            ),
        }
    }
}

/// Polls handed to the pipeline, in poll order, and what each will let us
/// store when it is done.
#[derive(Default)]
struct InflightState {
    next_id: u64,
    polls: BTreeMap<u64, Poll>,
}

struct Poll {
    /// Highest offset per partition in this poll.
    offsets: Vec<(Arc<str>, i32, i64)>,
    done: bool,
}

#[derive(Default)]
struct Inflight {
    state: Mutex<InflightState>,
    changed: Condvar,
}

impl Inflight {
    fn register(&self, offsets: Vec<(Arc<str>, i32, i64)>) -> u64 {
        let mut s = self.state.lock().expect("inflight lock");
        let id = s.next_id;
        s.next_id += 1;
        s.polls.insert(
            id,
            Poll {
                offsets,
                done: false,
            },
        );
        id
    }

    fn complete(&self, id: u64) {
        if let Some(p) = self.state.lock().expect("inflight lock").polls.get_mut(&id) {
            p.done = true;
        }
        self.changed.notify_all();
    }

    fn len(&self) -> usize {
        self.state.lock().expect("inflight lock").polls.len()
    }

    /// Store the offsets of the finished polls at the front (poll order).
    /// Returns how many polls were stored.
    fn store_done<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) -> usize {
        let mut s = self.state.lock().expect("inflight lock");
        let mut n = 0;
        while let Some(entry) = s.polls.first_entry() {
            if !entry.get().done {
                break;
            }
            let poll = entry.remove();
            for (topic, partition, offset) in poll.offsets {
                // Takes the processed message's own offset; offset + 1 is
                // committed. Fails only for a partition no longer assigned
                // (revoked meanwhile): its new owner re-reads it.
                if let Err(e) = consumer.store_offset(&topic, partition, offset) {
                    tracing::debug!(%topic, partition, offset, "offset not stored: {e}");
                }
            }
            n += 1;
        }
        n
    }

    /// Wait until every poll is done or `deadline` passes.
    fn wait_all(&self, deadline: Instant) -> bool {
        let mut s = self.state.lock().expect("inflight lock");
        loop {
            if s.polls.values().all(|p| p.done) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, deadline - now)
                .expect("inflight lock")
                .0;
        }
    }
}

struct Ctx {
    status: Arc<KafkaStatus>,
    inflight: Arc<Inflight>,
    metrics: KafkaMetrics,
    /// How long a revocation waits for in-flight polls.
    revoke_wait: Duration,
}

impl ClientContext for Ctx {
    fn stats(&self, s: Statistics) {
        let up = s.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
        self.status.connected.store(up, Ordering::Relaxed);
        self.metrics.connected.set(up as i64);
        let mut parts = self.status.partitions.lock().expect("lock");
        for (topic, t) in &s.topics {
            for (id, p) in &t.partitions {
                if *id < 0 {
                    continue;
                }
                let lag = if p.hi_offset >= 0 && p.committed_offset >= 0 {
                    p.hi_offset - p.committed_offset
                } else {
                    p.consumer_lag
                };
                let progress = PartitionProgress {
                    topic: topic.clone(),
                    partition: *id,
                    position: p.app_offset,
                    stored: p.stored_offset,
                    committed: p.committed_offset,
                    high_watermark: p.hi_offset,
                    lag,
                };
                if p.desired {
                    let labels = [topic.as_str(), &id.to_string()];
                    self.metrics.lag.with_label_values(&labels).set(lag.max(0));
                    self.metrics
                        .position
                        .with_label_values(&labels)
                        .set(progress.position);
                    self.metrics
                        .committed
                        .with_label_values(&labels)
                        .set(progress.committed);
                }
                parts.insert((topic.clone(), *id), progress);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!("kafka: {error}: {reason}");
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.status.connected.store(false, Ordering::Relaxed);
            self.metrics.connected.set(0);
        }
        *self.status.last_error.lock().expect("lock") = Some(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Hand over cleanly: finish what is in flight, store and commit
            // it, so the next owner starts after it.
            let finished = self.inflight.wait_all(Instant::now() + self.revoke_wait);
            self.inflight.store_done(consumer);
            if !tpl.elements().is_empty()
                && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
                && e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset)
            {
                self.metrics.commit_errors.inc();
                tracing::warn!("kafka: commit on revocation failed: {e}");
            }
            tracing::info!(
                partitions = tpl.count(),
                all_in_flight_done = finished,
                "kafka: partitions revoked"
            );
            self.status.assignment.lock().expect("lock").clear();
            self.status.rebalances.fetch_add(1, Ordering::Relaxed);
            self.metrics.rebalances.inc();
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?assigned, "kafka: partitions assigned");
                *self.status.assignment.lock().expect("lock") = assigned;
                self.status.rebalances.fetch_add(1, Ordering::Relaxed);
                self.metrics.rebalances.inc();
                // A paused consumer must pause its new partitions too.
                if self.status.paused.load(Ordering::Relaxed) {
                    let _ = consumer.pause(tpl);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!("kafka: rebalance error: {e}"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result
            && e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset)
        {
            self.metrics.commit_errors.inc();
            tracing::warn!("kafka: offset commit failed: {e}");
        }
    }
}

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

/// One consumed message, copied out of the client's buffer.
struct Msg {
    topic: Arc<str>,
    kind: Option<EventKind>,
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

/// A message refused, on its way to the dead-letter topic.
struct DeadLetter {
    msg: Msg,
    reason: &'static str,
    message: String,
}

struct Worker {
    config: Arc<Config>,
    topics: Vec<(EventKind, String)>,
    consumer: BaseConsumer<Ctx>,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    pipeline: Arc<PipelineHandle>,
    metrics: Arc<Metrics>,
    kmetrics: KafkaMetrics,
    status: Arc<KafkaStatus>,
    inflight: Arc<Inflight>,
    validators: Arc<rayon::ThreadPool>,
    namespace: u64,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
}

/// A poll that has been read and validated but not yet accepted by the
/// pipeline (it was full).
struct Held {
    valid: Vec<ValidEvent>,
    /// Where each valid event came from; kept only for the results topic.
    origins: Vec<Origin>,
    dead: Vec<DeadLetter>,
    offsets: Vec<(Arc<str>, i32, i64)>,
}

/// A valid event's message, for its record on the results topic.
struct Origin {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    kind: EventKind,
}

/// The event id of a message without one: the same for every delivery of
/// the same message.
pub fn derived_id(topic: &str, partition: i32, offset: i64) -> u128 {
    let digest = sha2::Sha256::digest(format!("kafka/{topic}/{partition}/{offset}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    // A version 8 (custom) UUID.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    u128::from_be_bytes(b)
}

impl Worker {
    fn run(self) {
        if !self.prepare_topics() {
            return;
        }
        let names: Vec<&str> = self.topics.iter().map(|(_, t)| t.as_str()).collect();
        if let Err(e) = self.consumer.subscribe(&names) {
            tracing::error!("kafka: subscribing to {names:?} failed: {e}");
            *self.status.last_error.lock().expect("lock") = Some(format!("subscribe: {e}"));
            return;
        }
        self.status.subscribed.store(true, Ordering::Relaxed);
        tracing::info!(group = %self.config.kafka.consumer_group, topics = ?names, "kafka: consuming");
        let kinds: HashMap<&str, EventKind> =
            self.topics.iter().map(|(k, t)| (t.as_str(), *k)).collect();
        let max = self.config.kafka.max_poll_records;
        let mut held: Option<Held> = None;
        let mut last_commit = Instant::now();
        let mut stored_since_commit = false;
        let commit_every = Duration::from_millis(self.config.kafka.auto_commit_interval_ms.max(10));
        let mut topic_names: HashMap<String, Arc<str>> = HashMap::new();
        loop {
            if self.inflight.store_done(&self.consumer) > 0 {
                stored_since_commit = true;
            }
            if !self.config.kafka.auto_commit
                && stored_since_commit
                && last_commit.elapsed() >= commit_every
            {
                self.commit(CommitMode::Async);
                last_commit = Instant::now();
                stored_since_commit = false;
            }
            self.status
                .polls_in_flight
                .store(self.inflight.len() as u64, Ordering::Relaxed);
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(h) = held.take() {
                match self.hand_over(h) {
                    Ok(()) => self.set_paused(false),
                    Err(Some(h)) => {
                        held = Some(h);
                        self.set_paused(true);
                        // Keep polling: it serves the group protocol and
                        // callbacks; a paused assignment delivers nothing.
                        if let Some(m) = self.consumer.poll(Duration::from_millis(20)) {
                            self.unexpected_while_paused(m);
                        }
                        continue;
                    }
                    Err(None) => break,
                }
                continue;
            }
            // Read one poll: up to max_poll_records messages.
            let mut msgs: Vec<Msg> = Vec::new();
            let mut wait = Duration::from_millis(100);
            while msgs.len() < max {
                match self.consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => {
                        let topic = topic_names
                            .entry(m.topic().to_string())
                            .or_insert_with(|| Arc::from(m.topic()))
                            .clone();
                        msgs.push(Msg {
                            kind: kinds.get(&*topic).copied(),
                            topic,
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().map(<[u8]>::to_vec),
                            payload: m.payload().map(<[u8]>::to_vec),
                        });
                        wait = Duration::ZERO;
                    }
                    Some(Err(e)) => {
                        tracing::warn!("kafka: consume error: {e}");
                        *self.status.last_error.lock().expect("lock") = Some(e.to_string());
                        break;
                    }
                }
            }
            if msgs.is_empty() {
                continue;
            }
            self.status.connected.store(true, Ordering::Relaxed);
            self.status
                .consumed
                .fetch_add(msgs.len() as u64, Ordering::Relaxed);
            let h = self.validate(msgs);
            match self.hand_over(h) {
                Ok(()) => {}
                Err(Some(h)) => {
                    held = Some(h);
                    self.set_paused(true);
                }
                Err(None) => break,
            }
        }
        self.finish();
    }

    /// A message delivered while paused (fetched before the pause): it is
    /// not kept; the partition is rewound to it, so it is read again after
    /// resuming.
    fn unexpected_while_paused(&self, m: KafkaResult<rdkafka::message::BorrowedMessage<'_>>) {
        if let Ok(m) = m {
            let mut tpl = TopicPartitionList::new();
            let _ = tpl.add_partition_offset(m.topic(), m.partition(), Offset::Offset(m.offset()));
            let _ = self.consumer.seek_partitions(tpl, Duration::from_secs(1));
        }
    }

    fn set_paused(&self, paused: bool) {
        if self.status.paused.swap(paused, Ordering::Relaxed) == paused {
            return;
        }
        if let Ok(tpl) = self.consumer.assignment() {
            let r = if paused {
                self.consumer.pause(&tpl)
            } else {
                self.consumer.resume(&tpl)
            };
            if let Err(e) = r {
                tracing::warn!("kafka: pause/resume: {e}");
            }
        }
        self.kmetrics.paused.set(paused as i64);
        if paused {
            tracing::info!("kafka: processing queue full, consumption paused");
        } else {
            tracing::info!("kafka: consumption resumed");
        }
    }

    /// Parse and validate a poll on the validation threads.
    fn validate(&self, msgs: Vec<Msg>) -> Held {
        let now = crate::store::now_ms();
        let enabled = self.config.event_consumers.enabled();
        let limit = self.config.kafka.max_message_bytes;
        let check = |m: &Msg| -> Result<ValidEvent, (&'static str, String)> {
            let Some(payload) = m.payload.as_deref().filter(|p| !p.is_empty()) else {
                return Err(("empty", "the message has no payload".into()));
            };
            if payload.len() > limit {
                return Err((
                    "oversized",
                    format!(
                        "the message has {} bytes, more than kafka.max_message_bytes ({limit})",
                        payload.len()
                    ),
                ));
            }
            let defaults = Defaults {
                kind: m.kind,
                id: Some(derived_id(&m.topic, m.partition, m.offset)),
            };
            event::parse_with(payload, now, &enabled, &defaults)
                .map_err(|e: EventError| (reason_of(&e), e.message))
        };
        let results = crate::ingest::map_parallel(&msgs, &self.validators, check);
        let mut offsets: BTreeMap<(Arc<str>, i32), i64> = BTreeMap::new();
        let results_topic = !self.config.kafka.results_topic.is_empty();
        let mut h = Held {
            valid: Vec::with_capacity(msgs.len()),
            origins: Vec::new(),
            dead: Vec::new(),
            offsets: Vec::new(),
        };
        // Counted per poll: (topic, outcome) -> messages.
        let mut counts: HashMap<(Arc<str>, &str), u64> = HashMap::new();
        for (m, r) in msgs.into_iter().zip(results) {
            let o = offsets
                .entry((m.topic.clone(), m.partition))
                .or_insert(m.offset);
            *o = (*o).max(m.offset);
            match r {
                Ok(e) => {
                    *counts.entry((m.topic.clone(), "accepted")).or_default() += 1;
                    if results_topic {
                        h.origins.push(Origin {
                            topic: m.topic.clone(),
                            partition: m.partition,
                            offset: m.offset,
                            kind: e.kind,
                        });
                    }
                    h.valid.push(e);
                }
                Err((reason, message)) => {
                    *counts.entry((m.topic.clone(), "dead_letter")).or_default() += 1;
                    self.kmetrics
                        .dead_letters
                        .with_label_values(&[reason])
                        .inc();
                    self.metrics.event(m.kind, EventStatus::Rejected).inc();
                    tracing::debug!(topic = %m.topic, partition = m.partition, offset = m.offset, reason, "kafka: dead letter: {message}");
                    h.dead.push(DeadLetter {
                        msg: m,
                        reason,
                        message,
                    });
                }
            }
        }
        for ((topic, outcome), n) in counts {
            self.kmetrics
                .messages
                .with_label_values(&[&*topic, outcome])
                .inc_by(n);
        }
        self.status
            .dead_lettered
            .fetch_add(h.dead.len() as u64, Ordering::Relaxed);
        h.offsets = offsets.into_iter().map(|((t, p), o)| (t, p, o)).collect();
        h
    }

    /// Give a poll to the pipeline and the dead-letter producer; its
    /// offsets are stored once both are done. `Err(Some)`: the pipeline is
    /// full, try again; `Err(None)`: the service is stopping.
    fn hand_over(&self, mut h: Held) -> Result<(), Option<Held>> {
        let receipts = if h.valid.is_empty() {
            None
        } else {
            let (tx, rx) = tokio::sync::oneshot::channel::<Vec<Receipt>>();
            let events = std::mem::take(&mut h.valid);
            let ack = Box::new(move |r| {
                let _ = tx.send(r);
            });
            match self.pipeline.try_submit(events, Some("kafka".into()), ack) {
                Ok(()) => Some(rx),
                Err((SubmitError::Busy { .. }, events)) => {
                    h.valid = events;
                    return Err(Some(h));
                }
                Err((e, _)) => {
                    // Closed or disabled: the service is stopping. (TooLarge
                    // cannot happen: max_poll_records <= queue_capacity.)
                    tracing::info!("kafka: poll not handed over ({e}); it is read again later");
                    return Err(None);
                }
            }
        };
        let id = self.inflight.register(h.offsets);
        let inflight = self.inflight.clone();
        let producer = self.producer.clone();
        let dlq = self.config.kafka.dead_letter_topic.clone();
        let results = self.config.kafka.results_topic.clone();
        let namespace = self.namespace;
        let origins = h.origins;
        let dead = h.dead;
        self.runtime.spawn(async move {
            let sends = dead.iter().map(|d| dead_letter(&producer, &dlq, d));
            futures::future::join_all(sends).await;
            if let Some(rx) = receipts {
                match rx.await {
                    Ok(receipts) => {
                        if !results.is_empty() {
                            publish_results(&producer, &results, namespace, &origins, &receipts)
                                .await;
                        }
                    }
                    // The pipeline dropped the poll (it stopped before
                    // storing it): its offsets must not be stored.
                    Err(_) => {
                        tracing::warn!(
                            "kafka: a poll was not stored; it is read again after a restart"
                        );
                        return;
                    }
                }
            }
            inflight.complete(id);
        });
        Ok(())
    }

    fn commit(&self, mode: CommitMode) {
        if let Err(e) = self.consumer.commit_consumer_state(mode)
            && e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset)
        {
            self.kmetrics.commit_errors.inc();
            tracing::warn!("kafka: commit failed: {e}");
        }
    }

    /// On shutdown: wait for what is in flight, store, commit, leave.
    fn finish(self) {
        let deadline = Instant::now() + Duration::from_secs(self.config.service.timeout.max(5));
        // Keep serving the client's callbacks while waiting.
        while !self
            .inflight
            .wait_all(Instant::now() + Duration::from_millis(50))
        {
            let _ = self.consumer.poll(Duration::ZERO);
            if Instant::now() >= deadline {
                tracing::warn!(
                    "kafka: polls still in flight at shutdown; they are read again after a restart"
                );
                break;
            }
        }
        self.inflight.store_done(&self.consumer);
        if self.status.subscribed.load(Ordering::Relaxed) {
            self.commit(CommitMode::Sync);
        }
        // Dropping the consumer closes it: it leaves the group at once.
        tracing::info!("kafka: consumer stopped, offsets committed");
    }

    /// Create missing topics (retried while the broker is away). Returns
    /// false if the service stops first.
    fn prepare_topics(&self) -> bool {
        let k = &self.config.kafka;
        let mut wanted: Vec<String> = self.topics.iter().map(|(_, t)| t.clone()).collect();
        wanted.push(k.dead_letter_topic.clone());
        if !k.results_topic.is_empty() {
            wanted.push(k.results_topic.clone());
        }
        let mut delay = Duration::from_millis(200);
        loop {
            match self.create_topics(&wanted) {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!("kafka: topics not ready ({e:#}); retrying in {delay:?}");
                    *self.status.last_error.lock().expect("lock") = Some(format!("{e:#}"));
                }
            }
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if self.stop.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    fn create_topics(&self, wanted: &[String]) -> anyhow::Result<()> {
        let metadata = self
            .consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .context("reading the broker's metadata")?;
        self.status.connected.store(true, Ordering::Relaxed);
        let existing: Vec<&str> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.name())
            .collect();
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|t| !existing.contains(&t.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let partitions = self.config.kafka.partitions;
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .runtime
            .block_on(self.admin.create_topics(&new, &opts))
            .context("creating topics")?;
        for r in results {
            match r {
                Ok(t) => tracing::info!(topic = %t, partitions, "kafka: topic created"),
                Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(topic = %t, "kafka: topic exists")
                }
                Err((t, code)) => anyhow::bail!("creating topic {t}: {code}"),
            }
        }
        Ok(())
    }
}

fn reason_of(e: &EventError) -> &'static str {
    use crate::event::EventErrorKind as K;
    match e.kind {
        K::MalformedJson => "malformed_json",
        K::Disabled => "disabled_type",
        _ if e.message.starts_with("unknown event_type") => "unknown_event_type",
        _ => "invalid_event",
    }
}

/// Send one dead letter; retried until the broker takes it (its offset is
/// not stored before).
async fn dead_letter(producer: &FutureProducer, topic: &str, d: &DeadLetter) {
    let partition = d.msg.partition.to_string();
    let offset = d.msg.offset.to_string();
    let failed_at = chrono::Utc::now().to_rfc3339();
    let mut attempt = 0u32;
    loop {
        let headers = OwnedHeaders::new_with_capacity(6)
            .insert(Header {
                key: "hxp-error",
                value: Some(d.reason),
            })
            .insert(Header {
                key: "hxp-error-message",
                value: Some(d.message.as_str()),
            })
            .insert(Header {
                key: "hxp-origin-topic",
                value: Some(&*d.msg.topic),
            })
            .insert(Header {
                key: "hxp-origin-partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "hxp-origin-offset",
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: "hxp-failed-at",
                value: Some(failed_at.as_str()),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(p) = d.msg.payload.as_deref() {
            record = record.payload(p);
        }
        if let Some(k) = d.msg.key.as_deref() {
            record = record.key(k);
        }
        match producer.send(record, Duration::from_secs(5)).await {
            Ok(_) => return,
            Err((e, _)) => {
                attempt += 1;
                tracing::warn!(
                    attempt,
                    "kafka: dead letter to {topic} failed: {e}; retrying"
                );
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
            }
        }
    }
}

/// The processing record of each stored event on the results topic.
async fn publish_results(
    producer: &FutureProducer,
    topic: &str,
    namespace: u64,
    origins: &[Origin],
    receipts: &[Receipt],
) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut sends = Vec::with_capacity(receipts.len());
    for (o, r) in origins.iter().zip(receipts) {
        let event_id = uuid::Uuid::from_u128(r.event_id).hyphenated().to_string();
        let body = json!({
            "processing_id": crate::api::processing_id(namespace, r.seq).hyphenated().to_string(),
            "event_id": event_id,
            "processing_type": o.kind.as_str(),
            "processing_timestamp": now,
            "duplicate": r.duplicate,
            "source": {"topic": &*o.topic, "partition": o.partition, "offset": o.offset},
        })
        .to_string();
        let producer = producer.clone();
        let topic = topic.to_string();
        sends.push(async move {
            for attempt in 1..=5u64 {
                let record = FutureRecord::to(&topic).key(&event_id).payload(&body);
                match producer.send(record, Duration::from_secs(5)).await {
                    Ok(_) => return,
                    Err((e, _)) => {
                        tracing::warn!(attempt, "kafka: result to {topic} failed: {e}");
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                }
            }
        });
    }
    futures::future::join_all(sends).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_id("llm-requests", 0, 42);
        assert_eq!(a, derived_id("llm-requests", 0, 42));
        assert_ne!(a, derived_id("llm-requests", 1, 42));
        assert_ne!(a, derived_id("llm-requests", 0, 43));
        assert_ne!(a, derived_id("user-feedback", 0, 42));
        assert_eq!(uuid::Uuid::from_u128(a).get_version_num(), 8);
    }

    #[test]
    fn topic_type_fills_in_a_missing_event_type() {
        let enabled = [true; 5];
        let d = Defaults {
            kind: Some(EventKind::UserFeedback),
            id: Some(derived_id("user-feedback", 0, 1)),
        };
        let e = event::parse_with(br#"{"data": {"satisfaction": 8}}"#, 0, &enabled, &d).unwrap();
        assert_eq!(e.kind, EventKind::UserFeedback);
        assert_eq!(e.typed.id, d.id.unwrap());
        // The message's own type and id win.
        let e = event::parse_with(
            br#"{"event_type": "error_event", "event_id": "0190a0a0-0000-7000-8000-000000000001", "data": {"service": "api", "error_type": "timeout"}}"#,
            0,
            &enabled,
            &d,
        )
        .unwrap();
        assert_eq!(e.kind, EventKind::ErrorEvent);
        assert_eq!(e.id, "0190a0a0-0000-7000-8000-000000000001");
    }
}
