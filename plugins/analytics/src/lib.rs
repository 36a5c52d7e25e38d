//! Windowed real-time analytics: throughput, requests per second, latency
//! (average, p50, p95, p99), error rate, user satisfaction, business value and
//! cost per request, per event type and overall, over a sliding window of
//! `real_time_analytics.window_size` seconds.
//!
//! Events are placed in one-second slots by their own time (`time_ms`; the
//! host sets it to the arrival time when the service runs on processing
//! time). The host clock is the watermark: the window is the `window_size`
//! seconds that end at it. An event ahead of the watermark waits in a
//! pending slot until the watermark reaches its second; one whose second has
//! already left the window is late and not counted (the host counts it).
//! Pending slots enter the window in time order, so the window at a given
//! watermark holds the same events whatever order they arrived in (within
//! the lateness the host allows). Memory does not grow with the number of events:
//! each slot keeps counters and a sparse latency histogram, and the window
//! keeps one dense histogram per type (see [`hist`] for its accuracy).
//! While the window holds at most [`EXACT_LIMIT`] latencies the raw values are
//! kept too and quantiles are exact (linear interpolation between the closest
//! ranks, as NumPy's default); beyond that they come from the histogram and
//! `latency_exact` is false.
//!
//! Definitions (all over the window):
//! - `throughput`: events / covered seconds; `requests_per_second`: the same
//!   for `llm_request` events. Covered seconds are the window length, or the
//!   whole seconds since the first event ever seen if that is shorter.
//! - `error_rate`: errors / events that carry an outcome (`llm_request` with
//!   its `success` flag, `error_event` always an error).
//! - `user_satisfaction`: mean satisfaction score; `business_value`: sum;
//!   `cost_per_request`: mean cost of the events that carry a cost.
//!
//! Window totals are kept as running sums, added when an event arrives and
//! subtracted when its slot leaves, so a snapshot costs the same whatever the
//! window holds. The sums are fixed-point integers (latency in µs,
//! satisfaction in millionths, business value in thousandths, cost in
//! billionths) so that adding and subtracting never drifts: averages are
//! exact to those units. Inputs are clamped to plausible ranges (latency up
//! to 10^9 ms, |business value| and cost up to 10^12 and 10^6 per event).

pub mod hist;

use hist::{Dense, Sparse, bucket_of, exact_quantile};
use hxp_plugin_sdk::fixed::{COST, LATENCY, SATISFACTION, VALUE};
use hxp_plugin_sdk::{
    EventBatch, EventKind, EventRef, Health, Metadata, ServiceHealth, Snapshot, Stats,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Raw latencies kept per window for exact quantiles.
pub const EXACT_LIMIT: usize = 1024;
/// Services whose last health report is remembered.
pub const MAX_SERVICES: usize = 10_000;
/// Layout version of [`Analytics::save_state`] (2: pending slots; 1 is
/// still read).
pub const STATE_VERSION: u32 = 2;
const KINDS: usize = 5;

/// The plugin's section of the config (`real_time_analytics`). Keys the
/// plugin does not use (enabled, update_interval, ...) belong to the host.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Window length in seconds (requirements: 300).
    pub window_size: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config { window_size: 300 }
    }
}

impl Config {
    pub fn parse(json: &str) -> Result<Config, String> {
        if json.trim().is_empty() {
            return Ok(Config::default());
        }
        let c: Config =
            serde_json::from_str(json).map_err(|e| format!("real_time_analytics: {e}"))?;
        if c.window_size == 0 || c.window_size > 86_400 {
            return Err(format!(
                "real_time_analytics.window_size: {} is out of range (1..=86400 seconds)",
                c.window_size
            ));
        }
        Ok(c)
    }
}

/// Counters and fixed-point sums, of one type in one slot or in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
struct Sums {
    count: u64,
    latency_count: u64,
    latency: i64,
    outcome: u64,
    errors: u64,
    sat_count: u64,
    sat: i64,
    value: i64,
    cost_count: u64,
    cost: i64,
}

impl Sums {
    fn add(&mut self, o: &Sums) {
        self.count += o.count;
        self.latency_count += o.latency_count;
        self.latency = self.latency.wrapping_add(o.latency);
        self.outcome += o.outcome;
        self.errors += o.errors;
        self.sat_count += o.sat_count;
        self.sat = self.sat.wrapping_add(o.sat);
        self.value = self.value.wrapping_add(o.value);
        self.cost_count += o.cost_count;
        self.cost = self.cost.wrapping_add(o.cost);
    }

