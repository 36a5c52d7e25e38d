//! Latency histogram with bounded memory and documented accuracy.
//!
//! Buckets are log-linear, read straight off the bits of the `f64`: the
//! binary exponent (2^-10 ms to 2^30 ms) and the top 6 mantissa bits, so each
//! power of two is split into 64 equal buckets. A value is reported as its
//! bucket's midpoint, which is within 1/128 (0.78%) of any value in the
//! bucket: quantiles from the histogram have a relative error of at most 1%.
//! Values below 2^-10 ms (about 1 µs) share bucket 0 and are reported as 0;
//! values of 2^30 ms (12 days) and above share the last bucket.

use serde::{Deserialize, Serialize};

const MIN_EXP: i64 = -10;
const MAX_EXP: i64 = 30; // exclusive
const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Bucket 0 is "below 2^-10", then 64 buckets per power of two.
pub const BUCKETS: usize = 1 + (MAX_EXP - MIN_EXP) as usize * SUB;
/// Buckets are grouped in blocks of 64 with a running total per block, so a
/// quantile scan touches at most BLOCKS + 64 counters.
const BLOCK: usize = 64;
const BLOCKS: usize = BUCKETS.div_ceil(BLOCK);

/// Bucket index of a latency in milliseconds.
#[inline]
pub fn bucket_of(v: f64) -> u16 {
    // 2^MIN_EXP, spelled out so no pow call is left in wasm code.
    const MIN_VALUE: f64 = 1.0 / 1024.0;
    if v.is_nan() || v < MIN_VALUE {
        return 0;
    }
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1023;
    if exp >= MAX_EXP {
        return (BUCKETS - 1) as u16;
    }
    let sub = ((bits >> (52 - SUB_BITS)) & (SUB as u64 - 1)) as usize;
    (1 + (exp - MIN_EXP) as usize * SUB + sub) as u16
}

/// The value a bucket reports: its midpoint.
pub fn bucket_value(b: u16) -> f64 {
    if b == 0 {
        return 0.0;
    }
    let i = b as usize - 1;
    let exp = (i / SUB) as i64 + MIN_EXP;
    let sub = (i % SUB) as f64;
    // 2^exp built from its bits (exp is within the normal range).
    let pow2 = f64::from_bits(((exp + 1023) as u64) << 52);
    pow2 * (1.0 + (sub + 0.5) / SUB as f64)
}

/// Sparse histogram of one time slot: sorted (bucket, count) pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sparse(pub Vec<(u16, u32)>);

impl Sparse {
    #[inline]
    pub fn add(&mut self, b: u16) {
        match self.0.binary_search_by_key(&b, |&(k, _)| k) {
            Ok(i) => self.0[i].1 += 1,
            Err(i) => self.0.insert(i, (b, 1)),
        }
    }
}

/// Dense histogram of the whole window: slots are added when they fill and
/// subtracted when they leave the window, so counts stay exact integers.
#[derive(Debug, Clone)]
pub struct Dense {
    counts: Vec<u32>,
    blocks: Vec<u64>,
    total: u64,
}

impl Default for Dense {
    fn default() -> Self {
        Dense {
            counts: vec![0; BUCKETS],
            blocks: vec![0; BLOCKS],
            total: 0,
        }
    }
}

impl Dense {
    #[inline]
    pub fn add(&mut self, b: u16) {
        self.counts[b as usize] += 1;
        self.blocks[b as usize / BLOCK] += 1;
        self.total += 1;
    }

    pub fn merge(&mut self, s: &Sparse) {
        for &(b, c) in &s.0 {
            self.counts[b as usize] += c;
            self.blocks[b as usize / BLOCK] += c as u64;
            self.total += c as u64;
        }
    }

    pub fn subtract(&mut self, s: &Sparse) {
        for &(b, c) in &s.0 {
            self.counts[b as usize] -= c;
            self.blocks[b as usize / BLOCK] -= c as u64;
            self.total -= c as u64;
        }
    }

    pub fn add_all(&mut self, other: &Dense) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        for (a, b) in self.blocks.iter_mut().zip(&other.blocks) {
            *a += b;
        }
        self.total += other.total;
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Values at the given 0-based ranks (ascending, each < total), as
    /// bucket midpoints, in one pass over the histogram.
    fn at_ranks<const N: usize>(&self, ranks: [u64; N]) -> [f64; N] {
        let mut out = [bucket_value((BUCKETS - 1) as u16); N];
        let mut next = 0;
        let mut seen = 0u64;
        'blocks: for (bi, &bc) in self.blocks.iter().enumerate() {
            if next == N {
                break;
            }
            if seen + bc <= ranks[next] {
                seen += bc;
                continue;
            }
            for b in bi * BLOCK..((bi + 1) * BLOCK).min(BUCKETS) {
                seen += self.counts[b] as u64;
                while next < N && seen > ranks[next] {
                    out[next] = bucket_value(b as u16);
                    next += 1;
                }
                if next == N {
                    break 'blocks;
                }
            }
        }
        out
    }

    /// Quantiles `qs` (ascending, 0..=1), each interpolated between the two
    /// closest ranks like the exact path does.
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> Option<[f64; N]> {
        if self.total == 0 {
            return None;
        }
        let last = self.total - 1;
        let h = qs.map(|q| last as f64 * q);
        let lo = h.map(|h| h.floor() as u64);
        let lo_v = self.at_ranks(lo);
        let hi_v = self.at_ranks(lo.map(|l| (l + 1).min(last)));
        let mut out = [0.0; N];
        for i in 0..N {
            out[i] = lo_v[i] + (h[i] - lo[i] as f64) * (hi_v[i] - lo_v[i]);
        }
        Some(out)
    }

    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantiles([q]).map(|[v]| v)
    }
}

/// Exact quantile of sorted values, linear interpolation between the closest
/// ranks (NumPy's default method).
pub fn exact_quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let a = sorted[lo];
    match sorted.get(lo + 1) {
        Some(&b) => Some(a + (h - lo as f64) * (b - a)),
        None => Some(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_midpoint_is_within_one_percent() {
        let mut v = 0.001;
        while v < 1e9 {
            let r = bucket_value(bucket_of(v));
            assert!((r - v).abs() / v <= 0.0079, "{v} -> {r}");
            v *= 1.0137;
        }
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        let mut v = 1e-4;
        while v < 1e10 {
            let b = bucket_of(v);
            assert!(b >= last);
            last = b;
            v *= 1.001;
        }
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(-5.0), 0);
        assert_eq!(bucket_of(f64::INFINITY) as usize, BUCKETS - 1);
    }

    #[test]
    fn dense_quantiles_follow_the_data() {
        let mut d = Dense::default();
        let mut s = Sparse::default();
        for i in 1..=1000 {
            let b = bucket_of(i as f64);
            d.add(b);
            s.add(b);
        }
        for (q, want) in [(0.5, 500.5), (0.95, 950.05), (0.99, 990.01)] {
            let got = d.quantile(q).unwrap();
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        d.subtract(&s);
        assert_eq!(d.total(), 0);
        assert_eq!(d.quantile(0.5), None);
    }

    #[test]
    fn exact_quantile_matches_numpy() {
        let v = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(exact_quantile(&v, 0.5), Some(25.0));
        assert!((exact_quantile(&v, 0.95).unwrap() - 38.5).abs() < 1e-9);
        assert_eq!(exact_quantile(&[7.0], 0.99), Some(7.0));
    }
}
