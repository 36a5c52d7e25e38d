//! `kafka`: the consumer group, topics, dead letters and results.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kafka {
    /// KAFKA_BOOTSTRAP_SERVERS. Empty: no Kafka, HTTP ingestion only.
    pub bootstrap_servers: String,
    pub consumer_group: String,
    pub auto_commit: bool,
    pub auto_commit_interval_ms: u64,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub max_poll_records: usize,
    /// How long a poll waits for room in a full processing queue before the
    /// consumer pauses its partitions. A pause drops the messages the client
    /// has prefetched (they are fetched again on resume), so short bursts
    /// wait instead; a long stall pauses, keeping the group membership.
    pub pause_after_ms: u64,
    /// The consumer counts as stalled (/health `degraded`, the
    /// `kafka_consumer_stalled` gauge) when it holds messages (a paused
    /// poll, or polls handed over) and has stored no offset for this long.
    pub stall_after_ms: u64,
    /// Topic per event type.
    pub topics: BTreeMap<String, String>,
    /// Invalid messages go here, with the reason in headers.
    pub dead_letter_topic: String,
    /// When set, a processing record is produced here per event.
    pub results_topic: String,
    /// Partitions of topics the service creates.
    pub partitions: i32,
    /// Where a group with no committed offset starts: earliest | latest.
    pub auto_offset_reset: String,
    /// Larger messages go to the dead-letter topic.
    pub max_message_bytes: usize,
}

impl Default for Kafka {
    fn default() -> Self {
        Kafka {
            bootstrap_servers: String::new(),
            consumer_group: "hxp-event-processing".into(),
            auto_commit: true,
            auto_commit_interval_ms: 1000,
            session_timeout_ms: 30_000,
            heartbeat_interval_ms: 3000,
            max_poll_records: 500,
            pause_after_ms: 1000,
            stall_after_ms: 30_000,
            topics: [
                ("llm_request", "llm-requests"),
                ("user_feedback", "user-feedback"),
                ("system_metric", "system-metrics"),
                ("business_event", "business-events"),
                ("error_event", "error-events"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            dead_letter_topic: "event-processing-dead-letters".into(),
            results_topic: String::new(),
            partitions: 3,
            auto_offset_reset: "earliest".into(),
            max_message_bytes: 1 << 20,
        }
    }
}

impl Kafka {
    pub(super) fn check(&self, stream: &super::StreamProcessing) -> Result<(), String> {
        if self.max_poll_records == 0 {
            return Err("kafka.max_poll_records: must be at least 1".into());
        }
        if self.pause_after_ms > 60_000 {
            // librdkafka's max.poll.interval.ms is 300 s: stay well inside.
            return Err("kafka.pause_after_ms: must be at most 60000".into());
        }
        if self.stall_after_ms < 1000 {
            return Err("kafka.stall_after_ms: must be at least 1000".into());
        }
        for key in self.topics.keys() {
            if hxp_plugin_sdk::EventKind::parse(key).is_none() {
                return Err(format!("kafka.topics.{key}: not an event type"));
            }
        }
        if self.partitions < 1 {
            return Err("kafka.partitions: must be at least 1".into());
        }
        let used = !self.bootstrap_servers.is_empty();
        if used && self.max_poll_records > stream.queue_capacity {
            return Err(
                "kafka.max_poll_records: must not exceed stream_processing.queue_capacity".into(),
            );
        }
        if !["earliest", "latest"].contains(&self.auto_offset_reset.as_str()) {
            return Err(format!(
                "kafka.auto_offset_reset: '{}' is not earliest or latest",
                self.auto_offset_reset
            ));
        }
        if self.max_message_bytes < 1024 {
            return Err("kafka.max_message_bytes: must be at least 1024".into());
        }
        if used && self.dead_letter_topic.is_empty() {
            return Err("kafka.dead_letter_topic: must be set when Kafka is used".into());
        }
        Ok(())
    }
}
