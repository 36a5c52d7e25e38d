//! The SDK for hxp-events plugins written in Rust.
//!
//! - Plain Rust mirror of the `hxp:events` WIT types ([`EventBatch`],
//!   [`Snapshot`], [`Finding`], [`ActionRequest`], ...), so plugin logic can
//!   be unit-tested and benchmarked natively.
//! - The traits a plugin implements ([`Plugin`] and one of [`Analytics`],
//!   [`Correlation`], [`Responses`]) and the macros that export it as a wasm
//!   component ([`export_analytics!`], [`export_correlation!`],
//!   [`export_responses!`]); see [`plugin`](mod@plugin). The guest bindings
//!   are generated here from the embedded WIT ([`WIT`]), only in wasm builds,
//!   so a plugin crate depends on this crate alone.
//! - The rule expression language ([`expr`]) and pattern settings
//!   ([`patterns`]) of the default plugins.
//! - [`wit_conversions!`]: moves between generated WIT types and these types,
//!   shared by the guest bindings and the host's wasmtime bindings.
//!
//! Start with `use hxp_plugin_sdk::prelude::*;`.

pub mod duration;
pub mod expr;
pub mod fixed;
#[cfg(target_arch = "wasm32")]
pub mod guest;
pub mod patterns;
pub mod plugin;
mod wit_glue;

pub use plugin::{Analytics, Correlation, Plugin, Responses};

/// The WIT this SDK implements (`hxp:events@0.1.0`), the same text as the
/// repository's `wit/events.wit`.
pub const WIT: &str = include_str!("../wit/events.wit");

/// Everything a plugin usually needs: the traits and the types they use.
pub mod prelude {
    pub use crate::plugin::{Analytics, Correlation, Plugin, Responses};
    pub use crate::{
        ActionRequest, CorrelationResult, Event, EventBatch, EventKind, EventRef, Finding, Health,
        Metadata, ResponseInput, ServiceHealth, Snapshot, Stats,
    };
}

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

/// One event with owned fields: the convenient form for building batches
/// (tests, the host). Plugins read batches through [`EventRef`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub kind: EventKind,
    /// The event's UUID as a number.
    pub id: u128,
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
    /// The `data` JSON, when the plugin asked for payloads.
    pub payload: Option<String>,
}

impl Event {
    /// This event as a batch row (what the stages fold).
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            seq: self.seq,
            kind: self.kind,
            id: self.id,
            time_ms: self.time_ms,
            latency_ms: self.latency_ms,
            success: self.success,
            satisfaction: self.satisfaction,
            business_value: self.business_value,
            cost: self.cost,
            health: self.health,
            model: self.model.as_deref(),
            service: self.service.as_deref(),
            user: self.user.as_deref(),
            payload: self.payload.as_deref(),
        }
    }

    /// An event of `kind` with no optional field set.
    pub fn new(seq: u64, kind: EventKind, time_ms: i64) -> Event {
        Event {
            seq,
            kind,
            id: seq as u128,
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
            payload: None,
        }
    }
}

/// Index value meaning "no string" in the string columns.
pub const NO_STRING: u32 = u32::MAX;

/// A columnar batch (see `record event-batch` in `wit/events.wit`): one
/// vector per field, all of the same length.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventBatch {
    pub seq: Vec<u64>,
    pub kind: Vec<u8>,
    pub id_hi: Vec<u64>,
    pub id_lo: Vec<u64>,
    pub time_ms: Vec<i64>,
    pub latency_ms: Vec<f64>,
    pub outcome: Vec<u8>,
    pub satisfaction: Vec<f64>,
    pub business_value: Vec<f64>,
    pub cost: Vec<f64>,
    pub health: Vec<u8>,
    pub strings: Vec<String>,
    pub model: Vec<u32>,
    pub service: Vec<u32>,
    pub user: Vec<u32>,
    pub payload: Vec<String>,
}

/// One row of a batch, borrowing its strings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRef<'a> {
    pub seq: u64,
    pub kind: EventKind,
    pub id: u128,
    pub time_ms: i64,
    pub latency_ms: Option<f64>,
    pub success: Option<bool>,
    pub satisfaction: Option<f64>,
    pub business_value: Option<f64>,
    pub cost: Option<f64>,
    pub health: Option<Health>,
    pub model: Option<&'a str>,
    pub service: Option<&'a str>,
    pub user: Option<&'a str>,
    pub payload: Option<&'a str>,
}

