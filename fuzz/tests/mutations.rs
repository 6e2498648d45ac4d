//! Runs every target briefly on inputs it has not seen: random mutations of its seeds
//! (bit flips, overwritten, inserted and deleted bytes, truncations, splices of two seeds),
//! from a fixed generator so a failure replays. Not coverage-guided — AFL++ does that
//! (`scripts/fuzz.sh`) — but it needs no fuzzer installed, so CI runs it on every change:
//! a decoder change that panics on a near-miss of a valid input fails here first.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

/// Mutated inputs per target (seconds for all of them, even unoptimised).
const MUTATIONS_PER_TARGET: usize = 20_000;

/// xorshift64*: small, fixed, and enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random mutation of `input`, with `other` to splice from.
fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = [0, 0xff, 0x7f, 0x80, rng.next() as u8][rng.below(5)];
            }
            2 => {
                let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            3 => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            4 => out.truncate(at),
            5 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + 1 + rng.below(64)).min(other.len());
                out.splice(at..at, other[from..end].iter().copied());
            }
            _ => {
                // A copy of a chunk of itself, as repeated records or frames look.
                let end = (at + 1 + rng.below(32)).min(out.len());
                let chunk = out[at.min(end)..end].to_vec();
                out.splice(at..at, chunk);
            }
        }
    }
    out
}

fn seeds(name: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    let mut seeds: Vec<(std::path::PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let bytes = std::fs::read(&path).expect("read seed");
            (path, bytes)
        })
        .collect();
    // Directory order differs between machines; the mutations must not.
    seeds.sort();
    seeds.into_iter().map(|(_, bytes)| bytes).collect()
}

#[test]
fn every_target_survives_mutations_of_its_seeds() {
    for (index, (name, target)) in kv_fuzz::TARGETS.iter().enumerate() {
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "target {name} has no seed corpus");
        let mut rng = Rng(0x6b76_6675_7a7a_0000 + index as u64);
        for _ in 0..MUTATIONS_PER_TARGET {
            let input = &seeds[rng.below(seeds.len())];
            let other = &seeds[rng.below(seeds.len())];
            let mutated = mutate(&mut rng, input, other);
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| target(&mutated)));
            assert!(
                outcome.is_ok(),
                "target {name} panicked on this input (save it under \
                 fuzz/regressions/{name}/ and fix the decoder): {mutated:02x?}"
            );
        }
    }
}
