//! Automated response decisions: turns analytics and correlation findings
//! into action requests, from `automated_response.response_rules`. The plugin
//! only asks; the host decides whether and how to act (executors, cooldowns,
//! dry-run).
//!
//! A rule's condition reads:
//! - analytics metrics (window of the analytics plugin): `throughput`,
//!   `requests_per_second`, `latency` (= `average_latency`), `latency_p50`,
//!   `latency_p95`, `latency_p99`, `error_rate`, `error_percentage`,
//!   `user_satisfaction`, `business_value`, `cost_per_request`,
//!   `event_count`;
//! - per service (the rule is evaluated once per service that reported
//!   health in the window, target = the service): `service`, `service_health`;
//! - per finding (evaluated once per active finding, target = its subject or
//!   name): `finding`, `finding_source`, `finding_subject`, `finding_alert`,
//!   `finding_score`, `finding_occurrences`.
//!
//! A (rule, target) asks for its action when its condition becomes true, and
//! again every `repeat_interval` seconds while it stays true (so a host
//! cooldown can expire and act again). Each rule has a category that the
//! `critical_events_enabled` / `business_events_enabled` /
//! `error_events_enabled` switches gate: `critical` for per-service rules,
//! `error` for rules on errors or findings, `business` otherwise, unless the
//! rule sets `category`.

use hxp_plugin_sdk::expr::{self, Expr, Value, ValueType};
use hxp_plugin_sdk::{ActionRequest, Finding, Metadata, ResponseInput, ServiceHealth, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    pub enabled: bool,
    pub critical_events_enabled: bool,
    pub business_events_enabled: bool,
    pub error_events_enabled: bool,
    /// Seconds after which a condition that still holds asks again.
    pub repeat_interval: u32,
    pub response_rules: Vec<RuleConfig>,
}

