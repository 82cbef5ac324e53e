//! A small deterministic PRNG (SplitMix64) for workloads, simulators and property tests,
//! and random nonces from the kernel for sessions.

use std::io::Read;

/// SplitMix64: tiny, fast, good enough for workloads and test generators (not for secrets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The internal state (so a generator can be checkpointed and restored).
    pub fn state(&self) -> u64 {
        self.state
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// A value in `0..n` (n > 0; returns 0 for n == 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Fill a buffer with random bytes: the bytes of successive [`SplitMix64::next_u64`]s.
    /// Each word is computed from the state it starts with, not from the word before it (the
    /// state only steps by a constant), so the loop has no chain between words and whole words
    /// are stored in place: a 4 KiB page costs about a tenth of what a call per 8 bytes did
    /// (the model guest's `pages` workload fills whole pages with it).
    pub fn fill(&mut self, buf: &mut [u8]) {
        let base = self.state;
        let mut words = buf.chunks_exact_mut(8);
        let mut n = 0u64;
        for w in &mut words {
            n += 1;
            let v = mix(base.wrapping_add(GOLDEN.wrapping_mul(n)));
            w.copy_from_slice(&v.to_le_bytes());
        }
        self.state = base.wrapping_add(GOLDEN.wrapping_mul(n));
        let rest = words.into_remainder();
        if !rest.is_empty() {
            let v = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&v[..rest.len()]);
        }
    }
}

/// SplitMix64's step.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Random bytes from the kernel (`/dev/urandom`), for session nonces.
pub fn os_random(buf: &mut [u8]) -> std::io::Result<()> {
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_gives_the_words_of_next_u64() {
        // Any length, any split of the same stream: the same bytes as word by word.
        for len in [0, 1, 7, 8, 9, 4096, 4099] {
            let mut a = SplitMix64::new(42);
            let mut want = vec![];
            while want.len() < len {
                want.extend_from_slice(&a.next_u64().to_le_bytes());
            }
            want.truncate(len);
            let mut b = SplitMix64::new(42);
            let mut got = vec![0u8; len];
            b.fill(&mut got);
            assert_eq!(got, want, "len {len}");
            assert_eq!(
                b, a,
                "the state moves by one per word, the last partial one too"
            );
        }
    }

    #[test]
    fn deterministic_and_bounded() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..1000 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
        let mut n = [0u8; 16];
        os_random(&mut n).unwrap();
    }
}
