//! The writer: stores each processed batch in one transaction (group commit:
//! every batch already waiting joins it, up to [`GROUP_COMMIT_EVENTS`]),
//! retrying while the database is away; only then are the events
//! acknowledged and the batch's action requests handed to the executors.

use super::batcher::Item;
use super::intake::{Counters, Receipt};
use crate::actions::{ExecutorHandle, Job};
use crate::store::{BatchWrite, Store, WAL_LIMIT_BYTES, WalCheckpoint};
use crate::telemetry::{EventStatus, Metrics};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events written in one transaction at most, when batches queue up.
pub(super) const GROUP_COMMIT_EVENTS: usize = 20_000;

/// What the processor hands to the writer.
pub(super) enum WriterMsg {
    /// A processed batch: its items (to acknowledge), its rows, and the
    /// action requests to carry out once it is stored.
    Batch {
        items: Vec<Item>,
        write: BatchWrite,
        jobs: Vec<Job>,
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
    /// The processor dropped a batch of this many events (it panicked):
    /// their queue capacity comes back.
    Dropped { events: usize },
}

/// One batch of a group commit.
type Pending = (Vec<Item>, BatchWrite, Vec<Job>);

/// The writer task's parts.
pub(super) struct Writer {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub counters: Arc<Counters>,
    pub executor: ExecutorHandle,
}

/// Database checkpoints run between transactions: when nothing waits (at
/// most every 10 s), or under load when the write-ahead log file passes
/// [`WAL_LIMIT_BYTES`]. Rare checkpoints delay few events.
const CHECKPOINT_IDLE: Duration = Duration::from_secs(10);

/// When to checkpoint, if at all, given whether input waits, the time since
/// the last checkpoint and the log's size.
fn checkpoint_due(idle: bool, since: Duration, wal_bytes: u64) -> Option<WalCheckpoint> {
    if wal_bytes > 4 * WAL_LIMIT_BYTES {
        // Readers kept passive checkpoints from finishing: wait for them.
        Some(WalCheckpoint::Truncate)
    } else if wal_bytes > WAL_LIMIT_BYTES || (idle && since >= CHECKPOINT_IDLE && wal_bytes > 0) {
        Some(WalCheckpoint::Passive)
    } else {
        None
    }
}

impl Writer {
    /// Runs until the processor has finished and everything is stored.
    pub(super) async fn run(self, mut input: mpsc::Receiver<WriterMsg>) {
        let mut carried: Option<WriterMsg> = None;
        let mut last_checkpoint = Instant::now();
        let mut written = false;
        loop {
            let idle = carried.is_none() && input.is_empty();
            let wal = if written { self.store.wal_bytes() } else { 0 };
            if written {
                self.metrics.db_wal_bytes.set(wal as i64);
            }
            if let Some(mode) = checkpoint_due(idle, last_checkpoint.elapsed(), wal) {
                if let Err(e) = self.store.checkpoint(mode).await {
                    tracing::warn!(error = %format!("{e:#}"), "database checkpoint failed");
                }
                let label = match mode {
                    WalCheckpoint::Passive => "passive",
                    WalCheckpoint::Truncate => "truncate",
                };
                self.metrics
                    .db_checkpoints
                    .with_label_values(&[label])
                    .inc();
                last_checkpoint = Instant::now();
                written = false;
            }
            let msg = match carried.take() {
                Some(m) => m,
                None => match input.recv().await {
                    Some(m) => m,
                    None => break,
                },
            };
            match msg {
                WriterMsg::Batch { items, write, jobs } => {
                    let (group, next) = take_group((items, write, jobs), &mut input);
                    carried = next;
                    let events = group.iter().map(|g| g.0.len()).sum();
                    // A panic (a bug) fails this group only: its events are
                    // not acknowledged (HTTP clients retry, Kafka reads them
                    // again) and the writer goes on.
                    let commit = crate::util::panic::catch_async(self.commit(group)).await;
                    if let Err(panic) = commit {
                        self.metrics.workers.panicked("writer", &panic);
                        tracing::error!("writer: a group of {events} events failed: {panic}");
                    }
                    self.release(events);
                    written = true;
                }
                WriterMsg::Dropped { events } => self.release(events),
                other => self.side_write(other).await,
            }
        }
    }

    /// Store a group, then act and acknowledge.
    async fn commit(&self, group: Vec<Pending>) {
        let mut items = Vec::new();
        let mut writes = Vec::with_capacity(group.len());
        let mut jobs = Vec::new();
        for (i, w, j) in group {
            items.extend(i);
            writes.push(w);
            jobs.extend(j);
        }
        self.store_until_done(&writes).await;
        // Stored: the executors may act now (never waits; a full queue
        // records the request as failed).
        for job in jobs {
            self.executor.submit(job);
        }
        let events: usize = writes.iter().map(|w| w.events.len()).sum();
        let c = &self.counters;
        c.writer_batches
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        c.stored.fetch_add(events as u64, Ordering::Relaxed);
        acknowledge(&items, &self.metrics);
    }

    /// `events` left the queue (stored, or dropped by a panic).
    fn release(&self, events: usize) {
        let queued = &self.counters.queued;
        queued.fetch_sub(events, Ordering::Relaxed);
        self.metrics
            .queue_depth
            .set(queued.load(Ordering::Relaxed) as i64);
    }

