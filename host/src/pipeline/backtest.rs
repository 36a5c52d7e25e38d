//! Backtests: a plugin version run over the stored events of an
//! event-time range, in event-time order, with its clock following the
//! events, beside fresh instances of the live versions of the other
//! plugins (what it would have done in the service); the alerts and
//! action requests of that run, against what the live versions recorded
//! for the batches of those events. It starts fresh, or warmed up on the
//! events just before the range (not counted).

use super::stages::{Slot, Stage, Stages, Switches};
use super::suppress::SilenceBoard;
use crate::config::InhibitRule;
use crate::plugin::{Clock, PluginKind, convert};
use crate::store::{Recorded, Store, action_key};
use crate::telemetry::Metrics;
use crate::util::task::AbortOnDrop;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Failed batches after which a backtest stops.
const MAX_FAILED_BATCHES: u64 = 10;
/// The longest warm-up, in seconds (a day: longer than any rule window).
pub const MAX_WARMUP_SECS: u32 = 86_400;

/// What a backtest found.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct BacktestReport {
    pub from_ms: i64,
    pub until_ms: i64,
    /// The candidate's name, and every plugin that ran (`name version`):
    /// the candidate and fresh instances of the other live versions.
    pub candidate: String,
    pub plugins: Vec<String>,
    pub events: u64,
    pub batches: u64,
    /// Events before the range the plugins warmed up on (not counted).
    pub warmup_events: u64,
    pub seconds: f64,
    /// Events folded per second, the warm-up's included.
    pub events_per_second: f64,
    /// Alerts raised in the run, per rule (not those the silences of the
    /// store and the inhibit rules held back, as live).
    pub alerts: BTreeMap<String, u64>,
    /// Alerts the live versions recorded (raised, not held back) for the
    /// batches of these events.
    pub recorded_alerts: BTreeMap<String, u64>,
    /// Per rule where they differ: the run's count minus the recorded.
    pub difference: BTreeMap<String, i64>,
    /// Whether a responses plugin ran: action requests are compared only
    /// then.
    pub responses: bool,
    /// Action requests made in the run, per `rule: action`.
    pub actions: BTreeMap<String, u64>,
    /// Action requests the live versions recorded for those batches.
    pub recorded_actions: BTreeMap<String, u64>,
    /// Per `rule: action` where they differ.
    pub action_difference: BTreeMap<String, i64>,
    /// Batches the candidate failed on (trap, deadline, bad output; the
    /// warm-up's too), and the first failure. Their events count as seen,
    /// the candidate's output for them is lost, as it would be live.
    pub failed_batches: u64,
    pub first_failure: Option<String>,
    /// Failed calls of the other plugins (their output is lost too, and
    /// what depends on it: a failed analytics call asks no responses).
    pub other_failures: u64,
}

/// How far a running backtest is (what `POST /plugins/backtest` streams).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Progress {
    /// Events folded in so far, the warm-up's included.
    pub events: u64,
    /// The newest event time folded in so far.
    pub event_time_ms: Option<i64>,
}

/// One page of events as the plugins get them, and the stored batches the
/// range's events among them (not the warm-up's) came from.
struct Page {
    events: Vec<hxp_plugin_sdk::Event>,
    batch_seqs: Vec<u64>,
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

/// What a backtest runs: the candidate among fresh instances of the other
/// live plugins, all on one clock that follows the events.
pub struct Bench {
    stages: Stages,
    /// The candidate's slot.
    candidate: usize,
    switches: Switches,
    /// The candidate's calls before the run (metadata, configure).
    calls_before: u64,
    /// The other plugins' failed calls before the run.
    other_errors_before: u64,
}

impl Bench {
    /// `candidate` among `others`, whose clock is `clock`.
    pub fn new(candidate: Slot, others: Vec<Slot>, clock: Clock, switches: Switches) -> Bench {
        let name = candidate.name.clone();
        let mut slots = others;
        slots.push(candidate);
        let stages = Stages::new(slots, clock);
        let candidate = stages.position(&name).unwrap_or_default();
        let calls_before = stages.slots[candidate].plugin.calls();
        let mut bench = Bench {
            stages,
            candidate,
            switches,
            calls_before,
            other_errors_before: 0,
        };
        bench.other_errors_before = bench.other_errors();
        bench
    }

