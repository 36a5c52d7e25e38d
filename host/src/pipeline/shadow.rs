//! Shadow runs: a candidate version of a plugin runs beside its live
//! version on the same batches, from the live version's state, within its
//! own limits. Its findings and action requests are compared with the live
//! version's and kept in a report; they are never executed and never merged
//! into the live results.

use super::stages::{Slot, Stage, Stages};
use crate::plugin::{PluginError, types};
use crate::telemetry::Metrics;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Examples kept per report.
const EXAMPLES: usize = 20;

/// A candidate running in the shadow of the live plugin of its name.
pub struct Shadow {
    pub slot: Slot,
    pub report: Arc<Mutex<ShadowReport>>,
}

/// What one side produced that the other did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Disagreement {
    /// An alert (a finding with `alert`) only the live version raised.
    AlertOnlyLive,
    /// An alert only the shadow raised.
    AlertOnlyShadow,
    /// An action request only the live version made.
    ActionOnlyLive,
    /// An action request only the shadow made.
    ActionOnlyShadow,
    /// The analytics window differs (count, error rate or mean latency).
    Window,
}

impl Disagreement {
    pub fn as_str(self) -> &'static str {
        match self {
            Disagreement::AlertOnlyLive => "alert_only_live",
            Disagreement::AlertOnlyShadow => "alert_only_shadow",
            Disagreement::ActionOnlyLive => "action_only_live",
            Disagreement::ActionOnlyShadow => "action_only_shadow",
            Disagreement::Window => "window",
        }
    }
}

/// One disagreement, with the events behind it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Example {
    pub kind: Disagreement,
    /// The rule (finding name, or the action request's rule).
    pub rule: String,
    /// The finding's subject or the request's target.
    pub subject: String,
    /// The batch's first sequence number.
    pub batch_seq: u64,
    /// Sequence numbers of the events behind it (a finding's evidence).
    pub evidence: Vec<u64>,
    pub message: String,
}

/// What a shadow did so far, against the live version.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ShadowReport {
    pub plugin: String,
    pub version: String,
    pub sha256: String,
    /// Milliseconds since the epoch.
    pub since_ms: i64,
    pub batches: u64,
    pub events: u64,
    /// Batches in which the two versions disagreed in any way.
    pub disagreeing_batches: u64,
    /// The share of batches on which they agreed (1 before any batch).
    pub agreement: f64,
    /// Disagreements by kind, then by rule.
    pub disagreements: BTreeMap<Disagreement, BTreeMap<String, u64>>,
    /// The first disagreements.
    pub examples: Vec<Example>,
    /// Correlation scores: largest and mean absolute difference per batch,
    /// over the batches both scored.
    pub max_score_difference: f64,
    pub mean_score_difference: f64,
    pub scored_batches: u64,
    /// Failed calls (traps, timeouts, memory limits).
    pub failures: u64,
    /// Batches the live version failed on and the shadow did not (the
    /// shadow still runs them, so that its state follows the events).
    pub live_failures: u64,
    /// Why the shadow stopped, when it did (quarantined).
    pub ended: Option<String>,
}

impl Shadow {
    /// Run the shadow on a batch the live version of its analytics plugin
    /// was given; compare the windows (`None`: the live call failed, the
    /// shadow still runs, to stay in step with the events).
    pub fn analytics(
        &mut self,
        batch: &types::EventBatch,
        live: Option<&types::WindowSnapshot>,
        m: &Metrics,
    ) {
        let call = |p: &mut dyn Stage| {
            p.analytics_process(batch)?;
            p.analytics_snapshot()
        };
        let compare = live.map(|l| move |r: &mut ShadowReport, seq, s| r.analytics(seq, l, &s));
        self.observe(batch, m, call, compare);
    }

    /// The same for a correlation plugin: the alerts, after `suppress`
    /// (the silences and inhibit rules the live side had too).
    pub fn correlation(
        &mut self,
        batch: &types::EventBatch,
        live: Option<&types::CorrelationResult>,
        m: &Metrics,
        suppress: impl FnOnce(&mut types::CorrelationResult),
    ) {
        let call = |p: &mut dyn Stage| {
            let mut r = p.correlation_process(batch)?;
            suppress(&mut r);
            Ok(r)
        };
        let compare = live.map(|l| move |r: &mut ShadowReport, seq, s| r.correlation(seq, l, &s));
        self.observe(batch, m, call, compare);
    }

