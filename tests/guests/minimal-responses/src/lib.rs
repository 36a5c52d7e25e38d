use hxp_plugin_sdk::prelude::*;
#[derive(Default)]
struct Minimal;
impl Plugin for Minimal {
    fn metadata() -> Metadata {
        Metadata::new("minimal-responses", "0.1.0")
    }
}
impl Responses for Minimal {
    fn decide(&mut self, input: &ResponseInput) -> Vec<ActionRequest> {
        let page = ActionRequest::new("minimal", "page_oncall", "team");
        Vec::from_iter((input.analytics.overall.error_rate > 0.5).then_some(page))
    }
}
hxp_plugin_sdk::export_responses!(Minimal);
