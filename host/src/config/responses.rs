//! `automated_response`: the response rules, the host's guardrails and the
//! executors that carry out what response plugins ask for.

use super::correlation::{Rule, rule};
use super::monitoring::Monitoring;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::util::template::validate_template;

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
    /// AUTOMATED_RESPONSE_MAX_STALENESS_SECS: while the watermark trails
    /// the clock by more than this (a backlog being caught up), requests
    /// are recorded as `stale` and not executed.
    pub max_staleness_secs: u64,
    /// At shutdown, seconds running and queued requests get after the
    /// pipeline drained; then they are recorded as failed ("shutdown").
    pub shutdown_grace_secs: u64,
    /// Programs a `command` executor may run (absolute paths, exact match).
    pub command_allowlist: Vec<String>,
    /// Executors by name.
    pub executors: BTreeMap<String, Executor>,
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
            max_staleness_secs: 60,
            shutdown_grace_secs: 10,
            command_allowlist: Vec::new(),
            executors: default_executors(),
            actions: default_actions(),
        }
    }
}

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

const S: &str = "automated_response";

impl AutomatedResponse {
    /// Checks of the executor keys, for `Config::check`. Messages start
    /// with the key.
    pub fn check(&self, monitoring: &Monitoring) -> Result<(), String> {
        for p in &self.command_allowlist {
            if !std::path::Path::new(p).is_absolute() {
                return Err(format!(
                    "{S}.command_allowlist: '{p}' is not an absolute path"
                ));
            }
        }
        for (name, e) in &self.executors {
            let key = format!("{S}.executors.{name}");
            if name.is_empty() || name == "*" {
                return Err(format!("{key}: not a usable executor name"));
            }
            match e {
                Executor::Webhook(w) => w.check(&key, monitoring)?,
                Executor::Command(c) => c.check(&key, &self.command_allowlist)?,
                Executor::Log => {}
            }
        }
        for (action, exec) in &self.actions {
            if !self.executors.contains_key(exec) {
                let known: Vec<&str> = self.executors.keys().map(String::as_str).collect();
                return Err(format!(
                    "{S}.actions.{action}: no executor named '{exec}' (defined: {})",
                    known.join(", ")
                ));
            }
        }
        if self.max_staleness_secs == 0 {
            return Err(format!("{S}.max_staleness_secs: must be at least 1"));
        }
        if self.max_concurrency == 0 || self.max_concurrency > 256 {
            return Err(format!("{S}.max_concurrency: must be between 1 and 256"));
        }
        if self.queue_capacity == 0 || self.queue_capacity > 100_000 {
            return Err(format!("{S}.queue_capacity: must be between 1 and 100000"));
        }
        if self.max_queue_wait_secs == 0 {
            return Err(format!("{S}.max_queue_wait_secs: must be at least 1"));
        }
        Ok(())
    }
}

impl WebhookSpec {
    fn check(&self, key: &str, monitoring: &Monitoring) -> Result<(), String> {
        let url = resolve_url(&self.url, monitoring);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{key}.url: '{url}' is not an http(s) URL"));
        }
        match reqwest::Url::parse(&url) {
            Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => {}
            _ => return Err(format!("{key}.url: '{url}' is not a valid URL")),
        }
        if self.timeout_ms == 0 || self.timeout_ms > 300_000 {
            return Err(format!("{key}.timeout_ms: must be between 1 and 300000"));
        }
        if self.retries > 10 {
            return Err(format!("{key}.retries: must be at most 10"));
        }
        if self.backoff_ms > 60_000 {
            return Err(format!("{key}.backoff_ms: must be at most 60000"));
        }
        header_map(&self.headers).map_err(|e| format!("{key}.headers: {e}"))?;
        Ok(())
    }
}

impl CommandSpec {
    fn check(&self, key: &str, allowlist: &[String]) -> Result<(), String> {
        if !std::path::Path::new(&self.program).is_absolute() {
            return Err(format!(
                "{key}.program: '{}' is not an absolute path",
                self.program
            ));
        }
        if !allowlist.contains(&self.program) {
            return Err(format!(
                "{key}.program: '{}' is not in {S}.command_allowlist; commands run without a shell and only from the allowlist",
                self.program
            ));
        }
        for (i, t) in self.args.iter().enumerate() {
            validate_template(t).map_err(|e| format!("{key}.args[{i}]: {e}"))?;
        }
        if self.timeout_ms == 0 || self.timeout_ms > 600_000 {
            return Err(format!("{key}.timeout_ms: must be between 1 and 600000"));
        }
        Ok(())
    }
}

/// The webhook headers as sent (values marked sensitive, so they never show
/// in debug output).
pub fn header_map(
    headers: &BTreeMap<String, String>,
) -> Result<reqwest::header::HeaderMap, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_checks_name_the_key() {
        let m = Monitoring::default();
        assert_eq!(AutomatedResponse::default().check(&m), Ok(()));
        let mut a = AutomatedResponse::default();
        a.executors.insert(
            "script".into(),
            Executor::Command(CommandSpec {
                program: "/usr/local/bin/scale".into(),
                args: vec!["{target}".into()],
                timeout_ms: 1000,
            }),
        );
        let e = a.check(&m).unwrap_err();
        assert!(
            e.starts_with("automated_response.executors.script.program")
                && e.contains("command_allowlist"),
            "{e}"
        );
        a.command_allowlist.push("/usr/local/bin/scale".into());
        assert_eq!(a.check(&m), Ok(()));
        a.actions.insert("scale_models".into(), "nope".into());
        let e = a.check(&m).unwrap_err();
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
        let e = a.check(&m).unwrap_err();
        assert!(
            e.contains("executors.bad.url") && e.contains("not an http(s) URL"),
            "{e}"
        );
        if let Some(Executor::Webhook(w)) = a.executors.get_mut("bad") {
            w.url = "https://127.0.0.1/x".into();
        }
        assert_eq!(a.check(&m), Ok(()));
    }

    #[test]
    fn executor_yaml_shapes() {
        let e: BTreeMap<String, Executor> = serde_norway::from_str(
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
        let bad = serde_norway::from_str::<BTreeMap<String, Executor>>(
            "hook: {kind: webhook, url: 'http://x', retires: 1}\n",
        );
        assert!(bad.is_err());
        let url = resolve_url(
            "{api_gateway_endpoint}/models/scale",
            &Monitoring::default(),
        );
        assert_eq!(url, "http://127.0.0.1:8000/models/scale");
    }
}
