//! The service configuration: the requirements' sections, plus `database`
//! and `plugins`. Loaded from YAML, overridden by environment variables, then
//! checked. Unknown keys and invalid values stop the start with a message
//! naming the key (and the variable, when it came from one).
//!
//! Every field is documented in `config/event-processing.yaml`.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub service: ServiceConfig,
    pub event_consumers: EventConsumers,
    pub real_time_analytics: RealTimeAnalytics,
    pub event_correlation: EventCorrelation,
    pub automated_response: AutomatedResponse,
    pub performance_metrics: PerformanceMetrics,
    pub stream_processing: StreamProcessing,
    pub kafka: Kafka,
    pub performance: Performance,
    pub monitoring: Monitoring,
    pub database: Database,
    pub plugins: Plugins,
    /// Config sections of custom plugins, by name: a plugin whose manifest
    /// says `config: plugin_config.NAME` is configured with `NAME`'s value.
    pub plugin_config: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Service name reported by /health (requirements: event-processing-api).
    pub name: String,
    /// Listen address. Loopback by default; the requirements' 0.0.0.0 must
    /// be chosen explicitly.
    pub host: String,
    /// EVENT_PROCESSING_API_PORT (requirements: 9100).
    pub port: u16,
    /// HTTP worker threads (requirements: 2).
    pub workers: usize,
    /// EVENT_PROCESSING_TIMEOUT: seconds a request may take, including the
    /// wait for its events to be stored.
    pub timeout: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// EVENT_PROCESSING_ADMIN_TOKEN: bearer token of the admin endpoints;
    /// empty disables them.
    pub admin_token: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            name: "event-processing-api".into(),
            host: "127.0.0.1".into(),
            port: 9100,
            workers: 2,
            timeout: 30,
            max_body_bytes: 16 << 20,
            admin_token: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventConsumers {
    pub llm_requests_enabled: bool,
    pub user_feedback_enabled: bool,
    pub system_metrics_enabled: bool,
    pub business_events_enabled: bool,
    pub error_events_enabled: bool,
}

impl Default for EventConsumers {
    fn default() -> Self {
        EventConsumers {
            llm_requests_enabled: true,
            user_feedback_enabled: true,
            system_metrics_enabled: true,
            business_events_enabled: true,
            error_events_enabled: true,
        }
    }
}

