//! Correlation rules and pattern detection over a sliding window of
//! `event_correlation.window_size` seconds (one-second slots by event time).
//!
//! **Event time.** The host clock is the watermark. Events ahead of it wait
//! (up to [`MAX_PENDING`]) and are folded in order of (time, event id) when
//! the watermark reaches them, the window's head stepping to each event's
//! second first; so the rules see every event with the window as it was at
//! that event's time, whatever order the events arrived in. An event whose
//! second already left the window is late and left out.
//!
//! **Rules** come from `event_correlation.correlation_rules`; each condition
//! is parsed with the SDK's expression language. A rule is evaluated for
//! every event that carries at least one metric it reads, right after that
//! event is folded into the window:
//! - event metrics, the event's own value: `latency`, `user_satisfaction`
//!   (alias `satisfaction`), `business_value`, `cost`, `success`, `model`,
//!   `service`, `user_id`, `event_type`, `health`;
//! - window metrics, over the correlation window including that event:
//!   `error_rate` (fed by events with an outcome), `error_count`,
//!   `avg_latency`, `avg_user_satisfaction`, `throughput`, `event_count`.
//!
//! An event for which the condition holds is an *occurrence*. A rule is
//! active while it has at least `alert_threshold` occurrences in the window;
//! it alerts (finding with `alert = true`) in the batch where it becomes
//! active, and can alert again only after it went inactive.
//!
//! **Patterns** (when `pattern_detection_enabled`), with thresholds under
//! `event_correlation.patterns`:
//! - `error_burst`: one service has at least `min_errors` errors within the
//!   last `window_secs` seconds;
//! - `latency_spike`: the mean latency of the last `recent_secs` seconds
//!   exceeds the rest of the window's mean by `sigma` standard deviations and
//!   by a factor `factor` (with enough samples on both sides);
//! - `model_divergence`: one model's error rate exceeds the other models'
//!   pooled rate by `min_difference` with a two-proportion z-score of at
//!   least `z`.
//!
//! **Scores**: a rule's score grows from 0.5 at the threshold to 1 at twice
//! the threshold; patterns score the strength of their evidence the same way.
//! `correlation_score` combines the active findings as a noisy-OR:
//! `1 - Π(1 - score)`.

mod active;
mod buckets;
mod config;
mod evidence;
mod flap;
mod hash;
mod keyed;
mod metrics;

