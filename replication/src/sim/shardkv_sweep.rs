//! Random schedules for a sharded cluster, one per seed (the `sweep --workload shardkv`
//! workload and the bounded sweep test).
//!
//! Every knob derives from the seed: the number of groups (2 to 4, three replicas each,
//! beside three shard masters), drop/duplicate/delay rates and node speeds, the clients'
//! mix. An administrator script joins, leaves and moves at random under the clients' load
//! (always keeping a group joined). A safety phase adds faults across the whole world:
//! partitions that split groups and the shard master and cut groups off from each other,
//! unreliable nodes, crashes (half of them tearing the last unsynced write), restarts, disk
//! loss of a minority of any group or of the shard master, and disks restored from older
//! backups — the group sweep's schedule ([`Schedule`]) over the whole world, each group
//! (and the shard master) a cohort of which a minority may fail. The world checks after
//! every step that each group's replicas apply the same log and that no two groups serve a
//! shard under the same configuration.
//!
//! Then a liveness phase heals everything and restarts every node: every client must
//! finish, the world must settle on the last configuration (every shard served by its owner
//! alone, every old copy released, each group's replicas holding equal data), a fresh clerk
//! reads every key, and the whole history must be linearizable — with the final reads after
//! every acknowledgement, that also proves no acknowledged write was lost or doubled by a
//! handoff.

use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use kv_engine::kv::ShardId;

use super::group_sweep::{self, Failure, Outcome, Schedule};
use super::kv::get;
use super::kv::KvCalls;
use super::kv_sweep::RandomOps;
use super::shardkv::{Action, ClusterReply, Script, Scripts, ShardWorld, WorldCall, WorldOptions};
use super::{panic_message, FaultCeilings, Faults};
use crate::rng::Rng;
use crate::shardmaster::{Command, GroupId};

/// The workload's name (`sweep --workload shardkv`).
pub const NAME: &str = "shardkv";
/// Bound on each step of the liveness phase in virtual time.
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(120);

/// Register keys (Puts, Deletes, Gets), in different shards.
const REGISTER_KEYS: [&str; 5] = ["0r", "3r", "5r", "7r", "9r"];
/// Log keys (Appends, Gets).
const LOG_KEYS: [&str; 3] = ["1l", "4l", "8l"];

/// Runs one seed; `Ok(trace hash)` if every check passed, else the failure report.
pub fn run_seed(seed: u64) -> Result<u64, String> {
    run(seed, 0)
        .map(|o| o.trace_hash)
        .map_err(|f| f.to_string())
}

/// Runs one seed, keeping the last `trace_lines` trace lines for a failure report.
pub fn run(seed: u64, trace_lines: usize) -> Result<Outcome, Failure> {
    let mut rng = Rng::new(seed ^ 0x5348_4B56_5357_4550);
    let groups = rng.range(2, 5) as usize;
    // More clock rates than the world has nodes: the unused ones are ignored.
    let leases = group_sweep::leases(seed, 64);
    let options = WorldOptions {
        groups,
        piggyback_commits: group_sweep::piggyback_commits(seed),
        lease: leases.as_ref().map(|(lease, _)| *lease),
        ..WorldOptions::default()
    };
    let faults = Faults::random(
        &mut rng,
        FaultCeilings {
            drop: 0.1,
            duplicate: 0.05,
            delay_max_micros: 10_000,
            long_delay: 0.1,
            long_delay_max_millis: 500,
            crash_after_early_send: 0.01,
        },
    );
    let mut speeds = Rng::new(rng.next_u64());
    let mut world = ShardWorld::with(seed, options, |o| {
        o.trace_lines = trace_lines;
        o.faults = faults;
        o.random_speeds(&mut speeds);
    });
    group_sweep::drift_clocks(&mut world.sim, &leases);
    let mut sharded = Sharded {
        schedule: Schedule::new(rng, world.sim.len()),
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut scripts = sharded.scripts(&mut world);
        sharded.schedule.safety_phase(&mut world, &mut scripts);
        sharded.liveness_phase(&mut world, &mut scripts);
    }));
    let schedule = &sharded.schedule;
    match result {
        Ok(()) => {
            let configs = world.query().num().0;
            Ok(Outcome {
                seed,
                trace_hash: world.sim.trace_hash(),
                replicas: world.sim.len(),
                operations: world.history.len(),
                configs,
                crashes: schedule.crashes,
                wipes: schedule.wipes,
                restores: schedule.restores,
                reads_indexed: group_sweep::cluster_sum(&world.sim, "reads_indexed"),
                rounds_leased: group_sweep::cluster_sum(&world.sim, "read_rounds_leased"),
                compactions_lost: world.sim.compactions_lost(),
            })
        }
        Err(payload) => {
            let message = panic_message(&*payload);
            let nodes = (0..world.sim.len())
                .map(|i| match world.sim.node(i) {
                    Some(n) => format!("n{i}: {:?}", crate::node::Node::status(n)),
                    None => format!("n{i}: down"),
                })
                .collect();
            Err(Failure {
                workload: NAME,
                seed,
                message,
                replicas: nodes,
                trace: world.sim.trace().cloned().collect(),
            })
        }
    }
}

