//! Restore at start: each plugin loads its checkpoint, then the events
//! stored after it are replayed in their stored batches, with the clock at
//! each batch's stored watermark (on processing time, and before event
//! time, its processing time), so the windows continue exactly where they
//! were. Responses plugins are not replayed: their requests were made.

use super::checkpoint::StateCache;
use super::stages::Stages;
use crate::plugin::{PluginKind, convert};
use crate::store::{Store, StoredEvent};
use hxp_plugin_sdk::{Event, EventBatch};
use std::sync::Arc;

/// Events read per query while replaying.
const PAGE: usize = 20_000;

/// Load each plugin's checkpoint and replay the events stored after it;
/// `arrival`: on processing time, events are placed at their batch's time,
/// as they were live. Returns how many events were replayed.
pub(super) async fn restore(
    store: &Store,
    stages: &mut Stages,
    states: &StateCache,
    arrival: bool,
) -> anyhow::Result<u64> {
    let from = load_checkpoints(store, stages, states).await?;
    let Some(&start) = from.iter().min().filter(|s| **s != u64::MAX) else {
        return Ok(0);
    };
    let mut after = start;
    let mut replayed = 0u64;
    loop {
        let rows = store.events_after(after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        // Group by batch: same processing time, same clock.
        for batch in rows.chunk_by(|a, b| a.batch_seq == b.batch_seq) {
            replay_batch(stages, &from, batch, arrival)?;
            replayed += batch.len() as u64;
        }
    }
    if replayed > 0 {
        tracing::info!(
            events = replayed,
            "replayed events stored after the last checkpoint"
        );
        save_after_replay(store, stages, &from, after, states).await?;
    }
    Ok(replayed)
}

/// Checkpoint every replayed plugin at the last replayed event, before
/// new input: a crash soon after this start replays only what came after
/// it, so restarts do not grow with the number of crashes.
async fn save_after_replay(
    store: &Store,
    stages: &mut Stages,
    from: &[u64],
    last_seq: u64,
    states: &StateCache,
) -> anyhow::Result<()> {
    for (slot, &covered) in stages.slots.iter_mut().zip(from) {
        if covered == u64::MAX {
            continue; // not replayed: responses, or started fresh
        }
        let plugin = &mut slot.plugin;
        let (state_version, state) = plugin
            .checkpoint()
            .map_err(|e| anyhow::anyhow!("checkpointing {} after replay: {e}", slot.name))?;
        let version = plugin.metadata().version.clone();
        store
            .save_plugin_state(&slot.name, &version, state_version, last_seq, &state)
            .await?;
        states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(slot.name.to_string(), (state_version, Arc::new(state)));
    }
    Ok(())
}

/// Per slot (in the stages' order), the last sequence number its
/// checkpoint covers: 0 without one, `u64::MAX` for what is not replayed
/// (responses, and a plugin that starts fresh).
async fn load_checkpoints(
    store: &Store,
    stages: &mut Stages,
    states: &StateCache,
) -> anyhow::Result<Vec<u64>> {
    let mut from = Vec::with_capacity(stages.slots.len());
    for slot in stages.slots.iter_mut() {
        let name = slot.name.to_string();
        let plugin = &mut slot.plugin;
        let covered = match store.plugin_state(&name).await? {
            Some((version, last_seq, state)) => match plugin.load_state(version, &state) {
                Ok(()) => {
                    tracing::info!(plugin = %name, last_seq, bytes = state.len(), "plugin state restored");
                    states
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name, (version, Arc::new(state)));
                    last_seq
                }
                Err(e) if plugin.metadata().fresh_start_ok => {
                    tracing::warn!(plugin = %name, error = %e, "checkpoint not loadable; plugin starts fresh");
                    u64::MAX
                }
                Err(e) => return Err(anyhow::anyhow!("restoring {name}: {e}")),
            },
            None => 0,
        };
        from.push(match plugin.kind() {
            PluginKind::Responses => u64::MAX,
            _ => covered,
        });
    }
    Ok(from)
}

