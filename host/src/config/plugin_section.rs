//! What a plugin's `configure` may see: its own rule section, nothing else.
//! The sandbox holds no secrets, so the responses plugin gets the rules and
//! the category switches of `automated_response` but never its executors
//! (URLs, headers), and no manifest can name `service`, `database`,
//! `kafka` or any other section of the host's.

use super::{AutomatedResponse, Config};
use serde::Serialize;

/// A config section a plugin can be configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSection {
    /// `real_time_analytics`
    Analytics,
    /// `event_correlation`
    Correlation,
    /// `automated_response`, without the host's guardrails and executors.
    Responses,
    /// `plugin_config.NAME`: a custom plugin's own section.
    Custom(String),
}

impl PluginSection {
    pub fn parse(section: &str) -> Result<PluginSection, String> {
        match section {
            "real_time_analytics" => Ok(PluginSection::Analytics),
            "event_correlation" => Ok(PluginSection::Correlation),
            "automated_response" => Ok(PluginSection::Responses),
            _ => match section.strip_prefix("plugin_config.") {
                Some(name) if !name.is_empty() && !name.contains('.') => {
                    Ok(PluginSection::Custom(name.to_string()))
                }
                _ => Err(format!(
                    "config section '{section}': a plugin may be configured with \
                     real_time_analytics, event_correlation, automated_response or \
                     plugin_config.NAME"
                )),
            },
        }
    }

    /// The section's value as JSON text; a missing custom section is `{}`.
    pub fn json(&self, config: &Config) -> String {
        let value = match self {
            PluginSection::Analytics => serde_json::to_value(&config.real_time_analytics),
            // Inhibition is the host's (pipeline::suppress): a change to it
            // must not reconfigure the plugin.
            PluginSection::Correlation => {
                serde_json::to_value(&config.event_correlation).map(|mut v| {
                    if let Some(o) = v.as_object_mut() {
                        o.remove("inhibit_rules");
                    }
                    v
                })
            }
            PluginSection::Responses => {
                serde_json::to_value(ResponsesView::of(&config.automated_response))
            }
            PluginSection::Custom(name) => Ok(config
                .plugin_config
                .get(name)
                .cloned()
                .unwrap_or_else(|| serde_json::json!({}))),
        };
        // Plain data (strings, numbers, maps with string keys) serializes.
        value.map(|v| v.to_string()).unwrap_or_else(|_| "{}".into())
    }
}

/// The part of `automated_response` a response plugin decides with.
#[derive(Serialize)]
struct ResponsesView<'a> {
    enabled: bool,
    critical_events_enabled: bool,
    business_events_enabled: bool,
    error_events_enabled: bool,
    repeat_interval: u32,
    response_rules: &'a [super::Rule],
}

impl<'a> ResponsesView<'a> {
    fn of(a: &'a AutomatedResponse) -> Self {
        ResponsesView {
            enabled: a.enabled,
            critical_events_enabled: a.critical_events_enabled,
            business_events_enabled: a.business_events_enabled,
            error_events_enabled: a.error_events_enabled,
            repeat_interval: a.repeat_interval,
            response_rules: &a.response_rules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Executor, WebhookSpec};

    #[test]
    fn the_responses_section_carries_rules_but_no_executor() {
        let mut c = Config::default();
        c.automated_response.executors.insert(
            "secret_hook".into(),
            Executor::Webhook(WebhookSpec {
                url: "http://127.0.0.1:1/hook?token=s3cr3t-url".into(),
                timeout_ms: 1000,
                retries: 0,
                backoff_ms: 10,
                headers: [("Authorization".into(), "Bearer s3cr3t-header".into())].into(),
            }),
        );
        let json = PluginSection::Responses.json(&c);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let a = v.as_object().unwrap();
        assert_eq!(a.len(), 6, "{json}");
        for host_only in ["executors", "actions", "command_allowlist", "cooldown_secs"] {
            assert!(!a.contains_key(host_only), "{host_only} in {json}");
        }
        assert_eq!(v["response_rules"].as_array().unwrap().len(), 3);
        assert!(!json.contains("s3cr3t"), "{json}");
    }

    #[test]
    fn host_sections_cannot_be_named() {
        for s in [
            "service",
            "database",
            "kafka",
            "tls",
            "plugin_config",
            "plugin_config.a.b",
        ] {
            assert!(PluginSection::parse(s).is_err(), "{s}");
        }
        let custom = PluginSection::parse("plugin_config.my_rules").unwrap();
        assert_eq!(custom, PluginSection::Custom("my_rules".into()));
        let mut c = Config::default();
        assert_eq!(custom.json(&c), "{}");
        c.plugin_config
            .insert("my_rules".into(), serde_json::json!({"limit": 3}));
        assert_eq!(custom.json(&c), r#"{"limit":3}"#);
    }
}
