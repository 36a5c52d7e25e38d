//! The results topic: a compact processing record per stored event.

use super::consumer::Origin;
use crate::pipeline::Receipt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;
use std::time::Duration;

/// The processing record of each stored event on the results topic.
pub(super) async fn publish_results(
    producer: &FutureProducer,
    topic: &str,
    namespace: u64,
    origins: &[Origin],
    receipts: &[Receipt],
) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut sends = Vec::with_capacity(receipts.len());
    for (o, r) in origins.iter().zip(receipts) {
        let event_id = uuid::Uuid::from_u128(r.event_id).hyphenated().to_string();
        let body = json!({
            "processing_id": crate::event::processing_id(namespace, r.seq).hyphenated().to_string(),
            "event_id": event_id,
            "processing_type": o.kind.as_str(),
            "processing_timestamp": now,
            "duplicate": r.duplicate,
            "source": {"topic": &*o.topic, "partition": o.partition, "offset": o.offset},
        })
        .to_string();
        let producer = producer.clone();
        let topic = topic.to_string();
        sends.push(async move {
            for attempt in 1..=5u64 {
                let record = FutureRecord::to(&topic).key(&event_id).payload(&body);
                match producer.send(record, Duration::from_secs(5)).await {
                    Ok(_) => return,
                    Err((e, _)) => {
                        tracing::warn!(attempt, "kafka: result to {topic} failed: {e}");
                        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                    }
                }
            }
        });
    }
    futures::future::join_all(sends).await;
}
