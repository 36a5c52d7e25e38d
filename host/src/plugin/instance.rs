//! One live plugin: its store and instance, bounded calls, and recovery.
//!
//! Every call runs under an epoch deadline and a memory limit. When a call
//! traps, times out, hits the limit or returns something invalid, the
//! instance is discarded; the next call re-creates it from the pre-instantiated
//! component, re-applies the last accepted config and the last checkpointed
//! state, and carries on.

use super::bindings::{analytics, convert, correlation, responses, types};
use super::engine::{EPOCH_TICK, LoadedComponent, PluginEngine, PluginKind, Pre};
use super::error::{Failure, PluginError};
use super::state::{Clock, HostState};
use hxp_plugin_sdk::Metadata;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::Store;

/// Results larger than these are refused (and the instance discarded).
pub const MAX_FINDINGS: usize = 10_000;
pub const MAX_EVIDENCE: usize = 1_000;
pub const MAX_ACTIONS: usize = 1_000;
pub const MAX_SERVICES: usize = 100_000;
pub const MAX_STATE_BYTES: usize = 256 << 20;

/// Per-plugin bounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget of one call, in milliseconds.
    pub deadline_ms: u64,
    /// Largest linear memory, in MiB.
    pub memory_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            deadline_ms: 1000,
            memory_mb: 128,
        }
    }
}

impl Limits {
    /// Reject bounds too small to run anything. `key` names them in the
    /// message.
    pub fn check(&self, key: &str) -> Result<(), String> {
        if self.deadline_ms == 0 || self.memory_mb < 4 {
            return Err(format!(
                "{key}: deadline_ms must be at least 1 and memory_mb at least 4"
            ));
        }
        Ok(())
    }

    fn ticks(&self) -> u64 {
        (self.deadline_ms as u128).div_ceil(EPOCH_TICK.as_millis().max(1)) as u64
    }

    pub fn memory_bytes(&self) -> usize {
        (self.memory_mb as usize) << 20
    }
}

/// Counters for GET /plugins and /metrics.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct CallStats {
    pub calls: u64,
    pub errors: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub memory_limits: u64,
    pub bad_outputs: u64,
    /// Times the instance was re-created after a failure.
    pub restarts: u64,
    pub total_call_ns: u64,
    /// 99th percentile of the last calls (up to 1024), in milliseconds.
    pub p99_call_ms: f64,
    pub last_error: Option<String>,
}

/// Durations of the last calls, for percentiles.
#[derive(Debug, Clone, Default)]
struct RecentCalls {
    ns: Vec<u64>,
    next: usize,
}

impl RecentCalls {
    const KEEP: usize = 1024;

    fn push(&mut self, ns: u64) {
        if self.ns.len() < Self::KEEP {
            self.ns.push(ns);
        } else {
            self.ns[self.next] = ns;
        }
        self.next = (self.next + 1) % Self::KEEP;
    }

