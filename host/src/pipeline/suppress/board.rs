//! The silences the processor applies, in memory: it must not ask the
//! database on every batch. A snapshot (`Arc`) is swapped whole on every
//! change, so a batch reads one consistent set, and a reader holds the
//! lock only to clone the `Arc`.

use super::silence::Silence;
use crate::store::Store;
use std::sync::{Arc, RwLock};

/// Shared by the processor (reads) and the API (writes); cloning shares.
#[derive(Clone, Default)]
pub struct SilenceBoard(Arc<RwLock<Arc<Vec<Silence>>>>);

impl SilenceBoard {
    pub fn new(mut silences: Vec<Silence>) -> SilenceBoard {
        oldest_first(&mut silences);
        SilenceBoard(Arc::new(RwLock::new(Arc::new(silences))))
    }

    /// Every silence of the store, deleted ones too (they still hold at
    /// event times before their deletion). A row that cannot be read is
    /// skipped with a warning: one bad row must not stop the service.
    pub async fn load(store: &Store) -> anyhow::Result<SilenceBoard> {
        let mut silences = Vec::new();
        for row in store.silences().await? {
            match Silence::from_row(row) {
                Ok(s) => silences.push(s),
                Err(e) => tracing::warn!("{e}; it is ignored"),
            }
        }
        Ok(SilenceBoard::new(silences))
    }

    /// The silences now, oldest first.
    pub fn current(&self) -> Arc<Vec<Silence>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Add a silence, or replace the one of its id (a deletion).
    pub fn put(&self, silence: Silence) {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut next: Vec<Silence> = slot
            .iter()
            .filter(|s| s.id != silence.id)
            .cloned()
            .collect();
        next.push(silence);
        oldest_first(&mut next);
        *slot = Arc::new(next);
    }
}

/// Oldest first, so that the first silence to match a finding (the one
/// named as the reason) is the same on every instance.
fn oldest_first(silences: &mut [Silence]) {
    silences.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
}
