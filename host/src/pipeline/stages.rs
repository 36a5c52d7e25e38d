//! The deployed plugins of the three stages and one batch's run through
//! them: every analytics plugin sees the batch (the first in order serves
//! the window), correlation findings merge (the score is the highest),
//! silences and inhibition hold some back ([`super::suppress`]), response
//! requests concatenate. A failing plugin costs its own result, never the
//! batch.

use super::suppress::{Holds, Key, Suppressor};
use crate::plugin::{CallStats, Clock, Limits, Plugin, PluginError, PluginKind, convert, types};
use crate::telemetry::Metrics;
use hxp_plugin_sdk::{ActionRequest, Finding, Metadata, Snapshot};
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

/// What the processor needs of a plugin. The WebAssembly [`Plugin`] is the
/// one implementation the service runs; unit tests drive the processor
/// with scripted fakes.
pub trait Stage: Send {
    fn name(&self) -> &str;
    fn kind(&self) -> PluginKind;
    fn metadata(&self) -> &Metadata;
    /// `hxp:events` version and SHA-256 of the component (GET /plugins).
    fn wit_version(&self) -> &str;
    fn sha256(&self) -> &str;
    fn limits(&self) -> Limits;
    fn stats(&self) -> CallStats;
    /// Traps, timeouts and memory-limit hits so far: what quarantine
    /// counts, read after every batch (cheaper than `stats`).
    fn failures(&self) -> u64;
    /// Failed calls of any kind so far (bad output too): what a backtest
    /// counts.
    fn errors(&self) -> u64;
    /// Calls so far.
    fn calls(&self) -> u64;
    fn configure(&mut self, config_json: &str) -> Result<(), PluginError>;
    fn save_state(&mut self) -> Result<(u32, Vec<u8>), PluginError>;
    fn load_state(&mut self, version: u32, state: &[u8]) -> Result<(), PluginError>;
    /// Save the state and keep it as the restart point.
    fn checkpoint(&mut self) -> Result<(u32, Vec<u8>), PluginError>;
    fn analytics_process(&mut self, batch: &types::EventBatch) -> Result<(), PluginError>;
    fn analytics_snapshot(&mut self) -> Result<types::WindowSnapshot, PluginError>;
    fn correlation_process(
        &mut self,
        batch: &types::EventBatch,
    ) -> Result<types::CorrelationResult, PluginError>;
    fn responses_decide(
        &mut self,
        input: &types::ResponseInput,
    ) -> Result<Vec<types::ActionRequest>, PluginError>;
}

impl Stage for Plugin {
    fn name(&self) -> &str {
        Plugin::name(self)
    }
    fn kind(&self) -> PluginKind {
        Plugin::kind(self)
    }
    fn metadata(&self) -> &Metadata {
        Plugin::metadata(self)
    }
    fn wit_version(&self) -> &str {
        &self.loaded().wit_version
    }
    fn sha256(&self) -> &str {
        &self.loaded().hash
    }
    fn limits(&self) -> Limits {
        Plugin::limits(self)
    }
    fn stats(&self) -> CallStats {
        Plugin::stats(self)
    }
    fn failures(&self) -> u64 {
        Plugin::failures(self)
    }
    fn errors(&self) -> u64 {
        Plugin::errors(self)
    }
    fn calls(&self) -> u64 {
        Plugin::calls(self)
    }
    fn configure(&mut self, config_json: &str) -> Result<(), PluginError> {
        Plugin::configure(self, config_json)
    }
    fn save_state(&mut self) -> Result<(u32, Vec<u8>), PluginError> {
        Plugin::save_state(self)
    }
    fn load_state(&mut self, version: u32, state: &[u8]) -> Result<(), PluginError> {
        Plugin::load_state(self, version, state)
    }
    fn checkpoint(&mut self) -> Result<(u32, Vec<u8>), PluginError> {
        Plugin::checkpoint(self)
    }
    fn analytics_process(&mut self, batch: &types::EventBatch) -> Result<(), PluginError> {
        Plugin::analytics_process(self, batch)
    }
    fn analytics_snapshot(&mut self) -> Result<types::WindowSnapshot, PluginError> {
        Plugin::analytics_snapshot(self)
    }
    fn correlation_process(
        &mut self,
        batch: &types::EventBatch,
    ) -> Result<types::CorrelationResult, PluginError> {
        Plugin::correlation_process(self, batch)
    }
    fn responses_decide(
        &mut self,
        input: &types::ResponseInput,
    ) -> Result<Vec<types::ActionRequest>, PluginError> {
        Plugin::responses_decide(self, input)
    }
}

