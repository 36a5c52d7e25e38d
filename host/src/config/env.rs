//! Environment variables that override config keys, and applying them to the
//! YAML tree before it is deserialized.

use std::collections::BTreeMap;

/// Environment variables and the keys they override.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("EVENT_PROCESSING_API_PORT", "service.port"),
    ("EVENT_PROCESSING_API_HOST", "service.host"),
    (
        "EVENT_PROCESSING_API_MEMORY_GB",
        "performance.memory_limit_gb",
    ),
    ("EVENT_PROCESSING_API_CPU_CORES", "performance.cpu_cores"),
    ("EVENT_PROCESSING_TIMEOUT", "service.timeout"),
    ("EVENT_PROCESSING_ADMIN_TOKEN", "service.admin_token"),
    ("EVENT_PROCESSING_TLS_CERT_FILE", "tls.server.cert_file"),
    ("EVENT_PROCESSING_TLS_KEY_FILE", "tls.server.key_file"),
    ("EVENT_PROCESSING_TLS_CA_FILE", "tls.client.ca_file"),
    (
        "EVENT_CONSUMER_LLM_REQUESTS_ENABLED",
        "event_consumers.llm_requests_enabled",
    ),
    (
        "EVENT_CONSUMER_USER_FEEDBACK_ENABLED",
        "event_consumers.user_feedback_enabled",
    ),
    (
        "EVENT_CONSUMER_SYSTEM_METRICS_ENABLED",
        "event_consumers.system_metrics_enabled",
    ),
    (
        "EVENT_CONSUMER_BUSINESS_EVENTS_ENABLED",
        "event_consumers.business_events_enabled",
    ),
    (
        "EVENT_CONSUMER_ERROR_EVENTS_ENABLED",
        "event_consumers.error_events_enabled",
    ),
    ("REAL_TIME_ANALYTICS_ENABLED", "real_time_analytics.enabled"),
    (
        "REAL_TIME_ANALYTICS_WINDOW_SIZE",
        "real_time_analytics.window_size",
    ),
    (
        "REAL_TIME_ANALYTICS_UPDATE_INTERVAL",
        "real_time_analytics.update_interval",
    ),
    (
        "REAL_TIME_ANALYTICS_AGGREGATION_ENABLED",
        "real_time_analytics.aggregation_enabled",
    ),
    ("EVENT_CORRELATION_ENABLED", "event_correlation.enabled"),
    (
        "EVENT_CORRELATION_WINDOW_SIZE",
        "event_correlation.window_size",
    ),
    (
        "EVENT_CORRELATION_PATTERN_DETECTION_ENABLED",
        "event_correlation.pattern_detection_enabled",
    ),
    (
        "EVENT_CORRELATION_ALERT_THRESHOLD",
        "event_correlation.alert_threshold",
    ),
    ("AUTOMATED_RESPONSE_ENABLED", "automated_response.enabled"),
    ("AUTOMATED_RESPONSE_DRY_RUN", "automated_response.dry_run"),
    (
        "AUTOMATED_RESPONSE_MAX_STALENESS_SECS",
        "automated_response.max_staleness_secs",
    ),
    (
        "AUTOMATED_RESPONSE_CRITICAL_EVENTS_ENABLED",
        "automated_response.critical_events_enabled",
    ),
    (
        "AUTOMATED_RESPONSE_BUSINESS_EVENTS_ENABLED",
        "automated_response.business_events_enabled",
    ),
    (
        "AUTOMATED_RESPONSE_ERROR_EVENTS_ENABLED",
        "automated_response.error_events_enabled",
    ),
    (
        "PERFORMANCE_METRICS_CALCULATION_ENABLED",
        "performance_metrics.calculation_enabled",
    ),
    (
        "PERFORMANCE_METRICS_UPDATE_INTERVAL",
        "performance_metrics.update_interval",
    ),
    (
        "PERFORMANCE_METRICS_HISTORY_RETENTION",
        "performance_metrics.history_retention",
    ),
    (
        "PERFORMANCE_METRICS_AGGREGATION_ENABLED",
        "performance_metrics.aggregation_enabled",
    ),
    ("STREAM_PROCESSING_ENABLED", "stream_processing.enabled"),
    (
        "STREAM_PROCESSING_BATCH_SIZE",
        "stream_processing.batch_size",
    ),
    (
        "STREAM_PROCESSING_MAX_BATCH_SIZE",
        "stream_processing.max_batch_size",
    ),
    (
        "STREAM_PROCESSING_FLUSH_INTERVAL",
        "stream_processing.flush_interval",
    ),
    (
        "STREAM_PROCESSING_PARALLEL_WORKERS",
        "stream_processing.parallel_workers",
    ),
    (
        "STREAM_PROCESSING_QUEUE_CAPACITY",
        "stream_processing.queue_capacity",
    ),
    (
        "STREAM_PROCESSING_MAX_CLOCK_SKEW_SECS",
        "stream_processing.max_clock_skew_secs",
    ),
    ("STREAM_PROCESSING_TIME", "stream_processing.time"),
    (
        "STREAM_PROCESSING_ALLOWED_LATENESS_SECS",
        "stream_processing.allowed_lateness_secs",
    ),
    (
        "STREAM_PROCESSING_IDLE_TIMEOUT_SECS",
        "stream_processing.idle_timeout_secs",
    ),
    ("KAFKA_BOOTSTRAP_SERVERS", "kafka.bootstrap_servers"),
    ("KAFKA_CONSUMER_GROUP", "kafka.consumer_group"),
    ("KAFKA_CONSUMER_AUTO_COMMIT", "kafka.auto_commit"),
    (
        "KAFKA_CONSUMER_AUTO_COMMIT_INTERVAL_MS",
        "kafka.auto_commit_interval_ms",
    ),
    (
        "KAFKA_CONSUMER_SESSION_TIMEOUT_MS",
        "kafka.session_timeout_ms",
    ),
    (
        "KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS",
        "kafka.heartbeat_interval_ms",
    ),
    ("KAFKA_CONSUMER_MAX_POLL_RECORDS", "kafka.max_poll_records"),
    ("KAFKA_CONSUMER_PAUSE_AFTER_MS", "kafka.pause_after_ms"),
    ("KAFKA_CONSUMER_STALL_AFTER_MS", "kafka.stall_after_ms"),
    ("KAFKA_DEAD_LETTER_TOPIC", "kafka.dead_letter_topic"),
    ("KAFKA_RESULTS_TOPIC", "kafka.results_topic"),
    ("KAFKA_AUTO_OFFSET_RESET", "kafka.auto_offset_reset"),
    ("KAFKA_MAX_MESSAGE_BYTES", "kafka.max_message_bytes"),
    ("KAFKA_TOPIC_PARTITIONS", "kafka.partitions"),
    ("API_GATEWAY_ENDPOINT", "monitoring.api_gateway_endpoint"),
    ("SQL_DATABASE_ENDPOINT", "monitoring.sql_database_endpoint"),
    (
        "METRICS_SERVER_ENDPOINT",
        "monitoring.metrics_server_endpoint",
    ),
    (
        "CUSTOM_METRICS_ENDPOINT",
        "monitoring.custom_metrics_endpoint",
    ),
    ("DATABASE_URL", "database.url"),
    ("DATABASE_RETENTION_SECS", "database.retention_secs"),
    ("EVENT_PROCESSING_PLUGIN_DIR", "plugins.directory"),
    ("EVENT_PROCESSING_PLUGIN_WATCH", "plugins.watch"),
    (
        "EVENT_PROCESSING_PLUGIN_QUARANTINE_FAILURES",
        "plugins.quarantine.failures",
    ),
];

