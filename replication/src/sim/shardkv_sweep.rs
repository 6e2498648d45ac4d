//! Random schedules for a sharded cluster, one per seed (the `sweep --workload shardkv`
//! workload and the bounded sweep test).
//!
//! Every knob derives from the seed: the number of groups (2 to 4, three replicas each,
//! beside three shard masters), drop/duplicate/delay rates and node speeds, the clients'
//! mix. An administrator script joins, leaves and moves at random under the clients' load
//! (always keeping a group joined). A safety phase adds faults across the whole world:
//! partitions that split groups and the shard master and cut groups off from each other,
//! unreliable nodes, crashes (half of them tearing the last unsynced write), restarts, and
//! disk loss of a minority of any group or of the shard master. The world checks after
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

use kv_engine::fs::Torn;
use kv_engine::kv::{Op, ShardId};

use super::group_sweep::{Failure, Outcome};
use super::kv::{append, get, put};
use super::shardkv::{Action, Script, Scripts, ShardWorld, WorldOptions, WorldReply};
use super::{panic_message, FaultCeilings, Faults};
use crate::rng::Rng;
use crate::shardmaster::{Command, GroupId};

/// The workload's name (`sweep --workload shardkv`).
pub const NAME: &str = "shardkv";
/// Length of the safety phase in virtual time.
pub const SAFETY_PHASE: Duration = Duration::from_secs(8);
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
    let options = WorldOptions {
        groups,
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
    let mut schedule = Schedule {
        rng,
        crashes: 0,
        wipes: 0,
        lost: vec![false; world.sim.len()],
        wiped_down: vec![false; world.sim.len()],
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut scripts = schedule.scripts(&mut world);
        schedule.safety_phase(&mut world, &mut scripts);
        schedule.liveness_phase(&mut world, &mut scripts);
    }));
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
                restores: 0,
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
    id: usize,
    rng: Rng,
    issued: u64,
    pause: bool,
}

