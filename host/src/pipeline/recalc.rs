//! Batch analytics: the window's metrics recomputed from the stored events,
//! independently of the streaming plugin (exact sums and sorted quantiles),
//! and compared with the real-time values ("analytics accuracy vs batch
//! analytics").

use crate::config::TimeMode;
use crate::store::Store;
use hxp_plugin_sdk::fixed::{COST, LATENCY, SATISFACTION, VALUE};
use hxp_plugin_sdk::{EventKind, Snapshot};
use serde_json::{Value, json};

/// Exact quantile, linear interpolation between the closest ranks.
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let a = sorted[lo];
    Some(match sorted.get(lo + 1) {
        Some(b) => a + (h - lo as f64) * (b - a),
        None => a,
    })
}

/// The window's sums, counted from the stored events in the analytics
/// plugin's fixed-point units (so that equal windows give equal figures).
#[derive(Default)]
struct Totals {
    count: u64,
    llm: u64,
    outcomes: u64,
    errors: u64,
    satisfaction: (u64, i64),
    value: i64,
    cost: (u64, i64),
    latency_sum: i64,
    latencies: Vec<f64>,
}

impl Totals {
    fn add(&mut self, e: &hxp_plugin_sdk::Event) {
        let finite = |v: Option<f64>| v.filter(|x| x.is_finite());
        self.count += 1;
        self.llm += u64::from(e.kind == EventKind::LlmRequest);
        if let Some(l) = finite(e.latency_ms) {
            self.latencies.push(l);
            self.latency_sum = self.latency_sum.wrapping_add(LATENCY.of(l));
        }
        if let Some(ok) = e.success {
            self.outcomes += 1;
            self.errors += u64::from(!ok);
        }
        if let Some(s) = finite(e.satisfaction) {
            self.satisfaction.0 += 1;
            self.satisfaction.1 = self.satisfaction.1.wrapping_add(SATISFACTION.of(s));
        }
        if let Some(v) = finite(e.business_value) {
            self.value = self.value.wrapping_add(VALUE.of(v));
        }
        if let Some(c) = finite(e.cost) {
            self.cost.0 += 1;
            self.cost.1 = self.cost.1.wrapping_add(COST.of(c));
        }
    }

    /// The requirements' metrics over `covered` seconds.
    fn metrics(mut self, covered: f64) -> Value {
        self.latencies.sort_by(f64::total_cmp);
        let rate = |n: u64| {
            if covered > 0.0 {
                n as f64 / covered
            } else {
                0.0
            }
        };
        let l = &self.latencies;
        json!({
            "event_count": self.count,
            "throughput": rate(self.count),
            "requests_per_second": rate(self.llm),
            "latency": LATENCY.mean(self.latency_sum, l.len() as u64),
            "latency_p50": quantile(l, 0.50),
            "latency_p95": quantile(l, 0.95),
            "latency_p99": quantile(l, 0.99),
            "error_rate": if self.outcomes > 0 { self.errors as f64 / self.outcomes as f64 } else { 0.0 },
            "user_satisfaction": SATISFACTION.mean(self.satisfaction.1, self.satisfaction.0),
            "business_value": VALUE.total(self.value),
            "cost_per_request": COST.mean(self.cost.1, self.cost.0),
        })
    }
}

/// Sum the events whose time is in `[since_ms, until_ms)`, as the
/// event-time window holds them.
async fn scan_event_time(store: &Store, since_ms: i64, until_ms: i64) -> anyhow::Result<Totals> {
    let mut t = Totals::default();
    let mut after = 0;
    loop {
        let rows = store
            .events_in_time(since_ms, until_ms, after, 50_000)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for e in rows.iter().filter_map(|r| r.typed()) {
            t.add(&e);
        }
    }
    Ok(t)
}

/// Sum the events of the batches processed from `since_ms` to `until_ms`
/// (processing time).
async fn scan(store: &Store, since_ms: i64, until_ms: i64) -> anyhow::Result<Totals> {
    let mut t = Totals::default();
    let Some(first) = store.first_seq_since(since_ms).await? else {
        return Ok(t);
    };
    let mut after = first - 1;
    loop {
        let rows = store.events_after(after, 50_000).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for r in &rows {
            if r.processed_at > until_ms {
                return Ok(t);
            }
            if r.processed_at >= since_ms
                && let Some(e) = r.typed()
            {
                t.add(&e);
            }
        }
    }
    Ok(t)
}

/// The real-time window's values, under the same names.
fn real_time(o: &hxp_plugin_sdk::Stats) -> Value {
    json!({
        "event_count": o.count,
        "throughput": o.throughput,
        "requests_per_second": o.requests_per_second,
        "latency": o.latency_avg,
        "latency_p50": o.latency_p50,
        "latency_p95": o.latency_p95,
        "latency_p99": o.latency_p99,
        "error_rate": o.error_rate,
        "user_satisfaction": o.user_satisfaction,
        "business_value": o.business_value,
        "cost_per_request": o.cost_per_request,
    })
}

/// Absolute and relative difference per metric (null where either side has
/// no value).
fn difference(real: &Value, batch: &Value) -> Value {
    let mut difference = serde_json::Map::new();
    for (k, rv) in real.as_object().into_iter().flatten() {
        let (Some(r), Some(b)) = (rv.as_f64(), batch[k].as_f64()) else {
            difference.insert(k.clone(), Value::Null);
            continue;
        };
        let rel = if b != 0.0 {
            (r - b) / b.abs()
        } else if r == 0.0 {
            0.0
        } else {
            f64::INFINITY
        };
        let rel = if rel.is_finite() {
            json!(rel)
        } else {
            Value::Null
        };
        difference.insert(k.clone(), json!({"absolute": r - b, "relative": rel}));
    }
    Value::Object(difference)
}

/// Recompute the window of `realtime` (same end, same covered seconds) from
/// the database: on event time the events of the window's whole seconds,
/// on processing time those of the batches processed in it.
pub async fn recalculate(
    store: &Store,
    realtime: &Snapshot,
    time: TimeMode,
) -> anyhow::Result<Value> {
    let end_sec = realtime.time_ms.div_euclid(1000);
    let since_ms = (end_sec - realtime.window_secs as i64 + 1) * 1000;
    let started = std::time::Instant::now();
    let covered = realtime.covered_secs;
    let (totals, until_ms) = match time {
        TimeMode::Event => {
            let until_ms = (end_sec + 1) * 1000;
            (scan_event_time(store, since_ms, until_ms).await?, until_ms)
        }
        TimeMode::Processing => (
            scan(store, since_ms, realtime.time_ms).await?,
            realtime.time_ms,
        ),
    };
    let batch = totals.metrics(covered);
    let real = real_time(&realtime.overall);
    let rfc = |ms| chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339());
    Ok(json!({
        "window": {
            "from": rfc(since_ms),
            "to": rfc(until_ms),
            "seconds": realtime.window_secs,
            "covered_seconds": covered,
        },
        "difference": difference(&real, &batch),
        "real_time": real,
        "batch": batch,
        "latency_quantiles_exact_in_real_time": realtime.overall.latency_exact,
        "recalculation_ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
}