/// Keys whose environment value is always text (a token of digits stays a
/// string).
const TEXT_KEYS: &[&str] = &[
    "service.host",
    "service.admin_token",
    "tls.server.cert_file",
    "tls.server.key_file",
    "tls.client.ca_file",
    "kafka.bootstrap_servers",
    "kafka.consumer_group",
    "monitoring.api_gateway_endpoint",
    "monitoring.sql_database_endpoint",
    "monitoring.metrics_server_endpoint",
    "monitoring.custom_metrics_endpoint",
    "database.url",
    "plugins.directory",
    "kafka.dead_letter_topic",
    "kafka.results_topic",
    "kafka.auto_offset_reset",
];

/// Set the keys of `root` that variables of `env` override; returns key ->
/// variable, so errors can name the variable.
pub(super) fn apply(
    root: &mut serde_norway::Value,
    env: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut from_env = BTreeMap::new();
    for (var, key) in ENV_OVERRIDES {
        if let Some((_, value)) = env.iter().find(|(k, _)| k == var) {
            let value = if TEXT_KEYS.contains(key) {
                serde_norway::Value::String(value.clone())
            } else {
                scalar(value)
            };
            set_path(root, key, value);
            from_env.insert(key.to_string(), var.to_string());
        }
    }
    from_env
}

/// An environment value as YAML: `true`, `100`, `0.5` keep their types.
fn scalar(value: &str) -> serde_norway::Value {
    match serde_norway::from_str::<serde_norway::Value>(value) {
        Ok(v @ (serde_norway::Value::Bool(_) | serde_norway::Value::Number(_))) => v,
        _ => serde_norway::Value::String(value.to_string()),
    }
}

fn set_path(root: &mut serde_norway::Value, path: &str, value: serde_norway::Value) {
    let mut node = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let map = match node {
            serde_norway::Value::Mapping(m) => m,
            other => {
                *other = serde_norway::Value::Mapping(Default::default());
                other.as_mapping_mut().expect("just set")
            }
        };
        let key = serde_norway::Value::String(part.to_string());
        if i == parts.len() - 1 {
            map.insert(key, value);
            return;
        }
        node = map
            .entry(key)
            .or_insert(serde_norway::Value::Mapping(Default::default()));
    }
}
