//! Dead letters: a refused message goes, unchanged, to the dead-letter
//! topic with the reason and its origin in headers, retried until the
//! broker takes it (its offset is not stored before).

use super::message::Msg;
use crate::event::{EventError, EventErrorKind};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// Why a message was refused: the `hxp-error` header and the `reason`
/// label of `kafka_dead_letters_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Not JSON (or nested deeper than the parser allows).
    MalformedJson,
    /// `event_type` names no type of this service.
    UnknownEventType,
    /// JSON, but not a valid event (schema, id, timestamp).
    InvalidEvent,
    /// Larger than `kafka.max_message_bytes`.
    Oversized,
    /// No payload.
    Empty,
    /// The type is switched off in `event_consumers`.
    DisabledType,
    /// The validator failed on it (a bug, logged with its panic).
    InternalError,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::MalformedJson => "malformed_json",
            DeadLetterReason::UnknownEventType => "unknown_event_type",
            DeadLetterReason::InvalidEvent => "invalid_event",
            DeadLetterReason::Oversized => "oversized",
            DeadLetterReason::Empty => "empty",
            DeadLetterReason::DisabledType => "disabled_type",
            DeadLetterReason::InternalError => "internal_error",
        }
    }

    /// The reason for an event the validator refused.
    pub fn of(e: &EventError) -> DeadLetterReason {
        match e.kind {
            EventErrorKind::MalformedJson => DeadLetterReason::MalformedJson,
            EventErrorKind::UnknownType => DeadLetterReason::UnknownEventType,
            EventErrorKind::Invalid => DeadLetterReason::InvalidEvent,
            EventErrorKind::Disabled => DeadLetterReason::DisabledType,
            EventErrorKind::InternalError => DeadLetterReason::InternalError,
        }
    }
}

/// A message refused, on its way to the dead-letter topic.
pub(super) struct DeadLetter {
    pub msg: Msg,
    pub reason: DeadLetterReason,
    pub message: String,
}

/// Send one dead letter; retried until the broker takes it (its offset is
/// not stored before).
pub(super) async fn dead_letter(producer: &FutureProducer, topic: &str, d: &DeadLetter) {
    let partition = d.msg.partition.to_string();
    let offset = d.msg.offset.to_string();
    let failed_at = chrono::Utc::now().to_rfc3339();
    let mut attempt = 0u32;
    loop {
        let headers = OwnedHeaders::new_with_capacity(6)
            .insert(Header {
                key: "hxp-error",
                value: Some(d.reason.as_str()),
            })
            .insert(Header {
                key: "hxp-error-message",
                value: Some(d.message.as_str()),
            })
            .insert(Header {
                key: "hxp-origin-topic",
                value: Some(&*d.msg.topic),
            })
            .insert(Header {
                key: "hxp-origin-partition",
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: "hxp-origin-offset",
                value: Some(offset.as_str()),
            })
            .insert(Header {
                key: "hxp-failed-at",
                value: Some(failed_at.as_str()),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(p) = d.msg.payload.as_deref() {
            record = record.payload(p);
        }
        if let Some(k) = d.msg.key.as_deref() {
            record = record.key(k);
        }
        match producer.send(record, Duration::from_secs(5)).await {
            Ok(_) => return,
            Err((e, _)) => {
                attempt += 1;
                tracing::warn!(
                    attempt,
                    "kafka: dead letter to {topic} failed: {e}; retrying"
                );
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10)))).await;
            }
        }
    }
}