    /// Hold findings back by `rules` as the service does (the silences
    /// come from the store the backtest reads).
    pub fn inhibiting(mut self, rules: Vec<InhibitRule>) -> Bench {
        self.stages.suppressor.inhibit = rules;
        self
    }

    /// `candidate` among `others`, under their own names, first in its
    /// stage (an analytics candidate serves the window), the others in the
    /// order given (the CLI's: there is no service to take the live plugins
    /// from).
    pub fn of_plugins(
        candidate: Box<dyn Stage>,
        others: Vec<Box<dyn Stage>>,
        clock: Clock,
        switches: Switches,
    ) -> Bench {
        let slot = |(order, plugin): (usize, Box<dyn Stage>)| Slot {
            name: Arc::from(plugin.name()),
            plugin,
            order: order as i32,
            file: String::new(),
            section: String::new(),
            section_json: String::new(),
            loaded_at: String::new(),
        };
        let others = others
            .into_iter()
            .enumerate()
            .map(|(i, p)| slot((i + 1, p)));
        Bench::new(slot((0, candidate)), others.collect(), clock, switches)
    }

    fn candidate(&self) -> &dyn Stage {
        self.stages.slots[self.candidate].plugin.as_ref()
    }

    /// Failed calls of every plugin but the candidate.
    fn other_errors(&self) -> u64 {
        let others = (self.stages.slots.iter().enumerate()).filter(|(i, _)| *i != self.candidate);
        others.map(|(_, s)| s.plugin.errors()).sum()
    }

    /// A candidate that was never called says nothing (its stage is
    /// switched off, or a responses plugin had no analytics plugin beside
    /// it to give it a window).
    fn check_called(&self, r: &BacktestReport) -> anyhow::Result<()> {
        let folded = r.events + r.warmup_events;
        anyhow::ensure!(
            folded == 0 || self.candidate().calls() > self.calls_before,
            "the candidate was never called over {folded} events: its stage is switched off, \
             or (a responses plugin) no analytics plugin runs beside it"
        );
        Ok(())
    }

