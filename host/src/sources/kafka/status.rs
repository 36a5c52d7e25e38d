//! What the API, /health and /metrics see of the consumer: its status,
//! per-partition progress, and the Kafka metrics.

use crate::telemetry::Metrics;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Progress of one assigned partition, from the client's statistics.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PartitionProgress {
    pub topic: String,
    pub partition: i32,
    /// Next offset the application will get.
    pub position: i64,
    /// Offset stored for commit (next to read after a restart).
    pub stored: i64,
    pub committed: i64,
    /// As the broker reports it (some brokers report it late).
    pub high_watermark: i64,
    /// high watermark − committed offset.
    pub lag: i64,
}

/// What the API and /health read.
#[derive(Debug, Default)]
pub struct KafkaStatus {
    pub group: String,
    pub topics: Vec<String>,
    /// A broker connection is up.
    pub connected: AtomicBool,
    /// Topics exist and the subscription is in place.
    pub subscribed: AtomicBool,
    pub paused: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    pub consumed: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub polls_in_flight: AtomicU64,
    pub partitions: Mutex<BTreeMap<(String, i32), PartitionProgress>>,
    pub assignment: Mutex<Vec<(String, i32)>>,
    pub rebalances: AtomicU64,
    /// When offsets were last stored, or the consumer last held nothing.
    pub(super) last_progress: Mutex<Option<Instant>>,
    /// Why the consumer counts as stalled, while it does.
    pub(super) stalled: Mutex<Option<String>>,
}

impl KafkaStatus {
    /// `None` when healthy, else why not.
    pub fn problem(&self) -> Option<String> {
        let err = || {
            self.last_error
                .lock()
                .expect("lock")
                .clone()
                .unwrap_or_else(|| "no broker connection yet".into())
        };
        if !self.connected.load(Ordering::Relaxed) {
            return Some(format!("broker unreachable: {}", err()));
        }
        if !self.subscribed.load(Ordering::Relaxed) {
            return Some(format!("topics not ready: {}", err()));
        }
        lock(&self.stalled).clone()
    }

    /// Offsets were stored: the consumer moves.
    pub(super) fn progressed(&self) {
        *lock(&self.last_progress) = Some(Instant::now());
    }

    /// Why the consumer is stalled, if it is: it holds messages (a paused
    /// poll, or polls handed to the pipeline) and has stored no offset
    /// for `after`. Holding nothing is never a stall.
    pub(super) fn stall(&self, after: Duration) -> Option<String> {
        let paused = self.paused.load(Ordering::Relaxed);
        let in_flight = self.polls_in_flight.load(Ordering::Relaxed);
        let mut last = lock(&self.last_progress);
        if !paused && in_flight == 0 {
            *last = Some(Instant::now());
            return None;
        }
        let since = last.get_or_insert_with(Instant::now).elapsed();
        if since < after {
            return None;
        }
        let lag: i64 = self.assigned_progress().iter().map(|p| p.lag.max(0)).sum();
        Some(format!(
            "stalled: no offset stored for {} s while holding messages (paused: {paused}, polls in flight: {in_flight}, lag: {lag})",
            since.as_secs()
        ))
    }

