//! Topic creation: missing topics are created through the admin API
//! (retried while the broker is away).

use super::consumer::Worker;
use anyhow::Context as _;
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Worker {
    /// Create missing topics (retried while the broker is away). Returns
    /// false if the service stops first.
    pub(super) fn prepare_topics(&self) -> bool {
        let k = &self.config.kafka;
        let mut wanted: Vec<String> = self.topics.iter().map(|t| t.name.clone()).collect();
        wanted.push(k.dead_letter_topic.clone());
        if !k.results_topic.is_empty() {
            wanted.push(k.results_topic.clone());
        }
        let mut delay = Duration::from_millis(200);
        loop {
            match self.create_topics(&wanted) {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!("kafka: topics not ready ({e:#}); retrying in {delay:?}");
                    *self.status.last_error.lock().expect("lock") = Some(format!("{e:#}"));
                }
            }
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if self.stop.load(Ordering::Relaxed) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    pub(super) fn create_topics(&self, wanted: &[String]) -> anyhow::Result<()> {
        let metadata = self
            .consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .context("reading the broker's metadata")?;
        self.status.connected.store(true, Ordering::Relaxed);
        let existing: Vec<&str> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.name())
            .collect();
        let missing: Vec<&String> = wanted
            .iter()
            .filter(|t| !existing.contains(&t.as_str()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let partitions = self.config.kafka.partitions;
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .collect();
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .runtime
            .block_on(self.admin.create_topics(&new, &opts))
            .context("creating topics")?;
        for r in results {
            match r {
                Ok(t) => tracing::info!(topic = %t, partitions, "kafka: topic created"),
                Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => {
                    tracing::debug!(topic = %t, "kafka: topic exists")
                }
                Err((t, code)) => anyhow::bail!("creating topic {t}: {code}"),
            }
        }
        Ok(())
    }
}
