//! Offsets stored only after persistence: the polls handed to the
//! pipeline, in poll order, and what each lets the consumer store when it
//! is done. Offsets are stored strictly in poll order, so a committed offset
//! never passes an event that is not stored.

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Polls handed to the pipeline, in poll order, and what each will let us
/// store when it is done.
#[derive(Default)]
struct InflightState {
    next_id: u64,
    polls: BTreeMap<u64, Poll>,
    /// The first poll the pipeline dropped without storing it: its
    /// offsets, and every later poll's, are never stored by this consumer.
    failed: Option<u64>,
}

struct Poll {
    /// Highest offset per partition in this poll.
    offsets: Vec<(Arc<str>, i32, i64)>,
    done: bool,
}

#[derive(Default)]
pub(super) struct Inflight {
    state: Mutex<InflightState>,
    changed: Condvar,
}

impl Inflight {
    pub(super) fn register(&self, offsets: Vec<(Arc<str>, i32, i64)>) -> u64 {
        let mut s = self.state.lock().expect("inflight lock");
        let id = s.next_id;
        s.next_id += 1;
        if s.failed.is_some() {
            // Never stored (see `fail`): read again after the restart.
            return id;
        }
        s.polls.insert(
            id,
            Poll {
                offsets,
                done: false,
            },
        );
        id
    }

    pub(super) fn complete(&self, id: u64) {
        if let Some(p) = self.state.lock().expect("inflight lock").polls.get_mut(&id) {
            p.done = true;
        }
        self.changed.notify_all();
    }

    /// The pipeline dropped poll `id` without storing it. The consumer must
    /// start over from the committed offsets ([`Inflight::failed`]).
    pub(super) fn fail(&self, id: u64) {
        let mut s = self.state.lock().expect("inflight lock");
        // Offsets are stored in poll order: nothing from it on may be.
        let first = s.failed.map_or(id, |f| f.min(id));
        s.failed = Some(first);
        s.polls.retain(|&earlier, _| earlier < first);
        drop(s);
        self.changed.notify_all();
    }

    pub(super) fn failed(&self) -> bool {
        self.state.lock().expect("inflight lock").failed.is_some()
    }

    pub(super) fn len(&self) -> usize {
        self.state.lock().expect("inflight lock").polls.len()
    }

    /// Store the offsets of the finished polls at the front (poll order).
    /// Returns how many polls were stored.
    pub(super) fn store_done<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>) -> usize {
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
    pub(super) fn wait_all(&self, deadline: Instant) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(offset: i64) -> Vec<(Arc<str>, i32, i64)> {
        vec![(Arc::from("events"), 0, offset)]
    }

    #[test]
    fn a_dropped_poll_keeps_itself_and_every_later_poll_from_being_stored() {
        let f = Inflight::default();
        let first = f.register(poll(99));
        let dropped = f.register(poll(199));
        let later = f.register(poll(299));
        f.complete(first);
        f.complete(later);
        f.fail(dropped);
        assert!(f.failed());
        // Only the poll before the dropped one is left to store.
        assert_eq!(f.len(), 1);
        let s = f.state.lock().expect("lock");
        assert_eq!(s.polls.keys().copied().collect::<Vec<_>>(), vec![first]);
        drop(s);
        // Polls read after the failure are not tracked either.
        f.register(poll(399));
        assert_eq!(f.len(), 1);
        // Nothing is left to wait for: shutdown does not hang on them.
        assert!(f.wait_all(Instant::now()));
    }

    #[test]
    fn without_a_failure_polls_wait_in_order() {
        let f = Inflight::default();
        let a = f.register(poll(9));
        let b = f.register(poll(19));
        f.complete(b);
        assert!(!f.failed());
        assert!(!f.wait_all(Instant::now()));
        f.complete(a);
        assert!(f.wait_all(Instant::now()));
    }
}
