//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz
//! targets' functions, plus seeded mutations of every file: nothing may panic.
//! `cargo fuzz run <target>` explores further (README, Reliability).

use std::path::PathBuf;

use rand::{Rng, SeedableRng};

// The fuzz crate's entry points, compiled here too: the fuzz crate itself needs
// cargo-fuzz and nightly, and the library keeps no fuzzing API.
#[path = "../fuzz/src/lib.rs"]
mod entry;

type Target = fn(&[u8]);

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("corpus file"))
        .collect()
}

/// Flips, deletes, duplicates and splices bytes, like a fuzzer's first mutations.
fn mutate(rng: &mut rand::rngs::StdRng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..8) {
        if v.is_empty() {
            v.push(rng.random());
            continue;
        }
        let i = rng.random_range(0..v.len());
        match rng.random_range(0..6) {
            0 => v[i] ^= 1 << rng.random_range(0..8),
            1 => {
                v.remove(i);
            }
            2 => v.insert(i, v[i]),
            3 => v.truncate(i),
            4 => {
                let b: &[u8] = b"\"{}[]:,-&*!|>'\n0123456789";
                v[i] = b[rng.random_range(0..b.len())];
            }
            _ => {
                let j = rng.random_range(0..other.len().max(1));
                v.splice(i..i, other.iter().skip(j).take(64).copied());
            }
        }
    }
    v
}

fn replay(name: &str, target: Target) {
    let seeds = corpus(name);
    assert!(!seeds.is_empty(), "{name}: empty corpus");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xCA5);
    let mut runs = 0;
    for s in &seeds {
        target(s);
        runs += 1;
    }
    for i in 0..3000 {
        let seed = &seeds[i % seeds.len()];
        let other = &seeds[(i / seeds.len()) % seeds.len()];
        target(&mutate(&mut rng, seed, other));
        runs += 1;
    }
    println!(
        "figures: fuzz replay {name}: {} corpus files, {runs} inputs, 0 panics",
        seeds.len()
    );
}

#[test]
fn config_corpus_never_panics() {
    replay("config", entry::config);
}

#[test]
fn api_response_corpus_never_panics() {
    replay("api_response", entry::api_response);
}

#[test]
fn pem_corpus_never_panics() {
    replay("pem", entry::pem);
}
