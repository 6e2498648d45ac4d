//! Lab 4B (spec §8.3) on the simulator: three shard masters and three groups of three
//! (gids 100, 101, 102), lab-style clerks, every history checked for linearizability, and
//! every run ends settled: each shard served by its owner alone, every old copy released.

#![cfg(feature = "sim")]

use std::time::Duration;

use kv_engine::kv::{Op, Reply, ShardId};
use kv_replication::rng::Rng;
use kv_replication::shardmaster::{Command, GroupId};
use kv_replication::sim::kv::{append, get};
use kv_replication::sim::shardkv::{Action, Script, Scripts, ShardWorld, WorldReply};

const SETTLE: Duration = Duration::from_secs(30);

/// Waits for the world to settle on the latest configuration, checks it, and checks the
/// history.
fn finish(w: &mut ShardWorld) {
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
        assert_eq!(w.get(ck, k), values[i], "seed {}: key {k}", w.sim.seed());
        let v = format!("{}-{i}", w.rng().below(1_000_000));
        w.put(ck, k, &v);
        values[i] = v;
    }
}

#[test]
fn lab4b_test_basic() {
    let mut w = ShardWorld::new(1);
    let ck = w.clerk();
    w.join(0);
    w.put(ck, "a", "x");
    w.append(ck, "a", "b");
    assert_eq!(w.get(ck, "a"), "xb");
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

#[test]
fn lab4b_test_move_shards_really_move() {
    let mut w = ShardWorld::new(2);
    let ck = w.clerk();
    w.join(0);
    // Keys "0".."9" cover all ten shards.
    for i in 0..10 {
        w.put(ck, &i.to_string(), &format!("v{i}"));
    }
    w.join(1);
    w.sleep_ms(5000);
    for i in 0..10 {
        assert_eq!(w.get(ck, &i.to_string()), format!("v{i}"));
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
    w.check_linearizable();
}

#[test]
fn lab4b_test_limp_reconfiguration_with_dead_replicas() {
    let mut w = ShardWorld::new(3);
    let ck = w.clerk();
    w.join(0);
    w.put(ck, "a", "b");
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
    assert_eq!(w.get(ck, "a"), "b");
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

impl Script for Mover {
    fn next(&mut self, _w: &mut ShardWorld, last: Option<WorldReply>) -> Action {
        let step = self.step;
        self.step += 1;
        match step % 4 {
            0 => {
                if self.rounds == 3 {
                    return Action::Finish;
                }
                self.rounds += 1;
                let value = format!("{}.", self.rng.below(1_000_000));
                self.expected.push_str(&value);
                Action::Run {
                    clerk: self.clerk,
                    op: append(&self.key, &value),
                }
            }
            1 => Action::Run {
                clerk: self.clerk,
                op: get(&self.key),
            },
            2 => {
                let Some(WorldReply::Kv(Reply::Value(value))) = last else {
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
                Action::Admin {
                    clerk: self.clerk,
                    command: Command::Move { shard, group },
                }
            }
            _ => Action::Sleep(Duration::from_millis(self.rng.below(31))),
        }
    }
}

fn concurrent(seed: u64, unreliable: bool) {
    let mut w = ShardWorld::new(seed);
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
fn lab4b_test_concurrent_put_get_move() {
    concurrent(4, false);
}

#[test]
fn lab4b_test_concurrent_unreliable() {
    concurrent(5, true);
}
