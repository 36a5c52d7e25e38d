//! `monitoring`: where the service's neighbours are (API gateway, Prometheus,
//! Pushgateway).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitoring {
    pub kafka_bootstrap_servers: String,
    /// Where scale_models / restart_service requests go.
    pub api_gateway_endpoint: String,
    pub sql_database_endpoint: String,
    /// The Prometheus server that scrapes this service.
    pub metrics_server_endpoint: String,
    /// CUSTOM_METRICS_ENDPOINT: a Pushgateway to push metrics to; empty: no push.
    pub custom_metrics_endpoint: String,
}

impl Default for Monitoring {
    fn default() -> Self {
        Monitoring {
            kafka_bootstrap_servers: String::new(),
            api_gateway_endpoint: "http://127.0.0.1:8000".into(),
            sql_database_endpoint: "127.0.0.1:5432".into(),
            metrics_server_endpoint: "http://127.0.0.1:9090".into(),
            custom_metrics_endpoint: String::new(),
        }
    }
}

impl Monitoring {
    pub(super) fn check(&self) -> Result<(), String> {
        for (key, url) in [
            (
                "monitoring.api_gateway_endpoint",
                &self.api_gateway_endpoint,
            ),
            (
                "monitoring.metrics_server_endpoint",
                &self.metrics_server_endpoint,
            ),
            (
                "monitoring.custom_metrics_endpoint",
                &self.custom_metrics_endpoint,
            ),
        ] {
            if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{key}: '{url}' is not an http(s) URL"));
            }
        }
        Ok(())
    }
}