/// A client issuing random operations with unique values.
struct RandomClient {
    clerk: usize,
    ops: RandomOps,
}

impl Script<ShardWorld> for RandomClient {
    fn next(&mut self, _w: &mut ShardWorld, _last: Option<ClusterReply>) -> Action {
        match self.ops.next(&REGISTER_KEYS, &LOG_KEYS) {
            Ok(op) => Action::Run {
                clerk: self.clerk,
                op: WorldCall::Kv(op),
            },
            Err(pause) => Action::Sleep(pause),
        }
    }
}

/// An administrator: joins, leaves and moves at random, keeping a group joined.
struct Administrator {
    clerk: usize,
    rng: Rng,
    groups: Vec<GroupId>,
    servers: Vec<Vec<String>>,
    joined: Vec<bool>,
    /// The command in flight and whether it was a join (true) or leave (false) of a group.
    pending: Option<(usize, bool)>,
    sleeping: bool,
    seed: u64,
}

impl Script<ShardWorld> for Administrator {
    fn next(&mut self, _w: &mut ShardWorld, last: Option<ClusterReply>) -> Action {
        if let Some((g, join)) = self.pending.take() {
            match last {
                Some(ClusterReply::Master(_)) => self.joined[g] = join,
                other => panic!("seed {}: an admin command answered {other:?}", self.seed),
            }
        }
        if !self.sleeping {
            self.sleeping = true;
            return Action::Sleep(Duration::from_millis(self.rng.range(100, 800)));
        }
        self.sleeping = false;
        let g = self.rng.below(self.groups.len() as u64) as usize;
        let group = self.groups[g];
        let joined = self.joined.iter().filter(|&&j| j).count();
        let command = match self.rng.below(3) {
            0 if !self.joined[g] => {
                self.pending = Some((g, true));
                Command::Join {
                    group,
                    servers: self.servers[g].clone(),
                }
            }
            1 if self.joined[g] && joined > 1 => {
                self.pending = Some((g, false));
                Command::Leave { group }
            }
            _ if self.joined[g] => Command::Move {
                shard: ShardId(self.rng.below(10) as u32),
                group,
            },
            _ => return Action::Sleep(Duration::from_millis(10)),
        };
        Action::Run {
            clerk: self.clerk,
            op: WorldCall::Admin(command),
        }
    }
}

/// The sweep's own part: the clients and administrator, and the liveness checks; the
/// faults are the group sweep's [`Schedule`] over the whole world.
struct Sharded {
    schedule: Schedule,
}

impl Sharded {
    fn scripts(&mut self, w: &mut ShardWorld) -> Scripts {
        let rng = &mut self.schedule.rng;
        let groups = w.layout().groups.len();
        let first = rng.range(1, groups as u64 + 1) as usize;
        let mut joined = vec![false; groups];
        for (g, joined) in joined.iter_mut().enumerate().take(first) {
            w.join(g);
            *joined = true;
        }
        let mut scripts = Scripts::new();
        let clerk = w.clerk();
        let gids: Vec<GroupId> = (0..groups).map(|g| w.gid(g)).collect();
        scripts.add(Administrator {
            clerk,
            rng: Rng::new(rng.next_u64()),
            groups: gids,
            servers: (0..groups).map(|g| w.layout().servers(g)).collect(),
            joined,
            pending: None,
            sleeping: false,
            seed: w.sim.seed(),
        });
        for id in 0..rng.range(2, 7) as usize {
            let clerk = w.clerk();
            scripts.add(RandomClient {
                clerk,
                ops: RandomOps::new(id, Rng::new(rng.next_u64())),
            });
        }
        scripts
    }

    fn liveness_phase(&mut self, w: &mut ShardWorld, scripts: &mut Scripts) {
        let n = w.sim.len();
        let seed = w.sim.seed();
        self.schedule.heal_all(w);
        scripts.stop();
        assert!(
            w.drive(scripts, LIVENESS_LIMIT),
            "liveness: clients still waiting {LIVENESS_LIMIT:?} after healing"
        );
        assert!(
            w.wait_settled(LIVENESS_LIMIT),
            "liveness: the world did not settle within {LIVENESS_LIMIT:?} of healing"
        );
        let reader = w.clerk();
        for key in REGISTER_KEYS {
            w.must(reader, get(key));
        }
        for key in LOG_KEYS {
            let value = w.get_str(reader, key).into_bytes();
            w.pin_appends(key, &value);
        }
        assert!(
            w.wait_settled(LIVENESS_LIMIT),
            "liveness: the world did not settle after the final reads"
        );
        let config = w.query();
        w.assert_settled(&config);
        w.check_linearizable();
        let ready =
            |w: &ShardWorld| (0..n).all(|i| w.sim.node(i).is_some_and(crate::node::Node::is_ready));
        let end = w.sim.now() + LIVENESS_LIMIT;
        while !ready(w) && w.sim.now() < end {
            w.run_for(Duration::from_millis(10));
        }
        assert!(
            ready(w),
            "seed {seed}: a node is still rebuilding {LIVENESS_LIMIT:?} after healing"
        );
    }
}