    /// Who ran, and how the others fared, for the report.
    fn describe(&self, r: &mut BacktestReport) {
        r.other_failures = self.other_errors() - self.other_errors_before;
        r.candidate = self.stages.slots[self.candidate].name.to_string();
        r.plugins = (self.stages.slots.iter())
            .map(|s| format!("{} {}", s.name, s.plugin.metadata().version))
            .collect();
        r.responses = self.switches.responses && self.stages.has(PluginKind::Responses);
    }
}

/// Run `bench` over the events of `[from_ms, until_ms)` in batches of
/// `batch_size`, after warming up on the `warmup_ms` before them. The
/// store is read and the events parsed on another task while the plugins
/// run; dropping the future stops the reading.
pub async fn run(
    store: &Store,
    mut bench: Bench,
    (from_ms, until_ms): (i64, i64),
    (batch_size, warmup_ms): (usize, i64),
    watch: Watch,
) -> anyhow::Result<BacktestReport> {
    let started = Instant::now();
    // The silences of the store's own history: a backtest holds back what
    // the service held back at those event times.
    bench.stages.suppressor.silences = SilenceBoard::load(store).await?;
    let (tx, rx) = mpsc::channel(2);
    let scanned = (from_ms.saturating_sub(warmup_ms.max(0)), until_ms);
    let reader = AbortOnDrop(tokio::spawn(read(store.clone(), scanned, from_ms, tx)));
    let folding = tokio::task::spawn_blocking(move || {
        let mut fold = Fold::new(from_ms, batch_size.max(1));
        let r = fold.pages(&mut bench, rx, &watch.progress);
        let r = r.and_then(|()| bench.check_called(&fold.report));
        bench.describe(&mut fold.report);
        drop(watch.hold);
        r.map(|()| (fold.report, fold.batch_seqs))
    });
    let (mut r, batch_seqs) = folding.await??;
    // The reader's error, when it stopped the pages early.
    reader.await??;
    r.from_ms = from_ms;
    r.until_ms = until_ms;
    if r.events > 0 {
        r.recorded_alerts = recorded(store, Recorded::Alerts, &batch_seqs).await?;
        if r.responses {
            r.recorded_actions = recorded(store, Recorded::Actions, &batch_seqs).await?;
        }
    }
    r.difference = difference(&r.alerts, &r.recorded_alerts);
    r.action_difference = difference(&r.actions, &r.recorded_actions);
    r.seconds = started.elapsed().as_secs_f64();
    r.events_per_second = (r.events + r.warmup_events) as f64 / r.seconds.max(1e-9);
    Ok(r)
}

/// The scanned events in event-time order from the store's scan, parsed a
/// page at a time on a blocking thread while the next page is read; the
/// range proper starts at `from_ms`. Stops when the receiver is gone.
async fn read(
    store: Store,
    scanned: (i64, i64),
    from_ms: i64,
    tx: mpsc::Sender<Page>,
) -> anyhow::Result<()> {
    let (raw_tx, mut raw) = mpsc::channel(2);
    let scan = AbortOnDrop(tokio::spawn(async move {
        store.scan_by_time(scanned, raw_tx).await
    }));
    while let Some(rows) = raw.recv().await {
        let page = tokio::task::spawn_blocking(move || parse(&rows, from_ms)).await?;
        if tx.send(page).await.is_err() {
            return Ok(());
        }
    }
    // The scan ended (its sender is gone): its error, if it failed.
    scan.await?
}

fn parse(rows: &[crate::store::StoredEvent], from_ms: i64) -> Page {
    let mut batch_seqs: Vec<u64> = (rows.iter())
        .filter(|row| row.event_time >= from_ms)
        .map(|row| row.batch_seq)
        .collect();
    batch_seqs.dedup();
    let events = rows.iter().filter_map(|e| e.typed()).collect();
    Page { events, batch_seqs }
}

/// What the batches `seen` recorded, per rule (or `rule: action`): read
/// over their span, counted for those batches only (a late event in the
/// range must not bring in the batches stored between).
async fn recorded(
    store: &Store,
    kind: Recorded,
    seen: &HashSet<u64>,
) -> anyhow::Result<BTreeMap<String, u64>> {
    let (Some(&first), Some(&last)) = (seen.iter().min(), seen.iter().max()) else {
        return Ok(BTreeMap::new());
    };
    let mut counts = BTreeMap::new();
    for (batch, key, n) in store.recorded_in_batches(kind, (first, last)).await? {
        if seen.contains(&batch) {
            *counts.entry(key).or_default() += n;
        }
    }
    Ok(counts)
}

/// The run so far (on a blocking thread).
struct Fold {
    report: BacktestReport,
    /// The stored batches of the range's events.
    batch_seqs: HashSet<u64>,
    from_ms: i64,
    batch_size: usize,
    newest: Option<i64>,
    /// The plugins' own metrics (the service's count live calls only).
    metrics: Metrics,
}

impl Fold {
    fn new(from_ms: i64, batch_size: usize) -> Fold {
        Fold {
            report: BacktestReport::default(),
            batch_seqs: HashSet::new(),
            from_ms,
            batch_size,
            newest: None,
            metrics: Metrics::new(),
        }
    }

    /// Every page, batch by batch: first the warm-up's events, then the
    /// range's; the clock at each batch's newest event.
    fn pages(
        &mut self,
        bench: &mut Bench,
        mut pages: mpsc::Receiver<Page>,
        progress: &watch::Sender<Progress>,
    ) -> anyhow::Result<()> {
        while let Some(page) = pages.blocking_recv() {
            self.batch_seqs.extend(page.batch_seqs);
            let range = page.events.partition_point(|e| e.time_ms < self.from_ms);
            let (warmup, counted) = page.events.split_at(range);
            for (events, count) in [(warmup, false), (counted, true)] {
                for batch in events.chunks(self.batch_size) {
                    anyhow::ensure!(!progress.is_closed(), "cancelled");
                    self.batch(bench, batch, count)?;
                    progress.send_replace(Progress {
                        events: self.report.events + self.report.warmup_events,
                        event_time_ms: self.newest,
                    });
                }
            }
        }
        Ok(())
    }

