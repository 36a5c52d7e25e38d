//! {{name}}: asks to page the team when the window's error rate passes a
//! threshold (`error_rate_threshold` in the plugin's config section).
use hxp_plugin_sdk::prelude::*;

struct Pager {
    threshold: f64,
    /// How many times it asked; kept across hot swaps and restarts.
    decisions: u64,
}

impl Default for Pager {
    fn default() -> Self {
        Pager { threshold: 0.2, decisions: 0 }
    }
}

impl Plugin for Pager {
    fn metadata() -> Metadata {
        Metadata::new("{{name}}", "0.1.0")
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        let section: serde_json::Value = serde_json::from_str(config).map_err(|e| e.to_string())?;
        match section.get("error_rate_threshold") {
            None => {}
            Some(v) => self.threshold = v.as_f64().ok_or("error_rate_threshold must be a number")?,
        }
        Ok(())
    }

    fn save_state(&self) -> Vec<u8> {
        self.decisions.to_string().into_bytes()
    }

    fn load_state(&mut self, version: u32, state: &[u8]) -> Result<(), String> {
        if version != 1 {
            return Err(format!("state version {version} is not supported"));
        }
        let text = std::str::from_utf8(state).map_err(|e| e.to_string())?;
        self.decisions = text.parse().map_err(|_| format!("bad state: {text:?}"))?;
        Ok(())
    }
}

impl Responses for Pager {
    fn decide(&mut self, input: &ResponseInput) -> Vec<ActionRequest> {
        let o = &input.analytics.overall;
        if o.outcome_count == 0 || o.error_rate <= self.threshold {
            return Vec::new();
        }
        self.decisions += 1;
        let (errors, requests) = (o.error_count, o.outcome_count);
        let page = ActionRequest::new("{{name}}", "page_oncall", "team")
            .with_parameters(format!(r#"{{"errors":{errors},"requests":{requests}}}"#))
            .with_reason(format!(
                "{errors} errors in {requests} requests over the last {} s",
                input.analytics.window_secs
            ));
        vec![page]
    }
}

hxp_plugin_sdk::export_responses!(Pager);
