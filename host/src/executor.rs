//! Automated responses that act: the host carries out the response plugins'
//! action requests through configured executors, behind guardrails, with an
//! audit row per request.
//!
//! ```text
//! processor thread                    writer task              executor task
//! ───────────────                     ───────────              ─────────────
//! plugin asks ─▶ Guardrails::plan ─▶  stores the batch with ─▶ bounded queue ─▶ semaphore
//!   (sync, in memory: category,       its rows (outcome          (max_concurrency) ─▶ webhook /
//!    executor, dedup, cooldown,       pending / suppressed),     command ─▶ UPDATE the row
//!    rate limit, dry run)             then submits the jobs      (outcome, timings)
//! ```
//!
//! - The processor never waits for an executor: [`Guardrails::plan`] decides
//!   every outcome from in-memory state. A request to act gets a row with
//!   outcome `pending`; the writer hands its job to the executor task only
//!   after the batch's transaction committed, so the executor's UPDATE always
//!   finds its row, and nothing is done for a batch that was never stored.
//! - Outcomes: `pending` → `executed` | `failed`; decided at once:
//!   `suppressed_cooldown`, `deduplicated`, `rate_limited`, `dry_run`,
//!   `disabled` (category switched off), `failed` (no executor for the
//!   action), `executed` (the `log` executor: the log line is the action).
//! - The executor task takes a job only when a slot is free, so at most
//!   `max_concurrency` run and at most `queue_capacity` wait; a job that
//!   finds the queue full, or waited longer than `max_queue_wait_secs`, is
//!   recorded `failed` (acting on stale analytics is worse than not acting;
//!   the plugin asks again while the condition holds).
//! - Shutdown ([`Executors::shutdown`]): after the pipeline drained, queued
//!   and running jobs get `shutdown_grace_secs`; then running ones are
//!   cancelled (a command is killed) and everything left is recorded
//!   `failed` with an error starting with "shutdown".
//! - Restart: rows still `pending` were interrupted (the process died). They
//!   are recorded `failed` ("interrupted by restart"), not re-run: the
//!   request was made on analytics that are now stale, the receiver may
//!   already have acted (the idempotency key lets it tell), and the plugin
//!   asks again if the condition still holds. With SQLite (one process per
//!   file) every pending row from before this start is marked at once; with
//!   PostgreSQL (possibly shared by several instances) only rows older than
//!   the longest time a request can take, and a sweep repeats that every
//!   minute.

use crate::config::{AutomatedResponse, Config, Monitoring};
use crate::store::{ActionRow, ActionUpdate, Backend, Store, now_ms};
use crate::telemetry::Metrics;
use hxp_plugin_sdk::ActionRequest;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, watch};

// ───────────────────────────── configuration ─────────────────────────────

/// One executor of `automated_response.executors` (`kind` selects it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Executor {
    /// HTTP POST of a JSON body, retried with exponential backoff.
    Webhook(WebhookSpec),
    /// A program from `command_allowlist`, run without a shell.
    Command(CommandSpec),
    /// Writes the request to the log; nothing else.
    Log,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// http(s) URL. `{api_gateway_endpoint}` is replaced by
    /// `monitoring.api_gateway_endpoint`.
    pub url: String,
    /// Budget of one attempt (connect, send, response body).
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// Further attempts after a failed one (connection error, timeout, 408,
    /// 429, 5xx). Other answers are final.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one (at most 30 s).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
    /// Extra request headers (e.g. Authorization). Hidden in GET /config.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Absolute path; must be listed in `command_allowlist`.
    pub program: String,
    /// Argument templates: `{action}`, `{target}`, `{rule}`, `{reason}`,
    /// `{requested_at}` (ms), `{idempotency_key}`, `{parameters}` (the JSON
    /// object), `{parameters.KEY}` / `{parameters.A.B}`; `{{` and `}}` are
    /// literal braces. Each template is one argument: no shell, no splitting.
    #[serde(default)]
    pub args: Vec<String>,
    /// Killed when it runs longer.
    #[serde(default = "default_command_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_webhook_timeout_ms() -> u64 {
    5000
}
fn default_retries() -> u32 {
    3
}
fn default_backoff_ms() -> u64 {
    500
}
fn default_command_timeout_ms() -> u64 {
    10_000
}

/// The shipped executors: the API gateway for scale_models and
/// restart_service, a loopback notification webhook, and `log` for any other
/// action (`"*"`).
pub fn default_executors() -> BTreeMap<String, Executor> {
    let hook = |url: &str| {
        Executor::Webhook(WebhookSpec {
            url: url.into(),
            timeout_ms: default_webhook_timeout_ms(),
            retries: default_retries(),
            backoff_ms: default_backoff_ms(),
            headers: BTreeMap::new(),
        })
    };
    BTreeMap::from([
        (
            "gateway_scale".to_string(),
            hook("{api_gateway_endpoint}/models/scale"),
        ),
        (
            "gateway_restart".to_string(),
            hook("{api_gateway_endpoint}/services/restart"),
        ),
        ("notify".to_string(), hook("http://127.0.0.1:8025/notify")),
        ("log".to_string(), Executor::Log),
    ])
}

