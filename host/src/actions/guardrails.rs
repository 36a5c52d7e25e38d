//! Host-side guardrails: the verdict on each action request, decided on the
//! processor thread from in-memory state (category switches, executor
//! route, dedup window, cooldown, rate limit, dry run), and the rows and
//! jobs a batch's requests become.

use super::Job;
use crate::config::{AutomatedResponse, Executor};
use crate::store::{ActionRow, Outcome};
use crate::telemetry::Metrics;
use hxp_plugin_sdk::ActionRequest;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// The guardrails' verdict on one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub outcome: Outcome,
    /// The executor that acts (or would have, for suppressions after the
    /// executor was found).
    pub executor: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Webhook,
    Command,
    Log,
}

/// Host-side guardrails, owned by the processor thread: every check is a
/// lookup in memory. State is not persisted: after a restart cooldowns start
/// afresh (the responses plugin's own repeat interval is checkpointed).
pub struct Guardrails {
    enabled: bool,
    critical: bool,
    business: bool,
    error: bool,
    dry_run: bool,
    dry_run_rules: Vec<String>,
    cooldown_ms: i64,
    dedup_ms: i64,
    rate_per_minute: u32,
    /// action (or "*") → (executor name, kind).
    routes: BTreeMap<String, (String, Kind)>,
    /// rule name → category set in the config.
    rule_categories: HashMap<String, String>,
    /// (action, target) → when a request was last let through.
    last_accepted: HashMap<(String, String), i64>,
    /// action \0 target \0 canonical parameters → when last let through.
    recent: HashMap<String, i64>,
    /// action → times let through in the last minute.
    per_action: HashMap<String, VecDeque<i64>>,
    last_prune: i64,
}

const MINUTE_MS: i64 = 60_000;

/// The batch a set of requests came from, as [`Guardrails::plan`] needs it.
pub struct BatchContext<'a> {
    pub batch_seq: u64,
    pub now_ms: i64,
    /// The batch's findings and analytics (JSON), stored with each request.
    pub findings_json: &'a str,
    pub analytics_json: Option<&'a str>,
    /// Why nothing may run now (the data is stale), if so.
    pub stale: Option<&'a str>,
}

fn verdict(outcome: Outcome, executor: Option<&str>, detail: String) -> Decision {
    Decision {
        outcome,
        executor: executor.map(str::to_string),
        detail,
    }
}

impl Guardrails {
    pub fn new(a: &AutomatedResponse) -> Guardrails {
        let routes = a
            .actions
            .iter()
            .filter_map(|(action, name)| {
                let kind = match a.executors.get(name)? {
                    Executor::Webhook(_) => Kind::Webhook,
                    Executor::Command(_) => Kind::Command,
                    Executor::Log => Kind::Log,
                };
                Some((action.clone(), (name.clone(), kind)))
            })
            .collect();
        Guardrails {
            enabled: a.enabled,
            critical: a.critical_events_enabled,
            business: a.business_events_enabled,
            error: a.error_events_enabled,
            dry_run: a.dry_run,
            dry_run_rules: a.dry_run_rules.clone(),
            cooldown_ms: (a.cooldown_secs as i64).saturating_mul(1000),
            dedup_ms: (a.dedup_window_secs as i64).saturating_mul(1000),
            rate_per_minute: a.rate_limit_per_minute,
            routes,
            rule_categories: a
                .response_rules
                .iter()
                .filter_map(|r| Some((r.name.clone(), r.category.clone()?)))
                .collect(),
            last_accepted: HashMap::new(),
            recent: HashMap::new(),
            per_action: HashMap::new(),
            last_prune: i64::MIN,
        }
    }

    /// The request's category: the `category` parameter (the responses
    /// plugin always sets it, from the rule's scope and metrics), else the
    /// rule's `category` in the config, else by action (restart_service:
    /// critical, scale_models: business, send_notification: error). Other
    /// actions of custom plugins have none and are not gated.
    fn category(&self, req: &ActionRequest, params: &Value) -> Option<String> {
        if let Some(c) = params.get("category").and_then(Value::as_str) {
            return Some(c.to_string());
        }
        if let Some(c) = self.rule_categories.get(&req.rule) {
            return Some(c.clone());
        }
        match req.action.as_str() {
            "restart_service" => Some("critical".into()),
            "scale_models" => Some("business".into()),
            "send_notification" => Some("error".into()),
            _ => None,
        }
    }

