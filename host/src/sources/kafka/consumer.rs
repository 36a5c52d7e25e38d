//! The consumer thread: polls, validates on the validation threads, hands
//! valid events to the pipeline and refused ones to the dead-letter topic,
//! pauses the assignment while the pipeline is full, and stores offsets
//! once each poll is done.

use super::context::Ctx;
use super::dead_letter::{DeadLetter, dead_letter};
use super::message::{Msg, check};
use super::offsets::Inflight;
use super::results::publish_results;
use super::status::{KafkaMetrics, KafkaStatus};
use crate::config::Config;
use crate::event::ValidEvent;
use crate::pipeline::{PipelineHandle, Receipt, SubmitError};
use crate::telemetry::{EventStatus, Metrics};
use hxp_plugin_sdk::EventKind;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub(super) struct Worker {
    pub(super) config: Arc<Config>,
    pub(super) topics: Vec<super::Topic>,
    pub(super) consumer: BaseConsumer<Ctx>,
    pub(super) producer: FutureProducer,
    pub(super) admin: AdminClient<DefaultClientContext>,
    pub(super) pipeline: Arc<PipelineHandle>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) kmetrics: KafkaMetrics,
    pub(super) status: Arc<KafkaStatus>,
    pub(super) inflight: Arc<Inflight>,
    pub(super) validators: Arc<rayon::ThreadPool>,
    pub(super) namespace: u64,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) runtime: tokio::runtime::Handle,
}

/// A poll that has been read and validated but not yet accepted by the
/// pipeline (it was full).
struct Held {
    pub(super) valid: Vec<ValidEvent>,
    /// Where each valid event came from; kept only for the results topic.
    pub(super) origins: Vec<Origin>,
    pub(super) dead: Vec<DeadLetter>,
    pub(super) offsets: Vec<(Arc<str>, i32, i64)>,
}

/// A valid event's message, for its record on the results topic.
pub(super) struct Origin {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) kind: EventKind,
}

/// Turns client messages into [`Msg`]s: each topic's name shared, its
/// event type looked up once.
struct Reader {
    kinds: HashMap<String, EventKind>,
    names: HashMap<String, Arc<str>>,
    /// Messages that arrived while consumption was paused, in order; the
    /// next polls take them first.
    backlog: std::collections::VecDeque<Msg>,
}

impl Reader {
    fn new(topics: &[super::Topic]) -> Reader {
        Reader {
            kinds: topics
                .iter()
                .filter_map(|t| Some((t.name.clone(), t.default_kind?)))
                .collect(),
            names: HashMap::new(),
            backlog: Default::default(),
        }
    }

    fn copy(&mut self, m: &rdkafka::message::BorrowedMessage<'_>) -> Msg {
        let topic = self
            .names
            .entry(m.topic().to_string())
            .or_insert_with(|| Arc::from(m.topic()))
            .clone();
        Msg {
            kind: self.kinds.get(&*topic).copied(),
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        }
    }
}

/// When offsets were last committed by us.
struct Commits {
    last: Instant,
    stored_since: bool,
    every: Duration,
}

impl Worker {
    /// Consume until the service stops (`Ok`), or until this consumer
    /// cannot go on (`Err`: the supervisor starts a new one, which reads
    /// on from the committed offsets).
    pub(super) fn run(self) -> Result<(), String> {
        if !self.prepare_topics() {
            return Ok(());
        }
        let names: Vec<&str> = self.topics.iter().map(|t| t.name.as_str()).collect();
        if let Err(e) = self.consumer.subscribe(&names) {
            *self
                .status
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(format!("subscribe: {e}"));
            return Err(format!("subscribing to {names:?} failed: {e}"));
        }
        self.status.subscribed.store(true, Ordering::Relaxed);
        tracing::info!(group = %self.config.kafka.consumer_group, topics = ?names, "kafka: consuming");
        let mut reader = Reader::new(&self.topics);
        let mut commits = Commits {
            last: Instant::now(),
            stored_since: false,
            every: Duration::from_millis(self.config.kafka.auto_commit_interval_ms.max(10)),
        };
        let mut held: Option<Held> = None;
        let mut outcome = Ok(());
        loop {
            self.store_and_commit(&mut commits);
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            if self.inflight.failed() {
                outcome = Err(
                    "a poll was dropped before it was stored; reading again from the committed offsets"
                        .to_string(),
                );
                break;
            }
            if let Some(h) = held.take() {
                match self.hand_over(h) {
                    Ok(()) => self.set_paused(false),
                    Err(Some(h)) => {
                        held = Some(h);
                        self.set_paused(true);
                        // Keep polling: it serves the group protocol and
                        // callbacks. Messages fetched before the pause may
                        // still arrive: they are kept, in order, for the
                        // next poll.
                        if let Some(m) = self.consumer.poll(Duration::from_millis(20)) {
                            self.keep_while_paused(m, &mut reader);
                        }
                    }
                    Err(None) => break,
                }
                continue;
            }
            let msgs = self.read_poll(&mut reader);
            if msgs.is_empty() {
                continue;
            }
            self.status.connected.store(true, Ordering::Relaxed);
            self.status
                .consumed
                .fetch_add(msgs.len() as u64, Ordering::Relaxed);
            match self.hand_over_waiting(self.validate(msgs)) {
                Ok(()) => {}
                Err(Some(h)) => {
                    held = Some(h);
                    self.set_paused(true);
                }
                Err(None) => break,
            }
        }
        self.finish();
        outcome
    }

