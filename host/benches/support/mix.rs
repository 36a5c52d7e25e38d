//! The benches' recorded stream: a realistic mix of the five event types.

use hxp_plugin_sdk::{Event, EventKind, Health};

pub const EVENTS: usize = 100_000;
/// Simulated arrival rate: the clock advances 50 µs per event.
const US_PER_EVENT: i64 = 50;

/// A realistic mix: 60% llm_request (3% failing, 4 models, 3 services),
/// 15% user_feedback, 10% system_metric, 5% business_event, 10% error_event.
pub fn stream() -> Vec<Event> {
    let models = ["mixtral-8x7b", "llama-3-8b", "qwen-2-7b", "phi-3"];
    let services = ["inference-gateway", "vllm-mixtral", "vllm-llama"];
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    (0..EVENTS as u64)
        .map(|seq| {
            let r = next() % 100;
            let time = 1_767_225_600_000 + seq as i64 * US_PER_EVENT / 1000;
            let mut e = match r {
                0..60 => {
                    let mut e = Event::new(seq, EventKind::LlmRequest, time);
                    e.latency_ms = Some(50.0 + (next() % 3000) as f64 / 3.0);
                    e.success = Some(next() % 100 >= 3);
                    e.cost = Some((next() % 100) as f64 / 10_000.0);
                    e.user = Some(format!("user-{}", next() % 5000));
                    e
                }
                60..75 => {
                    let mut e = Event::new(seq, EventKind::UserFeedback, time);
                    e.satisfaction = Some((next() % 101) as f64 / 10.0);
                    e.user = Some(format!("user-{}", next() % 5000));
                    e
                }
                75..85 => {
                    let mut e = Event::new(seq, EventKind::SystemMetric, time);
                    e.health = Some(if next() % 500 == 0 {
                        Health::Failed
                    } else {
                        Health::Healthy
                    });
                    e.latency_ms = Some((next() % 400) as f64);
                    e
                }
                85..90 => {
                    let mut e = Event::new(seq, EventKind::BusinessEvent, time);
                    e.business_value = Some((next() % 10_000) as f64 / 100.0);
                    e
                }
                _ => {
                    let mut e = Event::new(seq, EventKind::ErrorEvent, time);
                    e.success = Some(false);
                    e
                }
            };
            e.id = (next() as u128) << 64 | next() as u128;
            e.model = Some(models[(next() % 4) as usize].to_string());
            e.service = Some(services[(next() % 3) as usize].to_string());
            e
        })
        .collect()
}