    /// Decide one request at `now_ms`, in this order: switched off
    /// (`enabled`, category flags) → no executor → duplicate of a request let
    /// through within `dedup_window_secs` → (action, target) in cooldown →
    /// action over `rate_limit_per_minute` → dry run (global or per rule) →
    /// act. Requests let through (including dry runs) start the cooldown and
    /// count for deduplication and the rate limit, whatever their executor's
    /// result later; suppressed ones change nothing.
    pub fn decide(&mut self, req: &ActionRequest, now_ms: i64) -> Decision {
        self.prune(now_ms);
        let params: Value = serde_json::from_str(&req.parameters).unwrap_or(Value::Null);
        if let Some(off) = self.switched_off(req, &params) {
            return off;
        }
        let Some((executor, kind)) = self
            .routes
            .get(&req.action)
            .or_else(|| self.routes.get("*"))
            .cloned()
        else {
            let detail = format!(
                "no executor for action '{}' (automated_response.actions)",
                req.action
            );
            return verdict(Outcome::Failed, None, detail);
        };
        let dedup_key = format!(
            "{}\0{}\0{}",
            req.action,
            req.target,
            canonical(&without_diagnostics(params))
        );
        let pair = (req.action.clone(), req.target.clone());
        if let Some((outcome, detail)) = self.suppressed(req, &dedup_key, &pair, now_ms) {
            return verdict(outcome, Some(&executor), detail);
        }
        // Let through: remembered only as long as a window needs it.
        if self.cooldown_ms > 0 {
            self.last_accepted.insert(pair, now_ms);
        }
        if self.dedup_ms > 0 {
            self.recent.insert(dedup_key, now_ms);
        }
        self.act(req, executor, kind)
    }

    /// Globally off, or the request's category is switched off.
    fn switched_off(&self, req: &ActionRequest, params: &Value) -> Option<Decision> {
        if !self.enabled {
            let detail = "automated_response.enabled is false".to_string();
            return Some(verdict(Outcome::Disabled, None, detail));
        }
        let c = self.category(req, params)?;
        let on = match c.as_str() {
            "critical" => self.critical,
            "business" => self.business,
            "error" => self.error,
            _ => true,
        };
        let detail = format!("category {c}: automated_response.{c}_events_enabled is false");
        (!on).then(|| verdict(Outcome::Disabled, None, detail))
    }

    /// A duplicate within the dedup window, an (action, target) in
    /// cooldown, or an action over its rate: the outcome and why. A request
    /// that passes is counted for the rate limit.
    fn suppressed(
        &mut self,
        req: &ActionRequest,
        dedup_key: &str,
        pair: &(String, String),
        now_ms: i64,
    ) -> Option<(Outcome, String)> {
        if self.dedup_ms > 0
            && let Some(&t) = self.recent.get(dedup_key)
            && now_ms - t < self.dedup_ms
        {
            let why = format!(
                "same request let through {} ms ago (dedup_window_secs)",
                now_ms - t
            );
            return Some((Outcome::Deduplicated, why));
        }
        if self.cooldown_ms > 0
            && let Some(&t) = self.last_accepted.get(pair)
            && now_ms - t < self.cooldown_ms
        {
            let why = format!(
                "{} on {} is cooling down for {} more ms (cooldown_secs)",
                req.action,
                req.target,
                self.cooldown_ms - (now_ms - t)
            );
            return Some((Outcome::SuppressedCooldown, why));
        }
        if self.rate_per_minute > 0 {
            let recent = self.per_action.entry(req.action.clone()).or_default();
            while recent.front().is_some_and(|t| now_ms - t >= MINUTE_MS) {
                recent.pop_front();
            }
            if recent.len() >= self.rate_per_minute as usize {
                let why = format!(
                    "{} already acted {} times in the last minute (rate_limit_per_minute)",
                    req.action,
                    recent.len()
                );
                return Some((Outcome::RateLimited, why));
            }
            recent.push_back(now_ms);
        }
        None
    }