use active::Active;
pub use config::{AbsenceConfig, Config, FlapConfig, RuleConfig, Within};
use config::{Detect, Rule};
use evidence::{Evidence, Name};
use flap::Flaps;
use hxp_plugin_sdk::{CorrelationResult, Event, EventBatch, EventRef, Finding, Metadata};
use keyed::{KeyedRule, KeyedState};
use metrics::{Metric, Totals, feeds, value};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Layout of [`Correlation::save_state`] (3: keyed rules and flap
/// damping; 2: events ahead of the watermark; both older ones are read).
pub const STATE_VERSION: u32 = 3;
/// Events held ahead of the watermark; beyond this the oldest are folded
/// early (the window then runs ahead of the watermark).
pub const MAX_PENDING: usize = 100_000;
/// Evidence kept per finding.
pub(crate) const EVIDENCE: usize = 10;
/// Models and services tracked per slot beyond which new names are folded
/// into "(other)", bounding memory under hostile cardinality.
pub const MAX_KEYS_PER_SLOT: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Slot {
    sec: i64,
    live: bool,
    totals: Totals,
    /// Errors per service.
    service_errors: BTreeMap<String, u32>,
    /// (requests with an outcome, errors) per model.
    models: BTreeMap<String, (u32, u32)>,
    /// Occurrences per rule, by rule name.
    rule_hits: BTreeMap<String, u32>,
}

/// Apply `f` to the entry of `key`, made if new; beyond
/// [`MAX_KEYS_PER_SLOT`] new names go to "(other)". One lookup for a name
/// already there (this runs for most events).
fn bump<V: Default>(map: &mut BTreeMap<String, V>, key: &str, f: impl FnOnce(&mut V)) {
    if let Some(v) = map.get_mut(key) {
        return f(v);
    }
    let key = if map.len() < MAX_KEYS_PER_SLOT {
        key
    } else {
        "(other)"
    };
    f(map.entry(key.to_string()).or_default());
}

/// Serialized form: the window (all of state version 1), then the events
/// ahead of the watermark. postcard writes a nested struct as its fields in
/// order, so a version-1 state is the first part of a version-2 one.
#[derive(Serialize, Deserialize)]
struct State {
    window: WindowState,
    pending: Vec<Event>,
}

/// Version 3: version 2's, then the keyed rules and the flap tracks.
#[derive(Serialize, Deserialize)]
struct StateV3 {
    window: WindowState,
    pending: Vec<Event>,
    keyed: Vec<KeyedState>,
    flaps: Vec<flap::Track>,
}

#[derive(Serialize, Deserialize)]
struct WindowState {
    head_sec: i64,
    first_sec: Option<i64>,
    slots: Vec<Slot>,
    active: BTreeSet<(String, String)>,
    evidence: evidence::Saved,
}

/// Pending events in the order they are folded.
type PendingKey = (i64, u128, u64);

pub struct Correlation {
    config: Config,
    /// Rules over the whole window (no `group_by`, a condition).
    rules: Vec<Rule>,
    /// Rules per key, sequences and absences.
    keyed: Vec<KeyedRule>,
    flaps: Flaps,
    ring: Vec<Slot>,
    head_sec: i64,
    first_sec: Option<i64>,
    totals: Totals,
    /// Occurrences in the window per rule (index into `rules`).
    rule_totals: Vec<u64>,
    /// Active findings, (name, subject).
    active: Active,
    /// Recent evidence per finding.
    evidence: Evidence,
    /// Events ahead of the watermark.
    pending: BTreeMap<PendingKey, Event>,
}

impl Default for Correlation {
    fn default() -> Self {
        Correlation::new(Config::default()).expect("default config is valid")
    }
}

impl Correlation {
    pub fn new(config: Config) -> Result<Correlation, String> {
        if config.window_size == 0 || config.window_size > 86_400 {
            return Err(format!(
                "event_correlation.window_size: {} is out of range (1..=86400 seconds)",
                config.window_size
            ));
        }
        if config.alert_threshold == 0 {
            return Err("event_correlation.alert_threshold must be at least 1".into());
        }
        let mut rules = Vec::new();
        let mut keyed = Vec::new();
        let mut names = BTreeSet::new();
        for r in &config.correlation_rules {
            if !names.insert(r.name.clone()) {
                return Err(format!("rule '{}' is defined twice", r.name));
            }
            let rule = Rule::compile(r, config.alert_threshold)?;
            if rule.keyed() {
                keyed.push(KeyedRule::new(rule, config.window_size));
            } else {
                rules.push(rule);
            }
        }
        let evidence = Evidence::new(rules.iter().map(|r| r.name.as_str()));
        Ok(Correlation {
            rule_totals: vec![0; rules.len()],
            rules,
            keyed,
            flaps: Flaps::new(config.flap_damping.clone()),
            ring: vec![Slot::default(); config.window_size as usize],
            config,
            head_sec: i64::MIN,
            first_sec: None,
            totals: Totals::default(),
            active: Active::default(),
            evidence,
            pending: BTreeMap::new(),
        })
    }

    /// Keys the keyed rules track, summed over the rules.
    pub fn keys_tracked(&self) -> usize {
        self.keyed.iter().map(KeyedRule::len).sum()
    }

    pub fn metadata() -> Metadata {
        Metadata {
            name: "correlation".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            state_version: STATE_VERSION,
            wants_payload: false,
            fresh_start_ok: false,
        }
    }

    /// Apply a config section (JSON); the window and rule occurrences carry
    /// over by rule name.
    pub fn configure(&mut self, json: &str) -> Result<(), String> {
        let config: Config = if json.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(json).map_err(|e| format!("event_correlation: {e}"))?
        };
        let state = self.save_state();
        let mut fresh = Correlation::new(config)?;
        fresh.load_state(STATE_VERSION, &state)?;
        *self = fresh;
        Ok(())
    }

    fn window(&self) -> i64 {
        self.config.window_size as i64
    }

    /// Move the head to `now_sec`, dropping slots that left the window.
    fn advance(&mut self, now_sec: i64) {
        if self.head_sec == i64::MIN {
            self.head_sec = now_sec;
            return;
        }
        if now_sec <= self.head_sec {
            return;
        }
        let w = self.window();
        let oldest_kept = now_sec - w + 1;
        let from = (self.head_sec - w + 1).max(oldest_kept - w);
        for sec in from..oldest_kept {
            let idx = sec.rem_euclid(w) as usize;
            if self.ring[idx].live && self.ring[idx].sec < oldest_kept {
                let slot = std::mem::take(&mut self.ring[idx]);
                self.totals.sub(&slot.totals);
                for (i, r) in self.rules.iter().enumerate() {
                    self.rule_totals[i] -= *slot.rule_hits.get(&r.name).unwrap_or(&0) as u64;
                }
            }
        }
        self.head_sec = now_sec;
        for k in &mut self.keyed {
            k.advance(now_sec);
        }
    }

    fn covered(&self) -> f64 {
        match self.first_sec {
            Some(f) => (self.head_sec - f + 1).clamp(1, self.window()) as f64,
            None => 0.0,
        }
    }

    /// Fold a batch in, move the watermark to `now_ms`, and report the
    /// findings active there.
    pub fn process(&mut self, events: &EventBatch, now_ms: i64) -> CorrelationResult {
        let now_sec = now_ms.div_euclid(1000);
        let w = self.window();
        // Whether the window changed since the findings were evaluated (at
        // the end of the last batch).
        let mut changed = false;
        for e in events.iter() {
            let sec = e.second();
            if self.head_sec != i64::MIN && sec <= self.head_sec {
                if sec > self.head_sec - w {
                    self.fold(&e, sec);
                    changed = true;
                } // else late: its second left the window
            } else {
                self.pending.insert((e.time_ms, e.id, e.seq), e.to_event());
            }
        }
        let raised = self.release(now_sec, changed);
        if self.head_sec != i64::MIN {
            self.advance(now_sec);
            // Absences whose time ran out before the watermark.
            for k in &mut self.keyed {
                k.fire_due(now_ms, self.head_sec);
            }
        }
        self.findings(now_sec, raised)
    }

    /// Fold the pending events the watermark `now_sec` reached, in order,
    /// the head stepping to each one's second; the findings are evaluated
    /// at every second passed, as they would have been live. Returns those
    /// that alerted on the way. `changed`: events were folded since the
    /// findings were last evaluated (else the head's are known already).
    fn release(&mut self, now_sec: i64, mut changed: bool) -> Vec<Finding> {
        let mut raised = Vec::new();
        loop {
            let overfull = self.pending.len() > MAX_PENDING;
            let Some(entry) = self.pending.first_entry() else {
                break;
            };
            let sec = entry.key().0.div_euclid(1000);
            if sec > now_sec && !overfull {
                break;
            }
            let e = entry.remove();
            if changed && sec > self.head_sec {
                for f in self.step_findings(self.head_sec) {
                    if f.alert {
                        raised.retain(|r: &Finding| (&r.name, &r.subject) != (&f.name, &f.subject));
                        raised.push(f);
                    }
                }
            }
            self.advance(sec);
            let sec = sec.max(self.head_sec);
            self.fold(&e.as_ref(), sec);
            changed = true;
        }
        raised
    }

    /// One event into the slot of second `sec` (in the window), then the
    /// rules it feeds.
    fn fold(&mut self, e: &EventRef, sec: i64) {
        for k in &mut self.keyed {
            k.fire_due(e.time_ms, self.head_sec);
        }
        self.first_sec = Some(self.first_sec.map_or(sec, |f| f.min(sec)));
        let idx = sec.rem_euclid(self.window()) as usize;
        if !self.ring[idx].live || self.ring[idx].sec != sec {
            self.ring[idx] = Slot {
                sec,
                live: true,
                ..Slot::default()
            };
        }
        let e = *e;
        if let Some(ok) = e.success {
            if let Some(s) = e.service.filter(|_| !ok) {
                bump(&mut self.ring[idx].service_errors, s, |n| *n += 1);
            }
            if let Some(m) = e.model {
                bump(&mut self.ring[idx].models, m, |(outcomes, errors)| {
                    *outcomes += 1;
                    *errors += u32::from(!ok);
                });
            }
        }
        let d = Totals::of(&e);
        self.ring[idx].totals.add(&d);
        self.totals.add(&d);
        let covered = self.covered();
        self.match_rules(&e, idx, covered);
        for k in &mut self.keyed {
            k.on_event(&e, &d, sec, covered);
        }
    }

    /// The rules `e` feeds, evaluated with `e` in the window (slot `idx`),
    /// and the evidence it adds.
    fn match_rules(&mut self, e: &EventRef, idx: usize, covered: f64) {
        for i in 0..self.rules.len() {
            let rule = &self.rules[i];
            let Detect::Count(expr) = &rule.detect else {
                continue;
            };
            if !rule.metrics.iter().any(|&m| feeds(m, e)) {
                continue;
            }
            if expr.eval(&|m: &Metric| value(*m, e, &self.totals, covered)) {
                let name = &self.rules[i].name;
                let hits = &mut self.ring[idx].rule_hits;
                match hits.get_mut(name) {
                    Some(n) => *n += 1,
                    None => {
                        hits.insert(name.clone(), 1);
                    }
                }
                self.rule_totals[i] += 1;
                self.evidence.push(Name::rule(i), "", e.seq);
            }
        }
        if e.success == Some(false) {
            if let Some(s) = e.service {
                self.evidence.push(Name::ERROR_BURST, s, e.seq);
            }
            if let Some(m) = e.model {
                self.evidence.push(Name::MODEL_DIVERGENCE, m, e.seq);
            }
        }
        if e.latency_ms.is_some() {
            self.evidence.push(Name::LATENCY_SPIKE, "", e.seq);
        }
    }

    /// Findings active at `now_sec`; `alert` says whether each may alert.
    fn evaluate(&mut self, now_sec: i64) -> Vec<Finding> {
        let mut found: Vec<Finding> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let threshold = rule.threshold;
            let occ = self.rule_totals[i];
            if occ >= threshold {
                found.push(Finding {
                    name: rule.name.clone(),
                    source: "rule".into(),
                    subject: String::new(),
                    alert: rule.alerts,
                    occurrences: occ.min(u32::MAX as u64) as u32,
                    score: strength(occ as f64, threshold as f64),
                    message: format!(
                        "{} occurrences of {} in the last {} s (threshold {})",
                        occ, rule.describe, self.config.window_size, threshold
                    ),
                    evidence: Vec::new(),
                });
            }
        }
        for k in &mut self.keyed {
            k.findings(now_sec, &mut found);
        }
        if self.config.pattern_detection_enabled {
            self.error_bursts(now_sec, &mut found);
            self.latency_spike(now_sec, &mut found);
            self.model_divergence(&mut found);
        }
        found
    }

    /// The findings at `now_sec`, alerting only on the transition to
    /// active; they become the active set.
    fn step_findings(&mut self, now_sec: i64) -> Vec<Finding> {
        let mut found = self.evaluate(now_sec);
        self.flaps.damp(now_sec, &mut found);
        self.active.begin();
        for f in &mut found {
            let new = self.active.mark(&f.name, &f.subject);
            f.alert = f.alert && new;
        }
        self.active.sweep();
        found
    }

    /// The result at the watermark `now_sec`: the active findings, alerting
    /// if they alerted at any second of this batch, then those that alerted
    /// earlier in the batch and ended before the watermark (`raised`).
    fn findings(&mut self, now_sec: i64, mut raised: Vec<Finding>) -> CorrelationResult {
        let mut found = self.step_findings(now_sec);
        for f in &mut found {
            if let Some(i) = raised
                .iter()
                .position(|r| r.name == f.name && r.subject == f.subject)
            {
                raised.swap_remove(i);
                f.alert = true;
            }
        }
        let correlation_score = 1.0 - found.iter().map(|f| 1.0 - f.score).product::<f64>();
        found.append(&mut raised);
        for f in found.iter_mut().filter(|f| f.evidence.is_empty()) {
            f.evidence = self
                .evidence
                .get(&f.name, &f.subject)
                .map(|d| d.iter().copied().collect())
                .unwrap_or_default();
        }
        // Evidence of names that never became active must not pile up.
        if self.evidence.len() > MAX_KEYS_PER_SLOT {
            let active = &self.active;
            self.evidence.retain(|name, s| active.contains(name, s));
        }
        CorrelationResult {
            findings: found,
            correlation_score,
        }
    }

    fn live_slots(&self, since_sec: i64) -> impl Iterator<Item = &Slot> {
        self.ring
            .iter()
            .filter(move |s| s.live && s.sec >= since_sec)
    }

    fn error_bursts(&self, now_sec: i64, out: &mut Vec<Finding>) {
        let p = &self.config.patterns.error_burst;
        let since = now_sec - p.window_secs as i64 + 1;
        let mut per_service: BTreeMap<&str, u64> = BTreeMap::new();
        for slot in self.live_slots(since) {
            for (s, n) in &slot.service_errors {
                *per_service.entry(s).or_default() += *n as u64;
            }
        }
        for (service, n) in per_service {
            if n >= p.min_errors as u64 && p.min_errors > 0 {
                out.push(Finding {
                    name: "error_burst".into(),
                    source: "pattern".into(),
                    subject: service.into(),
                    alert: true,
                    occurrences: n as u32,
                    score: strength(n as f64, p.min_errors as f64),
                    message: format!(
                        "{n} errors from service '{service}' in the last {} s",
                        p.window_secs
                    ),
                    evidence: Vec::new(),
                });
            }
        }
    }

    fn latency_spike(&self, now_sec: i64, out: &mut Vec<Finding>) {
        let p = &self.config.patterns.latency_spike;
        let since = now_sec - p.recent_secs as i64 + 1;
        let mut recent = Totals::default();
        for slot in self.live_slots(since) {
            recent.add(&slot.totals);
        }
        let mut base = self.totals.clone();
        base.sub(&recent);
        if recent.lat_count < p.min_recent as u64 || base.lat_count < p.min_baseline as u64 {
            return;
        }
        let n = base.lat_count as f64;
        let base_mean = base.lat_sum / n;
        let base_std = (base.lat_sumsq / n - base_mean * base_mean).max(0.0).sqrt();
        let recent_mean = recent.lat_sum / recent.lat_count as f64;
        let margin = (p.sigma * base_std).max(base_mean * 1e-9);
        if recent_mean > base_mean + margin && recent_mean >= p.factor * base_mean {
            let z = (recent_mean - base_mean) / margin * p.sigma;
            out.push(Finding {
                name: "latency_spike".into(),
                source: "pattern".into(),
                subject: String::new(),
                alert: true,
                occurrences: recent.lat_count as u32,
                score: strength(z, p.sigma),
                message: format!(
                    "mean latency {recent_mean:.1} ms over the last {} s against {base_mean:.1} ms (sd {base_std:.1}) before",
                    p.recent_secs
                ),
                evidence: Vec::new(),
            });
        }
    }

    fn model_divergence(&self, out: &mut Vec<Finding>) {
        let p = &self.config.patterns.model_divergence;
        let mut per_model: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for slot in self.live_slots(i64::MIN) {
            for (m, (n, e)) in &slot.models {
                let entry = per_model.entry(m).or_default();
                entry.0 += *n as u64;
                entry.1 += *e as u64;
            }
        }
        let (all_n, all_e) = per_model
            .values()
            .fold((0, 0), |(a, b), (n, e)| (a + n, b + e));
        for (model, (n, e)) in &per_model {
            let (on, oe) = (all_n - n, all_e - e);
            if *n < p.min_requests as u64 || on < p.min_requests as u64 {
                continue;
            }
            let pm = *e as f64 / *n as f64;
            let po = oe as f64 / on as f64;
            let pooled = (*e + oe) as f64 / (*n + on) as f64;
            let se = (pooled * (1.0 - pooled) * (1.0 / *n as f64 + 1.0 / on as f64)).sqrt();
            if se == 0.0 {
                continue;
            }
            let z = (pm - po) / se;
            if z >= p.z && pm - po >= p.min_difference {
                out.push(Finding {
                    name: "model_divergence".into(),
                    source: "pattern".into(),
                    subject: (*model).into(),
                    alert: true,
                    occurrences: *e as u32,
                    score: strength(z, p.z),
                    message: format!(
                        "model '{model}' error rate {:.1}% against {:.1}% for the other models (z = {z:.1})",
                        pm * 100.0,
                        po * 100.0
                    ),
                    evidence: Vec::new(),
                });
            }
        }
    }

    pub fn save_state(&self) -> Vec<u8> {
        let window = WindowState {
            head_sec: self.head_sec,
            first_sec: self.first_sec,
            slots: self.ring.iter().filter(|s| s.live).cloned().collect(),
            active: self.active.to_set(),
            evidence: self.evidence.save(),
        };
        let state = StateV3 {
            window,
            pending: self.pending.values().cloned().collect(),
            keyed: self.keyed.iter().map(KeyedRule::save).collect(),
            flaps: self.flaps.save(),
        };
        postcard::to_allocvec(&state).expect("state serializes")
    }

    pub fn load_state(&mut self, version: u32, bytes: &[u8]) -> Result<(), String> {
        let state = match version {
            1 => StateV3 {
                window: decode(bytes)?,
                pending: Vec::new(),
                keyed: Vec::new(),
                flaps: Vec::new(),
            },
            2 => {
                let State { window, pending } = decode(bytes)?;
                StateV3 {
                    window,
                    pending,
                    keyed: Vec::new(),
                    flaps: Vec::new(),
                }
            }
            STATE_VERSION => decode(bytes)?,
            _ => {
                return Err(format!(
                    "correlation state version {version} is not supported (this plugin reads versions 1 to {STATE_VERSION})"
                ));
            }
        };
        let mut fresh = Correlation::new(self.config.clone())?;
        fresh.restore_window(state.window);
        fresh.pending = state
            .pending
            .into_iter()
            .map(|e| ((e.time_ms, e.id, e.seq), e))
            .collect();
        if fresh.head_sec != i64::MIN {
            for saved in state.keyed {
                if let Some(k) = fresh.keyed.iter_mut().find(|k| k.rule.name == saved.rule()) {
                    k.load(saved, fresh.head_sec);
                }
            }
        }
        fresh.flaps.load(state.flaps);
        *self = fresh;
        Ok(())
    }

    /// The window's slots, active findings and evidence from a saved state.
    fn restore_window(&mut self, window: WindowState) {
        self.head_sec = window.head_sec;
        self.first_sec = window.first_sec;
        let oldest_kept = window.head_sec.saturating_sub(self.window() - 1);
        for slot in window
            .slots
            .into_iter()
            .filter(|s| s.live && s.sec >= oldest_kept)
        {
            self.totals.add(&slot.totals);
            for (i, r) in self.rules.iter().enumerate() {
                self.rule_totals[i] += *slot.rule_hits.get(&r.name).unwrap_or(&0) as u64;
            }
            let idx = slot.sec.rem_euclid(self.window()) as usize;
            self.ring[idx] = slot;
        }
        self.active = Active::from_set(window.active);
        self.evidence.load(window.evidence);
    }
}

