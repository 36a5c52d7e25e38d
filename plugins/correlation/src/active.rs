//! The findings reported active at the last evaluation, by name then
//! subject, so that a finding alerts only when it becomes active. Kept
//! as nested maps looked up by `&str` and marked with the evaluation's
//! number, so that findings that stay active cost no allocation per
//! evaluation (there can be thousands of keys over their thresholds).
//! Hashed, not ordered: every active finding is looked up at every
//! evaluation, and a tree lookup compares strings at every level.

use crate::hash::{KeyMap, key_map};
use std::collections::BTreeSet;

pub struct Active {
    by_name: KeyMap<KeyMap<u64>>,
    evaluation: u64,
}

impl Default for Active {
    fn default() -> Self {
        Active {
            by_name: key_map(),
            evaluation: 0,
        }
    }
}

impl Active {
    /// Start an evaluation: `mark` the findings that hold, then `sweep`.
    pub fn begin(&mut self) {
        self.evaluation += 1;
    }

    /// Mark (name, subject) as active now; true when it was not before.
    pub fn mark(&mut self, name: &str, subject: &str) -> bool {
        let now = self.evaluation;
        let subjects = match self.by_name.get_mut(name) {
            Some(s) => s,
            None => self.by_name.entry(name.to_string()).or_insert_with(key_map),
        };
        match subjects.get_mut(subject) {
            // Present: marked in the last evaluation (the sweep keeps
            // nothing older) or already in this one.
            Some(at) => {
                *at = now;
                false
            }
            None => {
                subjects.insert(subject.to_string(), now);
                true
            }
        }
    }

    /// Forget what was not marked in this evaluation.
    pub fn sweep(&mut self) {
        let now = self.evaluation;
        self.by_name.retain(|_, subjects| {
            subjects.retain(|_, at| *at == now);
            !subjects.is_empty()
        });
    }

    pub fn contains(&self, name: &str, subject: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|s| s.contains_key(subject))
    }

    /// As saved (state versions 1 to 3).
    pub fn to_set(&self) -> BTreeSet<(String, String)> {
        self.by_name
            .iter()
            .flat_map(|(n, s)| s.keys().map(move |k| (n.clone(), k.clone())))
            .collect()
    }

    pub fn from_set(set: BTreeSet<(String, String)>) -> Active {
        let mut a = Active::default();
        for (n, s) in set {
            a.by_name.entry(n).or_insert_with(key_map).insert(s, 0);
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_only_on_the_evaluation_it_turns_active() {
        let mut a = Active::default();
        a.begin();
        assert!(a.mark("r", "x"));
        assert!(!a.mark("r", "x"), "twice in one evaluation");
        a.sweep();
        a.begin();
        assert!(!a.mark("r", "x"), "still active");
        assert!(a.mark("r", "y"));
        a.sweep();
        a.begin();
        a.mark("r", "y");
        a.sweep();
        assert!(!a.contains("r", "x"));
        a.begin();
        assert!(a.mark("r", "x"), "active again after a gap");
        a.sweep();
        let saved = a.to_set();
        assert_eq!(saved.len(), 1);
        let mut b = Active::from_set(saved);
        b.begin();
        assert!(!b.mark("r", "x"), "loaded as active");
    }
}
