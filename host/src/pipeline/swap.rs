//! Hot-swap control: the changes the deployer asks of the processor, applied
//! between two batches. A replacement takes the running version's state
//! (save-state → load-state); a version that cannot read it is refused
//! unless it declared `fresh-start-ok`.

use super::shadow::{self, Shadow};
use super::stages::{Slot, Stage, Stages};
use crate::config::InhibitRule;
use crate::telemetry::Metrics;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Changes the deployer asks of the processor; applied between batches.
pub enum Control {
    /// Add a plugin, or replace the one of the same name (its state moves
    /// across).
    Install {
        slot: Box<Slot>,
        reply: oneshot::Sender<Result<Swapped, (String, Box<Slot>)>>,
    },
    /// Unload a plugin.
    Remove {
        name: String,
        reply: oneshot::Sender<Option<Swapped>>,
    },
    /// Apply a new config section (already tried on a scratch instance).
    Configure {
        name: String,
        json: String,
        reply: oneshot::Sender<Result<u64, String>>,
    },
    /// Run a candidate in the shadow of the live plugin of its name, from
    /// that plugin's state; the shadow it replaces, if any, comes back.
    Shadow {
        shadow: Box<Shadow>,
        reply: oneshot::Sender<ShadowInstalled>,
    },
    /// Make a shadow the live version, with the state it has.
    Promote {
        name: String,
        reply: oneshot::Sender<Result<Swapped, String>>,
    },
    /// Stop a shadow.
    DropShadow {
        name: String,
        reply: oneshot::Sender<Option<Box<Shadow>>>,
    },
    /// Hold findings back by these inhibit rules from the next batch on
    /// (`event_correlation.inhibit_rules` changed); the reply is the
    /// sequence number after which they hold.
    Inhibit {
        rules: Vec<InhibitRule>,
        reply: oneshot::Sender<u64>,
    },
}

/// The shadow replaced, or why the new one was refused (handed back).
pub type ShadowInstalled = Result<Option<Box<Shadow>>, (String, Box<Shadow>)>;

/// What a swap did.
pub struct Swapped {
    /// The new version processes the batches after this sequence number.
    pub after_seq: u64,
    /// Time the processing path spent on it.
    pub pause: Duration,
    /// The new version could not read the old state and starts fresh (it
    /// declared that it may).
    pub fresh_start: Option<String>,
    /// The replaced (or removed) slot, to be dropped off the processing path.
    pub old: Option<Box<Slot>>,
}

/// Apply one deployment change between batches. True when the set of
/// plugins (or a version) changed.
pub(super) fn apply(stages: &mut Stages, c: Control, last_seq: u64, metrics: &Metrics) -> bool {
    match c {
        Control::Install { slot, reply } => {
            let started = Instant::now();
            let result = install(stages, slot).map(|(fresh_start, old)| {
                let pause = started.elapsed();
                metrics.plugin.swap_pause.observe(pause.as_secs_f64());
                Swapped {
                    after_seq: last_seq,
                    pause,
                    fresh_start,
                    old,
                }
            });
            let ok = result.is_ok();
            let _ = reply.send(result);
            ok
        }
        Control::Remove { name, reply } => {
            let started = Instant::now();
            let old = stages.position(&name).map(|i| stages.slots.remove(i));
            stages.quarantined.remove(name.as_str());
            stages.shadows.remove(name.as_str());
            let removed = old.is_some();
            stages.sort();
            let _ = reply.send(old.map(|o| Swapped {
                after_seq: last_seq,
                pause: started.elapsed(),
                fresh_start: None,
                old: Some(Box::new(o)),
            }));
            removed
        }
        Control::Configure { name, json, reply } => {
            let r = configure(stages, &name, json).map(|()| last_seq);
            let ok = r.is_ok();
            let _ = reply.send(r);
            ok
        }
        Control::Shadow { shadow, reply } => {
            let _ = reply.send(shadow::install(stages, shadow));
            false
        }
        Control::Promote { name, reply } => {
            let started = Instant::now();
            let r = shadow::promote(stages, &name).map(|old| Swapped {
                after_seq: last_seq,
                pause: started.elapsed(),
                fresh_start: None,
                old: Some(old),
            });
            let ok = r.is_ok();
            let _ = reply.send(r);
            ok
        }
        Control::DropShadow { name, reply } => {
            let _ = reply.send(stages.shadows.remove(name.as_str()).map(Box::new));
            false
        }
        Control::Inhibit { rules, reply } => {
            stages.suppressor.inhibit = rules;
            let _ = reply.send(last_seq);
            false
        }
    }
}

