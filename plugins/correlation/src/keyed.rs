//! Rules that run per key (`group_by`), and sequences and absences.
//!
//! Each rule keeps a table of keys (the values of its `group_by` fields,
//! one key `""` without them). A key holds its occurrences per second of
//! the window, its own window sums when a condition reads an aggregate
//! (`error_rate` of that model), a sequence's partial matches and an
//! absence's deadline. The work per event is one hash lookup per rule the
//! event can match; the work per second is proportional to the keys that
//! change:
//! - `checks` holds per second the keys that must be tidied then (a second
//!   of it leaves the window, a partial sequence runs out of time), so the
//!   window slides without visiting every key;
//! - `over` is the set of keys at or above the threshold, so the findings
//!   cost what is active, not what is tracked;
//! - `lru` holds per second the keys last seen then: at `max_keys` the
//!   least recently seen one is evicted, and evictions are counted and
//!   reported as a `key_limit` finding while the window holds one.
//!
//! Keys come from events, so an attacker chooses them: the key table's hash
//! is seeded at random per instance ([`crate::hash`]).

use crate::buckets::Buckets;
use crate::config::{Detect, KeyField, Rule};
use crate::evidence::push_recent as push_evidence;
use crate::hash::{KeyMap, key_map};
use crate::metrics::{Metric, Totals, feeds, value};
use hxp_plugin_sdk::expr::Expr;
use hxp_plugin_sdk::{EventRef, Finding};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, VecDeque};

/// One key's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Key {
    name: String,
    /// The newest second it was seen at (its place in `lru`).
    last_sec: i64,
    /// Occurrences per second, oldest first.
    hits: VecDeque<(i64, u32)>,
    /// The sum of `hits` (rebuilt on load).
    #[serde(skip)]
    total: u64,
    /// Its events' sums per second, when the rule reads an aggregate.
    aggs: VecDeque<(i64, Totals)>,
    #[serde(skip)]
    sums: Totals,
    evidence: VecDeque<u64>,
    /// Sequence: per step reached (all but the last), the partial match
    /// (first event's time, reaching event's time, first event's seq).
    partial: Vec<Option<(i64, i64, u64)>>,
    /// Absence: (deadline, the `after` event's time, its seq).
    deadline: Option<(i64, i64, u64)>,
    /// Its finding as last reported, until its count changes (thousands
    /// of keys can be over their thresholds, reported every batch). Boxed:
    /// most keys never have one, and a key's size is what the table moves.
    #[serde(skip)]
    shown: Option<Box<Finding>>,
}

impl Key {
    /// Holds nothing that a later event or the clock could act on.
    fn is_empty(&self) -> bool {
        self.hits.is_empty()
            && self.aggs.is_empty()
            && self.deadline.is_none()
            && self.partial.iter().all(Option::is_none)
    }
}

/// A keyed rule and its keys.
pub struct KeyedRule {
    pub rule: Rule,
    window: i64,
    sums_needed: bool,
    ids: KeyMap<u32>,
    keys: Vec<Option<Key>>,
    free: Vec<u32>,
    checks: Buckets,
    /// Stale entries (a key seen again later, or removed) are skipped
    /// when evicting and dropped once their second leaves the window.
    lru: Buckets,
    /// The second before which `lru` was compacted last.
    lru_compacted: i64,
    deadlines: BTreeSet<(i64, u32)>,
    over: BTreeSet<u32>,
    /// `over` in order of key name, as reported; rebuilt when `over`
    /// changes instead of sorting the findings every batch.
    over_by_name: Option<Vec<u32>>,
    evicted: u64,
    last_eviction_sec: i64,
    /// Reused to build multi-field keys.
    buf: String,
}

/// Serialized form of a keyed rule.
#[derive(Serialize, Deserialize)]
pub struct KeyedState {
    rule: String,
    /// The rule's definition; a changed definition starts empty.
    shape: String,
    keys: Vec<Key>,
    evicted: u64,
    last_eviction_sec: i64,
}

impl KeyedState {
    pub fn rule(&self) -> &str {
        &self.rule
    }
}

