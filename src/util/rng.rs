//! Seeded randomness. Every random choice in trm comes from a ChaCha8 stream derived from the
//! user's seed and a path of integers (split, group, member...), so results do not depend on
//! thread scheduling and the same command gives byte-identical output.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser: a cheap, well-mixed hash of one 64-bit word.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A generator for the stream named by `seed` and `path`.
pub fn derive(seed: u64, path: &[u64]) -> ChaCha8Rng {
    let mut h = mix(seed);
    for &p in path {
        h = mix(h ^ mix(p.wrapping_add(0x1234_5678)));
    }
    ChaCha8Rng::seed_from_u64(h)
}
