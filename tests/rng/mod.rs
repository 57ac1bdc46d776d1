//! A small deterministic random generator (xorshift64) for the integration tests: a test's
//! seed fixes its whole sequence, so a failure replays.

/// Xorshift64; the seed must not be 0.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (`n > 0`).
    #[allow(dead_code)] // not every test binary draws bounded numbers
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