/// `to` takes over `from`'s state, saved now (save-state → load-state):
/// `Ok(None)`; `Ok(Some(why))` when it cannot read it and may start fresh;
/// `Err(why)` when it may not, or is of another kind.
pub(super) fn take_state(
    name: &str,
    from: &mut dyn Stage,
    to: &mut dyn Stage,
) -> Result<Option<String>, String> {
    if from.kind() != to.kind() {
        return Err(format!(
            "{name} is running as a {} plugin; this file is a {} plugin",
            from.kind(),
            to.kind()
        ));
    }
    let moved = from
        .save_state()
        .map_err(|e| format!("the running version could not save its state: {e}"))
        .and_then(|(v, bytes)| {
            to.load_state(v, &bytes).map_err(|e| {
                format!("cannot load the running version's state (state version {v}): {e}")
            })
        });
    match moved {
        Ok(()) => Ok(None),
        Err(msg) if to.metadata().fresh_start_ok => Ok(Some(msg)),
        Err(msg) => Err(msg),
    }
}

/// The fresh-start reason (if the new version starts fresh) and the
/// replaced slot; or why not, with the slot handed back.
type Installed = (Option<String>, Option<Box<Slot>>);

/// Add `slot`, or replace the plugin of its name, moving the state across.
fn install(stages: &mut Stages, mut slot: Box<Slot>) -> Result<Installed, (String, Box<Slot>)> {
    let mut fresh_start = None;
    let pos = stages.position(&slot.name);
    if let Some(i) = pos {
        let old = stages.slots[i].plugin.as_mut();
        match take_state(&slot.name, old, slot.plugin.as_mut()) {
            Ok(fresh) => fresh_start = fresh,
            Err(msg) => return Err((msg, slot)),
        }
    }
    // A new version of a quarantined plugin runs again.
    stages.quarantined.remove(&slot.name);
    let old = match pos {
        Some(i) => Some(Box::new(std::mem::replace(&mut stages.slots[i], *slot))),
        None => {
            stages.slots.push(*slot);
            None
        }
    };
    stages.sort();
    Ok((fresh_start, old))
}

/// Apply a new config section (already tried on a scratch instance).
fn configure(stages: &mut Stages, name: &str, json: String) -> Result<(), String> {
    let i = stages
        .position(name)
        .ok_or_else(|| format!("{name} is not loaded"))?;
    let slot = &mut stages.slots[i];
    slot.plugin.configure(&json).map_err(|e| e.to_string())?;
    slot.section_json = json;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// New inhibit rules replace the old ones between batches; the reply
    /// names the last event before them; no plugin changed.
    #[test]
    fn new_inhibit_rules_replace_the_old_between_batches() {
        let mut stages = Stages::new(Vec::new(), crate::plugin::Clock::manual(0));
        let rule = |source: &str| InhibitRule {
            source: source.into(),
            targets: vec!["high_latency".into()],
        };
        stages.suppressor.inhibit = vec![rule("old")];
        let (reply, mut after) = oneshot::channel();
        let rules = vec![rule("error_burst")];
        let c = Control::Inhibit {
            rules: rules.clone(),
            reply,
        };
        assert!(
            !apply(&mut stages, c, 41, &Metrics::new()),
            "no plugin changed"
        );
        assert_eq!(after.try_recv(), Ok(41));
        assert_eq!(stages.suppressor.inhibit, rules);
    }
}
