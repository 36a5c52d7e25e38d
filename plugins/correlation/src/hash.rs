//! The hash of the keyed rules' tables. Their keys are field values of
//! events (user ids, models), so a sender chooses them: the hash must not
//! be predictable, or colliding keys would make every lookup a scan. std's
//! SipHash is, but costs several times more than a lookup needs here;
//! foldhash is fast and resists collisions as long as its seed is secret.
//! foldhash's own random seed comes from addresses and the clock, which a
//! WebAssembly instance does not randomise, so the seed is drawn from the
//! random source std uses for its own hash maps (WASI `random` in the
//! sandbox, the OS natively).

use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::OnceLock;

pub type KeyMap<V> = HashMap<String, V, SeedableRandomState>;

/// An empty map with a secret seed.
pub fn key_map<V>() -> KeyMap<V> {
    static SHARED: OnceLock<SharedSeed> = OnceLock::new();
    let shared = SHARED.get_or_init(|| SharedSeed::from_u64(random_u64()));
    HashMap::with_hasher(SeedableRandomState::with_seed(random_u64(), shared))
}

/// 64 random bits: std's `RandomState` keys its SipHash from the system's
/// random source; the hash of nothing under those keys is as random.
fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_per_map() {
        let (a, b) = (key_map::<u32>(), key_map::<u32>());
        let h = |m: &KeyMap<u32>| m.hasher().hash_one("user-1");
        assert_ne!(h(&a), h(&b));
        let mut m = key_map();
        m.insert("user-1".to_string(), 7);
        assert_eq!(m.get("user-1"), Some(&7));
    }
}
