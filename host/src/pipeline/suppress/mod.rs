//! Suppression, between the correlation and responses stages: silences
//! ([`silence`], made over the API) and inhibition ([`inhibit`], from
//! `event_correlation.inhibit_rules`) hold findings back.
//!
//! ```text
//! correlation ─▶ findings ─▶ silenced? inhibited? ─┬─ no ─▶ responses, alerts
//!                                                 └─ yes ─▶ alert = false, not handed to responses;
//!                                                           would it have alerted: an alert row
//!                                                           with suppressed_by
//! ```
//!
//! A held-back finding is still recorded and served (GET /correlations),
//! with what held it back; it raises no alert and no action request.
//!
//! Time is the batch's event time (the watermark the stages run at), not
//! the clock: a replay or a backtest of the same events, with the same
//! silences, holds back the same findings.

pub mod board;
pub mod inhibit;
pub mod matcher;
pub mod silence;

pub use board::SilenceBoard;
pub use silence::{Invalid, NewSilence, Silence, SilenceState};

use crate::config::InhibitRule;
use crate::plugin::types;

/// What a silence or an inhibit rule looks at in a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    /// The finding's name (a rule or a pattern).
    pub rule: &'a str,
    pub subject: &'a str,
    /// `rule` or `pattern`.
    pub source: &'a str,
}

impl<'a> Key<'a> {
    pub fn of(f: &'a types::Finding) -> Key<'a> {
        Key {
            rule: &f.name,
            subject: &f.subject,
            source: &f.source,
        }
    }
}

/// Why a finding was held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A silence, by id.
    Silence(String),
    /// An inhibit rule, by its source finding.
    Inhibited(String),
}

impl Reason {
    /// The `reason` label of correlation_findings_suppressed_total.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Silence(_) => "silence",
            Reason::Inhibited(_) => "inhibition",
        }
    }
}

impl std::fmt::Display for Reason {
    /// As stored in `correlation_alerts.suppressed_by`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Silence(id) => write!(f, "silence:{id}"),
            Reason::Inhibited(rule) => write!(f, "inhibited:{rule}"),
        }
    }
}

/// A finding held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub reason: Reason,
    /// It would have alerted (its alert flag before suppression): it is
    /// recorded as an alert row with `suppressed_by`.
    pub alerted: bool,
}

/// What was held back of a batch's findings, by position. Empty when
/// nothing was (the usual case costs no allocation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Holds(Vec<Option<Held>>);

impl Holds {
    /// What held back finding `i`, if anything did.
    pub fn get(&self, i: usize) -> Option<&Held> {
        self.0.get(i).and_then(Option::as_ref)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Held> {
        self.0.iter().flatten()
    }
}

impl FromIterator<Option<Held>> for Holds {
    fn from_iter<I: IntoIterator<Item = Option<Held>>>(iter: I) -> Holds {
        Holds(iter.into_iter().collect())
    }
}

/// The silences and inhibit rules a run of the stages applies.
#[derive(Clone, Default)]
pub struct Suppressor {
    pub silences: SilenceBoard,
    pub inhibit: Vec<InhibitRule>,
}

impl Suppressor {
    pub fn new(silences: SilenceBoard, inhibit: Vec<InhibitRule>) -> Suppressor {
        Suppressor { silences, inhibit }
    }

    /// Hold back what the silences active at event time `t` match (the
    /// oldest matching silence is named), then what the inhibit rules
    /// hold back: each such finding gets `alert = false`. `context`:
    /// further findings of the batch that may inhibit these.
    pub fn apply(&self, findings: &mut [types::Finding], context: &[Key], t: i64) -> Holds {
        let silences = self.silences.current();
        let active: Vec<&Silence> = silences.iter().filter(|s| s.is_active(t)).collect();
        if active.is_empty() && self.inhibit.is_empty() {
            return Holds::default();
        }
        let keys: Vec<Key> = findings.iter().map(Key::of).collect();
        let inhibited = inhibit::inhibited(&self.inhibit, &keys, context);
        let reasons: Vec<Option<Reason>> = (keys.iter().zip(inhibited))
            .map(|(k, by)| match active.iter().find(|s| s.matches(k)) {
                Some(s) => Some(Reason::Silence(s.id.clone())),
                None => by.map(|rule| Reason::Inhibited(rule.to_string())),
            })
            .collect();
        (findings.iter_mut().zip(reasons))
            .map(|(f, reason)| {
                reason.map(|reason| Held {
                    reason,
                    alerted: std::mem::replace(&mut f.alert, false),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::silence::tests::{DAY0, new, on_rule};
    use super::*;

    fn finding(name: &str, subject: &str, alert: bool) -> types::Finding {
        types::Finding {
            name: name.into(),
            source: "rule".into(),
            subject: subject.into(),
            alert,
            occurrences: 5,
            score: 0.5,
            message: format!("{name} fired"),
            evidence: vec![1],
        }
    }

    fn silence_on(id: &str, created_at: i64, rule: &str) -> Silence {
        let mut n = new(DAY0, DAY0 + 3_600_000, None);
        n.matchers = on_rule(rule);
        Silence::new(id.into(), created_at, n).unwrap()
    }

    /// A silence comes before inhibition; the oldest matching silence is
    /// named; the alert flag is cleared and remembered; outside the
    /// silence's time only inhibition holds.
    #[test]
    fn silences_then_inhibition_hold_back_and_clear_the_alert() {
        let board = SilenceBoard::new(vec![
            silence_on("newer", 20, "high_latency"),
            silence_on("older", 10, "high_latency"),
        ]);
        let s = Suppressor::new(
            board,
            vec![InhibitRule {
                source: "error_burst".into(),
                targets: vec!["high_latency".into(), "low_satisfaction".into()],
            }],
        );
        let batch = || {
            vec![
                finding("error_burst", "", true),
                finding("high_latency", "api", true),
                finding("low_satisfaction", "", false),
            ]
        };
        let mut f = batch();
        let holds = s.apply(&mut f, &[], DAY0);
        assert_eq!(holds.get(0), None);
        let held = holds.get(1).unwrap();
        assert_eq!(
            (held.reason.to_string(), held.alerted),
            ("silence:older".into(), true)
        );
        let held = holds.get(2).unwrap();
        assert_eq!(
            (held.reason.to_string(), held.alerted),
            ("inhibited:error_burst".into(), false)
        );
        let alerts: Vec<bool> = f.iter().map(|f| f.alert).collect();
        assert_eq!(alerts, vec![true, false, false]);
        // An hour later the silence is over; the inhibition holds.
        let mut f = batch();
        let holds = s.apply(&mut f, &[], DAY0 + 3_600_000);
        assert_eq!(
            holds.get(1).unwrap().reason,
            Reason::Inhibited("error_burst".into())
        );
        assert_eq!(
            holds.iter().map(|h| h.reason.label()).collect::<Vec<_>>(),
            vec!["inhibition", "inhibition"]
        );
    }

    #[test]
    fn nothing_configured_holds_nothing() {
        let mut f = vec![finding("high_latency", "", true)];
        let holds = Suppressor::default().apply(&mut f, &[], DAY0);
        assert_eq!(holds, Holds::default());
        assert!(f[0].alert);
    }
}
