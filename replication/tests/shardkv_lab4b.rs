//! Lab 4B (spec §8.3) on the simulator: three shard masters and three groups of three
//! (gids 100, 101, 102), lab-style clerks, every history checked for linearizability, and
//! every run ends settled: each shard served by its owner alone, every old copy released.
//!
//! Lab 5's copies of them (spec §9.3, Test4Basic … Test4ConcurrentUnreliable) run the same
//! scenarios with crash-and-restart churn: throughout, a replica of a whole group crashes
//! (half the time tearing its last unsynced write) and restarts from its disk.

use std::time::Duration;

use kv_engine::kv::{Op, Reply, ShardId};
use kv_replication::rng::Rng;
use kv_replication::shardmaster::{Command, GroupId};
use kv_replication::sim::kv::{append, get, KvCalls};
use kv_replication::sim::script::Harness;
use kv_replication::sim::shardkv::{
    Action, Churn, ClusterReply, Script, Scripts, ShardWorld, WorldCall,
};

const SETTLE: Duration = Duration::from_secs(30);

/// The world for `seed`, with churn for Lab 5's copies.
fn world(seed: u64, lab5: bool) -> ShardWorld {
    let mut w = ShardWorld::new(seed);
    if lab5 {
        w.churn = Some(Churn::new(seed ^ 0xC4A5));
    }
    w
}

/// Crashes the churn must have made for a Lab 5 run to count.
const CHURN_CRASHES_MIN: u32 = 2;

/// Stops the churn; with churn on, it must have crashed replicas.
fn stop_churn(w: &mut ShardWorld) {
    let churning = w.churn.is_some();
    let crashes = w.stop_churn();
    assert!(
        !churning || crashes > CHURN_CRASHES_MIN,
        "the churn crashed {crashes} replicas"
    );
}

/// Waits for the world to settle on the latest configuration, checks it, and checks the
/// history.
fn finish(w: &mut ShardWorld) {
    stop_churn(w);
    assert!(
        w.wait_settled(SETTLE),
        "seed {}: the world settles",
        w.sim.seed()
    );
    let config = w.query();
    w.assert_settled(&config);
    w.check_linearizable();
}

/// Ten random keys with values, put through clerk `ck`.
fn put_keys(w: &mut ShardWorld, ck: usize) -> (Vec<String>, Vec<String>) {
    let keys: Vec<String> = (0..10)
        .map(|i| format!("{i}{}", w.rng().below(1_000_000)))
        .collect();
    let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
    for (k, v) in keys.iter().zip(&values) {
        w.put(ck, k, v);
    }
    (keys, values)
}

fn verify_and_overwrite(w: &mut ShardWorld, ck: usize, keys: &[String], values: &mut [String]) {
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(
            w.get_str(ck, k),
            values[i],
            "seed {}: key {k}",
            w.sim.seed()
        );
        let v = format!("{}-{i}", w.rng().below(1_000_000));
        w.put(ck, k, &v);
        values[i] = v;
    }
}

fn basic(seed: u64, lab5: bool) {
    let mut w = world(seed, lab5);
    let ck = w.clerk();
    w.join(0);
    w.put(ck, "a", "x");
    w.append(ck, "a", "b");
    assert_eq!(w.get_str(ck, "a"), "xb");
    let (keys, mut values) = put_keys(&mut w, ck);
    for g in [1, 2] {
        w.join(g);
        w.sleep_ms(1000);
        verify_and_overwrite(&mut w, ck, &keys, &mut values);
    }
    for g in [0, 1] {
        w.leave(g);
        w.sleep_ms(1000);
        verify_and_overwrite(&mut w, ck, &keys, &mut values);
    }
    finish(&mut w);
}

