//! Random schedules for primary/backup, one per seed (the `sweep --workload pb` workload
//! and its bounded test).
//!
//! Every knob derives from the seed: 3 to 5 servers beside the view service, drop,
//! duplicate and delay rates, node speeds, and concurrent clients doing Gets, Puts,
//! Appends and Deletes with unique values (the kv sweep's [`RandomOps`]). The safety phase
//! is the group sweep's [`Schedule`] over the world, restricted to exactly the faults this
//! design tolerates: one failure at a time, the next only once the last was repaired.
//! - Crashes ([`PbWorld::survives_failure`]): of a server in no role at any time once
//!   view 1 exists; of the primary or the backup only while the view service's view is
//!   acknowledged, both hold its state and both were heard lately
//!   ([`PbWorld::can_take_a_failure`]) — so a crashed member's late pings cannot get it
//!   promoted. Never of the view service, a single point of failure, and never before
//!   view 1 (a ping in flight from a crashed server would make it the first primary).
//! - Partitions ([`PbWorld::survives_partition`]): any split that leaves the primary and
//!   the backup with the view service; one that cuts one of them off only under the same
//!   condition as a crash (a server cut off is dead to the view service).
//! - Unreliable servers, and lost, duplicated and delayed messages among servers and
//!   clients, at any time. Pings and views are never lost nor delayed long, and the view
//!   service is never unreliable (as in the lab, whose servers reach it on local sockets):
//!   the view service finds a server dead after `DEAD_PINGS` intervals without a ping, so
//!   a lost run of pings is a failure, and one the schedule could not time (3 seeds in
//!   5000..30000 failed so: a crashed backup promoted on its late pings while the
//!   primary's pings were being lost).
//!
//! Nothing is on disk, so a disk wipe is a crash, and no disk is restored. What is left
//! out is what the design documents as fatal (see [`crate::pbservice::server`]): the
//! primary failing before it acknowledged its view, or both members failing.
//!
//! Then a liveness phase heals everything and restarts every server: every client must
//! finish, the view must settle (acknowledged, the backup holding the state), a fresh clerk
//! reads every key, the primary and backup must hold the same data, and the whole history
//! must be linearizable — which, with the final reads after every acknowledgement, also
//! proves no acknowledged write was lost across failovers.

use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use kv_engine::kv::Reply;

use super::group_sweep::{Failure, Outcome, Schedule};
use super::kv::get;
use super::kv::KvCalls;
use super::kv_sweep::RandomOps;
use super::pb::{Action, PbWorld, Script, Scripts, VIEW_SERVICE};
use super::{panic_message, FaultCeilings, Faults};
use crate::rng::Rng;

/// The workload's name (`sweep --workload pb`).
pub const NAME: &str = "pb";
/// Bound on each step of the liveness phase in virtual time.
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(60);

const REGISTER_KEYS: [&str; 3] = ["r0", "r1", "r2"];
const LOG_KEYS: [&str; 2] = ["l0", "l1"];

/// Runs one seed; `Ok(trace hash)` if every check passed, else the failure report.
pub fn run_seed(seed: u64) -> Result<u64, String> {
    run(seed, 0)
        .map(|o| o.trace_hash)
        .map_err(|f| f.to_string())
}

/// Runs one seed, keeping the last `trace_lines` trace lines for a failure report.
pub fn run(seed: u64, trace_lines: usize) -> Result<Outcome, Failure> {
    let mut rng = Rng::new(seed ^ 0x5042_5357_4545_5021);
    let servers = rng.range(3, 5) as usize;
    let faults = Faults::random(
        &mut rng,
        FaultCeilings {
            drop: 0.1,
            duplicate: 0.05,
            delay_max_micros: 10_000,
            long_delay: 0.1,
            long_delay_max_millis: 500,
            crash_after_early_send: 0.0,
        },
    );
    let mut speeds = Rng::new(rng.next_u64());
    let mut world = PbWorld::with(seed, servers, |o| {
        o.trace_lines = trace_lines;
        o.faults = faults;
        o.steady_node = Some(VIEW_SERVICE);
        o.random_speeds(&mut speeds);
    });
    let mut schedule = Schedule::new(rng, world.sim.len());
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        for s in world.servers() {
            world.start(s);
        }
        let mut scripts = clients(&mut world, &mut schedule.rng);
        schedule.safety_phase(&mut world, &mut scripts);
        liveness_phase(&mut world, &mut schedule, &mut scripts);
    }));
    match result {
        Ok(()) => Ok(Outcome {
            seed,
            trace_hash: world.sim.trace_hash(),
            replicas: world.sim.len(),
            operations: world.history.len(),
            configs: 0,
            crashes: schedule.crashes,
            wipes: schedule.wipes,
            restores: schedule.restores,
            reads_indexed: 0,
            rounds_leased: 0,
            compactions_lost: world.sim.compactions_lost(),
        }),
        Err(payload) => Err(Failure {
            workload: NAME,
            seed,
            message: panic_message(&*payload),
            replicas: (0..world.sim.len())
                .map(|i| match world.sim.node(i) {
                    Some(n) => format!("n{i}: {:?}", crate::node::Node::status(n)),
                    None => format!("n{i}: down"),
                })
                .collect(),
            trace: world.sim.trace().cloned().collect(),
        }),
    }
}

/// A client issuing random operations with unique values.
struct RandomClient {
    clerk: usize,
    ops: RandomOps,
}

impl Script<PbWorld> for RandomClient {
    fn next(&mut self, _w: &mut PbWorld, _last: Option<Reply>) -> Action {
        match self.ops.next(&REGISTER_KEYS, &LOG_KEYS) {
            Ok(op) => Action::Run {
                clerk: self.clerk,
                op: op.into(),
            },
            Err(pause) => Action::Sleep(pause),
        }
    }
}

fn clients(w: &mut PbWorld, rng: &mut Rng) -> Scripts {
    let mut scripts = Scripts::new();
    for id in 0..rng.range(2, 6) as usize {
        let clerk = w.clerk();
        scripts.add(RandomClient {
            clerk,
            ops: RandomOps::new(id, Rng::new(rng.next_u64())),
        });
    }
    scripts
}

fn liveness_phase(w: &mut PbWorld, schedule: &mut Schedule, scripts: &mut Scripts) {
    schedule.heal_all(w);
    scripts.stop();
    assert!(
        scripts.drive(w, LIVENESS_LIMIT),
        "liveness: {} clients still waiting {LIVENESS_LIMIT:?} after healing",
        scripts.unfinished()
    );
    assert!(
        w.wait_settled(LIVENESS_LIMIT),
        "liveness: the view did not settle after healing: {}",
        w.view()
    );
    let reader = w.clerk();
    for key in REGISTER_KEYS {
        w.must(reader, get(key));
    }
    for key in LOG_KEYS {
        let value = w.get_str(reader, key);
        w.pin_appends(key, value.as_bytes());
    }
    assert!(
        w.wait_settled(LIVENESS_LIMIT),
        "liveness: the view did not settle after the final reads: {}",
        w.view()
    );
    w.assert_pair_agrees();
    w.check_linearizable();
}
