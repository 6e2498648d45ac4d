//! The Lab 4A (Spring 2015) shardmaster tests, scenario by scenario with the lab's numbers
//! (spec §7.3), on the deterministic simulator in virtual time: 3 replicas, `NShards` = 10.
//! Every test also checks its whole client history for linearizability against the shard
//! master's model.

use std::sync::Arc;
use std::time::Duration;

use kv_replication::paxos::Seq;
use kv_replication::shardmaster::{Config, ConfigNum, GroupId, LAB_SHARDS};
use kv_replication::sim::shardmaster::{join, leave, Action, Script, Scripts, ShardMasterCluster};

const NSERVERS: usize = 3;
const NSHARDS: u32 = LAB_SHARDS;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// One goroutine of the lab's concurrent leave/join: Join(gid+1000), Join(gid),
/// Leave(gid+1000), each through a clerk of one server (`servers` picks it per step), then
/// optionally makes server 0 unreachable (TestUnreliable's `os.Remove(kvh[0])`).
struct LeaveJoin {
    gid: u64,
    servers: fn(&mut ShardMasterCluster, usize) -> usize,
    step: usize,
    deafen_zero: bool,
}

impl Script<ShardMasterCluster> for LeaveJoin {
    fn next(
        &mut self,
        c: &mut ShardMasterCluster,
        _last: Option<kv_replication::shardmaster::Reply>,
    ) -> Action {
        let step = self.step;
        self.step += 1;
        let command = match step {
            0 => join(self.gid + 1000, &["a", "b", "c"]),
            1 => join(self.gid, &["a", "b", "c"]),
            2 => leave(self.gid + 1000),
            _ => {
                if self.deafen_zero {
                    c.set_unreachable(0, true);
                }
                return Action::Finish;
            }
        };
        let server = (self.servers)(c, step);
        let clerk = c.clerk(&[server]);
        Action::Run { clerk, op: command }
    }
}

fn gids(range: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    range.collect()
}

/// The owner of shard `shard` in `config`, as the lab's `int64` gid.
fn owner(config: &Config, shard: usize) -> u64 {
    config.shards()[shard].0
}

