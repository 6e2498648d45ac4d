//! Random fault schedules for a replicated group of any machine, one per seed: the
//! `sweep` binary's group workloads (`kv`, `shardmaster`) and their bounded tests. A
//! [`Workload`] supplies the clients and the final reads; everything else is here, once.
//!
//! Every knob derives from the seed: group size (3 or 5), drop/duplicate/delay rates, the
//! workload's concurrent clients, and a safety phase of random faults: partitions, a
//! leader cut off alone for longer than its followers wait before electing another (so a
//! deposed leader that still believes it leads meets clients), unreliable replicas, crashes (half of them tearing the last unsynced write), restarts,
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

use super::group::{Cluster, Harness, Recorded, Scripts};
use super::replica::ReplicaHost;
use super::{panic_message, FaultCeilings, Faults, SimOptions};
use crate::paxos::Lease;
use crate::replica::ReplicaConfig;
use crate::rng::Rng;
use crate::types::{NodeId, Time};

/// Length of the safety phase in virtual time.
pub const SAFETY_PHASE: Duration = Duration::from_secs(6);
/// The shortest time a deposing partition (a leader cut off alone) lasts: longer than
/// followers wait for a silent leader before campaigning (`paxos::Config::leader_timeout`).
const DEPOSE_HOLD_MIN: Duration = Duration::from_millis(700);
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
    /// Reads answered at a read index, not through the log (by the replicas up at the end:
    /// a restart resets a replica's count).
    pub reads_indexed: u64,
    /// Read rounds released under a lease (counted as `reads_indexed` is).
    pub rounds_leased: u64,
    /// Crashes that lost a compaction still being written (see `Persist::Compaction`).
    pub compactions_lost: u64,
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
    /// Reads answered at a read index (see [`Outcome::reads_indexed`]).
    pub reads_indexed: u64,
    /// Read rounds released under a lease.
    pub rounds_leased: u64,
    /// Crashes that lost a compaction still being written.
    pub compactions_lost: u64,
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
        self.reads_indexed += outcome.reads_indexed;
        self.rounds_leased += outcome.rounds_leased;
        self.compactions_lost += outcome.compactions_lost;
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
        )?;
        if self.reads_indexed > 0 {
            write!(f, ", {} reads at a read index", self.reads_indexed)?;
        }
        if self.rounds_leased > 0 {
            write!(f, " ({} rounds under a lease)", self.rounds_leased)?;
        }
        if self.compactions_lost > 0 {
            write!(f, ", {} compactions lost in crashes", self.compactions_lost)?;
        }
        Ok(())
    }
}