/// A saved state's bytes as `T`.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("correlation state is unreadable: {e}"))
}

/// 0.5 at the threshold, 1 at twice the threshold.
pub(crate) fn strength(x: f64, threshold: f64) -> f64 {
    if threshold <= 0.0 {
        return 1.0;
    }
    (0.5 * x / threshold).clamp(0.0, 1.0)
}

// The component: the SDK's traits over the methods above, and the export.
impl hxp_plugin_sdk::Plugin for Correlation {
    fn metadata() -> Metadata {
        Correlation::metadata()
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        Correlation::configure(self, config)
    }

    fn save_state(&self) -> Vec<u8> {
        Correlation::save_state(self)
    }

    fn load_state(&mut self, state_version: u32, state: &[u8]) -> Result<(), String> {
        Correlation::load_state(self, state_version, state)
    }
}

impl hxp_plugin_sdk::Correlation for Correlation {
    fn process(&mut self, events: &EventBatch, now_ms: i64) -> CorrelationResult {
        Correlation::process(self, events, now_ms)
    }
}

hxp_plugin_sdk::export_correlation!(Correlation);

#[cfg(test)]
mod rule_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use hxp_plugin_sdk::{Event, EventKind};

    /// `process` on owned events.
    /// `process` on owned events arriving at `now_ms` on processing time
    /// (the host then sets their time to the arrival time).
    fn run(c: &mut Correlation, events: &[Event], now_ms: i64) -> CorrelationResult {
        let mut batch = EventBatch::from_events(events);
        batch.place_at(now_ms);
        c.process(&batch, now_ms)
    }

    fn err(seq: u64, service: &str) -> Event {
        let mut e = Event::new(seq, EventKind::ErrorEvent, 0);
        e.success = Some(false);
        e.service = Some(service.into());
        e
    }

    fn req(seq: u64, model: &str, ok: bool, latency: f64) -> Event {
        let mut e = Event::new(seq, EventKind::LlmRequest, 0);
        e.success = Some(ok);
        e.model = Some(model.into());
        e.latency_ms = Some(latency);
        e
    }

    fn find<'a>(r: &'a CorrelationResult, name: &str) -> Option<&'a Finding> {
        r.findings.iter().find(|f| f.name == name)
    }

    fn only_rules(rules: &[(&str, &str)]) -> Config {
        Config {
            correlation_rules: rules
                .iter()
                .map(|(n, c)| RuleConfig::counting(n, c))
                .collect(),
            pattern_detection_enabled: false,
            ..Config::default()
        }
    }

    #[test]
    fn error_burst_alerts_on_the_fifth_occurrence_and_not_before() {
        let mut c = Correlation::default();
        for i in 1..=4 {
            let r = run(&mut c, &[err(i, "api")], 1000 + i as i64);
            assert!(find(&r, "high_error_rate").is_none(), "after {i}");
        }
        let r = run(&mut c, &[err(5, "api")], 1005);
        let f = find(&r, "high_error_rate").expect("active after 5");
        assert!(f.alert);
        assert_eq!(f.occurrences, 5);
        assert_eq!(f.evidence, vec![1, 2, 3, 4, 5]);
        assert_eq!(f.score, 0.5);
        // The burst pattern (5 errors from one service in 10 s) fires too.
        let b = find(&r, "error_burst").unwrap();
        assert_eq!((b.subject.as_str(), b.alert), ("api", true));
        assert!((r.correlation_score - 0.75).abs() < 1e-12);
        // Still active, no new alert.
        let r = run(&mut c, &[err(6, "api")], 1006);
        let f = find(&r, "high_error_rate").unwrap();
        assert!(!f.alert);
        assert_eq!(f.occurrences, 6);
        // After the 60 s window the occurrences are gone and it re-arms.
        let r = run(&mut c, &[], 70_000);
        assert!(r.findings.is_empty());
        assert_eq!(r.correlation_score, 0.0);
        for i in 0..5 {
            let r = run(&mut c, &[err(10 + i, "api")], 71_000);
            assert_eq!(find(&r, "high_error_rate").is_some(), i == 4);
        }
    }

    #[test]
    fn error_rate_counts_events_with_an_outcome_only() {
        let mut c =
            Correlation::new(only_rules(&[("high_error_rate", "error_rate > 0.1")])).unwrap();
        // 1 error then 20 successes: the rate is above 0.1 for the error and
        // the next 8 successes (1/2 .. 1/9 > 0.1; 1/10 is not), feedback
        // events without an outcome never count.
        let mut events = vec![err(0, "api")];
        events.extend((1..=20).map(|i| req(i, "m", true, 1.0)));
        let mut fb = Event::new(99, EventKind::UserFeedback, 0);
        fb.satisfaction = Some(9.0);
        events.insert(3, fb);
        let r = run(&mut c, &events, 0);
        assert_eq!(find(&r, "high_error_rate").unwrap().occurrences, 9);
    }

    #[test]
    fn per_event_rules_with_filters() {
        let mut c = Correlation::new(only_rules(&[
            ("low_satisfaction", "user_satisfaction < 7.0"),
            (
                "slow_mixtral",
                "latency > 2000 and model == \"mixtral-8x7b\"",
            ),
        ]))
        .unwrap();
        let mut events = Vec::new();
        for (i, s) in [9.0, 6.5, 3.0, 7.0, 6.9, 2.0, 1.0].into_iter().enumerate() {
            let mut e = Event::new(i as u64, EventKind::UserFeedback, 0);
            e.satisfaction = Some(s);
            events.push(e);
        }
        for i in 0..5 {
            events.push(req(100 + i, "mixtral-8x7b", true, 2500.0));
            events.push(req(200 + i, "llama", true, 9000.0));
        }
        let r = run(&mut c, &events, 0);
        assert_eq!(find(&r, "low_satisfaction").unwrap().occurrences, 5);
        let slow = find(&r, "slow_mixtral").unwrap();
        assert_eq!(slow.occurrences, 5);
        assert_eq!(slow.evidence, vec![100, 101, 102, 103, 104]);
    }

    #[test]
    fn latency_spike_against_the_window_baseline() {
        let mut c = Correlation::new(Config {
            correlation_rules: vec![],
            ..Config::default()
        })
        .unwrap();
        let mut seq = 0;
        let mut batch = |n: usize, lat: f64| -> Vec<Event> {
            (0..n)
                .map(|i| {
                    seq += 1;
                    req(seq, "m", true, lat + (i % 5) as f64)
                })
                .collect()
        };
        for sec in 0..30 {
            let r = run(&mut c, &batch(10, 100.0), sec * 1000);
            assert!(find(&r, "latency_spike").is_none());
        }
        // Slightly slower: not a spike.
        let r = run(&mut c, &batch(10, 110.0), 30_000);
        assert!(find(&r, "latency_spike").is_none());
        // The recent part is the last 5 s: one slow second lifts its mean to
        // 164 ms, not yet twice the 102 ms baseline; a second one (224 ms) does.
        let r = run(&mut c, &batch(10, 400.0), 31_000);
        assert!(find(&r, "latency_spike").is_none());
        let r = run(&mut c, &batch(10, 400.0), 32_000);
        let f = find(&r, "latency_spike").expect("spike");
        assert!(f.alert);
        assert_eq!(f.score, 1.0);
    }

    #[test]
    fn one_model_diverging_from_the_others() {
        let mut c = Correlation::new(Config {
            correlation_rules: vec![],
            ..Config::default()
        })
        .unwrap();
        let mut events = Vec::new();
        for i in 0..100u64 {
            events.push(req(i, "good-a", i % 50 != 0, 10.0));
            events.push(req(1000 + i, "good-b", i % 40 != 0, 10.0));
            events.push(req(2000 + i, "bad", i % 3 != 0, 10.0));
        }
        let r = run(&mut c, &events, 0);
        let f: Vec<_> = r
            .findings
            .iter()
            .filter(|f| f.name == "model_divergence")
            .collect();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, "bad");
        assert!(f[0].message.contains("34.0%"), "{}", f[0].message);
    }

    #[test]
    fn config_errors_name_the_rule() {
        let mut c = Correlation::default();
        let err = c
            .configure(r#"{"correlation_rules":[{"name":"broken","condition":"error_rate >> 1"}]}"#)
            .unwrap_err();
        assert!(err.starts_with("rule 'broken': cannot parse"), "{err}");
        let err = c
            .configure(r#"{"correlation_rules":[{"name":"typo","condition":"eror_rate > 1"}]}"#)
            .unwrap_err();
        assert!(err.contains("rule 'typo'") && err.contains("unknown metric 'eror_rate'"));
        let err = c.configure(r#"{"alert_threshold": 0}"#).unwrap_err();
        assert!(err.contains("alert_threshold"));
        let err = c
            .configure(r#"{"patterns": {"error_burst": {"window_seconds": 1}}}"#)
            .unwrap_err();
        assert!(err.contains("unknown field `window_seconds`"), "{err}");
        // Partial pattern settings keep the other defaults.
        c.configure(r#"{"patterns": {"error_burst": {"min_errors": 2}}}"#)
            .unwrap();
    }

    #[test]
    fn reconfigure_keeps_occurrences_by_rule_name() {
        let mut c = Correlation::default();
        for i in 0..4 {
            run(&mut c, &[err(i, "api")], 0);
        }
        c.configure(r#"{"alert_threshold": 3}"#).unwrap();
        let r = run(&mut c, &[], 0);
        assert_eq!(find(&r, "high_error_rate").unwrap().occurrences, 4);
    }

    #[test]
    fn state_round_trip_continues_exactly() {
        let mut a = Correlation::default();
        for i in 0..30u64 {
            run(
                &mut a,
                &[err(i, "api"), req(100 + i, "m", i % 2 == 0, 50.0)],
                i as i64 * 1000,
            );
        }
        let mut b = Correlation::default();
        b.load_state(STATE_VERSION, &a.save_state()).unwrap();
        for i in 30..80u64 {
            let batch = [err(i, "db"), req(100 + i, "m", true, 10.0)];
            assert_eq!(
                run(&mut a, &batch, i as i64 * 1000),
                run(&mut b, &batch, i as i64 * 1000),
                "at {i}"
            );
        }
        assert!(b.load_state(7, &[]).unwrap_err().contains("version 7"));
    }

    /// 20 minutes of requests (4 per second) from three models, one of them
    /// failing often from minute 12, and an error burst at minute 15.
    fn timeline() -> Vec<Event> {
        let mut events = Vec::new();
        for i in 0..4800u64 {
            let t = 5_000_000 + i as i64 * 250;
            let model = ["a", "b", "c"][(i % 3) as usize];
            let failing = model == "c" && i > 2880 && i % 2 == 0;
            let mut e = req(i, model, !failing && i % 50 != 0, 100.0 + (i % 40) as f64);
            e.time_ms = t;
            e.id = (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            events.push(e);
        }
        for j in 0..8u64 {
            let mut e = err(10_000 + j, "db");
            e.time_ms = 5_000_000 + 900_000 + j as i64 * 700;
            e.id = 77_000 + j as u128;
            events.push(e);
        }
        events.sort_by_key(|e| e.time_ms);
        events
    }

    /// In batches of `n`, the watermark `lateness_ms` behind the newest
    /// event time seen; the last batch's findings without their alert flag
    /// (alerts belong to the batch that crossed).
    fn findings_after(events: &[Event], n: usize, lateness_ms: i64) -> CorrelationResult {
        let mut c = Correlation::default();
        let mut newest = i64::MIN;
        let mut last = CorrelationResult::default();
        let mut burst_alerts = 0;
        for chunk in events.chunks(n) {
            newest = newest.max(chunk.iter().map(|e| e.time_ms).max().unwrap());
            last = c.process(&EventBatch::from_events(chunk), newest - lateness_ms);
            burst_alerts += last
                .findings
                .iter()
                .filter(|f| f.name == "error_burst" && f.alert)
                .count();
        }
        assert_eq!(burst_alerts, 1, "the burst alerts once");
        for f in &mut last.findings {
            f.alert = false;
        }
        last
    }

    #[test]
    fn findings_follow_event_time_whatever_the_arrival_order() {
        let events = timeline();
        let lateness = 10_000;
        let paced = findings_after(&events, 4, lateness);
        assert!(
            paced
                .findings
                .iter()
                .any(|f| f.name == "model_divergence" && f.subject == "c"),
            "{paced:?}"
        );
        // The backlog ends in one big batch after the burst.
        let backlog = findings_after(&events, 1000, lateness);
        // Shuffled: neighbours up to 20 positions (5 s) apart swapped.
        let mut shuffled = events.clone();
        for i in (0..shuffled.len() - 20).step_by(11) {
            shuffled.swap(i, i + 1 + i % 20);
        }
        let late = findings_after(&shuffled, 37, lateness);
        assert_eq!(paced, backlog);
        assert_eq!(paced, late);
    }

    #[test]
    fn late_events_are_left_out_and_pending_ones_survive_a_state_round_trip() {
        let mut c = Correlation::new(only_rules(&[("errors", "error_count >= 1")])).unwrap();
        let at = |mut e: Event, t: i64| {
            e.time_ms = t;
            e
        };
        // Watermark 100 s; the error at 130 s waits.
        let r = c.process(
            &EventBatch::from_events(&[at(err(1, "api"), 100_000), at(err(2, "api"), 130_000)]),
            100_000,
        );
        assert_eq!(find(&r, "errors"), None, "one occurrence, threshold 5");
        assert_eq!(c.totals.errors, 1);
        // 40 s behind a 60 s window: in; 61 s behind: late.
        c.process(
            &EventBatch::from_events(&[at(err(3, "api"), 60_000), at(err(4, "api"), 39_000)]),
            100_000,
        );
        assert_eq!(c.totals.errors, 2);
        let mut d = Correlation::new(only_rules(&[("errors", "error_count >= 1")])).unwrap();
        d.load_state(STATE_VERSION, &c.save_state()).unwrap();
        d.process(&EventBatch::default(), 130_000);
        assert_eq!(d.totals.errors, 2, "60 s left the window, 130 s entered");
        assert!(
            d.load_state(9, &[])
                .unwrap_err()
                .contains("versions 1 to 3")
        );
    }
}