    /// The same for a responses plugin, on the input the live one had.
    pub fn responses(
        &mut self,
        batch: &types::EventBatch,
        input: &types::ResponseInput,
        live: Option<&[types::ActionRequest]>,
        m: &Metrics,
    ) {
        let call = |p: &mut dyn Stage| p.responses_decide(input);
        let compare =
            live.map(|l| move |r: &mut ShadowReport, seq, s: Vec<_>| r.responses(seq, l, &s));
        self.observe(batch, m, call, compare);
    }

    /// One call of the shadow (made before its report is locked: readers
    /// of the report never wait for a plugin call), counted in its report
    /// and the metrics. A failed call counts as a disagreeing batch; a
    /// batch the live version failed on (no `compare`) as one of those.
    fn observe<T>(
        &mut self,
        batch: &types::EventBatch,
        m: &Metrics,
        call: impl FnOnce(&mut dyn Stage) -> Result<T, PluginError>,
        compare: Option<impl FnOnce(&mut ShadowReport, u64, T) -> Vec<Disagreement>>,
    ) {
        let output = call(self.slot.plugin.as_mut());
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        report.batch(batch.seq.len());
        let seq = batch.seq.first().copied().unwrap_or_default();
        match (output, compare) {
            (Ok(output), Some(compare)) => {
                let found = compare(&mut report, seq, output);
                report.disagreeing_batches += u64::from(!found.is_empty());
                for kind in found {
                    m.plugin
                        .shadow_disagreements
                        .with_label_values(&[&*self.slot.name, kind.as_str()])
                        .inc();
                }
            }
            (Ok(_), None) => {
                report.live_failures += 1;
                report.disagreeing_batches += 1;
            }
            (Err(e), _) => {
                report.failures += 1;
                report.disagreeing_batches += 1;
                tracing::warn!(plugin = %self.slot.name, "shadow: {e}");
            }
        }
        report.agreement = 1.0 - report.disagreeing_batches as f64 / report.batches as f64;
    }
}

/// Start `shadow` beside the live plugin of its name, from that plugin's
/// state now. The shadow it replaces, or why not.
pub(super) fn install(
    stages: &mut Stages,
    mut shadow: Box<Shadow>,
) -> super::swap::ShadowInstalled {
    let name = shadow.slot.name.clone();
    let Some(i) = stages.position(&name) else {
        return Err((format!("no plugin named {name} is live"), shadow));
    };
    let live = stages.slots[i].plugin.as_mut();
    if let Err(msg) = super::swap::take_state(&name, live, shadow.slot.plugin.as_mut()) {
        return Err((msg, shadow));
    }
    Ok(stages.shadows.insert(name, *shadow).map(Box::new))
}

/// Make the shadow of `name` its live version, with the state the shadow
/// has; the replaced live slot.
pub(super) fn promote(stages: &mut Stages, name: &str) -> Result<Box<Slot>, String> {
    let i = stages
        .position(name)
        .ok_or_else(|| format!("no plugin named {name} is live"))?;
    let shadow = stages
        .shadows
        .remove(name)
        .ok_or_else(|| format!("{name} has no shadow"))?;
    shadow
        .report
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .ended = Some("promoted".into());
    stages.quarantined.remove(name);
    let old = std::mem::replace(&mut stages.slots[i], shadow.slot);
    stages.sort();
    Ok(Box::new(old))
}

impl Default for ShadowReport {
    fn default() -> Self {
        ShadowReport {
            plugin: String::new(),
            version: String::new(),
            sha256: String::new(),
            since_ms: 0,
            batches: 0,
            events: 0,
            disagreeing_batches: 0,
            agreement: 1.0,
            disagreements: BTreeMap::new(),
            examples: Vec::new(),
            max_score_difference: 0.0,
            mean_score_difference: 0.0,
            scored_batches: 0,
            failures: 0,
            live_failures: 0,
            ended: None,
        }
    }
}

