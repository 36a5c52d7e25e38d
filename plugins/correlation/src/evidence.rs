//! Recent evidence (event sequence numbers) of the findings that are not
//! keyed: the window rules' and the patterns'. Most events push some (every
//! request is evidence of a latency spike), so a finding's name is resolved
//! to an index once, when the rules are set up, and its subject (a service,
//! a model, or none) is one hash lookup. Nested maps looked up by name and
//! subject strings cost a third of the correlation stage.

use crate::EVIDENCE;
use crate::hash::{KeyMap, key_map};
use std::collections::{BTreeMap, VecDeque};

/// As saved in the state (versions 1 to 3): name -> subject -> seqs.
pub type Saved = BTreeMap<String, BTreeMap<String, VecDeque<u64>>>;

/// `seq` as the newest of the last [`EVIDENCE`] (kept once if pushed twice
/// in a row), for any finding, keyed ones included.
pub fn push_recent(seqs: &mut VecDeque<u64>, seq: u64) {
    if seqs.back() == Some(&seq) {
        return;
    }
    if seqs.len() == EVIDENCE {
        seqs.pop_front();
    }
    seqs.push_back(seq);
}

/// A finding name's index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name(usize);

impl Name {
    pub const ERROR_BURST: Name = Name(0);
    pub const MODEL_DIVERGENCE: Name = Name(1);
    pub const LATENCY_SPIKE: Name = Name(2);

    /// The window rule at index `i` of the rules given to [`Evidence::new`].
    pub fn rule(i: usize) -> Name {
        Name(3 + i)
    }
}

pub struct Evidence {
    names: Vec<String>,
    subjects: Vec<KeyMap<VecDeque<u64>>>,
}

impl Evidence {
    /// For the three patterns and the window rules named `rules`.
    pub fn new<'a>(rules: impl IntoIterator<Item = &'a str>) -> Evidence {
        let names: Vec<String> = ["error_burst", "model_divergence", "latency_spike"]
            .into_iter()
            .chain(rules)
            .map(str::to_string)
            .collect();
        Evidence {
            subjects: names.iter().map(|_| key_map()).collect(),
            names,
        }
    }

    pub fn push(&mut self, name: Name, subject: &str, seq: u64) {
        let Some(subjects) = self.subjects.get_mut(name.0) else {
            return;
        };
        let seqs = match subjects.get_mut(subject) {
            Some(d) => d,
            None => subjects.entry(subject.to_string()).or_default(),
        };
        push_recent(seqs, seq);
    }

    pub fn get(&self, name: &str, subject: &str) -> Option<&VecDeque<u64>> {
        let i = self.names.iter().position(|n| n == name)?;
        self.subjects[i].get(subject)
    }

    /// Subjects held, over all names.
    pub fn len(&self) -> usize {
        self.subjects.iter().map(KeyMap::len).sum()
    }

    /// Keep the entries for which `keep(name, subject)` holds.
    pub fn retain(&mut self, keep: impl Fn(&str, &str) -> bool) {
        for (name, subjects) in self.names.iter().zip(&mut self.subjects) {
            subjects.retain(|s, _| keep(name, s));
        }
    }

    pub fn save(&self) -> Saved {
        self.names
            .iter()
            .zip(&self.subjects)
            .filter(|(_, s)| !s.is_empty())
            .map(|(n, s)| {
                let subjects = s.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                (n.clone(), subjects)
            })
            .collect()
    }

    /// Take over the saved entries of the names known here (a rule that
    /// was removed or renamed has no finding to report them with).
    pub fn load(&mut self, saved: Saved) {
        for (name, subjects) in saved {
            if let Some(i) = self.names.iter().position(|n| *n == name) {
                self.subjects[i].extend(subjects);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_seqs_per_name_and_subject_across_a_save() {
        let mut e = Evidence::new(["slow"]);
        for seq in 0..15 {
            e.push(Name::ERROR_BURST, "api", seq);
        }
        e.push(Name::rule(0), "", 99);
        let api: Vec<u64> = e
            .get("error_burst", "api")
            .unwrap()
            .iter()
            .copied()
            .collect();
        assert_eq!(api, (5..15).collect::<Vec<_>>(), "the last {EVIDENCE}");
        assert_eq!(e.get("error_burst", "db"), None);
        assert_eq!(e.len(), 2);
        // Loaded where the rule is gone: its entries are dropped.
        let mut other = Evidence::new(["fast"]);
        other.load(e.save());
        assert_eq!(other.len(), 1);
        assert_eq!(other.get("error_burst", "api").map(VecDeque::len), Some(10));
        other.retain(|name, _| name != "error_burst");
        assert_eq!(other.len(), 0);
    }
}
