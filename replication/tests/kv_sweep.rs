//! The kv sweep on the simulator: random fault schedules (partitions, unreliable replicas,
//! crashes with torn writes, minority disk wipes, disks restored from old backups) under
//! concurrent clients, each seed
//! checked for linearizability and convergence; and the same seed replays identically.
//!
//! `KV_SWEEP_SEEDS=A..B` overrides the bounded range (e.g. a long run in release mode).

use std::ops::Range;

use kv_replication::sim::kv_sweep;

/// Seeds the bounded sweep covers by default (CI runs this test).
const SEEDS: Range<u64> = 0..300;

fn seeds() -> Range<u64> {
    let Ok(spec) = std::env::var("KV_SWEEP_SEEDS") else {
        return SEEDS;
    };
    let (a, b) = spec
        .split_once("..")
        .unwrap_or_else(|| panic!("KV_SWEEP_SEEDS wants A..B, got {spec}"));
    let parse = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|e| panic!("bad seed {s:?} in KV_SWEEP_SEEDS: {e}"))
    };
    parse(a)..parse(b)
}

#[test]
fn kv_sweep_bounded_seeds_are_linearizable_and_converge() {
    let seeds = seeds();
    let (mut operations, mut crashes, mut wipes, mut restores) = (0, 0, 0, 0);
    for seed in seeds.clone() {
        let outcome = kv_sweep::run(seed, 0).unwrap_or_else(|failure| {
            let traced = kv_sweep::run(seed, 200).err().unwrap_or(failure);
            panic!("{traced}")
        });
        assert!(outcome.operations > 0, "seed {seed} ran no operations");
        operations += outcome.operations;
        crashes += outcome.crashes;
        wipes += outcome.wipes;
        restores += outcome.restores;
    }
    eprintln!(
        "kv sweep {seeds:?}: {operations} operations, {crashes} crashes, {wipes} disk wipes, \
         {restores} restored backups"
    );
    assert!(
        restores > 0,
        "the bounded sweep restored no backup: the fault is not exercised"
    );
    assert!(wipes > 0, "no seed wiped a disk");
}

#[test]
fn kv_sweep_same_seed_gives_same_trace_hash() {
    let a = kv_sweep::run_seed(3).expect("seed 3 passes");
    let b = kv_sweep::run_seed(3).expect("seed 3 passes again");
    assert_eq!(a, b, "replaying seed 3 diverged");
    let c = kv_sweep::run_seed(4).expect("seed 4 passes");
    assert_ne!(a, c, "different seeds, same trace");
}