/// One deployed plugin: the instance and where it came from.
pub struct Slot {
    /// Deployment name (manifest `name`, else the file name without
    /// `.wasm`): state, metrics and the API key by it.
    pub name: Arc<str>,
    pub plugin: Box<dyn Stage>,
    /// Position within its stage (lower first; ties by name).
    pub order: i32,
    pub file: String,
    /// The config section it was configured with, and that section's JSON.
    pub section: String,
    pub section_json: String,
    pub loaded_at: String,
}

/// Which stages run (the config's `enabled` switches).
#[derive(Debug, Clone, Copy)]
pub struct Switches {
    pub analytics: bool,
    pub correlation: bool,
    pub responses: bool,
}

impl Switches {
    pub fn of(c: &crate::config::Config) -> Switches {
        Switches {
            analytics: c.real_time_analytics.enabled,
            correlation: c.event_correlation.enabled,
            responses: c.automated_response.enabled,
        }
    }
}

/// One batch's results from the three stages.
#[derive(Debug, Default)]
pub struct StageResults {
    /// The window served (the first analytics plugin's), after the batch.
    pub snapshot: Option<Snapshot>,
    /// All correlation plugins' findings, when any correlation plugin ran.
    pub correlation: Option<Correlated>,
    pub actions: Vec<ActionRequest>,
    /// A responses plugin was asked (the record then has a response part).
    pub responding: bool,
    /// Nanoseconds per stage: analytics, correlation, responses.
    pub stage_ns: [u64; 3],
}

/// The merged correlation result.
#[derive(Debug, Default)]
pub struct Correlated {
    /// Every finding; those held back have `alert` false.
    pub findings: Vec<Finding>,
    pub score: f64,
    /// What held back which of `findings` (by position).
    pub holds: Holds,
}

impl Correlated {
    /// The findings not held back: what the responses plugins saw.
    pub fn unheld(&self) -> impl Iterator<Item = &Finding> {
        let holds = &self.holds;
        (self.findings.iter().enumerate())
            .filter(move |(i, _)| holds.get(*i).is_none())
            .map(|(_, f)| f)
    }
}

/// One live plugin's part of the merged result: where its findings are,
/// and its score (`None`: its call failed).
type Part = Option<(Range<usize>, f64)>;

/// The merged correlation result of the live plugins, before conversion.
struct Merged {
    result: types::CorrelationResult,
    holds: Holds,
}

/// The deployed plugins, by stage then order.
pub struct Stages {
    pub(super) slots: Vec<Slot>,
    pub clock: Clock,
    /// Which version of each plugin runs (JSON object), stored with every
    /// batch.
    pub(super) versions: String,
    /// Plugins taken out by quarantine: not called until a deployment
    /// replaces or removes them.
    pub(super) quarantined: std::collections::BTreeSet<Arc<str>>,
    /// Candidates running in the shadow of the live plugin of their name.
    pub(super) shadows: std::collections::BTreeMap<Arc<str>, super::shadow::Shadow>,
    /// Silences and inhibit rules, applied between correlation and
    /// responses.
    pub suppressor: Suppressor,
}

impl Stages {
    pub fn new(slots: Vec<Slot>, clock: Clock) -> Stages {
        let mut s = Stages {
            slots,
            clock,
            versions: String::new(),
            quarantined: Default::default(),
            shadows: Default::default(),
            suppressor: Suppressor::default(),
        };
        s.sort();
        s
    }

    /// Keep the order (after any change), and the version list.
    pub(super) fn sort(&mut self) {
        self.slots.sort_by(|a, b| {
            (a.plugin.kind() as u8, a.order, &a.name).cmp(&(
                b.plugin.kind() as u8,
                b.order,
                &b.name,
            ))
        });
        let m: serde_json::Map<String, serde_json::Value> = self
            .slots
            .iter()
            .map(|s| {
                (
                    s.name.to_string(),
                    s.plugin.metadata().version.clone().into(),
                )
            })
            .collect();
        self.versions = serde_json::Value::Object(m).to_string();
    }

    pub(super) fn plugins_mut(&mut self) -> impl Iterator<Item = &mut Box<dyn Stage>> {
        self.slots.iter_mut().map(|s| &mut s.plugin)
    }

