//! The primary/backup sweep on the simulator: concurrent clients under partitions,
//! unreliable nodes and crashes of primary/backup servers (never of the view service, a
//! single point of failure); each seed heals, settles, reads back every key and is checked
//! for linearizability; and the same seed replays identically.
//!
//! `KV_PB_SWEEP_SEEDS=A..B` overrides the bounded range (a long run in release mode).

use std::ops::Range;

use kv_replication::sim::group_sweep::seeds_from_env;
use kv_replication::sim::pb_sweep;

/// Seeds the bounded sweep covers by default (CI runs this test).
const SEEDS: Range<u64> = 0..200;

#[test]
fn pb_sweep_bounded_seeds_are_linearizable_and_settle() {
    let seeds = seeds_from_env("KV_PB_SWEEP_SEEDS", SEEDS);
    let (mut operations, mut crashes) = (0, 0);
    for seed in seeds.clone() {
        let outcome = pb_sweep::run(seed, 0).unwrap_or_else(|failure| {
            let traced = pb_sweep::run(seed, 200).err().unwrap_or(failure);
            panic!("{traced}")
        });
        assert!(outcome.operations > 0, "seed {seed} ran no operations");
        operations += outcome.operations;
        crashes += outcome.crashes;
    }
    eprintln!("pb sweep {seeds:?}: {operations} operations, {crashes} crashes");
    let seeds = seeds.end - seeds.start;
    assert!(
        u64::from(crashes) > seeds,
        "{crashes} crashes in {seeds} seeds: servers hardly failed"
    );
}

#[test]
fn pb_sweep_same_seed_gives_same_trace_hash() {
    let a = pb_sweep::run_seed(3).expect("seed 3 passes");
    let b = pb_sweep::run_seed(3).expect("seed 3 passes again");
    assert_eq!(a, b, "replaying seed 3 diverged");
    let c = pb_sweep::run_seed(4).expect("seed 4 passes");
    assert_ne!(a, c, "different seeds, same trace");
}
