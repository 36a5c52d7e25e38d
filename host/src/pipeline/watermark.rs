//! The watermark: how far event time has certainly progressed, and so the
//! clock the plugins see and the end of the windows they serve.
//!
//! Each source lane (HTTP, or one Kafka partition) keeps the newest event
//! time it delivered. The watermark is the oldest of the lanes' newest
//! times minus `stream_processing.allowed_lateness_secs`: a partition
//! that is behind holds it back, so that its events are not late when
//! they come. A lane silent for `idle_timeout_secs` stops holding it back
//! (a partition without traffic, a revoked one); when every lane is silent
//! the watermark moves to the oldest of their newest times, without the
//! lateness: no more out-of-order events are coming, so those that waited
//! for later ones enter the windows. The watermark never goes
//! back, and is stored with every batch, so a restart resumes from it and
//! a replay sees the same clock as the live run did.
//!
//! On processing time the watermark is the service's clock at each batch.

use crate::config::{StreamProcessing, TimeMode};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The newest event time of one lane, and when it last delivered.
struct Lane {
    newest_ms: i64,
    seen: Instant,
}

pub struct Watermark {
    mode: TimeMode,
    lateness_ms: i64,
    idle: Duration,
    lanes: HashMap<Arc<str>, Lane>,
    current: Option<i64>,
}

/// The lane of events that came without one (HTTP).
pub const HTTP_LANE: &str = "http";

impl Watermark {
    pub fn new(config: &StreamProcessing) -> Watermark {
        Watermark {
            mode: config.time,
            lateness_ms: (config.allowed_lateness_secs as i64).saturating_mul(1000),
            idle: Duration::from_secs(config.idle_timeout_secs),
            lanes: HashMap::new(),
            current: None,
        }
    }

    pub fn mode(&self) -> TimeMode {
        self.mode
    }

    /// The watermark a restart resumes from (the last stored batch's).
    pub fn restore(&mut self, ms: Option<i64>) {
        self.current = self.current.max(ms);
    }

    /// The current watermark; `None` before the first event.
    pub fn get(&self) -> Option<i64> {
        self.current
    }

    /// `lane` delivered an event of time `event_ms` at `now` (nothing to
    /// keep on processing time).
    pub fn observe(&mut self, lane: &str, event_ms: i64, now: Instant) {
        if self.mode == TimeMode::Processing {
            return;
        }
        match self.lanes.get_mut(lane) {
            Some(l) => {
                l.newest_ms = l.newest_ms.max(event_ms);
                l.seen = now;
            }
            None => {
                let l = Lane {
                    newest_ms: event_ms,
                    seen: now,
                };
                self.lanes.insert(Arc::from(lane), l);
            }
        }
    }

    /// Move the watermark as far as the lanes allow (on processing time:
    /// to `wall_ms`); returns it.
    pub fn advance(&mut self, wall_ms: i64, now: Instant) -> Option<i64> {
        let candidate = match self.mode {
            TimeMode::Processing => Some(wall_ms),
            TimeMode::Event => match self.slowest_lane(now) {
                (Some(active), _) => Some(active - self.lateness_ms),
                (None, quiet) => quiet,
            },
        };
        self.current = self.current.max(candidate);
        self.current
    }

    /// The newest time of the lane furthest behind: among the active
    /// lanes, and among all (for when every lane is idle).
    fn slowest_lane(&mut self, now: Instant) -> (Option<i64>, Option<i64>) {
        let idle = self.idle;
        let active = |l: &&Lane| now.saturating_duration_since(l.seen) < idle;
        let slowest = self
            .lanes
            .values()
            .filter(active)
            .map(|l| l.newest_ms)
            .min();
        let quiet = self.lanes.values().map(|l| l.newest_ms).min();
        // Lanes idle long enough to be forgotten (revoked partitions).
        self.lanes
            .retain(|_, l| now.saturating_duration_since(l.seen) < idle * 10);
        (slowest, quiet)
    }

    /// The window's first second at the current watermark, for a window of
    /// `window_secs`: an event of an earlier second is late. Matches the
    /// analytics plugin's slots (whole seconds ending at the watermark's).
    /// None on processing time, where no event is late.
    pub fn window_start_sec(&self, window_secs: u32) -> Option<i64> {
        let w = self.current.filter(|_| self.mode == TimeMode::Event)?;
        Some(w.div_euclid(1000) - i64::from(window_secs) + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watermark(lateness: u64, idle: u64) -> Watermark {
        Watermark::new(&StreamProcessing {
            allowed_lateness_secs: lateness,
            idle_timeout_secs: idle,
            ..StreamProcessing::default()
        })
    }

    #[test]
    fn trails_the_slowest_lane_by_the_lateness_and_never_goes_back() {
        let t0 = Instant::now();
        let mut w = watermark(5, 30);
        assert_eq!(w.advance(0, t0), None, "no event yet");
        w.observe("p0", 100_000, t0);
        w.observe("p1", 60_000, t0);
        assert_eq!(w.advance(0, t0), Some(55_000));
        w.observe("p1", 200_000, t0);
        assert_eq!(w.advance(0, t0), Some(95_000));
        // An old event does not move it back.
        w.observe("p0", 10_000, t0);
        assert_eq!(w.advance(0, t0), Some(95_000));
        assert_eq!(w.window_start_sec(60), Some(36));
    }

    #[test]
    fn an_idle_lane_stops_holding_it_back() {
        let t0 = Instant::now();
        let mut w = watermark(0, 30);
        w.observe("busy", 100_000, t0);
        w.observe("quiet", 20_000, t0);
        assert_eq!(w.advance(0, t0), Some(20_000));
        let later = t0 + Duration::from_secs(31);
        w.observe("busy", 131_000, later);
        assert_eq!(w.advance(0, later), Some(131_000));
        // All idle: the oldest of the newest times, no lateness.
        let much_later = later + Duration::from_secs(60);
        assert_eq!(w.advance(0, much_later), Some(131_000));
        // The quiet lane comes back behind: it holds from now on, but the
        // watermark does not go back.
        w.observe("quiet", 125_000, much_later);
        assert_eq!(w.advance(0, much_later), Some(131_000));
        // With a lateness, the events that waited for later ones enter once
        // every lane went quiet.
        let mut w = watermark(5, 30);
        w.observe("a", 100_000, t0);
        assert_eq!(w.advance(0, t0), Some(95_000));
        assert_eq!(w.advance(0, later), Some(100_000));
    }

    #[test]
    fn processing_time_follows_the_clock_and_restores() {
        let t0 = Instant::now();
        let mut w = Watermark::new(&StreamProcessing {
            time: TimeMode::Processing,
            ..StreamProcessing::default()
        });
        w.restore(Some(5_000));
        w.observe(HTTP_LANE, 1, t0);
        assert_eq!(w.advance(7_000, t0), Some(7_000));
        assert_eq!(w.advance(6_000, t0), Some(7_000), "monotonic");
        assert_eq!(w.window_start_sec(300), None, "nothing is late");
    }
}