impl EventRef<'_> {
    /// The row as an owned event, to keep beyond its batch (an event
    /// held until the watermark reaches it).
    pub fn to_event(&self) -> Event {
        Event {
            seq: self.seq,
            kind: self.kind,
            id: self.id,
            time_ms: self.time_ms,
            latency_ms: self.latency_ms,
            success: self.success,
            satisfaction: self.satisfaction,
            business_value: self.business_value,
            cost: self.cost,
            model: self.model.map(str::to_string),
            service: self.service.map(str::to_string),
            user: self.user.map(str::to_string),
            health: self.health,
            payload: self.payload.map(str::to_string),
        }
    }

    /// The second of the event's time (slot key of the windows).
    pub fn second(&self) -> i64 {
        self.time_ms.div_euclid(1000)
    }
}

fn opt(v: f64) -> Option<f64> {
    (!v.is_nan()).then_some(v)
}

fn unopt(v: Option<f64>) -> f64 {
    v.filter(|x| !x.is_nan()).unwrap_or(f64::NAN)
}

impl EventKind {
    /// The code used in `event-batch.kind`.
    pub fn from_code(c: u8) -> Option<EventKind> {
        EventKind::ALL.get(c as usize).copied()
    }
}

impl Health {
    fn from_code(c: u8) -> Option<Health> {
        match c {
            1 => Some(Health::Healthy),
            2 => Some(Health::Degraded),
            3 => Some(Health::Failed),
            _ => None,
        }
    }

    fn code(h: Option<Health>) -> u8 {
        match h {
            None => 0,
            Some(Health::Healthy) => 1,
            Some(Health::Degraded) => 2,
            Some(Health::Failed) => 3,
        }
    }
}

impl EventBatch {
    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    /// Give every event the time `ms`: a batch placed on processing time,
    /// where the host gives events their arrival instead of their own time.
    pub fn place_at(&mut self, ms: i64) {
        self.time_ms.fill(ms);
    }

    /// Build a batch from owned events.
    pub fn from_events<'e>(events: impl IntoIterator<Item = &'e Event>) -> EventBatch {
        let mut b = BatchBuilder::default();
        for e in events {
            b.push(e);
        }
        b.finish()
    }

    /// Every column has one entry per event, codes are known and string
    /// indexes are in range. Checked once when a batch arrives, so that
    /// [`EventBatch::get`] cannot fail.
    pub fn check(&self) -> Result<(), String> {
        let n = self.len();
        let lens = [
            ("kind", self.kind.len()),
            ("id-hi", self.id_hi.len()),
            ("id-lo", self.id_lo.len()),
            ("time-ms", self.time_ms.len()),
            ("latency-ms", self.latency_ms.len()),
            ("outcome", self.outcome.len()),
            ("satisfaction", self.satisfaction.len()),
            ("business-value", self.business_value.len()),
            ("cost", self.cost.len()),
            ("health", self.health.len()),
            ("model", self.model.len()),
            ("service", self.service.len()),
            ("user", self.user.len()),
        ];
        if let Some((name, len)) = lens.iter().find(|(_, l)| *l != n) {
            return Err(format!("column {name} has {len} entries for {n} events"));
        }
        if !self.payload.is_empty() && self.payload.len() != n {
            return Err(format!("{} payloads for {n} events", self.payload.len()));
        }
        if self.kind.iter().any(|&k| k > 4)
            || self.outcome.iter().any(|&o| o > 2)
            || self.health.iter().any(|&h| h > 3)
        {
            return Err("unknown kind, outcome or health code".into());
        }
        let s = self.strings.len() as u32;
        let bad = |col: &[u32]| col.iter().any(|&i| i != NO_STRING && i >= s);
        if bad(&self.model) || bad(&self.service) || bad(&self.user) {
            return Err("string index out of range".into());
        }
        Ok(())
    }

    fn string(&self, i: u32) -> Option<&str> {
        if i == NO_STRING {
            None
        } else {
            self.strings.get(i as usize).map(String::as_str)
        }
    }

    /// Row `i`; the batch must have passed [`EventBatch::check`].
    #[inline]
    pub fn get(&self, i: usize) -> EventRef<'_> {
        EventRef {
            seq: self.seq[i],
            kind: EventKind::from_code(self.kind[i]).unwrap_or(EventKind::LlmRequest),
            id: ((self.id_hi[i] as u128) << 64) | self.id_lo[i] as u128,
            time_ms: self.time_ms[i],
            latency_ms: opt(self.latency_ms[i]),
            success: match self.outcome[i] {
                1 => Some(true),
                2 => Some(false),
                _ => None,
            },
            satisfaction: opt(self.satisfaction[i]),
            business_value: opt(self.business_value[i]),
            cost: opt(self.cost[i]),
            health: Health::from_code(self.health[i]),
            model: self.string(self.model[i]),
            service: self.string(self.service[i]),
            user: self.string(self.user[i]),
            payload: self.payload.get(i).map(String::as_str),
        }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventRef<'_>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// Appends events to a batch, storing each distinct string once.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    batch: EventBatch,
    /// Strings come from clients: a keyed hash (SipHash with a random key
    /// per process), so nobody can choose strings that collide.
    index: std::collections::HashMap<String, u32>,
}