    fn sub(&mut self, o: &Sums) {
        self.count -= o.count;
        self.latency_count -= o.latency_count;
        self.latency = self.latency.wrapping_sub(o.latency);
        self.outcome -= o.outcome;
        self.errors -= o.errors;
        self.sat_count -= o.sat_count;
        self.sat = self.sat.wrapping_sub(o.sat);
        self.value = self.value.wrapping_sub(o.value);
        self.cost_count -= o.cost_count;
        self.cost = self.cost.wrapping_sub(o.cost);
    }
}

/// One event type in one second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct KindSlot {
    sums: Sums,
    hist: Sparse,
    /// Raw latencies, complete unless `raw_dropped`.
    raw: Vec<f64>,
    raw_dropped: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Slot {
    /// Unix second this slot holds; meaningful only when `live`.
    sec: i64,
    live: bool,
    kinds: [KindSlot; KINDS],
}

/// Serialized form: the window (all of state version 1), then the slots
/// ahead of the watermark. postcard writes a nested struct as its fields in
/// order, so a version-1 state is the first part of a version-2 one.
#[derive(Serialize, Deserialize)]
struct State {
    window: WindowState,
    pending: Vec<Slot>,
}

/// The window: only live slots; totals are rebuilt from them.
#[derive(Serialize, Deserialize)]
struct WindowState {
    first_sec: Option<i64>,
    head_sec: i64,
    slots: Vec<Slot>,
    services: Vec<(String, Health, i64)>,
}

pub struct Analytics {
    config: Config,
    ring: Vec<Slot>,
    /// The watermark's second (`i64::MIN` before the first event); slots
    /// older than `head_sec - window + 1` are gone.
    head_sec: i64,
    /// Earliest second that entered the window.
    first_sec: Option<i64>,
    /// Slots ahead of the watermark, by second, and their raw latencies.
    pending: BTreeMap<i64, Slot>,
    pending_raw: usize,
    totals: [Sums; KINDS],
    dense: [Dense; KINDS],
    overall: Dense,
    raw_total: usize,
    /// Live slots per type whose raw latencies are incomplete.
    dropped: [usize; KINDS],
    services: BTreeMap<String, (Health, i64)>,
}

impl Default for Analytics {
    fn default() -> Self {
        Analytics::new(Config::default())
    }
}

impl Analytics {
    pub fn new(config: Config) -> Analytics {
        Analytics {
            ring: vec![Slot::default(); config.window_size as usize],
            config,
            head_sec: i64::MIN,
            first_sec: None,
            pending: BTreeMap::new(),
            pending_raw: 0,
            totals: Default::default(),
            dense: Default::default(),
            overall: Dense::default(),
            raw_total: 0,
            dropped: [0; KINDS],
            services: BTreeMap::new(),
        }
    }

    pub fn metadata() -> Metadata {
        Metadata {
            name: "analytics".into(),
            version: if cfg!(feature = "variant-b") {
                concat!(env!("CARGO_PKG_VERSION"), "+b")
            } else {
                env!("CARGO_PKG_VERSION")
            }
            .into(),
            state_version: STATE_VERSION,
            wants_payload: false,
            fresh_start_ok: false,
        }
    }

    /// Apply a new config section; a new window size keeps the slots that
    /// still fit.
    pub fn configure(&mut self, json: &str) -> Result<(), String> {
        let config = Config::parse(json)?;
        if config != self.config {
            let state = self.save_state();
            *self = Analytics::new(config);
            self.load_state(STATE_VERSION, &state)?;
        }
        Ok(())
    }

    fn window(&self) -> i64 {
        self.config.window_size as i64
    }

