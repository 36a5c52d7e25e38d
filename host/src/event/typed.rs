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
    Fields::of_map(data).event(kind, id, time_ms)
}

/// The same from `data` as JSON text (a stored event), without building
/// a map of every value: what replay and backtests read, per event.
pub fn typed_from_text(kind: EventKind, data: &str, id: u128, time_ms: i64) -> Event {
    // A document the one-pass reader refuses (a duplicated key) takes the
    // map's reading, where the last value of a key wins; so does anything
    // but an object (serde would read an array's items as the fields).
    let object = data.trim_start().starts_with('{');
    let fields = object.then(|| serde_json::from_str::<Fields>(data).ok());
    let fields = fields.flatten().unwrap_or_else(|| {
        let map: Map<String, Value> = serde_json::from_str(data).unwrap_or_default();
        Fields::of_map(&map)
    });
    fields.event(kind, id, time_ms)
}

/// The members of `data` the typed fields come from, each kept only when
/// it has the type that field reads (a string `latency_ms` is no latency).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
struct Fields {
    latency_ms: Lenient<f64>,
    success: Lenient<bool>,
    error: Lenient<String>,
    satisfaction: Lenient<f64>,
    value: Lenient<f64>,
    cost_usd: Lenient<f64>,
    model: Lenient<String>,
    service: Lenient<String>,
    user_id: Lenient<String>,
    health: Lenient<String>,
}

impl Fields {
    fn of_map(data: &Map<String, Value>) -> Fields {
        let num = |k: &str| Lenient(data.get(k).and_then(Value::as_f64));
        let text = |k: &str| Lenient(data.get(k).and_then(Value::as_str).map(str::to_string));
        Fields {
            latency_ms: num("latency_ms"),
            success: Lenient(data.get("success").and_then(Value::as_bool)),
            error: text("error"),
            satisfaction: num("satisfaction"),
            value: num("value"),
            cost_usd: num("cost_usd"),
            model: text("model"),
            service: text("service"),
            user_id: text("user_id"),
            health: text("health"),
        }
    }

    fn event(self, kind: EventKind, id: u128, time_ms: i64) -> Event {
        let (latency_ms, success, satisfaction, business_value, cost) = match kind {
            EventKind::LlmRequest => {
                let failed_msg = self.error.0.as_deref().is_some_and(|s| !s.is_empty());
                let success = self.success.0.unwrap_or(!failed_msg);
                (
                    self.latency_ms.0,
                    Some(success),
                    None,
                    None,
                    self.cost_usd.0,
                )
            }
            EventKind::UserFeedback => (None, None, self.satisfaction.0, None, None),
            EventKind::SystemMetric => (self.latency_ms.0, None, None, None, None),
            EventKind::BusinessEvent => (None, None, None, self.value.0, self.cost_usd.0),
            EventKind::ErrorEvent => (None, Some(false), None, None, None),
        };
        let health = match kind {
            EventKind::SystemMetric => self.health.0.as_deref().and_then(Health::parse),
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
            model: self.model.0,
            service: self.service.0,
            user: self.user_id.0,
            health,
            payload: None,
        }
    }
}

/// A JSON value read as `T` when it is one, else nothing (read past).
#[derive(Debug)]
struct Lenient<T>(Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(None)
    }
}

impl<'de, T: FromJson> serde::Deserialize<'de> for Lenient<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientVisitor(std::marker::PhantomData))
            .map(Lenient)
    }
}

/// The scalar types a typed field reads, and which JSON values are one.
trait FromJson: Sized {
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
}

impl FromJson for f64 {
    fn from_f64(v: f64) -> Option<f64> {
        Some(v)
    }
}

impl FromJson for bool {
    fn from_bool(v: bool) -> Option<bool> {
        Some(v)
    }
}

impl FromJson for String {
    fn from_str(v: &str) -> Option<String> {
        Some(v.to_string())
    }
}

struct LenientVisitor<T>(std::marker::PhantomData<T>);

impl<'de, T: FromJson> serde::de::Visitor<'de> for LenientVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Option<T>, E> {
        Ok(T::from_bool(v))
    }
    // As `Value::as_f64`: every JSON number is one.
    fn visit_i64<E>(self, v: i64) -> Result<Option<T>, E> {
        Ok(T::from_f64(v as f64))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Option<T>, E> {
        Ok(T::from_f64(v as f64))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Option<T>, E> {
        Ok(T::from_f64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<T>, E> {
        Ok(T::from_str(v))
    }
    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<Option<T>, A::Error> {
        while a.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<Option<T>, A::Error> {
        while a
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass reading of the text agrees with the map's on values
    /// of the wrong type, nested values, and a key given twice.
    #[test]
    fn the_text_reading_agrees_with_the_map_reading() {
        let cases = [
            r#"{"latency_ms": "12", "model": {"a": [1, 2]}, "success": 1, "cost_usd": 3}"#,
            r#"{"latency_ms": 12.5, "error": "boom", "user_id": null, "extra": [{"x": {}}]}"#,
            r#"{"model": "a", "model": "b", "latency_ms": 1, "latency_ms": 2}"#,
            r#"{"health": "degraded", "latency_ms": 18446744073709551615}"#,
            r#"[1, 2]"#,
            r#"not json"#,
        ];
        for text in cases {
            let map: Map<String, Value> = serde_json::from_str(text).unwrap_or_default();
            for kind in EventKind::ALL {
                assert_eq!(
                    typed_from_text(kind, text, 7, 9),
                    typed(kind, &map, 7, 9),
                    "{kind:?} {text}"
                );
            }
        }
    }
}
