//! What the service tells its operators: the Prometheus registry with the
//! requirements' metric names ([`metrics`]), and the push of it to a
//! Pushgateway ([`push`]).

pub mod metrics;
pub mod push;

pub use metrics::{EventStatus, Metrics};
