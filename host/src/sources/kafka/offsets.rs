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
