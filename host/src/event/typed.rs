//! The typed fields the plugins get, taken from `data` as documented in
//! `config/schemas/README.md`:
//! - `latency_ms` ← `latency_ms` (llm_request, system_metric)
//! - `success` ← llm_request `success`, else false when `error` is a
//!   non-empty string, else true; error_event always false
//! - `satisfaction` ← user_feedback `satisfaction`
//! - `business_value` ← business_event `value`
//! - `cost` ← `cost_usd` (llm_request, business_event)
//! - `model`, `service`, `user` ← `model`, `service`, `user_id`
//! - `health` ← system_metric `health`

use hxp_plugin_sdk::{Event, EventKind, Health};
use serde_json::{Map, Value};

/// The `event_consumers` key of a type (`llm_requests`, ...).
pub fn consumer_key(kind: EventKind) -> &'static str {
    match kind {
        EventKind::LlmRequest => "llm_requests",
        EventKind::UserFeedback => "user_feedback",
        EventKind::SystemMetric => "system_metrics",
        EventKind::BusinessEvent => "business_events",
        EventKind::ErrorEvent => "error_events",
    }
}
/// The typed fields the plugins get (see the module docs).
pub fn typed(kind: EventKind, data: &Map<String, Value>, id: u128, time_ms: i64) -> Event {
    let num = |k: &str| data.get(k).and_then(Value::as_f64);
    let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
    let (latency_ms, success, satisfaction, business_value, cost) = match kind {
        EventKind::LlmRequest => {
            let failed_msg = data
                .get("error")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            let success = data
                .get("success")
                .and_then(Value::as_bool)
                .unwrap_or(!failed_msg);
            (
                num("latency_ms"),
                Some(success),
                None,
                None,
                num("cost_usd"),
            )
        }
        EventKind::UserFeedback => (None, None, num("satisfaction"), None, None),
        EventKind::SystemMetric => (num("latency_ms"), None, None, None, None),
        EventKind::BusinessEvent => (None, None, None, num("value"), num("cost_usd")),
        EventKind::ErrorEvent => (None, Some(false), None, None, None),
    };
    let health = match kind {
        EventKind::SystemMetric => data
            .get("health")
            .and_then(Value::as_str)
            .and_then(Health::parse),
        _ => None,
    };
    Event {
        seq: 0,
        kind,
        id,
        time_ms,
        latency_ms,
        success,
        satisfaction,
        business_value,
        cost,
        model: text("model"),
        service: text("service"),
        user: text("user_id"),
        health,
        payload: None,
    }
}