impl BatchBuilder {
    pub fn with_capacity(n: usize) -> BatchBuilder {
        let mut b = BatchBuilder::default();
        let e = &mut b.batch;
        e.seq.reserve(n);
        e.kind.reserve(n);
        e.id_hi.reserve(n);
        e.id_lo.reserve(n);
        e.time_ms.reserve(n);
        e.latency_ms.reserve(n);
        e.outcome.reserve(n);
        e.satisfaction.reserve(n);
        e.business_value.reserve(n);
        e.cost.reserve(n);
        e.health.reserve(n);
        e.model.reserve(n);
        e.service.reserve(n);
        e.user.reserve(n);
        b
    }

    fn intern(&mut self, s: Option<&str>) -> u32 {
        let Some(s) = s else { return NO_STRING };
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.batch.strings.len() as u32;
        self.batch.strings.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }

    pub fn push(&mut self, e: &Event) {
        let model = self.intern(e.model.as_deref());
        let service = self.intern(e.service.as_deref());
        let user = self.intern(e.user.as_deref());
        let b = &mut self.batch;
        b.seq.push(e.seq);
        b.kind.push(e.kind as u8);
        b.id_hi.push((e.id >> 64) as u64);
        b.id_lo.push(e.id as u64);
        b.time_ms.push(e.time_ms);
        b.latency_ms.push(unopt(e.latency_ms));
        b.outcome.push(match e.success {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        });
        b.satisfaction.push(unopt(e.satisfaction));
        b.business_value.push(unopt(e.business_value));
        b.cost.push(unopt(e.cost));
        b.health.push(Health::code(e.health));
        b.model.push(model);
        b.service.push(service);
        b.user.push(user);
        if let Some(p) = &e.payload {
            b.payload.push(p.clone());
        }
    }

    pub fn len(&self) -> usize {
        self.batch.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    pub fn finish(self) -> EventBatch {
        self.batch
    }
}

/// `record plugin-metadata`: what a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Stable plugin name; the host keys state and metrics by it.
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    /// Version of the layout `save_state` produces.
    pub state_version: u32,
    /// Whether batches must carry each event's `data` JSON (a copy per event).
    pub wants_payload: bool,
    /// Whether this version may be deployed over a state it cannot read,
    /// starting empty.
    pub fresh_start_ok: bool,
}

impl Metadata {
    /// Metadata for a plugin without state worth keeping: `state_version` 1,
    /// no payloads (`wants_payload` false) and `fresh_start_ok` true (a
    /// deployment may start it empty). A plugin whose state matters sets
    /// [`with_state_version`](Metadata::with_state_version) and
    /// `with_fresh_start_ok(false)`.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Metadata {
        Metadata {
            name: name.into(),
            version: version.into(),
            state_version: 1,
            wants_payload: false,
            fresh_start_ok: true,
        }
    }

    /// The layout version of `save_state`'s bytes.
    pub fn with_state_version(mut self, state_version: u32) -> Metadata {
        self.state_version = state_version;
        self
    }

    /// Ask for each event's `data` JSON in [`EventBatch::payload`].
    pub fn with_payload(mut self) -> Metadata {
        self.wants_payload = true;
        self
    }

    pub fn with_fresh_start_ok(mut self, ok: bool) -> Metadata {
        self.fresh_start_ok = ok;
        self
    }
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

/// `record action-request`: an action a response plugin asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// The rule that produced it.
    pub rule: String,
    /// e.g. "scale_models", "restart_service", "send_notification"; the
    /// host's `automated_response.actions` maps it to an executor.
    pub action: String,
    /// What to act on (a service, a model, "all").
    pub target: String,
    /// Action parameters as a JSON object text.
    pub parameters: String,
    /// Why, in words.
    pub reason: String,
}

impl ActionRequest {
    /// A request with no parameters (`{}`) and no reason.
    pub fn new(
        rule: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
    ) -> ActionRequest {
        ActionRequest {
            rule: rule.into(),
            action: action.into(),
            target: target.into(),
            parameters: "{}".into(),
            reason: String::new(),
        }
    }

