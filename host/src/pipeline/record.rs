//! What a processed batch stores: the per-batch results every processing
//! record of it shares (analytics, correlation and response JSON), its
//! alerts, and one row per new event.

use super::batcher::Item;
use super::stages::{Correlated, StageResults};
use crate::store::{AlertRow, BatchRow, EventRow};
use hxp_plugin_sdk::{ActionRequest, Finding, Snapshot};
use serde_json::json;

/// The batch's shared results, as stored JSON.
pub(super) struct BatchRecord {
    pub analytics: Option<String>,
    pub correlation: Option<String>,
    pub response: Option<String>,
    /// The active findings the responses plugins saw, those held back
    /// left out (what action requests store as their context).
    pub findings: String,
}

impl BatchRecord {
    pub(super) fn new(r: &StageResults) -> BatchRecord {
        BatchRecord {
            analytics: r.snapshot.as_ref().map(analytics_json),
            correlation: r.correlation.as_ref().map(correlation_json),
            response: r.responding.then(|| response_json(&r.actions)),
            findings: unheld_json(r),
        }
    }

    /// The batch row, when the batch stored any event.
    pub(super) fn row(
        self,
        batch_seq: u64,
        (processed_at, watermark): (i64, i64),
        size: usize,
        plugins: &str,
    ) -> Option<BatchRow> {
        (size > 0).then(|| BatchRow {
            batch_seq,
            processed_at,
            size,
            analytics: self.analytics,
            correlation: self.correlation,
            response: self.response,
            plugins: Some(plugins.to_string()),
            watermark: Some(watermark),
        })
    }
}

fn unheld_json(r: &StageResults) -> String {
    let unheld: Vec<&Finding> = r.correlation.iter().flat_map(|c| c.unheld()).collect();
    serde_json::to_string(&unheld).unwrap_or_else(|_| "[]".into())
}

/// The findings of the batch (none when correlation did not run).
pub(super) fn findings(r: &StageResults) -> &[Finding] {
    r.correlation
        .as_ref()
        .map(|c| c.findings.as_slice())
        .unwrap_or_default()
}

/// The requirements' `analytics_results` of a processing record.
fn analytics_json(s: &Snapshot) -> String {
    let o = &s.overall;
    let mut m = serde_json::Map::new();
    m.insert("throughput".into(), json!(o.throughput));
    if let Some(l) = o.latency_avg {
        m.insert("latency".into(), json!(l));
    }
    m.insert("error_rate".into(), json!(o.error_rate));
    if let Some(u) = o.user_satisfaction {
        m.insert("user_satisfaction".into(), json!(u));
    }
    m.insert("business_value".into(), json!(o.business_value));
    serde_json::Value::Object(m).to_string()
}

/// The requirements' `correlation_results`.
fn correlation_json(c: &Correlated) -> String {
    json!({
        "patterns_detected": pattern_names(&c.findings),
        "alert_triggered": c.findings.iter().any(|f| f.alert),
        "correlation_score": c.score,
    })
    .to_string()
}

/// The requirements' `automated_response`.
fn response_json(actions: &[ActionRequest]) -> String {
    json!({
        "response_triggered": !actions.is_empty(),
        "response_type": actions.first().map(|a| a.action.as_str()).unwrap_or("none"),
        "response_details": {
            "actions": actions.iter().map(|a| json!({
                "rule": a.rule, "action": a.action, "target": a.target, "reason": a.reason,
            })).collect::<Vec<_>>(),
        },
    })
    .to_string()
}

/// Finding names, each once, in order.
pub fn pattern_names(findings: &[Finding]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for f in findings {
        if !names.contains(&f.name.as_str()) {
            names.push(&f.name);
        }
    }
    names
}

/// One alert row per finding that alerts, and per finding that would
/// have had a silence or an inhibit rule not held it back (with what did:
/// the record shows what was held back).
pub(super) fn alerts(r: &StageResults, raised_at: i64) -> Vec<AlertRow> {
    let Some(c) = &r.correlation else {
        return Vec::new();
    };
    let row = |(i, f): (usize, &Finding)| {
        let held = c.holds.get(i).filter(|h| h.alerted);
        (f.alert || held.is_some()).then(|| AlertRow {
            raised_at,
            rule: f.name.clone(),
            source: f.source.clone(),
            subject: f.subject.clone(),
            occurrences: f.occurrences as i64,
            score: f.score,
            message: f.message.clone(),
            evidence: json!(f.evidence).to_string(),
            suppressed_by: held.map(|h| h.reason.to_string()),
        })
    };
    c.findings.iter().enumerate().filter_map(row).collect()
}