impl Default for Config {
    fn default() -> Self {
        let rule = |name: &str, condition: &str, action: &str| RuleConfig {
            name: name.into(),
            condition: condition.into(),
            action: action.into(),
            target: None,
            category: None,
            parameters: serde_json::Map::new(),
        };
        Config {
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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RuleConfig {
    pub name: String,
    pub condition: String,
    pub action: String,
    /// Fixed target; by default the service, the finding's subject, or "all".
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub category: Option<Category>,
    /// Passed through in the request's parameters.
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Critical,
    Business,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Global,
    Service,
    Finding,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Metric {
    Analytics(&'static str),
    Service,
    ServiceHealth,
    Finding,
    FindingSource,
    FindingSubject,
    FindingAlert,
    FindingScore,
    FindingOccurrences,
}

impl Metric {
    fn scope(&self) -> Scope {
        match self {
            Metric::Analytics(_) => Scope::Global,
            Metric::Service | Metric::ServiceHealth => Scope::Service,
            _ => Scope::Finding,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Metric::Analytics(n) => n,
            Metric::Service => "service",
            Metric::ServiceHealth => "service_health",
            Metric::Finding => "finding",
            Metric::FindingSource => "finding_source",
            Metric::FindingSubject => "finding_subject",
            Metric::FindingAlert => "finding_alert",
            Metric::FindingScore => "finding_score",
            Metric::FindingOccurrences => "finding_occurrences",
        }
    }
}

const ANALYTICS: [&str; 15] = [
    "throughput",
    "requests_per_second",
    "latency",
    "average_latency",
    "latency_p50",
    "latency_p95",
    "latency_p99",
    "error_rate",
    "error_percentage",
    "user_satisfaction",
    "user_satisfaction_score",
    "business_value",
    "cost_per_request",
    "event_count",
    "correlation_score",
];

fn resolve(name: &str) -> Option<(Metric, ValueType)> {
    use ValueType::*;
    if let Some(n) = ANALYTICS.iter().find(|n| **n == name) {
        return Some((Metric::Analytics(n), Num));
    }
    Some(match name {
        "service" => (Metric::Service, Str),
        "service_health" => (Metric::ServiceHealth, Str),
        "finding" => (Metric::Finding, Str),
        "finding_source" => (Metric::FindingSource, Str),
        "finding_subject" => (Metric::FindingSubject, Str),
        "finding_alert" => (Metric::FindingAlert, Bool),
        "finding_score" => (Metric::FindingScore, Num),
        "finding_occurrences" => (Metric::FindingOccurrences, Num),
        _ => return None,
    })
}

struct Rule {
    config: RuleConfig,
    expr: Expr<Metric>,
    scope: Scope,
    category: Category,
    metrics: Vec<Metric>,
}

/// What a condition is evaluated against.
struct Ctx<'a> {
    analytics: &'a Snapshot,
    correlation_score: f64,
    service: Option<&'a ServiceHealth>,
    finding: Option<&'a Finding>,
}

impl<'a> Ctx<'a> {
    fn get(&self, m: &Metric) -> Option<Value<'a>> {
        match m {
            Metric::Analytics("correlation_score") => Some(Value::Num(self.correlation_score)),
            Metric::Analytics(n) => self.analytics.metric(n).map(Value::Num),
            Metric::Service => self.service.map(|s| Value::Str(s.service.as_str())),
            Metric::ServiceHealth => self.service.map(|s| Value::Str(s.health.as_str())),
            Metric::Finding => self.finding.map(|f| Value::Str(f.name.as_str())),
            Metric::FindingSource => self.finding.map(|f| Value::Str(f.source.as_str())),
            Metric::FindingSubject => self.finding.map(|f| Value::Str(f.subject.as_str())),
            Metric::FindingAlert => self.finding.map(|f| Value::Bool(f.alert)),
            Metric::FindingScore => self.finding.map(|f| Value::Num(f.score)),
            Metric::FindingOccurrences => self.finding.map(|f| Value::Num(f.occurrences as f64)),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct State {
    /// (rule, target) -> time of the last request, while the condition holds.
    active: Vec<((String, String), i64)>,
}

pub struct Responses {
    config: Config,
    rules: Vec<Rule>,
    active: BTreeMap<(String, String), i64>,
}

impl Default for Responses {
    fn default() -> Self {
        Responses::new(Config::default()).expect("default config is valid")
    }
}

impl Responses {
    pub fn new(config: Config) -> Result<Responses, String> {
        let mut rules = Vec::new();
        for r in &config.response_rules {
            if rules.iter().any(|x: &Rule| x.config.name == r.name) {
                return Err(format!("rule '{}' is defined twice", r.name));
            }
            if r.action.trim().is_empty() {
                return Err(format!("rule '{}': action is empty", r.name));
            }
            let expr = expr::parse_rule(&r.name, &r.condition, resolve)?;
            let mut metrics: Vec<Metric> = Vec::new();
            for m in expr.metrics() {
                if !metrics.contains(m) {
                    metrics.push(m.clone());
                }
            }
            let scopes: Vec<Scope> = metrics.iter().map(Metric::scope).collect();
            let scope = if scopes.contains(&Scope::Service) && scopes.contains(&Scope::Finding) {
                return Err(format!(
                    "rule '{}': a condition can read service metrics or finding metrics, not both",
                    r.name
                ));
            } else if scopes.contains(&Scope::Service) {
                Scope::Service
            } else if scopes.contains(&Scope::Finding) {
                Scope::Finding
            } else {
                Scope::Global
            };
            let category = r.category.unwrap_or(match scope {
                Scope::Service => Category::Critical,
                Scope::Finding => Category::Error,
                Scope::Global
                    if metrics.iter().any(|m| {
                        matches!(m, Metric::Analytics("error_rate" | "error_percentage"))
                    }) =>
                {
                    Category::Error
                }
                Scope::Global => Category::Business,
            });
            rules.push(Rule {
                config: r.clone(),
                expr,
                scope,
                category,
                metrics,
            });
        }
        Ok(Responses {
            config,
            rules,
            active: BTreeMap::new(),
        })
    }

    pub fn metadata() -> Metadata {
        Metadata {
            name: "responses".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_version: STATE_VERSION,
            wants_payload: false,
            fresh_start_ok: true,
        }
    }

    pub fn configure(&mut self, json: &str) -> Result<(), String> {
        let config: Config = if json.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(json).map_err(|e| format!("automated_response: {e}"))?
        };
        let active = std::mem::take(&mut self.active);
        *self = Responses::new(config)?;
        self.active = active;
        Ok(())
    }

    fn category_enabled(&self, c: Category) -> bool {
        match c {
            Category::Critical => self.config.critical_events_enabled,
            Category::Business => self.config.business_events_enabled,
            Category::Error => self.config.error_events_enabled,
        }
    }

    /// The action requests for this input (see the module docs for when a
    /// rule asks).
    pub fn decide(&mut self, input: &ResponseInput) -> Vec<ActionRequest> {
        let mut out = Vec::new();
        if !self.config.enabled {
            self.active.clear();
            return out;
        }
        let correlation_score = 1.0
            - input
                .findings
                .iter()
                .map(|f| 1.0 - f.score)
                .product::<f64>();
        let base = Ctx {
            analytics: &input.analytics,
            correlation_score,
            service: None,
            finding: None,
        };
        let repeat_ms = self.config.repeat_interval as i64 * 1000;
        let mut holding = BTreeMap::new();
        for rule in &self.rules {
            if !self.category_enabled(rule.category) {
                continue;
            }
            let mut hits: Vec<(Ctx, String)> = Vec::new();
            match rule.scope {
                Scope::Global => {
                    let ctx = Ctx { ..base };
                    if rule.expr.eval(&|m: &Metric| ctx.get(m)) {
                        let target = rule.config.target.clone().unwrap_or_else(|| "all".into());
                        hits.push((ctx, target));
                    }
                }
                Scope::Service => {
                    for s in &input.analytics.services {
                        let ctx = Ctx {
                            service: Some(s),
                            ..base
                        };
                        if rule.expr.eval(&|m: &Metric| ctx.get(m)) {
                            let target = rule.config.target.clone().unwrap_or(s.service.clone());
                            hits.push((ctx, target));
                        }
                    }
                }
                Scope::Finding => {
                    for f in &input.findings {
                        let ctx = Ctx {
                            finding: Some(f),
                            ..base
                        };
                        if rule.expr.eval(&|m: &Metric| ctx.get(m)) {
                            let target = rule.config.target.clone().unwrap_or_else(|| {
                                if f.subject.is_empty() {
                                    f.name.clone()
                                } else {
                                    f.subject.clone()
                                }
                            });
                            hits.push((ctx, target));
                        }
                    }
                }
            }
            for (ctx, target) in hits {
                let key = (rule.config.name.clone(), target);
                let last = self.active.get(&key).copied();
                let due = match last {
                    None => true,
                    Some(t) => input.time_ms - t >= repeat_ms,
                };
                if due {
                    out.push(request(rule, &ctx, &key.1));
                    holding.insert(key, input.time_ms);
                } else if let Some(t) = last {
                    holding.insert(key, t);
                }
            }
        }
        self.active = holding;
        out
    }

    pub fn save_state(&self) -> Vec<u8> {
        let state = State {
            active: self.active.iter().map(|(k, t)| (k.clone(), *t)).collect(),
        };
        postcard::to_allocvec(&state).expect("state serializes")
    }

    pub fn load_state(&mut self, version: u32, bytes: &[u8]) -> Result<(), String> {
        if version != STATE_VERSION {
            return Err(format!(
                "responses state version {version} is not supported (this plugin reads version {STATE_VERSION})"
            ));
        }
        let state: State = postcard::from_bytes(bytes)
            .map_err(|e| format!("responses state is unreadable: {e}"))?;
        self.active = state.active.into_iter().collect();
        Ok(())
    }
}

fn request(rule: &Rule, ctx: &Ctx, target: &str) -> ActionRequest {
    let mut observed = serde_json::Map::new();
    for m in &rule.metrics {
        let v = match ctx.get(m) {
            Some(Value::Num(n)) => serde_json::json!(n),
            Some(Value::Str(s)) => serde_json::json!(s),
            Some(Value::Bool(b)) => serde_json::json!(b),
            None => serde_json::Value::Null,
        };
        observed.insert(m.name().to_string(), v);
    }
    let mut params = rule.config.parameters.clone();
    params.insert(
        "category".into(),
        serde_json::to_value(rule.category).expect("enum serializes"),
    );
    params.insert(
        "observed".into(),
        serde_json::Value::Object(observed.clone()),
    );
    if let Some(f) = ctx.finding {
        params.insert(
            "finding".into(),
            serde_json::json!({
                "name": f.name, "subject": f.subject, "score": f.score,
                "occurrences": f.occurrences, "message": f.message,
            }),
        );
    }
    let observed_text: Vec<String> = observed.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    ActionRequest {
        rule: rule.config.name.clone(),
        action: rule.config.action.clone(),
        target: target.to_string(),
        parameters: serde_json::Value::Object(params).to_string(),
        reason: format!(
            "{}: {} ({})",
            rule.config.name,
            rule.config.condition,
            observed_text.join(", ")
        ),
    }
}

// The component: the SDK's traits over the methods above, and the export.
impl hxp_plugin_sdk::Plugin for Responses {
    fn metadata() -> Metadata {
        Responses::metadata()
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        Responses::configure(self, config)
    }

    fn save_state(&self) -> Vec<u8> {
        Responses::save_state(self)
    }

    fn load_state(&mut self, state_version: u32, state: &[u8]) -> Result<(), String> {
        Responses::load_state(self, state_version, state)
    }
}

impl hxp_plugin_sdk::Responses for Responses {
    fn decide(&mut self, input: &ResponseInput) -> Vec<ActionRequest> {
        Responses::decide(self, input)
    }
}

hxp_plugin_sdk::export_responses!(Responses);

#[cfg(test)]
mod tests {
    use super::*;
    use hxp_plugin_sdk::{Health, Stats};

    fn input(time_ms: i64, throughput: f64, error_rate: f64) -> ResponseInput {
        ResponseInput {
            time_ms,
            analytics: Snapshot {
                time_ms,
                overall: Stats {
                    throughput,
                    error_rate,
                    ..Stats::default()
                },
                ..Snapshot::default()
            },
            findings: vec![],
        }
    }

    #[test]
    fn throughput_above_1000_asks_to_scale_once() {
        let mut r = Responses::default();
        assert!(r.decide(&input(0, 999.0, 0.0)).is_empty());
        let out = r.decide(&input(1000, 1500.0, 0.0));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].action, "scale_models");
        assert_eq!(out[0].rule, "scale_up_models");
        assert_eq!(out[0].target, "all");
        let p: serde_json::Value = serde_json::from_str(&out[0].parameters).unwrap();
        assert_eq!(p["observed"]["throughput"], 1500.0);
        assert_eq!(p["category"], "business");
        assert!(
            out[0].reason.contains("throughput = 1500"),
            "{}",
            out[0].reason
        );
        // Still above: no new request until the repeat interval (60 s).
        assert!(r.decide(&input(2000, 1600.0, 0.0)).is_empty());
        assert_eq!(r.decide(&input(61_000, 1600.0, 0.0)).len(), 1);
        // Drops, then rises again: asks again at once.
        assert!(r.decide(&input(62_000, 10.0, 0.0)).is_empty());
        assert_eq!(r.decide(&input(63_000, 1001.0, 0.0)).len(), 1);
    }

    #[test]
    fn failed_service_restarts_that_service() {
        let mut r = Responses::default();
        let mut i = input(0, 1.0, 0.0);
        i.analytics.services = vec![
            ServiceHealth {
                service: "ok".into(),
                health: Health::Healthy,
                time_ms: 0,
            },
            ServiceHealth {
                service: "vllm-1".into(),
                health: Health::Failed,
                time_ms: 0,
            },
        ];
        let out = r.decide(&i);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].action.as_str(), out[0].target.as_str()),
            ("restart_service", "vllm-1")
        );
    }