/// One stored batch to every slot that has not seen its events.
fn replay_batch(
    stages: &mut Stages,
    from: &[u64],
    batch: &[StoredEvent],
    arrival: bool,
) -> anyhow::Result<()> {
    let clock = batch[0].watermark;
    let typed: Vec<(u64, Event)> = batch
        .iter()
        .filter_map(|r| Some((r.seq, r.typed()?)))
        .collect();
    stages.clock.set_ms(clock);
    for (slot, &covered) in stages.slots.iter_mut().zip(from) {
        let events: Vec<Event> = typed
            .iter()
            .filter(|(seq, _)| *seq > covered)
            .map(|(_, e)| e.clone())
            .collect();
        if events.is_empty() {
            continue;
        }
        let mut events = EventBatch::from_events(&events);
        if arrival {
            events.place_at(clock);
        }
        let wit = convert::batch_to_wit(events);
        match slot.plugin.kind() {
            PluginKind::Analytics => slot.plugin.analytics_process(&wit)?,
            PluginKind::Correlation => {
                slot.plugin.correlation_process(&wit)?;
            }
            PluginKind::Responses => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fake::Fake;
    use crate::plugin::Clock;
    use crate::store::{BatchRow, BatchWrite, EventRow};

    /// Events 1..=10 stored in batches of 4, 4 and 2.
    async fn store_with_events() -> Store {
        let store = crate::store::temp_store().await;
        let mut writes = Vec::new();
        for (first, n) in [(1u64, 4u64), (5, 4), (9, 2)] {
            let events = (first..first + n)
                .map(|seq| EventRow {
                    seq,
                    event_id: seq as u128,
                    event_type: "error_event",
                    event_time: 1_000 + seq as i64,
                    ingested_at: 1,
                    processed_at: 2_000 + first as i64,
                    batch_seq: first,
                    source: None,
                    data: r#"{"service":"api","error_type":"timeout"}"#.into(),
                })
                .collect();
            writes.push(BatchWrite {
                events,
                batch: Some(BatchRow {
                    batch_seq: first,
                    processed_at: 2_000 + first as i64,
                    size: n as usize,
                    analytics: None,
                    correlation: None,
                    response: None,
                    plugins: None,
                    watermark: None,
                }),
                ..BatchWrite::default()
            });
        }
        store.write_batches(&writes).await.unwrap();
        store
    }

    #[tokio::test]
    async fn each_plugin_replays_only_what_its_checkpoint_does_not_cover() {
        let store = store_with_events().await;
        // "late" checkpointed after event 6; "fresh" has no checkpoint.
        store
            .save_plugin_state("late", "1.0.0", 1, 6, b"x")
            .await
            .unwrap();
        let late = Fake::new("late", PluginKind::Analytics);
        let fresh = Fake::new("fresh", PluginKind::Correlation);
        let responses = Fake::new("responses", PluginKind::Responses);
        let (late_seen, fresh_seen, responses_seen) = (
            late.seen.clone(),
            fresh.seen.clone(),
            responses.seen.clone(),
        );
        let clock = Clock::manual(0);
        let mut stages = Stages::new(
            vec![late.slot(1), fresh.slot(1), responses.slot(1)],
            clock.clone(),
        );
        let states = StateCache::default();
        let replayed = restore(&store, &mut stages, &states, false).await.unwrap();
        assert_eq!(replayed, 10, "from the oldest checkpoint (none: the start)");
        // Stored batches stay batches; a plugin gets only the events after
        // its checkpoint.
        assert_eq!(*late_seen.lock().unwrap(), vec![vec![7, 8], vec![9, 10]]);
        assert_eq!(
            *fresh_seen.lock().unwrap(),
            vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8], vec![9, 10]]
        );
        assert!(
            responses_seen.lock().unwrap().is_empty(),
            "requests are not made again"
        );
        assert_eq!(
            clock.now_ms(),
            2_009,
            "the clock follows the stored batches"
        );
        assert!(states.lock().unwrap().contains_key("late"));
        // Both were checkpointed at the last replayed event: a second start
        // (a crash before any new checkpoint) replays nothing.
        let (_, late_at, _) = store.plugin_state("late").await.unwrap().unwrap();
        let (_, fresh_at, _) = store.plugin_state("fresh").await.unwrap().unwrap();
        assert_eq!((late_at, fresh_at), (10, 10));
        assert!(store.plugin_state("responses").await.unwrap().is_none());
        assert_eq!(
            restore(&store, &mut stages, &states, false).await.unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn nothing_to_replay_when_every_checkpoint_is_current() {
        let store = store_with_events().await;
        store
            .save_plugin_state("only", "1.0.0", 1, 10, b"x")
            .await
            .unwrap();
        let only = Fake::new("only", PluginKind::Analytics);
        let seen = only.seen.clone();
        let mut stages = Stages::new(vec![only.slot(1)], Clock::manual(0));
        let replayed = restore(&store, &mut stages, &StateCache::default(), false)
            .await
            .unwrap();
        assert_eq!(replayed, 0);
        assert!(seen.lock().unwrap().is_empty());
    }
}
