//! Auto-quarantine: a plugin version that traps, times out or runs out of
//! memory `plugins.quarantine.failures` times within `window_secs` stops
//! being called at once (the pipeline goes on without it) and the deployer
//! is told, which rolls back to the previous version or unloads it.

use super::stages::{Stage, Stages};
use crate::config::Quarantine as Settings;
use crate::plugin::CallStats;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A version taken out of the pipeline, for the deployer.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub plugin: String,
    /// The version taken out (a later deployment may have replaced it
    /// already).
    pub sha256: String,
    /// "50 failures in 60 s (traps 50, timeouts 0, memory 0); last: ..."
    pub reason: String,
    /// A shadow was taken out (the live version runs on, untouched).
    pub shadow: bool,
    /// The shadow's start (ms since the epoch; 0 for a live version): with
    /// the hash, which shadow it was (another of the same component may
    /// have started since).
    pub since_ms: i64,
}

/// Failures of one running version.
struct Seen {
    sha256: String,
    /// Failures counted so far (traps, timeouts, memory limits).
    total: u64,
    /// When the failures within the window happened.
    recent: VecDeque<Instant>,
}

/// Which instance of a plugin name a count is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Live,
    Shadow,
}

/// Counts each running version's failures after every batch.
pub struct Tracker {
    settings: Settings,
    seen: BTreeMap<(Arc<str>, Role), Seen>,
    notices: Option<mpsc::UnboundedSender<Notice>>,
}

impl Tracker {
    pub fn new(settings: Settings, notices: Option<mpsc::UnboundedSender<Notice>>) -> Tracker {
        Tracker {
            settings,
            seen: BTreeMap::new(),
            notices,
        }
    }

    /// Look at every plugin's failure counters; take out the versions over
    /// the limit. What was taken out, if anything.
    pub fn check(&mut self, stages: &mut Stages, now: Instant) -> Vec<Notice> {
        if self.settings.failures == 0 {
            return Vec::new();
        }
        let live = stages
            .slots
            .iter()
            .filter(|s| !stages.quarantined.contains(&s.name))
            .map(|s| (&s.name, Role::Live, s.plugin.as_ref(), None));
        let shadows = (stages.shadows.iter())
            .map(|(name, s)| (name, Role::Shadow, s.slot.plugin.as_ref(), Some(&s.report)));
        let mut out = Vec::new();
        for (name, role, plugin, report) in live.chain(shadows) {
            if let Some(reason) = self.over_limit((name.clone(), role), plugin, now) {
                // Read only for a notice: the report's lock stays off the
                // per-batch check.
                let since = report.map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).since_ms);
                out.push(Notice {
                    plugin: name.to_string(),
                    sha256: plugin.sha256().to_string(),
                    reason,
                    shadow: role == Role::Shadow,
                    since_ms: since.unwrap_or(0),
                });
            }
        }
        for n in &out {
            self.take_out(stages, n);
        }
        out
    }

    /// Count a plugin's new failures; why it must go, when it is over the
    /// limit.
    fn over_limit(
        &mut self,
        key: (Arc<str>, Role),
        plugin: &dyn Stage,
        now: Instant,
    ) -> Option<String> {
        let window = Duration::from_secs(self.settings.window_secs);
        let sha = plugin.sha256();
        // A version's counters start at zero when it is loaded.
        let fresh = || Seen {
            sha256: sha.to_string(),
            total: 0,
            recent: VecDeque::new(),
        };
        if self.seen.get(&key).is_none_or(|s| s.sha256 != sha) {
            // A promoted shadow is the same instance: it keeps its count.
            let shadow = (key.0.clone(), Role::Shadow);
            let promoted =
                key.1 == Role::Live && self.seen.get(&shadow).is_some_and(|s| s.sha256 == sha);
            let carried = promoted.then(|| self.seen.remove(&shadow)).flatten();
            self.seen.insert(key.clone(), carried.unwrap_or_else(fresh));
        }
        let seen = self.seen.get_mut(&key)?;
        // The failures that count: the plugin misbehaved, not its input.
        let total = plugin.failures();
        for _ in seen.total..total {
            seen.recent.push_back(now);
        }
        seen.total = total;
        while seen
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            seen.recent.pop_front();
        }
        let n = seen.recent.len();
        (n as u64 >= self.settings.failures).then(|| reason(&self.settings, n, &plugin.stats()))
    }

    /// Stop calling what a notice names, and tell the deployer.
    fn take_out(&mut self, stages: &mut Stages, n: &Notice) {
        let name: Arc<str> = Arc::from(n.plugin.as_str());
        if n.shadow {
            self.seen.remove(&(name, Role::Shadow));
            if let Some(s) = stages.shadows.remove(n.plugin.as_str()) {
                let mut report = s.report.lock().unwrap_or_else(|e| e.into_inner());
                report.ended = Some(format!("quarantined: {}", n.reason));
            }
        } else {
            self.seen.remove(&(name.clone(), Role::Live));
            stages.quarantined.insert(name);
        }
        tracing::error!(plugin = %n.plugin, shadow = n.shadow, sha256 = %n.sha256, "plugin quarantined: {}", n.reason);
        if let Some(tx) = &self.notices {
            let _ = tx.send(n.clone());
        }
    }
}

