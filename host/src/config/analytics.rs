//! `real_time_analytics` and `performance_metrics`: the analytics window and
//! its stored history.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealTimeAnalytics {
    pub enabled: bool,
    /// Sliding window, seconds.
    pub window_size: u32,
    /// Longest time, in seconds, the served analytics may go without being
    /// recomputed (they are recomputed after every batch, and on this timer
    /// when no events arrive, so the window keeps sliding).
    pub update_interval: u64,
    /// Per-event-type breakdown in /analytics.
    pub aggregation_enabled: bool,
    /// Metrics shown by /analytics (all are computed).
    pub metrics: Vec<String>,
}

impl Default for RealTimeAnalytics {
    fn default() -> Self {
        RealTimeAnalytics {
            enabled: true,
            window_size: 300,
            update_interval: 10,
            aggregation_enabled: true,
            metrics: [
                "throughput",
                "latency",
                "error_rate",
                "user_satisfaction",
                "business_value",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerformanceMetrics {
    pub calculation_enabled: bool,
    /// Seconds between analytics history snapshots (and metric pushes).
    pub update_interval: u64,
    /// Seconds of analytics history kept in the database.
    pub history_retention: u64,
    pub aggregation_enabled: bool,
    pub metrics: Vec<String>,
}

impl Default for PerformanceMetrics {
    fn default() -> Self {
        PerformanceMetrics {
            calculation_enabled: true,
            update_interval: 5,
            history_retention: 3600,
            aggregation_enabled: true,
            metrics: [
                "requests_per_second",
                "average_latency",
                "error_percentage",
                "cost_per_request",
                "user_satisfaction_score",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl RealTimeAnalytics {
    pub(super) fn check(&self) -> Result<(), String> {
        if self.window_size == 0 || self.window_size > 86_400 {
            return Err(
                "real_time_analytics.window_size: must be between 1 and 86400 seconds".into(),
            );
        }
        if self.update_interval == 0 {
            return Err("real_time_analytics.update_interval: must be at least 1 second".into());
        }
        Ok(())
    }
}

impl PerformanceMetrics {
    pub(super) fn check(&self) -> Result<(), String> {
        if self.update_interval == 0 {
            return Err("performance_metrics.update_interval: must be at least 1 second".into());
        }
        if self.history_retention < self.update_interval {
            return Err(
                "performance_metrics.history_retention: must be at least update_interval".into(),
            );
        }
        Ok(())
    }
}
