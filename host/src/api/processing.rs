//! GET /processing/pipeline and GET /processing/{processing_id}.

use super::extract::ApiPath;
use super::views::{
    BatchingView, DatabaseView, EventCountsView, KafkaConsumerView, KafkaDisabledView, KafkaView,
    PipelineView, ProcessingRecordView, QueueView, StageTimesView,
};
use super::{ApiError, ApiResult, AppState, ErrorBody, St, rfc3339};
pub use crate::event::processing_id;
use crate::event::seq_of_processing_id;
use crate::pipeline::LiveView;
use crate::sources::kafka::KafkaStatus;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;
use std::sync::atomic::Ordering::Relaxed;

/// GET /processing/{processing_id}: the requirements' processing record.
#[utoipa::path(
    get,
    path = "/processing/{processing_id}",
    tag = "processing",
    params(("processing_id" = String, Path, description = "The id POST /process or POST /events answered")),
    responses(
        (status = 200, description = "The event's processing record", body = ProcessingRecordView),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 404, description = "No such processing record", body = ErrorBody),
        (status = 503, description = "The database could not answer", body = ErrorBody),
    )
)]
pub(super) async fn record(
    State(state): St,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ProcessingRecordView>> {
    let uuid = uuid::Uuid::parse_str(&id).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("'{id}' is not a UUID: {e}"),
        )
    })?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no processing record {id}"),
        )
    };
    let seq = seq_of_processing_id(state.namespace, uuid).ok_or_else(not_found)?;
    let rec = state
        .store
        .record(seq)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(not_found)?;
    let stored = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
    };
    Ok(Json(ProcessingRecordView {
        processing_id: processing_id(state.namespace, rec.seq)
            .hyphenated()
            .to_string(),
        event_id: uuid::Uuid::from_u128(rec.event_id).hyphenated().to_string(),
        processing_timestamp: rfc3339(rec.processed_at),
        analytics_results: stored(&rec.analytics),
        correlation_results: stored(&rec.correlation),
        automated_response: stored(&rec.response),
        processing_type: rec.event_type,
    }))
}

/// GET /processing/pipeline: the stages, queue, batching, timings, database
/// and Kafka consumer.
#[utoipa::path(
    get,
    path = "/processing/pipeline",
    tag = "processing",
    responses((status = 200, description = "The processing pipeline's state", body = PipelineView))
)]
pub(super) async fn pipeline(State(state): St) -> Json<PipelineView> {
    let c = &state.pipeline.counters;
    let live = state.live.read().expect("live lock");
    let per_batch = |ns: u64| {
        if live.batches > 0 {
            ns as f64 / live.batches as f64 / 1e6
        } else {
            0.0
        }
    };
    let sp = &state.config.stream_processing;
    Json(PipelineView {
        mode: sp.processing_mode.clone(),
        enabled: sp.enabled,
        stages: vec![
            "sources",
            "validation",
            "batcher",
            "analytics",
            "correlation",
            "responses",
            "persistence",
            "acknowledgement",
        ],
        queue: QueueView {
            depth: c.queued.load(Relaxed),
            capacity: state.pipeline.capacity(),
        },
        batching: batching(&state, &live),
        events: EventCountsView {
            processed: live.events,
            duplicates: live.duplicates,
            stored: c.stored.load(Relaxed),
            replayed_at_start: live.replayed,
        },
        plugin_swap_gaps_us: live.swap_gaps_us.iter().copied().collect(),
        batch_gaps_us: live.batch_gaps_us.iter().copied().collect(),
        stage_ms_per_batch: StageTimesView {
            analytics: per_batch(live.stage_ns[0]),
            correlation: per_batch(live.stage_ns[1]),
            responses: per_batch(live.stage_ns[2]),
        },
        database: DatabaseView {
            backend: format!("{:?}", state.store.backend()).to_lowercase(),
            failing: c.db_failing.load(Relaxed),
            last_error: c.db_last_error.lock().expect("lock").clone(),
            batches_written: c.writer_batches.load(Relaxed),
        },
        kafka: match &state.kafka {
            None => KafkaView::Disabled(KafkaDisabledView { enabled: false }),
            Some(k) => KafkaView::Consumer(kafka_view(k)),
        },
    })
}

fn batching(state: &AppState, live: &LiveView) -> BatchingView {
    let sp = &state.config.stream_processing;
    BatchingView {
        batch_size: sp.batch_size,
        max_batch_size: sp.max_batch_size,
        batch_limit: live.batch_limit,
        flush_interval: sp.flush_interval,
        parallel_workers: sp.parallel_workers,
        batches: live.batches,
        average_batch_size: if live.batches > 0 {
            (live.events + live.duplicates) as f64 / live.batches as f64
        } else {
            0.0
        },
        last_batch_size: live.last_batch_size,
        last_batch_at: live.last_batch_at.map(rfc3339),
    }
}

/// The consumer's state; partitions assigned but not yet reported show -1.
fn kafka_view(k: &KafkaStatus) -> KafkaConsumerView {
    let partitions = k.assigned_progress();
    KafkaConsumerView {
        enabled: true,
        status: k.problem().unwrap_or_else(|| "ok".to_string()),
        group: k.group.clone(),
        topics: k.topics.clone(),
        connected: k.connected.load(Relaxed),
        paused: k.paused.load(Relaxed),
        consumed: k.consumed.load(Relaxed),
        dead_lettered: k.dead_lettered.load(Relaxed),
        polls_in_flight: k.polls_in_flight.load(Relaxed),
        rebalances: k.rebalances.load(Relaxed),
        last_error: k.last_error.lock().expect("lock").clone(),
        partitions,
    }
}