/// Action → executor name; `"*"` catches every other action.
pub fn default_actions() -> BTreeMap<String, String> {
    [
        ("scale_models", "gateway_scale"),
        ("restart_service", "gateway_restart"),
        ("send_notification", "notify"),
        ("*", "log"),
    ]
    .into_iter()
    .map(|(a, e)| (a.to_string(), e.to_string()))
    .collect()
}

/// A webhook URL with `{api_gateway_endpoint}` filled in.
pub fn resolve_url(url: &str, monitoring: &Monitoring) -> String {
    url.replace(
        "{api_gateway_endpoint}",
        monitoring.api_gateway_endpoint.trim_end_matches('/'),
    )
}

/// Checks of the executor keys, for `Config::check`. Messages start with
/// the key.
pub fn check(a: &AutomatedResponse, monitoring: &Monitoring) -> Result<(), String> {
    const S: &str = "automated_response";
    for p in &a.command_allowlist {
        if !std::path::Path::new(p).is_absolute() {
            return Err(format!(
                "{S}.command_allowlist: '{p}' is not an absolute path"
            ));
        }
    }
    for (name, e) in &a.executors {
        let key = format!("{S}.executors.{name}");
        if name.is_empty() || name == "*" {
            return Err(format!("{key}: not a usable executor name"));
        }
        match e {
            Executor::Webhook(w) => {
                let url = resolve_url(&w.url, monitoring);
                if url.starts_with("https://") {
                    // reqwest is built without TLS (default features off).
                    return Err(format!(
                        "{key}.url: '{url}': this build has no TLS; use an http:// URL (a local TLS-terminating proxy for remote receivers)"
                    ));
                }
                if !url.starts_with("http://") {
                    return Err(format!("{key}.url: '{url}' is not an http URL"));
                }
                match reqwest::Url::parse(&url) {
                    Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => {}
                    _ => return Err(format!("{key}.url: '{url}' is not a valid URL")),
                }
                if w.timeout_ms == 0 || w.timeout_ms > 300_000 {
                    return Err(format!("{key}.timeout_ms: must be between 1 and 300000"));
                }
                if w.retries > 10 {
                    return Err(format!("{key}.retries: must be at most 10"));
                }
                if w.backoff_ms > 60_000 {
                    return Err(format!("{key}.backoff_ms: must be at most 60000"));
                }
                header_map(&w.headers).map_err(|e| format!("{key}.headers: {e}"))?;
            }
            Executor::Command(c) => {
                if !std::path::Path::new(&c.program).is_absolute() {
                    return Err(format!(
                        "{key}.program: '{}' is not an absolute path",
                        c.program
                    ));
                }
                if !a.command_allowlist.contains(&c.program) {
                    return Err(format!(
                        "{key}.program: '{}' is not in {S}.command_allowlist; commands run without a shell and only from the allowlist",
                        c.program
                    ));
                }
                for (i, t) in c.args.iter().enumerate() {
                    validate_template(t).map_err(|e| format!("{key}.args[{i}]: {e}"))?;
                }
                if c.timeout_ms == 0 || c.timeout_ms > 600_000 {
                    return Err(format!("{key}.timeout_ms: must be between 1 and 600000"));
                }
            }
            Executor::Log => {}
        }
    }
    for (action, exec) in &a.actions {
        if !a.executors.contains_key(exec) {
            let known: Vec<&str> = a.executors.keys().map(String::as_str).collect();
            return Err(format!(
                "{S}.actions.{action}: no executor named '{exec}' (defined: {})",
                known.join(", ")
            ));
        }
    }
    if a.max_concurrency == 0 || a.max_concurrency > 256 {
        return Err(format!("{S}.max_concurrency: must be between 1 and 256"));
    }
    if a.queue_capacity == 0 || a.queue_capacity > 100_000 {
        return Err(format!("{S}.queue_capacity: must be between 1 and 100000"));
    }
    if a.max_queue_wait_secs == 0 {
        return Err(format!("{S}.max_queue_wait_secs: must be at least 1"));
    }
    Ok(())
}

fn header_map(headers: &BTreeMap<String, String>) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("'{k}' is not a valid header name"))?;
        let mut value =
            HeaderValue::from_str(v).map_err(|_| format!("the value of '{k}' is not valid"))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

// ─────────────────────────────── templates ───────────────────────────────

#[derive(Debug, Clone, PartialEq)]
enum Piece<'a> {
    Lit(String),
    Field(&'a str),
}

const FIELDS: [&str; 7] = [
    "action",
    "target",
    "rule",
    "reason",
    "requested_at",
    "idempotency_key",
    "parameters",
];

