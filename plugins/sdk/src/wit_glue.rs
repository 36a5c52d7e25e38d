//! Conversions between the types `wit_bindgen::generate!` emits for
//! `hxp:events/types` and this crate's plain types.
//!
//! Invoke [`wit_conversions!`](crate::wit_conversions) in the module where
//! `generate!` ran. Conversions move strings and vectors; nothing is copied.

/// Defines `to_sdk` / `to_wit` conversion functions for the generated
/// `hxp::events::types` module in scope.
#[macro_export]
macro_rules! wit_conversions {
    () => {
        #[allow(dead_code)]
        pub mod convert {
            use super::hxp::events::types as wit;
            // (`use $crate as sdk;` is refused by Rust 1.88 and older; a module
            // that re-exports the crate builds on them.)
            mod sdk {
                pub use $crate::*;
            }

            pub fn kind_to_sdk(k: wit::EventKind) -> sdk::EventKind {
                match k {
                    wit::EventKind::LlmRequest => sdk::EventKind::LlmRequest,
                    wit::EventKind::UserFeedback => sdk::EventKind::UserFeedback,
                    wit::EventKind::SystemMetric => sdk::EventKind::SystemMetric,
                    wit::EventKind::BusinessEvent => sdk::EventKind::BusinessEvent,
                    wit::EventKind::ErrorEvent => sdk::EventKind::ErrorEvent,
                }
            }

            pub fn kind_to_wit(k: sdk::EventKind) -> wit::EventKind {
                match k {
                    sdk::EventKind::LlmRequest => wit::EventKind::LlmRequest,
                    sdk::EventKind::UserFeedback => wit::EventKind::UserFeedback,
                    sdk::EventKind::SystemMetric => wit::EventKind::SystemMetric,
                    sdk::EventKind::BusinessEvent => wit::EventKind::BusinessEvent,
                    sdk::EventKind::ErrorEvent => wit::EventKind::ErrorEvent,
                }
            }

            pub fn health_to_sdk(h: wit::Health) -> sdk::Health {
                match h {
                    wit::Health::Healthy => sdk::Health::Healthy,
                    wit::Health::Degraded => sdk::Health::Degraded,
                    wit::Health::Failed => sdk::Health::Failed,
                }
            }

            pub fn health_to_wit(h: sdk::Health) -> wit::Health {
                match h {
                    sdk::Health::Healthy => wit::Health::Healthy,
                    sdk::Health::Degraded => wit::Health::Degraded,
                    sdk::Health::Failed => wit::Health::Failed,
                }
            }

            pub fn batch(b: wit::EventBatch) -> sdk::EventBatch {
                sdk::EventBatch {
                    seq: b.seq,
                    kind: b.kind,
                    id_hi: b.id_hi,
                    id_lo: b.id_lo,
                    time_ms: b.time_ms,
                    latency_ms: b.latency_ms,
                    outcome: b.outcome,
                    satisfaction: b.satisfaction,
                    business_value: b.business_value,
                    cost: b.cost,
                    health: b.health,
                    strings: b.strings,
                    model: b.model,
                    service: b.service,
                    user: b.user,
                    payload: b.payload,
                }
            }

            pub fn batch_to_wit(b: sdk::EventBatch) -> wit::EventBatch {
                wit::EventBatch {
                    seq: b.seq,
                    kind: b.kind,
                    id_hi: b.id_hi,
                    id_lo: b.id_lo,
                    time_ms: b.time_ms,
                    latency_ms: b.latency_ms,
                    outcome: b.outcome,
                    satisfaction: b.satisfaction,
                    business_value: b.business_value,
                    cost: b.cost,
                    health: b.health,
                    strings: b.strings,
                    model: b.model,
                    service: b.service,
                    user: b.user,
                    payload: b.payload,
                }
            }

            pub fn metadata(m: sdk::Metadata) -> wit::PluginMetadata {
                wit::PluginMetadata {
                    name: m.name,
                    version: m.version,
                    state_version: m.state_version,
                    wants_payload: m.wants_payload,
                    fresh_start_ok: m.fresh_start_ok,
                }
            }

            pub fn metadata_to_sdk(m: wit::PluginMetadata) -> sdk::Metadata {
                sdk::Metadata {
                    name: m.name,
                    version: m.version,
                    state_version: m.state_version,
                    wants_payload: m.wants_payload,
                    fresh_start_ok: m.fresh_start_ok,
                }
            }

            pub fn stats_to_wit(s: sdk::Stats) -> wit::Stats {
                wit::Stats {
                    count: s.count,
                    throughput: s.throughput,
                    requests_per_second: s.requests_per_second,
                    latency_count: s.latency_count,
                    latency_avg: s.latency_avg,
                    latency_p50: s.latency_p50,
                    latency_p95: s.latency_p95,
                    latency_p99: s.latency_p99,
                    latency_exact: s.latency_exact,
                    outcome_count: s.outcome_count,
                    error_count: s.error_count,
                    error_rate: s.error_rate,
                    user_satisfaction: s.user_satisfaction,
                    satisfaction_count: s.satisfaction_count,
                    business_value: s.business_value,
                    cost_per_request: s.cost_per_request,
                }
            }

            pub fn stats_to_sdk(s: wit::Stats) -> sdk::Stats {
                sdk::Stats {
                    count: s.count,
                    throughput: s.throughput,
                    requests_per_second: s.requests_per_second,
                    latency_count: s.latency_count,
                    latency_avg: s.latency_avg,
                    latency_p50: s.latency_p50,
                    latency_p95: s.latency_p95,
                    latency_p99: s.latency_p99,
                    latency_exact: s.latency_exact,
                    outcome_count: s.outcome_count,
                    error_count: s.error_count,
                    error_rate: s.error_rate,
                    user_satisfaction: s.user_satisfaction,
                    satisfaction_count: s.satisfaction_count,
                    business_value: s.business_value,
                    cost_per_request: s.cost_per_request,
                }
            }

            pub fn snapshot_to_wit(s: sdk::Snapshot) -> wit::WindowSnapshot {
                wit::WindowSnapshot {
                    time_ms: s.time_ms,
                    window_secs: s.window_secs,
                    covered_secs: s.covered_secs,
                    overall: stats_to_wit(s.overall),
                    per_kind: s
                        .per_kind
                        .into_iter()
                        .map(|(k, st)| (kind_to_wit(k), stats_to_wit(st)))
                        .collect(),
                    services: s
                        .services
                        .into_iter()
                        .map(|h| wit::ServiceHealth {
                            service: h.service,
                            health: health_to_wit(h.health),
                            time_ms: h.time_ms,
                        })
                        .collect(),
                }
            }

            pub fn snapshot_to_sdk(s: wit::WindowSnapshot) -> sdk::Snapshot {
                sdk::Snapshot {
                    time_ms: s.time_ms,
                    window_secs: s.window_secs,
                    covered_secs: s.covered_secs,
                    overall: stats_to_sdk(s.overall),
                    per_kind: s
                        .per_kind
                        .into_iter()
                        .map(|(k, st)| (kind_to_sdk(k), stats_to_sdk(st)))
                        .collect(),
                    services: s
                        .services
                        .into_iter()
                        .map(|h| sdk::ServiceHealth {
                            service: h.service,
                            health: health_to_sdk(h.health),
                            time_ms: h.time_ms,
                        })
                        .collect(),
                }
            }

            pub fn finding_to_wit(f: sdk::Finding) -> wit::Finding {
                wit::Finding {
                    name: f.name,
                    source: f.source,
                    subject: f.subject,
                    alert: f.alert,
                    occurrences: f.occurrences,
                    score: f.score,
                    message: f.message,
                    evidence: f.evidence,
                }
            }

            pub fn finding_to_sdk(f: wit::Finding) -> sdk::Finding {
                sdk::Finding {
                    name: f.name,
                    source: f.source,
                    subject: f.subject,
                    alert: f.alert,
                    occurrences: f.occurrences,
                    score: f.score,
                    message: f.message,
                    evidence: f.evidence,
                }
            }

            pub fn action_to_wit(a: sdk::ActionRequest) -> wit::ActionRequest {
                wit::ActionRequest {
                    rule: a.rule,
                    action: a.action,
                    target: a.target,
                    parameters: a.parameters,
                    reason: a.reason,
                }
            }

            pub fn action_to_sdk(a: wit::ActionRequest) -> sdk::ActionRequest {
                sdk::ActionRequest {
                    rule: a.rule,
                    action: a.action,
                    target: a.target,
                    parameters: a.parameters,
                    reason: a.reason,
                }
            }

            pub fn response_input_to_wit(i: sdk::ResponseInput) -> wit::ResponseInput {
                wit::ResponseInput {
                    time_ms: i.time_ms,
                    analytics: snapshot_to_wit(i.analytics),
                    findings: i.findings.into_iter().map(finding_to_wit).collect(),
                }
            }

            pub fn response_input(i: wit::ResponseInput) -> sdk::ResponseInput {
                sdk::ResponseInput {
                    time_ms: i.time_ms,
                    analytics: snapshot_to_sdk(i.analytics),
                    findings: i.findings.into_iter().map(finding_to_sdk).collect(),
                }
            }
        }
    };
}
