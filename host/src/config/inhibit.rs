//! `event_correlation.inhibit_rules`: findings that hold back others. The
//! host applies them between the correlation and responses stages (see
//! `pipeline::suppress`); the correlation plugin never sees them.

use serde::{Deserialize, Serialize};

/// While a finding named `source` is active on a subject, the findings
/// named in `targets` on that subject (on every subject, when the source's
/// subject is empty: a global finding) do not alert and reach no
/// responses plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    /// The finding (rule or pattern name) that inhibits.
    pub source: String,
    /// The findings it holds back.
    pub targets: Vec<String>,
}

/// Every name is given: an empty one would match no finding, silently.
pub(super) fn check(rules: &[InhibitRule]) -> Result<(), String> {
    for (i, r) in rules.iter().enumerate() {
        let at = format!("event_correlation.inhibit_rules[{i}]");
        if r.source.trim().is_empty() {
            return Err(format!("{at}.source: must name a finding"));
        }
        if r.targets.is_empty() {
            return Err(format!("{at}.targets: must name at least one finding"));
        }
        if let Some(j) = r.targets.iter().position(|t| t.trim().is_empty()) {
            return Err(format!("{at}.targets[{j}]: must name a finding"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(yaml: &str) -> anyhow::Result<Config> {
        Config::from_yaml(yaml, "test.yaml", &[])
    }

    #[test]
    fn inhibit_rules_load_and_name_their_key_when_wrong() {
        let c = load(
            "event_correlation:\n  inhibit_rules:\n    - {source: error_burst, targets: [high_error_rate, high_latency]}\n",
        )
        .unwrap();
        let r = &c.event_correlation.inhibit_rules[0];
        assert_eq!(r.source, "error_burst");
        assert_eq!(r.targets, vec!["high_error_rate", "high_latency"]);
        for (yaml, want) in [
            (
                "{source: '', targets: [a]}",
                "inhibit_rules[0].source: must name",
            ),
            ("{source: a, targets: []}", "inhibit_rules[0].targets: must"),
            (
                "{source: a, targets: [b, ' ']}",
                "inhibit_rules[0].targets[1]: must",
            ),
            ("{source: a, targets: [b], equal: [x]}", "unknown field"),
        ] {
            let text = format!("event_correlation:\n  inhibit_rules:\n    - {yaml}\n");
            let e = load(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    /// A host key: the correlation plugin's section does not carry it.
    #[test]
    fn the_plugin_section_leaves_inhibit_rules_out() {
        let c = load("event_correlation:\n  inhibit_rules:\n    - {source: a, targets: [b]}\n")
            .unwrap();
        let json = c.section_json("event_correlation").unwrap();
        assert!(!json.contains("inhibit_rules"), "{json}");
        assert!(json.contains("correlation_rules"), "{json}");
    }
}
