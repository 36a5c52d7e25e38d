//! `service` and `performance`: the HTTP listener and what the service reports
//! about itself.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// Service name reported by /health (requirements: event-processing-api).
    pub name: String,
    /// Listen address. Loopback by default; the requirements' 0.0.0.0 must
    /// be chosen explicitly.
    pub host: String,
    /// EVENT_PROCESSING_API_PORT (requirements: 9100).
    pub port: u16,
    /// HTTP worker threads (requirements: 2).
    pub workers: usize,
    /// EVENT_PROCESSING_TIMEOUT: seconds a request may take, including the
    /// wait for its events to be stored.
    pub timeout: u64,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// EVENT_PROCESSING_ADMIN_TOKEN: bearer token of the admin endpoints;
    /// empty disables them (unless `admin_tokens` has one). Its name in
    /// the deployment history is "admin".
    pub admin_token: String,
    /// More admin tokens, by name (the name is what the deployment history
    /// records: "ci", "team-payments").
    pub admin_tokens: std::collections::BTreeMap<String, String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            name: "event-processing-api".into(),
            host: "127.0.0.1".into(),
            port: 9100,
            workers: 2,
            timeout: 30,
            max_body_bytes: 16 << 20,
            admin_token: String::new(),
            admin_tokens: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Performance {
    /// Reported only; the service's own footprint is far below it.
    pub memory_limit_gb: f64,
    pub cpu_cores: u32,
    /// trace | debug | info | warn | error (also RUST_LOG).
    pub log_level: String,
}

impl Default for Performance {
    fn default() -> Self {
        Performance {
            memory_limit_gb: 4.0,
            cpu_cores: 6,
            log_level: "INFO".into(),
        }
    }
}

impl ServiceConfig {
    pub(super) fn check(&self) -> Result<(), String> {
        if self.port == 0 {
            return Err("service.port: must be between 1 and 65535".into());
        }
        if self.host.parse::<std::net::IpAddr>().is_err() && self.host != "localhost" {
            return Err(format!(
                "service.host: '{}' is not an IP address",
                self.host
            ));
        }
        if self.workers == 0 || self.workers > 256 {
            return Err("service.workers: must be between 1 and 256".into());
        }
        if self.timeout == 0 {
            return Err("service.timeout: must be at least 1 second".into());
        }
        if self.max_body_bytes < 1024 {
            return Err("service.max_body_bytes: must be at least 1024".into());
        }
        for (name, token) in &self.admin_tokens {
            if !crate::util::names::is_plain(name) {
                return Err(format!(
                    "service.admin_tokens: name '{name}': use 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
            // Short tokens can be guessed.
            if token.len() < 16 {
                return Err(format!(
                    "service.admin_tokens.{name}: must be at least 16 characters"
                ));
            }
        }
        Ok(())
    }
}

impl Performance {
    pub(super) fn check(&self) -> Result<(), String> {
        let level = self.log_level.to_ascii_lowercase();
        if !["trace", "debug", "info", "warn", "warning", "error"].contains(&level.as_str()) {
            return Err(format!(
                "performance.log_level: '{}' is not a log level",
                self.log_level
            ));
        }
        Ok(())
    }
}
