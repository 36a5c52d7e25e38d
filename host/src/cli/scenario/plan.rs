//! When and where the incidents of a scenario happen: a few of each kind,
//! shuffled, with random lengths and gaps, never overlapping.
//!
//! The stream starts with [`WARMUP_MS`] of quiet (windows and baselines
//! fill before anything happens), keeps at least [`MIN_GAP_MS`] between
//! incidents and after the last one: longer than the scorer's default grace
//! (120 s) plus a correlation window, so that alerts raised while one
//! incident fades cannot be taken for the next one.

use super::events::{BACKENDS, MODELS, SERVICES};
use crate::cli::labels::{Incident, Kind};
use crate::cli::loadgen::Rng;

pub const WARMUP_MS: i64 = 300_000;
pub const MIN_GAP_MS: i64 = 180_000;
/// One incident of each kind per this much event time (at least one).
const MS_PER_ROUND: i64 = 2_400_000;

/// An incident and what it does to the events.
#[derive(Debug, Clone, PartialEq)]
pub struct Planted {
    pub incident: Incident,
    pub effect: Effect,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Degradation,
    Restart,
    /// The error rate climbs from the base rate to `peak`.
    Leak {
        peak: f64,
    },
    /// The spans in which health reads degraded (healthy in between).
    Flapping {
        degraded: Vec<(i64, i64)>,
    },
}

/// How long an incident of `kind` lasts, ms: within the ranges the
/// scenario promises (restarts 1–3 min, leaks over 10 min, the others a
/// few minutes).
fn length_ms(rng: &mut Rng, kind: Kind) -> i64 {
    let (lo, hi) = match kind {
        Kind::ModelDegradation => (180_000, 300_000),
        Kind::ServiceRestart => (60_000, 180_000),
        Kind::ErrorLeak => (600_000, 720_000),
        Kind::Flapping => (180_000, 300_000),
    };
    lo + (rng.unit() * (hi - lo) as f64) as i64
}

/// The incidents of a stream of `duration_ms` from `start_ms`, in time
/// order.
pub fn plan(rng: &mut Rng, start_ms: i64, duration_ms: i64) -> Vec<Planted> {
    let rounds = (duration_ms / MS_PER_ROUND).max(1);
    let mut kinds: Vec<Kind> = (0..rounds).flat_map(|_| Kind::ALL).collect();
    shuffle(rng, &mut kinds);
    let mut lengths: Vec<(Kind, i64)> = kinds.iter().map(|&k| (k, length_ms(rng, k))).collect();
    // A short stream holds fewer: drop from the end until they fit.
    let needed = |ls: &[(Kind, i64)]| WARMUP_MS + ls.iter().map(|l| l.1 + MIN_GAP_MS).sum::<i64>();
    while !lengths.is_empty() && needed(&lengths) > duration_ms {
        lengths.pop();
    }
    let slack = duration_ms - needed(&lengths);
    // The slack is shared out at random between the gaps before each
    // incident and the tail.
    let weights: Vec<f64> = (0..=lengths.len()).map(|_| rng.unit()).collect();
    let total: f64 = weights.iter().sum::<f64>().max(f64::MIN_POSITIVE);
    let mut at = start_ms + WARMUP_MS;
    let mut out = Vec::with_capacity(lengths.len());
    for (i, (kind, len)) in lengths.into_iter().enumerate() {
        at += (slack as f64 * weights[i] / total) as i64;
        let incident = Incident {
            id: format!("inc-{:02}", i + 1),
            kind,
            key_field: kind.key_field(),
            key: key(rng, kind).to_string(),
            start_ms: at,
            end_ms: at + len,
        };
        let effect = effect(rng, kind, (at, at + len));
        out.push(Planted { incident, effect });
        at += len + MIN_GAP_MS;
    }
    out
}

/// Fisher–Yates, on the scenario's generator.
fn shuffle<T>(rng: &mut Rng, xs: &mut [T]) {
    for i in (1..xs.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        xs.swap(i, j);
    }
}

/// Who an incident of `kind` happens to: a leak needs requests, so only a
/// serving backend leaks.
fn key(rng: &mut Rng, kind: Kind) -> &'static str {
    match kind {
        Kind::ModelDegradation => rng.pick(&MODELS),
        Kind::ErrorLeak => rng.pick(&BACKENDS),
        Kind::ServiceRestart | Kind::Flapping => rng.pick(&SERVICES),
    }
}

fn effect(rng: &mut Rng, kind: Kind, (from, to): (i64, i64)) -> Effect {
    match kind {
        Kind::ModelDegradation => Effect::Degradation,
        Kind::ServiceRestart => Effect::Restart,
        Kind::ErrorLeak => Effect::Leak {
            peak: 0.06 + 0.02 * rng.unit(),
        },
        Kind::Flapping => {
            // Degraded and healthy phases of 15–30 s each, starting
            // degraded.
            let mut degraded = Vec::new();
            let mut at = from;
            while at < to {
                let bad = (at + 15_000 + (rng.unit() * 15_000.0) as i64).min(to);
                degraded.push((at, bad));
                at = bad + 15_000 + (rng.unit() * 15_000.0) as i64;
            }
            Effect::Flapping { degraded }
        }
    }
}