    /// One batch through the plugins; what it raised and asked counted
    /// when `count` (the range's, not the warm-up's).
    fn batch(
        &mut self,
        bench: &mut Bench,
        batch: &[hxp_plugin_sdk::Event],
        count: bool,
    ) -> anyhow::Result<()> {
        let t = batch.iter().map(|e| e.time_ms).max().unwrap_or_default();
        self.newest = self.newest.max(Some(t));
        bench.stages.clock.set_ms(t);
        let failures = bench.candidate().errors();
        let wit = convert::batch_to_wit(hxp_plugin_sdk::EventBatch::from_events(batch));
        let results = bench.stages.run(&wit, t, bench.switches, &self.metrics);
        let r = &mut self.report;
        if bench.candidate().errors() > failures {
            let e = bench.candidate().stats().last_error.unwrap_or_default();
            failed(r, t, &e)?;
        }
        if !count {
            r.warmup_events += batch.len() as u64;
            return Ok(());
        }
        let findings = results.correlation.iter().flat_map(|c| &c.findings);
        for f in findings.filter(|f| f.alert) {
            *r.alerts.entry(f.name.clone()).or_default() += 1;
        }
        for a in &results.actions {
            *r.actions.entry(action_key(&a.rule, &a.action)).or_default() += 1;
        }
        r.events += batch.len() as u64;
        r.batches += 1;
        Ok(())
    }
}

/// Count a failed batch; past [`MAX_FAILED_BATCHES`] the backtest stops
/// (a candidate that fails throughout says nothing about its rules).
fn failed(r: &mut BacktestReport, t: i64, e: &str) -> anyhow::Result<()> {
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

/// Per key, `a - b` where it is not zero.
fn difference(a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>) -> BTreeMap<String, i64> {
    let keys = a.keys().chain(b.keys());
    keys.map(|k| {
        let n = |m: &BTreeMap<String, u64>| m.get(k).copied().unwrap_or(0) as i64;
        (k.clone(), n(a) - n(b))
    })
    .filter(|(_, d)| *d != 0)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches 1, 5 and 9 each recorded one alert; a backtest whose
    /// events came from batches 1 and 9 (a late event of batch 9 in the
    /// range, batch 5 outside it) compares with two, not with the span's
    /// three.
    #[tokio::test]
    async fn only_the_batches_of_the_events_seen_are_compared() {
        use crate::store::{AlertRow, BatchRow, BatchWrite};
        let store = crate::store::temp_store().await;
        let write = |batch_seq: u64| BatchWrite {
            batch: Some(BatchRow {
                batch_seq,
                processed_at: 0,
                size: 1,
                analytics: None,
                correlation: None,
                response: None,
                plugins: None,
                watermark: None,
            }),
            alerts: vec![AlertRow {
                raised_at: 0,
                rule: "x".into(),
                source: "rule".into(),
                subject: String::new(),
                occurrences: 5,
                score: 0.5,
                message: String::new(),
                evidence: "[]".into(),
                suppressed_by: None,
            }],
            ..BatchWrite::default()
        };
        store
            .write_batches(&[write(1), write(5), write(9)])
            .await
            .unwrap();
        let seen = HashSet::from([1, 9]);
        let counts = recorded(&store, Recorded::Alerts, &seen).await.unwrap();
        assert_eq!(counts, BTreeMap::from([("x".to_string(), 2)]));
        let none = recorded(&store, Recorded::Actions, &seen).await.unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn the_difference_names_only_the_rules_that_differ() {
        let m = |v: &[(&str, u64)]| v.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        let d = difference(&m(&[("a", 2), ("b", 1)]), &m(&[("a", 2), ("c", 3)]));
        let want: BTreeMap<String, i64> = [("b".to_string(), 1), ("c".to_string(), -3)].into();
        assert_eq!(d, want);
    }
}
