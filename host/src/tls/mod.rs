//! TLS of the service's own connections, through rustls with the ring
//! provider: the HTTPS listener and the outbound HTTPS client (webhooks, the
//! Pushgateway). PostgreSQL (sqlx) and Kafka (librdkafka) bring their own
//! TLS, configured by `database.url` and `kafka.properties`.

mod client;
mod listener;

pub use client::http_client;
pub use listener::{ClientAddr, TlsListener, server_config};
