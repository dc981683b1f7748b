//! numpy's legacy global random stream (`np.random.seed`, `randint`, `shuffle`, `permutation`),
//! draw for draw: the reference's data builders use it, and a data set is only byte-identical to
//! theirs (so that published checkpoints pair with it) when every draw is.
//!
//! - The generator is MT19937 (Matsumoto and Nishimura), seeded from one 32-bit integer as
//!   `np.random.seed(int)` does (the classic `init_genrand`).
//! - Bounded integers use numpy's masked rejection: draw 32 bits, mask to the smallest all-ones
//!   number covering the range, retry while above it. `randint(low, high)` and each step of the
//!   Fisher–Yates `shuffle` (from the last element down) are both this draw.
//!
//! Checked against numpy 2.4 in the tests below (values printed by numpy itself).

const N: usize = 624;
const M: usize = 397;

/// The legacy `numpy.random.RandomState` stream.
pub struct LegacyRandom {
    key: [u32; N],
    pos: usize,
}

impl LegacyRandom {
    /// `np.random.seed(seed)` for an integer seed in [0, 2^32).
    pub fn new(seed: u32) -> Self {
        let mut key = [0u32; N];
        let mut s = seed;
        for (i, k) in key.iter_mut().enumerate() {
            *k = s;
            s = 1_812_433_253u32.wrapping_mul(s ^ (s >> 30)).wrapping_add(i as u32 + 1);
        }
        LegacyRandom { key, pos: N }
    }

    fn refill(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..N {
            let y = (self.key[i] & UPPER) | (self.key[(i + 1) % N] & LOWER);
            self.key[i] = self.key[(i + M) % N] ^ (y >> 1) ^ if y & 1 == 1 { MATRIX_A } else { 0 };
        }
        self.pos = 0;
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        if self.pos == N {
            self.refill();
        }
        let mut y = self.key[self.pos];
        self.pos += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A uniform integer in `[0, max]` (numpy's `random_interval`; no draw when `max` is 0).
    pub fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mask = u32::MAX >> max.leading_zeros();
        loop {
            let v = self.next_u32() & mask;
            if v <= max {
                return v;
            }
        }
    }

    /// `np.random.randint(low, high)`: a uniform integer in `[low, high)`.
    pub fn randint(&mut self, low: i64, high: i64) -> i64 {
        assert!(high > low && high - low - 1 <= u32::MAX as i64, "randint({low}, {high}): empty or over 32 bits");
        low + self.interval((high - low - 1) as u32) as i64
    }

    /// `np.random.shuffle(x)` on a list or a 1-D array.
    pub fn shuffle<T>(&mut self, x: &mut [T]) {
        for i in (1..x.len()).rev() {
            let j = self.interval(u32::try_from(i).expect("shuffle of more than 2^32 items")) as usize;
            x.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // All values printed by numpy 2.4.6. Raw words: r = RandomState(42);
    // [r.randint(0, 2**32, dtype=np.uint64) for _ in range(5)] (a full 32-bit range returns the
    // word itself); MT19937()._legacy_seeding(42) then random_raw() gives the same.
    #[test]
    fn raw_words_match_numpy() {
        let mut r = LegacyRandom::new(42);
        let got: Vec<u32> = (0..5).map(|_| r.next_u32()).collect();
        assert_eq!(got, [1608637542, 3421126067, 4083286876, 787846414, 3143890026]);
    }

    // np.random.seed(42); [np.random.randint(0, 8) for _ in range(10)]
    #[test]
    fn randint_matches_numpy() {
        let mut r = LegacyRandom::new(42);
        let got: Vec<i64> = (0..10).map(|_| r.randint(0, 8)).collect();
        assert_eq!(got, [6, 3, 4, 6, 2, 7, 4, 4, 6, 1]);
    }

    // np.random.seed(7); np.random.permutation(np.arange(1, 10)); then np.random.randint(0, 31);
    // then a = list(range(20)); np.random.shuffle(a)
    #[test]
    fn permutation_and_shuffle_match_numpy() {
        let mut r = LegacyRandom::new(7);
        let mut p: Vec<u8> = (1..10).collect();
        r.shuffle(&mut p);
        assert_eq!(p, [3, 8, 1, 9, 6, 4, 7, 2, 5]);
        assert_eq!(r.randint(0, 31), 14);
        let mut a: Vec<u32> = (0..20).collect();
        r.shuffle(&mut a);
        assert_eq!(a, [2, 9, 1, 5, 17, 16, 13, 3, 18, 11, 12, 15, 0, 4, 6, 7, 19, 10, 14, 8]);
    }
}
