//! Batch analytics: the window's metrics recomputed from the stored events,
//! independently of the streaming plugin (exact sums and sorted quantiles),
//! and compared with the real-time values ("analytics accuracy vs batch
//! analytics").

use crate::store::Store;
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

/// Recompute the window of `realtime` (same end, same covered seconds) from
/// the database.
pub async fn recalculate(store: &Store, realtime: &Snapshot) -> anyhow::Result<Value> {
    let end_sec = realtime.time_ms.div_euclid(1000);
    let since_ms = (end_sec - realtime.window_secs as i64 + 1) * 1000;
    let until_ms = realtime.time_ms;
    let started = std::time::Instant::now();
    let (mut count, mut llm, mut outcome, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let (mut sat_n, mut sat_sum, mut value_sum, mut cost_n, mut cost_sum, mut lat_sum) =
        (0u64, 0.0, 0.0, 0u64, 0.0, 0.0);
    let mut latencies: Vec<f64> = Vec::new();
    if let Some(first) = store.first_seq_since(since_ms).await? {
        let mut after = first - 1;
        'pages: loop {
            let rows = store.events_after(after, 50_000).await?;
            if rows.is_empty() {
                break;
            }
            after = rows.last().expect("non-empty").seq;
            for r in rows {
                if r.processed_at > until_ms {
                    break 'pages;
                }
                if r.processed_at < since_ms {
                    continue;
                }
                let Some(e) = r.typed() else {
                    continue;
                };
                let kind = e.kind;
                count += 1;
                if kind == EventKind::LlmRequest {
                    llm += 1;
                }
                if let Some(l) = e.latency_ms {
                    latencies.push(l);
                    lat_sum += l;
                }
                if let Some(ok) = e.success {
                    outcome += 1;
                    errors += u64::from(!ok);
                }
                if let Some(s) = e.satisfaction {
                    sat_n += 1;
                    sat_sum += s;
                }
                if let Some(v) = e.business_value {
                    value_sum += v;
                }
                if let Some(c) = e.cost {
                    cost_n += 1;
                    cost_sum += c;
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let covered = realtime.covered_secs;
    let rate = |n: u64| {
        if covered > 0.0 {
            n as f64 / covered
        } else {
            0.0
        }
    };
    let mean = |s: f64, n: u64| (n > 0).then(|| s / n as f64);
    let batch = json!({
        "event_count": count,
        "throughput": rate(count),
        "requests_per_second": rate(llm),
        "latency": mean(lat_sum, latencies.len() as u64),
        "latency_p50": quantile(&latencies, 0.50),
        "latency_p95": quantile(&latencies, 0.95),
        "latency_p99": quantile(&latencies, 0.99),
        "error_rate": if outcome > 0 { errors as f64 / outcome as f64 } else { 0.0 },
        "user_satisfaction": mean(sat_sum, sat_n),
        "business_value": value_sum,
        "cost_per_request": mean(cost_sum, cost_n),
    });
    let o = &realtime.overall;
    let real = json!({
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
    });
    let mut difference = serde_json::Map::new();
    for (k, rv) in real.as_object().expect("object") {
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
        difference.insert(
            k.clone(),
            json!({"absolute": r - b, "relative": if rel.is_finite() { json!(rel) } else { Value::Null }}),
        );
    }
    Ok(json!({
        "window": {
            "from": chrono::DateTime::from_timestamp_millis(since_ms).map(|t| t.to_rfc3339()),
            "to": chrono::DateTime::from_timestamp_millis(until_ms).map(|t| t.to_rfc3339()),
            "seconds": realtime.window_secs,
            "covered_seconds": covered,
        },
        "real_time": real,
        "batch": batch,
        "difference": difference,
        "latency_quantiles_exact_in_real_time": o.latency_exact,
        "recalculation_ms": started.elapsed().as_secs_f64() * 1000.0,
    }))
}