#[test]
fn lab4a_test_basic() {
    let mut c = ShardMasterCluster::new(41, NSERVERS);
    let ck = c.clerk_all(0);

    // Basic leave/join.
    let mut cfa: Vec<Arc<Config>> = Vec::new();
    cfa.push(c.query(ck, None));
    c.check(ck, &[]);
    c.join(ck, 1, &["x", "y", "z"]);
    c.check(ck, &[1]);
    cfa.push(c.query(ck, None));
    c.join(ck, 2, &["a", "b", "c"]);
    c.check(ck, &[1, 2]);
    cfa.push(c.query(ck, None));
    c.join(ck, 2, &["a", "b", "c"]);
    c.check(ck, &[1, 2]);
    cfa.push(c.query(ck, None));
    let cfx = c.query(ck, None);
    assert_eq!(
        cfx.groups()[&GroupId(1)],
        ["x", "y", "z"],
        "wrong servers for gid 1"
    );
    assert_eq!(
        cfx.groups()[&GroupId(2)],
        ["a", "b", "c"],
        "wrong servers for gid 2"
    );
    c.leave(ck, 1);
    c.check(ck, &[2]);
    cfa.push(c.query(ck, None));
    c.leave(ck, 1);
    c.check(ck, &[2]);
    cfa.push(c.query(ck, None));

    // Historical queries.
    for old in &cfa {
        let again = c.query(ck, Some(old.num()));
        assert_eq!(again.num(), old.num(), "wrong Num");
        assert_eq!(
            again.shards(),
            old.shards(),
            "wrong Shards in {}",
            old.num()
        );
        assert_eq!(
            again.groups(),
            old.groups(),
            "wrong Groups in {}",
            old.num()
        );
    }

    // Move.
    c.join(ck, 503, &["3a", "3b", "3c"]);
    c.join(ck, 504, &["4a", "4b", "4c"]);
    for i in 0..NSHARDS {
        let cf = c.query(ck, None);
        let target = if i < NSHARDS / 2 { 503 } else { 504 };
        c.move_shard(ck, i, target);
        if owner(&cf, i as usize) != target {
            let cf1 = c.query(ck, None);
            assert!(cf1.num() > cf.num(), "Move should increase Config.Num");
        }
    }
    let cf2 = c.query(ck, None);
    for i in 0..NSHARDS as usize {
        let wanted = if i < NSHARDS as usize / 2 { 503 } else { 504 };
        assert_eq!(owner(&cf2, i), wanted, "shard {i} not on gid {wanted}");
    }
    c.leave(ck, 503);
    c.leave(ck, 504);

    // Concurrent leave/join: goroutine i uses server i%3 for its joins, (i+1)%3 to leave.
    const NPARA: u64 = 10;
    let mut scripts = Scripts::new();
    for i in 0..NPARA {
        scripts.add(LeaveJoin {
            gid: i + 1,
            servers: match i % 3 {
                0 => |_, step| if step < 2 { 0 } else { 1 },
                1 => |_, step| if step < 2 { 1 } else { 2 },
                _ => |_, step| if step < 2 { 2 } else { 0 },
            },
            step: 0,
            deafen_zero: false,
        });
    }
    assert!(
        c.drive(&mut scripts, secs(60)),
        "concurrent leave/join stuck"
    );
    c.check(ck, &gids(1..=NPARA));

    // Min advances after joins. The lab reads px.Min() at once; here a replica raises its
    // Paxos `done` with a snapshot, taken once the log is idle, so wait for it (bounded).
    let before = c.sim.now();
    let advanced = c.sim.run_until(secs(5), Duration::from_millis(10), |sim| {
        (0..NSERVERS).all(|i| sim.node(i).is_some_and(|r| r.status().paxos_min > Seq(0)))
    });
    assert!(advanced, "Min() did not advance on every replica");
    eprintln!(
        "TestBasic: Min() advanced on every replica {} µs (virtual) after the joins",
        c.sim.now().as_micros() - before.as_micros()
    );

    // Minimal transfers after joins.
    let c1 = c.query(ck, None);
    for i in 0..5 {
        c.join(ck, NPARA + 1 + i, &["a", "b", "c"]);
    }
    let c2 = c.query(ck, None);
    for gid in 1..=NPARA {
        for shard in 0..c1.shards().len() {
            if owner(&c2, shard) == gid {
                assert_eq!(owner(&c1, shard), gid, "non-minimal transfer after Join()s");
            }
        }
    }

    // Minimal transfers after leaves.
    for i in 0..5 {
        c.leave(ck, NPARA + 1 + i);
    }
    let c3 = c.query(ck, None);
    for gid in 1..=NPARA {
        for shard in 0..c1.shards().len() {
            if owner(&c2, shard) == gid {
                assert_eq!(
                    owner(&c3, shard),
                    gid,
                    "non-minimal transfer after Leave()s"
                );
            }
        }
    }
    c.check_linearizable();
}

#[test]
fn lab4a_test_unreliable() {
    // "Concurrent leave/join, failure": the lab leaves the servers reliable (the shard
    // master need not detect duplicates); 20 goroutines use servers 1 and 2 at random per
    // call, and each, when done, deletes server 0's socket.
    let mut c = ShardMasterCluster::new(42, NSERVERS);
    let ck = c.clerk_all(0);
    const NPARA: u64 = 20;
    let mut scripts = Scripts::new();
    for i in 0..NPARA {
        scripts.add(LeaveJoin {
            gid: i + 1,
            servers: |c, _| 1 + c.rng().below(2) as usize,
            step: 0,
            deafen_zero: true,
        });
    }
    assert!(
        c.drive(&mut scripts, secs(60)),
        "concurrent leave/join with failure stuck"
    );
    // The checking clerk tries server 0 first, cannot reach it, and moves on.
    c.check(ck, &gids(1..=NPARA));
    c.check_linearizable();
}

#[test]
fn lab4a_test_fresh_query() {
    // "Query() returns latest configuration": server 0's socket is renamed, so its peers
    // cannot reach it but a clerk that knows the new name can; it must learn the Join
    // through its own outbound rounds, never answer from stale state.
    let mut c = ShardMasterCluster::new(43, NSERVERS);
    let ck1 = c.clerk(&[1]);
    c.sim.set_deaf(0, true);
    let ck0 = c.clerk(&[0]);
    c.join(ck1, 1001, &["a", "b", "c"]);
    let config = c.query(ck0, None);
    assert!(
        config.groups().contains_key(&GroupId(1001)),
        "Query(-1) produced a stale configuration: {config:?}"
    );
    assert!(config.num() >= ConfigNum(1));
    c.check_linearizable();
}
