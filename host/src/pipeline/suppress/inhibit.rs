//! Inhibition (`event_correlation.inhibit_rules`): within one batch, a
//! finding named `source` on subject K holds back the findings named in
//! `targets` on K; a source with an empty subject (a global finding) holds
//! them back on every subject. A finding never holds itself back. Every
//! finding of the batch counts as a source, whether or not it is itself
//! held back, so the result does not depend on the order of the rules.

use super::Key;
use crate::config::InhibitRule;
use std::collections::HashMap;

/// For each of `findings`, the source of the first rule (in config order)
/// that holds it back. `context`: further findings of the batch that may
/// inhibit these but are not judged here (the other plugins', when a
/// shadow's findings are judged).
pub fn inhibited<'r>(
    rules: &'r [InhibitRule],
    findings: &[Key],
    context: &[Key],
) -> Vec<Option<&'r str>> {
    if rules.is_empty() {
        return vec![None; findings.len()];
    }
    // How many findings of each (name, subject) the batch has.
    let mut present: HashMap<(&str, &str), usize> = HashMap::new();
    for k in findings.iter().chain(context) {
        *present.entry((k.rule, k.subject)).or_default() += 1;
    }
    let count = |name: &str, subject: &str| present.get(&(name, subject)).copied().unwrap_or(0);
    findings
        .iter()
        .map(|f| {
            let held = |r: &&InhibitRule| {
                if !r.targets.iter().any(|t| t == f.rule) {
                    return false;
                }
                // Sources of the rule on f's subject and global ones, not
                // counting f itself.
                let itself =
                    |subject: &str| usize::from(f.rule == r.source && f.subject == subject);
                count(&r.source, f.subject) > itself(f.subject) || count(&r.source, "") > itself("")
            };
            rules.iter().find(held).map(|r| r.source.as_str())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(source: &str, targets: &[&str]) -> InhibitRule {
        InhibitRule {
            source: source.into(),
            targets: targets.iter().map(|t| t.to_string()).collect(),
        }
    }

    fn key<'a>(rule: &'a str, subject: &'a str) -> Key<'a> {
        Key {
            rule,
            subject,
            source: "rule",
        }
    }

    /// A keyed source holds back its targets on its own subject only.
    #[test]
    fn a_keyed_source_holds_back_its_subject_only() {
        let rules = [rule("error_burst", &["high_latency"])];
        let f = [
            key("error_burst", "api"),
            key("high_latency", "api"),
            key("high_latency", "web"),
            key("high_latency", ""),
            key("low_satisfaction", "api"),
        ];
        let got = inhibited(&rules, &f, &[]);
        assert_eq!(got, vec![None, Some("error_burst"), None, None, None]);
    }

    /// A global source (empty subject) holds back its targets on every
    /// subject, the global one included.
    #[test]
    fn a_global_source_holds_back_every_subject() {
        let rules = [rule("high_error_rate", &["high_latency", "error_burst"])];
        let f = [
            key("high_latency", "api"),
            key("error_burst", "web"),
            key("high_latency", ""),
            key("high_error_rate", ""),
        ];
        let got = inhibited(&rules, &f, &[]);
        let h = Some("high_error_rate");
        assert_eq!(got, vec![h, h, h, None]);
    }

    /// A rule that names its source among its targets: the finding is not
    /// held back by itself, but by another of its name.
    #[test]
    fn a_finding_never_holds_itself_back() {
        let rules = [rule("error_burst", &["error_burst"])];
        let alone = [key("error_burst", "api")];
        assert_eq!(inhibited(&rules, &alone, &[]), vec![None]);
        let global_alone = [key("error_burst", "")];
        assert_eq!(inhibited(&rules, &global_alone, &[]), vec![None]);
        // The global one holds back the keyed one; not the other way.
        let both = [key("error_burst", ""), key("error_burst", "api")];
        assert_eq!(
            inhibited(&rules, &both, &[]),
            vec![None, Some("error_burst")]
        );
        // Two of the same name and subject (two plugins): each the other's.
        let twins = [key("error_burst", "api"), key("error_burst", "api")];
        let e = Some("error_burst");
        assert_eq!(inhibited(&rules, &twins, &[]), vec![e, e]);
    }

    /// Sources in the context count; the first rule that holds wins; no
    /// rules, nothing held.
    #[test]
    fn context_sources_count_and_the_first_rule_names_the_reason() {
        let rules = [
            rule("maintenance", &["high_latency"]),
            rule("error_burst", &["high_latency"]),
        ];
        let f = [key("high_latency", "api")];
        let ctx = [key("error_burst", "api"), key("maintenance", "")];
        assert_eq!(inhibited(&rules, &f, &ctx), vec![Some("maintenance")]);
        assert_eq!(inhibited(&rules, &f, &ctx[..1]), vec![Some("error_burst")]);
        assert_eq!(inhibited(&rules, &f, &[]), vec![None]);
        assert_eq!(inhibited(&[], &f, &ctx), vec![None]);
    }
}
