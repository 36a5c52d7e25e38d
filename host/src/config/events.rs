//! `event_consumers`: which event types the service accepts.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventConsumers {
    pub llm_requests_enabled: bool,
    pub user_feedback_enabled: bool,
    pub system_metrics_enabled: bool,
    pub business_events_enabled: bool,
    pub error_events_enabled: bool,
}

impl Default for EventConsumers {
    fn default() -> Self {
        EventConsumers {
            llm_requests_enabled: true,
            user_feedback_enabled: true,
            system_metrics_enabled: true,
            business_events_enabled: true,
            error_events_enabled: true,
        }
    }
}

impl EventConsumers {
    /// Enabled flags in `EventKind` order.
    pub fn enabled(&self) -> [bool; 5] {
        [
            self.llm_requests_enabled,
            self.user_feedback_enabled,
            self.system_metrics_enabled,
            self.business_events_enabled,
            self.error_events_enabled,
        ]
    }
}