fn parse_template(t: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = t;
    while let Some(i) = rest.find(['{', '}']) {
        lit.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(after) = tail.strip_prefix("{{") {
            lit.push('{');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("}}") {
            lit.push('}');
            rest = after;
        } else if tail.starts_with('}') {
            return Err(format!(
                "unmatched '}}' in {t:?} (write '}}}}' for a brace)"
            ));
        } else {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {t:?}"))?;
            let name = tail[1..end].trim();
            let known = FIELDS.contains(&name)
                || name
                    .strip_prefix("parameters.")
                    .is_some_and(|p| !p.is_empty() && p.split('.').all(|s| !s.is_empty()));
            if !known {
                return Err(format!(
                    "unknown placeholder {{{name}}} in {t:?} (known: {}, parameters.KEY)",
                    FIELDS.join(", ")
                ));
            }
            if !lit.is_empty() {
                out.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            out.push(Piece::Field(name));
            rest = &tail[end + 1..];
        }
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

/// Whether a template parses (config check).
pub fn validate_template(t: &str) -> Result<(), String> {
    parse_template(t).map(|_| ())
}

/// A template with the job's values: text as is, numbers and booleans in
/// JSON form, objects and arrays as JSON text. A missing or null parameter
/// is an error (the command is not run with a hole in its arguments).
pub fn render_template(t: &str, job: &Job, parameters: &Value) -> Result<String, String> {
    let mut out = String::new();
    for piece in parse_template(t)? {
        match piece {
            Piece::Lit(s) => out.push_str(&s),
            Piece::Field(name) => {
                let text = match name {
                    "action" => job.action.clone(),
                    "target" => job.target.clone(),
                    "rule" => job.rule.clone(),
                    "reason" => job.reason.clone(),
                    "requested_at" => job.requested_at.to_string(),
                    "idempotency_key" => job.idempotency_key.clone(),
                    "parameters" => parameters.to_string(),
                    path => {
                        let path = path.strip_prefix("parameters.").unwrap_or(path);
                        let v = path
                            .split('.')
                            .try_fold(parameters, |node, key| node.get(key))
                            .filter(|v| !v.is_null())
                            .ok_or_else(|| format!("parameter '{path}' is missing"))?;
                        match v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        }
                    }
                };
                out.push_str(&text);
            }
        }
    }
    Ok(out)
}

// ─────────────────────────────── guardrails ───────────────────────────────

/// What happened (or will happen) to a request; stored as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Executed,
    Failed,
    SuppressedCooldown,
    Deduplicated,
    RateLimited,
    DryRun,
    Disabled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Executed => "executed",
            Outcome::Failed => "failed",
            Outcome::SuppressedCooldown => "suppressed_cooldown",
            Outcome::Deduplicated => "deduplicated",
            Outcome::RateLimited => "rate_limited",
            Outcome::DryRun => "dry_run",
            Outcome::Disabled => "disabled",
        }
    }
}

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
        let verdict = |outcome, executor: Option<&str>, detail: String| Decision {
            outcome,
            executor: executor.map(str::to_string),
            detail,
        };
        if !self.enabled {
            return verdict(
                Outcome::Disabled,
                None,
                "automated_response.enabled is false".into(),
            );
        }
        if let Some(c) = self.category(req, &params) {
            let on = match c.as_str() {
                "critical" => self.critical,
                "business" => self.business,
                "error" => self.error,
                _ => true,
            };
            if !on {
                return verdict(
                    Outcome::Disabled,
                    None,
                    format!("category {c}: automated_response.{c}_events_enabled is false"),
                );
            }
        }
        let Some((executor, kind)) = self
            .routes
            .get(&req.action)
            .or_else(|| self.routes.get("*"))
            .cloned()
        else {
            return verdict(
                Outcome::Failed,
                None,
                format!(
                    "no executor for action '{}' (automated_response.actions)",
                    req.action
                ),
            );
        };
        let exec = Some(executor.as_str());
        let dedup_key = format!(
            "{}\0{}\0{}",
            req.action,
            req.target,
            canonical(&without_diagnostics(params))
        );
        if self.dedup_ms > 0
            && let Some(&t) = self.recent.get(&dedup_key)
            && now_ms - t < self.dedup_ms
        {
            return verdict(
                Outcome::Deduplicated,
                exec,
                format!(
                    "same request let through {} ms ago (dedup_window_secs)",
                    now_ms - t
                ),
            );
        }
        let pair = (req.action.clone(), req.target.clone());
        if self.cooldown_ms > 0
            && let Some(&t) = self.last_accepted.get(&pair)
            && now_ms - t < self.cooldown_ms
        {
            return verdict(
                Outcome::SuppressedCooldown,
                exec,
                format!(
                    "{} on {} is cooling down for {} more ms (cooldown_secs)",
                    req.action,
                    req.target,
                    self.cooldown_ms - (now_ms - t)
                ),
            );
        }
        if self.rate_per_minute > 0 {
            let recent = self.per_action.entry(req.action.clone()).or_default();
            while recent.front().is_some_and(|t| now_ms - t >= MINUTE_MS) {
                recent.pop_front();
            }
            if recent.len() >= self.rate_per_minute as usize {
                return verdict(
                    Outcome::RateLimited,
                    exec,
                    format!(
                        "{} already acted {} times in the last minute (rate_limit_per_minute)",
                        req.action,
                        recent.len()
                    ),
                );
            }
            recent.push_back(now_ms);
        }
        // Let through: remembered only as long as a window needs it.
        if self.cooldown_ms > 0 {
            self.last_accepted.insert(pair, now_ms);
        }
        if self.dedup_ms > 0 {
            self.recent.insert(dedup_key, now_ms);
        }
        if self.dry_run || self.dry_run_rules.contains(&req.rule) {
            let why = if self.dry_run {
                "automated_response.dry_run"
            } else {
                "rule listed in automated_response.dry_run_rules"
            };
            return verdict(
                Outcome::DryRun,
                exec,
                format!("dry run ({why}): executor '{executor}' not called"),
            );
        }
        match kind {
            Kind::Log => verdict(
                Outcome::Executed,
                exec,
                "written to the log (log executor)".into(),
            ),
            Kind::Webhook | Kind::Command => verdict(
                Outcome::Pending,
                exec,
                format!("queued for executor '{executor}'"),
            ),
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
        batch_seq: u64,
        now_ms: i64,
        findings_json: &str,
        analytics_json: Option<&str>,
        metrics: &Metrics,
    ) -> (Vec<ActionRow>, Vec<Job>) {
        let mut rows = Vec::with_capacity(actions.len());
        let mut jobs = Vec::new();
        for (n, a) in actions.iter().enumerate() {
            let d = self.decide(a, now_ms);
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
                outcome: d.outcome.as_str().to_string(),
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

// ──────────────────────────────── execution ────────────────────────────────

/// A request the executor task carries out; (batch_seq, n) is its row.
#[derive(Debug, Clone)]
pub struct Job {
    pub batch_seq: u64,
    pub n: u32,
    pub requested_at: i64,
    pub rule: String,
    pub action: String,
    pub target: String,
    /// JSON object.
    pub parameters: String,
    pub reason: String,
    /// JSON array.
    pub findings: String,
    /// JSON object (the batch's analytics), when analytics ran.
    pub analytics: Option<String>,
    pub executor: String,
    pub idempotency_key: String,
}

impl Job {
    /// The webhook body.
    pub fn body(&self, attempt: u32) -> Value {
        let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
        json!({
            "idempotency_key": self.idempotency_key,
            "action": self.action,
            "target": self.target,
            "rule": self.rule,
            "reason": self.reason,
            "parameters": parse(&self.parameters),
            "findings": parse(&self.findings),
            "analytics": self.analytics.as_deref().map(parse).unwrap_or(Value::Null),
            "requested_at": chrono::DateTime::from_timestamp_millis(self.requested_at)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "attempt": attempt,
        })
    }
}

struct Queued {
    job: Job,
    enqueued: Instant,
}

enum Resolved {
    Webhook {
        url: String,
        timeout: Duration,
        retries: u32,
        backoff: Duration,
        headers: reqwest::header::HeaderMap,
    },
    Command(CommandSpec),
    Log,
}

struct Ctx {
    store: Store,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    executors: BTreeMap<String, Resolved>,
    max_queue_wait: Duration,
    queue_capacity: usize,
    queue_depth: prometheus::IntGauge,
    duration: prometheus::HistogramVec,
}

/// How one execution ended.
struct Attempted {
    ok: bool,
    started_at: i64,
    attempts: u32,
    http_status: Option<u16>,
    error: Option<String>,
    detail: String,
}

impl Attempted {
    fn failed(started_at: i64, attempts: u32, error: String) -> Attempted {
        Attempted {
            ok: false,
            started_at,
            attempts,
            http_status: None,
            error: Some(error.clone()),
            detail: error,
        }
    }

    /// A request that was never started (queue full, stale, shutdown).
    fn not_started(error: String) -> Attempted {
        Attempted::failed(now_ms(), 0, error)
    }
}

/// The writer's side: submits jobs without waiting.
#[derive(Clone)]
pub struct ExecutorHandle {
    tx: mpsc::Sender<Queued>,
    ctx: Arc<Ctx>,
}

impl ExecutorHandle {
    /// Queue a job whose row is stored. Never waits: a full queue records
    /// the request as failed.
    pub fn submit(&self, job: Job) {
        self.ctx.queue_depth.inc();
        let refused = match self.tx.try_send(Queued {
            job,
            enqueued: Instant::now(),
        }) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(q)) => (
                q.job,
                format!(
                    "executor queue full ({} waiting; automated_response.queue_capacity)",
                    self.ctx.queue_capacity
                ),
            ),
            Err(mpsc::error::TrySendError::Closed(q)) => {
                (q.job, "shutdown: executors already stopped".to_string())
            }
        };
        self.ctx.queue_depth.dec();
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let (job, error) = refused;
            finish(&ctx, &job, Attempted::not_started(error)).await;
        });
    }
}

