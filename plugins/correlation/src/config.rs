//! The `event_correlation` section as the plugin reads it, and the rules
//! compiled from it.

use crate::metrics::{Metric, resolve};
use hxp_plugin_sdk::expr::{self, Expr};
use hxp_plugin_sdk::patterns::PatternConfig;
use serde::Deserialize;

/// Keys a rule with `group_by` tracks unless it says otherwise.
pub const DEFAULT_MAX_KEYS: u32 = 10_000;
/// The most keys a rule may ask for (memory: about 200 bytes a key plus
/// its seconds in the window).
pub const MAX_MAX_KEYS: u32 = 1_000_000;
/// The longest `within` (a day, like the window).
pub const MAX_WITHIN_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    pub window_size: u32,
    pub pattern_detection_enabled: bool,
    pub alert_threshold: u32,
    pub correlation_rules: Vec<RuleConfig>,
    pub patterns: PatternConfig,
    pub flap_damping: FlapConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window_size: 60,
            pattern_detection_enabled: true,
            alert_threshold: 5,
            correlation_rules: vec![
                RuleConfig::counting("high_error_rate", "error_rate > 0.1"),
                RuleConfig::counting("low_satisfaction", "user_satisfaction < 7.0"),
                RuleConfig::counting("high_latency", "latency > 2000"),
            ],
            patterns: PatternConfig::default(),
            flap_damping: FlapConfig::default(),
        }
    }
}

/// A finding that turns on and off more than `max_toggles` times within
/// `period_secs` is flapping: it is held active (and does not alert again)
/// until it has not changed for `quiet_secs`. `max_toggles: 0` turns
/// damping off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlapConfig {
    pub max_toggles: u32,
    pub period_secs: u32,
    pub quiet_secs: u32,
}

impl Default for FlapConfig {
    fn default() -> Self {
        FlapConfig {
            max_toggles: 4,
            period_secs: 600,
            quiet_secs: 300,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default)]
    pub condition: Option<String>,
    #[serde(default)]
    pub sequence: Option<Vec<String>>,
    #[serde(default)]
    pub within: Option<Within>,
    #[serde(default)]
    pub absence: Option<AbsenceConfig>,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(default)]
    pub threshold: Option<u32>,
    #[serde(default)]
    pub max_keys: Option<u32>,
    /// `alert` raises alerts; `record` only reports the finding.
    #[serde(default = "default_action")]
    pub action: String,
}

fn default_action() -> String {
    "alert".into()
}

impl RuleConfig {
    pub fn counting(name: &str, condition: &str) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            condition: Some(condition.into()),
            sequence: None,
            within: None,
            absence: None,
            group_by: Vec::new(),
            threshold: None,
            max_keys: None,
            action: default_action(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbsenceConfig {
    pub after: String,
    pub expect: String,
    pub within: Within,
}

/// A duration: seconds as a number, or text such as `30s`, `5m`, `2h`,
/// `1d`, `500ms`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Within {
    Secs(f64),
    Text(String),
}

impl Within {
    pub fn millis(&self) -> Result<i64, String> {
        let ms = match self {
            Within::Secs(s) => s * 1000.0,
            Within::Text(t) => hxp_plugin_sdk::duration::parse_millis(t)? as f64,
        };
        if !(ms >= 1.0 && ms <= MAX_WITHIN_MS as f64) {
            return Err(format!("within must be between 1 ms and 1 d, not {ms} ms"));
        }
        Ok(ms as i64)
    }
}

/// An event field a rule can group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyField {
    Model,
    Service,
    User,
    EventType,
}