fn shards_really_move(seed: u64, lab5: bool) {
    let mut w = world(seed, lab5);
    let ck = w.clerk();
    w.join(0);
    // Keys "0".."9" cover all ten shards.
    for i in 0..10 {
        w.put(ck, &i.to_string(), &format!("v{i}"));
    }
    w.join(1);
    w.sleep_ms(5000);
    for i in 0..10 {
        assert_eq!(w.get_str(ck, &i.to_string()), format!("v{i}"));
    }
    // Group 0's sockets go away: only the shards that moved to group 1 can answer.
    for i in w.group_nodes(0) {
        w.set_unreachable(i, true);
    }
    let clerks: Vec<usize> = (0..10).map(|_| w.clerk()).collect();
    for (i, &c) in clerks.iter().enumerate() {
        w.begin(c, get(&i.to_string()));
    }
    w.sleep_ms(10_000);
    let mut succeeded = 0;
    for (i, &c) in clerks.iter().enumerate() {
        if w.idle(c) {
            assert_eq!(
                w.take_result(c),
                Some(Reply::Value(Some(format!("v{i}").into_bytes().into())))
            );
            succeeded += 1;
        } else {
            w.abandon(c);
        }
    }
    assert!(
        succeeded > 3 && succeeded < 6,
        "{succeeded} of 10 Gets succeeded; expected 4 or 5 (the moved shards)"
    );
    stop_churn(&mut w);
    w.check_linearizable();
}

fn limp(seed: u64, lab5: bool) {
    let mut w = world(seed, lab5);
    let ck = w.clerk();
    w.join(0);
    w.put(ck, "a", "b");
    if lab5 {
        // Lab 5: replicas crash and restart from their disks while the group takes writes,
        // until one of every group dies for good.
        for i in 0..40 {
            w.put(ck, &format!("churn{i}"), "x");
            w.sleep_ms(50);
        }
        stop_churn(&mut w);
    }
    // One random replica of every group dies.
    for g in 0..3 {
        let nodes = w.group_nodes(g);
        let victim = nodes[w.rng().below(nodes.len() as u64) as usize];
        w.kill(victim);
    }
    let (keys, mut values) = put_keys(&mut w, ck);
    for g in [1, 2] {
        w.join(g);
        w.sleep_ms(1000);
        verify_and_overwrite(&mut w, ck, &keys, &mut values);
    }
    // A leaving group hands its shards over within 2 s, then all its servers die.
    for g in [0, 1] {
        w.leave(g);
        w.sleep_ms(2000);
        for i in w.group_nodes(g) {
            w.kill(i);
        }
        verify_and_overwrite(&mut w, ck, &keys, &mut values);
    }
    assert_eq!(w.get_str(ck, "a"), "b");
    w.check_linearizable();
}

/// A TestConcurrent client: three rounds of Append, Get (checked), Move a random shard to a
/// random group, sleep 0–30 ms.
struct Mover {
    clerk: usize,
    key: String,
    expected: String,
    rounds: u32,
    step: u32,
    rng: Rng,
    groups: Vec<GroupId>,
    seed: u64,
}

impl Script<ShardWorld> for Mover {
    fn next(&mut self, w: &mut ShardWorld, last: Option<ClusterReply>) -> Action {
        let step = self.step;
        self.step += 1;
        match step % 4 {
            0 => {
                // The lab's 3 rounds; with churn, as many more as it takes the churn to
                // crash replicas under the load (see `stop_churn`).
                let churned = w
                    .churn
                    .as_ref()
                    .is_none_or(|c| c.crashes > CHURN_CRASHES_MIN);
                if self.rounds >= 3 && churned {
                    return Action::Finish;
                }
                self.rounds += 1;
                let value = format!("{}.", self.rng.below(1_000_000));
                self.expected.push_str(&value);
                Action::Run {
                    clerk: self.clerk,
                    op: WorldCall::Kv(append(&self.key, &value)),
                }
            }
            1 => Action::Run {
                clerk: self.clerk,
                op: WorldCall::Kv(get(&self.key)),
            },
            2 => {
                let Some(ClusterReply::Kv(Reply::Value(value))) = last else {
                    panic!("seed {}: a Get answered {last:?}", self.seed)
                };
                let value = value.map(|v| v.to_vec()).unwrap_or_default();
                assert_eq!(
                    String::from_utf8(value).unwrap(),
                    self.expected,
                    "seed {}: key {}",
                    self.seed,
                    self.key
                );
                let shard = ShardId(self.rng.below(10) as u32);
                let group = self.groups[self.rng.below(self.groups.len() as u64) as usize];
                Action::Run {
                    clerk: self.clerk,
                    op: WorldCall::Admin(Command::Move { shard, group }),
                }
            }
            _ => Action::Sleep(Duration::from_millis(self.rng.below(31))),
        }
    }
}

