//! Backtests: a correlation plugin version run over the stored events of
//! an event-time range, in event-time order, from a fresh start, with its
//! clock following the events; the alerts it raises, against the alerts
//! the live versions recorded for the batches of those events.

use super::stages::Stage;
use crate::plugin::{Clock, PluginKind, convert};
use crate::store::Store;
use crate::util::task::AbortOnDrop;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Failed batches after which a backtest stops.
const MAX_FAILED_BATCHES: u64 = 10;

/// What a backtest found.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
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
    /// Batches the candidate failed on (trap, deadline, bad output), and
    /// the first failure. Their events count as seen, their findings are
    /// lost, as they would be live.
    pub failed_batches: u64,
    pub first_failure: Option<String>,
}

/// How far a running backtest is (what `POST /plugins/backtest` streams).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Progress {
    pub events: u64,
    /// The newest event time folded in so far.
    pub event_time_ms: Option<i64>,
}

/// One page of events as the candidate gets them, and the span of the
/// stored batches they came from.
struct Page {
    events: Vec<hxp_plugin_sdk::Event>,
    batch_seqs: (u64, u64),
}

/// How a caller follows and stops a backtest.
pub struct Watch {
    /// Updated after every batch. The backtest stops (with an error) once
    /// every receiver is gone: the caller lost interest.
    pub progress: watch::Sender<Progress>,
    /// Held until the candidate has stopped (a limit on concurrent
    /// backtests that a cancelled one keeps until it really stops).
    pub hold: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Run `plugin` (a correlation plugin, fresh, whose clock is `clock`)
/// over the events of `[from_ms, until_ms)` in batches of `batch_size`.
/// The store is read and the events parsed on another task while the
/// plugin runs; dropping the future stops the reading.
pub async fn run(
    store: &Store,
    mut plugin: Box<dyn Stage>,
    clock: Clock,
    (from_ms, until_ms): (i64, i64),
    batch_size: usize,
    watch: Watch,
) -> anyhow::Result<BacktestReport> {
    check_kind(plugin.kind()).map_err(anyhow::Error::msg)?;
    let started = Instant::now();
    let (tx, rx) = mpsc::channel(2);
    let reader = AbortOnDrop(tokio::spawn(read(store.clone(), (from_ms, until_ms), tx)));
    let folding = tokio::task::spawn_blocking(move || {
        let r = fold_pages(
            plugin.as_mut(),
            &clock,
            rx,
            batch_size.max(1),
            &watch.progress,
        );
        drop(watch.hold);
        r
    });
    let (mut r, batch_seqs) = folding.await??;
    // The reader's error, when it stopped the pages early.
    reader.await??;
    r.from_ms = from_ms;
    r.until_ms = until_ms;
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

/// Backtests cover correlation plugins: the error says so for another
/// kind.
pub fn check_kind(kind: PluginKind) -> Result<(), String> {
    match kind {
        PluginKind::Correlation => Ok(()),
        other => Err(format!(
            "backtests cover correlation plugins (this is a {other} plugin)"
        )),
    }
}

/// The range's events in event-time order from the store's scan, parsed
/// a page at a time on a blocking thread while the next page is read.
/// Stops when the receiver is gone.
async fn read(store: Store, range: (i64, i64), tx: mpsc::Sender<Page>) -> anyhow::Result<()> {
    let (raw_tx, mut raw) = mpsc::channel(2);
    let scan = AbortOnDrop(tokio::spawn(async move {
        store.scan_by_time(range, raw_tx).await
    }));
    while let Some(rows) = raw.recv().await {
        let page = tokio::task::spawn_blocking(move || parse(&rows)).await?;
        if tx.send(page).await.is_err() {
            return Ok(());
        }
    }
    // The scan ended (its sender is gone): its error, if it failed.
    scan.await?
}

fn parse(rows: &[crate::store::StoredEvent]) -> Page {
    let batch_seqs = rows.iter().fold(NO_BATCHES, |span, row| {
        widen(span, (row.batch_seq, row.batch_seq))
    });
    let events = rows.iter().filter_map(|e| e.typed()).collect();
    Page { events, batch_seqs }
}

/// The span of no batches (`widen` makes it the other).
const NO_BATCHES: (u64, u64) = (u64::MAX, 0);

/// The span of batch sequence numbers covering both.
fn widen(a: (u64, u64), b: (u64, u64)) -> (u64, u64) {
    (a.0.min(b.0), a.1.max(b.1))
}

/// The candidate over every page, batch by batch, its clock at each
/// batch's newest event (runs on a blocking thread).
fn fold_pages(
    plugin: &mut dyn Stage,
    clock: &Clock,
    mut pages: mpsc::Receiver<Page>,
    batch_size: usize,
    progress: &watch::Sender<Progress>,
) -> anyhow::Result<(BacktestReport, (u64, u64))> {
    let mut r = BacktestReport::default();
    let mut batch_seqs = NO_BATCHES;
    let mut newest = None;
    while let Some(page) = pages.blocking_recv() {
        batch_seqs = widen(batch_seqs, page.batch_seqs);
        for batch in page.events.chunks(batch_size) {
            anyhow::ensure!(!progress.is_closed(), "cancelled");
            let t = batch.iter().map(|e| e.time_ms).max().unwrap_or_default();
            newest = newest.max(Some(t));
            clock.set_ms(t);
            if let Err(e) = fold(plugin, batch, &mut r) {
                failed(&mut r, t, &e)?;
            }
            r.events += batch.len() as u64;
            r.batches += 1;
            progress.send_replace(Progress {
                events: r.events,
                event_time_ms: newest,
            });
        }
    }
    Ok((r, batch_seqs))
}

/// One batch through the candidate.
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
    Ok(())
}

/// Count a failed batch; past [`MAX_FAILED_BATCHES`] the backtest stops
/// (a candidate that fails throughout says nothing about its rules).
fn failed(r: &mut BacktestReport, t: i64, e: &anyhow::Error) -> anyhow::Result<()> {
    r.failed_batches += 1;
    let first = r
        .first_failure
        .get_or_insert_with(|| format!("the batch ending at event time {t}: {e}"));
    anyhow::ensure!(
        r.failed_batches < MAX_FAILED_BATCHES,
        "the candidate failed on {MAX_FAILED_BATCHES} batches; the first: {first}"
    );
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