impl KeyedRule {
    pub fn new(rule: Rule, window_secs: u32) -> KeyedRule {
        KeyedRule {
            sums_needed: rule.reads_window(),
            rule,
            window: window_secs as i64,
            ids: key_map(),
            keys: Vec::new(),
            free: Vec::new(),
            checks: Buckets::default(),
            lru: Buckets::default(),
            lru_compacted: i64::MIN,
            deadlines: BTreeSet::new(),
            over: BTreeSet::new(),
            over_by_name: None,
            evicted: 0,
            last_eviction_sec: i64::MIN,
            buf: String::new(),
        }
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// One event, folded at second `sec`; `d` is its contribution to the
    /// window sums (computed once per event, not per rule), `covered` the
    /// seconds the window covers (for `throughput`).
    pub fn on_event(&mut self, e: &EventRef, d: &Totals, sec: i64, covered: f64) {
        if self.sums_needed {
            return self.on_event_with_sums(e, d, sec, covered);
        }
        if !self.rule.metrics.iter().any(|&m| feeds(m, e)) {
            return;
        }
        // The conditions read the event only: the key is built and looked
        // up only if one holds (most events match nothing).
        let seen = seen(&self.rule.detect, e, &Totals::ZERO, covered);
        if !seen.any() {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        if let Some(key) = key_of(&self.rule.group_by, e, &mut buf) {
            let id = self.intern(key, sec);
            self.act(id, e, sec, seen);
        }
        self.buf = buf;
    }

    /// A rule reading its key's aggregates: the key's sums take every event
    /// of the key, and the conditions read them with `e` in.
    fn on_event_with_sums(&mut self, e: &EventRef, d: &Totals, sec: i64, covered: f64) {
        let mut buf = std::mem::take(&mut self.buf);
        if let Some(key) = key_of(&self.rule.group_by, e, &mut buf) {
            let id = self.intern(key, sec);
            self.add_sums(id, sec, d);
            let sums = self.key(id).map_or(&Totals::ZERO, |k| &k.sums);
            let seen = seen(&self.rule.detect, e, sums, covered);
            if seen.any() {
                self.act(id, e, sec, seen);
            }
        }
        self.buf = buf;
    }

    /// What the rule does with an event `seen` for key `id`.
    fn act(&mut self, id: u32, e: &EventRef, sec: i64, seen: Seen) {
        match seen {
            Seen::Count(_) => self.hit(id, sec, e.seq),
            Seen::Steps(held, within_ms) => self.step_sequence(id, e, sec, held, within_ms),
            Seen::Absence(a, x, within_ms) => self.step_absence(id, e, a, x, within_ms),
        }
        // An event that started nothing (a later step, an `expect` with
        // no wait) leaves no key behind.
        if self.key(id).is_some_and(Key::is_empty) {
            self.remove(id);
        }
    }

    /// A sequence event (`held`: bit i set when step i holds): it extends
    /// the furthest partial match it can (each event extends one), else it
    /// starts a new one.
    fn step_sequence(&mut self, id: u32, e: &EventRef, sec: i64, held: u8, within_ms: i64) {
        let Some(k) = self.keys.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        let last = k.partial.len();
        for step in (1..=last).rev() {
            if held & (1 << step) == 0 {
                continue;
            }
            let Some((start, at, first)) = k.partial[step - 1] else {
                continue;
            };
            if e.time_ms < at || e.time_ms - start > within_ms {
                continue;
            }
            k.partial[step - 1] = None;
            if step < last {
                k.partial[step] = Some((start, e.time_ms, first));
                return;
            }
            push_evidence(&mut k.evidence, first);
            self.hit(id, sec, e.seq);
            return;
        }
        if held & 1 == 1 {
            // The newest start has the most time left.
            k.partial[0] = Some((e.time_ms, e.time_ms, e.seq));
            let until = (e.time_ms + within_ms).div_euclid(1000) + 1;
            self.checks.add(until, id);
        }
    }

    /// An absence event: `expect` in time clears the wait, `after` starts
    /// one (the first `after` sets the deadline; later ones do not move it).
    fn step_absence(&mut self, id: u32, e: &EventRef, after: bool, expect: bool, within_ms: i64) {
        let Some(k) = self.keys.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if let Some((d, _, _)) = k
            .deadline
            .filter(|&(d, at, _)| expect && at <= e.time_ms && e.time_ms <= d)
        {
            k.deadline = None;
            self.deadlines.remove(&(d, id));
        }
        if after && k.deadline.is_none() {
            let d = e.time_ms.saturating_add(within_ms);
            k.deadline = Some((d, e.time_ms, e.seq));
            self.deadlines.insert((d, id));
        }
    }

    /// Absences whose deadline is before `before_ms` fire, each an
    /// occurrence at its deadline's second (if still in the window ending
    /// at `head_sec`).
    pub fn fire_due(&mut self, before_ms: i64, head_sec: i64) {
        while let Some(&(d, id)) = self.deadlines.first() {
            if d >= before_ms {
                break;
            }
            self.deadlines.pop_first();
            let Some(k) = self.keys.get_mut(id as usize).and_then(Option::as_mut) else {
                continue;
            };
            let Some((_, _, seq)) = k.deadline.take() else {
                continue;
            };
            push_evidence(&mut k.evidence, seq);
            let sec = d.div_euclid(1000);
            if sec > head_sec.saturating_sub(self.window) {
                self.hit(id, sec, seq);
            } else {
                self.tidy(id, head_sec);
            }
        }
    }

    /// The window's head moved to `head_sec`: tidy the keys due.
    pub fn advance(&mut self, head_sec: i64) {
        while let Some((_, ids)) = self.checks.take_due(head_sec) {
            for &id in &ids {
                self.tidy(id, head_sec);
            }
            self.checks.recycle(ids);
        }
        let cutoff = head_sec.saturating_sub(self.window);
        if cutoff > self.lru_compacted {
            let keys = &self.keys;
            self.lru
                .compact_before(cutoff, |s, id| seen_last(keys, s, id));
            self.lru_compacted = cutoff;
        }
    }

    /// Remove the least recently seen key, counting it.
    fn evict(&mut self, sec: i64) {
        let keys = &self.keys;
        if let Some(old) = self.lru.pop_first_valid(|s, id| seen_last(keys, s, id)) {
            self.remove(old);
            self.evicted += 1;
            self.last_eviction_sec = self.last_eviction_sec.max(sec);
        }
    }

    fn key(&self, id: u32) -> Option<&Key> {
        self.keys.get(id as usize).and_then(Option::as_ref)
    }

    /// The key's id, made (evicting the least recently seen key at the
    /// limit) if new; seen at `sec`.
    fn intern(&mut self, name: &str, sec: i64) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            self.touch(id, sec);
            return id;
        }
        if self.ids.len() >= self.rule.max_keys {
            self.evict(sec);
        }
        let steps = match &self.rule.detect {
            Detect::Sequence { steps, .. } => steps.len() - 1,
            _ => 0,
        };
        let key = Key {
            name: name.to_string(),
            last_sec: sec,
            partial: vec![None; steps],
            ..Key::default()
        };
        self.insert(key)
    }