    /// A request let through: a dry run, done at once (log), or pending
    /// for its executor.
    fn act(&self, req: &ActionRequest, executor: String, kind: Kind) -> Decision {
        if self.dry_run || self.dry_run_rules.contains(&req.rule) {
            let why = if self.dry_run {
                "automated_response.dry_run"
            } else {
                "rule listed in automated_response.dry_run_rules"
            };
            let detail = format!("dry run ({why}): executor '{executor}' not called");
            return verdict(Outcome::DryRun, Some(&executor), detail);
        }
        match kind {
            Kind::Log => {
                let detail = "written to the log (log executor)".to_string();
                verdict(Outcome::Executed, Some(&executor), detail)
            }
            Kind::Webhook | Kind::Command => {
                let detail = format!("queued for executor '{executor}'");
                verdict(Outcome::Pending, Some(&executor), detail)
            }
        }
    }

    /// Forget what no window needs any more (at most every 10 s).
    fn prune(&mut self, now_ms: i64) {
        if now_ms.saturating_sub(self.last_prune) < 10_000 {
            return;
        }
        self.last_prune = now_ms;
        let (cooldown, dedup) = (self.cooldown_ms, self.dedup_ms);
        self.last_accepted.retain(|_, t| now_ms - *t < cooldown);
        self.recent.retain(|_, t| now_ms - *t < dedup);
        self.per_action.retain(|_, q| {
            while q.front().is_some_and(|t| now_ms - t >= MINUTE_MS) {
                q.pop_front();
            }
            !q.is_empty()
        });
    }

    /// The batch's requests: their rows (stored in the batch's transaction)
    /// and the jobs for the executor task (submitted once that committed).
    /// Counts the outcomes decided here; `pending` ones are counted when
    /// they finish.
    pub fn plan(
        &mut self,
        actions: &[ActionRequest],
        ctx: &BatchContext,
        metrics: &Metrics,
    ) -> (Vec<ActionRow>, Vec<Job>) {
        let &BatchContext {
            batch_seq,
            now_ms,
            findings_json,
            analytics_json,
            stale,
        } = ctx;
        let mut rows = Vec::with_capacity(actions.len());
        let mut jobs = Vec::new();
        for (n, a) in actions.iter().enumerate() {
            // Stale data: recorded, never acted on, and no cooldown taken.
            let d = match stale {
                Some(why) => verdict(Outcome::Stale, None, why.to_string()),
                None => self.decide(a, now_ms),
            };
            let key = idempotency_key(a, now_ms, batch_seq, n);
            tracing::info!(
                rule = %a.rule, action = %a.action, target = %a.target, reason = %a.reason,
                outcome = d.outcome.as_str(), executor = d.executor.as_deref().unwrap_or(""),
                idempotency_key = %key, parameters = %a.parameters,
                "automated response requested"
            );
            let done = !matches!(d.outcome, Outcome::Pending);
            if done {
                metrics
                    .action_requests
                    .with_label_values(&[a.action.as_str(), d.outcome.as_str()])
                    .inc();
            }
            let executed_now = d.outcome == Outcome::Executed;
            rows.push(ActionRow {
                requested_at: now_ms,
                rule: a.rule.clone(),
                action: a.action.clone(),
                target: a.target.clone(),
                parameters: a.parameters.clone(),
                reason: a.reason.clone(),
                findings: findings_json.to_string(),
                outcome: d.outcome,
                detail: d.detail.clone(),
                analytics: analytics_json.map(str::to_string),
                executor: d.executor.clone(),
                dry_run: d.outcome == Outcome::DryRun,
                idempotency_key: Some(key.clone()),
                started_at: executed_now.then_some(now_ms),
                finished_at: done.then_some(now_ms),
                attempts: i64::from(executed_now),
                http_status: None,
                error: (d.outcome == Outcome::Failed).then(|| d.detail.clone()),
            });
            if let (Outcome::Pending, Some(executor)) = (d.outcome, d.executor) {
                jobs.push(Job {
                    batch_seq,
                    n: n as u32,
                    requested_at: now_ms,
                    rule: a.rule.clone(),
                    action: a.action.clone(),
                    target: a.target.clone(),
                    parameters: a.parameters.clone(),
                    reason: a.reason.clone(),
                    findings: findings_json.to_string(),
                    analytics: analytics_json.map(str::to_string),
                    executor,
                    idempotency_key: key,
                });
            }
        }
        (rows, jobs)
    }
}

/// Parameters without the diagnostic keys the responses plugin adds
/// (`observed`, `finding`: the measured values, different in every window),
/// so that deduplication compares what is asked, not what was measured.
fn without_diagnostics(mut params: Value) -> Value {
    if let Value::Object(m) = &mut params {
        m.remove("observed");
        m.remove("finding");
    }
    params
}