/// The sum of a counter over a node's status fields (every replica it hosts): e.g.
/// `reads_indexed`, the reads it answered at a read index.
pub fn status_sum(status: &[(&'static str, String)], field: &str) -> u64 {
    status
        .iter()
        .filter(|(name, _)| *name == field)
        .filter_map(|(_, value)| value.parse::<u64>().ok())
        .sum()
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

/// Salt of the draw that picks how a seed's replicas send their decisions.
const DECISIONS_SALT: u64 = 0x4445_4349_5349_4F4E;

/// Whether `seed`'s replicas let decisions wait for the next accept or tick (the library's
/// default, `paxos.piggyback_commits`) or send them at the end of each burst, as the
/// server's nodes do: half the seeds each. Drawn from a generator of its own, so a seed's
/// other draws are what they were.
pub fn piggyback_commits(seed: u64) -> bool {
    Rng::new(seed ^ DECISIONS_SALT).chance(0.5)
}

/// The sum of a status counter over every node up in `sim`.
pub fn cluster_sum<H: super::Host>(sim: &super::Sim<H>, field: &str) -> u64 {
    (0..sim.len())
        .filter_map(|i| sim.node(i))
        .map(|n| status_sum(&crate::node::Node::status(n), field))
        .sum()
}

/// Salt of the draw that picks whether a seed's replicas run with leases.
const LEASES_SALT: u64 = 0x4C45_4153_4553_0001;

/// The clock-rate bound the sweeps' leases assume: 1%.
pub const SWEEP_DRIFT_PPM: u32 = 10_000;

/// Whether `seed`'s replicas run with leader leases (half the seeds), and if so the lease
/// (100–1500 ms: often longer than `leader_timeout`, so that followers that stop hearing
/// the leader campaign while their grants still bind them) and each of `nodes` clocks' rate error, drawn
/// within the lease's bound. Drawn from a generator of its own, so a seed's other draws
/// are what they were.
pub fn leases(seed: u64, nodes: usize) -> Option<(Lease, Vec<i64>)> {
    let mut rng = Rng::new(seed ^ LEASES_SALT);
    if !rng.chance(0.5) {
        return None;
    }
    let lease = Lease {
        duration: Duration::from_millis(rng.range(100, 1500)),
        drift_ppm: SWEEP_DRIFT_PPM,
    };
    let drift = u64::from(SWEEP_DRIFT_PPM);
    let rates = (0..nodes)
        .map(|_| rng.range(0, 2 * drift) as i64 - drift as i64)
        .collect();
    Some((lease, rates))
}

/// Salt of the draw that picks whether a leased seed's nodes run different leases.
const MIXED_LEASES_SALT: u64 = 0x4C45_4153_4553_0002;

/// For a third of the seeds that run leases ([`leases`]), each of `nodes` nodes' own
/// settings: a length of its own (100–1500 ms), or no leases at all (one in four), as
/// while a change of `[read_lease]` rolls through a cluster. A leader must count only on
/// the grants its acknowledgements carry. Empty otherwise: every node runs `leases`' lease.
pub fn mixed_leases(
    seed: u64,
    nodes: usize,
    leases: &Option<(Lease, Vec<i64>)>,
) -> Vec<Option<Lease>> {
    let mut rng = Rng::new(seed ^ MIXED_LEASES_SALT);
    let Some((lease, _)) = leases else {
        return Vec::new();
    };
    if !rng.chance(1.0 / 3.0) {
        return Vec::new();
    }
    (0..nodes)
        .map(|_| {
            (!rng.chance(0.25)).then(|| Lease {
                duration: Duration::from_millis(rng.range(100, 1500)),
                ..*lease
            })
        })
        .collect()
}

/// Sets every node's clock rate as drawn by [`leases`] (nothing if it drew none; rates
/// drawn for more nodes than the simulator has go unused).
pub fn drift_clocks<H: super::Host>(sim: &mut super::Sim<H>, leases: &Option<(Lease, Vec<i64>)>) {
    if let Some((_, rates)) = leases {
        for (i, ppm) in rates.iter().enumerate().take(sim.len()) {
            sim.set_clock_rate(i, *ppm);
        }
    }
}

/// Runs one seed of `workload`, keeping the last `trace_lines` trace lines for a failure
/// report; `tune` adjusts the replicas' configuration (mutation tests).
pub fn run<M: Recorded, W: Workload<M>>(
    seed: u64,
    trace_lines: usize,
    salt: u64,
    mut workload: W,
    tune: impl FnOnce(&mut ReplicaConfig),
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
    let leases = leases(seed, replicas);
    let mut config = ReplicaConfig::new(NodeId(0), replicas);
    config.paxos.piggyback_commits = piggyback_commits(seed);
    config.paxos.lease = leases.as_ref().map(|(lease, _)| *lease);
    tune(&mut config);
    let mut host = ReplicaHost::new(seed, config, M::default());
    host.node_leases = mixed_leases(seed, replicas, &leases);
    let mut cluster = Cluster::<M>::with_host(seed, options, host);
    drift_clocks(&mut cluster.sim, &leases);
    let mut schedule = Schedule::new(rng, replicas);
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
            reads_indexed: cluster_sum(&cluster.sim, "reads_indexed"),
            rounds_leased: cluster_sum(&cluster.sim, "read_rounds_leased"),
            compactions_lost: cluster.sim.compactions_lost(),
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

/// What a fault schedule acts on: the nodes of a simulated world, in cohorts — replica
/// groups, of which a minority may fail at a time — and the harness its clients run on.
pub trait Faulted: Harness + Sized {
    /// Number of nodes.
    fn nodes(&self) -> usize;
    /// The nodes of node `i`'s replica group (itself included).
    fn cohort(&self, i: usize) -> Vec<usize>;
    /// The simulator.
    fn sim_mut(&mut self) -> &mut dyn Faultable;
    /// The simulator, to look at.
    fn sim_ref(&self) -> &dyn Faultable;
    /// The lab's unreliable mode for node `i` (its clients' calls too).
    fn set_unreliable(&mut self, i: usize, on: bool);
    /// Node `i`'s `(incarnation, boots)` if it is up and serving.
    fn started(&self, i: usize) -> Option<(u64, u64)>;
    /// Whether node `observer` knows of a start of node `node` later than `(incarnation,
    /// boots)`.
    fn knows_later_start(&self, observer: usize, node: usize, incarnation: u64, boots: u64)
        -> bool;
    /// Whether the design survives node `i` failing (crashing, losing its disk) now, where
    /// that depends on more than how many of its cohort are down: `None` (the default)
    /// leaves it to the cohort rule (fewer than a minority down — or, rarely, more: a
    /// majority's disks bring the group back).
    fn may_fail(&self, _i: usize) -> Option<bool> {
        None
    }
    /// Whether the design survives the network splitting into `sides` now (nodes listed
    /// nowhere are isolated); true by default: partitions never lose anything in a group.
    fn may_partition(&self, _sides: &[&[usize]]) -> bool {
        true
    }
}

/// The simulator's fault controls, whatever its node type.
pub trait Faultable {
    /// True if node `i` is up.
    fn is_up(&self, i: usize) -> bool;
    /// True if node `i` is up and serving.
    fn is_ready(&self, i: usize) -> bool;
    /// Crashes node `i`.
    fn crash(&mut self, i: usize, torn: Torn);
    /// Restarts a crashed node from its disk, or blank.
    fn restart(&mut self, i: usize, wiped: bool);
    /// Node `i`'s durable disk.
    fn disk_image(&self, i: usize) -> DiskImage;
    /// Restarts node `i` on an older copy of its disk.
    fn restore_disk(&mut self, i: usize, image: &DiskImage);
    /// True if node `i` is up and leads its group (or one of the groups it hosts).
    fn leads(&self, i: usize) -> bool;
    /// Splits the nodes.
    fn partition(&mut self, sides: &[&[usize]]);
    /// Loses everything `from` sends `to` (until [`Faultable::heal`]).
    fn cut_one_way(&mut self, from: usize, to: usize);
    /// Removes every partition.
    fn heal(&mut self);
    /// A reliable network from now on.
    fn calm(&mut self);
}

impl<H: super::Host> Faultable for super::Sim<H> {
    fn is_up(&self, i: usize) -> bool {
        super::Sim::is_up(self, i)
    }

    fn is_ready(&self, i: usize) -> bool {
        self.node(i).is_some_and(crate::node::Node::is_ready)
    }

    fn crash(&mut self, i: usize, torn: Torn) {
        super::Sim::crash(self, i, torn)
    }

    fn restart(&mut self, i: usize, wiped: bool) {
        if wiped {
            self.restart_wiped(i);
        } else {
            super::Sim::restart(self, i);
        }
    }

    fn disk_image(&self, i: usize) -> DiskImage {
        super::Sim::disk_image(self, i)
    }

    fn restore_disk(&mut self, i: usize, image: &DiskImage) {
        super::Sim::restore_disk(self, i, image)
    }

    fn leads(&self, i: usize) -> bool {
        self.node(i).is_some_and(|n| {
            crate::node::Node::status(n)
                .iter()
                .any(|(name, value)| *name == "role" && value == "leader")
        })
    }

    fn partition(&mut self, sides: &[&[usize]]) {
        super::Sim::partition(self, sides)
    }

    fn cut_one_way(&mut self, from: usize, to: usize) {
        super::Sim::cut_one_way(self, from, to)
    }

    fn heal(&mut self) {
        super::Sim::heal(self)
    }

    fn calm(&mut self) {
        self.set_faults(Faults::none());
    }
}

impl<M: Recorded> Faulted for Cluster<M> {
    fn nodes(&self) -> usize {
        self.replicas()
    }

    fn cohort(&self, _i: usize) -> Vec<usize> {
        (0..self.replicas()).collect()
    }

    fn sim_mut(&mut self) -> &mut dyn Faultable {
        &mut self.sim
    }

    fn sim_ref(&self) -> &dyn Faultable {
        &self.sim
    }

    fn set_unreliable(&mut self, i: usize, on: bool) {
        Cluster::set_unreliable(self, i, on)
    }

    fn started(&self, i: usize) -> Option<(u64, u64)> {
        let status = self.sim.node(i).filter(|r| r.is_ready())?.status();
        Some((status.incarnation, status.boots))
    }

    fn knows_later_start(
        &self,
        observer: usize,
        node: usize,
        incarnation: u64,
        boots: u64,
    ) -> bool {
        self.sim
            .node(observer)
            .and_then(|r| r.peer_memory(NodeId(node as u32)))
            .is_some_and(|m| later_start(&m, incarnation, boots))
    }
}

/// Whether `memory` records a start later than `(incarnation, boots)`.
pub fn later_start(memory: &crate::replica::PeerMemory, incarnation: u64, boots: u64) -> bool {
    memory.incarnation > incarnation
        || (memory.incarnation == incarnation && memory.boot.count > boots)
}

/// A copy of a replica's disk, with what the replica was when it was taken.
struct Backup {
    node: usize,
    image: DiskImage,
    incarnation: u64,
    boots: u64,
}

/// A random fault schedule over any [`Faulted`] world (see the module docs).
pub struct Schedule {
    /// The schedule's random generator.
    pub rng: Rng,
    /// Crashes injected.
    pub crashes: u32,
    /// Disks wiped.
    pub wipes: u32,
    /// Disks restored from an older backup.
    pub restores: u32,
    backups: Vec<Backup>,
    /// Wiped and not yet rebuilt.
    lost: Vec<bool>,
    /// Down with a lost disk: the next restart boots it blank.
    wiped_down: Vec<bool>,
    /// A deposing partition stays until then.
    partition_held_until: Option<Time>,
}

impl Schedule {
    /// A schedule over `nodes` nodes drawing from `rng`.
    pub fn new(rng: Rng, nodes: usize) -> Schedule {
        Schedule {
            rng,
            crashes: 0,
            wipes: 0,
            restores: 0,
            backups: Vec::new(),
            lost: vec![false; nodes],
            wiped_down: vec![false; nodes],
            partition_held_until: None,
        }
    }

    fn refresh_lost<T: Faulted>(&mut self, t: &T) {
        for (i, lost) in self.lost.iter_mut().enumerate() {
            if *lost && t.sim_ref().is_ready(i) {
                *lost = false;
            }
        }
    }

    /// Runs the clients under random faults for [`SAFETY_PHASE`].
    pub fn safety_phase<T: Faulted>(&mut self, t: &mut T, scripts: &mut super::script::Scripts<T>) {
        let n = t.nodes();
        let end = t.now() + SAFETY_PHASE;
        while t.now() < end {
            let wait = self.rng.below(100);
            scripts.drive(t, Duration::from_millis(wait));
            self.refresh_lost(t);
            let i = self.rng.below(n as u64) as usize;
            let cohort = t.cohort(i);
            let tolerated = (cohort.len() - 1) / 2;
            match self.rng.below(100) {
                0..=19
                    if self
                        .partition_held_until
                        .is_none_or(|until| t.now() >= until) =>
                {
                    self.repartition(t)
                }
                20..=29 => {
                    let on = self.rng.chance(0.4);
                    t.set_unreliable(i, on);
                }
                30..=44 => {
                    let down = cohort.iter().filter(|&&j| !t.sim_ref().is_up(j)).count();
                    let rule = t.may_fail(i);
                    if t.sim_ref().is_up(i)
                        && rule.unwrap_or_else(|| down < tolerated || self.rng.chance(0.1))
                    {
                        let torn = if self.rng.chance(0.5) {
                            Torn::Prefix(self.rng.next_u64())
                        } else {
                            Torn::None
                        };
                        t.sim_mut().crash(i, torn);
                        self.crashes += 1;
                    }
                }
                45..=64 if !t.sim_ref().is_up(i) => self.restart(t, i),
                65..=71 => {
                    let lost = cohort.iter().filter(|&&j| self.lost[j]).count();
                    if lost < tolerated && !self.lost[i] && t.may_fail(i).unwrap_or(true) {
                        // Lose the disk now; half the time come back blank at once, else
                        // at a later restart.
                        self.lost[i] = true;
                        self.wipes += 1;
                        if t.sim_ref().is_up(i) {
                            t.sim_mut().crash(i, Torn::None);
                        }
                        self.wiped_down[i] = true;
                        if self.rng.chance(0.5) {
                            self.restart(t, i);
                        }
                    }
                }
                72..=74 => self.back_up(t, i),
                75..=77 => self.restore_backup(t),
                78..=80 => self.depose(t),
                _ => {}
            }
        }
    }

    /// Copies replica `i`'s disk (if it is up and serving, so its start is known).
    fn back_up<T: Faulted>(&mut self, t: &T, i: usize) {
        let Some((incarnation, boots)) = t.started(i) else {
            return;
        };
        if self.backups.len() >= 4 {
            self.backups.remove(0);
        }
        self.backups.push(Backup {
            node: i,
            image: t.sim_ref().disk_image(i),
            incarnation,
            boots,
        });
    }

    /// Restores a backup whose replica every other replica of its group has since seen
    /// start again (or reincarnate), while fewer than a minority of that group is lost:
    /// the restore is then caught by whichever peers check it.
    fn restore_backup<T: Faulted>(&mut self, t: &mut T) {
        let Some(index) = (0..self.backups.len()).find(|&b| {
            let backup = &self.backups[b];
            let cohort = t.cohort(backup.node);
            let lost = cohort.iter().filter(|&&j| self.lost[j]).count();
            lost < (cohort.len() - 1) / 2
                && !self.lost[backup.node]
                && cohort
                    .iter()
                    .filter(|&&o| o != backup.node)
                    .all(|&o| t.knows_later_start(o, backup.node, backup.incarnation, backup.boots))
        }) else {
            return;
        };
        let backup = self.backups.remove(index);
        self.lost[backup.node] = true;
        self.wiped_down[backup.node] = false;
        self.restores += 1;
        t.sim_mut().restore_disk(backup.node, &backup.image);
    }

    fn restart<T: Faulted>(&mut self, t: &mut T, i: usize) {
        let wiped = std::mem::take(&mut self.wiped_down[i]);
        t.sim_mut().restart(i, wiped);
    }

    fn repartition<T: Faulted>(&mut self, t: &mut T) {
        if self.rng.chance(0.3) {
            t.sim_mut().heal();
            return;
        }
        let n = t.nodes();
        let groups = self.rng.range(2, 3) as usize;
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); groups];
        for i in 0..n {
            members[self.rng.below(groups as u64) as usize].push(i);
        }
        let refs: Vec<&[usize]> = members.iter().map(|g| g.as_slice()).collect();
        if t.may_partition(&refs) {
            t.sim_mut().partition(&refs);
        }
    }

    /// Cuts a leader off alone — or, a third of the time, only what the others send it
    /// (a one-way loss: its own messages still arrive) — and keeps that for longer than
    /// followers wait before electing another leader.
    fn depose<T: Faulted>(&mut self, t: &mut T) {
        let n = t.nodes();
        let Some(leader) = (0..n).find(|&i| t.sim_ref().leads(i)) else {
            return;
        };
        let others: Vec<usize> = (0..n).filter(|&i| i != leader).collect();
        let sides: [&[usize]; 2] = [&others, &[leader]];
        if t.may_partition(&sides) {
            if self.rng.chance(1.0 / 3.0) {
                for &other in &others {
                    t.sim_mut().cut_one_way(other, leader);
                }
            } else {
                t.sim_mut().partition(&sides);
            }
            let hold = DEPOSE_HOLD_MIN + Duration::from_millis(self.rng.below(1000));
            self.partition_held_until = Some(t.now() + hold);
        }
    }

    /// Heals everything: no partitions, a reliable network, no unreliable node, every node
    /// up again.
    pub fn heal_all<T: Faulted>(&mut self, t: &mut T) {
        t.sim_mut().heal();
        t.sim_mut().calm();
        for i in 0..t.nodes() {
            t.set_unreliable(i, false);
            if !t.sim_ref().is_up(i) {
                self.restart(t, i);
            }
        }
    }

    fn liveness_phase<M: Recorded, W: Workload<M>>(
        &mut self,
        c: &mut Cluster<M>,
        scripts: &mut Scripts<M>,
        workload: &mut W,
    ) {
        let n = c.replicas();
        let seed = c.sim.seed();
        self.heal_all(c);
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
