//! The processing pipeline:
//!
//! ```text
//! sources ─submit─▶ intake ─▶ batcher ──▶ processor thread ──▶ writer ──▶ acknowledgement
//!  (HTTP, Kafka)    (bounded)  (seq, dedupe,  (stages: analytics,  (one transaction
//!                              batches)       correlation,          per group of
//!                                             responses; swaps,     batches; then
//!                                             guardrails)           executors act)
//! ```
//!
//! - [`intake`]: a submission is accepted whole or refused at once (HTTP
//!   answers 503 with Retry-After) instead of growing memory; capacity comes
//!   back when its events are stored.
//! - [`batcher`]: sequence numbers, duplicates of recently seen ids (they
//!   are acknowledged with the original's receipt), batches that close at
//!   `batch_size` or as soon as no more input is waiting.
//! - [`processor`] with [`stages`], [`record`], [`swap`], [`checkpoint`]:
//!   the plugin calls, the stored record, hot swaps between batches, and
//!   checkpoints; [`live`] is what the API reads.
//! - [`suppress`]: silences and inhibition, between correlation and
//!   responses.
//! - [`writer`]: stores each batch in one transaction, retrying while the
//!   database is away; only then are the events acknowledged.
//! - [`replay`] at start, and [`recalc`] (batch analytics from the store)
//!   on request.

pub mod backtest;
pub mod batcher;
pub mod checkpoint;
pub mod intake;
pub mod live;
pub mod processor;
pub mod quarantine;
pub mod recalc;
pub mod record;
pub mod replay;
pub mod shadow;
pub mod sizing;
pub mod stages;
pub mod suppress;
pub mod swap;
pub mod watermark;
pub mod writer;

#[cfg(test)]
mod fake;

pub use checkpoint::StateCache;
pub use intake::{Ack, Counters, PipelineHandle, Receipt, SubmitError};
pub use live::{LiveView, PluginStatus};
pub use record::pattern_names;
pub use stages::{Slot, Stage, Stages};
pub use swap::{Control, Swapped};

use crate::actions::{ExecutorHandle, Guardrails};
use crate::config::Config;
use crate::store::Store;
use crate::telemetry::Metrics;
use batcher::{Batch, Batcher, RECENT_IDS, RecentIds, SeqBlock};
use processor::{Inputs, Processor};
use std::sync::{Arc, RwLock};
use tokio::sync::mpsc;
use writer::{Writer, WriterMsg};

/// The running pipeline's parts the application keeps.
pub struct Pipeline {
    pub handle: Arc<PipelineHandle>,
    pub live: Arc<RwLock<LiveView>>,
    /// Resolves when everything submitted has been stored.
    pub done: tokio::task::JoinHandle<()>,
}

/// What the pipeline is built from.
pub struct Parts {
    pub config: Arc<Config>,
    pub store: Store,
    pub stages: Stages,
    pub metrics: Arc<Metrics>,
    /// Deployment changes, applied between batches.
    pub control: mpsc::Receiver<Control>,
    pub states: StateCache,
    pub executor: ExecutorHandle,
    /// Where quarantine notices go (the deployer).
    pub quarantined: Option<mpsc::UnboundedSender<quarantine::Notice>>,
}

/// Start the pipeline: restore plugin state, replay what was stored after the
/// last checkpoint, then process.
pub async fn start(parts: Parts) -> anyhow::Result<Pipeline> {
    let Parts {
        config,
        store,
        mut stages,
        metrics,
        control,
        states,
        executor,
        quarantined,
    } = parts;
    let counters = Arc::new(Counters::default());
    let live = Arc::new(RwLock::new(LiveView::default()));

    // Restore and replay before taking new input.
    let seqs = SeqBlock::reserve(&store).await?;
    let mut watermark = watermark::Watermark::new(&config.stream_processing);
    watermark.restore(store.last_watermark().await?);
    let arrival = config.stream_processing.time == crate::config::TimeMode::Processing;
    let replayed = replay::restore(&store, &mut stages, &states, arrival).await?;
    live::write(&live).replayed = replayed;
    let mut recent = RecentIds::new(RECENT_IDS);
    for (id, seq) in store.recent_ids(RECENT_IDS).await?.into_iter().rev() {
        recent.insert(id, seq);
    }

    let sp = &config.stream_processing;
    let (intake_tx, intake_rx) = mpsc::unbounded_channel();
    let (batch_tx, batch_rx) = mpsc::channel::<Batch>(2);
    let (write_tx, write_rx) = mpsc::channel::<WriterMsg>(4);
    let handle = Arc::new(PipelineHandle::new(
        intake_tx,
        sp.queue_capacity,
        sp.enabled,
        counters.clone(),
    ));
    let sizing = sizing::BatchSizing::new(sp.batch_size, sp.max_batch_size);
    let batching = Batcher::new(sizing, seqs, recent, store.clone());
    tokio::spawn(batcher::batcher(intake_rx, batch_tx, batching));
    let processor = Processor {
        stages,
        config: config.clone(),
        metrics: metrics.clone(),
        live: live.clone(),
        states,
        guardrails: Guardrails::new(&config.automated_response),
        watermark,
        quarantine: quarantine::Tracker::new(config.plugins.quarantine, quarantined),
        out: write_tx,
    };
    let inputs = Inputs {
        batches: batch_rx,
        control,
    };
    std::thread::Builder::new()
        .name("processor".into())
        .spawn(move || processor.run(inputs))?;
    let writer = Writer {
        store,
        metrics,
        counters,
        executor,
    };
    let done = tokio::spawn(writer.run(write_rx));
    Ok(Pipeline { handle, live, done })
}