    /// Parameters as a JSON object text.
    pub fn with_parameters(mut self, json: impl Into<String>) -> ActionRequest {
        self.parameters = json.into();
        self
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> ActionRequest {
        self.reason = reason.into();
        self
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseInput {
    pub time_ms: i64,
    pub analytics: Snapshot,
    pub findings: Vec<Finding>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_and_string_table() {
        let mut a = Event::new(7, EventKind::LlmRequest, 1000);
        a.id = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        a.latency_ms = Some(12.5);
        a.success = Some(false);
        a.model = Some("m".into());
        a.service = Some("s".into());
        let mut b = Event::new(8, EventKind::SystemMetric, 1001);
        b.health = Some(Health::Failed);
        b.service = Some("s".into());
        b.satisfaction = Some(f64::NAN); // NaN is "absent"
        let batch = EventBatch::from_events([&a, &b]);
        batch.check().unwrap();
        assert_eq!(batch.strings, vec!["m".to_string(), "s".to_string()]);
        let r: Vec<EventRef> = batch.iter().collect();
        assert_eq!(r[0].id, a.id);
        assert_eq!(r[0].latency_ms, Some(12.5));
        assert_eq!(r[0].success, Some(false));
        assert_eq!(
            (r[0].model, r[0].service, r[0].user),
            (Some("m"), Some("s"), None)
        );
        assert_eq!(r[1].health, Some(Health::Failed));
        assert_eq!(r[1].kind, EventKind::SystemMetric);
        assert_eq!(r[1].satisfaction, None);
        assert_eq!(r[1].payload, None);
    }

    #[test]
    fn embedded_wit_is_the_published_wit() {
        // `wit/events.wit` at the repository root is the published contract;
        // the SDK builds from its own copy so it works as a dependency.
        assert!(
            WIT == include_str!("../../../wit/events.wit"),
            "plugins/sdk/wit/events.wit differs from wit/events.wit: copy it over"
        );
        assert!(WIT.contains("package hxp:events@0.1.0;"));
    }

    #[test]
    fn metadata_and_action_builders() {
        let m = Metadata::new("pager", "0.1.0");
        assert_eq!(
            (m.state_version, m.wants_payload, m.fresh_start_ok),
            (1, false, true)
        );
        let m = m
            .with_state_version(3)
            .with_payload()
            .with_fresh_start_ok(false);
        assert_eq!(
            (m.state_version, m.wants_payload, m.fresh_start_ok),
            (3, true, false)
        );
        let a = ActionRequest::new("r", "page_oncall", "team").with_reason("why");
        assert_eq!(
            (a.rule.as_str(), a.action.as_str(), a.target.as_str()),
            ("r", "page_oncall", "team")
        );
        assert_eq!((a.parameters.as_str(), a.reason.as_str()), ("{}", "why"));
    }

    #[derive(Default)]
    struct Pager(u32);

    impl Plugin for Pager {
        fn metadata() -> Metadata {
            Metadata::new("pager", "0.1.0")
        }
    }

    impl Responses for Pager {
        fn decide(&mut self, input: &ResponseInput) -> Vec<ActionRequest> {
            self.0 += 1;
            let page = ActionRequest::new("minimal", "page_oncall", "team");
            Vec::from_iter((input.analytics.overall.error_rate > 0.5).then_some(page))
        }
    }

    // Natively the macro only checks the trait impls.
    crate::export_responses!(Pager);

    #[test]
    fn trait_defaults() {
        let mut p = Pager::default();
        assert_eq!(p.configure("{\"anything\": 1}"), Ok(()));
        assert!(p.save_state().is_empty());
        assert_eq!(p.load_state(7, b"old"), Ok(()));
        let mut input = ResponseInput::default();
        assert!(p.decide(&input).is_empty());
        input.analytics.overall.error_rate = 0.75;
        assert_eq!(p.decide(&input)[0].action, "page_oncall");
        assert_eq!(p.0, 2);
    }

    #[test]
    fn check_refuses_inconsistent_batches() {
        let mut batch = EventBatch::from_events([&Event::new(1, EventKind::ErrorEvent, 0)]);
        batch.check().unwrap();
        batch.model[0] = 3;
        assert_eq!(batch.check().unwrap_err(), "string index out of range");
        batch.model[0] = NO_STRING;
        batch.kind[0] = 9;
        assert!(batch.check().is_err());
        batch.kind[0] = 0;
        batch.cost.push(1.0);
        assert!(batch.check().unwrap_err().starts_with("column cost"));
    }
}