/// `items` by `key`; several of one key stay apart (they are compared one
/// by one).
fn grouped<'a, K: Ord, T>(
    items: impl Iterator<Item = &'a T>,
    key: impl Fn(&'a T) -> K,
) -> BTreeMap<K, Vec<&'a T>> {
    let mut m: BTreeMap<K, Vec<&T>> = BTreeMap::new();
    for t in items {
        m.entry(key(t)).or_default().push(t);
    }
    m
}

/// A batch's alerts by (name, subject).
fn alerts(findings: &[types::Finding]) -> BTreeMap<(&str, &str), Vec<&types::Finding>> {
    let alerts = findings.iter().filter(|f| f.alert);
    grouped(alerts, |f| (f.name.as_str(), f.subject.as_str()))
}

/// A batch's action requests by what makes two the same one: rule,
/// action and target.
fn actions(
    requests: &[types::ActionRequest],
) -> BTreeMap<(&str, &str, &str), Vec<&types::ActionRequest>> {
    grouped(requests.iter(), |a| {
        (a.rule.as_str(), a.action.as_str(), a.target.as_str())
    })
}

/// What `only` has beyond `other`, key by key: two alerts of one rule and
/// subject against one are one disagreement.
fn beyond<'a, K: Ord + Copy, T>(
    only: &'a BTreeMap<K, Vec<&'a T>>,
    other: &'a BTreeMap<K, Vec<&'a T>>,
) -> impl Iterator<Item = (K, &'a T)> + 'a {
    only.iter().flat_map(move |(k, v)| {
        let matched = other.get(k).map_or(0, Vec::len);
        v.iter().skip(matched).map(move |t| (*k, *t))
    })
}

impl ShadowReport {
    /// Count and keep an example of a disagreement.
    fn note(&mut self, kind: Disagreement, rule: &str, example: impl FnOnce() -> Example) {
        *self
            .disagreements
            .entry(kind)
            .or_default()
            .entry(rule.to_string())
            .or_default() += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(example());
        }
    }

    /// A batch both saw.
    pub fn batch(&mut self, events: usize) {
        self.batches += 1;
        self.events += events as u64;
    }

    /// Compare two correlation results of one batch; the disagreements
    /// found, by kind.
    pub fn correlation(
        &mut self,
        batch_seq: u64,
        live: &types::CorrelationResult,
        shadow: &types::CorrelationResult,
    ) -> Vec<Disagreement> {
        let (l, s) = (alerts(&live.findings), alerts(&shadow.findings));
        let mut found = Vec::new();
        for (only, other, kind) in [
            (&l, &s, Disagreement::AlertOnlyLive),
            (&s, &l, Disagreement::AlertOnlyShadow),
        ] {
            for ((name, subject), f) in beyond(only, other) {
                self.note(kind, name, || Example {
                    kind,
                    rule: name.to_string(),
                    subject: subject.to_string(),
                    batch_seq,
                    evidence: f.evidence.clone(),
                    message: f.message.clone(),
                });
                found.push(kind);
            }
        }
        let d = (live.correlation_score - shadow.correlation_score).abs();
        self.max_score_difference = self.max_score_difference.max(d);
        self.scored_batches += 1;
        let n = self.scored_batches as f64;
        self.mean_score_difference += (d - self.mean_score_difference) / n;
        found
    }

    /// Compare two responses decisions of one batch.
    pub fn responses(
        &mut self,
        batch_seq: u64,
        live: &[types::ActionRequest],
        shadow: &[types::ActionRequest],
    ) -> Vec<Disagreement> {
        let mut found = Vec::new();
        let (l, s) = (actions(live), actions(shadow));
        for (only, other, kind) in [
            (&l, &s, Disagreement::ActionOnlyLive),
            (&s, &l, Disagreement::ActionOnlyShadow),
        ] {
            for (_, a) in beyond(only, other) {
                self.note(kind, &a.rule, || Example {
                    kind,
                    rule: a.rule.clone(),
                    subject: a.target.clone(),
                    batch_seq,
                    evidence: Vec::new(),
                    message: format!("{} {}: {}", a.action, a.target, a.reason),
                });
                found.push(kind);
            }
        }
        found
    }

    /// Compare two analytics windows of one batch.
    pub fn analytics(
        &mut self,
        batch_seq: u64,
        live: &types::WindowSnapshot,
        shadow: &types::WindowSnapshot,
    ) -> Vec<Disagreement> {
        let (l, s) = (&live.overall, &shadow.overall);
        let same =
            l.count == s.count && l.error_rate == s.error_rate && l.latency_avg == s.latency_avg;
        if same {
            return Vec::new();
        }
        let kind = Disagreement::Window;
        let message = format!(
            "count {} vs {}, error rate {} vs {}, mean latency {:?} vs {:?}",
            l.count, s.count, l.error_rate, s.error_rate, l.latency_avg, s.latency_avg
        );
        self.note(kind, "window", || Example {
            kind,
            rule: "window".into(),
            subject: String::new(),
            batch_seq,
            evidence: Vec::new(),
            message,
        });
        vec![kind]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(name: &str, alert: bool, evidence: &[u64]) -> types::Finding {
        types::Finding {
            name: name.into(),
            source: "rule".into(),
            subject: String::new(),
            alert,
            occurrences: 5,
            score: 0.5,
            message: format!("{name} fired"),
            evidence: evidence.to_vec(),
        }
    }

    fn result(findings: Vec<types::Finding>, score: f64) -> types::CorrelationResult {
        types::CorrelationResult {
            findings,
            correlation_score: score,
        }
    }

    #[test]
    fn alerts_only_one_side_raised_are_counted_with_their_events() {
        let mut r = ShadowReport::default();
        r.batch(3);
        let live = result(
            vec![finding("burst", true, &[1]), finding("slow", false, &[])],
            0.5,
        );
        let shadow = result(
            vec![finding("burst", true, &[1]), finding("slow", true, &[2, 3])],
            0.8,
        );
        let found = r.correlation(1, &live, &shadow);
        assert_eq!(found, vec![Disagreement::AlertOnlyShadow]);
        assert_eq!(r.disagreements[&Disagreement::AlertOnlyShadow]["slow"], 1);
        assert!(!r.disagreements.contains_key(&Disagreement::AlertOnlyLive));
        assert_eq!(r.examples[0].evidence, vec![2, 3]);
        assert!((r.max_score_difference - 0.3).abs() < 1e-9);
    }

    #[test]
    fn action_requests_are_matched_by_rule_action_and_target() {
        let req = |rule: &str, target: &str| types::ActionRequest {
            rule: rule.into(),
            action: "page".into(),
            target: target.into(),
            parameters: "{}".into(),
            reason: "why".into(),
        };
        let mut r = ShadowReport::default();
        let found = r.responses(
            7,
            &[req("a", "x"), req("b", "x")],
            &[req("a", "x"), req("a", "y")],
        );
        assert_eq!(
            found,
            vec![Disagreement::ActionOnlyLive, Disagreement::ActionOnlyShadow]
        );
        assert_eq!(r.disagreements[&Disagreement::ActionOnlyLive]["b"], 1);
        assert_eq!(r.disagreements[&Disagreement::ActionOnlyShadow]["a"], 1);
        assert_eq!(r.examples[1].subject, "y");
    }

    #[test]
    fn a_failed_shadow_call_is_a_disagreeing_batch() {
        use crate::pipeline::fake::Fake;
        use crate::plugin::{PluginKind, convert};
        use hxp_plugin_sdk::{Event, EventBatch, EventKind};
        let mut fake = Fake::new("rules", PluginKind::Correlation);
        fake.fails = true;
        let mut shadow = Shadow {
            slot: fake.slot(1),
            report: Arc::default(),
        };
        let events = [Event::new(1, EventKind::ErrorEvent, 0)];
        let batch = convert::batch_to_wit(EventBatch::from_events(&events));
        shadow.correlation(&batch, Some(&result(vec![], 0.0)), &Metrics::new(), |_| {});
        let r = shadow.report.lock().unwrap();
        assert_eq!((r.batches, r.failures, r.disagreeing_batches), (1, 1, 1));
        assert_eq!(r.agreement, 0.0);
        assert_eq!(r.scored_batches, 0);
    }

    #[test]
    fn two_alerts_of_one_rule_and_subject_against_one_are_one_disagreement() {
        let mut r = ShadowReport::default();
        let burst = || finding("burst", true, &[1]);
        let live = result(vec![burst(), burst()], 0.5);
        let found = r.correlation(1, &live, &result(vec![burst()], 0.5));
        assert_eq!(found, vec![Disagreement::AlertOnlyLive]);
        assert_eq!(r.disagreements[&Disagreement::AlertOnlyLive]["burst"], 1);
        assert!(r.correlation(2, &live, &live).is_empty());
    }

    #[test]
    fn a_batch_the_live_version_failed_on_still_reaches_the_shadow() {
        use crate::pipeline::fake::Fake;
        use crate::plugin::{PluginKind, convert};
        use hxp_plugin_sdk::{Event, EventBatch, EventKind};
        let fake = Fake::new("rules", PluginKind::Correlation);
        let mut shadow = Shadow {
            slot: fake.slot(1),
            report: Arc::default(),
        };
        let events = [Event::new(1, EventKind::ErrorEvent, 0)];
        let batch = convert::batch_to_wit(EventBatch::from_events(&events));
        shadow.correlation(&batch, None, &Metrics::new(), |_| {});
        let r = shadow.report.lock().unwrap();
        assert_eq!(
            (r.batches, r.events, r.failures, r.live_failures),
            (1, 1, 0, 1)
        );
        assert_eq!(r.disagreeing_batches, 1);
    }

    /// A shadow raises `slow`, which the live version does not: a
    /// disagreement, unless a silence holds `slow` back (it would not
    /// alert live either); the live side is judged after the silence too.
    #[test]
    fn a_shadow_is_compared_after_the_same_suppression() {
        use crate::pipeline::fake::{Fake, finding};
        use crate::pipeline::stages::{Stages, Switches};
        use crate::pipeline::suppress::silence::tests::{DAY0, new, on_rule};
        use crate::pipeline::suppress::{Silence, SilenceBoard, Suppressor};
        use crate::plugin::{Clock, PluginKind, convert};
        use hxp_plugin_sdk::{Event, EventBatch, EventKind};
        let disagreements = |silenced: bool, live_alerts: bool| {
            let mut live = Fake::new("rules", PluginKind::Correlation);
            live.findings = vec![finding("slow", live_alerts, 0.5)];
            live.findings.truncate(usize::from(live_alerts));
            let mut candidate = Fake::new("rules", PluginKind::Correlation);
            candidate.findings = vec![finding("slow", true, 0.5)];
            let mut stages = Stages::new(vec![live.slot(1)], Clock::manual(DAY0));
            if silenced {
                let mut n = new(DAY0, DAY0 + 1_000, None);
                n.matchers = on_rule("slow");
                let s = Silence::new("s".into(), 0, n).unwrap();
                stages.suppressor = Suppressor::new(SilenceBoard::new(vec![s]), Vec::new());
            }
            let report = Arc::new(Mutex::new(ShadowReport::default()));
            let shadow = Shadow {
                slot: candidate.slot(1),
                report: report.clone(),
            };
            assert!(install(&mut stages, Box::new(shadow)).is_ok());
            let events = [Event::new(1, EventKind::ErrorEvent, DAY0)];
            let batch = convert::batch_to_wit(EventBatch::from_events(&events));
            let on = Switches {
                analytics: false,
                correlation: true,
                responses: false,
            };
            stages.run(&batch, DAY0, on, &Metrics::new());
            let r = report.lock().unwrap();
            r.disagreements.clone()
        };
        let only_shadow = disagreements(false, false);
        assert_eq!(only_shadow[&Disagreement::AlertOnlyShadow]["slow"], 1);
        assert!(
            disagreements(true, false).is_empty(),
            "silenced on both sides"
        );
        assert!(disagreements(true, true).is_empty());
        assert!(disagreements(false, true).is_empty());
    }

    #[test]
    fn examples_are_capped() {
        let mut r = ShadowReport::default();
        let shadow = result(vec![finding("x", true, &[])], 0.0);
        for i in 0..50 {
            r.correlation(i, &result(vec![], 0.0), &shadow);
        }
        assert_eq!(r.disagreements[&Disagreement::AlertOnlyShadow]["x"], 50);
        assert_eq!(r.examples.len(), EXAMPLES);
    }
}
