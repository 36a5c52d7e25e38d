//! The scenario's events: a quiet, realistic background (four models on
//! three serving backends behind a gateway) with the planted incidents'
//! effects on top, one event per [`TICK_MS`] of event time (20 per
//! second), each with its own `timestamp` and a fixed `event_id` (a resent
//! batch is absorbed as duplicates).
//!
//! The background is tuned so that its ordinary noise stays well below
//! what an incident looks like: requests fail 1.2% of the time, latency
//! spreads ±25% around each model's median with a rare single slow request,
//! about 1% of feedback is below 7, a service reads `degraded` at most once
//! in two minutes, and error events come at 0.1/s over four services.

use super::plan::{Effect, Planted};
use crate::cli::labels::Kind;
use crate::cli::loadgen::Rng;
use serde_json::{Value, json};

pub const MODELS: [&str; 4] = ["mixtral-8x7b", "llama-3-8b", "qwen-2-7b", "phi-3-mini"];
/// The gateway first, then the backends that serve the models.
pub const SERVICES: [&str; 4] = [
    "inference-gateway",
    "vllm-mixtral",
    "vllm-llama",
    "vllm-small",
];
pub const BACKENDS: [&str; 3] = ["vllm-mixtral", "vllm-llama", "vllm-small"];
pub const TICK_MS: i64 = 50;
/// Request failures outside incidents.
pub const BASE_FAILURE: f64 = 0.012;
/// A service's background `degraded` readings are at least this far apart.
const ISOLATED_MS: i64 = 120_000;

/// The backend that serves `model` (the two small models share one).
pub fn backend(model: &str) -> &'static str {
    match model {
        "mixtral-8x7b" => "vllm-mixtral",
        "llama-3-8b" => "vllm-llama",
        _ => "vllm-small",
    }
}

fn median_ms(model: &str) -> f64 {
    match model {
        "mixtral-8x7b" => 900.0,
        "llama-3-8b" => 350.0,
        "qwen-2-7b" => 420.0,
        _ => 150.0,
    }
}

/// The events of a scenario, in event-time order.
pub struct Stream<'a> {
    rng: Rng,
    plan: &'a [Planted],
    start_ms: i64,
    end_ms: i64,
    tick: i64,
    ids: (u64, u64),
    /// When each service last read degraded outside an incident.
    last_degraded: [i64; 4],
    /// An event due right after the current one (a restarting service's
    /// extra error events).
    extra: Option<Value>,
}

impl<'a> Stream<'a> {
    /// `id_base` makes the event ids of this stream (seed and start).
    pub fn new(seed: u64, id_base: u64, plan: &'a [Planted], span: (i64, i64)) -> Stream<'a> {
        Stream {
            rng: Rng((seed ^ 0x5DEE_CE66_D1CE_4E5B).max(1)),
            plan,
            start_ms: span.0,
            end_ms: span.1,
            tick: 0,
            ids: (id_base, 0),
            last_degraded: [i64::MIN / 2; 4],
            extra: None,
        }
    }

    /// The incident of `kind` on `key` at `t`, if one is under way.
    fn active(&self, kind: Kind, key: &str, t: i64) -> Option<&'a Planted> {
        self.plan.iter().find(|p| {
            let i = &p.incident;
            i.kind == kind && i.key == key && i.start_ms <= t && t < i.end_ms
        })
    }

    /// The incident that sets service `key`'s health at `t`, if any.
    fn service_incident(&self, key: &str, t: i64) -> Option<&'a Planted> {
        [Kind::ServiceRestart, Kind::Flapping]
            .into_iter()
            .find_map(|k| self.active(k, key, t))
    }

    /// One background event at `t`, incidents applied.
    fn event(&mut self, t: i64) -> Value {
        let r = self.rng.unit();
        let (kind, data) = if r < 0.55 {
            ("llm_request", self.request(t))
        } else if r < 0.63 {
            ("user_feedback", self.feedback(t))
        } else if r < 0.83 {
            ("system_metric", self.metric(t))
        } else if r < 0.995 {
            ("business_event", self.business())
        } else {
            let service = self.rng.pick(&SERVICES);
            ("error_event", self.error(service, false))
        };
        self.envelope(kind, t, data)
    }

    fn envelope(&mut self, kind: &str, t: i64, data: Value) -> Value {
        let id = ((self.ids.0 as u128) << 64) | self.ids.1 as u128;
        self.ids.1 += 1;
        json!({
            "event_id": uuid::Uuid::from_u128(id).to_string(),
            "event_type": kind,
            "timestamp": rfc3339(t),
            "data": data,
        })
    }

    fn user(&mut self) -> String {
        format!("user-{}", self.rng.next_u64() % 5000)
    }

    /// A standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (1.0 - self.rng.unit(), self.rng.unit());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

