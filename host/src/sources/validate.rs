//! Parsing and validating many events at once (bulk HTTP bodies, Kafka
//! polls) on the `stream_processing.parallel_workers` threads.

use crate::event::{self, Acceptance, EventError, ValidEvent};
use rayon::prelude::*;
use serde::Serialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// Below this many events, validation runs on the calling thread.
const PARALLEL_MIN: usize = 64;

/// Why one element of a bulk body was refused.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemError {
    /// 0-based position in the array, or line number minus one for NDJSON.
    pub index: usize,
    #[serde(flatten)]
    pub error: EventError,
}

#[derive(Debug, Default)]
pub struct Parsed {
    /// The valid events, in order.
    pub valid: Vec<ValidEvent>,
    pub errors: Vec<ItemError>,
}

/// The validation thread pool.
pub fn pool(threads: usize) -> anyhow::Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("validate-{i}"))
        .build()?)
}

/// `f` over `items`, in order: on the pool's threads when there are many,
/// on the calling thread when there are few (not worth the hand-off).
pub fn map_parallel<T: Sync, R: Send>(
    items: &[T],
    pool: &rayon::ThreadPool,
    f: impl Fn(&T) -> R + Sync + Send,
) -> Vec<R> {
    if items.len() < PARALLEL_MIN {
        items.iter().map(f).collect()
    } else {
        pool.install(|| items.par_iter().map(f).collect())
    }
}

/// Validate a list of raw JSON texts, in parallel when there are many.
pub fn validate_all(
    items: &[&[u8]],
    now_ms: i64,
    accept: &Acceptance,
    pool: &rayon::ThreadPool,
) -> Parsed {
    let results = map_parallel(items, pool, |text| event::parse(text, now_ms, accept));
    let mut parsed = Parsed::default();
    for (index, r) in results.into_iter().enumerate() {
        match r {
            Ok(e) => parsed.valid.push(e),
            Err(error) => parsed.errors.push(ItemError { index, error }),
        }
    }
    parsed
}

/// A bulk body: a JSON array of events, or NDJSON (one event per line).
/// A malformed array is an error for the whole body; a malformed NDJSON line
/// is an error for that line only.
pub fn parse_bulk(
    body: &[u8],
    ndjson: bool,
    now_ms: i64,
    accept: &Acceptance,
    pool: &rayon::ThreadPool,
) -> Result<Parsed, EventError> {
    if ndjson {
        let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
        // Keep line numbers: blank lines are skipped but still counted.
        let mut index = Vec::with_capacity(lines.len());
        let mut texts = Vec::with_capacity(lines.len());
        for (i, l) in lines.iter().enumerate() {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            if l.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            index.push(i);
            texts.push(l);
        }
        let mut parsed = validate_all(&texts, now_ms, accept, pool);
        for e in &mut parsed.errors {
            e.index = index[e.index];
        }
        Ok(parsed)
    } else {
        let raws: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
            // serde's "invalid type" comes at the first token, before the
            // rest is read: only a body that parses whole is JSON that is
            // not an array (`0:` or `{` are malformed).
            match (e.is_data(), serde_json::from_slice::<IgnoredAny>(body)) {
                (true, Ok(_)) => EventError::invalid(
                    "the body must be a JSON array of events (or NDJSON with Content-Type application/x-ndjson)".into(),
                    None,
                ),
                (true, Err(syntax)) => EventError::malformed(&syntax),
                (false, _) => EventError::malformed(&e),
            }
        })?;
        let texts: Vec<&[u8]> = raws.iter().map(|r| r.get().as_bytes()).collect();
        Ok(validate_all(&texts, now_ms, accept, pool))
    }
}
