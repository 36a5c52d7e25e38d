//! The live view: the latest results and counters that the API, /health and
//! the dashboard read, written by the processor after each batch.

use super::stages::{StageResults, Stages};
use super::suppress::Holds;
use crate::plugin::{CallStats, Limits, PluginKind};
use crate::telemetry::Metrics;
use hxp_plugin_sdk::{ActionRequest, Finding, Snapshot};
use std::collections::VecDeque;
use std::sync::RwLock;
use std::time::Duration;

/// The latest results, for the API and the metrics.
#[derive(Debug, Clone, Default)]
pub struct LiveView {
    pub snapshot: Option<Snapshot>,
    pub findings: Vec<Finding>,
    /// What held back which of `findings` (silences, inhibition).
    pub holds: Holds,
    pub correlation_score: f64,
    pub last_actions: Vec<ActionRequest>,
    pub batches: u64,
    pub events: u64,
    pub duplicates: u64,
    pub last_batch_at: Option<i64>,
    pub last_batch_size: usize,
    /// The batch size in use when the last batch closed (adaptive
    /// batching); 0 before the first.
    pub batch_limit: usize,
    /// Cumulative nanoseconds per stage: analytics, correlation, responses.
    pub stage_ns: [u64; 3],
    pub plugins: Vec<PluginStatus>,
    pub replayed: u64,
    /// Gaps (µs) between the last batch on an old plugin version and the
    /// first on the new one, when a batch was waiting; the last 1000 swaps.
    pub swap_gaps_us: VecDeque<u64>,
    /// For comparison: gaps between ordinary consecutive batches when the
    /// next one was waiting (a sample, the last 1000).
    pub batch_gaps_us: VecDeque<u64>,
    /// When the served snapshot was taken (wall clock, ms); its own time is
    /// the watermark.
    pub snapshot_at: Option<i64>,
    /// The watermark the windows end at; `None` before the first event.
    pub watermark: Option<i64>,
    /// When the last batch with new events arrived (wall clock, ms).
    pub last_fresh_at: Option<i64>,
}

/// What GET /plugins shows of a running plugin.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct PluginStatus {
    pub name: String,
    pub stage: PluginKind,
    pub order: i32,
    pub version: String,
    pub wit_version: String,
    pub sha256: String,
    pub file: String,
    pub config_section: String,
    pub loaded_at: String,
    pub limits: Limits,
    pub stats: CallStats,
    /// Taken out by quarantine: not called until the deployer rolls it
    /// back or unloads it (moments later).
    pub quarantined: bool,
}

/// Gaps kept per series.
const GAPS_KEPT: usize = 1000;

/// Append a gap, dropping the oldest beyond [`GAPS_KEPT`].
pub(super) fn push_capped(v: &mut VecDeque<u64>, gap: Duration) {
    if v.len() == GAPS_KEPT {
        v.pop_front();
    }
    v.push_back(gap.as_micros() as u64);
}

/// A processed batch's counts, for [`LiveView::record_batch`].
pub(super) struct BatchCounts {
    pub at: i64,
    pub size: usize,
    pub fresh: usize,
}

impl LiveView {
    /// Take a batch's results: the window, findings and requests it
    /// produced (a stage that did not run leaves the last ones), and counts.
    pub(super) fn record_batch(&mut self, r: StageResults, n: BatchCounts) {
        if r.snapshot.is_some() {
            self.snapshot = r.snapshot;
            self.snapshot_at = Some(n.at);
        }
        if let Some(c) = r.correlation {
            self.findings = c.findings;
            self.holds = c.holds;
            self.correlation_score = c.score;
        }
        if !r.actions.is_empty() {
            self.last_actions = r.actions;
        }
        self.batches += 1;
        self.events += n.fresh as u64;
        self.duplicates += (n.size - n.fresh) as u64;
        self.last_batch_at = Some(n.at);
        if n.fresh > 0 {
            self.last_fresh_at = Some(n.at);
        }
        self.last_batch_size = n.size;
        for (a, b) in self.stage_ns.iter_mut().zip(r.stage_ns) {
            *a += b;
        }
    }
}

/// The analytics gauges and correlation metrics of a batch's results.
pub(super) fn export_metrics(metrics: &Metrics, r: &StageResults, batch_size: usize) {
    if let Some(s) = &r.snapshot {
        metrics.set_analytics(s);
    }
    metrics.patterns.reset();
    let findings = super::record::findings(r);
    for f in findings {
        metrics.patterns.with_label_values(&[&f.name]).inc();
        if f.alert {
            metrics.alerts.with_label_values(&[&f.name]).inc();
        }
    }
    let score = r.correlation.as_ref().map(|c| c.score).unwrap_or(0.0);
    metrics.correlation_score.set(score);
    metrics.batch_size.observe(batch_size as f64);
}

/// The plugins' status for GET /plugins.
pub(super) fn publish_plugins(stages: &Stages, live: &RwLock<LiveView>) {
    let list = stages
        .slots
        .iter()
        .map(|s| {
            let p = &s.plugin;
            PluginStatus {
                name: s.name.to_string(),
                stage: p.kind(),
                order: s.order,
                version: p.metadata().version.clone(),
                wit_version: p.wit_version().to_string(),
                sha256: p.sha256().to_string(),
                file: s.file.clone(),
                config_section: s.section.clone(),
                loaded_at: s.loaded_at.clone(),
                limits: p.limits(),
                stats: p.stats(),
                quarantined: stages.quarantined.contains(&s.name),
            }
        })
        .collect();
    write(live).plugins = list;
}

/// The window now, served while no events arrive (it keeps sliding).
pub(super) fn refresh_snapshot(stages: &mut Stages, metrics: &Metrics, live: &RwLock<LiveView>) {
    if let Some(s) = stages.snapshot(metrics) {
        metrics.set_analytics(&s);
        let mut view = write(live);
        view.snapshot = Some(s);
        view.snapshot_at = Some(crate::store::now_ms());
    }
}

/// The view for writing. A panic while it was held leaves it readable:
/// the view is plain data, rewritten every batch.
pub(super) fn write(live: &RwLock<LiveView>) -> std::sync::RwLockWriteGuard<'_, LiveView> {
    live.write().unwrap_or_else(|e| e.into_inner())
}