    /// Move the watermark to `now_sec`: pending slots enter the window in
    /// time order, each after the slots older than its window left.
    fn advance(&mut self, now_sec: i64) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > now_sec {
                break;
            }
            let slot = entry.remove();
            self.pending_raw -= slot.kinds.iter().map(|k| k.raw.len()).sum::<usize>();
            self.step_to(slot.sec);
            self.admit(slot);
        }
        if self.head_sec != i64::MIN {
            self.step_to(now_sec);
        }
    }

    /// Move the head to `sec`, dropping slots that left the window.
    fn step_to(&mut self, sec: i64) {
        if self.head_sec == i64::MIN {
            self.head_sec = sec;
            return;
        }
        if sec <= self.head_sec {
            return;
        }
        let w = self.window();
        let oldest_kept = sec - w + 1;
        let from = (self.head_sec - w + 1).max(oldest_kept - w);
        for s in from..oldest_kept {
            let idx = s.rem_euclid(w) as usize;
            if self.ring[idx].live && self.ring[idx].sec < oldest_kept {
                self.evict(idx);
            }
        }
        self.head_sec = sec;
    }

    fn evict(&mut self, idx: usize) {
        let slot = std::mem::take(&mut self.ring[idx]);
        for (k, ks) in slot.kinds.iter().enumerate() {
            self.totals[k].sub(&ks.sums);
            self.dense[k].subtract(&ks.hist);
            self.overall.subtract(&ks.hist);
            self.raw_total -= ks.raw.len();
            if ks.raw_dropped {
                self.dropped[k] -= 1;
            }
        }
    }

    /// Add a slot's contents to the window (a pending slot the watermark
    /// reached, or one loaded from state).
    fn admit(&mut self, mut slot: Slot) {
        let idx = slot.sec.rem_euclid(self.window()) as usize;
        self.first_sec = Some(self.first_sec.map_or(slot.sec, |f| f.min(slot.sec)));
        for (k, ks) in slot.kinds.iter_mut().enumerate() {
            self.totals[k].add(&ks.sums);
            self.dense[k].merge(&ks.hist);
            self.overall.merge(&ks.hist);
            if ks.raw_dropped || self.raw_total + ks.raw.len() > EXACT_LIMIT {
                ks.raw = Vec::new();
                ks.raw_dropped = true;
            }
            self.raw_total += ks.raw.len();
            if ks.raw_dropped {
                self.dropped[k] += 1;
            }
        }
        self.ring[idx] = slot;
    }

    /// Fold a batch in, then move the watermark to `now_ms`.
    pub fn process(&mut self, events: &EventBatch, now_ms: i64) {
        for e in events.iter() {
            self.fold(&e);
        }
        if self.services.len() > MAX_SERVICES {
            self.trim_services(i64::MIN);
        }
        self.advance(now_ms.div_euclid(1000));
    }

    /// One event into its slot: in the window, pending, or (late) nowhere.
    fn fold(&mut self, e: &EventRef) {
        let sec = e.second();
        let w = self.window();
        let in_window = self.head_sec != i64::MIN && sec <= self.head_sec;
        if in_window && sec <= self.head_sec - w {
            return; // late: its second left the window
        }
        if let (Some(h), Some(svc)) = (e.health, e.service) {
            self.report_health(svc, h, e.time_ms);
        }
        let k = e.kind.index();
        let d = sums_of(e);
        let latency = e.latency_ms.filter(|l| l.is_finite());
        if in_window {
            let idx = sec.rem_euclid(w) as usize;
            let slot = &mut self.ring[idx];
            if !slot.live || slot.sec != sec {
                *slot = Slot {
                    sec,
                    live: true,
                    ..Slot::default()
                };
                self.first_sec = Some(self.first_sec.map_or(sec, |f| f.min(sec)));
            }
            let ks = &mut self.ring[idx].kinds[k];
            ks.sums.add(&d);
            self.totals[k].add(&d);
            if let Some(l) = latency {
                let b = bucket_of(l);
                ks.hist.add(b);
                self.dense[k].add(b);
                self.overall.add(b);
                keep_raw(ks, l, &mut self.raw_total, &mut self.dropped[k]);
            }
        } else {
            let slot = self.pending.entry(sec).or_insert_with(|| Slot {
                sec,
                live: true,
                ..Slot::default()
            });
            let ks = &mut slot.kinds[k];
            ks.sums.add(&d);
            if let Some(l) = latency {
                ks.hist.add(bucket_of(l));
                // Counted when the slot enters the window.
                let mut ignored = 0;
                keep_raw(ks, l, &mut self.pending_raw, &mut ignored);
            }
        }
    }

    /// The latest health a service reported (by event time).
    fn report_health(&mut self, svc: &str, h: Health, time_ms: i64) {
        match self.services.get_mut(svc) {
            Some(entry) if entry.1 <= time_ms => *entry = (h, time_ms),
            Some(_) => {}
            None => {
                self.services.insert(svc.to_string(), (h, time_ms));
            }
        }
    }

    /// Forget services not heard from since `cutoff_ms`, and the oldest ones
    /// beyond [`MAX_SERVICES`].
    fn trim_services(&mut self, cutoff_ms: i64) {
        self.services.retain(|_, (_, t)| *t >= cutoff_ms);
        if self.services.len() > MAX_SERVICES {
            let mut times: Vec<i64> = self.services.values().map(|(_, t)| *t).collect();
            times.sort_unstable();
            let cut = times[times.len() - MAX_SERVICES];
            self.services.retain(|_, (_, t)| *t >= cut);
        }
    }

    /// Aggregates over the window ending at the watermark `now_ms`.
    pub fn snapshot(&mut self, now_ms: i64) -> Snapshot {
        let now_sec = now_ms.div_euclid(1000);
        self.advance(now_sec);
        let w = self.window();
        let covered = match self.first_sec {
            Some(f) if self.head_sec != i64::MIN => (self.head_sec - f + 1).clamp(1, w) as f64,
            _ => 0.0,
        };
        let llm = self.totals[EventKind::LlmRequest.index()].count;
        let mut per_kind = Vec::new();
        let mut total = Sums::default();
        for kind in EventKind::ALL {
            let k = kind.index();
            let t = &self.totals[k];
            total.add(t);
            if t.count == 0 {
                continue;
            }
            let exact = self.dropped[k] == 0;
            let q = quantiles(&self.dense[k], exact, || self.raw_of(&[k]));
            let kind_llm = if kind == EventKind::LlmRequest {
                llm
            } else {
                0
            };
            per_kind.push((kind, stats(t, kind_llm, covered, q, exact)));
        }
        let exact = self.dropped.iter().all(|&d| d == 0);
        let q = quantiles(&self.overall, exact, || self.raw_of(&[0, 1, 2, 3, 4]));
        let overall = stats(&total, llm, covered, q, exact);
        self.trim_services(now_ms - w * 1000);
        let services = self
            .services
            .iter()
            .map(|(s, (h, t))| ServiceHealth {
                service: s.clone(),
                health: *h,
                time_ms: *t,
            })
            .collect();
        Snapshot {
            time_ms: now_ms,
            window_secs: self.config.window_size,
            covered_secs: covered,
            overall,
            per_kind,
            services,
        }
    }

    /// Sorted raw latencies of the given types.
    fn raw_of(&self, kinds: &[usize]) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .ring
            .iter()
            .filter(|s| s.live)
            .flat_map(|s| {
                kinds
                    .iter()
                    .flat_map(move |&k| s.kinds[k].raw.iter().copied())
            })
            .collect();
        v.sort_unstable_by(f64::total_cmp);
        v
    }

    pub fn save_state(&self) -> Vec<u8> {
        let window = WindowState {
            first_sec: self.first_sec,
            head_sec: self.head_sec,
            slots: self.ring.iter().filter(|s| s.live).cloned().collect(),
            services: self
                .services
                .iter()
                .map(|(s, (h, t))| (s.clone(), *h, *t))
                .collect(),
        };
        let state = State {
            window,
            pending: self.pending.values().cloned().collect(),
        };
        postcard::to_allocvec(&state).expect("state serializes")
    }

    /// Replace the state with one saved by `save_state` (of this or an older
    /// state version).
    pub fn load_state(&mut self, version: u32, bytes: &[u8]) -> Result<(), String> {
        let state = match version {
            1 => State {
                window: decode(bytes)?,
                pending: Vec::new(),
            },
            STATE_VERSION => decode(bytes)?,
            _ => {
                return Err(format!(
                    "analytics state version {version} is not supported (this plugin reads versions 1 to {STATE_VERSION})"
                ));
            }
        };
        let State { window, pending } = state;
        *self = Analytics::new(self.config.clone());
        self.head_sec = window.head_sec;
        let oldest_kept = window.head_sec.saturating_sub(self.window() - 1);
        for slot in window
            .slots
            .into_iter()
            .filter(|s| s.live && s.sec >= oldest_kept)
        {
            self.admit(slot);
        }
        // After admit, which takes the earliest admitted second.
        self.first_sec = window.first_sec;
        for slot in pending {
            self.pending_raw += slot.kinds.iter().map(|k| k.raw.len()).sum::<usize>();
            self.pending.insert(slot.sec, slot);
        }
        self.services = window
            .services
            .into_iter()
            .map(|(s, h, t)| (s, (h, t)))
            .collect();
        Ok(())
    }
}

