//! Plain Rust mirror of the `hxp:events` WIT types, plus the rule expression
//! language, shared by the default plugins.
//!
//! Plugin logic is written against these types so it can be unit-tested and
//! benchmarked natively; each plugin's thin wit-bindgen layer converts the
//! generated types into these (moves, no copies).

pub mod expr;
mod wit_glue;

use serde::{Deserialize, Serialize};

/// The five event types of the requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    LlmRequest,
    UserFeedback,
    SystemMetric,
    BusinessEvent,
    ErrorEvent,
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::LlmRequest,
        EventKind::UserFeedback,
        EventKind::SystemMetric,
        EventKind::BusinessEvent,
        EventKind::ErrorEvent,
    ];

    /// Name used on the wire (`event_type`) and in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::LlmRequest => "llm_request",
            EventKind::UserFeedback => "user_feedback",
            EventKind::SystemMetric => "system_metric",
            EventKind::BusinessEvent => "business_event",
            EventKind::ErrorEvent => "error_event",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Dense index, for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Degraded,
    Failed,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Health> {
        match s {
            "healthy" => Some(Health::Healthy),
            "degraded" => Some(Health::Degraded),
            "failed" => Some(Health::Failed),
            _ => None,
        }
    }
}

/// One typed event (see `record event` in `wit/events.wit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
    pub id: String,
    pub time_ms: i64,
    pub latency_ms: Option<f64>,
    pub success: Option<bool>,
    pub satisfaction: Option<f64>,
    pub business_value: Option<f64>,
    pub cost: Option<f64>,
    pub model: Option<String>,
    pub service: Option<String>,
    pub user: Option<String>,
    pub health: Option<Health>,
    pub payload: String,
}

impl Event {
    /// An event of `kind` with no optional field set.
    pub fn new(seq: u64, kind: EventKind, time_ms: i64) -> Event {
        Event {
            seq,
            kind,
            id: String::new(),
            time_ms,
            latency_ms: None,
            success: None,
            satisfaction: None,
            business_value: None,
            cost: None,
            model: None,
            service: None,
            user: None,
            health: None,
            payload: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub state_version: u32,
    pub wants_payload: bool,
    pub fresh_start_ok: bool,
}

/// Aggregates over a window (see `record stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub count: u64,
    pub throughput: f64,
    pub requests_per_second: f64,
    pub latency_count: u64,
    pub latency_avg: Option<f64>,
    pub latency_p50: Option<f64>,
    pub latency_p95: Option<f64>,
    pub latency_p99: Option<f64>,
    pub latency_exact: bool,
    pub outcome_count: u64,
    pub error_count: u64,
    pub error_rate: f64,
    pub user_satisfaction: Option<f64>,
    pub satisfaction_count: u64,
    pub business_value: f64,
    pub cost_per_request: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceHealth {
    pub service: String,
    pub health: Health,
    pub time_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub time_ms: i64,
    pub window_secs: u32,
    pub covered_secs: f64,
    pub overall: Stats,
    pub per_kind: Vec<(EventKind, Stats)>,
    pub services: Vec<ServiceHealth>,
}

impl Snapshot {
    /// Value of an analytics metric by the name rules use (see
    /// [`expr::ANALYTICS_METRICS`]).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let s = &self.overall;
        match name {
            "throughput" => Some(s.throughput),
            "requests_per_second" => Some(s.requests_per_second),
            "latency" | "average_latency" => s.latency_avg,
            "latency_p50" => s.latency_p50,
            "latency_p95" => s.latency_p95,
            "latency_p99" => s.latency_p99,
            "error_rate" => Some(s.error_rate),
            "error_percentage" => Some(s.error_rate * 100.0),
            "user_satisfaction" | "user_satisfaction_score" => s.user_satisfaction,
            "business_value" => Some(s.business_value),
            "cost_per_request" => s.cost_per_request,
            "event_count" => Some(s.count as f64),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub name: String,
    pub source: String,
    pub subject: String,
    pub alert: bool,
    pub occurrences: u32,
    pub score: f64,
    pub message: String,
    pub evidence: Vec<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CorrelationResult {
    pub findings: Vec<Finding>,
    pub correlation_score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    pub rule: String,
    pub action: String,
    pub target: String,
    pub parameters: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseInput {
    pub time_ms: i64,
    pub analytics: Snapshot,
    pub findings: Vec<Finding>,
}
