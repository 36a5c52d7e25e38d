//! Every error answer: a status and a JSON body ([`ErrorBody`]) naming the
//! problem, with Retry-After when trying again later may help.

use crate::event::{EventError, EventErrorKind};
use crate::pipeline::SubmitError;
use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    pub(super) message: String,
    field: Option<String>,
    retry_after: Option<u64>,
    details: Option<Value>,
}

/// Always `"error"` in an error answer.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorStatus {
    Error,
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub status: ErrorStatus,
    /// A stable code: `invalid_event`, `not_found`, `unauthorized`, ...
    pub error: &'static str,
    /// What went wrong, for people.
    pub message: String,
    /// Where in the request (a JSON pointer such as `/data/latency_ms`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// More about the problem (e.g. the per-event errors of a bulk body).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

impl ApiError {
    pub(super) fn new(
        status: StatusCode,
        error: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            error,
            message: message.into(),
            field: None,
            retry_after: None,
            details: None,
        }
    }

    /// Where in the request the problem is (a JSON pointer).
    pub(super) fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    pub(super) fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }

    pub(super) fn internal(e: anyhow::Error) -> ApiError {
        // Database internals are logged, not returned.
        tracing::error!(error = %format!("{e:#}"), "request failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the service could not complete the request; try again",
        )
    }

    /// The body this error answers with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            status: ErrorStatus::Error,
            error: self.error,
            message: self.message.clone(),
            field: self.field.clone(),
            details: self.details.clone(),
        }
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> ApiError {
        let (status, error) = match e.kind {
            EventErrorKind::MalformedJson => (StatusCode::BAD_REQUEST, "malformed_json"),
            EventErrorKind::Invalid | EventErrorKind::UnknownType => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid_event")
            }
            EventErrorKind::Disabled => (StatusCode::UNPROCESSABLE_ENTITY, "event_type_disabled"),
            EventErrorKind::InternalError => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        ApiError {
            field: e.field.clone(),
            ..ApiError::new(status, error, e.message)
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::Busy { .. } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            },
            SubmitError::TooLarge { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
                e.to_string(),
            ),
            SubmitError::Disabled => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "disabled", e.to_string())
            }
            SubmitError::Closed => ApiError {
                retry_after: Some(5),
                ..ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    e.to_string(),
                )
            },
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> ApiError {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is larger than service.max_body_bytes",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "unreadable_body",
                format!("could not read the request body: {r}"),
            )
        }
    }
}

/// A body that could not be read whole: too large, or cut off.
pub(super) fn body_error(e: &axum::Error, limit: &str) -> ApiError {
    let too_large =
        std::error::Error::source(e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
    if too_large {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit}"),
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "unreadable_body",
            format!("could not read the request body: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