/// The running executor task (owned by the application).
pub struct Executors {
    handle: ExecutorHandle,
    cancel: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl Executors {
    /// Record the previous run's interrupted requests, then start the
    /// executor task. The handle goes to the pipeline's writer.
    pub async fn start(
        config: &Config,
        store: Store,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<(Executors, ExecutorHandle)> {
        let a = &config.automated_response;
        let mut executors = BTreeMap::new();
        for (name, e) in &a.executors {
            let r = match e {
                Executor::Webhook(w) => Resolved::Webhook {
                    url: resolve_url(&w.url, &config.monitoring),
                    timeout: Duration::from_millis(w.timeout_ms),
                    retries: w.retries,
                    backoff: Duration::from_millis(w.backoff_ms),
                    headers: header_map(&w.headers).map_err(anyhow::Error::msg)?,
                },
                Executor::Command(c) => Resolved::Command(c.clone()),
                Executor::Log => Resolved::Log,
            };
            executors.insert(name.clone(), r);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("hxp-events/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let queue_depth = metrics.register(prometheus::IntGauge::new(
            "automated_response_queue_depth",
            "Action requests waiting for a free executor slot",
        )?);
        let duration = metrics.register(prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "automated_response_execution_seconds",
                "Time from the start of an execution to its result, retries included",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["executor", "outcome"],
        )?);

        // Interrupted requests of a previous run (see the module docs).
        let budget = budget_ms(a);
        let cutoff = match store.backend() {
            Backend::Sqlite => now_ms(),
            Backend::Postgres => now_ms() - budget,
        };
        let marked = store.mark_interrupted(cutoff).await?;
        if marked > 0 {
            tracing::warn!(
                requests = marked,
                "action requests left pending by the previous run recorded as failed (interrupted by restart)"
            );
        }
        let sweep_store = store.clone();
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            tick.tick().await;
            loop {
                tick.tick().await;
                match sweep_store.mark_interrupted(now_ms() - budget).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        requests = n,
                        "stale pending action requests recorded as failed"
                    ),
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "sweeping stale action requests failed")
                    }
                }
            }
        });

        let ctx = Arc::new(Ctx {
            store,
            metrics,
            client,
            executors,
            max_queue_wait: Duration::from_secs(a.max_queue_wait_secs),
            queue_capacity: a.queue_capacity,
            queue_depth,
            duration,
        });
        let (tx, rx) = mpsc::channel(a.queue_capacity);
        let (cancel, cancel_rx) = watch::channel(false);
        let slots = Arc::new(Semaphore::new(a.max_concurrency));
        let task = tokio::spawn(run(ctx.clone(), rx, slots, cancel_rx));
        let handle = ExecutorHandle { tx, ctx };
        Ok((
            Executors {
                handle: handle.clone(),
                cancel,
                task,
                sweeper,
            },
            handle,
        ))
    }

    /// Call after the pipeline drained (its writer, which held the other
    /// handle, has finished): queued and running jobs get `grace`; then the
    /// running ones are cancelled and the rest recorded failed ("shutdown").
    pub async fn shutdown(self, grace: Duration) {
        let Executors {
            handle,
            cancel,
            mut task,
            sweeper,
        } = self;
        sweeper.abort();
        drop(handle);
        if tokio::time::timeout(grace, &mut task).await.is_ok() {
            return;
        }
        tracing::warn!(
            "action requests still running after {grace:?}; cancelling them (recorded as failed: shutdown)"
        );
        let _ = cancel.send(true);
        // Recording the cancelled ones is quick; bounded all the same.
        if tokio::time::timeout(Duration::from_secs(10), &mut task)
            .await
            .is_err()
        {
            task.abort();
            tracing::error!("executor task did not stop; some action requests stay pending");
        }
    }
}