    fn insert(&mut self, key: Key) -> u32 {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.keys.push(None);
                (self.keys.len() - 1) as u32
            }
        };
        self.ids.insert(key.name.clone(), id);
        self.lru.add(key.last_sec, id);
        self.keys[id as usize] = Some(key);
        id
    }

    fn touch(&mut self, id: u32, sec: i64) {
        let Some(k) = self.keys.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if sec > k.last_sec {
            self.lru.add(sec, id);
            k.last_sec = sec;
        }
    }

    fn remove(&mut self, id: u32) {
        let Some(k) = self.keys.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        self.ids.remove(&k.name);
        self.set_over(id, false);
        if let Some((d, _, _)) = k.deadline {
            self.deadlines.remove(&(d, id));
        }
        self.free.push(id);
    }

    /// An occurrence for key `id` at second `sec`.
    fn hit(&mut self, id: u32, sec: i64, seq: u64) {
        let (window, threshold) = (self.window, self.rule.threshold);
        let Some(k) = self.keys.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if add_at(&mut k.hits, sec, 1, |n, d| *n += d) {
            self.checks.add(sec + window, id);
        }
        k.total += 1;
        k.shown = None;
        push_evidence(&mut k.evidence, seq);
        if k.total >= threshold {
            self.set_over(id, true);
        }
    }

    fn add_sums(&mut self, id: u32, sec: i64, d: &Totals) {
        let window = self.window;
        let Some(k) = self.keys.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        if add_at(&mut k.aggs, sec, d.clone(), |t, d| t.add(&d)) {
            self.checks.add(sec + window, id);
        }
        k.sums.add(d);
    }

    fn set_over(&mut self, id: u32, over: bool) {
        let changed = if over {
            self.over.insert(id)
        } else {
            self.over.remove(&id)
        };
        if changed {
            self.over_by_name = None;
        }
    }

    /// Drop what of key `id` left the window ending at `head_sec` (and
    /// sequences out of time); a key left with nothing is removed.
    fn tidy(&mut self, id: u32, head_sec: i64) {
        let cutoff = head_sec - self.window;
        let threshold = self.rule.threshold;
        let Some(k) = self.keys.get_mut(id as usize).and_then(Option::as_mut) else {
            return;
        };
        while let Some(&(sec, n)) = k.hits.front() {
            if sec > cutoff {
                break;
            }
            k.hits.pop_front();
            k.total -= n as u64;
            k.shown = None;
        }
        while let Some((sec, _)) = k.aggs.front() {
            if *sec > cutoff {
                break;
            }
            if let Some((_, t)) = k.aggs.pop_front() {
                k.sums.sub(&t);
            }
        }
        let within = match &self.rule.detect {
            Detect::Sequence { within_ms, .. } => *within_ms,
            _ => 0,
        };
        for p in &mut k.partial {
            if p.is_some_and(|(start, _, _)| start + within < head_sec * 1000) {
                *p = None;
            }
        }
        let (below, empty) = (k.total < threshold, k.is_empty());
        if below {
            self.set_over(id, false);
        }
        if empty {
            self.remove(id);
        }
    }

    /// The keys at or above the threshold as findings (by subject), and
    /// `key_limit` while an eviction is in the window ending at `head_sec`.
    pub fn findings(&mut self, head_sec: i64, out: &mut Vec<Finding>) {
        let order = match self.over_by_name.take() {
            Some(order) => order,
            None => {
                let mut ids: Vec<u32> = self.over.iter().copied().collect();
                let keys = &self.keys;
                ids.sort_by_key(|&id| keys[id as usize].as_ref().map(|k| &k.name));
                ids
            }
        };
        for &id in &order {
            let Some(k) = self.keys.get_mut(id as usize).and_then(Option::as_mut) else {
                continue;
            };
            if k.shown.is_none() {
                k.shown = Some(Box::new(finding(&self.rule, self.window, k)));
            }
            if let Some(f) = &k.shown {
                out.push(Finding::clone(f));
            }
        }
        self.over_by_name = Some(order);
        if self.evicted > 0 && self.last_eviction_sec > head_sec - self.window {
            out.push(Finding {
                name: "key_limit".into(),
                source: "rule".into(),
                subject: self.rule.name.clone(),
                alert: false,
                occurrences: self.evicted.min(u32::MAX as u64) as u32,
                score: 0.0,
                message: format!(
                    "rule '{}' tracks at most {} keys: {} least recently seen keys evicted so far, with their counts",
                    self.rule.name, self.rule.max_keys, self.evicted
                ),
                evidence: Vec::new(),
            });
        }
    }

    pub fn save(&self) -> KeyedState {
        let mut keys: Vec<Key> = self.keys.iter().flatten().cloned().collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        KeyedState {
            rule: self.rule.name.clone(),
            shape: self.shape(),
            keys,
            evicted: self.evicted,
            last_eviction_sec: self.last_eviction_sec,
        }
    }

    fn shape(&self) -> String {
        let fields: Vec<&str> = self.rule.group_by.iter().map(|f| f.name()).collect();
        format!("{} by {}", self.rule.describe, fields.join(","))
    }

    /// Take over a saved state of the same rule (by name and definition),
    /// with the window's head at `head_sec`.
    pub fn load(&mut self, state: KeyedState, head_sec: i64) {
        if state.rule != self.rule.name || state.shape != self.shape() {
            return;
        }
        self.evicted = state.evicted;
        self.last_eviction_sec = state.last_eviction_sec;
        for mut k in state.keys {
            k.sums = Totals::default();
            for (_, t) in &k.aggs {
                k.sums.add(t);
            }
            k.total = k.hits.iter().map(|(_, n)| *n as u64).sum();
            let seconds: Vec<i64> = k
                .hits
                .iter()
                .map(|(s, _)| *s)
                .chain(k.aggs.iter().map(|(s, _)| *s))
                .collect();
            let (total, deadline) = (k.total, k.deadline);
            let id = self.insert(k);
            for sec in seconds {
                self.checks.add(sec + self.window, id);
            }
            self.checks.add(head_sec, id);
            if let Some((d, _, _)) = deadline {
                self.deadlines.insert((d, id));
            }
            if total >= self.rule.threshold {
                self.set_over(id, true);
            }
        }
        while self.ids.len() > self.rule.max_keys {
            let before = self.ids.len();
            self.evict(self.last_eviction_sec);
            if self.ids.len() == before {
                break;
            }
        }
        self.advance(head_sec);
    }
}

