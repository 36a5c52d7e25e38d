//! Fixed-point units of the analytics sums. Sums of integers never drift
//! when slots are added and later subtracted, and a recomputation from the
//! stored events (the host's batch analytics) that uses the same units
//! gets the same figures to the last bit.

/// A quantity's fixed-point unit and the largest magnitude kept per event.
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// Units per 1 of the quantity.
    pub scale: f64,
    /// Values are clamped to ±max (a hostile 1e300 must not overflow).
    pub max: f64,
}

/// Latency in µs, up to 10^9 ms.
pub const LATENCY: Unit = Unit {
    scale: 1e3,
    max: 1e9,
};
/// Satisfaction in millionths.
pub const SATISFACTION: Unit = Unit {
    scale: 1e6,
    max: 1e3,
};
/// Business value in thousandths, up to 10^12 per event.
pub const VALUE: Unit = Unit {
    scale: 1e3,
    max: 1e12,
};
/// Cost in billionths, up to 10^6 per event.
pub const COST: Unit = Unit {
    scale: 1e9,
    max: 1e6,
};

impl Unit {
    /// `v` clamped and in units (rounding half to even, a single
    /// instruction in wasm). Sum with wrapping arithmetic.
    pub fn of(self, v: f64) -> i64 {
        (v.clamp(-self.max, self.max) * self.scale).round_ties_even() as i64
    }

    /// A sum of units back as the quantity.
    pub fn total(self, sum: i64) -> f64 {
        sum as f64 / self.scale
    }

    /// The mean of `n` values that sum to `sum` units.
    pub fn mean(self, sum: i64, n: u64) -> Option<f64> {
        (n > 0).then(|| sum as f64 / self.scale / n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_are_exact_and_clamped() {
        // In floating point 0.1 + 0.2 + 0.3 is 0.6000000000000001.
        let parts = [0.1, 0.2, 0.3, 0.2];
        let sum: i64 = parts.iter().map(|&v| COST.of(v)).sum();
        assert_eq!(COST.total(sum), 0.8);
        assert_eq!(COST.mean(sum, 4), Some(0.2));
        assert_eq!(COST.mean(0, 0), None);
        assert_eq!(LATENCY.of(f64::INFINITY), 1_000_000_000_000);
        assert_eq!(VALUE.of(-1e300), -1_000_000_000_000_000);
    }
}
