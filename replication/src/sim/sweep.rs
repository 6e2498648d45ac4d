//! Random fault schedules for Paxos, one per seed (used by the `sweep` binary and tests).
//!
//! Every knob derives from the seed: group size, drop/duplicate/delay rates, and a safety
//! phase of random actions (starts, re-starts with other values, `done` calls, partitions,
//! deaf and unreliable peers, crashes — some with torn writes — restarts, and at most one
//! wiped disk). The host checks agreement after every step. Then a liveness phase heals
//! everything, restarts every peer, re-proposes every started instance whose proposer may
//! have died, and requires each to be decided (or forgotten, which implies decided) on a
//! majority within a bound of virtual time.

use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use bytes::Bytes;
use kv_engine::fs::Torn;

use super::paxos::PaxosCluster;
use super::{panic_message, FaultCeilings, Faults, SimOptions};
use crate::paxos::Fate;
use crate::rng::Rng;

/// Length of the safety phase in virtual time.
pub const SAFETY_PHASE: Duration = Duration::from_secs(8);
/// Bound on the liveness phase in virtual time.
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(60);

/// What one seed did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Hash of the whole run's trace (same seed, same hash).
    pub trace_hash: u64,
    /// Peers in the group.
    pub peers: usize,
    /// Instances started.
    pub started: u64,
    /// Crashes injected.
    pub crashes: u32,
    /// Messages received by all peers.
    pub messages: u64,
}

/// A failed seed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// The panic message.
    pub message: String,
    /// The last trace lines before the failure (if tracing was on).
    pub trace: Vec<String>,
}

/// Runs one seed's schedule; keeps the last `trace_lines` trace lines for a failure report.
pub fn run(seed: u64, trace_lines: usize) -> Result<Outcome, Failure> {
    let mut rng = Rng::new(seed ^ 0x5EED_5EED_5EED_5EED);
    let peers = if rng.chance(0.5) { 3 } else { 5 };
    let mut options = SimOptions::new(peers);
    options.trace_lines = trace_lines;
    options.faults = Faults::random(
        &mut rng,
        FaultCeilings {
            drop: 0.15,
            duplicate: 0.1,
            delay_max_micros: 20_000,
            long_delay: 0.05,
            long_delay_max_millis: 300,
            crash_after_early_send: 0.02,
        },
    );
    options.random_speeds(&mut rng);
    let mut cluster = PaxosCluster::with(seed, options, |_| {});
    let mut schedule = Schedule {
        rng,
        started: Vec::new(),
        crashes: 0,
        wiped: None,
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        schedule.safety_phase(&mut cluster);
        schedule.liveness_phase(&mut cluster);
    }));
    match result {
        Ok(()) => Ok(Outcome {
            seed,
            trace_hash: cluster.sim.trace_hash(),
            peers,
            started: schedule.started.len() as u64,
            crashes: schedule.crashes,
            messages: cluster.rpc_total(),
        }),
        Err(payload) => {
            let message = panic_message(&*payload);
            Err(Failure {
                seed,
                message,
                trace: cluster.sim.trace().cloned().collect(),
            })
        }
    }
}

struct Schedule {
    rng: Rng,
    started: Vec<Bytes>,
    crashes: u32,
    wiped: Option<usize>,
}

impl Schedule {
    fn value(&mut self) -> Bytes {
        let len = self.rng.range(1, 64) as usize;
        let byte = self.rng.below(256) as u8;
        let mut v = vec![byte; len];
        v[0] = self.rng.below(256) as u8;
        Bytes::from(v)
    }

    fn up_voters(&self, c: &PaxosCluster) -> Vec<usize> {
        (0..c.peers())
            .filter(|&i| c.sim.is_up(i) && Some(i) != self.wiped)
            .collect()
    }

    fn safety_phase(&mut self, c: &mut PaxosCluster) {
        let n = c.peers();
        let tolerated = (n - 1) / 2;
        let end = c.sim.now() + SAFETY_PHASE;
        while c.sim.now() < end {
            let wait = self.rng.below(100);
            c.sleep_ms(wait);
            let i = self.rng.below(n as u64) as usize;
            let roll = self.rng.below(100);
            match roll {
                0..=34 => {
                    let seq = self.started.len() as u64;
                    let v = self.value();
                    self.started.push(v.clone());
                    c.start(i, seq, v);
                }
                35..=44 if !self.started.is_empty() => {
                    let seq = self.rng.below(self.started.len() as u64);
                    let v = self.value();
                    c.start(i, seq, v);
                }
                45..=54 if !self.started.is_empty() => {
                    let seq = self.rng.below(self.started.len() as u64);
                    if matches!(c.status(i, seq), Some(Fate::Decided(_))) {
                        c.done(i, seq);
                    }
                }
                55..=64 => self.repartition(c),
                65..=69 => {
                    let on = self.rng.chance(0.5);
                    c.sim.set_unreliable(i, on);
                }
                70..=73 => {
                    let on = self.rng.chance(0.3);
                    c.sim.set_deaf(i, on);
                }
                74..=85 => {
                    let down = n - self.up_voters(c).len();
                    if c.sim.is_up(i) && down < tolerated {
                        let torn = if self.rng.chance(0.5) {
                            Torn::Prefix(self.rng.next_u64())
                        } else {
                            Torn::None
                        };
                        c.sim.crash(i, torn);
                        self.crashes += 1;
                    }
                }
                86..=97 if !c.sim.is_up(i) => c.sim.restart(i),
                98..=99 => {
                    let down = n - self.up_voters(c).len();
                    if n >= 5 && self.wiped.is_none() && c.sim.is_up(i) && down < tolerated {
                        c.sim.restart_wiped(i);
                        self.wiped = Some(i);
                    }
                }
                _ => {}
            }
        }
    }

    fn repartition(&mut self, c: &mut PaxosCluster) {
        if self.rng.chance(0.3) {
            c.sim.heal();
            return;
        }
        let n = c.peers();
        let groups = self.rng.range(2, 3) as usize;
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
        for i in 0..n {
            members[self.rng.below(groups as u64) as usize].push(i);
        }
        let refs: Vec<&[usize]> = members.iter().map(|g| g.as_slice()).collect();
        c.sim.partition(&refs);
    }

    fn liveness_phase(&mut self, c: &mut PaxosCluster) {
        let n = c.peers();
        c.sim.heal();
        c.sim.set_faults(Faults::none());
        for i in 0..n {
            c.sim.set_unreliable(i, false);
            c.sim.set_deaf(i, false);
            if !c.sim.is_up(i) {
                c.sim.restart(i);
            }
        }
        // Proposers that crashed took their proposals with them, and a peer learns an
        // instance for sure only if it starts it (no chatter while idle): every voter
        // starts every instance again, as the lab's tests do.
        for i in self.up_voters(c) {
            for seq in 0..self.started.len() as u64 {
                let v = self.started[seq as usize].clone();
                c.start(i, seq, v);
            }
        }
        let majority = n / 2 + 1;
        let total = self.started.len() as u64;
        let settled = |c: &PaxosCluster, seq: u64| {
            (0..n)
                .filter(|&i| {
                    matches!(
                        c.status(i, seq),
                        Some(Fate::Decided(_)) | Some(Fate::Forgotten)
                    )
                })
                .count()
                >= majority
        };
        let deadline = c.sim.now() + LIVENESS_LIMIT;
        let mut next = 0;
        while next < total {
            if settled(c, next) {
                next += 1;
                continue;
            }
            assert!(
                c.sim.now() < deadline,
                "liveness: instance {next} of {total} not decided on a majority after healing"
            );
            c.sleep_ms(10);
        }
    }
}