/// Whether the key `id` is live and was last seen at second `sec` (its
/// entry for `sec` in `lru` is not stale).
fn seen_last(keys: &[Option<Key>], sec: i64, id: u32) -> bool {
    keys.get(id as usize)
        .and_then(Option::as_ref)
        .is_some_and(|k| k.last_sec == sec)
}

/// What a rule's conditions said of one event.
enum Seen {
    Count(bool),
    /// Bit i: step i holds; and the sequence's `within`.
    Steps(u8, i64),
    /// `after` holds, `expect` holds; and the absence's `within`.
    Absence(bool, bool, i64),
}

/// The rule's conditions on `e`, aggregates read from `sums`.
fn seen(detect: &Detect, e: &EventRef, sums: &Totals, covered: f64) -> Seen {
    let holds = |x: &Expr<Metric>| x.eval(&|m: &Metric| value(*m, e, sums, covered));
    match detect {
        Detect::Count(c) => Seen::Count(holds(c)),
        Detect::Sequence { steps, within_ms } => {
            let held = steps
                .iter()
                .enumerate()
                .fold(0u8, |m, (i, s)| m | (u8::from(holds(s)) << i));
            Seen::Steps(held, *within_ms)
        }
        Detect::Absence {
            after,
            expect,
            within_ms,
        } => Seen::Absence(holds(after), holds(expect), *within_ms),
    }
}

