//! What the service tells its operators: the Prometheus registry with the
//! requirements' metric names ([`metrics`]), the push of it to a
//! Pushgateway ([`push`]), and which workers are up ([`workers`]).

pub mod metrics;
pub mod push;
pub mod workers;

pub use metrics::{EventStatus, Metrics};
pub use workers::{Workers, supervise};