/// A saved state's bytes as `T`.
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("analytics state is unreadable: {e}"))
}

/// One event's contribution to the sums.
fn sums_of(e: &EventRef) -> Sums {
    let mut d = Sums {
        count: 1,
        ..Sums::default()
    };
    if let Some(l) = e.latency_ms.filter(|l| l.is_finite()) {
        d.latency_count = 1;
        d.latency = LATENCY.of(l);
    }
    if let Some(ok) = e.success {
        d.outcome = 1;
        d.errors = u64::from(!ok);
    }
    if let Some(s) = e.satisfaction.filter(|s| s.is_finite()) {
        d.sat_count = 1;
        d.sat = SATISFACTION.of(s);
    }
    if let Some(v) = e.business_value.filter(|v| v.is_finite()) {
        d.value = VALUE.of(v);
    }
    if let Some(c) = e.cost.filter(|c| c.is_finite()) {
        d.cost_count = 1;
        d.cost = COST.of(c);
    }
    d
}

/// Keep a raw latency while `total` is under [`EXACT_LIMIT`]; past it the
/// slot's raw values are incomplete and dropped (`dropped` counts the slot
/// once).
fn keep_raw(ks: &mut KindSlot, l: f64, total: &mut usize, dropped: &mut usize) {
    if ks.raw_dropped {
        return;
    }
    if *total < EXACT_LIMIT {
        ks.raw.push(l);
        *total += 1;
    } else {
        // Incomplete raw values are of no use: give their room back.
        *total -= ks.raw.len();
        ks.raw = Vec::new();
        ks.raw_dropped = true;
        *dropped += 1;
    }
}

