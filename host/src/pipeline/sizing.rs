//! Adaptive batching: the batch size in use. At low load a batch closes as
//! soon as no more input is waiting, well before `batch_size`, so the
//! latency is that of one small batch. Under a backlog every batch closes
//! full, and the fixed per-batch costs (a plugin call per stage, a
//! transaction) are paid every `batch_size` events: the size then doubles
//! after each full batch that leaves events waiting, up to
//! `max_batch_size`, and halves back towards `batch_size` after each batch
//! that closes before it is full (the backlog is gone).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BatchSizing {
    base: usize,
    max: usize,
    limit: usize,
}

impl BatchSizing {
    /// `base` at low load, up to `max` under a backlog (`max` < `base`
    /// counts as `base`: fixed batches).
    pub(super) fn new(base: usize, max: usize) -> BatchSizing {
        let base = base.max(1);
        BatchSizing {
            base,
            max: max.max(base),
            limit: base,
        }
    }

    /// The most events the next batch takes.
    pub(super) fn limit(&self) -> usize {
        self.limit
    }

    /// A batch of `taken` events closed; `waiting`: events were left
    /// waiting behind it.
    pub(super) fn closed(&mut self, taken: usize, waiting: bool) {
        if taken >= self.limit && waiting {
            self.limit = self.limit.saturating_mul(2).min(self.max);
        } else if taken < self.limit {
            self.limit = (self.limit / 2).max(self.base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_under_a_backlog_and_shrinks_back_when_it_is_gone() {
        let mut s = BatchSizing::new(100, 1000);
        let mut seen = Vec::new();
        // A backlog: every batch full with more waiting.
        for _ in 0..6 {
            seen.push(s.limit());
            s.closed(s.limit(), true);
        }
        assert_eq!(seen, [100, 200, 400, 800, 1000, 1000]);
        // Full but nothing left: the size stays.
        s.closed(1000, false);
        assert_eq!(s.limit(), 1000);
        // Batches closing early: halved back to the base, never below.
        let mut seen = Vec::new();
        for _ in 0..5 {
            s.closed(3, false);
            seen.push(s.limit());
        }
        assert_eq!(seen, [500, 250, 125, 100, 100]);
    }

    #[test]
    fn low_load_keeps_the_base_and_fixed_sizing_never_moves() {
        let mut s = BatchSizing::new(100, 1000);
        for taken in [1, 7, 99, 50] {
            s.closed(taken, false);
            assert_eq!(s.limit(), 100);
        }
        let mut fixed = BatchSizing::new(100, 100);
        fixed.closed(100, true);
        assert_eq!(fixed.limit(), 100);
        assert_eq!(BatchSizing::new(100, 10).limit(), 100);
    }
}
