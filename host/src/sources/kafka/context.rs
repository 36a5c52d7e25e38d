//! The consumer's client context: statistics (progress, lag, broker
//! connection), errors, and rebalances (a revocation finishes and commits
//! what is in flight first).

use super::offsets::Inflight;
use super::status::{KafkaMetrics, KafkaStatus, PartitionProgress};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(super) struct Ctx {
    pub(super) status: Arc<KafkaStatus>,
    pub(super) inflight: Arc<Inflight>,
    pub(super) metrics: KafkaMetrics,
    /// How long a revocation waits for in-flight polls.
    pub(super) revoke_wait: Duration,
}

impl ClientContext for Ctx {
    fn stats(&self, s: Statistics) {
        let up = s.brokers.values().any(|b| b.nodeid >= 0 && b.state == "UP");
        self.status.connected.store(up, Ordering::Relaxed);
        self.metrics.connected.set(up as i64);
        let mut parts = self.status.partitions.lock().expect("lock");
        for (topic, t) in &s.topics {
            for (id, p) in &t.partitions {
                if *id < 0 {
                    continue;
                }
                let lag = if p.hi_offset >= 0 && p.committed_offset >= 0 {
                    p.hi_offset - p.committed_offset
                } else {
                    p.consumer_lag
                };
                let progress = PartitionProgress {
                    topic: topic.clone(),
                    partition: *id,
                    position: p.app_offset,
                    stored: p.stored_offset,
                    committed: p.committed_offset,
                    high_watermark: p.hi_offset,
                    lag,
                };
                if p.desired {
                    let labels = [topic.as_str(), &id.to_string()];
                    self.metrics.lag.with_label_values(&labels).set(lag.max(0));
                    self.metrics
                        .position
                        .with_label_values(&labels)
                        .set(progress.position);
                    self.metrics
                        .committed
                        .with_label_values(&labels)
                        .set(progress.committed);
                }
                parts.insert((topic.clone(), *id), progress);
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!("kafka: {error}: {reason}");
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.status.connected.store(false, Ordering::Relaxed);
            self.metrics.connected.set(0);
        }
        *self.status.last_error.lock().expect("lock") = Some(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // Hand over cleanly: finish what is in flight, store and commit
            // it, so the next owner starts after it.
            let finished = self.inflight.wait_all(Instant::now() + self.revoke_wait);
            self.inflight.store_done(consumer);
            if !tpl.elements().is_empty()
                && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
                && e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset)
            {
                self.metrics.commit_errors.inc();
                tracing::warn!("kafka: commit on revocation failed: {e}");
            }
            tracing::info!(
                partitions = tpl.count(),
                all_in_flight_done = finished,
                "kafka: partitions revoked"
            );
            self.status.assignment.lock().expect("lock").clear();
            self.status.rebalances.fetch_add(1, Ordering::Relaxed);
            self.metrics.rebalances.inc();
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let assigned: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                tracing::info!(partitions = ?assigned, "kafka: partitions assigned");
                *self.status.assignment.lock().expect("lock") = assigned;
                self.status.rebalances.fetch_add(1, Ordering::Relaxed);
                self.metrics.rebalances.inc();
                // A paused consumer must pause its new partitions too.
                if self.status.paused.load(Ordering::Relaxed) {
                    let _ = consumer.pause(tpl);
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!("kafka: rebalance error: {e}"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result
            && e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset)
        {
            self.metrics.commit_errors.inc();
            tracing::warn!("kafka: offset commit failed: {e}");
        }
    }
}