fn concurrent(seed: u64, unreliable: bool, lab5: bool) {
    let mut w = world(seed, lab5);
    for g in 0..3 {
        w.join(g);
    }
    if unreliable {
        for g in 0..3 {
            for i in w.group_nodes(g) {
                w.set_unreliable(i, true);
            }
        }
    }
    let groups: Vec<GroupId> = (0..3).map(|g| w.gid(g)).collect();
    let mut scripts = Scripts::new();
    for i in 0..11 {
        let clerk = w.clerk();
        let key = format!("{i}{}", w.rng().below(1_000_000));
        scripts.add(Mover {
            clerk,
            key,
            expected: String::new(),
            rounds: 0,
            step: 0,
            rng: Rng::new(seed * 100 + i),
            groups: groups.clone(),
            seed,
        });
    }
    assert!(
        w.drive(&mut scripts, Duration::from_secs(120)),
        "seed {seed}: the clients finish"
    );
    if unreliable {
        for i in 0..w.sim.len() {
            w.set_unreliable(i, false);
        }
    }
    finish(&mut w);
    // Every Append is still there once the world settled.
    let ck = w.clerk();
    let op: Op = get("0");
    w.must(ck, op);
}

#[test]
fn lab4b_test_basic() {
    basic(1, false);
}

#[test]
fn lab4b_test_move_shards_really_move() {
    shards_really_move(2, false);
}

#[test]
fn lab4b_test_limp_reconfiguration_with_dead_replicas() {
    limp(3, false);
}

#[test]
fn lab4b_test_concurrent_put_get_move() {
    concurrent(4, false, false);
}

#[test]
fn lab4b_test_concurrent_unreliable() {
    concurrent(5, true, false);
}

#[test]
fn lab5_test4_basic() {
    basic(11, true);
}

#[test]
fn lab5_test4_move() {
    shards_really_move(12, true);
}

#[test]
fn lab5_test4_limp() {
    limp(13, true);
}

#[test]
fn lab5_test4_concurrent() {
    concurrent(14, false, true);
}

#[test]
fn lab5_test4_concurrent_unreliable() {
    concurrent(15, true, true);
}

/// After a series of moves, each group's disk holds about its live data: old copies are
/// released and compacted away. Each replica's directory stays within 1.1 × the live bytes
/// of the shards its group serves, plus `DISK_SLACK_BYTES` (framing, the at-most-once
/// table, an empty WAL segment). Measured: 1.005 × live.
#[test]
fn shardkv_disk_stays_proportional_to_the_shards_served() {
    const DISK_SLACK_BYTES: u64 = 64 * 1024;
    let mut w = ShardWorld::new(21);
    let ck = w.clerk();
    for g in 0..3 {
        w.join(g);
    }
    // 400 keys of 1000 bytes over all shards.
    let value = "v".repeat(1000);
    for i in 0..400 {
        w.put(ck, &format!("{}k{i}", i % 10), &value);
    }
    // Every shard moves around: to each group in turn, twice.
    for round in 0..2 {
        for shard in 0..10 {
            w.move_shard(shard, (shard as usize + round + 1) % 3);
        }
        w.leave(round % 3);
        w.join(round % 3);
    }
    assert!(w.wait_settled(SETTLE), "the world settles");
    // Idle groups snapshot; give them time to.
    w.sleep_ms(2000);
    let config = w.query();
    w.assert_settled(&config);
    for g in 0..3 {
        let gid = w.gid(g);
        let shards = config.shards_of(gid);
        for i in w.group_nodes(g) {
            let node = w.sim.node(i).and_then(|n| n.kv()).expect("up");
            let live: u64 = shards
                .iter()
                .map(|&s| {
                    node.machine()
                        .kv()
                        .export_shard(s)
                        .map_or(0, |d| d.live_bytes())
                })
                .sum();
            let disk = w.sim.disk_bytes(i);
            eprintln!(
                "group {gid} n{i}: {} shards, live {live} B, disk {disk} B",
                shards.len()
            );
            assert!(
                disk <= live + live / 10 + DISK_SLACK_BYTES,
                "group {gid} n{i}: {disk} bytes on disk for {live} live bytes"
            );
        }
    }
    // Every value is still there.
    for i in 0..400 {
        assert_eq!(w.get_str(ck, &format!("{}k{i}", i % 10)), value);
    }
    w.check_linearizable();
}
