//! `event_correlation` and the rule type shared with `automated_response`.

use serde::{Deserialize, Serialize};

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

pub(super) fn rule(name: &str, condition: &str, action: &str) -> Rule {
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
    /// Findings that hold back others (applied by the host, not given to
    /// the plugin).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub inhibit_rules: Vec<super::InhibitRule>,
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
            inhibit_rules: Vec::new(),
        }
    }
}

impl EventCorrelation {
    pub(super) fn check(&self) -> Result<(), String> {
        super::inhibit::check(&self.inhibit_rules)?;
        if self.window_size == 0 || self.window_size > 86_400 {
            return Err(
                "event_correlation.window_size: must be between 1 and 86400 seconds".into(),
            );
        }
        if self.alert_threshold == 0 {
            return Err("event_correlation.alert_threshold: must be at least 1".into());
        }
        check_rules(
            "event_correlation.correlation_rules",
            &self.correlation_rules,
        )
    }
}

/// Every rule's condition parses. `section` names the list in the message.
pub(super) fn check_rules(section: &str, rules: &[Rule]) -> Result<(), String> {
    for r in rules {
        hxp_plugin_sdk::expr::parse(&r.condition).map_err(|e| {
            format!(
                "{section}: rule '{}': cannot parse condition {:?}: {e}",
                r.name, r.condition
            )
        })?;
    }
    Ok(())
}
