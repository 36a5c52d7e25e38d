//! Plugin checkpoints: every `real_time_analytics.update_interval` (and at
//! shutdown) each plugin's state is saved with the last sequence number it
//! has seen, so a restart replays only what came after.

use super::stages::{Stages, record_failure};
use super::writer::WriterMsg;
use crate::telemetry::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Each plugin's last checkpoint (state version, bytes), for trying a new
/// version's load-state before it goes live.
pub type StateCache = Arc<Mutex<HashMap<String, (u32, Arc<Vec<u8>>)>>>;

/// Save every plugin's state (to the cache and, through the writer, to the
/// database).
pub(super) fn checkpoint(
    stages: &mut Stages,
    last_seq: u64,
    out: &mpsc::Sender<WriterMsg>,
    metrics: &Metrics,
    states: &StateCache,
) {
    for plugin in stages.plugins_mut() {
        match plugin.checkpoint() {
            Ok((state_version, state)) => {
                states.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    plugin.name().to_string(),
                    (state_version, Arc::new(state.clone())),
                );
                let _ = out.blocking_send(WriterMsg::Checkpoint {
                    plugin: plugin.name().to_string(),
                    version: plugin.metadata().version.clone(),
                    state_version,
                    last_seq,
                    state,
                });
            }
            Err(e) => record_failure(metrics, &e),
        }
    }
}