impl Stream<'_> {
    fn request(&mut self, t: i64) -> Value {
        let model = self.rng.pick(&MODELS);
        let service = backend(model);
        let degraded = self.active(Kind::ModelDegradation, model, t).is_some();
        let median = if degraded {
            (4.0 * median_ms(model)).max(2400.0)
        } else {
            median_ms(model)
        };
        let mut latency = median * (0.25 * self.normal()).exp();
        // Noise: now and then one slow request, alone.
        if !degraded && self.rng.unit() < 0.002 {
            latency *= 4.0 + 4.0 * self.rng.unit();
        }
        let fail_p = match (degraded, self.active(Kind::ErrorLeak, service, t)) {
            (true, _) => 0.10,
            (false, Some(p)) => leak_rate(p, t),
            (false, None) => BASE_FAILURE,
        };
        let ok = self.rng.unit() >= fail_p;
        let tokens = 50 + self.rng.next_u64() % 800;
        let mut data = json!({
            "model": model, "service": service, "user_id": self.user(),
            "latency_ms": (latency * 10.0).round() / 10.0, "success": ok,
            "prompt_tokens": 100 + self.rng.next_u64() % 1500, "completion_tokens": tokens,
            "cost_usd": (tokens as f64 * 2.0).round() / 1e6,
        });
        if !ok {
            data["error"] = json!(if degraded {
                "timeout"
            } else {
                "upstream error"
            });
        }
        data
    }

    fn feedback(&mut self, t: i64) -> Value {
        let model = self.rng.pick(&MODELS);
        let unhappy =
            self.active(Kind::ModelDegradation, model, t).is_some() && self.rng.unit() < 0.75;
        let (r, u) = (self.rng.unit(), self.rng.unit());
        let s = if unhappy {
            1.5 + 4.0 * u
        } else if r < 0.92 {
            8.0 + 2.0 * u
        } else if r < 0.99 {
            7.0 + u
        } else if r < 0.998 {
            6.0 + u
        } else {
            2.0 + 4.0 * u
        };
        json!({"user_id": self.user(), "model": model, "satisfaction": (s * 10.0).round() / 10.0})
    }

    fn metric(&mut self, t: i64) -> Value {
        let i = (self.rng.next_u64() % SERVICES.len() as u64) as usize;
        let service = SERVICES[i];
        let health = match self.service_incident(service, t).map(|p| &p.effect) {
            Some(Effect::Restart) => "failed",
            Some(Effect::Flapping { degraded })
                if degraded.iter().any(|&(a, b)| a <= t && t < b) =>
            {
                "degraded"
            }
            Some(Effect::Flapping { .. }) => "healthy",
            _ if self.rng.unit() < 0.004 && t - self.last_degraded[i] >= ISOLATED_MS => {
                self.last_degraded[i] = t;
                "degraded"
            }
            _ => "healthy",
        };
        let cpu = match health {
            "failed" => 0.0,
            "degraded" => 85.0 + 14.0 * self.rng.unit(),
            _ => 20.0 + 50.0 * self.rng.unit(),
        };
        json!({
            "service": service, "health": health,
            "cpu_percent": (cpu * 10.0).round() / 10.0,
            "memory_percent": ((30.0 + 50.0 * self.rng.unit()) * 10.0).round() / 10.0,
        })
    }

    fn business(&mut self) -> Value {
        json!({
            "name": self.rng.pick(&["subscription_renewal", "upgrade", "api_credit_purchase"]),
            "value": ((self.rng.unit() * 500.0) * 100.0).round() / 100.0, "currency": "USD",
            "user_id": self.user(),
        })
    }

    fn error(&mut self, service: &str, restarting: bool) -> Value {
        let (error_type, severity) = if restarting {
            ("connection_refused", "critical")
        } else {
            (
                self.rng.pick(&["timeout", "http_503", "rate_limited"]),
                self.rng.pick(&["warning", "warning", "error"]),
            )
        };
        json!({"service": service, "error_type": error_type, "severity": severity})
    }

    /// A restarting service's error events: 0.8/s while it is down.
    fn restart_error(&mut self, t: i64) -> Option<Value> {
        let down = self.plan.iter().find(|p| {
            p.effect == Effect::Restart && p.incident.start_ms <= t && t < p.incident.end_ms
        })?;
        if self.rng.unit() >= 0.8 * TICK_MS as f64 / 1000.0 {
            return None;
        }
        let data = self.error(&down.incident.key, true);
        Some(self.envelope("error_event", t + 1, data))
    }
}

/// A leak's failure rate at `t`: from the base rate up to its peak over the
/// first 70% of its span, then holding.
fn leak_rate(p: &Planted, t: i64) -> f64 {
    let Effect::Leak { peak } = p.effect else {
        return BASE_FAILURE;
    };
    let span = (p.incident.end_ms - p.incident.start_ms).max(1) as f64;
    let ramp = ((t - p.incident.start_ms) as f64 / (0.7 * span)).clamp(0.0, 1.0);
    BASE_FAILURE + (peak - BASE_FAILURE) * ramp
}

impl Iterator for Stream<'_> {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        if let Some(e) = self.extra.take() {
            return Some(e);
        }
        let slot = self.start_ms + self.tick * TICK_MS;
        if slot >= self.end_ms {
            return None;
        }
        self.tick += 1;
        // Jittered within the tick, so times are irregular but in order.
        let t = slot + (self.rng.next_u64() % TICK_MS as u64) as i64;
        let e = self.event(t);
        self.extra = self.restart_error(t);
        Some(e)
    }
}

/// RFC 3339 with milliseconds; the span was checked when the scenario was
/// made, so the fallback (an empty, refused timestamp) cannot happen.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}