/// Longest time a request may stay pending in a live process: queue wait,
/// the slowest executor with all its retries and backoffs, and a margin
/// (shutdown grace and database retries).
fn budget_ms(a: &AutomatedResponse) -> i64 {
    let slowest = a
        .executors
        .values()
        .map(|e| match e {
            Executor::Webhook(w) => {
                let backoffs: u64 = (0..w.retries)
                    .map(|i| backoff_for(Duration::from_millis(w.backoff_ms), i).as_millis() as u64)
                    .sum();
                w.timeout_ms * (u64::from(w.retries) + 1) + backoffs
            }
            Executor::Command(c) => c.timeout_ms,
            Executor::Log => 0,
        })
        .max()
        .unwrap_or(0);
    let total = a.max_queue_wait_secs * 1000 + slowest + a.shutdown_grace_secs * 1000 + 60_000;
    i64::try_from(total).unwrap_or(i64::MAX)
}

/// Wait before retry `i` (0-based): base × 2^i, at most 30 s.
fn backoff_for(base: Duration, i: u32) -> Duration {
    base.saturating_mul(1u32 << i.min(16))
        .min(Duration::from_secs(30))
}

async fn run(
    ctx: Arc<Ctx>,
    mut rx: mpsc::Receiver<Queued>,
    slots: Arc<Semaphore>,
    mut cancel: watch::Receiver<bool>,
) {
    let mut running = tokio::task::JoinSet::new();
    loop {
        // A free slot first: at most max_concurrency run, the rest wait in
        // the bounded queue.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = cancel.wait_for(|c| *c) => break,
        };
        let queued = tokio::select! {
            q = rx.recv() => q,
            _ = cancel.wait_for(|c| *c) => break,
        };
        let Some(queued) = queued else { break };
        ctx.queue_depth.dec();
        while running.try_join_next().is_some() {}
        let (ctx, cancel) = (ctx.clone(), cancel.clone());
        running.spawn(async move {
            let _permit = permit;
            execute(&ctx, queued, cancel).await;
        });
    }
    // Cancelled (or every handle dropped): what is still queued is not
    // started.
    rx.close();
    while let Ok(q) = rx.try_recv() {
        ctx.queue_depth.dec();
        let error = "shutdown: not started before the service stopped".to_string();
        finish(&ctx, &q.job, Attempted::not_started(error)).await;
    }
    // Running ones finish, or see the cancel and record "shutdown".
    while running.join_next().await.is_some() {}
}

