//! Random fault schedules for a replicated group of any machine, one per seed: the
//! `sweep` binary's group workloads (`kv`, `shardmaster`) and their bounded tests. A
//! [`Workload`] supplies the clients and the final reads; everything else is here, once.
//!
//! Every knob derives from the seed: group size (3 or 5), drop/duplicate/delay rates, the
//! workload's concurrent clients, and a safety phase of random faults: partitions,
//! unreliable replicas, crashes (half of them tearing the last unsynced write), restarts,
//! disk wipes of a minority (a wiped replica counts as lost until it has rebuilt), and
//! disks restored from an older backup of themselves. A backup is restored only once every
//! other replica has confirmed a later start of its replica (or a later incarnation) — the
//! condition under which the restart check guarantees the restore is caught, whichever
//! peers answer first; the restored replica then counts as lost until it has rebuilt. The
//! host checks after every step that replicas apply the same log. Then a liveness phase
//! heals everything and restarts every replica; every client must finish its operation,
//! every replica must converge, and the workload reads what it needs with a fresh clerk.
//! Finally the whole history is checked for linearizability — which also proves that no
//! acknowledged change was lost, since the final reads come after every acknowledgement.
//!
//! Failure model: any panic in a seed (a violated invariant, a wrong answer, a stuck
//! liveness phase, a non-linearizable history) is that seed's [`Failure`], reported with
//! every replica's status and, if asked for, the trace's tail.

use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use kv_engine::fs::{DiskImage, Torn};

use super::group::{Cluster, Recorded, Scripts};
use super::{panic_message, FaultCeilings, Faults, SimOptions};
use crate::rng::Rng;
use crate::types::NodeId;

/// Length of the safety phase in virtual time.
pub const SAFETY_PHASE: Duration = Duration::from_secs(6);
/// Bound on the liveness phase in virtual time.
pub const LIVENESS_LIMIT: Duration = Duration::from_secs(60);
/// How often the liveness phase looks whether every replica is ready.
const READY_POLL: Duration = Duration::from_millis(10);

/// What one seed did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Hash of the whole run's trace (same seed, same hash).
    pub trace_hash: u64,
    /// Replicas in the group (nodes of the world, for a sharded workload).
    pub replicas: usize,
    /// Client operations recorded.
    pub operations: usize,
    /// Configurations the shard master made (sharded workloads; 0 otherwise).
    pub configs: u64,
    /// Crashes injected.
    pub crashes: u32,
    /// Disks wiped.
    pub wipes: u32,
    /// Disks restored from an older backup.
    pub restores: u32,
}

/// What a range of seeds did, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Seeds run.
    pub seeds: u64,
    /// Client operations recorded.
    pub operations: u64,
    /// Configurations the shard master made (sharded workloads).
    pub configs: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Disks wiped.
    pub wipes: u64,
    /// Disks restored from an older backup.
    pub restores: u64,
}

impl Totals {
    /// Adds one seed's outcome.
    pub fn add(&mut self, outcome: &Outcome) {
        self.seeds += 1;
        self.operations += outcome.operations as u64;
        self.configs += outcome.configs;
        self.crashes += u64::from(outcome.crashes);
        self.wipes += u64::from(outcome.wipes);
        self.restores += u64::from(outcome.restores);
    }
}

impl std::fmt::Display for Totals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} seeds, {} operations, ", self.seeds, self.operations)?;
        if self.configs > 0 {
            write!(f, "{} configurations, ", self.configs)?;
        }
        write!(
            f,
            "{} crashes, {} disk wipes, {} restored backups",
            self.crashes, self.wipes, self.restores
        )
    }
}

/// The seed range in environment variable `var` (`A..B`), or `default` if it is unset.
/// Panics on a malformed range.
pub fn seeds_from_env(var: &str, default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    let Ok(spec) = std::env::var(var) else {
        return default;
    };
    let parse = |s: &str| {
        s.parse::<u64>()
            .unwrap_or_else(|e| panic!("bad seed {s:?} in {var}: {e}"))
    };
    match spec.split_once("..") {
        Some((a, b)) => parse(a)..parse(b),
        None => panic!("{var} wants A..B, got {spec}"),
    }
}

/// A failed seed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The workload's name.
    pub workload: &'static str,
    /// The seed.
    pub seed: u64,
    /// The panic message.
    pub message: String,
    /// Every replica's status at the failure.
    pub replicas: Vec<String>,
    /// The last trace lines before the failure (if tracing was on).
    pub trace: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} sweep seed {}: {}",
            self.workload, self.seed, self.message
        )?;
        for line in &self.replicas {
            writeln!(f, "  {line}")?;
        }
        for line in &self.trace {
            writeln!(f, "  | {line}")?;
        }
        Ok(())
    }
}