/// A row per new event (duplicates store nothing). The stored text moves
/// out of the item; the item only acknowledges from now on.
pub(super) fn event_rows(items: &mut [Item], processed_at: i64, batch_seq: u64) -> Vec<EventRow> {
    items
        .iter_mut()
        .filter(|i| !i.duplicate)
        .map(|i| EventRow {
            seq: i.seq,
            event_id: i.event.typed.id,
            event_type: i.event.kind.as_str(),
            event_time: i.event.time_ms,
            ingested_at: i.ingested_at,
            processed_at,
            batch_seq,
            source: i.source.clone(),
            data: std::mem::take(&mut i.event.data),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::suppress::Holds;

    fn finding(name: &str, alert: bool) -> Finding {
        Finding {
            name: name.into(),
            source: "rule".into(),
            subject: "all".into(),
            alert,
            occurrences: 3,
            score: 0.5,
            message: format!("{name} fired"),
            evidence: vec![1, 2],
        }
    }

    #[test]
    fn pattern_names_are_unique_in_order() {
        let f = [finding("b", true), finding("a", false), finding("b", false)];
        assert_eq!(pattern_names(&f), vec!["b", "a"]);
    }

    fn correlated(findings: Vec<Finding>) -> StageResults {
        StageResults {
            correlation: Some(Correlated {
                findings,
                score: 0.5,
                holds: Holds::default(),
            }),
            ..StageResults::default()
        }
    }

    #[test]
    fn only_alerting_findings_become_alert_rows() {
        let rows = alerts(
            &correlated(vec![finding("x", true), finding("y", false)]),
            77,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].rule, "x");
        assert_eq!(rows[0].raised_at, 77);
        assert_eq!(rows[0].evidence, "[1,2]");
        assert_eq!(rows[0].suppressed_by, None);
    }

    /// Held back by a silence (x, alerting), by inhibition (y, not
    /// alerting): x is an alert row with why, y none; neither is in the
    /// responses' context, and the batch triggered no alert.
    #[test]
    fn a_held_back_alert_is_recorded_with_why_and_triggers_nothing() {
        use crate::pipeline::suppress::{Held, Reason};
        let mut x = finding("x", false);
        x.subject = "api".into();
        let mut r = correlated(vec![x, finding("y", false), finding("z", false)]);
        let holds = [
            Some(Held {
                reason: Reason::Silence("id-1".into()),
                alerted: true,
            }),
            Some(Held {
                reason: Reason::Inhibited("x".into()),
                alerted: false,
            }),
            None,
        ];
        r.correlation.as_mut().unwrap().holds = holds.into_iter().collect();
        let rows = alerts(&r, 5);
        let got: Vec<(&str, Option<&str>)> = rows
            .iter()
            .map(|a| (a.rule.as_str(), a.suppressed_by.as_deref()))
            .collect();
        assert_eq!(got, vec![("x", Some("silence:id-1"))]);
        let rec = BatchRecord::new(&r);
        let c: serde_json::Value =
            serde_json::from_str(rec.correlation.as_deref().unwrap()).unwrap();
        assert_eq!(c["alert_triggered"], json!(false));
        assert_eq!(c["patterns_detected"], json!(["x", "y", "z"]));
        let context: Vec<serde_json::Value> = serde_json::from_str(&rec.findings).unwrap();
        assert_eq!(context.len(), 1);
        assert_eq!(context[0]["name"], "z");
    }

    #[test]
    fn the_record_has_the_requirements_fields() {
        let r = StageResults {
            correlation: Some(Correlated {
                findings: vec![finding("burst", true)],
                score: 0.9,
                holds: Holds::default(),
            }),
            actions: vec![ActionRequest {
                rule: "r".into(),
                action: "scale_models".into(),
                target: "all".into(),
                parameters: "{}".into(),
                reason: "because".into(),
            }],
            responding: true,
            ..StageResults::default()
        };
        let rec = BatchRecord::new(&r);
        assert!(rec.analytics.is_none(), "no analytics ran");
        let c: serde_json::Value =
            serde_json::from_str(rec.correlation.as_deref().unwrap()).unwrap();
        assert_eq!(c["patterns_detected"], json!(["burst"]));
        assert_eq!(c["alert_triggered"], json!(true));
        let a: serde_json::Value = serde_json::from_str(rec.response.as_deref().unwrap()).unwrap();
        assert_eq!(a["response_type"], "scale_models");
        assert_eq!(a["response_details"]["actions"][0]["reason"], "because");
        let row = rec.row(5, (10, 10), 0, "{}");
        assert!(row.is_none(), "a batch of duplicates stores no batch row");
    }
}
