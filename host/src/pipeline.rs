//! The processing pipeline:
//!
//! ```text
//! sources ─submit─▶ batcher ──▶ processor thread ──▶ writer ──▶ acknowledgement
//!  (HTTP, Kafka)   (seq, dedupe,  (analytics,          (one transaction
//!                   batches)       correlation,         per batch)
//!                                  responses)
//! ```
//!
//! - Intake is bounded by `stream_processing.queue_capacity` events: a
//!   submission that does not fit is refused at once (HTTP answers 503 with
//!   Retry-After) instead of growing memory. Capacity is given back when the
//!   events are stored.
//! - The batcher assigns sequence numbers, drops duplicates of recently seen
//!   event ids (they are acknowledged with the original's receipt), and closes
//!   a batch at `batch_size` or as soon as no more input is waiting, so a lone
//!   event goes straight through and batches grow under load.
//! - The processor thread owns the plugin instances. Before each batch it sets
//!   the plugins' clock to the batch's processing time, which is stored, so a
//!   restart can replay the events after the last checkpoint and continue the
//!   windows exactly.
//! - The writer stores each batch in one transaction, retrying while the
//!   database is away; only then are the events acknowledged.

use crate::config::Config;
use crate::event::ValidEvent;
use crate::plugin::{Clock, Plugin, PluginError, PluginKind, convert, types};
use crate::store::{AlertRow, BatchRow, BatchWrite, EventRow, Store};
use crate::telemetry::{EventStatus, Metrics};
use hxp_plugin_sdk::{ActionRequest, EventBatch, Finding, Snapshot};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

/// What a source learns once its events are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Sequence number of the stored event (the original, for a duplicate).
    pub seq: u64,
    pub event_id: u128,
    pub duplicate: bool,
}

/// Called once with the receipts of a submission, in order, when all its
/// events are stored.
pub type Ack = Box<dyn FnOnce(Vec<Receipt>) + Send>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("the processing queue is full ({queued} of {capacity} events waiting); retry shortly")]
    Busy { queued: usize, capacity: usize },
    #[error("the submission has {events} events, more than the queue holds ({capacity})")]
    TooLarge { events: usize, capacity: usize },
    #[error("stream processing is disabled (stream_processing.enabled is false)")]
    Disabled,
    #[error("the service is shutting down")]
    Closed,
}

/// The latest results, for the API and the metrics.
#[derive(Debug, Clone, Default)]
pub struct LiveView {
    pub snapshot: Option<Snapshot>,
    pub findings: Vec<Finding>,
    pub correlation_score: f64,
    pub last_actions: Vec<ActionRequest>,
    pub batches: u64,
    pub events: u64,
    pub duplicates: u64,
    pub last_batch_at: Option<i64>,
    pub last_batch_size: usize,
    /// Cumulative nanoseconds per stage: analytics, correlation, responses.
    pub stage_ns: [u64; 3],
    pub plugins: Vec<PluginStatus>,
    pub replayed: u64,
    /// Gaps (µs) between the last batch on an old plugin version and the
    /// first on the new one, when a batch was waiting; the last 1000 swaps.
    pub swap_gaps_us: VecDeque<u64>,
    /// For comparison: gaps between ordinary consecutive batches when the
    /// next one was waiting (a sample, the last 1000).
    pub batch_gaps_us: VecDeque<u64>,
}

