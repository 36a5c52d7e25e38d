//! The batcher: takes submissions off the intake, gives each event its
//! sequence number (reserved from the database in blocks), marks duplicates
//! of recently seen event ids, and closes a batch at the size in use (see
//! `sizing`) or as soon as no more input is waiting, so a lone event goes
//! straight through and batches grow under load.

use super::intake::{Submission, Tracker};
use super::sizing::BatchSizing;
use crate::event::ValidEvent;
use crate::store::Store;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// One event on its way through.
pub(super) struct Item {
    pub(super) tracker: Arc<Tracker>,
    pub(super) index: usize,
    pub(super) seq: u64,
    pub(super) duplicate: bool,
    pub(super) ingested_at: i64,
    pub(super) source: Option<Arc<str>>,
    pub(super) event: ValidEvent,
}

pub(super) struct Batch {
    pub(super) items: Vec<Item>,
    /// The batch size in use when it closed.
    pub(super) limit: usize,
}

/// Recently seen event ids, for duplicate detection before the plugins.
/// Ids are chosen by clients, so the map hashes with keys of its own
/// (aHash, keys random per process): with an unkeyed hash, 40,000 ids
/// built to collide cost 7.7 s and 200,000 would cost minutes. (std's
/// SipHash, also keyed, cost 3% of the service's CPU at 150k events/s.)
pub(super) struct RecentIds {
    map: HashMap<u128, u64, ahash::RandomState>,
    order: VecDeque<u128>,
    capacity: usize,
}