impl Script for RandomClient {
    fn next(&mut self, _w: &mut ShardWorld, _last: Option<WorldReply>) -> Action {
        if self.pause && self.rng.chance(0.5) {
            self.pause = false;
            return Action::Sleep(Duration::from_millis(self.rng.below(30)));
        }
        self.pause = true;
        self.issued += 1;
        let unique = format!("{}.{}", self.id, self.issued);
        let roll = self.rng.below(100);
        let op = if roll < 55 {
            let key = REGISTER_KEYS[self.rng.below(REGISTER_KEYS.len() as u64) as usize];
            match roll {
                0..=19 => get(key),
                20..=44 => put(key, &unique),
                _ => Op::Delete {
                    key: bytes::Bytes::from_static(key.as_bytes()),
                },
            }
        } else {
            let key = LOG_KEYS[self.rng.below(LOG_KEYS.len() as u64) as usize];
            if roll < 75 {
                get(key)
            } else {
                append(key, &format!("<{unique}>"))
            }
        };
        Action::Run {
            clerk: self.clerk,
            op,
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

impl Script for Administrator {
    fn next(&mut self, _w: &mut ShardWorld, last: Option<WorldReply>) -> Action {
        if let Some((g, join)) = self.pending.take() {
            match last {
                Some(WorldReply::Master(_)) => self.joined[g] = join,
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
        Action::Admin {
            clerk: self.clerk,
            command,
        }
    }
}

struct Schedule {
    rng: Rng,
    crashes: u32,
    wipes: u32,
    /// Wiped and not yet rebuilt.
    lost: Vec<bool>,
    /// Down with a lost disk: the next restart boots it blank.
    wiped_down: Vec<bool>,
}

impl Schedule {
    fn scripts(&mut self, w: &mut ShardWorld) -> Scripts {
        let groups = w.layout().groups.len();
        let first = self.rng.range(1, groups as u64 + 1) as usize;
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
            rng: Rng::new(self.rng.next_u64()),
            groups: gids,
            servers: (0..groups).map(|g| w.layout().servers(g)).collect(),
            joined,
            pending: None,
            sleeping: false,
            seed: w.sim.seed(),
        });
        for id in 0..self.rng.range(2, 7) as usize {
            let clerk = w.clerk();
            scripts.add(RandomClient {
                clerk,
                id,
                rng: Rng::new(self.rng.next_u64()),
                issued: 0,
                pause: false,
            });
        }
        scripts
    }

    /// The cohort of node `i` (its group, or the shard master) and its size.
    fn cohort(w: &ShardWorld, i: usize) -> Vec<usize> {
        let layout = w.layout();
        match layout.group_of(crate::types::NodeId(i as u32)) {
            Some(g) => w.group_nodes(g),
            None => w.master_nodes(),
        }
    }

    fn refresh_lost(&mut self, w: &ShardWorld) {
        for (i, lost) in self.lost.iter_mut().enumerate() {
            if *lost && w.sim.node(i).is_some_and(crate::node::Node::is_ready) {
                *lost = false;
            }
        }
    }

    fn safety_phase(&mut self, w: &mut ShardWorld, scripts: &mut Scripts) {
        let n = w.sim.len();
        let end = w.sim.now() + SAFETY_PHASE;
        while w.sim.now() < end {
            let wait = self.rng.below(100);
            w.drive(scripts, Duration::from_millis(wait));
            self.refresh_lost(w);
            let i = self.rng.below(n as u64) as usize;
            let cohort = Self::cohort(w, i);
            let tolerated = (cohort.len() - 1) / 2;
            let is_master = w
                .layout()
                .group_of(crate::types::NodeId(i as u32))
                .is_none();
            match self.rng.below(100) {
                0..=14 => self.repartition(w),
                15..=24 if !is_master => {
                    let on = self.rng.chance(0.4);
                    w.set_unreliable(i, on);
                }
                25..=39 => {
                    let down = cohort.iter().filter(|&&j| !w.sim.is_up(j)).count();
                    if w.sim.is_up(i) && (down < tolerated || self.rng.chance(0.1)) {
                        let torn = if self.rng.chance(0.5) {
                            Torn::Prefix(self.rng.next_u64())
                        } else {
                            Torn::None
                        };
                        w.sim.crash(i, torn);
                        self.crashes += 1;
                    }
                }
                40..=59 if !w.sim.is_up(i) => self.restart(w, i),
                60..=65 => {
                    let lost = cohort.iter().filter(|&&j| self.lost[j]).count();
                    if lost < tolerated && !self.lost[i] {
                        self.lost[i] = true;
                        self.wipes += 1;
                        if w.sim.is_up(i) {
                            w.sim.crash(i, Torn::None);
                        }
                        self.wiped_down[i] = true;
                        if self.rng.chance(0.5) {
                            self.restart(w, i);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn restart(&mut self, w: &mut ShardWorld, i: usize) {
        if std::mem::take(&mut self.wiped_down[i]) {
            w.sim.restart_wiped(i);
        } else {
            w.sim.restart(i);
        }
    }

    /// Splits the whole world (masters and every group) into two or three sides at random.
    fn repartition(&mut self, w: &mut ShardWorld) {
        if self.rng.chance(0.3) {
            w.sim.heal();
            return;
        }
        let n = w.sim.len();
        let sides = self.rng.range(2, 4) as usize;
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); sides];
        for i in 0..n {
            members[self.rng.below(sides as u64) as usize].push(i);
        }
        let refs: Vec<&[usize]> = members.iter().map(|g| g.as_slice()).collect();
        w.sim.partition(&refs);
    }

    fn liveness_phase(&mut self, w: &mut ShardWorld, scripts: &mut Scripts) {
        let n = w.sim.len();
        let seed = w.sim.seed();
        w.sim.heal();
        w.sim.set_faults(Faults::none());
        for i in 0..n {
            w.set_unreliable(i, false);
            if !w.sim.is_up(i) {
                self.restart(w, i);
            }
        }
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
            let value = w.get(reader, key).into_bytes();
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