/// p50, p95, p99: exact from the raw values when complete, else from the
/// histogram.
fn quantiles(dense: &Dense, exact: bool, raw: impl FnOnce() -> Vec<f64>) -> Option<[f64; 3]> {
    const QS: [f64; 3] = [0.50, 0.95, 0.99];
    if exact {
        let raw = raw();
        Some(
            QS.map(|q| exact_quantile(&raw, q))
                .map(|v| v.unwrap_or(f64::NAN)),
        )
        .filter(|_| !raw.is_empty())
    } else {
        dense.quantiles(QS)
    }
}

fn stats(t: &Sums, llm: u64, covered: f64, q: Option<[f64; 3]>, exact: bool) -> Stats {
    let per_sec = |n: u64| {
        if covered > 0.0 {
            n as f64 / covered
        } else {
            0.0
        }
    };
    Stats {
        count: t.count,
        throughput: per_sec(t.count),
        requests_per_second: per_sec(llm),
        latency_count: t.latency_count,
        latency_avg: LATENCY.mean(t.latency, t.latency_count),
        latency_p50: q.map(|q| q[0]),
        latency_p95: q.map(|q| q[1]),
        latency_p99: q.map(|q| q[2]),
        latency_exact: exact,
        outcome_count: t.outcome,
        error_count: t.errors,
        error_rate: if t.outcome > 0 {
            t.errors as f64 / t.outcome as f64
        } else {
            0.0
        },
        user_satisfaction: SATISFACTION.mean(t.sat, t.sat_count),
        satisfaction_count: t.sat_count,
        business_value: VALUE.total(t.value),
        cost_per_request: COST.mean(t.cost, t.cost_count),
    }
}

// The component: the SDK's traits over the methods above, and the export.
impl hxp_plugin_sdk::Plugin for Analytics {
    fn metadata() -> Metadata {
        Analytics::metadata()
    }

    fn configure(&mut self, config: &str) -> Result<(), String> {
        Analytics::configure(self, config)
    }

    fn save_state(&self) -> Vec<u8> {
        Analytics::save_state(self)
    }

    fn load_state(&mut self, state_version: u32, state: &[u8]) -> Result<(), String> {
        Analytics::load_state(self, state_version, state)
    }
}

