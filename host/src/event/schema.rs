//! The published schemas (`config/schemas/`, compiled into the binary) and
//! the first violation of one as an [`EventError`] naming the field.

use super::EventError;
use hxp_plugin_sdk::EventKind;
use serde_json::Value;
use std::sync::OnceLock;

/// The published schemas: (file name, text). The envelope first.
pub const SCHEMAS: [(&str, &str); 6] = [
    (
        "event.json",
        include_str!("../../../config/schemas/event.json"),
    ),
    (
        "llm_request.json",
        include_str!("../../../config/schemas/llm_request.json"),
    ),
    (
        "user_feedback.json",
        include_str!("../../../config/schemas/user_feedback.json"),
    ),
    (
        "system_metric.json",
        include_str!("../../../config/schemas/system_metric.json"),
    ),
    (
        "business_event.json",
        include_str!("../../../config/schemas/business_event.json"),
    ),
    (
        "error_event.json",
        include_str!("../../../config/schemas/error_event.json"),
    ),
];

pub(super) struct Validators {
    pub(super) envelope: jsonschema::Validator,
    pub(super) data: Vec<jsonschema::Validator>,
}

pub(super) fn validators() -> &'static Validators {
    static V: OnceLock<Validators> = OnceLock::new();
    V.get_or_init(|| {
        let build = |text: &str| {
            let schema: Value = serde_json::from_str(text).expect("bundled schema is JSON");
            jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .expect("bundled schema compiles")
        };
        Validators {
            envelope: build(SCHEMAS[0].1),
            data: SCHEMAS[1..].iter().map(|(_, t)| build(t)).collect(),
        }
    })
}

/// Schema text of one event type's `data`.
pub fn data_schema(kind: EventKind) -> &'static str {
    SCHEMAS[1 + kind.index()].1
}

/// First schema violation as an error naming the field (valid input takes
/// the fast path that builds no error).
pub(super) fn schema_error(
    v: &jsonschema::Validator,
    instance: &Value,
    prefix: &str,
) -> Option<EventError> {
    if v.is_valid(instance) {
        return None;
    }
    let e = v.iter_errors(instance).next()?;
    let path = format!("{prefix}{}", e.instance_path());
    let field = if path.is_empty() {
        None
    } else {
        Some(path.clone())
    };
    let at = if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    };
    Some(EventError::invalid(format!("{at}{e}"), field))
}
