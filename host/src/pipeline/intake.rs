//! Intake: the sources' handle on the pipeline. A submission is accepted
//! whole or refused at once (the queue holds `queue_capacity` events; the
//! capacity comes back when its events are stored), and acknowledged once
//! every one of its events is stored.

use crate::event::ValidEvent;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// What a source learns once its events are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Sequence number of the stored event (the original, for a duplicate).
    pub seq: u64,
    pub event_id: u128,
    pub duplicate: bool,
}

/// Called once with the receipts of a submission, in order, when all its
/// events are stored.
pub type Ack = Box<dyn FnOnce(Vec<Receipt>) + Send>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("the processing queue is full ({queued} of {capacity} events waiting); retry shortly")]
    Busy { queued: usize, capacity: usize },
    #[error("the submission has {events} events, more than the queue holds ({capacity})")]
    TooLarge { events: usize, capacity: usize },
    #[error("stream processing is disabled (stream_processing.enabled is false)")]
    Disabled,
    #[error("the service is shutting down")]
    Closed,
}

/// Shared counters the API reads without locks.
#[derive(Debug, Default)]
pub struct Counters {
    pub queued: AtomicUsize,
    pub stored: AtomicU64,
    pub db_failing: AtomicBool,
    pub db_last_error: Mutex<Option<String>>,
    pub writer_batches: AtomicU64,
}

pub(super) struct Tracker {
    receipts: Mutex<Vec<Option<Receipt>>>,
    remaining: AtomicUsize,
    ack: Mutex<Option<Ack>>,
    _permit: Mutex<Option<OwnedSemaphorePermit>>,
    pub(super) started: Instant,
}

impl Tracker {
    /// A submission of `n` events; `permit` holds their queue capacity
    /// until the last one is stored.
    pub(super) fn new(n: usize, ack: Ack, permit: Option<OwnedSemaphorePermit>) -> Tracker {
        Tracker {
            receipts: Mutex::new(vec![None; n]),
            remaining: AtomicUsize::new(n),
            ack: Mutex::new(Some(ack)),
            _permit: Mutex::new(permit),
            started: Instant::now(),
        }
    }

    /// Record receipts; the last one runs the acknowledgement.
    pub(super) fn complete(&self, done: &[(usize, Receipt)]) {
        {
            let mut receipts = self.receipts.lock().expect("receipts lock");
            for (index, r) in done {
                receipts[*index] = Some(*r);
            }
        }
        if self.remaining.fetch_sub(done.len(), Ordering::AcqRel) == done.len() {
            let receipts = std::mem::take(&mut *self.receipts.lock().expect("receipts lock"))
                .into_iter()
                .map(|r| r.expect("every receipt set"))
                .collect();
            if let Some(ack) = self.ack.lock().expect("ack lock").take() {
                ack(receipts);
            }
            self._permit.lock().expect("permit lock").take();
        }
    }
}

pub(super) struct Submission {
    pub(super) events: Vec<ValidEvent>,
    pub(super) source: Option<String>,
    pub(super) ingested_at: i64,
    pub(super) tracker: Arc<Tracker>,
}

/// The sources' handle on the pipeline.
pub struct PipelineHandle {
    intake: Mutex<Option<mpsc::UnboundedSender<Submission>>>,
    permits: Arc<Semaphore>,
    capacity: usize,
    enabled: bool,
    pub counters: Arc<Counters>,
}

impl PipelineHandle {
    /// Queue validated events. `ack` runs once all are stored.
    pub fn submit(
        &self,
        events: Vec<ValidEvent>,
        source: Option<String>,
        ack: Ack,
    ) -> Result<(), SubmitError> {
        self.try_submit(events, source, ack).map_err(|(e, _)| e)
    }

    /// [`submit`](Self::submit), handing the events back when they are
    /// refused, so that a source can hold them and try again (Kafka, when
    /// the queue is full) without keeping a copy.
    pub fn try_submit(
        &self,
        events: Vec<ValidEvent>,
        source: Option<String>,
        ack: Ack,
    ) -> Result<(), (SubmitError, Vec<ValidEvent>)> {
        if !self.enabled {
            return Err((SubmitError::Disabled, events));
        }
        let n = events.len();
        if n == 0 {
            ack(Vec::new());
            return Ok(());
        }
        if n > self.capacity {
            let e = SubmitError::TooLarge {
                events: n,
                capacity: self.capacity,
            };
            return Err((e, events));
        }
        let permit = match self.permits.clone().try_acquire_many_owned(n as u32) {
            Ok(p) => p,
            Err(_) => {
                let e = SubmitError::Busy {
                    queued: self.counters.queued.load(Ordering::Relaxed),
                    capacity: self.capacity,
                };
                return Err((e, events));
            }
        };
        let tracker = Arc::new(Tracker::new(n, ack, Some(permit)));
        let guard = self.intake.lock().expect("intake lock");
        let Some(tx) = guard.as_ref() else {
            return Err((SubmitError::Closed, events));
        };
        self.counters.queued.fetch_add(n, Ordering::Relaxed);
        tx.send(Submission {
            events,
            source,
            ingested_at: crate::store::now_ms(),
            tracker,
        })
        .map_err(|e| (SubmitError::Closed, e.0.events))
    }

    /// Submit and wait for the receipts.
    pub async fn submit_and_wait(
        &self,
        events: Vec<ValidEvent>,
        source: Option<String>,
    ) -> Result<tokio::sync::oneshot::Receiver<Vec<Receipt>>, SubmitError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            events,
            source,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        Ok(rx)
    }

    /// Stop intake; what is queued is still processed and stored.
    pub fn close(&self) {
        self.intake.lock().expect("intake lock").take();
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl PipelineHandle {
    /// A handle feeding `intake`, holding at most `capacity` events.
    pub(super) fn new(
        intake: mpsc::UnboundedSender<Submission>,
        capacity: usize,
        enabled: bool,
        counters: Arc<Counters>,
    ) -> PipelineHandle {
        PipelineHandle {
            intake: Mutex::new(Some(intake)),
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            enabled,
            counters,
        }
    }
}