impl hxp_plugin_sdk::Analytics for Analytics {
    fn process(&mut self, events: &EventBatch, now_ms: i64) {
        Analytics::process(self, events, now_ms)
    }

    fn snapshot(&mut self, now_ms: i64) -> Snapshot {
        Analytics::snapshot(self, now_ms)
    }
}

hxp_plugin_sdk::export_analytics!(Analytics);

#[cfg(test)]
mod tests {
    use super::*;
    use hxp_plugin_sdk::Event;

    /// The events as they arrive at `now_ms` on processing time (the
    /// host then sets their time to the arrival time).
    fn at(events: &[Event], now_ms: i64) -> EventBatch {
        let mut batch = EventBatch::from_events(events);
        batch.place_at(now_ms);
        batch
    }

    fn llm(seq: u64, latency: f64, ok: bool) -> Event {
        let mut e = Event::new(seq, EventKind::LlmRequest, 0);
        e.latency_ms = Some(latency);
        e.success = Some(ok);
        e.cost = Some(0.01);
        e
    }

    fn kind_stats(s: &Snapshot, k: EventKind) -> &Stats {
        &s.per_kind.iter().find(|(kk, _)| *kk == k).unwrap().1
    }

    #[test]
    fn ten_requests_by_hand() {
        // latencies 100..1000 step 100; two errors.
        let mut a = Analytics::default();
        let events: Vec<Event> = (1..=10)
            .map(|i| llm(i, i as f64 * 100.0, i % 5 != 0))
            .collect();
        a.process(&at(&events, 1_000_000), 1_000_000);
        let s = a.snapshot(1_000_500);
        let o = &s.overall;
        assert_eq!(o.count, 10);
        assert_eq!(o.latency_avg, Some(550.0));
        // NumPy: percentile([100..1000], 50) = 550, 95 = 955, 99 = 991
        assert_eq!(o.latency_p50, Some(550.0));
        assert!((o.latency_p95.unwrap() - 955.0).abs() < 1e-9);
        assert!((o.latency_p99.unwrap() - 991.0).abs() < 1e-9);
        assert!(o.latency_exact);
        assert_eq!(o.error_rate, 0.2);
        assert_eq!(s.covered_secs, 1.0);
        assert_eq!(o.throughput, 10.0);
        assert_eq!(o.requests_per_second, 10.0);
        assert!((o.cost_per_request.unwrap() - 0.01).abs() < 1e-12);
        assert_eq!(kind_stats(&s, EventKind::LlmRequest), o);
    }

    #[test]
    fn window_slides_and_covers() {
        let mut a = Analytics::new(Config { window_size: 10 });
        for sec in 0..20i64 {
            let events: Vec<Event> = (0..5).map(|i| llm(i, 10.0, true)).collect();
            a.process(&at(&events, sec * 1000 + 10), sec * 1000 + 10);
            let s = a.snapshot(sec * 1000 + 999);
            let secs = (sec + 1).min(10);
            assert_eq!(s.overall.count, 5 * secs as u64, "at second {sec}");
            assert_eq!(s.covered_secs, secs as f64);
            assert_eq!(s.overall.throughput, 5.0);
        }
        // nothing for 9 seconds: one slot left, then none.
        let s = a.snapshot(28_000);
        assert_eq!(s.overall.count, 5);
        let s = a.snapshot(29_000);
        assert_eq!(s.overall.count, 0);
        assert_eq!(s.overall.latency_p50, None);
        assert!(s.per_kind.is_empty());
    }

    #[test]
    fn memory_is_bounded_and_quantiles_stay_within_one_percent() {
        let mut a = Analytics::new(Config { window_size: 60 });
        // 600k latencies over 60 s, uniform 1..=1000 ms.
        let mut seq = 0;
        for sec in 0..60i64 {
            let events: Vec<Event> = (0..10_000)
                .map(|i| {
                    seq += 1;
                    llm(seq, (i % 1000 + 1) as f64, true)
                })
                .collect();
            a.process(&at(&events, sec * 1000), sec * 1000);
        }
        assert!(a.raw_total <= EXACT_LIMIT);
        let s = a.snapshot(59_500);
        assert!(!s.overall.latency_exact);
        for (got, want) in [
            (s.overall.latency_p50, 500.5),
            (s.overall.latency_p95, 950.05),
            (s.overall.latency_p99, 990.01),
        ] {
            let got = got.unwrap();
            assert!((got - want).abs() / want < 0.01, "{got} vs {want}");
        }
        let slot_entries: usize = a
            .ring
            .iter()
            .map(|s| s.kinds.iter().map(|k| k.hist.0.len()).sum::<usize>())
            .sum();
        assert!(slot_entries <= 60 * hist::BUCKETS);
        assert_eq!(s.overall.latency_avg, Some(500.5));
    }