/// JSON text with object keys sorted at every level.
fn canonical(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// Deterministic per request: the same row always has the same key (sent
/// with every attempt, so a receiver can drop repeats).
pub fn idempotency_key(a: &ActionRequest, requested_at: i64, batch_seq: u64, n: usize) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [
        a.rule.as_bytes(),
        a.action.as_bytes(),
        a.target.as_bytes(),
        a.parameters.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(requested_at.to_be_bytes());
    h.update(batch_seq.to_be_bytes());
    h.update((n as u64).to_be_bytes());
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config() -> AutomatedResponse {
        AutomatedResponse {
            cooldown_secs: 10,
            dedup_window_secs: 5,
            rate_limit_per_minute: 3,
            ..AutomatedResponse::default()
        }
    }

    fn req(rule: &str, action: &str, target: &str, params: Value) -> ActionRequest {
        ActionRequest {
            rule: rule.into(),
            action: action.into(),
            target: target.into(),
            parameters: params.to_string(),
            reason: format!("{rule}: because"),
        }
    }

    fn notify(target: &str) -> ActionRequest {
        req(
            "notify_admin",
            "send_notification",
            target,
            json!({"category": "error", "observed": {"error_rate": 0.3}}),
        )
    }

    #[test]
    fn first_request_acts_and_cooldown_suppresses_the_next() {
        let mut g = Guardrails::new(&AutomatedResponse {
            dedup_window_secs: 0,
            ..config()
        });
        let d = g.decide(&notify("all"), 0);
        assert_eq!(d.outcome, Outcome::Pending);
        assert_eq!(d.executor.as_deref(), Some("notify"));
        assert_eq!(
            g.decide(&notify("all"), 9_999).outcome,
            Outcome::SuppressedCooldown
        );
        // Another target has its own cooldown.
        assert_eq!(g.decide(&notify("api"), 9_999).outcome, Outcome::Pending);
        // Cooldown over.
        assert_eq!(g.decide(&notify("all"), 10_000).outcome, Outcome::Pending);
    }

    #[test]
    fn suppressed_requests_do_not_extend_the_cooldown() {
        let mut g = Guardrails::new(&AutomatedResponse {
            dedup_window_secs: 0,
            ..config()
        });
        assert_eq!(g.decide(&notify("all"), 0).outcome, Outcome::Pending);
        assert_eq!(
            g.decide(&notify("all"), 5_000).outcome,
            Outcome::SuppressedCooldown
        );
        assert_eq!(g.decide(&notify("all"), 10_001).outcome, Outcome::Pending);
    }

    #[test]
    fn identical_requests_are_deduplicated_but_measurements_do_not_count() {
        let mut g = Guardrails::new(&AutomatedResponse {
            cooldown_secs: 0,
            ..config()
        });
        let a = req(
            "r1",
            "scale_models",
            "all",
            json!({"replicas": 3, "observed": {"throughput": 1500.0}}),
        );
        // Same ask from another rule, another measurement, keys reordered.
        let b = ActionRequest {
            rule: "r2".into(),
            parameters: r#"{"observed":{"throughput":1700.0},"replicas":3}"#.into(),
            ..a.clone()
        };
        let c = req("r1", "scale_models", "all", json!({"replicas": 4}));
        assert_eq!(g.decide(&a, 0).outcome, Outcome::Pending);
        assert_eq!(g.decide(&b, 1_000).outcome, Outcome::Deduplicated);
        assert_eq!(g.decide(&c, 1_000).outcome, Outcome::Pending);
        assert_eq!(g.decide(&b, 5_000).outcome, Outcome::Pending);
    }

    #[test]
    fn rate_limit_per_action_over_a_sliding_minute() {
        let mut g = Guardrails::new(&AutomatedResponse {
            cooldown_secs: 0,
            dedup_window_secs: 0,
            rate_limit_per_minute: 3,
            ..config()
        });
        for (i, t) in [0, 10_000, 20_000].into_iter().enumerate() {
            let d = g.decide(&notify(&format!("t{i}")), t);
            assert_eq!(d.outcome, Outcome::Pending, "{d:?}");
        }
        assert_eq!(
            g.decide(&notify("t3"), 30_000).outcome,
            Outcome::RateLimited
        );
        // Another action has its own budget.
        let scale = req("scale_up_models", "scale_models", "all", json!({}));
        assert_eq!(g.decide(&scale, 30_000).outcome, Outcome::Pending);
        // The first one left the window.
        assert_eq!(g.decide(&notify("t4"), 60_000).outcome, Outcome::Pending);
        assert_eq!(
            g.decide(&notify("t5"), 60_001).outcome,
            Outcome::RateLimited
        );
    }

    #[test]
    fn dry_run_globally_and_per_rule_still_counts_for_the_guardrails() {
        let mut g = Guardrails::new(&AutomatedResponse {
            dry_run: true,
            ..config()
        });
        let d = g.decide(&notify("all"), 0);
        assert_eq!(d.outcome, Outcome::DryRun);
        assert!(d.detail.contains("not called"), "{}", d.detail);
        assert_eq!(
            g.decide(&notify("all"), 6_000).outcome,
            Outcome::SuppressedCooldown
        );

        let mut g = Guardrails::new(&AutomatedResponse {
            dry_run_rules: vec!["notify_admin".into()],
            ..config()
        });
        assert_eq!(g.decide(&notify("all"), 0).outcome, Outcome::DryRun);
        let scale = req("scale_up_models", "scale_models", "all", json!({}));
        assert_eq!(g.decide(&scale, 0).outcome, Outcome::Pending);
    }

    #[test]
    fn category_switches_and_unknown_actions() {
        let mut g = Guardrails::new(&AutomatedResponse {
            error_events_enabled: false,
            ..config()
        });
        let d = g.decide(&notify("all"), 0);
        assert_eq!(d.outcome, Outcome::Disabled);
        assert!(d.detail.contains("error_events_enabled"), "{}", d.detail);
        // Without a category parameter: by action.
        let restart = req("custom", "restart_service", "vllm-1", json!({}));
        assert_eq!(g.decide(&restart, 0).outcome, Outcome::Pending);
        let mut g = Guardrails::new(&AutomatedResponse {
            critical_events_enabled: false,
            ..config()
        });
        assert_eq!(g.decide(&restart, 0).outcome, Outcome::Disabled);

        // Unknown actions go to "*" (log): executed at once.
        let mut g = Guardrails::new(&config());
        let odd = req("custom", "page_oncall", "team", json!({}));
        let d = g.decide(&odd, 0);
        assert_eq!(d.outcome, Outcome::Executed);
        assert_eq!(d.executor.as_deref(), Some("log"));
        // Without "*": failed, with the reason.
        let mut a = config();
        a.actions.remove("*");
        let mut g = Guardrails::new(&a);
        let d = g.decide(&odd, 0);
        assert_eq!(d.outcome, Outcome::Failed);
        assert!(d.detail.contains("page_oncall"), "{}", d.detail);
        // Globally off.
        let mut g = Guardrails::new(&AutomatedResponse {
            enabled: false,
            ..config()
        });
        assert_eq!(g.decide(&notify("all"), 0).outcome, Outcome::Disabled);
    }

    #[test]
    fn pruning_keeps_decisions_the_same() {
        let mut g = Guardrails::new(&AutomatedResponse {
            dedup_window_secs: 0,
            rate_limit_per_minute: 100_000,
            ..config()
        });
        for i in 0..1000 {
            assert_eq!(
                g.decide(&notify(&format!("t{i}")), i).outcome,
                Outcome::Pending
            );
        }
        // Far later: everything pruned, and the maps are empty.
        assert_eq!(g.decide(&notify("t1"), 1_000_000).outcome, Outcome::Pending);
        assert_eq!(g.last_accepted.len(), 1);
        assert_eq!(g.per_action.values().map(VecDeque::len).sum::<usize>(), 1);
    }

    #[test]
    fn idempotency_keys_are_stable_and_distinct() {
        let a = notify("all");
        let k = idempotency_key(&a, 1000, 5, 0);
        assert_eq!(k, idempotency_key(&a, 1000, 5, 0));
        assert_eq!(k.len(), 32);
        assert_ne!(k, idempotency_key(&a, 1001, 5, 0));
        assert_ne!(k, idempotency_key(&a, 1000, 5, 1));
        assert_ne!(k, idempotency_key(&notify("api"), 1000, 5, 0));
    }
}