/// Why a version was taken out, with its counters and last error.
fn reason(settings: &Settings, n: usize, s: &CallStats) -> String {
    let last = s.last_error.as_deref().unwrap_or("none");
    format!(
        "{n} failures within {} s (plugins.quarantine.failures: {}; traps {}, timeouts {}, memory limits {} since loaded); last: {last}",
        settings.window_secs, settings.failures, s.traps, s.timeouts, s.memory_limits
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fake::Fake;
    use crate::plugin::PluginKind;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// One correlation plugin, and its trap counter.
    fn rules() -> (Stages, Arc<AtomicU64>) {
        let fake = Fake::new("rules", PluginKind::Correlation);
        let traps = fake.traps.clone();
        let stages = Stages::new(vec![fake.slot(1)], crate::plugin::Clock::manual(0));
        (stages, traps)
    }

    fn settings(failures: u64, window_secs: u64) -> Settings {
        Settings {
            failures,
            window_secs,
        }
    }

    #[test]
    fn a_version_over_the_limit_is_taken_out_and_reported_once() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tracker = Tracker::new(settings(3, 60), Some(tx));
        let (mut stages, traps) = rules();
        let t0 = Instant::now();
        traps.fetch_add(2, Ordering::Relaxed);
        assert!(tracker.check(&mut stages, t0).is_empty());
        traps.fetch_add(1, Ordering::Relaxed);
        let out = tracker.check(&mut stages, t0 + Duration::from_secs(1));
        assert_eq!(out.len(), 1);
        assert!(
            out[0].reason.starts_with("3 failures within 60 s"),
            "{}",
            out[0].reason
        );
        assert!(stages.quarantined.contains("rules"));
        assert_eq!(rx.try_recv().unwrap(), out[0]);
        traps.fetch_add(5, Ordering::Relaxed);
        assert!(
            tracker
                .check(&mut stages, t0 + Duration::from_secs(2))
                .is_empty()
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn failures_older_than_the_window_do_not_count() {
        let mut tracker = Tracker::new(settings(3, 10), None);
        let (mut stages, traps) = rules();
        let t0 = Instant::now();
        traps.fetch_add(2, Ordering::Relaxed);
        tracker.check(&mut stages, t0);
        traps.fetch_add(2, Ordering::Relaxed);
        let later = t0 + Duration::from_secs(11);
        assert!(tracker.check(&mut stages, later).is_empty());
        traps.fetch_add(1, Ordering::Relaxed);
        assert_eq!(tracker.check(&mut stages, later).len(), 1);
    }

    #[test]
    fn zero_switches_it_off() {
        let mut tracker = Tracker::new(settings(0, 60), None);
        let (mut stages, traps) = rules();
        traps.fetch_add(1000, Ordering::Relaxed);
        assert!(tracker.check(&mut stages, Instant::now()).is_empty());
        assert!(stages.quarantined.is_empty());
    }
}
