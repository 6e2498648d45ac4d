//! The shardkv sweep on the simulator: random joins, leaves and moves under concurrent
//! clients, with partitions across the world, unreliable nodes, torn crashes and minority
//! disk loss; each seed settles, reads back every key and is checked for
//! linearizability; and the same seed replays identically.
//!
//! `KV_SHARDKV_SWEEP_SEEDS=A..B` overrides the bounded range (a long run in release mode).

use std::ops::Range;

use kv_replication::sim::group_sweep::seeds_from_env;
use kv_replication::sim::shardkv_sweep;

/// Seeds the bounded sweep covers by default (CI runs this test).
const SEEDS: Range<u64> = 0..300;

fn seeds() -> Range<u64> {
    seeds_from_env("KV_SHARDKV_SWEEP_SEEDS", SEEDS)
}

#[test]
fn shardkv_sweep_bounded_seeds_are_linearizable_and_settle() {
    let seeds = seeds();
    let (mut operations, mut configs, mut crashes, mut wipes) = (0, 0, 0, 0);
    for seed in seeds.clone() {
        let outcome = shardkv_sweep::run(seed, 0).unwrap_or_else(|failure| {
            let traced = shardkv_sweep::run(seed, 200).err().unwrap_or(failure);
            panic!("{traced}")
        });
        assert!(outcome.operations > 0, "seed {seed} ran no operations");
        operations += outcome.operations;
        configs += outcome.configs;
        crashes += outcome.crashes;
        wipes += outcome.wipes;
    }
    eprintln!(
        "shardkv sweep {seeds:?}: {operations} operations, {configs} configurations, \
         {crashes} crashes, {wipes} disk wipes"
    );
    let seeds = seeds.end - seeds.start;
    assert!(
        configs > 2 * seeds,
        "{configs} configurations in {seeds} seeds: shards hardly moved"
    );
    assert!(wipes > 0, "no seed wiped a disk");
}

#[test]
fn shardkv_sweep_same_seed_gives_same_trace_hash() {
    let a = shardkv_sweep::run_seed(3).expect("seed 3 passes");
    let b = shardkv_sweep::run_seed(3).expect("seed 3 passes again");
    assert_eq!(a, b, "replaying seed 3 diverged");
    let c = shardkv_sweep::run_seed(4).expect("seed 4 passes");
    assert_ne!(a, c, "different seeds, same trace");
}