    /// The plugins of one stage, in order (without quarantined ones).
    pub(super) fn stage_mut(
        &mut self,
        kind: PluginKind,
    ) -> impl Iterator<Item = &mut Box<dyn Stage>> {
        live_slots(&mut self.slots, &self.quarantined, kind).map(|s| &mut s.plugin)
    }

    pub(super) fn has(&self, kind: PluginKind) -> bool {
        self.slots.iter().any(|s| s.plugin.kind() == kind)
    }

    pub(super) fn position(&self, name: &str) -> Option<usize> {
        self.slots.iter().position(|s| &*s.name == name)
    }

    /// Run a batch through the stages that are switched on; `now` is the
    /// batch's time (what the responses plugin sees, and the event time
    /// silences are judged at).
    pub(super) fn run(
        &mut self,
        batch: &types::EventBatch,
        now: i64,
        on: Switches,
        metrics: &Metrics,
    ) -> StageResults {
        let mut ns = [0u64; 3];
        let snapshot = if on.analytics {
            self.analytics(batch, metrics, &mut ns[0])
        } else {
            None
        };
        let correlation = if on.correlation {
            self.correlation(batch, now, metrics, &mut ns[1])
        } else {
            None
        };
        for held in correlation.iter().flat_map(|c| c.holds.iter()) {
            let reason = held.reason.label();
            metrics
                .findings_suppressed
                .with_label_values(&[reason])
                .inc();
        }
        let responding = on.responses && self.has(PluginKind::Responses);
        let actions = match (responding, &snapshot) {
            (true, Some(s)) => {
                let input = types::ResponseInput {
                    time_ms: now,
                    analytics: s.clone(),
                    findings: correlation.as_ref().map(unheld).unwrap_or_default(),
                };
                self.responses(batch, &input, metrics, &mut ns[2])
            }
            _ => Vec::new(),
        };
        StageResults {
            snapshot: snapshot.map(convert::snapshot_to_sdk),
            correlation: correlation.map(|c| Correlated {
                findings: (c.result.findings.into_iter())
                    .map(convert::finding_to_sdk)
                    .collect(),
                score: c.result.correlation_score,
                holds: c.holds,
            }),
            actions,
            responding,
            stage_ns: ns,
        }
    }

    /// Every analytics plugin processes the batch; the first one's window
    /// is served and handed to responses. A shadow runs after its live
    /// version (also when that failed).
    fn analytics(
        &mut self,
        batch: &types::EventBatch,
        metrics: &Metrics,
        ns: &mut u64,
    ) -> Option<types::WindowSnapshot> {
        let mut snapshot = None;
        for slot in live_slots(&mut self.slots, &self.quarantined, PluginKind::Analytics) {
            let s = timed(metrics, slot.plugin.as_mut(), "process", ns, |a| {
                a.analytics_process(batch)
                    .and_then(|_| a.analytics_snapshot())
            });
            if let Some(shadow) = self.shadows.get_mut(&slot.name) {
                shadow.analytics(batch, s.as_ref(), metrics);
            }
            if snapshot.is_none() {
                snapshot = s;
            }
        }
        snapshot
    }

    /// Findings of every correlation plugin, in order; the highest score;
    /// then what the silences and inhibit rules hold back at `now`. A
    /// shadow runs once the live plugins have (inhibition looks at the
    /// whole batch), and is compared after the same suppression.
    fn correlation(
        &mut self,
        batch: &types::EventBatch,
        now: i64,
        metrics: &Metrics,
        ns: &mut u64,
    ) -> Option<Merged> {
        let mut all: Option<types::CorrelationResult> = None;
        // Shadowed plugins: where their findings are in `all`, and score.
        let mut shadowed: Vec<(Arc<str>, Part)> = Vec::new();
        for slot in live_slots(&mut self.slots, &self.quarantined, PluginKind::Correlation) {
            let r = timed(metrics, slot.plugin.as_mut(), "process", ns, |c| {
                c.correlation_process(batch)
            });
            let start = all.as_ref().map_or(0, |a| a.findings.len());
            let span = r
                .as_ref()
                .map(|r| (start..start + r.findings.len(), r.correlation_score));
            if self.shadows.contains_key(&slot.name) {
                shadowed.push((slot.name.clone(), span));
            }
            let Some(r) = r else { continue };
            match &mut all {
                None => all = Some(r),
                Some(all) => {
                    all.findings.extend(r.findings);
                    all.correlation_score = all.correlation_score.max(r.correlation_score);
                }
            }
        }
        let merged = all.map(|mut result| {
            let holds = self.suppressor.apply(&mut result.findings, &[], now);
            Merged { result, holds }
        });
        for (name, span) in shadowed {
            let findings = merged.as_ref().map_or(&[][..], |m| &m.result.findings[..]);
            self.shadow_correlation(batch, (&name, span), findings, now, metrics);
        }
        merged
    }