async fn execute(ctx: &Ctx, q: Queued, mut cancel: watch::Receiver<bool>) {
    let job = q.job;
    let waited = q.enqueued.elapsed();
    let started_at = now_ms();
    let failed = |error: String, attempts: u32| Attempted::failed(started_at, attempts, error);
    if waited > ctx.max_queue_wait {
        let e = format!(
            "expired: waited {} ms for a free executor slot (max_queue_wait_secs)",
            waited.as_millis()
        );
        finish(ctx, &job, failed(e, 0)).await;
        return;
    }
    let Some(exec) = ctx.executors.get(&job.executor) else {
        let e = format!("executor '{}' is not configured", job.executor);
        finish(ctx, &job, failed(e, 0)).await;
        return;
    };
    let attempts = AtomicU32::new(0);
    let t = Instant::now();
    let result = tokio::select! {
        r = run_executor(ctx, exec, &job, started_at, &attempts) => r,
        _ = cancel.wait_for(|c| *c) => failed(
            format!(
                "shutdown: cancelled while in flight (the receiver may have acted; idempotency key {})",
                job.idempotency_key
            ),
            attempts.load(Ordering::Relaxed),
        ),
    };
    ctx.duration
        .with_label_values(&[
            job.executor.as_str(),
            if result.ok { "executed" } else { "failed" },
        ])
        .observe(t.elapsed().as_secs_f64());
    finish(ctx, &job, result).await;
}

async fn run_executor(
    ctx: &Ctx,
    exec: &Resolved,
    job: &Job,
    started_at: i64,
    attempts: &AtomicU32,
) -> Attempted {
    match exec {
        Resolved::Webhook {
            url,
            timeout,
            retries,
            backoff,
            headers,
        } => {
            let mut last_error = String::new();
            let mut last_status = None;
            for attempt in 1..=retries + 1 {
                attempts.store(attempt, Ordering::Relaxed);
                let sent = ctx
                    .client
                    .post(url)
                    .timeout(*timeout)
                    .headers(headers.clone())
                    .header("idempotency-key", job.idempotency_key.as_str())
                    .json(&job.body(attempt))
                    .send()
                    .await;
                let retryable = match sent {
                    Ok(resp) => {
                        let status = resp.status();
                        last_status = Some(status.as_u16());
                        if status.is_success() {
                            return Attempted {
                                ok: true,
                                started_at,
                                attempts: attempt,
                                http_status: last_status,
                                error: None,
                                detail: format!("POST {url}: HTTP {}", status.as_u16()),
                            };
                        }
                        let text = match resp.bytes().await {
                            Ok(b) => String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned(),
                            Err(_) => String::new(),
                        };
                        last_error = format!("HTTP {}: {}", status.as_u16(), text.trim());
                        status.is_server_error()
                            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                            || status == reqwest::StatusCode::REQUEST_TIMEOUT
                    }
                    Err(e) => {
                        last_status = None;
                        last_error = if e.is_timeout() {
                            format!("timed out after {} ms", timeout.as_millis())
                        } else if e.is_connect() {
                            format!("connection failed: {e}")
                        } else {
                            format!("request failed: {e}")
                        };
                        true
                    }
                };
                if !retryable || attempt > *retries {
                    break;
                }
                tokio::time::sleep(backoff_for(*backoff, attempt - 1)).await;
            }
            let n = attempts.load(Ordering::Relaxed);
            Attempted {
                ok: false,
                started_at,
                attempts: n,
                http_status: last_status,
                detail: format!("POST {url}: failed after {n} attempt(s): {last_error}"),
                error: Some(last_error),
            }
        }
        Resolved::Command(c) => {
            attempts.store(1, Ordering::Relaxed);
            run_command(c, job, started_at).await
        }
        Resolved::Log => {
            attempts.store(1, Ordering::Relaxed);
            tracing::info!(action = %job.action, target = %job.target, rule = %job.rule, "automated response (log executor)");
            Attempted {
                ok: true,
                started_at,
                attempts: 1,
                http_status: None,
                error: None,
                detail: "written to the log (log executor)".into(),
            }
        }
    }
}

/// Bytes of a command's stdout/stderr kept for the audit row.
const OUTPUT_CAP: usize = 2048;

async fn run_command(c: &CommandSpec, job: &Job, started_at: i64) -> Attempted {
    use std::process::Stdio;
    let failed = |error: String| Attempted {
        ok: false,
        started_at,
        attempts: 1,
        http_status: None,
        detail: format!("{}: {error}", c.program),
        error: Some(error),
    };
    let params: Value = serde_json::from_str(&job.parameters).unwrap_or(Value::Null);
    let mut args = Vec::with_capacity(c.args.len());
    for (i, t) in c.args.iter().enumerate() {
        match render_template(t, job, &params) {
            Ok(a) => args.push(a),
            Err(e) => return failed(format!("argument {}: {e}; not run", i + 1)),
        }
    }
    // No shell: the program gets exactly these arguments. The environment
    // is cleared (the service's holds database URLs and tokens).
    let mut cmd = tokio::process::Command::new(&c.program);
    cmd.args(&args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HXP_ACTION", &job.action)
        .env("HXP_TARGET", &job.target)
        .env("HXP_RULE", &job.rule)
        .env("HXP_IDEMPOTENCY_KEY", &job.idempotency_key)
        .env("HXP_PARAMETERS", &job.parameters)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("cannot start: {e}")),
    };
    let out = tokio::spawn(read_capped(child.stdout.take()));
    let err = tokio::spawn(read_capped(child.stderr.take()));
    let timeout = Duration::from_millis(c.timeout_ms);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            out.abort();
            err.abort();
            return failed(format!("waiting for it failed: {e}"));
        }
        Err(_) => {
            // SIGKILL and reap.
            let _ = child.kill().await;
            out.abort();
            err.abort();
            return failed(format!("timed out after {} ms; killed", c.timeout_ms));
        }
    };
    // A grandchild may hold the pipes open: do not wait long for them.
    let collect = |h: tokio::task::JoinHandle<Vec<u8>>| async move {
        let abort = h.abort_handle();
        match tokio::time::timeout(Duration::from_secs(1), h).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b).trim().to_string(),
            _ => {
                abort.abort();
                String::new()
            }
        }
    };
    let (stdout, stderr) = (collect(out).await, collect(err).await);
    if status.success() {
        Attempted {
            ok: true,
            started_at,
            attempts: 1,
            http_status: None,
            error: None,
            detail: if stdout.is_empty() {
                format!("{}: exit 0", c.program)
            } else {
                format!("{}: exit 0: {stdout}", c.program)
            },
        }
    } else {
        let code = status
            .code()
            .map(|n| format!("exit {n}"))
            .unwrap_or_else(|| "killed by a signal".into());
        failed(if stderr.is_empty() {
            code
        } else {
            format!("{code}: {stderr}")
        })
    }
}

