//! Events as producers send them: the published JSON Schemas, parsing and
//! validation, the typed view the plugins get, and the ids derived from
//! them.
//!
//! - [`schema`]: the schemas in `config/schemas/`, compiled into the binary.
//! - [`parse`]: one event from JSON text to a [`ValidEvent`], or an
//!   [`EventError`] naming the problem.
//! - [`typed`]: the typed fields (`latency_ms`, `success`, ...) taken from
//!   `data`.
//! - [`ids`]: processing ids and the ids derived for Kafka messages.

pub mod ids;
pub mod parse;
pub mod schema;
pub mod typed;

pub use ids::{derived_id, processing_id, seq_of_processing_id};
pub use parse::{Acceptance, Defaults, parse, parse_with, validate};
pub use schema::{SCHEMAS, data_schema};
pub use typed::{consumer_key, typed, typed_from_text};

use hxp_plugin_sdk::{Event, EventKind};

/// Why an event was refused. The message names the problem; `field` names
/// where (a JSON pointer such as `/data/latency_ms`) when there is one.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, utoipa::ToSchema)]
#[error("{message}")]
pub struct EventError {
    pub kind: EventErrorKind,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventErrorKind {
    /// Not JSON at all (HTTP 400).
    MalformedJson,
    /// JSON, but not an event: wrong shape, schema violation (422).
    Invalid,
    /// `event_type` names no known type (422). Shown as `invalid`, as any
    /// other invalid event; the Kafka source tells it apart.
    #[serde(rename = "invalid")]
    UnknownType,
    /// The event type is switched off in `event_consumers` (422).
    Disabled,
    /// The validator failed on this event: a bug, logged with its panic
    /// (HTTP 500; Kafka: dead letter `internal_error`).
    InternalError,
}

impl EventError {
    pub(crate) fn invalid(message: String, field: Option<String>) -> EventError {
        EventError {
            kind: EventErrorKind::Invalid,
            message,
            field,
        }
    }

    fn unknown_type(message: String, field: Option<String>) -> EventError {
        EventError {
            kind: EventErrorKind::UnknownType,
            message,
            field,
        }
    }

    pub(crate) fn internal(panic: &str) -> EventError {
        tracing::error!("the event validator panicked: {panic}");
        EventError {
            kind: EventErrorKind::InternalError,
            message: format!("the validator failed on this event (a bug, logged): {panic}"),
            field: None,
        }
    }

    pub fn malformed(e: &serde_json::Error) -> EventError {
        EventError {
            kind: EventErrorKind::MalformedJson,
            message: format!("malformed JSON: {e}"),
            field: None,
        }
    }
}

/// A validated event, ready for the pipeline.
#[derive(Debug, Clone)]
pub struct ValidEvent {
    pub kind: EventKind,
    /// UUID text.
    pub id: String,
    pub time_ms: i64,
    /// The `data` object as JSON text (stored as sent, re-serialized).
    pub data: String,
    /// Typed fields for the plugins (`seq` and `payload` are filled later).
    pub typed: Event,
    /// Its watermark lane when the source has several (a Kafka partition,
    /// "topic/partition"); `None`: the source's one lane.
    pub lane: Option<std::sync::Arc<str>>,
}

#[cfg(test)]
mod proptests;