impl KeyField {
    fn parse(name: &str) -> Option<KeyField> {
        Some(match name {
            "model" => KeyField::Model,
            "service" => KeyField::Service,
            "user_id" | "user" => KeyField::User,
            "event_type" => KeyField::EventType,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyField::Model => "model",
            KeyField::Service => "service",
            KeyField::User => "user_id",
            KeyField::EventType => "event_type",
        }
    }
}

/// What a rule detects.
pub enum Detect {
    /// Events for which the condition holds.
    Count(Expr<Metric>),
    /// The steps holding in this order (by event time) on one key, the
    /// last within `within_ms` of the first.
    Sequence {
        steps: Vec<Expr<Metric>>,
        within_ms: i64,
    },
    /// `after` holding, then no `expect` on the same key within `within_ms`.
    Absence {
        after: Expr<Metric>,
        expect: Expr<Metric>,
        within_ms: i64,
    },
}

/// A rule ready to evaluate.
pub struct Rule {
    pub name: String,
    pub alerts: bool,
    pub detect: Detect,
    /// Every metric its conditions read, once.
    pub metrics: Vec<Metric>,
    pub group_by: Vec<KeyField>,
    /// Occurrences in the window that make it active.
    pub threshold: u64,
    pub max_keys: usize,
    /// How its findings describe it, e.g. `'latency > 2000'`.
    pub describe: String,
}

impl Rule {
    /// Whether it runs per key (on the keyed engine) rather than over the
    /// whole window's slots.
    pub fn keyed(&self) -> bool {
        !self.group_by.is_empty() || !matches!(self.detect, Detect::Count(_))
    }

    /// Whether any condition reads a window aggregate (then the key keeps
    /// its own sums).
    pub fn reads_window(&self) -> bool {
        self.metrics.iter().any(|m| m.is_window())
    }