    #[test]
    fn satisfaction_value_cost_and_health() {
        let mut a = Analytics::default();
        let mut fb = Event::new(1, EventKind::UserFeedback, 0);
        fb.satisfaction = Some(8.0);
        let mut fb2 = Event::new(2, EventKind::UserFeedback, 0);
        fb2.satisfaction = Some(6.0);
        let mut biz = Event::new(3, EventKind::BusinessEvent, 0);
        biz.business_value = Some(120.5);
        let mut err = Event::new(4, EventKind::ErrorEvent, 0);
        err.success = Some(false);
        let mut m = Event::new(5, EventKind::SystemMetric, 77);
        m.service = Some("gateway".into());
        m.health = Some(Health::Failed);
        a.process(&at(&[fb, fb2, biz, err, m], 5_000), 5_000);
        let s = a.snapshot(5_000);
        assert_eq!(s.overall.user_satisfaction, Some(7.0));
        assert_eq!(s.overall.business_value, 120.5);
        assert_eq!(s.overall.error_rate, 1.0);
        assert_eq!(s.overall.requests_per_second, 0.0);
        assert_eq!(
            s.services,
            vec![ServiceHealth {
                service: "gateway".into(),
                health: Health::Failed,
                time_ms: 5_000
            }]
        );
        assert_eq!(kind_stats(&s, EventKind::ErrorEvent).error_rate, 1.0);
    }

    #[test]
    fn state_round_trip_continues_exactly() {
        let mut a = Analytics::new(Config { window_size: 30 });
        for sec in 0..40i64 {
            let events: Vec<Event> = (0..200)
                .map(|i| llm(i, (i * 7 % 300) as f64 + sec as f64, i % 9 != 0))
                .collect();
            a.process(&at(&events, sec * 1000), sec * 1000);
        }
        let mut b = Analytics::new(Config { window_size: 30 });
        b.load_state(STATE_VERSION, &a.save_state()).unwrap();
        assert_eq!(a.snapshot(40_000), b.snapshot(40_000));
        let more: Vec<Event> = (0..50).map(|i| llm(i, 5.0, false)).collect();
        a.process(&at(&more, 41_000), 41_000);
        b.process(&at(&more, 41_000), 41_000);
        assert_eq!(a.snapshot(45_000), b.snapshot(45_000));
        assert!(b.load_state(3, &[]).unwrap_err().contains("version 3"));
        assert!(b.load_state(1, &[1, 2, 3]).is_err());
    }