    #[test]
    fn notify_on_error_rate_and_category_switches() {
        let mut r = Responses::default();
        let out = r.decide(&input(0, 1.0, 0.25));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].action, "send_notification");
        let mut r = Responses::default();
        r.configure(r#"{"error_events_enabled": false}"#).unwrap();
        assert!(r.decide(&input(0, 1.0, 0.25)).is_empty());
        r.configure(r#"{"enabled": false}"#).unwrap();
        assert!(r.decide(&input(0, 5000.0, 0.9)).is_empty());
    }

    #[test]
    fn finding_rules_target_the_subject() {
        let mut r = Responses::new(Config {
            response_rules: vec![RuleConfig {
                name: "burst".into(),
                condition: "finding == \"error_burst\" and finding_alert == true".into(),
                action: "send_notification".into(),
                target: None,
                category: None,
                parameters: serde_json::Map::new(),
            }],
            ..Config::default()
        })
        .unwrap();
        let mut i = input(0, 1.0, 0.0);
        i.findings.push(Finding {
            name: "error_burst".into(),
            source: "pattern".into(),
            subject: "api".into(),
            alert: true,
            occurrences: 7,
            score: 0.7,
            message: "7 errors".into(),
            evidence: vec![1],
        });
        let out = r.decide(&i);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].target, "api");
        let p: serde_json::Value = serde_json::from_str(&out[0].parameters).unwrap();
        assert_eq!(p["finding"]["occurrences"], 7);
        assert_eq!(p["category"], "error");
    }

    #[test]
    fn config_errors_name_the_rule() {
        let mut r = Responses::default();
        let e = r
            .configure(r#"{"response_rules":[{"name":"x","condition":"service_health = 1","action":"a"}]}"#)
            .unwrap_err();
        assert!(e.starts_with("rule 'x': cannot parse"), "{e}");
        let e = r
            .configure(r#"{"response_rules":[{"name":"y","condition":"service_health > 1","action":"a"}]}"#)
            .unwrap_err();
        assert!(e.contains("rule 'y'") && e.contains("text metric"), "{e}");
        let e = r
            .configure(r#"{"response_rules":[{"name":"z","condition":"service == \"a\" and finding == \"b\"","action":"a"}]}"#)
            .unwrap_err();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn state_round_trip() {
        let mut a = Responses::default();
        a.decide(&input(0, 2000.0, 0.0));
        let mut b = Responses::default();
        b.load_state(STATE_VERSION, &a.save_state()).unwrap();
        assert!(b.decide(&input(1000, 2000.0, 0.0)).is_empty());
        assert_eq!(b.decide(&input(60_000, 2000.0, 0.0)).len(), 1);
    }
}