/// Everything a pipe gives (so the child never blocks on it), keeping the
/// first [`OUTPUT_CAP`] bytes.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut r) = r else { return kept };
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

/// Store the result (retrying while the database is away, for up to a
/// minute), count it, log it.
async fn finish(ctx: &Ctx, job: &Job, r: Attempted) {
    let outcome = if r.ok {
        Outcome::Executed
    } else {
        Outcome::Failed
    };
    ctx.metrics
        .action_requests
        .with_label_values(&[job.action.as_str(), outcome.as_str()])
        .inc();
    if r.ok {
        tracing::info!(action = %job.action, target = %job.target, executor = %job.executor, attempts = r.attempts, detail = %r.detail, "automated response executed");
    } else {
        tracing::warn!(action = %job.action, target = %job.target, executor = %job.executor, attempts = r.attempts, error = r.error.as_deref().unwrap_or(""), "automated response failed");
    }
    let update = ActionUpdate {
        outcome: outcome.as_str(),
        detail: r.detail,
        started_at: Some(r.started_at),
        finished_at: now_ms(),
        attempts: i64::from(r.attempts),
        http_status: r.http_status.map(i64::from),
        error: r.error,
    };
    let mut delay = Duration::from_millis(100);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ctx
            .store
            .update_action_outcome(job.batch_seq, job.n, &update)
            .await
        {
            Ok(true) => return,
            Ok(false) => {
                // Already final (e.g. marked interrupted by a sweep).
                tracing::warn!(
                    batch_seq = job.batch_seq,
                    n = job.n,
                    "action request was no longer pending; result not stored"
                );
                return;
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %format!("{e:#}"), "storing an action result failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), batch_seq = job.batch_seq, n = job.n, "action result not stored");
                return;
            }
        }
    }
}

// ─────────────────────────────────── tests ───────────────────────────────────

#[cfg(test)]
mod tests {
    use super::*;

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

    fn job(params: Value) -> Job {
        Job {
            batch_seq: 7,
            n: 0,
            requested_at: 1_700_000_000_000,
            rule: "scale_up_models".into(),
            action: "scale_models".into(),
            target: "vllm-mixtral".into(),
            parameters: params.to_string(),
            reason: "throughput > 1000".into(),
            findings: "[]".into(),
            analytics: None,
            executor: "script".into(),
            idempotency_key: "k1".into(),
        }
    }