    /// Store the offsets of finished polls; without librdkafka's
    /// auto-commit, commit them every `auto_commit_interval_ms`.
    fn store_and_commit(&self, c: &mut Commits) {
        if self.inflight.store_done(&self.consumer) > 0 {
            c.stored_since = true;
            self.status.progressed();
        }
        if !self.config.kafka.auto_commit && c.stored_since && c.last.elapsed() >= c.every {
            self.commit(CommitMode::Async);
            c.last = Instant::now();
            c.stored_since = false;
        }
        self.status
            .polls_in_flight
            .store(self.inflight.len() as u64, Ordering::Relaxed);
    }

    /// One poll: up to `max_poll_records` messages, copied out of the
    /// client's buffers (waiting up to 100 ms for the first).
    fn read_poll(&self, reader: &mut Reader) -> Vec<Msg> {
        let max = self.config.kafka.max_poll_records;
        let take = max.min(reader.backlog.len());
        let mut msgs: Vec<Msg> = reader.backlog.drain(..take).collect();
        let mut wait = if msgs.is_empty() {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        while msgs.len() < max {
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => {
                    msgs.push(reader.copy(&m));
                    wait = Duration::ZERO;
                }
                Some(Err(e)) => {
                    tracing::warn!("kafka: consume error: {e}");
                    *self
                        .status
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                    break;
                }
            }
        }
        msgs
    }

    /// A message delivered while paused (fetched before the pause): kept
    /// for the next poll, so nothing is skipped and no seek is needed. (A
    /// seek per such message, as before, rewound only to the last one: the
    /// ones before it were lost.)
    fn keep_while_paused(
        &self,
        m: KafkaResult<rdkafka::message::BorrowedMessage<'_>>,
        reader: &mut Reader,
    ) {
        match m {
            Ok(m) => {
                let msg = reader.copy(&m);
                reader.backlog.push_back(msg);
            }
            Err(e) => tracing::warn!("kafka: consume error while paused: {e}"),
        }
    }

    /// Hand a poll over, waiting up to `kafka.pause_after_ms` for room: a
    /// queue that drains within that time costs no pause (and no refetch).
    fn hand_over_waiting(&self, mut h: Held) -> Result<(), Option<Held>> {
        let deadline = Instant::now() + Duration::from_millis(self.config.kafka.pause_after_ms);
        loop {
            match self.hand_over(h) {
                Err(Some(back))
                    if Instant::now() < deadline && !self.stop.load(Ordering::Relaxed) =>
                {
                    h = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                r => return r,
            }
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
            self.kmetrics.pauses.inc();
            tracing::info!("kafka: processing queue full, consumption paused");
        } else {
            tracing::info!("kafka: consumption resumed");
        }
    }

    /// Parse and validate a poll on the validation threads.
    fn validate(&self, msgs: Vec<Msg>) -> Held {
        let now = crate::store::now_ms();
        let accept = self.config.acceptance();
        let limit = self.config.kafka.max_message_bytes;
        let check = |m: &Msg| check(m, limit, now, &accept);
        let results = crate::sources::validate::map_parallel(&msgs, &self.validators, check);
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
        // Each partition is a lane of the watermark.
        let mut lanes: HashMap<(Arc<str>, i32), Arc<str>> = HashMap::new();
        for (m, r) in msgs.into_iter().zip(results) {
            let o = offsets
                .entry((m.topic.clone(), m.partition))
                .or_insert(m.offset);
            *o = (*o).max(m.offset);
            match r {
                Ok(mut e) => {
                    let lane = lanes
                        .entry((m.topic.clone(), m.partition))
                        .or_insert_with(|| Arc::from(format!("{}/{}", m.topic, m.partition)));
                    e.lane = Some(lane.clone());
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
                        .with_label_values(&[reason.as_str()])
                        .inc();
                    self.metrics.event(m.kind, EventStatus::Rejected).inc();
                    tracing::debug!(topic = %m.topic, partition = m.partition, offset = m.offset, reason = reason.as_str(), "kafka: dead letter: {message}");
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
                    // The pipeline dropped the poll (it failed, or stopped,
                    // before storing it): its offsets must not be stored,
                    // and the consumer starts over from the committed ones.
                    Err(_) => {
                        tracing::warn!("kafka: a poll was not stored; it is read again");
                        inflight.fail(id);
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
}