/// What a sweep runs against the group: its clients and its final reads.
pub trait Workload<M: Recorded> {
    /// The workload's name (`--workload NAME`).
    const NAME: &'static str;

    /// Creates the concurrent clients (clerks through `c`), drawing from `rng`.
    fn clients(&mut self, c: &mut Cluster<M>, rng: &mut Rng) -> Scripts<M>;

    /// After the healed group converged: reads through a fresh clerk whatever the history
    /// needs to pin down the end state, and checks what the workload knows must hold.
    fn final_reads(&mut self, c: &mut Cluster<M>);
}

/// The replicas a client of a group of `replicas` uses, in the order it tries them: all of
/// them shuffled, or (a third of the clients, as in the lab's partition tests) just one.
pub fn client_servers(replicas: usize, rng: &mut Rng) -> Vec<usize> {
    let mut servers: Vec<usize> = (0..replicas).collect();
    for i in (1..replicas).rev() {
        servers.swap(i, rng.below(i as u64 + 1) as usize);
    }
    if rng.chance(0.3) {
        servers.truncate(1);
    }
    servers
}

/// Runs one seed of `workload`, keeping the last `trace_lines` trace lines for a failure
/// report.
pub fn run<M: Recorded, W: Workload<M>>(
    seed: u64,
    trace_lines: usize,
    salt: u64,
    mut workload: W,
) -> Result<Outcome, Failure> {
    let mut rng = Rng::new(seed ^ salt);
    let replicas = if rng.chance(0.5) { 3 } else { 5 };
    let mut options = SimOptions::new(replicas);
    options.trace_lines = trace_lines;
    options.faults = Faults::random(
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
    options.random_speeds(&mut rng);
    let mut cluster = Cluster::<M>::with(seed, options, |_| {});
    let mut schedule = Schedule {
        rng,
        crashes: 0,
        wipes: 0,
        restores: 0,
        lost: vec![false; replicas],
        wiped_down: vec![false; replicas],
        backups: Vec::new(),
    };
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        let mut scripts = workload.clients(&mut cluster, &mut schedule.rng);
        schedule.safety_phase(&mut cluster, &mut scripts);
        schedule.liveness_phase(&mut cluster, &mut scripts, &mut workload);
    }));
    match result {
        Ok(()) => Ok(Outcome {
            seed,
            trace_hash: cluster.sim.trace_hash(),
            replicas,
            operations: cluster.history.len(),
            configs: 0,
            crashes: schedule.crashes,
            wipes: schedule.wipes,
            restores: schedule.restores,
        }),
        Err(payload) => {
            let message = panic_message(&*payload);
            let replicas = (0..cluster.replicas())
                .map(|i| match cluster.sim.node(i) {
                    Some(r) => format!("n{i}: {:?}", r.status()),
                    None => format!("n{i}: down"),
                })
                .collect();
            Err(Failure {
                workload: W::NAME,
                seed,
                message,
                replicas,
                trace: cluster.sim.trace().cloned().collect(),
            })
        }
    }
}

/// A copy of a replica's disk, with what the replica was when it was taken.
struct Backup {
    node: usize,
    image: DiskImage,
    incarnation: u64,
    boots: u64,
}

struct Schedule {
    rng: Rng,
    crashes: u32,
    wipes: u32,
    restores: u32,
    backups: Vec<Backup>,
    /// Wiped and not yet rebuilt.
    lost: Vec<bool>,
    /// Down with a lost disk: the next restart boots it blank.
    wiped_down: Vec<bool>,
}

impl Schedule {
    fn refresh_lost<M: Recorded>(&mut self, c: &Cluster<M>) {
        for (i, lost) in self.lost.iter_mut().enumerate() {
            if *lost && c.sim.node(i).is_some_and(|r| r.is_ready()) {
                *lost = false;
            }
        }
    }

    fn safety_phase<M: Recorded>(&mut self, c: &mut Cluster<M>, scripts: &mut Scripts<M>) {
        let n = c.replicas();
        let tolerated = (n - 1) / 2;
        let end = c.sim.now() + SAFETY_PHASE;
        while c.sim.now() < end {
            let wait = self.rng.below(100);
            c.drive(scripts, Duration::from_millis(wait));
            self.refresh_lost(c);
            let i = self.rng.below(n as u64) as usize;
            match self.rng.below(100) {
                0..=19 => self.repartition(c),
                20..=29 => {
                    let on = self.rng.chance(0.4);
                    c.set_unreliable(i, on);
                }
                30..=44 => {
                    let down = (0..n).filter(|&j| !c.sim.is_up(j)).count();
                    if c.sim.is_up(i) && (down < tolerated || self.rng.chance(0.1)) {
                        let torn = if self.rng.chance(0.5) {
                            Torn::Prefix(self.rng.next_u64())
                        } else {
                            Torn::None
                        };
                        c.sim.crash(i, torn);
                        self.crashes += 1;
                    }
                }
                45..=64 if !c.sim.is_up(i) => self.restart(c, i),
                65..=71 => {
                    let lost = self.lost.iter().filter(|&&l| l).count();
                    if lost < tolerated && !self.lost[i] {
                        // Lose the disk now; half the time come back blank at once, else
                        // at a later restart.
                        self.lost[i] = true;
                        self.wipes += 1;
                        if c.sim.is_up(i) {
                            c.sim.crash(i, Torn::None);
                        }
                        self.wiped_down[i] = true;
                        if self.rng.chance(0.5) {
                            self.restart(c, i);
                        }
                    }
                }
                72..=74 => self.back_up(c, i),
                75..=77 => {
                    let lost = self.lost.iter().filter(|&&l| l).count();
                    if lost < tolerated {
                        self.restore_backup(c);
                    }
                }
                _ => {}
            }
        }
    }