    #[test]
    fn templates_render_fields_and_parameters() {
        let p =
            json!({"replicas": 3, "model": {"name": "mixtral"}, "ok": true, "zones": ["a", "b"]});
        let j = job(p.clone());
        let r = |t: &str| render_template(t, &j, &p);
        assert_eq!(r("{target}").unwrap(), "vllm-mixtral");
        assert_eq!(r("--action={action}").unwrap(), "--action=scale_models");
        assert_eq!(
            r("--replicas={parameters.replicas}").unwrap(),
            "--replicas=3"
        );
        assert_eq!(r("{parameters.model.name}").unwrap(), "mixtral");
        assert_eq!(r("{parameters.ok}").unwrap(), "true");
        assert_eq!(r("{parameters.zones}").unwrap(), r#"["a","b"]"#);
        assert_eq!(r("{rule}/{idempotency_key}").unwrap(), "scale_up_models/k1");
        assert_eq!(r("{requested_at}").unwrap(), "1700000000000");
        assert_eq!(
            r("{{literal}} {{{target}}}").unwrap(),
            "{literal} {vllm-mixtral}"
        );
        assert_eq!(
            r("no placeholders; $(rm -rf /)").unwrap(),
            "no placeholders; $(rm -rf /)"
        );
        let whole: Value = serde_json::from_str(&r("{parameters}").unwrap()).unwrap();
        assert_eq!(whole, p);
        // A value is one argument, never split or interpreted.
        let j2 = Job {
            target: "a b; echo pwned".into(),
            ..j.clone()
        };
        assert_eq!(
            render_template("{target}", &j2, &p).unwrap(),
            "a b; echo pwned"
        );
    }

    #[test]
    fn template_errors_are_clear() {
        let p = json!({"replicas": null});
        let j = job(p.clone());
        let e = render_template("{parameters.replicas}", &j, &p).unwrap_err();
        assert!(e.contains("'replicas' is missing"), "{e}");
        let e = render_template("{parameters.nope.deeper}", &j, &p).unwrap_err();
        assert!(e.contains("missing"), "{e}");
        assert!(
            validate_template("{tagret}")
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(
            validate_template("{target")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            validate_template("target}")
                .unwrap_err()
                .contains("unmatched")
        );
        assert!(validate_template("{parameters.}").is_err());
        assert!(validate_template("{parameters..x}").is_err());
        assert!(validate_template("{ target }").is_ok());
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

    #[test]
    fn backoff_doubles_up_to_thirty_seconds() {
        let b = Duration::from_millis(500);
        assert_eq!(backoff_for(b, 0), Duration::from_millis(500));
        assert_eq!(backoff_for(b, 1), Duration::from_millis(1000));
        assert_eq!(backoff_for(b, 3), Duration::from_millis(4000));
        assert_eq!(backoff_for(b, 12), Duration::from_secs(30));
        assert_eq!(backoff_for(b, 40), Duration::from_secs(30));
    }

    #[test]
    fn config_checks_name_the_key() {
        let m = Monitoring::default();
        assert_eq!(check(&AutomatedResponse::default(), &m), Ok(()));
        let mut a = AutomatedResponse::default();
        a.executors.insert(
            "script".into(),
            Executor::Command(CommandSpec {
                program: "/usr/local/bin/scale".into(),
                args: vec!["{target}".into()],
                timeout_ms: 1000,
            }),
        );
        let e = check(&a, &m).unwrap_err();
        assert!(
            e.starts_with("automated_response.executors.script.program")
                && e.contains("command_allowlist"),
            "{e}"
        );
        a.command_allowlist.push("/usr/local/bin/scale".into());
        assert_eq!(check(&a, &m), Ok(()));
        a.actions.insert("scale_models".into(), "nope".into());
        let e = check(&a, &m).unwrap_err();
        assert!(
            e.contains("actions.scale_models: no executor named 'nope'"),
            "{e}"
        );
        let mut a = AutomatedResponse::default();
        a.executors.insert(
            "bad".into(),
            Executor::Webhook(WebhookSpec {
                url: "ftp://127.0.0.1/x".into(),
                timeout_ms: 100,
                retries: 0,
                backoff_ms: 0,
                headers: BTreeMap::new(),
            }),
        );
        let e = check(&a, &m).unwrap_err();
        assert!(
            e.contains("executors.bad.url") && e.contains("not an http URL"),
            "{e}"
        );
        // No TLS in this build: refused at load, not at the first call.
        if let Some(Executor::Webhook(w)) = a.executors.get_mut("bad") {
            w.url = "https://127.0.0.1/x".into();
        }
        let e = check(&a, &m).unwrap_err();
        assert!(
            e.contains("executors.bad.url") && e.contains("no TLS"),
            "{e}"
        );
    }

    #[test]
    fn executor_yaml_shapes() {
        let e: BTreeMap<String, Executor> = serde_yaml::from_str(
            "hook: {kind: webhook, url: 'http://127.0.0.1:1/x', retries: 1}\n\
             cmd: {kind: command, program: /bin/true, args: ['{target}']}\n\
             log: {kind: log}\n",
        )
        .unwrap();
        assert!(
            matches!(&e["hook"], Executor::Webhook(w) if w.retries == 1 && w.timeout_ms == 5000)
        );
        assert!(matches!(&e["cmd"], Executor::Command(c) if c.timeout_ms == 10_000));
        assert_eq!(e["log"], Executor::Log);
        let bad = serde_yaml::from_str::<BTreeMap<String, Executor>>(
            "hook: {kind: webhook, url: 'http://x', retires: 1}\n",
        );
        assert!(bad.is_err());
        let url = resolve_url(
            "{api_gateway_endpoint}/models/scale",
            &Monitoring::default(),
        );
        assert_eq!(url, "http://127.0.0.1:8000/models/scale");
    }

    #[tokio::test]
    async fn a_command_that_overruns_is_killed() {
        let c = CommandSpec {
            program: "/bin/sleep".into(),
            args: vec!["5".into()],
            timeout_ms: 200,
        };
        let t = Instant::now();
        let r = run_command(&c, &job(json!({})), 0).await;
        assert!(!r.ok);
        assert!(
            r.error.as_deref().unwrap().contains("timed out"),
            "{:?}",
            r.error
        );
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_command_gets_its_arguments_verbatim() {
        let c = CommandSpec {
            program: "/bin/echo".into(),
            args: vec![
                "{target};".into(),
                "$HOME".into(),
                "{parameters.replicas}".into(),
            ],
            timeout_ms: 5000,
        };
        let r = run_command(&c, &job(json!({"replicas": 2})), 0).await;
        assert!(r.ok, "{:?}", r.error);
        assert!(r.detail.ends_with("vllm-mixtral; $HOME 2"), "{}", r.detail);
        let r = run_command(&c, &job(json!({})), 0).await;
        assert!(!r.ok);
        assert!(
            r.detail.contains("argument 3") && r.detail.contains("not run"),
            "{}",
            r.detail
        );
    }
}
