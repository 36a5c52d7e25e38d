//! Flap damping: a finding that turns on and off more than `max_toggles`
//! times within `period_secs` is held active until it has not changed for
//! `quiet_secs`. While held it is reported (without alerting), so its
//! returns do not alert again: one alert for a flapping service instead of
//! one per swing, as Alertmanager and Nagios users expect.

use crate::config::FlapConfig;
use crate::hash::{KeyMap, key_map};
use hxp_plugin_sdk::Finding;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Findings whose changes are tracked at most (beyond, new ones are not
/// damped), bounding memory under hostile cardinality.
pub const MAX_TRACKED: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// Whether the rule itself holds (before damping).
    on: bool,
    /// Seconds at which it turned on or off, within the period.
    toggles: VecDeque<i64>,
    held: bool,
    /// The finding as it last turned on (what is reported while held).
    last: Finding,
    /// The evaluation that last found it on.
    #[serde(skip)]
    seen: u64,
}

pub struct Flaps {
    config: FlapConfig,
    /// By finding name, then subject (looked up by `&str`, without
    /// allocating for the findings that stay as they are; hashed: every
    /// active finding is looked up at every evaluation).
    tracks: KeyMap<KeyMap<Track>>,
    tracked: usize,
    evaluation: u64,
}

impl Flaps {
    pub fn new(config: FlapConfig) -> Flaps {
        Flaps {
            config,
            tracks: key_map(),
            tracked: 0,
            evaluation: 0,
        }
    }

    /// Record the findings that hold at `now_sec` and add those held
    /// active by damping (marked in their message, not alerting).
    pub fn damp(&mut self, now_sec: i64, found: &mut Vec<Finding>) {
        if self.config.max_toggles == 0 {
            return;
        }
        self.evaluation += 1;
        for f in found.iter() {
            self.turned_on(f, now_sec);
        }
        let (period, quiet) = (
            self.config.period_secs as i64,
            self.config.quiet_secs as i64,
        );
        let max = self.config.max_toggles as usize;
        let (mut tracked, evaluation) = (0, self.evaluation);
        let mut holding = Vec::new();
        self.tracks.retain(|_, subjects| {
            subjects.retain(|_, t| {
                if t.on && t.seen != evaluation {
                    t.on = false;
                    t.toggles.push_back(now_sec);
                }
                keep(t, now_sec, max, period, quiet, &mut holding)
            });
            tracked += subjects.len();
            !subjects.is_empty()
        });
        self.tracked = tracked;
        // In a stable order (the maps' is random).
        holding.sort_by(|a, b| (&a.name, &a.subject).cmp(&(&b.name, &b.subject)));
        found.append(&mut holding);
    }

    fn turned_on(&mut self, f: &Finding, now_sec: i64) {
        let t = self
            .tracks
            .get_mut(&f.name)
            .and_then(|s| s.get_mut(&f.subject));
        if let Some(t) = t {
            t.seen = self.evaluation;
            if !t.on {
                t.on = true;
                t.toggles.push_back(now_sec);
                t.last = f.clone();
            }
        } else if self.tracked < MAX_TRACKED {
            let track = Track {
                on: true,
                toggles: VecDeque::from([now_sec]),
                held: false,
                last: f.clone(),
                seen: self.evaluation,
            };
            self.tracked += 1;
            self.tracks
                .entry(f.name.clone())
                .or_insert_with(key_map)
                .insert(f.subject.clone(), track);
        }
    }

    pub fn save(&self) -> Vec<Track> {
        let mut tracks: Vec<Track> = self
            .tracks
            .values()
            .flat_map(|s| s.values())
            .cloned()
            .collect();
        tracks
            .sort_by(|a, b| (&a.last.name, &a.last.subject).cmp(&(&b.last.name, &b.last.subject)));
        tracks
    }