    fn p99_ms(&self) -> f64 {
        if self.ns.is_empty() {
            return 0.0;
        }
        let mut v = self.ns.clone();
        let i = ((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1;
        let (_, p, _) = v.select_nth_unstable(i);
        *p as f64 / 1e6
    }
}

enum Inst {
    Analytics(analytics::AnalyticsPlugin),
    Correlation(correlation::CorrelationPlugin),
    Responses(responses::ResponsesPlugin),
}

macro_rules! plugin_iface {
    ($inst:expr, |$g:ident| $body:expr) => {
        match $inst {
            Inst::Analytics(w) => {
                let $g = w.hxp_events_plugin();
                $body
            }
            Inst::Correlation(w) => {
                let $g = w.hxp_events_plugin();
                $body
            }
            Inst::Responses(w) => {
                let $g = w.hxp_events_plugin();
                $body
            }
        }
    };
}

struct Live {
    store: Store<HostState>,
    inst: Inst,
}

pub struct Plugin {
    name: Arc<str>,
    loaded: LoadedComponent,
    engine: Arc<PluginEngine>,
    limits: Limits,
    clock: Clock,
    live: Option<Live>,
    /// Last config the plugin accepted (JSON), re-applied after a restart.
    config: Option<String>,
    /// Last checkpoint (state version, bytes), loaded after a restart.
    checkpoint: Option<(u32, Vec<u8>)>,
    metadata: Metadata,
    stats: CallStats,
    recent: RecentCalls,
}

impl Plugin {
    /// Instantiate a loaded component and read its metadata.
    pub fn new(
        engine: Arc<PluginEngine>,
        loaded: LoadedComponent,
        limits: Limits,
        clock: Clock,
    ) -> Result<Plugin, PluginError> {
        let label: Arc<str> = Arc::from(loaded.origin.as_str());
        let mut p = Plugin {
            name: label,
            loaded,
            engine,
            limits,
            clock,
            live: None,
            config: None,
            checkpoint: None,
            metadata: Metadata {
                name: String::new(),
                version: String::new(),
                state_version: 0,
                wants_payload: false,
                fresh_start_ok: false,
            },
            stats: CallStats::default(),
            recent: RecentCalls::default(),
        };
        let md = p.call("metadata", |store, inst| {
            plugin_iface!(inst, |g| g.call_metadata(store))
        })?;
        let md = convert::metadata_to_sdk(md);
        if md.name.is_empty() || md.name.len() > 128 {
            return Err(p.fail(
                "metadata",
                Failure::BadOutput,
                "plugin name must be 1 to 128 characters".into(),
            ));
        }
        p.name = Arc::from(md.name.as_str());
        if let Some(live) = &mut p.live {
            live.store.data_mut().plugin = p.name.clone();
        }
        p.metadata = md;
        Ok(p)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Name it after its deployment (several deployments may run the same
    /// component): errors, logs and metrics carry this name.
    pub fn set_name(&mut self, name: Arc<str>) {
        if let Some(live) = &mut self.live {
            live.store.data_mut().plugin = name.clone();
        }
        self.name = name;
    }

    pub fn kind(&self) -> PluginKind {
        self.loaded.kind
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn loaded(&self) -> &LoadedComponent {
        &self.loaded
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Traps, timeouts and memory-limit hits so far.
    pub fn failures(&self) -> u64 {
        self.stats.traps + self.stats.timeouts + self.stats.memory_limits
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.stats.calls
    }

    /// Failed calls of any kind so far (bad output and refusals too).
    pub fn errors(&self) -> u64 {
        self.stats.errors
    }

    /// Counters, with the percentile of the recent calls filled in.
    pub fn stats(&self) -> CallStats {
        CallStats {
            p99_call_ms: self.recent.p99_ms(),
            ..self.stats.clone()
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Log lines the plugin wrote beyond its per-call allowance.
    pub fn logs_dropped(&self) -> u64 {
        self.live
            .as_ref()
            .map(|l| l.store.data().logs_dropped)
            .unwrap_or(0)
    }

    fn fail(&mut self, call: &'static str, failure: Failure, message: String) -> PluginError {
        let e = PluginError {
            plugin: self.name.to_string(),
            call,
            failure,
            message,
        };
        self.stats.errors += 1;
        match e.failure {
            Failure::Timeout => self.stats.timeouts += 1,
            Failure::MemoryLimit => self.stats.memory_limits += 1,
            Failure::Trap | Failure::Instantiate => self.stats.traps += 1,
            Failure::BadOutput => self.stats.bad_outputs += 1,
            Failure::Rejected => {}
        }
        if e.poisoned() {
            self.live = None;
        }
        self.stats.last_error = Some(e.to_string());
        tracing::warn!(plugin = %self.name, call, failure = ?e.failure, "{e}");
        e
    }

    fn new_store(&self) -> Store<HostState> {
        let mut store = Store::new(
            self.engine.engine(),
            HostState::new(
                self.name.clone(),
                self.clock.clone(),
                self.limits.memory_bytes(),
            ),
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        store
    }

    /// Create the instance if there is none (first call, or after a failure).
    fn ensure_live(&mut self) -> Result<(), PluginError> {
        if self.live.is_some() {
            return Ok(());
        }
        let mut store = self.new_store();
        store.set_epoch_deadline(self.limits.ticks());
        let inst = match &self.loaded.pre {
            Pre::Analytics(p) => p.instantiate(&mut store).map(Inst::Analytics),
            Pre::Correlation(p) => p.instantiate(&mut store).map(Inst::Correlation),
            Pre::Responses(p) => p.instantiate(&mut store).map(Inst::Responses),
        };
        let inst = match inst {
            Ok(i) => i,
            Err(e) => {
                let msg = self.explain(&store, e);
                return Err(self.fail("instantiate", msg.0, msg.1));
            }
        };
        let restarted = self.stats.calls > 0;
        self.live = Some(Live { store, inst });
        if restarted {
            self.stats.restarts += 1;
            // Back to the last known-good config and state.
            if let Some(cfg) = self.config.clone() {
                self.configure_inner(&cfg)?;
            }
            if let Some((v, s)) = self.checkpoint.clone() {
                self.load_state_inner(v, &s)?;
            }
        }
        Ok(())
    }

    /// Turn a wasmtime error into (failure, message), with the guest's
    /// stderr (a panic message) when there is one.
    fn explain(&self, store: &Store<HostState>, e: wasmtime::Error) -> (Failure, String) {
        let stderr = store.data().stderr.take();
        let stderr = stderr.trim();
        if let Some(wasmtime::Trap::Interrupt) = e.downcast_ref::<wasmtime::Trap>() {
            return (
                Failure::Timeout,
                format!("stopped at its {} ms deadline", self.limits.deadline_ms),
            );
        }
        if store.data().limiter.hit {
            return (
                Failure::MemoryLimit,
                format!("memory limit is {} MiB", self.limits.memory_mb),
            );
        }
        let mut msg = match e.downcast_ref::<wasmtime::Trap>() {
            Some(t) => t.to_string(),
            None => e.to_string(),
        };
        if !stderr.is_empty() {
            // The last lines that say something: a Rust panic is one or
            // two, SpiderMonkey (JavaScript) puts a stack and "Redirecting
            // call to abort()" after the message.
            let said = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
            let last: Vec<&str> = said.rev().take(8).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            msg = format!("{msg} (guest stderr: {})", last.join(" | "));
        }
        (Failure::Trap, msg)
    }

    /// Run `f` against the instance under the deadline, mapping failures.
    fn call<R>(
        &mut self,
        call: &'static str,
        f: impl FnOnce(&mut Store<HostState>, &Inst) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.ensure_live()?;
        let ticks = self.limits.ticks();
        let live = self.live.as_mut().expect("ensured");
        live.store.set_epoch_deadline(ticks);
        {
            let d = live.store.data_mut();
            d.limiter.hit = false;
            d.logs_this_call = 0;
        }
        let started = Instant::now();
        let r = f(&mut live.store, &live.inst);
        let ns = started.elapsed().as_nanos() as u64;
        self.stats.calls += 1;
        self.stats.total_call_ns += ns;
        self.recent.push(ns);
        match r {
            Ok(v) => Ok(v),
            Err(e) => {
                let (failure, message) = self.explain(&self.live.as_ref().expect("live").store, e);
                Err(self.fail(call, failure, message))
            }
        }
    }

    fn wrong_kind(&mut self, call: &'static str, want: PluginKind) -> PluginError {
        PluginError {
            plugin: self.name.to_string(),
            call,
            failure: Failure::Rejected,
            message: format!("is a {} plugin, not {want}", self.kind()),
        }
    }

    /// Apply a config section (JSON). A refusal keeps the previous config.
    pub fn configure(&mut self, config_json: &str) -> Result<(), PluginError> {
        self.ensure_live()?;
        self.configure_inner(config_json)
    }

    fn configure_inner(&mut self, config_json: &str) -> Result<(), PluginError> {
        let r = self.call("configure", |store, inst| {
            plugin_iface!(inst, |g| g.call_configure(store, config_json))
        })?;
        match r {
            Ok(()) => {
                self.config = Some(config_json.to_string());
                Ok(())
            }
            Err(msg) => Err(self.fail("configure", Failure::Rejected, msg)),
        }
    }

    /// The plugin's state and its layout version.
    pub fn save_state(&mut self) -> Result<(u32, Vec<u8>), PluginError> {
        let bytes = self.call("save-state", |store, inst| {
            plugin_iface!(inst, |g| g.call_save_state(store))
        })?;
        if bytes.len() > MAX_STATE_BYTES {
            return Err(self.fail(
                "save-state",
                Failure::BadOutput,
                format!(
                    "state of {} bytes is over the {} byte limit",
                    bytes.len(),
                    MAX_STATE_BYTES
                ),
            ));
        }
        Ok((self.metadata.state_version, bytes))
    }

    /// Save the state and keep it as the restart point.
    pub fn checkpoint(&mut self) -> Result<(u32, Vec<u8>), PluginError> {
        let s = self.save_state()?;
        self.checkpoint = Some(s.clone());
        Ok(s)
    }

    pub fn load_state(&mut self, version: u32, state: &[u8]) -> Result<(), PluginError> {
        self.ensure_live()?;
        self.load_state_inner(version, state)?;
        self.checkpoint = Some((version, state.to_vec()));
        Ok(())
    }

    fn load_state_inner(&mut self, version: u32, state: &[u8]) -> Result<(), PluginError> {
        let r = self.call("load-state", |store, inst| {
            plugin_iface!(inst, |g| g.call_load_state(store, version, state))
        })?;
        r.map_err(|msg| self.fail("load-state", Failure::Rejected, msg))
    }

    /// analytics.process
    pub fn analytics_process(&mut self, events: &types::EventBatch) -> Result<(), PluginError> {
        if self.kind() != PluginKind::Analytics {
            return Err(self.wrong_kind("process", PluginKind::Analytics));
        }
        self.call("process", |store, inst| match inst {
            Inst::Analytics(w) => w.hxp_events_analytics().call_process(store, events),
            _ => unreachable!("kind checked"),
        })
    }

    /// analytics.snapshot
    pub fn analytics_snapshot(&mut self) -> Result<types::WindowSnapshot, PluginError> {
        if self.kind() != PluginKind::Analytics {
            return Err(self.wrong_kind("snapshot", PluginKind::Analytics));
        }
        let s = self.call("snapshot", |store, inst| match inst {
            Inst::Analytics(w) => w.hxp_events_analytics().call_snapshot(store),
            _ => unreachable!("kind checked"),
        })?;
        if s.per_kind.len() > 5 || s.services.len() > MAX_SERVICES {
            return Err(self.fail(
                "snapshot",
                Failure::BadOutput,
                format!(
                    "{} per-type entries and {} services (limits 5 and {MAX_SERVICES})",
                    s.per_kind.len(),
                    s.services.len()
                ),
            ));
        }
        Ok(s)
    }

    /// correlation.process
    pub fn correlation_process(
        &mut self,
        events: &types::EventBatch,
    ) -> Result<types::CorrelationResult, PluginError> {
        if self.kind() != PluginKind::Correlation {
            return Err(self.wrong_kind("process", PluginKind::Correlation));
        }
        let r = self.call("process", |store, inst| match inst {
            Inst::Correlation(w) => w.hxp_events_correlation().call_process(store, events),
            _ => unreachable!("kind checked"),
        })?;
        let evidence = r
            .findings
            .iter()
            .map(|f| f.evidence.len())
            .max()
            .unwrap_or(0);
        if r.findings.len() > MAX_FINDINGS || evidence > MAX_EVIDENCE {
            return Err(self.fail(
                "process",
                Failure::BadOutput,
                format!(
                    "{} findings, up to {evidence} evidence entries each (limits {MAX_FINDINGS} and {MAX_EVIDENCE})",
                    r.findings.len()
                ),
            ));
        }
        if !r.correlation_score.is_finite() {
            return Err(self.fail(
                "process",
                Failure::BadOutput,
                "correlation score is not a number".into(),
            ));
        }
        Ok(r)
    }

    /// responses.decide
    pub fn responses_decide(
        &mut self,
        input: &types::ResponseInput,
    ) -> Result<Vec<types::ActionRequest>, PluginError> {
        if self.kind() != PluginKind::Responses {
            return Err(self.wrong_kind("decide", PluginKind::Responses));
        }
        let r = self.call("decide", |store, inst| match inst {
            Inst::Responses(w) => w.hxp_events_responses().call_decide(store, input),
            _ => unreachable!("kind checked"),
        })?;
        if r.len() > MAX_ACTIONS {
            return Err(self.fail(
                "decide",
                Failure::BadOutput,
                format!("{} action requests (limit {MAX_ACTIONS})", r.len()),
            ));
        }
        Ok(r)
    }
}

/// How long calls took, for reporting.
pub fn mean_call_time(stats: &CallStats) -> Duration {
    Duration::from_nanos(stats.total_call_ns.checked_div(stats.calls).unwrap_or(0))
}