    /// The shadow of `name` on the batch, against its live version's part
    /// (`span` of the batch's `findings`, as held back there): both sides
    /// after suppression, the shadow's inhibited by the others' findings
    /// too.
    fn shadow_correlation(
        &mut self,
        batch: &types::EventBatch,
        (name, span): (&Arc<str>, Part),
        findings: &[types::Finding],
        now: i64,
        metrics: &Metrics,
    ) {
        let Some(shadow) = self.shadows.get_mut(name) else {
            return;
        };
        let range = span.as_ref().map_or(0..0, |(r, _)| r.clone());
        let live = span.map(|(r, score)| types::CorrelationResult {
            findings: findings[r].to_vec(),
            correlation_score: score,
        });
        let others = findings[..range.start].iter().chain(&findings[range.end..]);
        let context: Vec<Key> = others.map(Key::of).collect();
        let suppressor = &self.suppressor;
        let suppress = |r: &mut types::CorrelationResult| {
            suppressor.apply(&mut r.findings, &context, now);
        };
        shadow.correlation(batch, live.as_ref(), metrics, suppress);
    }

    /// Each responses plugin decides on the window and all findings; their
    /// requests are concatenated.
    fn responses(
        &mut self,
        batch: &types::EventBatch,
        input: &types::ResponseInput,
        metrics: &Metrics,
        ns: &mut u64,
    ) -> Vec<ActionRequest> {
        let mut actions = Vec::new();
        for slot in live_slots(&mut self.slots, &self.quarantined, PluginKind::Responses) {
            let a = timed(metrics, slot.plugin.as_mut(), "decide", ns, |r| {
                r.responses_decide(input)
            });
            if let Some(shadow) = self.shadows.get_mut(&slot.name) {
                shadow.responses(batch, input, a.as_deref(), metrics);
            }
            let Some(a) = a else { continue };
            actions.extend(a.into_iter().map(convert::action_to_sdk));
        }
        actions
    }

    /// The first analytics plugin's window now (when idle: the window
    /// slides without events).
    pub(super) fn snapshot(&mut self, metrics: &Metrics) -> Option<Snapshot> {
        let a = self.stage_mut(PluginKind::Analytics).next()?;
        match a.analytics_snapshot() {
            Ok(s) => Some(convert::snapshot_to_sdk(s)),
            Err(e) => {
                record_failure(metrics, &e);
                None
            }
        }
    }
}

/// The findings the responses plugins are given: those not held back.
fn unheld(m: &Merged) -> Vec<types::Finding> {
    let all = m.result.findings.iter().enumerate();
    all.filter(|(i, _)| m.holds.get(*i).is_none())
        .map(|(_, f)| f.clone())
        .collect()
}

/// The slots of one stage, in order, without quarantined ones. (A
/// function of the fields, so that a loop over them can reach the
/// shadows too.)
fn live_slots<'a>(
    slots: &'a mut [Slot],
    quarantined: &'a std::collections::BTreeSet<Arc<str>>,
    kind: PluginKind,
) -> impl Iterator<Item = &'a mut Slot> {
    slots
        .iter_mut()
        .filter(move |s| s.plugin.kind() == kind && !quarantined.contains(&s.name))
}

/// One plugin call, timed once: its histogram, the stage's nanoseconds,
/// and its failure if it failed.
fn timed<R>(
    metrics: &Metrics,
    plugin: &mut dyn Stage,
    op: &str,
    stage_ns: &mut u64,
    call: impl FnOnce(&mut dyn Stage) -> Result<R, PluginError>,
) -> Option<R> {
    let t = Instant::now();
    let r = call(plugin);
    let d = t.elapsed();
    *stage_ns += d.as_nanos() as u64;
    metrics
        .plugin
        .call
        .with_label_values(&[plugin.name(), op])
        .observe(d.as_secs_f64());
    r.map_err(|e| record_failure(metrics, &e)).ok()
}

/// Count a failed call by plugin and failure kind.
pub(super) fn record_failure(metrics: &Metrics, e: &PluginError) {
    metrics
        .plugin
        .failures
        .with_label_values(&[&e.plugin, e.failure.as_str()])
        .inc();
}