    pub fn load(&mut self, tracks: Vec<Track>) {
        self.tracks.clear();
        self.tracked = 0;
        for t in tracks.into_iter().take(MAX_TRACKED) {
            self.tracked += 1;
            self.tracks
                .entry(t.last.name.clone())
                .or_insert_with(key_map)
                .insert(t.last.subject.clone(), t);
        }
    }
}

/// One track after an evaluation at `now_sec`: its old changes forgotten,
/// held when flapping, released when quiet; the finding it holds added
/// to `found`. False when there is nothing left to track.
fn keep(
    t: &mut Track,
    now_sec: i64,
    max: usize,
    period: i64,
    quiet: i64,
    found: &mut Vec<Finding>,
) -> bool {
    {
        while t.toggles.front().is_some_and(|&s| s <= now_sec - period) {
            t.toggles.pop_front();
        }
        if t.toggles.len() > max {
            t.held = true;
        }
        if t.held && !t.on {
            let since = t.toggles.back().map_or(i64::MIN, |&s| now_sec - s);
            if since >= quiet {
                t.held = false;
            } else {
                found.push(held(&t.last, t.toggles.len(), period, quiet));
            }
        }
        t.on || t.held || !t.toggles.is_empty()
    }
}

/// The finding as reported while damping holds it.
fn held(last: &Finding, toggles: usize, period: i64, quiet: i64) -> Finding {
    Finding {
        alert: false,
        message: format!(
            "flapping ({toggles} changes in {period} s): held active until quiet for {quiet} s; last: {}",
            last.message
        ),
        ..last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str) -> Finding {
        Finding {
            name: name.into(),
            source: "rule".into(),
            subject: "api".into(),
            alert: true,
            occurrences: 1,
            score: 0.5,
            message: "m".into(),
            evidence: vec![],
        }
    }

    /// The rule's own state per second, and what damping reports.
    fn run(flaps: &mut Flaps, pattern: &[bool]) -> Vec<bool> {
        pattern
            .iter()
            .enumerate()
            .map(|(sec, &on)| {
                let mut found = if on { vec![f("x")] } else { vec![] };
                flaps.damp(sec as i64, &mut found);
                !found.is_empty()
            })
            .collect()
    }

    #[test]
    fn a_flapping_finding_is_held_until_quiet() {
        let mut flaps = Flaps::new(FlapConfig {
            max_toggles: 4,
            period_secs: 100,
            quiet_secs: 5,
        });
        // on, off, on, off (4 changes), on (5th: flapping), off: held
        // for 5 s after its last change, then released.
        let rule = [
            true, false, true, false, true, false, false, false, false, false, false, false,
        ];
        let shown = run(&mut flaps, &rule);
        assert_eq!(
            shown,
            [
                true, false, true, false, true, true, true, true, true, true, false, false
            ]
        );
        assert!(flaps.save().iter().all(|t| !t.held));
    }

    #[test]
    fn changes_older_than_the_period_do_not_count() {
        let mut flaps = Flaps::new(FlapConfig {
            max_toggles: 2,
            period_secs: 3,
            quiet_secs: 10,
        });
        // A change every 2 s: at most 2 within any 3 s, never flapping.
        let rule = [true, true, false, false, true, true, false, false];
        assert_eq!(run(&mut flaps, &rule), rule);
    }

    #[test]
    fn held_findings_do_not_alert_and_say_so() {
        let mut flaps = Flaps::new(FlapConfig {
            max_toggles: 1,
            period_secs: 100,
            quiet_secs: 50,
        });
        run(&mut flaps, &[true, false]);
        let mut found = vec![];
        flaps.damp(2, &mut found);
        assert_eq!(found.len(), 1);
        assert!(!found[0].alert);
        assert!(
            found[0]
                .message
                .starts_with("flapping (2 changes in 100 s)")
        );
        let mut off = Flaps::new(FlapConfig {
            max_toggles: 0,
            ..FlapConfig::default()
        });
        assert_eq!(
            run(&mut off, &[true, false, true, false]),
            [true, false, true, false]
        );
    }
}