    pub fn compile(r: &RuleConfig, alert_threshold: u32) -> Result<Rule, String> {
        let alerts = match r.action.as_str() {
            "alert" => true,
            "record" => false,
            other => {
                return Err(format!(
                    "rule '{}': action '{other}' is not known (use alert or record)",
                    r.name
                ));
            }
        };
        let (detect, describe) = detect(r)?;
        let group_by = r
            .group_by
            .iter()
            .map(|f| {
                KeyField::parse(f).ok_or_else(|| {
                    format!(
                        "rule '{}': group_by '{f}' is not a field to group by (model, service, user_id, event_type)",
                        r.name
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_keys = r.max_keys.unwrap_or(DEFAULT_MAX_KEYS);
        if max_keys == 0 || max_keys > MAX_MAX_KEYS {
            return Err(format!(
                "rule '{}': max_keys must be between 1 and {MAX_MAX_KEYS}",
                r.name
            ));
        }
        let default_threshold = match detect {
            Detect::Count(_) => alert_threshold,
            _ => 1,
        };
        let threshold = r.threshold.unwrap_or(default_threshold);
        if threshold == 0 {
            return Err(format!("rule '{}': threshold must be at least 1", r.name));
        }
        let mut metrics: Vec<Metric> = Vec::new();
        for e in detect.exprs() {
            for &m in e.metrics() {
                if !metrics.contains(&m) {
                    metrics.push(m);
                }
            }
        }
        Ok(Rule {
            name: r.name.clone(),
            alerts,
            detect,
            metrics,
            group_by,
            threshold: threshold as u64,
            max_keys: max_keys as usize,
            describe,
        })
    }
}

impl Detect {
    pub fn exprs(&self) -> Vec<&Expr<Metric>> {
        match self {
            Detect::Count(e) => vec![e],
            Detect::Sequence { steps, .. } => steps.iter().collect(),
            Detect::Absence { after, expect, .. } => vec![after, expect],
        }
    }
}

/// The rule's kind from its config, and how findings describe it.
fn detect(r: &RuleConfig) -> Result<(Detect, String), String> {
    let cond = |c: &str| expr::parse_rule(&r.name, c, resolve);
    let within = |w: &Option<Within>| -> Result<i64, String> {
        w.as_ref()
            .ok_or_else(|| format!("rule '{}': a sequence needs `within`", r.name))?
            .millis()
            .map_err(|e| format!("rule '{}': {e}", r.name))
    };
    match (&r.condition, &r.sequence, &r.absence) {
        (Some(c), None, None) => {
            if r.within.is_some() {
                return Err(format!("rule '{}': `within` is for sequences", r.name));
            }
            Ok((Detect::Count(cond(c)?), format!("'{c}'")))
        }
        (None, Some(steps), None) => {
            if steps.len() < 2 || steps.len() > 8 {
                return Err(format!(
                    "rule '{}': a sequence has 2 to 8 steps, not {}",
                    r.name,
                    steps.len()
                ));
            }
            let exprs = steps.iter().map(|s| cond(s)).collect::<Result<_, _>>()?;
            let within_ms = within(&r.within)?;
            let describe = format!(
                "sequence '{}' within {}",
                steps.join("' -> '"),
                human_ms(within_ms)
            );
            Ok((
                Detect::Sequence {
                    steps: exprs,
                    within_ms,
                },
                describe,
            ))
        }
        (None, None, Some(a)) => {
            let within_ms = a
                .within
                .millis()
                .map_err(|e| format!("rule '{}': {e}", r.name))?;
            let describe = format!(
                "'{}' not followed by '{}' within {}",
                a.after,
                a.expect,
                human_ms(within_ms)
            );
            Ok((
                Detect::Absence {
                    after: cond(&a.after)?,
                    expect: cond(&a.expect)?,
                    within_ms,
                },
                describe,
            ))
        }
        _ => Err(format!(
            "rule '{}': needs exactly one of condition, sequence or absence",
            r.name
        )),
    }
}

/// `90000` -> `90 s`, `300000` -> `5 min`.
fn human_ms(ms: i64) -> String {
    if ms % 60_000 == 0 {
        format!("{} min", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Result<Rule, String> {
        let r: RuleConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Rule::compile(&r, 5)
    }

    fn refused(json: &str) -> String {
        match rule(json) {
            Ok(r) => panic!("rule '{}' was accepted", r.name),
            Err(e) => e,
        }
    }

    #[test]
    fn durations() {
        let ms = |w: Within| w.millis();
        assert_eq!(ms(Within::Text("30s".into())), Ok(30_000));
        assert_eq!(ms(Within::Text("5m".into())), Ok(300_000));
        assert_eq!(ms(Within::Text("1.5h".into())), Ok(5_400_000));
        assert_eq!(ms(Within::Text("250ms".into())), Ok(250));
        assert_eq!(ms(Within::Secs(2.0)), Ok(2000));
        assert!(
            ms(Within::Text("2 weeks".into()))
                .unwrap_err()
                .contains("unknown unit 'weeks'")
        );
        assert!(
            ms(Within::Text("2d".into()))
                .unwrap_err()
                .contains("between")
        );
        assert!(ms(Within::Secs(0.0)).is_err());
    }

    #[test]
    fn rule_kinds_and_their_errors() {
        let r = rule(r#"{"name":"a","condition":"latency > 1","group_by":["model"]}"#).unwrap();
        assert!(r.keyed() && !r.reads_window());
        assert_eq!((r.threshold, r.max_keys), (5, 10_000));
        let r = rule(r#"{"name":"a","condition":"error_rate > 0.1"}"#).unwrap();
        assert!(!r.keyed() && r.reads_window());
        let r = rule(
            r#"{"name":"s","sequence":["health == \"failed\"","success == false"],"within":"30s"}"#,
        )
        .unwrap();
        assert!(r.keyed());
        assert_eq!(r.threshold, 1);
        assert_eq!(
            r.describe,
            r#"sequence 'health == "failed"' -> 'success == false' within 30 s"#
        );
        let e = refused(r#"{"name":"s","sequence":["latency > 1","latency > 2"]}"#);
        assert_eq!(e, "rule 's': a sequence needs `within`");
        let e = refused(r#"{"name":"s","sequence":["latency > 1"],"within":5}"#);
        assert!(e.contains("2 to 8 steps"), "{e}");
        let e =
            refused(r#"{"name":"b","condition":"latency > 1","sequence":["latency > 1","x > 1"]}"#);
        assert!(e.contains("exactly one of"), "{e}");
        let e = refused(r#"{"name":"g","condition":"latency > 1","group_by":["colour"]}"#);
        assert!(e.contains("group_by 'colour'"), "{e}");
        let e = refused(r#"{"name":"k","condition":"latency > 1","max_keys":0}"#);
        assert!(e.contains("max_keys"), "{e}");
        let e = refused(
            r#"{"name":"x","absence":{"after":"latency > 1","expect":"eror > 1","within":"5m"}}"#,
        );
        assert!(
            e.contains("rule 'x'") && e.contains("unknown metric 'eror'"),
            "{e}"
        );
        let r = rule(r#"{"name":"x","absence":{"after":"health == \"degraded\"","expect":"health == \"healthy\"","within":"5m"},"group_by":["service"]}"#)
            .unwrap();
        assert_eq!(
            r.describe,
            r#"'health == "degraded"' not followed by 'health == "healthy"' within 5 min"#
        );
    }
}
