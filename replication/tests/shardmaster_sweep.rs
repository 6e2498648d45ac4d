//! The shard-master sweep on the simulator: random fault schedules (partitions, unreliable
//! replicas, crashes with torn writes, minority disk wipes, disks restored from old
//! backups) under concurrent clerks doing Joins, Leaves, Moves and Queries, each seed's
//! history checked against the shard master's model and the healed group for convergence;
//! and the same seed replays identically.
//!
//! `SHARDMASTER_SWEEP_SEEDS=A..B` overrides the bounded range (e.g. a long run in release
//! mode).

use kv_replication::sim::group_sweep::{seeds_from_env, Totals};
use kv_replication::sim::shardmaster_sweep;

#[test]
fn shardmaster_sweep_bounded_seeds_are_linearizable_and_converge() {
    let seeds = seeds_from_env("SHARDMASTER_SWEEP_SEEDS", 0..300);
    let mut totals = Totals::default();
    for seed in seeds.clone() {
        let outcome = shardmaster_sweep::run(seed, 0).unwrap_or_else(|failure| {
            let traced = shardmaster_sweep::run(seed, 200).err().unwrap_or(failure);
            panic!("{traced}")
        });
        assert!(outcome.operations > 0, "seed {seed} ran no operations");
        totals.add(&outcome);
    }
    eprintln!("shardmaster sweep {seeds:?}: {totals}");
    assert!(
        totals.restores > 0,
        "the bounded sweep restored no backup: the fault is not exercised"
    );
    assert!(totals.wipes > 0, "no seed wiped a disk");
}

#[test]
fn shardmaster_sweep_same_seed_gives_same_trace_hash() {
    let a = shardmaster_sweep::run_seed(3).expect("seed 3 passes");
    let b = shardmaster_sweep::run_seed(3).expect("seed 3 passes again");
    assert_eq!(a, b, "replaying seed 3 diverged");
    let c = shardmaster_sweep::run_seed(4).expect("seed 4 passes");
    assert_ne!(a, c, "different seeds, same trace");
}
