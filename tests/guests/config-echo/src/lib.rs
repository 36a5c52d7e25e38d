//! Reports what the host configured it with: every batch, one request
//! `report_config` whose parameters are `{"config": <the section>}`. The
//! secrets test deploys it beside the default plugins and reads the
//! section back from the audit trail.

use hxp_plugin_sdk::prelude::*;

#[derive(Default)]
struct ConfigEcho {
    /// The section as JSON text ("" when there was none).
    config: String,
}

impl Plugin for ConfigEcho {
    fn metadata() -> Metadata {
        Metadata::new("config-echo", "0.1.0")
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        self.config = config.to_string();
        Ok(())
    }
}

impl Responses for ConfigEcho {
    fn decide(&mut self, _input: &ResponseInput) -> Vec<ActionRequest> {
        let section = if self.config.is_empty() {
            "null"
        } else {
            &self.config
        };
        let report = ActionRequest::new("config_echo", "report_config", "test")
            .with_parameters(format!("{{\"config\":{section}}}"));
        vec![report]
    }
}

hxp_plugin_sdk::export_responses!(ConfigEcho);