impl EventConsumers {
    /// Enabled flags in `EventKind` order.
    pub fn enabled(&self) -> [bool; 5] {
        [
            self.llm_requests_enabled,
            self.user_feedback_enabled,
            self.system_metrics_enabled,
            self.business_events_enabled,
            self.error_events_enabled,
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealTimeAnalytics {
    pub enabled: bool,
    /// Sliding window, seconds.
    pub window_size: u32,
    /// Longest time, in seconds, the served analytics may go without being
    /// recomputed (they are recomputed after every batch, and on this timer
    /// when no events arrive, so the window keeps sliding).
    pub update_interval: u64,
    /// Per-event-type breakdown in /analytics.
    pub aggregation_enabled: bool,
    /// Metrics shown by /analytics (all are computed).
    pub metrics: Vec<String>,
}

impl Default for RealTimeAnalytics {
    fn default() -> Self {
        RealTimeAnalytics {
            enabled: true,
            window_size: 300,
            update_interval: 10,
            aggregation_enabled: true,
            metrics: [
                "throughput",
                "latency",
                "error_rate",
                "user_satisfaction",
                "business_value",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub condition: String,
    pub action: String,
    /// Response rules only: fixed target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Response rules only: critical | business | error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Response rules only: passed through to the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Map<String, serde_json::Value>>,
}

fn rule(name: &str, condition: &str, action: &str) -> Rule {
    Rule {
        name: name.into(),
        condition: condition.into(),
        action: action.into(),
        target: None,
        category: None,
        parameters: None,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventCorrelation {
    pub enabled: bool,
    pub window_size: u32,
    pub pattern_detection_enabled: bool,
    pub alert_threshold: u32,
    pub correlation_rules: Vec<Rule>,
    /// Thresholds of the built-in pattern detectors (see the correlation
    /// plugin's documentation); absent keys keep their defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patterns: Option<serde_json::Value>,
}

impl Default for EventCorrelation {
    fn default() -> Self {
        EventCorrelation {
            enabled: true,
            window_size: 60,
            pattern_detection_enabled: true,
            alert_threshold: 5,
            correlation_rules: vec![
                rule("high_error_rate", "error_rate > 0.1", "alert"),
                rule("low_satisfaction", "user_satisfaction < 7.0", "alert"),
                rule("high_latency", "latency > 2000", "alert"),
            ],
            patterns: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutomatedResponse {
    pub enabled: bool,
    pub critical_events_enabled: bool,
    pub business_events_enabled: bool,
    pub error_events_enabled: bool,
    /// Seconds after which a rule whose condition still holds asks again.
    pub repeat_interval: u32,
    pub response_rules: Vec<Rule>,
    /// AUTOMATED_RESPONSE_DRY_RUN: record every request, call no executor.
    pub dry_run: bool,
    /// Rules whose requests are only recorded (dry run per rule).
    pub dry_run_rules: Vec<String>,
    /// Seconds an (action, target) stays quiet after a request was let
    /// through; 0 = no cooldown.
    pub cooldown_secs: u64,
    /// Seconds within which an identical request (action, target,
    /// parameters without the plugin's measured values) is dropped; 0 = off.
    pub dedup_window_secs: u64,
    /// Requests let through per action in any 60 s; 0 = unlimited.
    pub rate_limit_per_minute: u32,
    /// Executions running at once (webhook calls, commands).
    pub max_concurrency: usize,
    /// Requests waiting for a free slot; more are recorded as failed.
    pub queue_capacity: usize,
    /// A request that waited longer than this for a slot is recorded as
    /// failed instead of acting on stale analytics.
    pub max_queue_wait_secs: u64,
    /// At shutdown, seconds running and queued requests get after the
    /// pipeline drained; then they are recorded as failed ("shutdown").
    pub shutdown_grace_secs: u64,
    /// Programs a `command` executor may run (absolute paths, exact match).
    pub command_allowlist: Vec<String>,
    /// Executors by name.
    pub executors: BTreeMap<String, crate::executor::Executor>,
    /// Action -> executor name; "*" catches every other action.
    pub actions: BTreeMap<String, String>,
}

impl Default for AutomatedResponse {
    fn default() -> Self {
        AutomatedResponse {
            enabled: true,
            critical_events_enabled: true,
            business_events_enabled: true,
            error_events_enabled: true,
            repeat_interval: 60,
            response_rules: vec![
                rule("scale_up_models", "throughput > 1000", "scale_models"),
                rule(
                    "restart_failed_service",
                    "service_health == \"failed\"",
                    "restart_service",
                ),
                rule("notify_admin", "error_rate > 0.2", "send_notification"),
            ],
            dry_run: false,
            dry_run_rules: Vec::new(),
            cooldown_secs: 300,
            dedup_window_secs: 60,
            rate_limit_per_minute: 10,
            max_concurrency: 4,
            queue_capacity: 1000,
            max_queue_wait_secs: 60,
            shutdown_grace_secs: 10,
            command_allowlist: Vec::new(),
            executors: crate::executor::default_executors(),
            actions: crate::executor::default_actions(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceMetrics {
    pub calculation_enabled: bool,
    /// Seconds between analytics history snapshots (and metric pushes).
    pub update_interval: u64,
    /// Seconds of analytics history kept in the database.
    pub history_retention: u64,
    pub aggregation_enabled: bool,
    pub metrics: Vec<String>,
}

impl Default for PerformanceMetrics {
    fn default() -> Self {
        PerformanceMetrics {
            calculation_enabled: true,
            update_interval: 5,
            history_retention: 3600,
            aggregation_enabled: true,
            metrics: [
                "requests_per_second",
                "average_latency",
                "error_percentage",
                "cost_per_request",
                "user_satisfaction_score",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamProcessing {
    pub enabled: bool,
    /// Largest batch handed to the plugins and written in one transaction.
    pub batch_size: usize,
    /// Longest time, in seconds, an event may wait for its batch to fill. A
    /// batch also closes as soon as no more input is waiting.
    pub flush_interval: f64,
    /// Threads that parse and validate incoming events (bulk bodies, Kafka).
    pub parallel_workers: usize,
    /// Only `real_time` is supported.
    pub processing_mode: String,
    /// Events that may wait for processing before ingestion pushes back
    /// (HTTP 503 with Retry-After).
    pub queue_capacity: usize,
}

impl Default for StreamProcessing {
    fn default() -> Self {
        StreamProcessing {
            enabled: true,
            batch_size: 100,
            flush_interval: 5.0,
            parallel_workers: 4,
            processing_mode: "real_time".into(),
            queue_capacity: 100_000,
        }
    }
}

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Performance {
    /// Reported only; the service's own footprint is far below it.
    pub memory_limit_gb: f64,
    pub cpu_cores: u32,
    /// trace | debug | info | warn | error (also RUST_LOG).
    pub log_level: String,
}

impl Default for Performance {
    fn default() -> Self {
        Performance {
            memory_limit_gb: 4.0,
            cpu_cores: 6,
            log_level: "INFO".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitoring {
    pub kafka_bootstrap_servers: String,
    /// Where scale_models / restart_service requests go.
    pub api_gateway_endpoint: String,
    pub sql_database_endpoint: String,
    /// The Prometheus server that scrapes this service.
    pub metrics_server_endpoint: String,
    /// CUSTOM_METRICS_ENDPOINT: a Pushgateway to push metrics to; empty: no push.
    pub custom_metrics_endpoint: String,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            kafka_bootstrap_servers: String::new(),
            api_gateway_endpoint: "http://127.0.0.1:8000".into(),
            sql_database_endpoint: "127.0.0.1:5432".into(),
            metrics_server_endpoint: "http://127.0.0.1:9090".into(),
            custom_metrics_endpoint: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// DATABASE_URL: `sqlite://PATH` (embedded, the default) or
    /// `postgres://USER@HOST:PORT/DB`.
    pub url: String,
    /// Connections (PostgreSQL; SQLite writes through one).
    pub max_connections: u32,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            url: "sqlite://data/hxp-events.db".into(),
            max_connections: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plugins {
    /// EVENT_PROCESSING_PLUGIN_DIR: where `analytics.wasm`,
    /// `correlation.wasm` and `responses.wasm` are (`make build` puts them in
    /// target/plugins).
    pub directory: PathBuf,
    /// Compiled components, by content hash.
    pub cache_dir: PathBuf,
    /// Bounds of every plugin call (a manifest may set its own).
    pub limits: crate::plugin::Limits,
    /// Watch the plugin directory and the config file, and deploy changes
    /// while running.
    pub watch: bool,
    /// Quiet time after the last file change before a deployment starts.
    pub debounce_ms: u64,
    /// Every deployed version is kept here by content hash, for rollback
    /// and for restarts while the directory holds a rejected file.
    pub archive_dir: PathBuf,
}

impl Default for Plugins {
    fn default() -> Self {
        Plugins {
            directory: "target/plugins".into(),
            cache_dir: "data/plugin-cache".into(),
            limits: crate::plugin::Limits::default(),
            watch: true,
            debounce_ms: 200,
            archive_dir: "data/plugin-archive".into(),
        }
    }
}

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
    ("EVENT_PROCESSING_PLUGIN_DIR", "plugins.directory"),
    ("EVENT_PROCESSING_PLUGIN_WATCH", "plugins.watch"),
];

/// Keys whose environment value is always text (a token of digits stays a
/// string).
const TEXT_KEYS: &[&str] = &[
    "service.host",
    "service.admin_token",
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

impl Config {
    /// Load `path` (or the defaults when `None`), apply the environment,
    /// and check the result.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let text = match path {
            Some(p) => std::fs::read_to_string(p)
                .with_context(|| format!("reading config {}", p.display()))?,
            None => String::new(),
        };
        let origin = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "defaults".into());
        Config::from_yaml(&text, &origin, &env)
    }

    /// `text` (YAML) with `env` applied. Errors name the key.
    pub fn from_yaml(text: &str, origin: &str, env: &[(String, String)]) -> anyhow::Result<Config> {
        let mut root: serde_yaml::Value = if text.trim().is_empty() {
            serde_yaml::Value::Mapping(Default::default())
        } else {
            serde_yaml::from_str(text).with_context(|| format!("{origin} is not valid YAML"))?
        };
        if !root.is_mapping() {
            bail!("{origin}: the config must be a mapping of sections");
        }
        let mut from_env: BTreeMap<String, String> = BTreeMap::new();
        for (var, key) in ENV_OVERRIDES {
            if let Some((_, value)) = env.iter().find(|(k, _)| k == var) {
                let value = if TEXT_KEYS.contains(key) {
                    serde_yaml::Value::String(value.clone())
                } else {
                    scalar(value)
                };
                set_path(&mut root, key, value);
                from_env.insert(key.to_string(), var.to_string());
            }
        }
        let config: Config = serde_path_to_error::deserialize(root).map_err(|e| {
            let key = e.path().to_string();
            let via = from_env
                .get(&key)
                .map(|v| format!(" (set by {v})"))
                .unwrap_or_default();
            anyhow::anyhow!("{origin}: {key}{via}: {}", e.into_inner())
        })?;
        config.check().map_err(|e| {
            let via = from_env
                .iter()
                .find(|(k, _)| e.starts_with(k.as_str()))
                .map(|(_, v)| format!(" (set by {v})"))
                .unwrap_or_default();
            anyhow::anyhow!("{origin}: {e}{via}")
        })?;
        Ok(config)
    }

    /// Value checks serde cannot express. Messages start with the key.
    pub fn check(&self) -> Result<(), String> {
        let s = &self.service;
        if s.port == 0 {
            return Err("service.port: must be between 1 and 65535".into());
        }
        if s.host.parse::<std::net::IpAddr>().is_err() && s.host != "localhost" {
            return Err(format!("service.host: '{}' is not an IP address", s.host));
        }
        if s.workers == 0 || s.workers > 256 {
            return Err("service.workers: must be between 1 and 256".into());
        }
        if s.timeout == 0 {
            return Err("service.timeout: must be at least 1 second".into());
        }
        if s.max_body_bytes < 1024 {
            return Err("service.max_body_bytes: must be at least 1024".into());
        }
        let a = &self.real_time_analytics;
        if a.window_size == 0 || a.window_size > 86_400 {
            return Err(
                "real_time_analytics.window_size: must be between 1 and 86400 seconds".into(),
            );
        }
        if a.update_interval == 0 {
            return Err("real_time_analytics.update_interval: must be at least 1 second".into());
        }
        let c = &self.event_correlation;
        if c.window_size == 0 || c.window_size > 86_400 {
            return Err(
                "event_correlation.window_size: must be between 1 and 86400 seconds".into(),
            );
        }
        if c.alert_threshold == 0 {
            return Err("event_correlation.alert_threshold: must be at least 1".into());
        }
        for (section, rules) in [
            ("event_correlation.correlation_rules", &c.correlation_rules),
            (
                "automated_response.response_rules",
                &self.automated_response.response_rules,
            ),
        ] {
            for r in rules {
                hxp_plugin_sdk::expr::parse(&r.condition).map_err(|e| {
                    format!(
                        "{section}: rule '{}': cannot parse condition {:?}: {e}",
                        r.name, r.condition
                    )
                })?;
            }
        }
        let p = &self.performance_metrics;
        if p.update_interval == 0 {
            return Err("performance_metrics.update_interval: must be at least 1 second".into());
        }
        if p.history_retention < p.update_interval {
            return Err(
                "performance_metrics.history_retention: must be at least update_interval".into(),
            );
        }
        let sp = &self.stream_processing;
        if sp.batch_size == 0 || sp.batch_size > 100_000 {
            return Err("stream_processing.batch_size: must be between 1 and 100000".into());
        }
        if !(sp.flush_interval > 0.0 && sp.flush_interval <= 3600.0) {
            return Err(
                "stream_processing.flush_interval: must be between 0 and 3600 seconds".into(),
            );
        }
        if sp.parallel_workers == 0 || sp.parallel_workers > 256 {
            return Err("stream_processing.parallel_workers: must be between 1 and 256".into());
        }
        if sp.processing_mode != "real_time" {
            return Err(format!(
                "stream_processing.processing_mode: '{}' is not supported (only real_time)",
                sp.processing_mode
            ));
        }
        if sp.queue_capacity < sp.batch_size {
            return Err("stream_processing.queue_capacity: must be at least batch_size".into());
        }
        let k = &self.kafka;
        if k.max_poll_records == 0 {
            return Err("kafka.max_poll_records: must be at least 1".into());
        }
        for key in k.topics.keys() {
            if hxp_plugin_sdk::EventKind::parse(key).is_none() {
                return Err(format!("kafka.topics.{key}: not an event type"));
            }
        }
        if k.partitions < 1 {
            return Err("kafka.partitions: must be at least 1".into());
        }
        if !k.bootstrap_servers.is_empty() && k.max_poll_records > sp.queue_capacity {
            return Err(
                "kafka.max_poll_records: must not exceed stream_processing.queue_capacity".into(),
            );
        }
        if !["earliest", "latest"].contains(&k.auto_offset_reset.as_str()) {
            return Err(format!(
                "kafka.auto_offset_reset: '{}' is not earliest or latest",
                k.auto_offset_reset
            ));
        }
        if k.max_message_bytes < 1024 {
            return Err("kafka.max_message_bytes: must be at least 1024".into());
        }
        if !k.bootstrap_servers.is_empty() && k.dead_letter_topic.is_empty() {
            return Err("kafka.dead_letter_topic: must be set when Kafka is used".into());
        }
        let level = self.performance.log_level.to_ascii_lowercase();
        if !["trace", "debug", "info", "warn", "warning", "error"].contains(&level.as_str()) {
            return Err(format!(
                "performance.log_level: '{}' is not a log level",
                self.performance.log_level
            ));
        }
        let db = &self.database.url;
        if !(db.starts_with("sqlite:")
            || db.starts_with("postgres://")
            || db.starts_with("postgresql://"))
        {
            return Err("database.url: must start with sqlite: or postgres://".into());
        }
        if self.database.max_connections == 0 {
            return Err("database.max_connections: must be at least 1".into());
        }
        self.plugins.limits.check("plugins.limits")?;
        crate::executor::check(&self.automated_response, &self.monitoring)?;
        for (key, url) in [
            (
                "monitoring.api_gateway_endpoint",
                &self.monitoring.api_gateway_endpoint,
            ),
            (
                "monitoring.metrics_server_endpoint",
                &self.monitoring.metrics_server_endpoint,
            ),
            (
                "monitoring.custom_metrics_endpoint",
                &self.monitoring.custom_metrics_endpoint,
            ),
        ] {
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{key}: '{url}' is not an http(s) URL"));
            }
        }
        Ok(())
    }

    /// The config as shown by GET /config: secrets replaced.
    pub fn redacted(&self) -> serde_json::Value {
        let mut c = self.clone();
        if !c.service.admin_token.is_empty() {
            c.service.admin_token = "(set)".into();
        }
        c.database.url = redact_url(&c.database.url);
        for e in c.automated_response.executors.values_mut() {
            if let crate::executor::Executor::Webhook(w) = e {
                for v in w.headers.values_mut() {
                    *v = "(set)".into();
                }
            }
        }
        serde_json::to_value(c).expect("config serializes")
    }

    /// A section as JSON, for a plugin's `configure`: a top-level section
    /// (`event_correlation`) or a dotted path (`plugin_config.my_rules`).
    /// A missing section is `{}`.
    pub fn section_json(&self, section: &str) -> String {
        let v = serde_json::to_value(self).expect("config serializes");
        section
            .split('.')
            .try_fold(&v, |node, key| node.get(key))
            .map(|s| s.to_string())
            .unwrap_or_else(|| "{}".into())
    }
}

/// Hide a password in a database URL.
pub(crate) fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((cred, host)) = rest.split_once('@')
        && let Some((user, _)) = cred.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_string()
}

/// An environment value as YAML: `true`, `100`, `0.5` keep their types.
fn scalar(value: &str) -> serde_yaml::Value {
    match serde_yaml::from_str::<serde_yaml::Value>(value) {
        Ok(v @ (serde_yaml::Value::Bool(_) | serde_yaml::Value::Number(_))) => v,
        _ => serde_yaml::Value::String(value.to_string()),
    }
}

fn set_path(root: &mut serde_yaml::Value, path: &str, value: serde_yaml::Value) {
    let mut node = root;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let map = match node {
            serde_yaml::Value::Mapping(m) => m,
            other => {
                *other = serde_yaml::Value::Mapping(Default::default());
                other.as_mapping_mut().expect("just set")
            }
        };
        let key = serde_yaml::Value::String(part.to_string());
        if i == parts.len() - 1 {
            map.insert(key, value);
            return;
        }
        node = map
            .entry(key)
            .or_insert(serde_yaml::Value::Mapping(Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::from_yaml(text, "test.yaml", &env)
    }

    #[test]
    fn the_shipped_file_is_valid_and_loopback() {
        let text = include_str!("../../config/event-processing.yaml");
        let c = load(text, &[]).unwrap();
        assert_eq!(c.service.port, 9100);
        assert_eq!(c.service.host, "127.0.0.1");
        assert_eq!(c.stream_processing.batch_size, 100);
        assert_eq!(c.event_correlation.correlation_rules.len(), 3);
        assert!(c.kafka.bootstrap_servers.is_empty());
        for url in [
            &c.monitoring.api_gateway_endpoint,
            &c.monitoring.metrics_server_endpoint,
        ] {
            assert!(url.contains("127.0.0.1"), "{url}");
        }
    }

    #[test]
    fn environment_overrides_keys() {
        let c = load(
            "stream_processing:\n  batch_size: 10\n",
            &[
                ("STREAM_PROCESSING_BATCH_SIZE", "250"),
                ("EVENT_PROCESSING_API_PORT", "9200"),
                ("EVENT_CONSUMER_ERROR_EVENTS_ENABLED", "false"),
                (
                    "DATABASE_URL",
                    "postgres://postgres:secret@127.0.0.1:5432/test",
                ),
                ("EVENT_PROCESSING_ADMIN_TOKEN", "12345"),
            ],
        )
        .unwrap();
        assert_eq!(c.stream_processing.batch_size, 250);
        assert_eq!(c.service.port, 9200);
        assert!(!c.event_consumers.error_events_enabled);
        assert_eq!(c.service.admin_token, "12345");
        let shown = c.redacted();
        assert_eq!(
            shown["database"]["url"],
            "postgres://postgres:***@127.0.0.1:5432/test"
        );
        assert_eq!(shown["service"]["admin_token"], "(set)");
    }

    #[test]
    fn errors_name_the_key() {
        let e = load("stream_processing:\n  batch_sise: 10\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stream_processing") && e.contains("unknown field `batch_sise`"),
            "{e}"
        );
        let e = load("nonsense: 1\n", &[]).unwrap_err().to_string();
        assert!(e.contains("unknown field `nonsense`"), "{e}");
        let e = load("", &[("STREAM_PROCESSING_BATCH_SIZE", "lots")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stream_processing.batch_size (set by STREAM_PROCESSING_BATCH_SIZE)"),
            "{e}"
        );
        let e = load("", &[("STREAM_PROCESSING_BATCH_SIZE", "0")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stream_processing.batch_size: must be between")
                && e.contains("STREAM_PROCESSING_BATCH_SIZE"),
            "{e}"
        );
        let e = load("event_correlation:\n  correlation_rules:\n    - {name: x, condition: 'a >', action: alert}\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("rule 'x': cannot parse condition"), "{e}");
        let e = load("service:\n  port: 70000\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("service.port"), "{e}");
        let e = load("database:\n  url: mysql://x\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("database.url"), "{e}");
    }
}
