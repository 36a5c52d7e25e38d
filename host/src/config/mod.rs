//! The service configuration: the requirements' sections, plus `database`
//! and `plugins`. Loaded from YAML, overridden by environment variables, then
//! checked. Unknown keys and invalid values stop the start with a message
//! naming the key (and the variable, when it came from one).
//!
//! Every field is documented in `config/event-processing.yaml`.

//!
//! One file per section (`service`, `analytics`, `correlation`,
//! `responses`, `stream`, `kafka`, `monitoring`, `storage`) holds its
//! serde struct, its defaults and its checks; `env` maps environment
//! variables onto keys. Nothing here is a runtime type: the parts that run
//! build themselves from these.

mod analytics;
mod correlation;
mod env;
mod events;
mod inhibit;
mod kafka;
mod monitoring;
mod plugin_section;
mod responses;
mod service;
mod storage;
mod stream;
mod tls;

pub use analytics::{PerformanceMetrics, RealTimeAnalytics};
pub use correlation::{Absence, CorrelationRule, EventCorrelation, Rule};
pub use env::ENV_OVERRIDES;
pub use events::EventConsumers;
pub use inhibit::InhibitRule;
pub use kafka::Kafka;
pub use monitoring::Monitoring;
pub use plugin_section::PluginSection;
pub use responses::{
    AutomatedResponse, CommandSpec, Executor, WebhookSpec, default_actions, default_executors,
    header_map, resolve_url, validate_template,
};
pub use service::{Performance, ServiceConfig};
pub use storage::{Database, Plugins, Quarantine};
pub use stream::{StreamProcessing, TimeMode};
pub use tls::{ClientTls, ServerTls, Tls};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

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
    pub tls: Tls,
    /// Config sections of custom plugins, by name: a plugin whose manifest
    /// says `config: plugin_config.NAME` is configured with `NAME`'s value.
    pub plugin_config: BTreeMap<String, serde_json::Value>,
}

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
        let mut root: serde_norway::Value = if text.trim().is_empty() {
            serde_norway::Value::Mapping(Default::default())
        } else {
            serde_norway::from_str(text).with_context(|| format!("{origin} is not valid YAML"))?
        };
        if !root.is_mapping() {
            bail!("{origin}: the config must be a mapping of sections");
        }
        let from_env = env::apply(&mut root, env);
        let mut config: Config = serde_path_to_error::deserialize(root).map_err(|e| {
            let key = e.path().to_string();
            let via = from_env
                .get(&key)
                .map(|v| format!(" (set by {v})"))
                .unwrap_or_default();
            anyhow::anyhow!("{origin}: {key}{via}: {}", e.into_inner())
        })?;
        config
            .kafka
            .expand_env(env)
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
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

    /// Value checks serde cannot express, section by section. Messages
    /// start with the key.
    pub fn check(&self) -> Result<(), String> {
        self.service.check()?;
        self.real_time_analytics.check()?;
        self.event_correlation.check()?;
        correlation::check_rules(
            "automated_response.response_rules",
            &self.automated_response.response_rules,
        )?;
        self.performance_metrics.check()?;
        self.stream_processing.check()?;
        self.kafka.check(&self.stream_processing)?;
        self.performance.check()?;
        self.database.check()?;
        self.plugins.limits.check("plugins.limits")?;
        if self.plugins.max_upload_bytes < 1024 {
            return Err("plugins.max_upload_bytes: must be at least 1024".into());
        }
        if self.plugins.quarantine.window_secs == 0 {
            return Err("plugins.quarantine.window_secs: must be at least 1".into());
        }
        self.automated_response.check(&self.monitoring)?;
        self.tls.check()?;
        self.monitoring.check()
    }

    /// The config as shown by GET /config: secrets replaced.
    pub fn redacted(&self) -> serde_json::Value {
        let mut c = self.clone();
        if !c.service.admin_token.is_empty() {
            c.service.admin_token = "(set)".into();
        }
        for t in c.service.admin_tokens.values_mut() {
            *t = "(set)".into();
        }
        c.database.url = redact_url(&c.database.url);
        c.kafka.redact();
        for e in c.automated_response.executors.values_mut() {
            if let Executor::Webhook(w) = e {
                for v in w.headers.values_mut() {
                    *v = "(set)".into();
                }
            }
        }
        serde_json::to_value(c).expect("config serializes")
    }

    /// What the sources accept: the enabled types, and timestamps at most
    /// `stream_processing.max_clock_skew_secs` ahead of the clock.
    pub fn acceptance(&self) -> crate::event::Acceptance {
        crate::event::Acceptance {
            enabled: self.event_consumers.enabled(),
            max_ahead_ms: (self.stream_processing.max_clock_skew_secs as i64).saturating_mul(1000),
        }
    }

    /// A plugin's section as JSON, for its `configure`: one of the plugin
    /// sections (`event_correlation`) or a custom one
    /// (`plugin_config.my_rules`), never a section of the host's (see
    /// [`PluginSection`]). A missing custom section is `{}`.
    pub fn section_json(&self, section: &str) -> Result<String, String> {
        PluginSection::parse(section).map(|s| s.json(self))
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
        let text = include_str!("../../../config/event-processing.yaml");
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
    fn named_admin_tokens_are_checked_and_hidden() {
        let c = load(
            "service:\n  admin_tokens:\n    ci: ci-token-0123456789\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.service.admin_tokens["ci"], "ci-token-0123456789");
        assert_eq!(c.redacted()["service"]["admin_tokens"]["ci"], "(set)");
        let e = load("service:\n  admin_tokens:\n    ci: short\n", &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("admin_tokens.ci: must be at least 16"),
            "{e}"
        );
        let e = load(
            "service:\n  admin_tokens:\n    'a b': ci-token-0123456789\n",
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("name 'a b'"), "{e}");
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
        // (the file, what the error names)
        let rules = "event_correlation:\n  correlation_rules:\n    - ";
        for (yaml, says) in [
            (
                format!("{rules}{{name: x, condition: 'a >', action: alert}}\n"),
                "rule 'x': cannot parse condition",
            ),
            (
                format!("{rules}{{name: s, sequence: ['a > 1', 'b > 1'], within: 5 min}}\n"),
                "rule 's': within: '5 min': unknown unit",
            ),
            (
                format!(
                    "{rules}{{name: n, absence: {{after: 'a > 1', expect: 'b > 1', within: [1]}}}}\n"
                ),
                "rule 'n': within: [1] is not a duration",
            ),
            ("service:\n  port: 70000\n".into(), "service.port"),
            ("database:\n  url: mysql://x\n".into(), "database.url"),
        ] {
            let e = load(&yaml, &[]).unwrap_err().to_string();
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
