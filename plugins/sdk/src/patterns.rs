//! Settings of the correlation plugin's built-in pattern detectors (the
//! `event_correlation.patterns` config section), with their defaults. Here
//! so that the plugin and the host (GET /correlations/config) share them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PatternConfig {
    pub error_burst: ErrorBurst,
    pub latency_spike: LatencySpike,
    pub model_divergence: ModelDivergence,
}

impl Default for ErrorBurst {
    fn default() -> Self {
        ErrorBurst {
            window_secs: 10,
            min_errors: 5,
        }
    }
}

impl Default for LatencySpike {
    fn default() -> Self {
        LatencySpike {
            recent_secs: 5,
            min_recent: 5,
            min_baseline: 20,
            sigma: 3.0,
            factor: 2.0,
        }
    }
}

impl Default for ModelDivergence {
    fn default() -> Self {
        ModelDivergence {
            min_requests: 20,
            min_difference: 0.1,
            z: 3.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorBurst {
    pub window_secs: u32,
    pub min_errors: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencySpike {
    pub recent_secs: u32,
    pub min_recent: u32,
    pub min_baseline: u32,
    pub sigma: f64,
    pub factor: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelDivergence {
    pub min_requests: u32,
    pub min_difference: f64,
    pub z: f64,
}