impl RecentIds {
    pub(super) fn new(capacity: usize) -> RecentIds {
        RecentIds {
            map: HashMap::with_capacity_and_hasher(
                capacity.min(1 << 16),
                ahash::RandomState::new(),
            ),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn get(&self, id: u128) -> Option<u64> {
        self.map.get(&id).copied()
    }

    pub(super) fn insert(&mut self, id: u128, seq: u64) {
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

/// Runs until the intake closes and everything taken from it went out in
/// a batch.
pub(super) async fn batcher(
    mut intake: mpsc::UnboundedReceiver<Submission>,
    out: mpsc::Sender<Batch>,
    mut batcher: Batcher,
) {
    loop {
        if batcher.pending.is_empty() {
            match intake.recv().await {
                Some(s) => batcher.add(s),
                None => break,
            }
        }
        batcher.take_waiting(&mut intake);
        let limit = batcher.sizing.limit();
        let closed = batcher.close();
        let waiting = !batcher.pending.is_empty() || !intake.is_empty();
        batcher.sizing.closed(closed.len(), waiting);
        let items = batcher.number(closed).await;
        if out.send(Batch { items, limit }).await.is_err() {
            return;
        }
        if batcher.drained() {
            break;
        }
    }
}

/// Events taken from the intake and not yet in a batch, and what numbers
/// and deduplicates them.
pub(super) struct Batcher {
    pending: VecDeque<Item>,
    /// False once the intake closed.
    open: bool,
    sizing: BatchSizing,
    seqs: SeqBlock,
    recent: RecentIds,
    store: Store,
}

impl Batcher {
    pub(super) fn new(
        sizing: BatchSizing,
        seqs: SeqBlock,
        recent: RecentIds,
        store: Store,
    ) -> Self {
        Batcher {
            pending: VecDeque::new(),
            open: true,
            sizing,
            seqs,
            recent,
            store,
        }
    }

    /// A submission's events, in order, at the end of the queue.
    fn add(&mut self, s: Submission) {
        explode(s, &mut self.pending);
    }

    /// Take whatever else is already waiting, up to one batch: the batch
    /// closes when it is full or when nothing more is waiting.
    fn take_waiting(&mut self, intake: &mut mpsc::UnboundedReceiver<Submission>) {
        while self.open && self.pending.len() < self.sizing.limit() {
            match intake.try_recv() {
                Ok(s) => self.add(s),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.open = false,
            }
        }
    }

    /// The next batch: at most the size in use of the pending events.
    fn close(&mut self) -> Vec<Item> {
        let n = self.pending.len().min(self.sizing.limit());
        self.pending.drain(..n).collect()
    }

    /// Give each event its sequence number; an id seen recently is a
    /// duplicate and gets the original's.
    async fn number(&mut self, mut items: Vec<Item>) -> Vec<Item> {
        for item in &mut items {
            let id = item.event.typed.id;
            match self.recent.get(id) {
                Some(seq) => {
                    item.seq = seq;
                    item.duplicate = true;
                }
                None => {
                    item.seq = self.seqs.next(&self.store).await;
                    item.event.typed.seq = item.seq;
                    self.recent.insert(id, item.seq);
                }
            }
        }
        items
    }

    /// The intake closed and nothing is left.
    fn drained(&self) -> bool {
        !self.open && self.pending.is_empty()
    }
}

/// Sequence numbers reserved in the database, a block at a time, so that
/// instances sharing a database never collide.
pub(super) struct SeqBlock {
    next: u64,
    end: u64,
}

const SEQ_BLOCK: u64 = 100_000;

impl SeqBlock {
    pub(super) async fn reserve(store: &Store) -> anyhow::Result<SeqBlock> {
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::pipeline::intake::{Receipt, Tracker};
    use std::sync::Mutex;

    /// An event with a chosen id (so a test can resend it).
    pub(crate) fn event(id: u128) -> ValidEvent {
        let text = format!(
            r#"{{"event_type":"error_event","event_id":"{}","data":{{"service":"api","error_type":"timeout"}}}}"#,
            uuid::Uuid::from_u128(id)
        );
        crate::event::parse(
            text.as_bytes(),
            1_700_000_000_000,
            &crate::event::Acceptance::ALL,
        )
        .unwrap()
    }

    /// A submission of events with these ids; its receipts land in the
    /// returned cell.
    pub(crate) fn submission(ids: &[u128]) -> (Submission, Arc<Mutex<Option<Vec<Receipt>>>>) {
        let acked = Arc::new(Mutex::new(None));
        let cell = acked.clone();
        let ack = Box::new(move |r| *cell.lock().unwrap() = Some(r));
        let s = Submission {
            events: ids.iter().map(|&id| event(id)).collect(),
            source: None,
            ingested_at: 1,
            tracker: Arc::new(Tracker::new(ids.len(), ack, None)),
        };
        (s, acked)
    }

    /// Run the batcher over what is queued, then closed; the batches' ids.
    async fn batches_of(batch_size: usize, subs: Vec<Vec<u128>>) -> Vec<Vec<(u128, u64, bool)>> {
        batches_sized(BatchSizing::new(batch_size, batch_size), subs).await
    }

    async fn batches_sized(
        sizing: BatchSizing,
        subs: Vec<Vec<u128>>,
    ) -> Vec<Vec<(u128, u64, bool)>> {
        let (tx, rx) = mpsc::unbounded_channel();
        for ids in subs {
            tx.send(submission(&ids).0).unwrap();
        }
        drop(tx);
        let (out, mut batches) = mpsc::channel(100);
        let store = crate::store::temp_store().await;
        let seqs = SeqBlock::reserve(&store).await.unwrap();
        let batching = Batcher::new(sizing, seqs, RecentIds::new(100), store);
        batcher(rx, out, batching).await;
        let mut all = Vec::new();
        while let Ok(b) = batches.try_recv() {
            all.push(
                b.items
                    .iter()
                    .map(|i| (i.event.typed.id, i.seq, i.duplicate))
                    .collect(),
            );
        }
        all
    }

    #[tokio::test]
    async fn batches_close_when_full_and_take_what_waits() {
        let batches = batches_of(3, vec![vec![1, 2], vec![3, 4, 5], vec![6]]).await;
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        // 2 + 3 + 1 events waiting: two full batches of 3 (a submission is
        // split across batches), no event left behind.
        assert_eq!(sizes, vec![3, 3], "{batches:?}");
        let ids: Vec<u128> = batches.iter().flatten().map(|e| e.0).collect();
        assert_eq!(ids, vec![1, 2, 3, 4, 5, 6], "order kept");
    }

    #[tokio::test]
    async fn batches_grow_under_a_backlog_and_shrink_when_it_is_gone() {
        // 30 events waiting at once, then the intake closes: 3 (base),
        // 6, 12 (the maximum), then the 9 left close a batch early.
        let ids: Vec<Vec<u128>> = (1..=30).map(|i| vec![i]).collect();
        let batches = batches_sized(BatchSizing::new(3, 12), ids).await;
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 6, 12, 9], "{batches:?}");
        let ids: Vec<u128> = batches.iter().flatten().map(|e| e.0).collect();
        assert_eq!(ids, (1..=30).collect::<Vec<_>>(), "every event, in order");
    }

    #[tokio::test]
    async fn a_lone_event_goes_out_at_once() {
        let store = crate::store::temp_store().await;
        let seqs = SeqBlock::reserve(&store).await.unwrap();
        let batching = Batcher::new(
            BatchSizing::new(100, 1000),
            seqs,
            RecentIds::new(100),
            store,
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let (out, mut batches) = mpsc::channel(10);
        let task = tokio::spawn(batcher(rx, out, batching));
        tx.send(submission(&[7]).0).unwrap();
        // The intake stays open: the batch must not wait to fill.
        let b = tokio::time::timeout(Duration::from_secs(5), batches.recv())
            .await
            .expect("a lone event is not held back")
            .unwrap();
        assert_eq!(b.items.len(), 1);
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn resent_ids_are_duplicates_with_the_original_sequence_number() {
        let batches = batches_of(10, vec![vec![1, 2], vec![2, 3, 1]]).await;
        let all: Vec<(u128, u64, bool)> = batches.into_iter().flatten().collect();
        let seq_of = |id| all.iter().find(|e| e.0 == id && !e.2).unwrap().1;
        assert_eq!(all.iter().filter(|e| e.2).count(), 2, "{all:?}");
        for (id, seq, duplicate) in &all {
            assert_eq!(*seq, seq_of(*id), "id {id} keeps one sequence number");
            if *duplicate {
                assert!(*id == 1 || *id == 2);
            }
        }
        let mut fresh: Vec<u64> = all.iter().filter(|e| !e.2).map(|e| e.1).collect();
        let sorted = {
            let mut s = fresh.clone();
            s.sort();
            s.dedup();
            s
        };
        fresh.dedup();
        assert_eq!(fresh, sorted, "new events get increasing, distinct numbers");
    }

    #[test]
    fn recent_ids_forget_the_oldest_beyond_capacity() {
        let mut r = RecentIds::new(2);
        r.insert(1, 10);
        r.insert(2, 20);
        r.insert(1, 11); // already known: no new entry
        r.insert(3, 30);
        assert_eq!(r.get(1), None, "the oldest is evicted");
        assert_eq!(r.get(2), Some(20));
        assert_eq!(r.get(3), Some(30));
    }

    /// 60,000 ids that all hash alike under an unkeyed FxHash (the hasher
    /// this map used): the second half of each id undoes the first.
    fn colliding_under_fx(n: u64) -> Vec<u128> {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        (0..n)
            .map(|lo| {
                let hi = lo.wrapping_mul(K).rotate_left(5) ^ 0x5eed;
                ((hi as u128) << 64) | lo as u128
            })
            .collect()
    }

    fn fx(id: u128) -> u64 {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let step = |h: u64, v: u64| (h.rotate_left(5) ^ v).wrapping_mul(K);
        step(step(0, id as u64), (id >> 64) as u64)
    }

    #[test]
    fn ids_built_to_collide_spread_over_the_keyed_hash() {
        let ids = colliding_under_fx(60_000);
        let unkeyed: std::collections::HashSet<u64> = ids.iter().map(|&i| fx(i)).collect();
        assert_eq!(unkeyed.len(), 1, "the ids collide under an unkeyed hash");
        let mut r = RecentIds::new(RECENT_IDS);
        for (seq, &id) in ids.iter().enumerate() {
            r.insert(id, seq as u64);
        }
        let keyed: std::collections::HashSet<u64> =
            ids.iter().map(|&i| r.map.hasher().hash_one(i)).collect();
        // 60,000 random 64-bit values: a repeat has odds of about 1e-10.
        assert_eq!(keyed.len(), ids.len(), "every id has its own hash");
        assert!(
            ids.iter()
                .enumerate()
                .all(|(s, &id)| r.get(id) == Some(s as u64))
        );
    }
}