impl Seen {
    fn any(&self) -> bool {
        match *self {
            Seen::Count(c) => c,
            Seen::Steps(held, _) => held != 0,
            Seen::Absence(a, x, _) => a || x,
        }
    }
}

/// Key `k`'s finding for rule `r` over a window of `window` seconds.
fn finding(r: &Rule, window: i64, k: &Key) -> Finding {
    {
        let of = key_label(&r.group_by, &k.name);
        let message = match r.detect {
            Detect::Count(_) => format!(
                "{} occurrences of {}{of} in the last {} s (threshold {})",
                k.total, r.describe, window, r.threshold
            ),
            _ => format!(
                "{}{of}: {} time(s) in the last {} s",
                r.describe, k.total, window
            ),
        };
        Finding {
            name: r.name.clone(),
            source: "rule".into(),
            subject: k.name.clone(),
            alert: r.alerts,
            occurrences: k.total.min(u32::MAX as u64) as u32,
            score: crate::strength(k.total as f64, r.threshold as f64),
            message,
            evidence: k.evidence.iter().copied().collect(),
        }
    }
}

/// Add `d` to second `sec` of a per-second list kept in order; true when
/// the second is new to it.
fn add_at<T: Clone>(
    list: &mut VecDeque<(i64, T)>,
    sec: i64,
    d: T,
    add: impl Fn(&mut T, T),
) -> bool {
    match list.back_mut() {
        Some((s, v)) if *s == sec => {
            add(v, d);
            false
        }
        Some((s, _)) if *s > sec => match list.binary_search_by_key(&sec, |(s, _)| *s) {
            Ok(i) => {
                add(&mut list[i].1, d);
                false
            }
            Err(i) => {
                list.insert(i, (sec, d));
                true
            }
        },
        _ => {
            list.push_back((sec, d));
            true
        }
    }
}

/// The key of `e` for fields `by` (their values joined by ", "), `""`
/// without fields; `None` when `e` lacks one of them.
fn key_of<'a>(by: &[KeyField], e: &EventRef<'a>, buf: &'a mut String) -> Option<&'a str> {
    let field = |f: KeyField| -> Option<&'a str> {
        match f {
            KeyField::Model => e.model,
            KeyField::Service => e.service,
            KeyField::User => e.user,
            KeyField::EventType => Some(e.kind.as_str()),
        }
    };
    match by {
        [] => Some(""),
        [one] => field(*one),
        many => {
            buf.clear();
            for (i, f) in many.iter().enumerate() {
                if i > 0 {
                    buf.push_str(", ");
                }
                buf.push_str(field(*f)?);
            }
            Some(buf.as_str())
        }
    }
}

/// ` for model 'x'`, ` for model 'x', service 'y'`, or nothing.
fn key_label(by: &[KeyField], key: &str) -> String {
    if by.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = by
        .iter()
        .zip(key.split(", "))
        .map(|(f, v)| format!("{} '{v}'", f.name()))
        .collect();
    format!(" for {}", parts.join(", "))
}