    #[test]
    fn reconfigure_keeps_what_fits() {
        let mut a = Analytics::new(Config { window_size: 300 });
        for sec in 0..100i64 {
            a.process(&at(&[llm(sec as u64, 1.0, true)], sec * 1000), sec * 1000);
        }
        a.configure(r#"{"window_size": 10, "enabled": true}"#)
            .unwrap();
        assert_eq!(a.snapshot(99_000).overall.count, 10);
        let err = a.configure(r#"{"window_size": 0}"#).unwrap_err();
        assert!(err.contains("window_size"), "{err}");
        let err = a.configure(r#"{"window_size": "x"}"#).unwrap_err();
        assert!(err.contains("real_time_analytics"), "{err}");
    }

    /// 600 events over 120 s of event time (one every 200 ms), with
    /// latencies, outcomes, satisfaction and value varying.
    fn timeline() -> Vec<Event> {
        (0..600u64)
            .map(|i| {
                let t = 1_000_000 + i as i64 * 200;
                let mut e = match i % 3 {
                    0 => llm(i, (i * 37 % 900) as f64 + 5.0, i % 7 != 0),
                    1 => {
                        let mut e = Event::new(i, EventKind::UserFeedback, 0);
                        e.satisfaction = Some((i % 10) as f64);
                        e
                    }
                    _ => {
                        let mut e = Event::new(i, EventKind::BusinessEvent, 0);
                        e.business_value = Some(i as f64 * 0.25);
                        e
                    }
                };
                e.time_ms = t;
                e
            })
            .collect()
    }

    /// Process `events` in batches of `n`, the watermark trailing the
    /// newest event time seen by `lateness_ms`, as the host does.
    fn run(events: &[Event], n: usize, lateness_ms: i64) -> Analytics {
        let mut a = Analytics::new(Config { window_size: 30 });
        let mut newest = i64::MIN;
        for chunk in events.chunks(n) {
            newest = newest.max(chunk.iter().map(|e| e.time_ms).max().unwrap());
            a.process(&EventBatch::from_events(chunk), newest - lateness_ms);
        }
        a
    }

    #[test]
    fn the_window_follows_event_time_whatever_the_arrival_order() {
        let events = timeline();
        let lateness = 5_000;
        let paced = run(&events, 5, lateness).snapshot(1_114_800);
        let backlog = run(&events, 600, lateness).snapshot(1_114_800);
        // Shuffled within 4 s (less than the lateness): deterministic swaps
        // of events up to 20 positions apart.
        let mut shuffled = events.clone();
        for i in (0..shuffled.len()).step_by(7) {
            let j = (i + 3 + i % 17).min(shuffled.len() - 1);
            shuffled.swap(i, j);
        }
        let late = run(&shuffled, 9, lateness).snapshot(1_114_800);
        // The watermark is 1_119_800 - 5_000: seconds 1085..=1114 (30 s).
        let want = events
            .iter()
            .filter(|e| (1085..=1114).contains(&(e.time_ms / 1000)))
            .count() as u64;
        assert_eq!(want, 150);
        assert_eq!(paced.overall.count, want);
        assert_eq!(paced.overall.throughput, 5.0);
        assert_eq!(paced, backlog);
        assert_eq!(paced, late);
        // A backlog is not a spike: the same rate as the events' own.
        let one_shot = run(&events, 600, 0).snapshot(1_119_800);
        assert_eq!(one_shot.overall.throughput, 5.0);
    }

    #[test]
    fn pending_events_wait_for_the_watermark_and_late_ones_are_left_out() {
        let mut a = Analytics::new(Config { window_size: 10 });
        let ev = |seq, t| {
            let mut e = llm(seq, 10.0, true);
            e.time_ms = t;
            e
        };
        // Watermark at 100 s: the event at 103 s waits.
        a.process(
            &EventBatch::from_events(&[ev(1, 100_500), ev(2, 103_000)]),
            100_900,
        );
        assert_eq!(a.snapshot(100_900).overall.count, 1);
        // Out of order but within the window: lands in its second.
        a.process(&EventBatch::from_events(&[ev(3, 95_000)]), 100_900);
        assert_eq!(a.snapshot(100_900).overall.count, 2);
        // Late: second 90 left the window (91..=100) before it arrived.
        a.process(&EventBatch::from_events(&[ev(4, 90_999)]), 100_900);
        assert_eq!(a.snapshot(100_900).overall.count, 2);
        // The watermark passes 103 s: the pending event enters.
        assert_eq!(a.snapshot(103_000).overall.count, 3);
        // A saved state keeps what is pending.
        a.process(&EventBatch::from_events(&[ev(5, 107_000)]), 103_000);
        let mut b = Analytics::new(Config { window_size: 10 });
        b.load_state(STATE_VERSION, &a.save_state()).unwrap();
        // Seconds 98..=107: 100, 103 and 107 (95 left the window).
        assert_eq!(b.snapshot(107_000).overall.count, 3);
        assert_eq!(b.snapshot(107_000), a.snapshot(107_000));
    }

    #[test]
    fn a_version_1_state_is_read() {
        let v1 = WindowState {
            first_sec: Some(5),
            head_sec: 9,
            slots: vec![Slot {
                sec: 9,
                live: true,
                ..Slot::default()
            }],
            services: vec![("api".into(), Health::Healthy, 9_000)],
        };
        let bytes = postcard::to_allocvec(&v1).unwrap();
        let mut a = Analytics::new(Config { window_size: 10 });
        a.load_state(1, &bytes).unwrap();
        let s = a.snapshot(9_500);
        assert_eq!(s.covered_secs, 5.0);
        assert_eq!(s.services.len(), 1);
    }
}