    /// Copies replica `i`'s disk (if it is up and serving, so its start is known).
    fn back_up<M: Recorded>(&mut self, c: &Cluster<M>, i: usize) {
        let Some(status) = c.sim.node(i).filter(|r| r.is_ready()).map(|r| r.status()) else {
            return;
        };
        if self.backups.len() >= 4 {
            self.backups.remove(0);
        }
        self.backups.push(Backup {
            node: i,
            image: c.sim.disk_image(i),
            incarnation: status.incarnation,
            boots: status.boots,
        });
    }

    /// Restores a backup whose replica every other replica has since seen start again (or
    /// reincarnate): the restore is then caught by whichever peers check it.
    fn restore_backup<M: Recorded>(&mut self, c: &mut Cluster<M>) {
        let n = c.replicas();
        let Some(index) = (0..self.backups.len()).find(|&b| {
            let backup = &self.backups[b];
            !self.lost[backup.node]
                && (0..n).filter(|&o| o != backup.node).all(|o| {
                    c.sim
                        .node(o)
                        .and_then(|r| r.peer_memory(NodeId(backup.node as u32)))
                        .is_some_and(|m| {
                            m.incarnation > backup.incarnation
                                || (m.incarnation == backup.incarnation
                                    && m.boot.count > backup.boots)
                        })
                })
        }) else {
            return;
        };
        let backup = self.backups.remove(index);
        self.lost[backup.node] = true;
        self.wiped_down[backup.node] = false;
        self.restores += 1;
        c.sim.restore_disk(backup.node, &backup.image);
    }

    fn restart<M: Recorded>(&mut self, c: &mut Cluster<M>, i: usize) {
        if std::mem::take(&mut self.wiped_down[i]) {
            c.sim.restart_wiped(i);
        } else {
            c.sim.restart(i);
        }
    }

    fn repartition<M: Recorded>(&mut self, c: &mut Cluster<M>) {
        if self.rng.chance(0.3) {
            c.sim.heal();
            return;
        }
        let n = c.replicas();
        let groups = self.rng.range(2, 3) as usize;
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
        for i in 0..n {
            members[self.rng.below(groups as u64) as usize].push(i);
        }
        let refs: Vec<&[usize]> = members.iter().map(|g| g.as_slice()).collect();
        c.sim.partition(&refs);
    }

    fn liveness_phase<M: Recorded, W: Workload<M>>(
        &mut self,
        c: &mut Cluster<M>,
        scripts: &mut Scripts<M>,
        workload: &mut W,
    ) {
        let n = c.replicas();
        let seed = c.sim.seed();
        c.sim.heal();
        c.sim.set_faults(Faults::none());
        for i in 0..n {
            c.set_unreliable(i, false);
            if !c.sim.is_up(i) {
                self.restart(c, i);
            }
        }
        scripts.stop();
        assert!(
            c.drive(scripts, LIVENESS_LIMIT),
            "liveness: {} clients still waiting {LIVENESS_LIMIT:?} after healing",
            scripts.unfinished()
        );
        let everyone: Vec<usize> = (0..n).collect();
        assert!(
            c.wait_applied_equal(&everyone, LIVENESS_LIMIT),
            "liveness: replicas did not converge after healing"
        );
        workload.final_reads(c);
        assert!(
            c.wait_applied_equal(&everyone, LIVENESS_LIMIT),
            "liveness: replicas did not converge after the final reads"
        );
        c.assert_replicas_agree(&everyone);
        c.check_linearizable();
        // A replica restarted just before the heal may still be verifying its disk with
        // its peers (retried every `recovery_retry`): wait for it, within the bound.
        let ready = c.sim.run_until(LIVENESS_LIMIT, READY_POLL, |sim| {
            (0..n).all(|i| sim.node(i).is_some_and(|r| r.is_ready()))
        });
        assert!(
            ready,
            "seed {seed}: a replica is still rebuilding or verifying {LIVENESS_LIMIT:?} after \
             healing"
        );
    }
}
