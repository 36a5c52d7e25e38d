//! `stream_processing`: batching, validation threads and the intake queue.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamProcessing {
    pub enabled: bool,
    /// Largest batch handed to the plugins and written in one transaction
    /// at low load (the latency of a batch is bounded by its size).
    pub batch_size: usize,
    /// STREAM_PROCESSING_MAX_BATCH_SIZE: under a backlog (a batch closes
    /// full with more events waiting) the batch size doubles after each
    /// batch up to this, and halves back to `batch_size` once batches close
    /// before they are full. Equal to `batch_size`: fixed batches.
    pub max_batch_size: usize,
    /// Longest time, in seconds, an event may wait for its batch to fill. A
    /// batch also closes as soon as no more input is waiting.
    pub flush_interval: f64,
    /// Threads that parse and validate incoming events (bulk bodies, Kafka).
    pub parallel_workers: usize,
    /// Only `real_time` is supported.
    pub processing_mode: String,
    /// Events that may wait for processing before ingestion pushes back
    /// (HTTP 503 with Retry-After).
    pub queue_capacity: usize,
    /// STREAM_PROCESSING_MAX_CLOCK_SKEW_SECS: an event whose timestamp is
    /// further ahead of the service's clock is refused (HTTP 422, Kafka:
    /// dead letter): one bad producer clock would otherwise put event time
    /// in the future.
    pub max_clock_skew_secs: u64,
    /// STREAM_PROCESSING_TIME: what places events in the windows: their
    /// own timestamps (`event`), or their arrival (`processing`).
    pub time: TimeMode,
    /// STREAM_PROCESSING_ALLOWED_LATENESS_SECS: the watermark trails the
    /// newest event time by this much, so events that arrive out of order
    /// by up to this many seconds land where a run in order puts them.
    pub allowed_lateness_secs: u64,
    /// STREAM_PROCESSING_IDLE_TIMEOUT_SECS: a source (a Kafka partition,
    /// HTTP) silent this long stops holding the watermark back.
    pub idle_timeout_secs: u64,
}

/// What time the windows follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeMode {
    /// The events' own timestamps, advanced by the watermark.
    Event,
    /// The service's clock when a batch is processed.
    Processing,
}

impl TimeMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeMode::Event => "event",
            TimeMode::Processing => "processing",
        }
    }
}

impl Default for StreamProcessing {
    fn default() -> Self {
        StreamProcessing {
            enabled: true,
            batch_size: 100,
            max_batch_size: 1000,
            flush_interval: 5.0,
            parallel_workers: 4,
            processing_mode: "real_time".into(),
            queue_capacity: 100_000,
            max_clock_skew_secs: 300,
            time: TimeMode::Event,
            allowed_lateness_secs: 0,
            idle_timeout_secs: 30,
        }
    }
}

impl StreamProcessing {
    pub(super) fn check(&self) -> Result<(), String> {
        if self.batch_size == 0 || self.batch_size > 100_000 {
            return Err("stream_processing.batch_size: must be between 1 and 100000".into());
        }
        if self.max_batch_size < self.batch_size || self.max_batch_size > 100_000 {
            return Err(
                "stream_processing.max_batch_size: must be between batch_size and 100000".into(),
            );
        }
        if !(self.flush_interval > 0.0 && self.flush_interval <= 3600.0) {
            return Err(
                "stream_processing.flush_interval: must be between 0 and 3600 seconds".into(),
            );
        }
        if self.parallel_workers == 0 || self.parallel_workers > 256 {
            return Err("stream_processing.parallel_workers: must be between 1 and 256".into());
        }
        if self.processing_mode != "real_time" {
            return Err(format!(
                "stream_processing.processing_mode: '{}' is not supported (only real_time)",
                self.processing_mode
            ));
        }
        if self.max_clock_skew_secs == 0 || self.max_clock_skew_secs > 366 * 86_400 {
            return Err(
                "stream_processing.max_clock_skew_secs: must be between 1 and 31622400".into(),
            );
        }
        if self.allowed_lateness_secs > 3600 {
            return Err("stream_processing.allowed_lateness_secs: must be at most 3600".into());
        }
        if self.idle_timeout_secs == 0 || self.idle_timeout_secs > 86_400 {
            return Err("stream_processing.idle_timeout_secs: must be between 1 and 86400".into());
        }
        if self.queue_capacity < self.batch_size {
            return Err("stream_processing.queue_capacity: must be at least batch_size".into());
        }
        Ok(())
    }
}
