//! Scripted stage plugins for the pipeline's unit tests: each records the
//! sequence numbers it was given and answers what the test set.

use super::stages::{Slot, Stage};
use crate::plugin::{CallStats, Failure, Limits, PluginError, PluginKind, convert, types};
use hxp_plugin_sdk::{ActionRequest, Finding, Metadata, Snapshot, Stats};
use std::sync::{Arc, Mutex};

/// What a fake answers, and what it saw.
pub struct Fake {
    pub name: String,
    pub kind: PluginKind,
    pub metadata: Metadata,
    /// Sequence numbers of the events of each batch it processed.
    pub seen: Arc<Mutex<Vec<Vec<u64>>>>,
    /// Analytics: the window's `count` is this plus the events seen.
    pub base_count: u64,
    /// Correlation: its findings and score.
    pub findings: Vec<Finding>,
    pub score: f64,
    /// Responses: its requests.
    pub actions: Vec<ActionRequest>,
    /// Responses: the names of the findings each decision was given.
    pub given: Arc<Mutex<Vec<Vec<String>>>>,
    /// Every process/decide call fails (a trap).
    pub fails: bool,
    /// Traps so far, as its stats report them (tests may add to it).
    pub traps: Arc<std::sync::atomic::AtomicU64>,
}

impl Fake {
    pub fn new(name: &str, kind: PluginKind) -> Fake {
        Fake {
            name: name.into(),
            kind,
            metadata: Metadata {
                name: name.into(),
                version: "1.0.0".into(),
                state_version: 1,
                wants_payload: false,
                fresh_start_ok: false,
            },
            seen: Arc::default(),
            base_count: 0,
            findings: Vec::new(),
            score: 0.0,
            actions: Vec::new(),
            given: Arc::default(),
            fails: false,
            traps: Arc::default(),
        }
    }

    /// In a slot of this order.
    pub fn slot(self, order: i32) -> Slot {
        Slot {
            name: Arc::from(self.name.as_str()),
            plugin: Box::new(self),
            order,
            file: String::new(),
            section: String::new(),
            section_json: "{}".into(),
            loaded_at: String::new(),
        }
    }

    fn trap(&self, call: &'static str) -> PluginError {
        self.traps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PluginError {
            plugin: self.name.clone(),
            call,
            failure: Failure::Trap,
            message: "scripted failure".into(),
        }
    }

    fn see(&self, batch: &types::EventBatch) -> Result<(), PluginError> {
        if self.fails {
            return Err(self.trap("process"));
        }
        self.seen.lock().unwrap().push(batch.seq.clone());
        Ok(())
    }

    fn events_seen(&self) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|b| b.len() as u64)
            .sum()
    }
}

/// A finding of a rule.
pub fn finding(name: &str, alert: bool, score: f64) -> Finding {
    Finding {
        name: name.into(),
        source: "rule".into(),
        subject: "all".into(),
        alert,
        occurrences: 1,
        score,
        message: format!("{name} fired"),
        evidence: Vec::new(),
    }
}

/// A request for an action.
pub fn action(rule: &str, action: &str) -> ActionRequest {
    ActionRequest {
        rule: rule.into(),
        action: action.into(),
        target: "all".into(),
        parameters: "{}".into(),
        reason: format!("{rule} fired"),
    }
}

impl Stage for Fake {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> PluginKind {
        self.kind
    }
    fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    fn wit_version(&self) -> &str {
        "0.1.0"
    }
    fn sha256(&self) -> &str {
        "fake"
    }
    fn limits(&self) -> Limits {
        Limits::default()
    }
    fn failures(&self) -> u64 {
        self.traps.load(std::sync::atomic::Ordering::Relaxed)
    }
    fn errors(&self) -> u64 {
        self.failures()
    }
    fn calls(&self) -> u64 {
        self.seen.lock().unwrap().len() as u64 + self.failures()
    }
    fn stats(&self) -> CallStats {
        CallStats {
            traps: self.traps.load(std::sync::atomic::Ordering::Relaxed),
            ..CallStats::default()
        }
    }
    fn configure(&mut self, _config_json: &str) -> Result<(), PluginError> {
        Ok(())
    }
    fn save_state(&mut self) -> Result<(u32, Vec<u8>), PluginError> {
        Ok((1, self.events_seen().to_be_bytes().to_vec()))
    }
    fn load_state(&mut self, _version: u32, _state: &[u8]) -> Result<(), PluginError> {
        Ok(())
    }
    fn checkpoint(&mut self) -> Result<(u32, Vec<u8>), PluginError> {
        self.save_state()
    }
    fn analytics_process(&mut self, batch: &types::EventBatch) -> Result<(), PluginError> {
        self.see(batch)
    }
    fn analytics_snapshot(&mut self) -> Result<types::WindowSnapshot, PluginError> {
        let overall = Stats {
            count: self.base_count + self.events_seen(),
            ..Stats::default()
        };
        Ok(convert::snapshot_to_wit(Snapshot {
            overall,
            ..Snapshot::default()
        }))
    }
    fn correlation_process(
        &mut self,
        batch: &types::EventBatch,
    ) -> Result<types::CorrelationResult, PluginError> {
        self.see(batch)?;
        Ok(types::CorrelationResult {
            findings: self
                .findings
                .iter()
                .cloned()
                .map(convert::finding_to_wit)
                .collect(),
            correlation_score: self.score,
        })
    }
    fn responses_decide(
        &mut self,
        input: &types::ResponseInput,
    ) -> Result<Vec<types::ActionRequest>, PluginError> {
        if self.fails {
            return Err(self.trap("decide"));
        }
        let names = input.findings.iter().map(|f| f.name.clone()).collect();
        self.given.lock().unwrap().push(names);
        Ok(self
            .actions
            .iter()
            .cloned()
            .map(convert::action_to_wit)
            .collect())
    }
}
