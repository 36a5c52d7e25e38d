//! Backtests: a correlation plugin version run over the stored events of
//! an event-time range, in event-time order, from a fresh start, with its
//! clock following the events; the alerts it raises, against the alerts
//! the live versions recorded for the batches of those events.

use super::stages::Stage;
use crate::plugin::{Clock, PluginKind, convert};
use crate::store::Store;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Events read per query.
const PAGE: usize = 20_000;

/// What a backtest found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BacktestReport {
    pub from_ms: i64,
    pub until_ms: i64,
    pub events: u64,
    pub batches: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Alerts the candidate raised, per rule.
    pub alerts: BTreeMap<String, u64>,
    /// Alerts the live versions recorded for the batches of these events.
    pub recorded_alerts: BTreeMap<String, u64>,
    /// Per rule where they differ: the candidate's count minus the recorded.
    pub difference: BTreeMap<String, i64>,
}

/// Run `plugin` (a correlation plugin, fresh, whose clock is `clock`)
/// over the events of `[from_ms, until_ms)` in batches of `batch_size`.
pub async fn run(
    store: &Store,
    plugin: &mut dyn Stage,
    clock: &Clock,
    (from_ms, until_ms): (i64, i64),
    batch_size: usize,
) -> anyhow::Result<BacktestReport> {
    anyhow::ensure!(
        plugin.kind() == PluginKind::Correlation,
        "backtests cover correlation plugins (this is a {} plugin)",
        plugin.kind()
    );
    let started = Instant::now();
    let mut r = BacktestReport {
        from_ms,
        until_ms,
        ..BacktestReport::default()
    };
    let (mut after, mut batch_seqs) = ((i64::MIN, 0u64), (u64::MAX, 0u64));
    loop {
        let rows = store.events_by_time(from_ms, until_ms, after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = (last.event_time, last.seq);
        for row in &rows {
            batch_seqs = (
                batch_seqs.0.min(row.batch_seq),
                batch_seqs.1.max(row.batch_seq),
            );
        }
        let events: Vec<_> = rows.iter().filter_map(|e| e.typed()).collect();
        for batch in events.chunks(batch_size.max(1)) {
            clock.set_ms(batch.iter().map(|e| e.time_ms).max().unwrap_or_default());
            fold(plugin, batch, &mut r)?;
        }
    }
    if r.events > 0 {
        r.recorded_alerts = store
            .alerts_per_rule_in_batches(batch_seqs.0, batch_seqs.1)
            .await?;
    }
    r.difference = difference(&r.alerts, &r.recorded_alerts);
    r.seconds = started.elapsed().as_secs_f64();
    r.events_per_second = r.events as f64 / r.seconds.max(1e-9);
    Ok(r)
}

/// One batch through the candidate (its clock at the batch's newest
/// event).
fn fold(
    plugin: &mut dyn Stage,
    batch: &[hxp_plugin_sdk::Event],
    r: &mut BacktestReport,
) -> anyhow::Result<()> {
    let wit = convert::batch_to_wit(hxp_plugin_sdk::EventBatch::from_events(batch));
    let result = plugin.correlation_process(&wit)?;
    for f in result.findings.iter().filter(|f| f.alert) {
        *r.alerts.entry(f.name.clone()).or_default() += 1;
    }
    r.events += batch.len() as u64;
    r.batches += 1;
    Ok(())
}

/// Per rule, `a - b` where it is not zero.
fn difference(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, i64> {
    let rules = a.keys().chain(b.keys());
    rules
        .map(|k| {
            let n = |m: &BTreeMap<String, u64>| m.get(k).copied().unwrap_or(0) as i64;
            (k.clone(), n(a) - n(b))
        })
        .filter(|(_, d)| *d != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_difference_names_only_the_rules_that_differ() {
        let m = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        let d = difference(&m(&[("a", 2), ("b", 1)]), &m(&[("a", 2), ("c", 3)]));
        let want: BTreeMap<String, i64> = [("b".to_string(), 1), ("c".to_string(), -3)].into();
        assert_eq!(d, want);
    }
}
