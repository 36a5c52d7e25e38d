//! Detection quality: the alerts a service raised on a scenario, against
//! the scenario's labels.
//!
//! - An alert *matches* an incident when its event time is within
//!   `[start, end + grace]` and its subject is the incident's key; an alert
//!   with an empty subject (a rule over the whole stream) matches by time
//!   alone, and is counted apart as *unkeyed*.
//! - Precision: alerts that match some incident / all alerts in the
//!   scenario's span. Recall: incidents with at least one matching alert /
//!   incidents.
//! - Time to detect: the first matching alert's time minus the incident's
//!   start (median and max over the detected incidents; the median of an
//!   even count is the mean of the middle two).
//! - Alerts per detected incident: matching (alert, incident) pairs / the
//!   detected incidents.
//! - Raw firings: what a system paging on every evaluation would send (see
//!   [`input::Firings`]), beside the alerts.

pub mod input;

use crate::cli::labels::{Incident, Labels};
use serde::Serialize;
use std::collections::BTreeMap;

/// An alert: its rule, subject and event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub rule: String,
    pub subject: String,
    pub at_ms: i64,
}

/// The scorer's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub grace_s: f64,
    pub incidents: usize,
    pub detected: usize,
    pub recall: f64,
    /// Alerts in the scenario's span (others are not about it).
    pub alerts: usize,
    pub true_positives: usize,
    pub precision: Option<f64>,
    pub unkeyed: Unkeyed,
    /// False alerts raised during an incident (or its grace) that name
    /// another subject: a symptom seen on another key (a degraded model's
    /// backend, a leaking backend's model) or a coincidence. Tells keying
    /// problems from alerts in quiet times.
    pub wrong_key: usize,
    pub outside_span: usize,
    pub time_to_detect_s: Option<Spread>,
    pub alerts_per_detected_incident: Option<f64>,
    pub raw_firings: Option<input::Firings>,
    /// Raw firings per alert: how much the alerting spared.
    pub raw_firings_per_alert: Option<f64>,
    pub by_kind: BTreeMap<&'static str, KindScore>,
    pub by_rule: BTreeMap<String, RuleScore>,
    pub by_incident: Vec<IncidentScore>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Unkeyed {
    pub alerts: usize,
    pub true_positives: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct KindScore {
    pub incidents: usize,
    pub detected: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RuleScore {
    pub alerts: usize,
    pub true_positives: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentScore {
    pub id: String,
    pub kind: &'static str,
    pub key: String,
    /// Matching alerts (keyed and unkeyed).
    pub alerts: usize,
    pub time_to_detect_s: Option<f64>,
    /// The rules that matched it, each once.
    pub rules: Vec<String>,
}

/// Whether `a` matches `i` (see the module's documentation).
pub fn matches(a: &Alert, i: &Incident, grace_ms: i64) -> bool {
    during(a, i, grace_ms) && (a.subject.is_empty() || a.subject == i.key)
}

/// Whether `a` was raised in `[start, end + grace]` of `i`.
fn during(a: &Alert, i: &Incident, grace_ms: i64) -> bool {
    i.start_ms <= a.at_ms && a.at_ms <= i.end_ms.saturating_add(grace_ms)
}

/// Score `alerts` against `labels`.
pub fn score(
    labels: &Labels,
    alerts: &[Alert],
    firings: Option<input::Firings>,
    grace_ms: i64,
) -> Report {
    let (inside, outside): (Vec<&Alert>, Vec<&Alert>) = alerts
        .iter()
        .partition(|a| labels.start_ms <= a.at_ms && a.at_ms <= labels.end_ms);
    let by_incident: Vec<IncidentScore> = labels
        .incidents
        .iter()
        .map(|i| incident_score(i, &inside, grace_ms))
        .collect();
    let hits: Vec<bool> = inside
        .iter()
        .map(|a| labels.incidents.iter().any(|i| matches(a, i, grace_ms)))
        .collect();
    let true_positives = hits.iter().filter(|&&h| h).count();
    let unkeyed = Unkeyed {
        alerts: inside.iter().filter(|a| a.subject.is_empty()).count(),
        true_positives: inside
            .iter()
            .zip(&hits)
            .filter(|(a, h)| a.subject.is_empty() && **h)
            .count(),
    };
    let wrong_key = inside
        .iter()
        .zip(&hits)
        .filter(|(a, h)| !**h && labels.incidents.iter().any(|i| during(a, i, grace_ms)))
        .count();
    let detected: Vec<&IncidentScore> = by_incident.iter().filter(|s| s.alerts > 0).collect();
    let ttd: Vec<f64> = detected.iter().filter_map(|s| s.time_to_detect_s).collect();
    let pairs: usize = detected.iter().map(|s| s.alerts).sum();
    Report {
        grace_s: grace_ms as f64 / 1000.0,
        incidents: labels.incidents.len(),
        detected: detected.len(),
        recall: ratio(detected.len(), labels.incidents.len()).unwrap_or(0.0),
        alerts: inside.len(),
        true_positives,
        precision: ratio(true_positives, inside.len()),
        unkeyed,
        wrong_key,
        outside_span: outside.len(),
        time_to_detect_s: spread(ttd),
        alerts_per_detected_incident: ratio(pairs, detected.len()),
        raw_firings_per_alert: firings.and_then(|f| ratio(f.firings as usize, inside.len())),
        raw_firings: firings,
        by_kind: by_kind(labels, &by_incident),
        by_rule: by_rule(&inside, &hits),
        by_incident,
    }
}

fn incident_score(i: &Incident, alerts: &[&Alert], grace_ms: i64) -> IncidentScore {
    let matching: Vec<&&Alert> = alerts.iter().filter(|a| matches(a, i, grace_ms)).collect();
    let mut rules: Vec<String> = matching.iter().map(|a| a.rule.clone()).collect();
    rules.sort();
    rules.dedup();
    IncidentScore {
        id: i.id.clone(),
        kind: i.kind.as_str(),
        key: i.key.clone(),
        alerts: matching.len(),
        time_to_detect_s: matching
            .iter()
            .map(|a| a.at_ms)
            .min()
            .map(|first| (first - i.start_ms) as f64 / 1000.0),
        rules,
    }
}

fn by_kind(labels: &Labels, scores: &[IncidentScore]) -> BTreeMap<&'static str, KindScore> {
    let mut out: BTreeMap<&'static str, KindScore> = BTreeMap::new();
    for (i, s) in labels.incidents.iter().zip(scores) {
        let k = out.entry(i.kind.as_str()).or_default();
        k.incidents += 1;
        k.detected += usize::from(s.alerts > 0);
    }
    out
}

fn by_rule(alerts: &[&Alert], hits: &[bool]) -> BTreeMap<String, RuleScore> {
    let mut out: BTreeMap<String, RuleScore> = BTreeMap::new();
    for (a, &hit) in alerts.iter().zip(hits) {
        let r = out.entry(a.rule.clone()).or_default();
        r.alerts += 1;
        r.true_positives += usize::from(hit);
    }
    out
}

fn ratio(a: usize, b: usize) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn spread(mut v: Vec<f64>) -> Option<Spread> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let max = *v.last()?;
    let median = match n % 2 {
        1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Some(Spread { median, max })
}

/// A few lines for people.
pub fn summary(r: &Report) -> String {
    let f = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.2}"));
    let ttd = r.time_to_detect_s.map_or("-".to_string(), |t| {
        format!("median {:.0} s, max {:.0} s", t.median, t.max)
    });
    let raw = match (&r.raw_firings, r.raw_firings_per_alert) {
        (Some(fi), per) => format!(
            "\nraw firings: {} over {} batches ({} per alert)",
            fi.firings,
            fi.batches,
            f(per)
        ),
        (None, _) => String::new(),
    };
    format!(
        "incidents: {} detected of {} (recall {:.2})\nalerts: {} true of {} (precision {}); unkeyed: {} true of {}; {} false during an incident (another subject); {} outside the span\ntime to detect: {ttd}; alerts per detected incident: {}{raw}",
        r.detected,
        r.incidents,
        r.recall,
        r.true_positives,
        r.alerts,
        f(r.precision),
        r.unkeyed.true_positives,
        r.unkeyed.alerts,
        r.wrong_key,
        r.outside_span,
        f(r.alerts_per_detected_incident),
    )
}

#[cfg(test)]
mod tests;
