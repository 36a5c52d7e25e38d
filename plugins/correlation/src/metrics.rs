//! What a rule can read: event fields and window aggregates, and the
//! running sums the aggregates come from (over the whole window, or over
//! one key's events for a rule with `group_by`).

use hxp_plugin_sdk::EventRef;
use hxp_plugin_sdk::expr::{Value, ValueType};
use serde::{Deserialize, Serialize};

/// Metrics a correlation rule can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Metric {
    Latency,
    Satisfaction,
    BusinessValue,
    Cost,
    Success,
    Model,
    Service,
    User,
    EventType,
    Health,
    ErrorRate,
    ErrorCount,
    AvgLatency,
    AvgSatisfaction,
    Throughput,
    EventCount,
}

pub(crate) fn resolve(name: &str) -> Option<(Metric, ValueType)> {
    use Metric::*;
    use ValueType::*;
    Some(match name {
        "latency" | "latency_ms" => (Latency, Num),
        "user_satisfaction" | "satisfaction" => (Satisfaction, Num),
        "business_value" => (BusinessValue, Num),
        "cost" => (Cost, Num),
        "success" => (Success, Bool),
        "model" => (Model, Str),
        "service" => (Service, Str),
        "user_id" => (User, Str),
        "event_type" => (EventType, Str),
        "health" | "service_health" => (Health, Str),
        "error_rate" => (ErrorRate, Num),
        "error_count" => (ErrorCount, Num),
        "avg_latency" => (AvgLatency, Num),
        "avg_user_satisfaction" => (AvgSatisfaction, Num),
        "throughput" => (Throughput, Num),
        "event_count" => (EventCount, Num),
        _ => return None,
    })
}

/// Whether event `e` feeds `m` (and so can be an occurrence of a rule on it).
pub(crate) fn feeds(m: Metric, e: &EventRef) -> bool {
    use Metric::*;
    match m {
        Latency | AvgLatency => e.latency_ms.is_some(),
        Satisfaction | AvgSatisfaction => e.satisfaction.is_some(),
        BusinessValue => e.business_value.is_some(),
        Cost => e.cost.is_some(),
        Success | ErrorRate | ErrorCount => e.success.is_some(),
        Model => e.model.is_some(),
        Service => e.service.is_some(),
        User => e.user.is_some(),
        Health => e.health.is_some(),
        EventType | Throughput | EventCount => true,
    }
}

/// Running sums over the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Totals {
    pub count: u64,
    pub outcome: u64,
    pub errors: u64,
    pub lat_count: u64,
    pub lat_sum: f64,
    pub lat_sumsq: f64,
    pub sat_count: u64,
    pub sat_sum: f64,
}

impl Totals {
    pub const ZERO: Totals = Totals {
        count: 0,
        outcome: 0,
        errors: 0,
        lat_count: 0,
        lat_sum: 0.0,
        lat_sumsq: 0.0,
        sat_count: 0,
        sat_sum: 0.0,
    };

    pub fn add(&mut self, o: &Totals) {
        self.count += o.count;
        self.outcome += o.outcome;
        self.errors += o.errors;
        self.lat_count += o.lat_count;
        self.lat_sum += o.lat_sum;
        self.lat_sumsq += o.lat_sumsq;
        self.sat_count += o.sat_count;
        self.sat_sum += o.sat_sum;
    }

    pub fn sub(&mut self, o: &Totals) {
        self.count -= o.count;
        self.outcome -= o.outcome;
        self.errors -= o.errors;
        self.lat_count -= o.lat_count;
        self.lat_sum -= o.lat_sum;
        self.lat_sumsq -= o.lat_sumsq;
        self.sat_count -= o.sat_count;
        self.sat_sum -= o.sat_sum;
        if self.lat_count == 0 {
            self.lat_sum = 0.0;
            self.lat_sumsq = 0.0;
        }
        if self.sat_count == 0 {
            self.sat_sum = 0.0;
        }
    }
}

impl Totals {
    /// One event's contribution.
    pub fn of(e: &EventRef) -> Totals {
        let mut d = Totals {
            count: 1,
            ..Totals::default()
        };
        if let Some(ok) = e.success {
            d.outcome = 1;
            d.errors = u64::from(!ok);
        }
        if let Some(l) = e.latency_ms.filter(|l| l.is_finite()) {
            d.lat_count = 1;
            d.lat_sum = l;
            d.lat_sumsq = l * l;
        }
        if let Some(s) = e.satisfaction.filter(|s| s.is_finite()) {
            d.sat_count = 1;
            d.sat_sum = s;
        }
        d
    }
}

/// The value of `m` for event `e`, with window aggregates from `t` over
/// `covered` seconds.
pub(crate) fn value<'e>(
    m: Metric,
    e: &EventRef<'e>,
    t: &Totals,
    covered: f64,
) -> Option<Value<'e>> {
    use Metric::*;
    let mean = |s: f64, n: u64| (n > 0).then(|| Value::Num(s / n as f64));
    match m {
        Latency => e.latency_ms.map(Value::Num),
        Satisfaction => e.satisfaction.map(Value::Num),
        BusinessValue => e.business_value.map(Value::Num),
        Cost => e.cost.map(Value::Num),
        Success => e.success.map(Value::Bool),
        Model => e.model.map(Value::Str),
        Service => e.service.map(Value::Str),
        User => e.user.map(Value::Str),
        EventType => Some(Value::Str(e.kind.as_str())),
        Health => e.health.map(|h| Value::Str(h.as_str())),
        ErrorRate => (t.outcome > 0).then(|| Value::Num(t.errors as f64 / t.outcome as f64)),
        ErrorCount => Some(Value::Num(t.errors as f64)),
        AvgLatency => mean(t.lat_sum, t.lat_count),
        AvgSatisfaction => mean(t.sat_sum, t.sat_count),
        Throughput => (covered > 0.0).then(|| Value::Num(t.count as f64 / covered)),
        EventCount => Some(Value::Num(t.count as f64)),
    }
}

impl Metric {
    /// Whether the metric is an aggregate over the window (rather than a
    /// field of the event itself).
    pub fn is_window(self) -> bool {
        use Metric::*;
        matches!(
            self,
            ErrorRate | ErrorCount | AvgLatency | AvgSatisfaction | Throughput | EventCount
        )
    }
}