    /// Progress of each assigned partition; one not yet in the client's
    /// statistics shows -1.
    pub fn assigned_progress(&self) -> Vec<PartitionProgress> {
        let assigned = self
            .assignment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let all = self.partitions.lock().unwrap_or_else(|e| e.into_inner());
        assigned
            .iter()
            .map(|(t, p)| {
                all.get(&(t.clone(), *p))
                    .cloned()
                    .unwrap_or_else(|| PartitionProgress {
                        topic: t.clone(),
                        partition: *p,
                        position: -1,
                        stored: -1,
                        committed: -1,
                        high_watermark: -1,
                        lag: -1,
                    })
            })
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every second: is the consumer stalled? Runs apart from the consumer
/// thread, so a consumer stuck in a call still shows as stalled.
pub(super) async fn watch_stall(
    status: Arc<KafkaStatus>,
    gauge: IntGauge,
    after: Duration,
    stop: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let verdict = status.stall(after);
        if verdict.is_some() != (gauge.get() == 1) {
            match &verdict {
                Some(why) => tracing::warn!("kafka: {why}"),
                None => tracing::info!("kafka: consumer moves again"),
            }
        }
        gauge.set(verdict.is_some() as i64);
        *lock(&status.stalled) = verdict;
    }
}

/// Kafka metrics, in the service's registry.
#[derive(Clone)]
pub(super) struct KafkaMetrics {
    pub(super) messages: IntCounterVec,
    pub(super) dead_letters: IntCounterVec,
    pub(super) lag: IntGaugeVec,
    pub(super) position: IntGaugeVec,
    pub(super) committed: IntGaugeVec,
    pub(super) connected: IntGauge,
    pub(super) paused: IntGauge,
    pub(super) pauses: IntCounter,
    pub(super) stalled: IntGauge,
    pub(super) commit_errors: IntCounter,
    pub(super) rebalances: IntCounter,
}

impl KafkaMetrics {
    pub(super) fn new(m: &Metrics) -> KafkaMetrics {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            m.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
        };
        let gauge_vec = |name: &str, help: &str| {
            m.register(
                IntGaugeVec::new(Opts::new(name, help), &["topic", "partition"])
                    .expect("valid metric"),
            )
        };
        let gauge =
            |name: &str, help: &str| m.register(IntGauge::new(name, help).expect("valid metric"));
        let counter =
            |name: &str, help: &str| m.register(IntCounter::new(name, help).expect("valid metric"));
        KafkaMetrics {
            messages: counter_vec(
                "kafka_messages_total",
                "Kafka messages consumed, by topic and outcome (accepted | dead_letter)",
                &["topic", "outcome"],
            ),
            dead_letters: counter_vec(
                "kafka_dead_letters_total",
                "Messages sent to the dead-letter topic, by reason",
                &["reason"],
            ),
            lag: gauge_vec(
                "kafka_consumer_lag",
                "High watermark minus committed offset, per assigned partition",
            ),
            position: gauge_vec(
                "kafka_consumer_position",
                "Next offset the service reads, per assigned partition",
            ),
            committed: gauge_vec(
                "kafka_consumer_committed_offset",
                "Committed offset, per assigned partition",
            ),
            connected: gauge("kafka_broker_connected", "1 when a broker connection is up"),
            paused: gauge(
                "kafka_consumer_paused",
                "1 while consumption is paused because the processing queue is full",
            ),
            stalled: gauge(
                "kafka_consumer_stalled",
                "1 while the consumer holds messages and has stored no offset for kafka.stall_after_ms",
            ),
            pauses: counter(
                "kafka_consumer_pauses_total",
                "Times consumption paused because the processing queue was full",
            ),
            commit_errors: counter(
                "kafka_commit_errors_total",
                "Offset commits that failed (retried with the next commit)",
            ),
            rebalances: counter(
                "kafka_rebalances_total",
                "Partition assignments and revocations",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holding_messages_without_storing_offsets_is_a_stall_and_idling_is_not() {
        let s = KafkaStatus::default();
        let after = Duration::from_millis(50);
        // Idle: never stalled, however long.
        assert_eq!(s.stall(Duration::ZERO), None);
        s.paused.store(true, Ordering::Relaxed);
        assert_eq!(s.stall(after), None, "held, but not for long yet");
        std::thread::sleep(Duration::from_millis(60));
        let why = s.stall(after).expect("stalled");
        assert!(why.starts_with("stalled: no offset stored for"), "{why}");
        assert!(why.contains("paused: true"), "{why}");
        // Offsets stored: it moves again.
        s.progressed();
        assert_eq!(s.stall(after), None);
        // Polls in flight count as held too.
        s.paused.store(false, Ordering::Relaxed);
        s.polls_in_flight.store(2, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            s.stall(after)
                .expect("stalled")
                .contains("polls in flight: 2")
        );
    }
}
