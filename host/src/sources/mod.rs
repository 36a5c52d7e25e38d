//! Where events come from: HTTP bodies ([`validate`], used by the API's
//! ingest routes) and Kafka ([`kafka`]). Both validate on the
//! `stream_processing.parallel_workers` threads and submit to the pipeline.

pub mod kafka;
pub mod validate;

#[cfg(test)]
mod proptests;
