//! `kafka`: the consumer group, topics, dead letters and results.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

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
    /// librdkafka properties for every client (consumer, producers, admin),
    /// e.g. `security.protocol: sasl_ssl`, `sasl.mechanism: SCRAM-SHA-512`,
    /// `ssl.ca.location: /etc/ssl/kafka-ca.pem`. `${NAME}` in a value is
    /// replaced by the environment variable NAME when the config loads (a
    /// missing one stops the start); such values and every password, secret
    /// or key are hidden in GET /config. Keys this section sets itself
    /// (group, commits, offsets) are refused here.
    pub properties: BTreeMap<String, String>,
    /// Properties whose value came from the environment (hidden).
    #[serde(skip)]
    pub from_env: BTreeSet<String>,
}

/// librdkafka keys set from the section's own keys or by the consumer's
/// delivery guarantees; a property must not change them behind its back.
const MANAGED: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "enable.partition.eof",
];

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
            properties: BTreeMap::new(),
            from_env: BTreeSet::new(),
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
        if let Some(key) = self
            .properties
            .keys()
            .find(|k| MANAGED.contains(&k.as_str()))
        {
            return Err(format!(
                "kafka.properties.{key}: set by the service (use the kafka section's own keys)"
            ));
        }
        Ok(())
    }

    /// Replace `${NAME}` in property values by the environment's NAME.
    pub(super) fn expand_env(&mut self, env: &[(String, String)]) -> Result<(), String> {
        for (key, value) in self.properties.iter_mut() {
            let expanded =
                expand(value, env).map_err(|e| format!("kafka.properties.{key}: {e}"))?;
            if expanded != *value {
                *value = expanded;
                self.from_env.insert(key.clone());
            }
        }
        Ok(())
    }

    /// The properties as GET /config shows them.
    pub(super) fn redact(&mut self) {
        for (key, value) in self.properties.iter_mut() {
            if self.from_env.contains(key) || is_secret(key) {
                *value = "(set)".into();
            }
        }
    }
}

/// Passwords, secrets and private keys (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`...).
fn is_secret(key: &str) -> bool {
    [
        "password",
        "secret",
        "ssl.key.pem",
        "sasl.oauthbearer.config",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// `text` with every `${NAME}` replaced by NAME's value in `env`.
fn expand(text: &str, env: &[(String, String)]) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "'${' without a closing '}'".to_string())?;
        let name = &after[..end];
        let value = env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn property_values_take_environment_variables_and_hide_them() {
        let mut k = Kafka::default();
        k.properties.insert("sasl.username".into(), "svc".into());
        k.properties
            .insert("sasl.password".into(), "${KAFKA_PW}".into());
        k.properties
            .insert("ssl.ca.location".into(), "${DIR}/ca.pem".into());
        k.expand_env(&env(&[("KAFKA_PW", "hunter2"), ("DIR", "/etc/kafka")]))
            .unwrap();
        assert_eq!(k.properties["sasl.password"], "hunter2");
        assert_eq!(k.properties["ssl.ca.location"], "/etc/kafka/ca.pem");
        k.redact();
        assert_eq!(k.properties["sasl.password"], "(set)");
        assert_eq!(k.properties["ssl.ca.location"], "(set)");
        assert_eq!(k.properties["sasl.username"], "svc");
    }

    #[test]
    fn a_missing_variable_or_a_managed_key_is_refused_by_name() {
        let mut k = Kafka::default();
        k.properties
            .insert("sasl.password".into(), "${NOPE}".into());
        let e = k.expand_env(&[]).unwrap_err();
        assert_eq!(
            e,
            "kafka.properties.sasl.password: environment variable NOPE is not set"
        );
        let mut k = Kafka::default();
        k.properties
            .insert("enable.auto.commit".into(), "true".into());
        let e = k.check(&Default::default()).unwrap_err();
        assert!(e.starts_with("kafka.properties.enable.auto.commit"), "{e}");
        // A literal secret is hidden too.
        k.properties.clear();
        k.properties.insert("ssl.key.password".into(), "pw".into());
        k.redact();
        assert_eq!(k.properties["ssl.key.password"], "(set)");
    }
}