    /// Write, retrying with backoff while the database fails: nothing that
    /// was accepted is dropped, intake backs up meanwhile.
    async fn store_until_done(&self, writes: &[BatchWrite]) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let t = Instant::now();
            match self.store.write_batches(writes).await {
                Ok(()) => {
                    self.metrics.db_write.observe(t.elapsed().as_secs_f64());
                    if self.counters.db_failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("database writes recovered");
                    }
                    return;
                }
                Err(e) => {
                    self.metrics.db_errors.inc();
                    if !self.counters.db_failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(error = %format!("{e:#}"), "database write failed; retrying until it succeeds");
                    }
                    *self
                        .counters
                        .db_last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(format!("{e:#}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// A plugin checkpoint or an analytics snapshot (failures are logged:
    /// the next one comes soon).
    async fn side_write(&self, msg: WriterMsg) {
        match msg {
            WriterMsg::Checkpoint {
                plugin,
                version,
                state_version,
                last_seq,
                state,
            } => {
                let saved = self
                    .store
                    .save_plugin_state(&plugin, &version, state_version, last_seq, &state)
                    .await;
                if let Err(e) = saved {
                    tracing::warn!(plugin = %plugin, error = %format!("{e:#}"), "checkpoint not saved");
                }
            }
            WriterMsg::Snapshot {
                taken_at,
                json,
                retention_ms,
            } => {
                if let Err(e) = self
                    .store
                    .save_snapshot(taken_at, &json, retention_ms)
                    .await
                {
                    tracing::warn!(error = %format!("{e:#}"), "analytics history not saved");
                }
            }
            WriterMsg::Batch { .. } | WriterMsg::Dropped { .. } => {
                unreachable!("batches are committed, not side-written")
            }
        }
    }
}

/// Group commit: `first` and every batch already waiting, up to
/// [`GROUP_COMMIT_EVENTS`]; a message of another kind is handed back to be
/// handled next.
fn take_group(
    first: Pending,
    input: &mut mpsc::Receiver<WriterMsg>,
) -> (Vec<Pending>, Option<WriterMsg>) {
    let mut events = first.1.events.len();
    let mut group = vec![first];
    while events < GROUP_COMMIT_EVENTS {
        match input.try_recv() {
            Ok(WriterMsg::Batch { items, write, jobs }) => {
                events += write.events.len();
                group.push((items, write, jobs));
            }
            Ok(other) => return (group, Some(other)),
            Err(_) => break,
        }
    }
    (group, None)
}

/// Acknowledge per submission (consecutive items mostly share one),
/// counting per type without label lookups.
pub(super) fn acknowledge(items: &[Item], metrics: &Metrics) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::Executors;
    use crate::config::Config;
    use crate::pipeline::batcher::tests::submission;
    use crate::store::{BatchRow, EventRow};

    /// A batch of the submission's events with these sequence numbers.
    fn batch(
        ids: &[u128],
        first_seq: u64,
    ) -> (WriterMsg, Arc<std::sync::Mutex<Option<Vec<Receipt>>>>) {
        let (s, acked) = submission(ids);
        let items: Vec<Item> = s
            .events
            .into_iter()
            .enumerate()
            .map(|(index, event)| Item {
                tracker: s.tracker.clone(),
                index,
                seq: first_seq + index as u64,
                duplicate: false,
                ingested_at: 1,
                source: None,
                event,
            })
            .collect();
        let events = items
            .iter()
            .map(|i| EventRow {
                seq: i.seq,
                event_id: i.event.typed.id,
                event_type: i.event.kind.as_str(),
                event_time: i.event.time_ms,
                ingested_at: 1,
                processed_at: 2,
                batch_seq: first_seq,
                source: None,
                data: i.event.data.clone(),
            })
            .collect();
        let write = BatchWrite {
            events,
            batch: Some(BatchRow {
                batch_seq: first_seq,
                processed_at: 2,
                size: items.len(),
                analytics: None,
                correlation: None,
                response: None,
                plugins: Some("{}".into()),
                watermark: None,
            }),
            alerts: Vec::new(),
            actions: Vec::new(),
        };
        let msg = WriterMsg::Batch {
            items,
            write,
            jobs: Vec::new(),
        };
        (msg, acked)
    }

    #[tokio::test]
    async fn waiting_batches_share_one_commit_and_each_submission_is_acked_once() {
        let store = crate::store::temp_store().await;
        let metrics = Arc::new(Metrics::new());
        let (executors, executor) =
            Executors::start(&Config::default(), store.clone(), metrics.clone())
                .await
                .unwrap();
        let counters = Arc::new(Counters::default());
        counters.queued.store(6, Ordering::Relaxed);
        let writer = Writer {
            store: store.clone(),
            metrics: metrics.clone(),
            counters: counters.clone(),
            executor,
        };
        let (tx, rx) = mpsc::channel(16);
        let mut acks = Vec::new();
        for (ids, seq) in [(vec![1u128, 2], 1), (vec![3], 3), (vec![4, 5, 6], 4)] {
            let (msg, acked) = batch(&ids, seq);
            tx.send(msg).await.unwrap();
            acks.push((acked, ids.len()));
        }
        drop(tx);
        writer.run(rx).await;
        // Three batches, already waiting: one transaction.
        assert_eq!(metrics.db_write.get_sample_count(), 1);
        assert_eq!(counters.writer_batches.load(Ordering::Relaxed), 3);
        assert_eq!(counters.stored.load(Ordering::Relaxed), 6);
        assert_eq!(counters.queued.load(Ordering::Relaxed), 0);
        for (acked, n) in acks {
            let receipts = acked.lock().unwrap().take().expect("acknowledged");
            assert_eq!(receipts.len(), n);
            assert!(
                receipts.windows(2).all(|w| w[0].seq + 1 == w[1].seq),
                "in order"
            );
        }
        let stored = store.events_after(0, 100).await.unwrap();
        let seqs: Vec<u64> = stored.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
        executors.shutdown(Duration::from_secs(1)).await;
    }
}