fn push_capped(v: &mut VecDeque<u64>, gap: Duration) {
    if v.len() == 1000 {
        v.pop_front();
    }
    v.push_back(gap.as_micros() as u64);
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PluginStatus {
    pub name: String,
    pub stage: PluginKind,
    pub order: i32,
    pub version: String,
    pub wit_version: String,
    pub sha256: String,
    pub file: String,
    pub config_section: String,
    pub loaded_at: String,
    pub limits: crate::plugin::Limits,
    pub stats: crate::plugin::CallStats,
}

/// Shared counters the API reads without locks.
#[derive(Debug, Default)]
pub struct Counters {
    pub queued: AtomicUsize,
    pub stored: AtomicU64,
    pub db_failing: AtomicBool,
    pub db_last_error: Mutex<Option<String>>,
    pub writer_batches: AtomicU64,
}

struct Tracker {
    receipts: Mutex<Vec<Option<Receipt>>>,
    remaining: AtomicUsize,
    ack: Mutex<Option<Ack>>,
    _permit: Mutex<Option<OwnedSemaphorePermit>>,
    started: Instant,
}

impl Tracker {
    /// Record receipts; the last one runs the acknowledgement.
    fn complete(&self, done: &[(usize, Receipt)]) {
        {
            let mut receipts = self.receipts.lock().expect("receipts lock");
            for (index, r) in done {
                receipts[*index] = Some(*r);
            }
        }
        if self.remaining.fetch_sub(done.len(), Ordering::AcqRel) == done.len() {
            let receipts = std::mem::take(&mut *self.receipts.lock().expect("receipts lock"))
                .into_iter()
                .map(|r| r.expect("every receipt set"))
                .collect();
            if let Some(ack) = self.ack.lock().expect("ack lock").take() {
                ack(receipts);
            }
            self._permit.lock().expect("permit lock").take();
        }
    }
}

struct Submission {
    events: Vec<ValidEvent>,
    source: Option<String>,
    ingested_at: i64,
    tracker: Arc<Tracker>,
}

/// One event on its way through.
struct Item {
    tracker: Arc<Tracker>,
    index: usize,
    seq: u64,
    duplicate: bool,
    ingested_at: i64,
    source: Option<Arc<str>>,
    event: ValidEvent,
}

struct Batch {
    items: Vec<Item>,
}

enum WriterMsg {
    Batch {
        items: Vec<Item>,
        write: BatchWrite,
    },
    Checkpoint {
        plugin: String,
        version: String,
        state_version: u32,
        last_seq: u64,
        state: Vec<u8>,
    },
    Snapshot {
        taken_at: i64,
        json: String,
        retention_ms: i64,
    },
}

/// The sources' handle on the pipeline.
pub struct PipelineHandle {
    intake: Mutex<Option<mpsc::UnboundedSender<Submission>>>,
    permits: Arc<Semaphore>,
    capacity: usize,
    enabled: bool,
    pub counters: Arc<Counters>,
}

impl PipelineHandle {
    /// Queue validated events. `ack` runs once all are stored.
    pub fn submit(
        &self,
        events: Vec<ValidEvent>,
        source: Option<String>,
        ack: Ack,
    ) -> Result<(), SubmitError> {
        self.try_submit(events, source, ack).map_err(|(e, _)| e)
    }

    /// [`submit`](Self::submit), handing the events back when they are
    /// refused, so that a source can hold them and try again (Kafka, when
    /// the queue is full) without keeping a copy.
    pub fn try_submit(
        &self,
        events: Vec<ValidEvent>,
        source: Option<String>,
        ack: Ack,
    ) -> Result<(), (SubmitError, Vec<ValidEvent>)> {
        if !self.enabled {
            return Err((SubmitError::Disabled, events));
        }
        let n = events.len();
        if n == 0 {
            ack(Vec::new());
            return Ok(());
        }
        if n > self.capacity {
            let e = SubmitError::TooLarge {
                events: n,
                capacity: self.capacity,
            };
            return Err((e, events));
        }
        let permit = match self.permits.clone().try_acquire_many_owned(n as u32) {
            Ok(p) => p,
            Err(_) => {
                let e = SubmitError::Busy {
                    queued: self.counters.queued.load(Ordering::Relaxed),
                    capacity: self.capacity,
                };
                return Err((e, events));
            }
        };
        let tracker = Arc::new(Tracker {
            receipts: Mutex::new(vec![None; n]),
            remaining: AtomicUsize::new(n),
            ack: Mutex::new(Some(ack)),
            _permit: Mutex::new(Some(permit)),
            started: Instant::now(),
        });
        let guard = self.intake.lock().expect("intake lock");
        let Some(tx) = guard.as_ref() else {
            return Err((SubmitError::Closed, events));
        };
        self.counters.queued.fetch_add(n, Ordering::Relaxed);
        tx.send(Submission {
            events,
            source,
            ingested_at: crate::store::now_ms(),
            tracker,
        })
        .map_err(|e| (SubmitError::Closed, e.0.events))
    }

    /// Submit and wait for the receipts.
    pub async fn submit_and_wait(
        &self,
        events: Vec<ValidEvent>,
        source: Option<String>,
    ) -> Result<tokio::sync::oneshot::Receiver<Vec<Receipt>>, SubmitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            events,
            source,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        Ok(rx)
    }

    /// Stop intake; what is queued is still processed and stored.
    pub fn close(&self) {
        self.intake.lock().expect("intake lock").take();
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Recently seen event ids, for duplicate detection before the plugins.
struct RecentIds {
    map: HashMap<u128, u64, hxp_plugin_sdk::FxBuildHasher>,
    order: VecDeque<u128>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> RecentIds {
        RecentIds {
            map: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), Default::default()),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn get(&self, id: u128) -> Option<u64> {
        self.map.get(&id).copied()
    }

    fn insert(&mut self, id: u128, seq: u64) {
        if self.map.insert(id, seq).is_none() {
            self.order.push_back(id);
            if self.order.len() > self.capacity
                && let Some(old) = self.order.pop_front()
            {
                self.map.remove(&old);
            }
        }
    }
}

/// Event ids remembered for duplicate detection (and loaded at start).
pub const RECENT_IDS: usize = 200_000;

/// The running pipeline's parts the application keeps.
pub struct Pipeline {
    pub handle: Arc<PipelineHandle>,
    pub live: Arc<RwLock<LiveView>>,
    /// Resolves when everything submitted has been stored.
    pub done: tokio::task::JoinHandle<()>,
}

/// One deployed plugin: the instance and where it came from.
pub struct Slot {
    /// Deployment name (manifest `name`, else the file name without
    /// `.wasm`): state, metrics and the API key by it.
    pub name: Arc<str>,
    pub plugin: Plugin,
    /// Position within its stage (lower first; ties by name).
    pub order: i32,
    pub file: String,
    /// The config section it was configured with, and that section's JSON.
    pub section: String,
    pub section_json: String,
    pub loaded_at: String,
}

/// The deployed plugins, by stage then order.
pub struct Stages {
    slots: Vec<Slot>,
    pub clock: Clock,
    /// Which version of each plugin runs (JSON object), stored with every
    /// batch.
    versions: String,
}

impl Stages {
    pub fn new(slots: Vec<Slot>, clock: Clock) -> Stages {
        let mut s = Stages {
            slots,
            clock,
            versions: String::new(),
        };
        s.sort();
        s
    }

    /// Keep the order (after any change), and the version list.
    fn sort(&mut self) {
        self.slots.sort_by(|a, b| {
            (a.plugin.kind() as u8, a.order, &a.name).cmp(&(
                b.plugin.kind() as u8,
                b.order,
                &b.name,
            ))
        });
        let m: serde_json::Map<String, serde_json::Value> = self
            .slots
            .iter()
            .map(|s| (s.name.to_string(), json!(s.plugin.metadata().version)))
            .collect();
        self.versions = serde_json::Value::Object(m).to_string();
    }

    fn plugins_mut(&mut self) -> impl Iterator<Item = &mut Plugin> {
        self.slots.iter_mut().map(|s| &mut s.plugin)
    }

    /// The plugins of one stage, in order.
    fn stage_mut(&mut self, kind: PluginKind) -> impl Iterator<Item = &mut Plugin> {
        self.slots
            .iter_mut()
            .filter(move |s| s.plugin.kind() == kind)
            .map(|s| &mut s.plugin)
    }

    fn has(&self, kind: PluginKind) -> bool {
        self.slots.iter().any(|s| s.plugin.kind() == kind)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| &*s.name == name)
    }
}

/// Changes the deployer asks of the processor; applied between batches.
pub enum Control {
    /// Add a plugin, or replace the one of the same name (its state moves
    /// across).
    Install {
        slot: Box<Slot>,
        reply: oneshot::Sender<Result<Swapped, (String, Box<Slot>)>>,
    },
    /// Unload a plugin.
    Remove {
        name: String,
        reply: oneshot::Sender<Option<Swapped>>,
    },
    /// Apply a new config section (already tried on a scratch instance).
    Configure {
        name: String,
        json: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
}

/// What a swap did.
pub struct Swapped {
    /// The new version processes the batches after this sequence number.
    pub after_seq: u64,
    /// Time the processing path spent on it.
    pub pause: Duration,
    /// The new version could not read the old state and starts fresh (it
    /// declared that it may).
    pub fresh_start: Option<String>,
    /// The replaced (or removed) slot, to be dropped off the processing path.
    pub old: Option<Box<Slot>>,
}

/// Each plugin's last checkpoint (state version, bytes), for trying a new
/// version's load-state before it goes live.
pub type StateCache = Arc<Mutex<HashMap<String, (u32, Arc<Vec<u8>>)>>>;

/// Start the pipeline: restore plugin state, replay what was stored after the
/// last checkpoint, then process.
pub async fn start(
    config: Arc<Config>,
    store: Store,
    mut stages: Stages,
    metrics: Arc<Metrics>,
    control: mpsc::Receiver<Control>,
    states: StateCache,
    executor: crate::executor::ExecutorHandle,
) -> anyhow::Result<Pipeline> {
    let counters = Arc::new(Counters::default());
    let live = Arc::new(RwLock::new(LiveView::default()));

    // Restore and replay before taking new input.
    let seqs = SeqBlock::reserve(&store).await?;
    let replayed = restore(&store, &mut stages, &states).await?;
    live.write().expect("live lock").replayed = replayed;
    let mut recent = RecentIds::new(RECENT_IDS);
    for (id, seq) in store.recent_ids(RECENT_IDS).await?.into_iter().rev() {
        recent.insert(id, seq);
    }

    let capacity = config.stream_processing.queue_capacity;
    let (intake_tx, intake_rx) = mpsc::unbounded_channel();
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(2);
    let (write_tx, write_rx) = mpsc::channel::<WriterMsg>(4);
    let handle = Arc::new(PipelineHandle {
        intake: Mutex::new(Some(intake_tx)),
        permits: Arc::new(Semaphore::new(capacity)),
        capacity,
        enabled: config.stream_processing.enabled,
        counters: counters.clone(),
    });

    tokio::spawn(batcher(
        intake_rx,
        batch_tx,
        config.stream_processing.batch_size,
        seqs,
        recent,
        store.clone(),
    ));
    let proc_live = live.clone();
    let proc_metrics = metrics.clone();
    let proc_config = config.clone();
    let guardrails = crate::executor::Guardrails::new(&config.automated_response);
    std::thread::Builder::new()
        .name("processor".into())
        .spawn(move || {
            processor(
                Inputs {
                    batches: batch_rx,
                    control,
                },
                write_tx,
                stages,
                Shared {
                    config: proc_config,
                    metrics: proc_metrics,
                    live: proc_live,
                    states,
                    guardrails,
                },
            )
        })?;
    let done = tokio::spawn(writer(write_rx, store, metrics, counters, executor));
    Ok(Pipeline { handle, live, done })
}

/// Load each plugin's checkpoint and replay the events stored after it.
async fn restore(store: &Store, stages: &mut Stages, states: &StateCache) -> anyhow::Result<u64> {
    // Per slot: replay the events after its own checkpoint.
    let mut last: Vec<u64> = Vec::with_capacity(stages.slots.len());
    for slot in stages.slots.iter_mut() {
        let name = slot.name.to_string();
        let plugin = &mut slot.plugin;
        let from = match store.plugin_state(&name).await? {
            Some((version, last_seq, state)) => match plugin.load_state(version, &state) {
                Ok(()) => {
                    tracing::info!(plugin = %name, last_seq, bytes = state.len(), "plugin state restored");
                    states
                        .lock()
                        .expect("state cache")
                        .insert(name, (version, Arc::new(state)));
                    last_seq
                }
                Err(e) if plugin.metadata().fresh_start_ok => {
                    tracing::warn!(plugin = %name, error = %e, "checkpoint not loadable; plugin starts fresh");
                    u64::MAX
                }
                Err(e) => return Err(anyhow::anyhow!("restoring {name}: {e}")),
            },
            None => 0,
        };
        // Responses are not replayed: their requests were already made.
        last.push(if plugin.kind() == PluginKind::Responses {
            u64::MAX
        } else {
            from
        });
    }
    let Some(&replay_from) = last.iter().min().filter(|s| **s != u64::MAX) else {
        return Ok(0);
    };
    let mut after = replay_from;
    let mut replayed = 0u64;
    loop {
        let rows = store.events_after(after, 20_000).await?;
        if rows.is_empty() {
            break;
        }
        after = rows.last().expect("non-empty").seq;
        // Group by batch: same processing time, same clock.
        for batch in rows.chunk_by(|a, b| a.batch_seq == b.batch_seq) {
            let typed: Vec<(u64, hxp_plugin_sdk::Event)> = batch
                .iter()
                .filter_map(|r| Some((r.seq, r.typed()?)))
                .collect();
            stages.clock.set_ms(batch[0].processed_at);
            for (slot, &from) in stages.slots.iter_mut().zip(&last) {
                let events: Vec<hxp_plugin_sdk::Event> = typed
                    .iter()
                    .filter(|(seq, _)| *seq > from)
                    .map(|(_, e)| e.clone())
                    .collect();
                if events.is_empty() {
                    continue;
                }
                let wit = convert::batch_to_wit(EventBatch::from_events(&events));
                match slot.plugin.kind() {
                    PluginKind::Analytics => slot.plugin.analytics_process(&wit)?,
                    PluginKind::Correlation => {
                        slot.plugin.correlation_process(&wit)?;
                    }
                    PluginKind::Responses => {}
                }
            }
            replayed += batch.len() as u64;
        }
    }
    if replayed > 0 {
        tracing::info!(
            events = replayed,
            "replayed events stored after the last checkpoint"
        );
    }
    Ok(replayed)
}

async fn batcher(
    mut intake: mpsc::UnboundedReceiver<Submission>,
    out: mpsc::Sender<Batch>,
    batch_size: usize,
    mut seqs: SeqBlock,
    mut recent: RecentIds,
    store: Store,
) {
    // Events taken from the intake but not yet in a batch.
    let mut pending: VecDeque<Item> = VecDeque::new();
    let mut open = true;
    loop {
        if pending.is_empty() {
            match intake.recv().await {
                Some(s) => explode(s, &mut pending),
                None => break,
            }
        }
        // Take whatever else is already waiting, up to one batch.
        while open && pending.len() < batch_size {
            match intake.try_recv() {
                Ok(s) => explode(s, &mut pending),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        let n = pending.len().min(batch_size);
        let mut items: Vec<Item> = pending.drain(..n).collect();
        for item in &mut items {
            let id = item.event.typed.id;
            match recent.get(id) {
                Some(seq) => {
                    item.seq = seq;
                    item.duplicate = true;
                }
                None => {
                    item.seq = seqs.next(&store).await;
                    item.event.typed.seq = item.seq;
                    recent.insert(id, item.seq);
                }
            }
        }
        if out.send(Batch { items }).await.is_err() {
            return;
        }
        if !open && pending.is_empty() {
            break;
        }
    }
}

/// Sequence numbers reserved in the database, a block at a time, so that
/// instances sharing a database never collide.
struct SeqBlock {
    next: u64,
    end: u64,
}

const SEQ_BLOCK: u64 = 100_000;

impl SeqBlock {
    async fn reserve(store: &Store) -> anyhow::Result<SeqBlock> {
        let first = store.reserve_seqs(SEQ_BLOCK).await?;
        Ok(SeqBlock {
            next: first,
            end: first + SEQ_BLOCK,
        })
    }

    async fn next(&mut self, store: &Store) -> u64 {
        if self.next == self.end {
            // Retried while the database is away: intake backs up meanwhile.
            let mut delay = Duration::from_millis(50);
            *self = loop {
                match SeqBlock::reserve(store).await {
                    Ok(b) => break b,
                    Err(e) => {
                        tracing::warn!("reserving sequence numbers failed, retrying: {e:#}");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            };
        }
        let seq = self.next;
        self.next += 1;
        seq
    }
}

fn explode(s: Submission, pending: &mut VecDeque<Item>) {
    let source: Option<Arc<str>> = s.source.map(Arc::from);
    for (index, event) in s.events.into_iter().enumerate() {
        pending.push_back(Item {
            tracker: s.tracker.clone(),
            index,
            seq: 0,
            duplicate: false,
            ingested_at: s.ingested_at,
            source: source.clone(),
            event,
        });
    }
}

/// One plugin call, timed once: its histogram, the stage's nanoseconds,
/// and its failure if it failed.
fn timed<R>(
    metrics: &Metrics,
    plugin: &mut Plugin,
    op: &str,
    stage_ns: &mut u64,
    call: impl FnOnce(&mut Plugin) -> Result<R, PluginError>,
) -> Option<R> {
    let t = Instant::now();
    let r = call(plugin);
    let d = t.elapsed();
    *stage_ns += d.as_nanos() as u64;
    metrics
        .plugin_call
        .with_label_values(&[plugin.name(), op])
        .observe(d.as_secs_f64());
    r.map_err(|e| record_failure(metrics, &e)).ok()
}

fn record_failure(metrics: &Metrics, e: &PluginError) {
    let failure = serde_json::to_value(&e.failure)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    metrics
        .plugin_failures
        .with_label_values(&[&e.plugin, &failure])
        .inc();
}

/// What the processor thread receives.
struct Inputs {
    batches: mpsc::Receiver<Batch>,
    control: mpsc::Receiver<Control>,
}

/// What the processor thread shares with the rest.
struct Shared {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    live: Arc<RwLock<LiveView>>,
    states: StateCache,
    guardrails: crate::executor::Guardrails,
}

fn processor(mut input: Inputs, out: mpsc::Sender<WriterMsg>, mut stages: Stages, shared: Shared) {
    let Shared {
        config,
        metrics,
        live,
        states,
        mut guardrails,
    } = shared;
    let checkpoint_every = Duration::from_secs(config.real_time_analytics.update_interval);
    let history_every = Duration::from_secs(config.performance_metrics.update_interval);
    let retention_ms = config.performance_metrics.history_retention as i64 * 1000;
    let mut last_checkpoint = Instant::now();
    let mut last_history = Instant::now();
    let mut last_publish = Instant::now();
    let mut last_seq = 0u64;
    let mut rate = RateMeter::default();
    // End of the last batch, whether the next one was already waiting then,
    // and whether a swap happened since (to measure the gap it caused).
    let mut last_batch_end = Instant::now();
    let mut swap_pending = false;
    let mut next_batch_was_waiting = false;
    let mut ordinary_gaps = 0u64;
    publish_plugins(&stages, &live);
    // Serve the restored window from the start.
    stages.clock.set_ms(crate::store::now_ms());
    refresh_snapshot(&mut stages, &metrics, &live);
    loop {
        // Deployments first, between batches; then a batch, or refresh the
        // window when idle.
        let batch = match recv_timeout(&mut input, Duration::from_secs(1)) {
            Recv::Control(c) => {
                let swapped = apply_control(&mut stages, c, last_seq, &metrics);
                if swapped {
                    swap_pending = true;
                    publish_plugins(&stages, &live);
                }
                continue;
            }
            Recv::Batch(b) => Some(b),
            Recv::Idle => None,
            Recv::Closed => break,
        };
        let now = crate::store::now_ms();
        stages.clock.set_ms(now);
        if let Some(batch) = batch {
            let gap = last_batch_end.elapsed();
            if std::mem::take(&mut swap_pending) {
                // Only when this batch was already waiting as the last one
                // ended: then the gap is the swap and nothing else.
                if next_batch_was_waiting {
                    metrics.plugin_swap_gap.observe(gap.as_secs_f64());
                    push_capped(&mut live.write().expect("live lock").swap_gaps_us, gap);
                }
            } else if next_batch_was_waiting && batch.items.len() > 1 {
                // The baseline: ordinary consecutive batches under load.
                ordinary_gaps += 1;
                if ordinary_gaps.is_multiple_of(16) {
                    push_capped(&mut live.write().expect("live lock").batch_gaps_us, gap);
                }
            }
            last_seq = batch
                .items
                .iter()
                .map(|i| i.seq)
                .max()
                .unwrap_or(last_seq)
                .max(last_seq);
            let mut batch = batch;
            let write = process_batch(
                &mut stages,
                &mut batch,
                now,
                &config,
                &metrics,
                &live,
                &mut guardrails,
            );
            rate.add(batch.items.len());
            if out
                .blocking_send(WriterMsg::Batch {
                    items: batch.items,
                    write,
                })
                .is_err()
            {
                return;
            }
            // The batch is handed to the writer: the processor is free.
            last_batch_end = Instant::now();
            next_batch_was_waiting = !input.batches.is_empty();
        } else {
            // Idle: let the window slide in what we serve.
            refresh_snapshot(&mut stages, &metrics, &live);
        }
        metrics.throughput.set(rate.per_second());
        if last_checkpoint.elapsed() >= checkpoint_every {
            checkpoint(&mut stages, last_seq, &out, &metrics, &states);
            publish_plugins(&stages, &live);
            last_checkpoint = Instant::now();
            last_publish = Instant::now();
        } else if last_publish.elapsed() >= Duration::from_secs(1) {
            publish_plugins(&stages, &live);
            last_publish = Instant::now();
        }
        if config.performance_metrics.calculation_enabled && last_history.elapsed() >= history_every
        {
            if let Some(s) = &live.read().expect("live lock").snapshot {
                let json = serde_json::to_string(s).expect("snapshot serializes");
                let _ = out.blocking_send(WriterMsg::Snapshot {
                    taken_at: now,
                    json,
                    retention_ms,
                });
            }
            last_history = Instant::now();
        }
    }
    // Input closed: everything has been processed. Final checkpoint.
    checkpoint(&mut stages, last_seq, &out, &metrics, &states);
    publish_plugins(&stages, &live);
}

/// Apply one deployment change between batches. True when the set of
/// plugins (or a version) changed.
fn apply_control(stages: &mut Stages, c: Control, last_seq: u64, metrics: &Metrics) -> bool {
    match c {
        Control::Install { slot, reply } => {
            let started = Instant::now();
            let mut slot = slot;
            let mut fresh_start = None;
            let pos = stages.position(&slot.name);
            if let Some(i) = pos {
                let old = &mut stages.slots[i].plugin;
                if old.kind() != slot.plugin.kind() {
                    let msg = format!(
                        "{} is running as a {} plugin; this file is a {} plugin",
                        slot.name,
                        old.kind(),
                        slot.plugin.kind()
                    );
                    let _ = reply.send(Err((msg, slot)));
                    return false;
                }
                // The state moves across: the old version's, saved now.
                let moved = old
                    .save_state()
                    .map_err(|e| format!("the running version could not save its state: {e}"))
                    .and_then(|(v, bytes)| {
                        slot.plugin.load_state(v, &bytes).map_err(|e| {
                            format!(
                                "cannot load the running version's state (state version {v}): {e}"
                            )
                        })
                    });
                if let Err(msg) = moved {
                    if slot.plugin.metadata().fresh_start_ok {
                        fresh_start = Some(msg);
                    } else {
                        let _ = reply.send(Err((msg, slot)));
                        return false;
                    }
                }
            }
            let old = match pos {
                Some(i) => Some(Box::new(std::mem::replace(&mut stages.slots[i], *slot))),
                None => {
                    stages.slots.push(*slot);
                    None
                }
            };
            stages.sort();
            let pause = started.elapsed();
            metrics.plugin_swap_pause.observe(pause.as_secs_f64());
            let _ = reply.send(Ok(Swapped {
                after_seq: last_seq,
                pause,
                fresh_start,
                old,
            }));
            true
        }
        Control::Remove { name, reply } => {
            let started = Instant::now();
            let old = stages.position(&name).map(|i| stages.slots.remove(i));
            let removed = old.is_some();
            stages.sort();
            let _ = reply.send(old.map(|o| Swapped {
                after_seq: last_seq,
                pause: started.elapsed(),
                fresh_start: None,
                old: Some(Box::new(o)),
            }));
            removed
        }
        Control::Configure { name, json, reply } => {
            let r = match stages.position(&name) {
                None => Err(format!("{name} is not loaded")),
                Some(i) => {
                    let slot = &mut stages.slots[i];
                    slot.plugin
                        .configure(&json)
                        .map_err(|e| e.to_string())
                        .map(|()| {
                            slot.section_json = json;
                            last_seq
                        })
                }
            };
            let ok = r.is_ok();
            let _ = reply.send(r);
            ok
        }
    }
}

fn refresh_snapshot(stages: &mut Stages, metrics: &Metrics, live: &RwLock<LiveView>) {
    if let Some(a) = stages.stage_mut(PluginKind::Analytics).next() {
        match a.analytics_snapshot() {
            Ok(s) => {
                let s = convert::snapshot_to_sdk(s);
                metrics.set_analytics(&s);
                live.write().expect("live lock").snapshot = Some(s);
            }
            Err(e) => record_failure(metrics, &e),
        }
    }
}

/// Finding names, each once, in order.
pub fn pattern_names(findings: &[Finding]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for f in findings {
        if !names.contains(&f.name.as_str()) {
            names.push(&f.name);
        }
    }
    names
}

enum Recv {
    Control(Control),
    Batch(Batch),
    Idle,
    Closed,
}

/// Blocking receive with a timeout, for the processor thread (outside the
/// async runtime): a small current-thread runtime drives the timer.
/// Deployment changes come before batches.
fn recv_timeout(rx: &mut Inputs, timeout: Duration) -> Recv {
    if let Ok(c) = rx.control.try_recv() {
        return Recv::Control(c);
    }
    match rx.batches.try_recv() {
        Ok(b) => return Recv::Batch(b),
        Err(mpsc::error::TryRecvError::Disconnected) => return Recv::Closed,
        Err(mpsc::error::TryRecvError::Empty) => {}
    }
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("timer runtime");
    }
    RT.with(|rt| {
        rt.block_on(async {
            let wait = async {
                tokio::select! {
                    biased;
                    Some(c) = rx.control.recv() => Recv::Control(c),
                    b = rx.batches.recv() => match b {
                        Some(b) => Recv::Batch(b),
                        None => Recv::Closed,
                    },
                }
            };
            tokio::time::timeout(timeout, wait)
                .await
                .unwrap_or(Recv::Idle)
        })
    })
}

/// Events processed per second over the last 5 seconds.
#[derive(Default)]
struct RateMeter {
    window: VecDeque<(Instant, usize)>,
}

impl RateMeter {
    fn add(&mut self, n: usize) {
        self.window.push_back((Instant::now(), n));
    }

    fn per_second(&mut self) -> f64 {
        let horizon = Duration::from_secs(5);
        while self
            .window
            .front()
            .is_some_and(|(t, _)| t.elapsed() > horizon)
        {
            self.window.pop_front();
        }
        self.window.iter().map(|(_, n)| *n).sum::<usize>() as f64 / horizon.as_secs_f64()
    }
}

fn checkpoint(
    stages: &mut Stages,
    last_seq: u64,
    out: &mpsc::Sender<WriterMsg>,
    metrics: &Metrics,
    states: &StateCache,
) {
    for plugin in stages.plugins_mut() {
        match plugin.checkpoint() {
            Ok((state_version, state)) => {
                states.lock().expect("state cache").insert(
                    plugin.name().to_string(),
                    (state_version, Arc::new(state.clone())),
                );
                let _ = out.blocking_send(WriterMsg::Checkpoint {
                    plugin: plugin.name().to_string(),
                    version: plugin.metadata().version.clone(),
                    state_version,
                    last_seq,
                    state,
                });
            }
            Err(e) => record_failure(metrics, &e),
        }
    }
}

fn publish_plugins(stages: &Stages, live: &RwLock<LiveView>) {
    let list = stages
        .slots
        .iter()
        .map(|s| {
            let p = &s.plugin;
            PluginStatus {
                name: s.name.to_string(),
                stage: p.kind(),
                order: s.order,
                version: p.metadata().version.clone(),
                wit_version: p.loaded().wit_version.clone(),
                sha256: p.loaded().hash.clone(),
                file: s.file.clone(),
                config_section: s.section.clone(),
                loaded_at: s.loaded_at.clone(),
                limits: p.limits(),
                stats: p.stats(),
            }
        })
        .collect();
    live.write().expect("live lock").plugins = list;
}

/// Run one batch through the stages and prepare its write.
fn process_batch(
    stages: &mut Stages,
    batch: &mut Batch,
    now: i64,
    config: &Config,
    metrics: &Metrics,
    live: &RwLock<LiveView>,
    guardrails: &mut crate::executor::Guardrails,
) -> BatchWrite {
    let fresh: Vec<&Item> = batch.items.iter().filter(|i| !i.duplicate).collect();
    let batch_seq = fresh.first().map(|i| i.seq).unwrap_or(0);
    let mut builder = hxp_plugin_sdk::BatchBuilder::with_capacity(fresh.len());
    for item in &fresh {
        builder.push(&item.event.typed);
    }
    let wit_batch = convert::batch_to_wit(builder.finish());
    let mut stage_ns = [0u64; 3];

    // Analytics: every analytics plugin sees the batch; the first (in
    // order) provides the window that is served and handed to responses.
    let mut snapshot: Option<types::WindowSnapshot> = None;
    if config.real_time_analytics.enabled {
        for a in stages.stage_mut(PluginKind::Analytics) {
            let s = timed(metrics, a, "process", &mut stage_ns[0], |a| {
                a.analytics_process(&wit_batch)
                    .and_then(|_| a.analytics_snapshot())
            });
            if snapshot.is_none() {
                snapshot = s;
            }
        }
    }
    // Correlation: findings of every correlation plugin, in order; the
    // score is the highest.
    let mut correlation: Option<types::CorrelationResult> = None;
    if config.event_correlation.enabled {
        for c in stages.stage_mut(PluginKind::Correlation) {
            if let Some(r) = timed(metrics, c, "process", &mut stage_ns[1], |c| {
                c.correlation_process(&wit_batch)
            }) {
                match &mut correlation {
                    None => correlation = Some(r),
                    Some(all) => {
                        all.findings.extend(r.findings);
                        all.correlation_score = all.correlation_score.max(r.correlation_score);
                    }
                }
            }
        }
    }
    // Responses: each plugin decides on the window and all findings; their
    // requests are concatenated.
    let mut actions: Vec<ActionRequest> = Vec::new();
    let responding = config.automated_response.enabled && stages.has(PluginKind::Responses);
    if let (true, Some(s)) = (responding, snapshot.as_ref()) {
        let input = types::ResponseInput {
            time_ms: now,
            analytics: s.clone(),
            findings: correlation
                .as_ref()
                .map(|c| c.findings.clone())
                .unwrap_or_default(),
        };
        for r in stages.stage_mut(PluginKind::Responses) {
            if let Some(a) = timed(metrics, r, "decide", &mut stage_ns[2], |r| {
                r.responses_decide(&input)
            }) {
                actions.extend(a.into_iter().map(convert::action_to_sdk));
            }
        }
    }

    let snapshot = snapshot.map(convert::snapshot_to_sdk);
    let findings: Vec<Finding> = correlation
        .as_ref()
        .map(|c| {
            c.findings
                .iter()
                .cloned()
                .map(convert::finding_to_sdk)
                .collect()
        })
        .unwrap_or_default();
    let score = correlation
        .as_ref()
        .map(|c| c.correlation_score)
        .unwrap_or(0.0);

    // Metrics and the live view.
    if let Some(s) = &snapshot {
        metrics.set_analytics(s);
    }
    metrics.patterns.reset();
    for f in &findings {
        metrics.patterns.with_label_values(&[&f.name]).inc();
        if f.alert {
            metrics.alerts.with_label_values(&[&f.name]).inc();
        }
    }
    metrics.correlation_score.set(score);
    metrics.batch_size.observe(batch.items.len() as f64);

    // The batch's shared processing results.
    let analytics_json = snapshot.as_ref().map(|s| {
        let o = &s.overall;
        let mut m = serde_json::Map::new();
        m.insert("throughput".into(), json!(o.throughput));
        if let Some(l) = o.latency_avg {
            m.insert("latency".into(), json!(l));
        }
        m.insert("error_rate".into(), json!(o.error_rate));
        if let Some(u) = o.user_satisfaction {
            m.insert("user_satisfaction".into(), json!(u));
        }
        m.insert("business_value".into(), json!(o.business_value));
        serde_json::Value::Object(m).to_string()
    });
    let correlation_json = correlation.as_ref().map(|_| {
        json!({
            "patterns_detected": pattern_names(&findings),
            "alert_triggered": findings.iter().any(|f| f.alert),
            "correlation_score": score,
        })
        .to_string()
    });
    let response_json = responding.then(|| {
        json!({
            "response_triggered": !actions.is_empty(),
            "response_type": actions.first().map(|a| a.action.as_str()).unwrap_or("none"),
            "response_details": {
                "actions": actions.iter().map(|a| json!({
                    "rule": a.rule, "action": a.action, "target": a.target, "reason": a.reason,
                })).collect::<Vec<_>>(),
            },
        })
        .to_string()
    });
    let alerts: Vec<AlertRow> = findings
        .iter()
        .filter(|f| f.alert)
        .map(|f| AlertRow {
            raised_at: now,
            rule: f.name.clone(),
            source: f.source.clone(),
            subject: f.subject.clone(),
            occurrences: f.occurrences as i64,
            score: f.score,
            message: f.message.clone(),
            evidence: json!(f.evidence).to_string(),
        })
        .collect();
    let findings_json = serde_json::to_string(&findings).expect("findings serialize");
    // Guardrails decide now (in memory); executors act after the batch is
    // stored. A batch of duplicates only stores no rows, so it asks nothing.
    let (action_rows, jobs) = if fresh.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        guardrails.plan(
            &actions,
            batch_seq,
            now,
            &findings_json,
            analytics_json.as_deref(),
            metrics,
        )
    };
    let fresh_count = fresh.len();
    // The stored text moves out of the item; the item only acknowledges now.
    let events: Vec<EventRow> = batch
        .items
        .iter_mut()
        .filter(|i| !i.duplicate)
        .map(|i| EventRow {
            seq: i.seq,
            event_id: i.event.typed.id,
            event_type: i.event.kind.as_str(),
            event_time: i.event.time_ms,
            ingested_at: i.ingested_at,
            processed_at: now,
            batch_seq,
            source: i.source.clone(),
            data: std::mem::take(&mut i.event.data),
        })
        .collect();

    {
        let mut l = live.write().expect("live lock");
        if snapshot.is_some() {
            l.snapshot = snapshot;
        }
        if correlation.is_some() {
            l.findings = findings;
            l.correlation_score = score;
        }
        if !actions.is_empty() {
            l.last_actions = actions;
        }
        l.batches += 1;
        l.events += fresh_count as u64;
        l.duplicates += (batch.items.len() - fresh_count) as u64;
        l.last_batch_at = Some(now);
        l.last_batch_size = batch.items.len();
        for (a, b) in l.stage_ns.iter_mut().zip(stage_ns) {
            *a += b;
        }
    }

    BatchWrite {
        batch: (fresh_count > 0).then_some(BatchRow {
            batch_seq,
            processed_at: now,
            size: fresh_count,
            analytics: analytics_json,
            correlation: correlation_json,
            response: response_json,
            plugins: Some(stages.versions.clone()),
        }),
        events,
        alerts,
        actions: action_rows,
        jobs,
    }
}

/// Events written in one transaction at most, when batches queue up.
const GROUP_COMMIT_EVENTS: usize = 20_000;

async fn writer(
    mut input: mpsc::Receiver<WriterMsg>,
    store: Store,
    metrics: Arc<Metrics>,
    counters: Arc<Counters>,
    executor: crate::executor::ExecutorHandle,
) {
    let mut carried: Option<WriterMsg> = None;
    let mut last_checkpoint = Instant::now();
    let mut written_since_checkpoint = 0usize;
    loop {
        // The database's own checkpoint, between transactions: when nothing
        // waits (at most every 10 s), or after 64 MiB of events under
        // sustained load. Rare checkpoints delay few events.
        let idle = carried.is_none() && input.is_empty();
        if written_since_checkpoint > 0
            && ((idle && last_checkpoint.elapsed() >= Duration::from_secs(10))
                || written_since_checkpoint >= 64 << 20)
        {
            if let Err(e) = store.checkpoint().await {
                tracing::warn!(error = %format!("{e:#}"), "database checkpoint failed");
            }
            last_checkpoint = Instant::now();
            written_since_checkpoint = 0;
        }
        let msg = match carried.take() {
            Some(m) => m,
            None => match input.recv().await {
                Some(m) => m,
                None => break,
            },
        };
        match msg {
            WriterMsg::Batch { items, write } => {
                // Group commit: take every batch already waiting.
                let mut events = write.events.len();
                let mut group = vec![(items, write)];
                while events < GROUP_COMMIT_EVENTS {
                    match input.try_recv() {
                        Ok(WriterMsg::Batch { items, write }) => {
                            events += write.events.len();
                            group.push((items, write));
                        }
                        Ok(other) => {
                            carried = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let (items, mut writes): (Vec<Vec<Item>>, Vec<BatchWrite>) =
                    group.into_iter().unzip();
                let mut backoff = Duration::from_millis(50);
                loop {
                    let t = Instant::now();
                    match store.write_batches(&writes).await {
                        Ok(_) => {
                            metrics.db_write.observe(t.elapsed().as_secs_f64());
                            written_since_checkpoint += writes
                                .iter()
                                .flat_map(|w| &w.events)
                                .map(|e| e.data.len())
                                .sum::<usize>();
                            if counters.db_failing.swap(false, Ordering::Relaxed) {
                                tracing::info!("database writes recovered");
                            }
                            break;
                        }
                        Err(e) => {
                            metrics.db_errors.inc();
                            if !counters.db_failing.swap(true, Ordering::Relaxed) {
                                tracing::error!(error = %format!("{e:#}"), "database write failed; retrying until it succeeds");
                            }
                            *counters.db_last_error.lock().expect("lock") = Some(format!("{e:#}"));
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                        }
                    }
                }
                // Stored: the executors may act now (never waits; a full
                // queue records the request as failed).
                for job in writes.iter_mut().flat_map(|w| std::mem::take(&mut w.jobs)) {
                    executor.submit(job);
                }
                let items: Vec<Item> = items.into_iter().flatten().collect();
                counters
                    .writer_batches
                    .fetch_add(writes.len() as u64, Ordering::Relaxed);
                counters.queued.fetch_sub(items.len(), Ordering::Relaxed);
                counters.stored.fetch_add(events as u64, Ordering::Relaxed);
                metrics
                    .queue_depth
                    .set(counters.queued.load(Ordering::Relaxed) as i64);
                // Acknowledge per submission (consecutive items mostly share
                // one), counting per type without label lookups.
                let mut run: Vec<(usize, Receipt)> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let status = if item.duplicate {
                        EventStatus::Duplicate
                    } else {
                        EventStatus::Processed
                    };
                    metrics.event(Some(item.event.kind), status).inc();
                    metrics
                        .duration
                        .observe(item.tracker.started.elapsed().as_secs_f64());
                    run.push((
                        item.index,
                        Receipt {
                            seq: item.seq,
                            event_id: item.event.typed.id,
                            duplicate: item.duplicate,
                        },
                    ));
                    let last_of_run = items
                        .get(i + 1)
                        .is_none_or(|next| !Arc::ptr_eq(&next.tracker, &item.tracker));
                    if last_of_run {
                        item.tracker.complete(&run);
                        run.clear();
                    }
                }
            }
            WriterMsg::Checkpoint {
                plugin,
                version,
                state_version,
                last_seq,
                state,
            } => {
                if let Err(e) = store
                    .save_plugin_state(&plugin, &version, state_version, last_seq, &state)
                    .await
                {
                    tracing::warn!(plugin = %plugin, error = %format!("{e:#}"), "checkpoint not saved");
                }
            }
            WriterMsg::Snapshot {
                taken_at,
                json,
                retention_ms,
            } => {
                if let Err(e) = store.save_snapshot(taken_at, &json, retention_ms).await {
                    tracing::warn!(error = %format!("{e:#}"), "analytics history not saved");
                }
            }
        }
    }
}
