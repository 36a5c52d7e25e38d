//! The service's long-running workers and whether each is up: /health turns
//! `degraded` with the reason while one is down, /metrics shows
//! `worker_up{worker}`, `worker_restarts_total{worker}` and
//! `worker_panics_total{worker}`.
//!
//! [`supervise`] runs a worker on the calling thread and restarts it, with
//! a growing pause, when it fails or panics. Workers that survive a panic
//! by themselves (one batch fails, the loop goes on) report it with
//! [`Workers::panicked`].

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The state of every worker that reported one.
pub struct Workers {
    down: Mutex<BTreeMap<&'static str, Down>>,
    up: IntGaugeVec,
    restarts: IntCounterVec,
    panics: IntCounterVec,
}

/// Why a worker is down, and since when.
struct Down {
    reason: String,
    since: Instant,
}

/// How long [`supervise`] waits before the first restart, and at most.
const RESTART_PAUSE: Duration = Duration::from_millis(500);
const RESTART_PAUSE_MAX: Duration = Duration::from_secs(30);

impl Workers {
    pub(super) fn new(registry: &Registry) -> Workers {
        let vec = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["worker"]).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registers once");
            c
        };
        let up = IntGaugeVec::new(
            Opts::new("worker_up", "1 while the worker runs, 0 while it is down"),
            &["worker"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(up.clone()))
            .expect("registers once");
        Workers {
            down: Mutex::new(BTreeMap::new()),
            up,
            restarts: vec(
                "worker_restarts_total",
                "Times a worker was restarted after it failed",
            ),
            panics: vec(
                "worker_panics_total",
                "Panics caught in a worker (the worker restarted, or failed one item and went on)",
            ),
        }
    }

    /// `name` runs.
    pub fn running(&self, name: &'static str) {
        self.up.with_label_values(&[name]).set(1);
        self.lock().remove(name);
    }

    /// `name` stopped working, for `reason`, until [`Workers::running`].
    pub fn failed(&self, name: &'static str, reason: String) {
        tracing::error!(worker = name, "worker down: {reason}");
        self.up.with_label_values(&[name]).set(0);
        self.lock().insert(
            name,
            Down {
                reason,
                since: Instant::now(),
            },
        );
    }

    /// A panic was caught in `name`; it went on (or is being restarted).
    pub fn panicked(&self, name: &'static str, message: &str) {
        tracing::error!(worker = name, "panic caught: {message}");
        self.panics.with_label_values(&[name]).inc();
    }

    /// Each worker that is down: "name: reason (for N s)".
    pub fn problems(&self) -> Vec<String> {
        self.lock()
            .iter()
            .map(|(name, d)| {
                format!(
                    "{name}: {} (down for {} s)",
                    d.reason,
                    d.since.elapsed().as_secs()
                )
            })
            .collect()
    }

    pub fn restarts(&self, name: &'static str) -> u64 {
        self.restarts.with_label_values(&[name]).get()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Down>> {
        self.down.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Run `work` on this thread until it returns `Ok` (it finished: the
/// service is stopping) or `stop` is set. An `Err` or a panic marks the
/// worker down and restarts it after a pause that doubles up to 30 s and
/// starts over once a run lasted a minute.
pub fn supervise(
    workers: &Workers,
    name: &'static str,
    stop: &AtomicBool,
    mut work: impl FnMut() -> Result<(), String>,
) {
    let mut pause = RESTART_PAUSE;
    loop {
        workers.running(name);
        let started = Instant::now();
        let reason = match crate::util::panic::catch(&mut work) {
            Ok(Ok(())) => return,
            Ok(Err(reason)) => reason,
            Err(panic) => {
                workers.panicked(name, &panic);
                format!("panicked: {panic}")
            }
        };
        workers.failed(name, reason);
        if started.elapsed() > Duration::from_secs(60) {
            pause = RESTART_PAUSE;
        }
        if !sleep_unless_stopped(pause, stop) {
            return;
        }
        pause = (pause * 2).min(RESTART_PAUSE_MAX);
        workers.restarts.with_label_values(&[name]).inc();
        tracing::warn!(worker = name, "restarting");
    }
}

/// Sleep `d` in short steps; false when `stop` was set meanwhile.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
    !stop.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn workers() -> Workers {
        Workers::new(&Registry::new())
    }

    #[test]
    fn a_worker_that_panics_or_fails_is_restarted_and_shown_down_meanwhile() {
        let w = workers();
        let stop = AtomicBool::new(false);
        let mut runs = 0;
        let mut seen_down = Vec::new();
        supervise(&w, "consumer", &stop, || {
            runs += 1;
            // What /health saw while this run was being restarted.
            seen_down.push(w.lock().get("consumer").map(|d| d.reason.clone()));
            match runs {
                1 => panic!("poison"),
                2 => Err("broker gone".to_string()),
                _ => Ok(()),
            }
        });
        assert_eq!(runs, 3);
        assert_eq!(w.restarts("consumer"), 2);
        assert_eq!(w.panics.with_label_values(&["consumer"]).get(), 1);
        // `running` clears the state before each run: none saw itself down.
        assert_eq!(seen_down, vec![None, None, None]);
        assert!(w.problems().is_empty());
        assert_eq!(w.up.with_label_values(&["consumer"]).get(), 1);
    }

    #[test]
    fn a_down_worker_is_a_problem_until_it_runs_again() {
        let w = workers();
        w.failed("writer", "database gone".into());
        let problems = w.problems();
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("writer: database gone (down for "));
        assert_eq!(w.up.with_label_values(&["writer"]).get(), 0);
        w.running("writer");
        assert!(w.problems().is_empty());
    }

    #[test]
    fn stop_ends_the_restarts() {
        let w = Arc::new(workers());
        let stop = Arc::new(AtomicBool::new(false));
        let (w2, s2) = (w.clone(), stop.clone());
        let t = std::thread::spawn(move || {
            supervise(&w2, "loop", &s2, || Err("always".into()));
        });
        while w.restarts("loop") < 2 {
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        t.join().expect("supervisor thread");
        // Down with its reason when it gave up.
        assert!(w.problems()[0].starts_with("loop: always"));
    }
}
