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
    pub correlation_rules: Vec<CorrelationRule>,
    /// Thresholds of the built-in pattern detectors (see the correlation
    /// plugin's documentation); absent keys keep their defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patterns: Option<serde_json::Value>,
    /// Flap damping (`max_toggles`, `period_secs`, `quiet_secs`; see the
    /// correlation plugin); absent keys keep their defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flap_damping: Option<serde_json::Value>,
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
                CorrelationRule::counting("high_error_rate", "error_rate > 0.1"),
                CorrelationRule::counting("low_satisfaction", "user_satisfaction < 7.0"),
                CorrelationRule::counting("high_latency", "latency > 2000"),
            ],
            patterns: None,
            flap_damping: None,
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
        for r in &self.correlation_rules {
            r.check().map_err(|e| {
                format!(
                    "event_correlation.correlation_rules: rule '{}': {e}",
                    r.name
                )
            })?;
        }
        Ok(())
    }
}

/// A correlation rule. Exactly one of `condition` (occurrences counted in
/// the window), `sequence` or `absence` says what it detects; the
/// correlation plugin documents and fully checks the rest (the host only
/// checks the shape and that every condition parses, so that a broken
/// rule stops the start with its name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Conditions that must hold in this order, on one key, within `within`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<serde_json::Value>,
    /// `after` not followed by `expect` on the same key within `within`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absence: Option<Absence>,
    /// Event fields that make the key: occurrences, thresholds and findings
    /// per key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
    /// Occurrences that make the rule active (default: the section's
    /// `alert_threshold`, 1 for sequences and absences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// Keys tracked at most; the least recently seen is evicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<u32>,
    #[serde(default = "alert")]
    pub action: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Absence {
    pub after: String,
    pub expect: String,
    pub within: serde_json::Value,
}

fn alert() -> String {
    "alert".into()
}

impl CorrelationRule {
    pub fn counting(name: &str, condition: &str) -> CorrelationRule {
        CorrelationRule {
            name: name.into(),
            condition: Some(condition.into()),
            sequence: None,
            within: None,
            absence: None,
            group_by: Vec::new(),
            threshold: None,
            max_keys: None,
            action: alert(),
        }
    }

    /// The conditions it holds, each of which must parse, and exactly one
    /// kind.
    fn check(&self) -> Result<(), String> {
        let mut conditions: Vec<&str> = Vec::new();
        let mut kinds = 0;
        if let Some(c) = &self.condition {
            conditions.push(c);
            kinds += 1;
        }
        if let Some(s) = &self.sequence {
            conditions.extend(s.iter().map(String::as_str));
            kinds += 1;
        }
        if let Some(a) = &self.absence {
            conditions.extend([a.after.as_str(), a.expect.as_str()]);
            kinds += 1;
        }
        if kinds != 1 {
            return Err("needs exactly one of condition, sequence or absence".into());
        }
        for c in conditions {
            hxp_plugin_sdk::expr::parse(c)
                .map_err(|e| format!("cannot parse condition {c:?}: {e}"))?;
        }
        let within = self
            .within
            .iter()
            .chain(self.absence.as_ref().map(|a| &a.within));
        for w in within {
            check_within(w)?;
        }
        Ok(())
    }
}

/// A `within`: seconds as a number, or text the SDK's duration parser
/// reads (`30s`, `5m`, `1h30m`), as the plugin will read it.
fn check_within(w: &serde_json::Value) -> Result<(), String> {
    let ok = match w {
        serde_json::Value::Number(n) => n.as_f64().is_some_and(|s| s > 0.0),
        serde_json::Value::String(t) => {
            hxp_plugin_sdk::duration::parse_millis(t).map_err(|e| format!("within: {e}"))? > 0
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "within: {w} is not a duration (e.g. 30, \"30s\", \"5m\")"
        ))
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
