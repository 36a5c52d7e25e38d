//! The label file of a generated scenario: which incidents were planted,
//! on which model or service, over which span of event time. Written by
//! `loadgen --scenario incidents --labels FILE`, read by `loadgen score`.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A scenario's labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labels {
    pub seed: u64,
    /// The first event's time and the end of the stream (ms since the
    /// epoch, event time).
    pub start_ms: i64,
    pub end_ms: i64,
    /// Events in the stream; a replay is complete when the service stored
    /// this many (absent in hand-written files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    pub incidents: Vec<Incident>,
}

/// One planted incident: its root cause, where, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: String,
    pub kind: Kind,
    pub key_field: KeyField,
    /// The model or service it happens to (what a keyed alert's subject
    /// must name).
    pub key: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// The root causes a scenario plants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// One model: high latency, more errors, unhappy users.
    ModelDegradation,
    /// One service: `health: failed` and error events, then healthy.
    ServiceRestart,
    /// One service's error rate creeping up, below a global threshold.
    ErrorLeak,
    /// One service's health toggling degraded/healthy.
    Flapping,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::ModelDegradation,
        Kind::ServiceRestart,
        Kind::ErrorLeak,
        Kind::Flapping,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ModelDegradation => "model_degradation",
            Kind::ServiceRestart => "service_restart",
            Kind::ErrorLeak => "error_leak",
            Kind::Flapping => "flapping",
        }
    }

    pub fn key_field(self) -> KeyField {
        match self {
            Kind::ModelDegradation => KeyField::Model,
            _ => KeyField::Service,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    Model,
    Service,
}

impl Labels {
    pub fn read(path: &Path) -> anyhow::Result<Labels> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: not a label file", path.display()))
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}
