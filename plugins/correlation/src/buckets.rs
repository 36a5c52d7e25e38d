//! Keys by second: the orders a keyed rule needs (when a key must be
//! tidied, which key was seen least recently) kept as one list of key ids
//! per second instead of an ordered set of (second, id) pairs. Adding is a
//! lookup among the seconds (a few hundred) and a push, where the ordered
//! set cost a search among all the pairs (tens of thousands) and, for the
//! least-recently-seen order, a removal as well. Entries are not removed
//! when they go stale: whoever takes one checks that it still holds.

use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct Buckets {
    by_sec: BTreeMap<i64, Vec<u32>>,
    /// An emptied list, reused for the next new second.
    spare: Vec<u32>,
}

impl Buckets {
    pub fn add(&mut self, sec: i64, id: u32) {
        match self.by_sec.get_mut(&sec) {
            Some(ids) => ids.push(id),
            None => {
                let mut ids = std::mem::take(&mut self.spare);
                ids.push(id);
                self.by_sec.insert(sec, ids);
            }
        }
    }

    /// The ids of the earliest second if it is at or before `sec`, removed.
    /// Hand the list back with [`Buckets::recycle`].
    pub fn take_due(&mut self, sec: i64) -> Option<(i64, Vec<u32>)> {
        let first = self.by_sec.first_entry()?;
        if *first.key() > sec {
            return None;
        }
        Some(first.remove_entry())
    }

    pub fn recycle(&mut self, mut ids: Vec<u32>) {
        ids.clear();
        if ids.capacity() > self.spare.capacity() {
            self.spare = ids;
        }
    }

    /// Take one id of the earliest second for which `valid(second, id)`
    /// holds, dropping the invalid ones on the way.
    pub fn pop_first_valid(&mut self, valid: impl Fn(i64, u32) -> bool) -> Option<u32> {
        loop {
            let mut first = self.by_sec.first_entry()?;
            let sec = *first.key();
            while let Some(id) = first.get_mut().pop() {
                if valid(sec, id) {
                    if first.get().is_empty() {
                        first.remove();
                    }
                    return Some(id);
                }
            }
            first.remove();
        }
    }

    /// Keep, of the seconds before `sec`, only the ids for which
    /// `valid(second, id)` holds (bounds the stale entries).
    pub fn compact_before(&mut self, sec: i64, valid: impl Fn(i64, u32) -> bool) {
        let mut emptied = Vec::new();
        for (&s, ids) in self.by_sec.range_mut(..sec) {
            ids.retain(|&id| valid(s, id));
            if ids.is_empty() {
                emptied.push(s);
            }
        }
        for s in emptied {
            self.by_sec.remove(&s);
        }
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_sec.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_in_order_of_second() {
        let mut b = Buckets::default();
        b.add(5, 1);
        b.add(3, 2);
        b.add(5, 3);
        assert_eq!(b.take_due(2), None);
        assert_eq!(b.take_due(4), Some((3, vec![2])));
        let (sec, ids) = b.take_due(10).unwrap();
        assert_eq!((sec, ids.as_slice()), (5, &[1, 3][..]));
        b.recycle(ids);
        assert_eq!(b.take_due(10), None);
        b.add(7, 4);
        assert_eq!(b.take_due(7), Some((7, vec![4])));
    }

    #[test]
    fn first_valid_skips_stale_entries_and_compaction_drops_them() {
        let mut b = Buckets::default();
        // Key 1 seen at 1 then 4 (its entry at 1 is stale), key 2 at 2.
        let last = |id: u32| if id == 1 { 4 } else { 2 };
        b.add(1, 1);
        b.add(2, 2);
        b.add(4, 1);
        assert_eq!(b.len(), 3);
        b.compact_before(3, |s, id| last(id) == s);
        assert_eq!(b.len(), 2, "the stale entry of key 1 at second 1 is gone");
        b.add(1, 1);
        assert_eq!(b.pop_first_valid(|s, id| last(id) == s), Some(2));
        assert_eq!(b.pop_first_valid(|s, id| last(id) == s), Some(1));
        assert_eq!(b.pop_first_valid(|s, id| last(id) == s), None);
        assert_eq!(b.len(), 0);
    }
}
