//! Sharded clusters on the simulator: one world of shard-master replicas and several shard
//! groups ([`ShardKvNode`]s), all on one seed, with lab-style clerks.
//!
//! # The world
//! Node ids `0..masters` are the shard master's replicas (each [`Served`], so shard groups
//! reach it with messages), then each group's replicas in turn. Servers are named `n<id>`
//! in configurations. Every fault of the simulator applies across the world: partitions
//! inside and across groups, lost, duplicated and delayed messages, unreliable and
//! unreachable nodes, crashes with torn writes, restarts, disk loss.
//!
//! # Clients
//! As in the lab (spec §8), clerks ([`ShardClerk`]) are driven by the harness: a request
//! reaches a node at once through [`Sim::call`], and its answer comes back as an event.
//! A clerk asks the shard master (through its own master clerk, trying the masters in turn)
//! for the latest configuration whenever it has none, a group answers "not held", or no
//! server of the group answers. Unreliable nodes lose 10% of client requests and 20% of
//! replies; unreachable nodes take no requests at all.
//!
//! # Checks, after every step
//! - Within each group (and the shard master), replicas that applied the same number of
//!   instances applied the same values.
//! - No two groups serve the same shard under the same configuration: whenever a
//!   replica's applied state serves a shard, the world records which group served it under
//!   which configuration, and a second group is a violation.
//! - No replica halts.
//!
//! And on demand: the history's linearizability ([`ShardWorld::check_linearizable`]; with
//! final reads after healing, this also proves no acknowledged write was lost), and, once
//! settled, that every shard is served by exactly one group with every old copy released
//! ([`ShardWorld::assert_settled`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kv_engine::kv::{KvState, Op, Reply, ShardId, Sharding};

use super::group::Completion;
use super::kv::KvCalls;
use super::{Boot, Host, Sim, SimOptions, UNRELIABLE_REPLY_LOSS, UNRELIABLE_REQUEST_LOSS};
use crate::clerk::Clerk;
pub use crate::cluster::{
    resolve, server_name, Blueprint, ClusterEvent, ClusterMsg, ClusterNode, ClusterReply,
    ClusterRequest, Layout, MasterNode,
};
use crate::kvgroup::Batch;
use crate::linearizability::{self, Budget, CheckResult, History, Invocation};
use crate::node::Node;
use crate::paxos::Seq;
use crate::replica::{Event, ReplicaConfig, Request};
use crate::rng::Rng;
use crate::shardkv::{ShardClerk, ShardKvNode, ShardKvSettings, Step};
use crate::shardmaster::{self, Config, ConfigNum, GroupId};
use crate::types::{ClientId, NodeId, Time};

mod host;
pub use host::WorldHost;

// -------------------------------------------------------------------------------------
// The harness.
// -------------------------------------------------------------------------------------

/// How long a failed call waits before the clerk retries (a refused connection).
const REDIAL: Duration = Duration::from_millis(10);
/// Granularity of the harness loop in virtual time.
const POLL: Duration = Duration::from_millis(1);

/// What a clerk is doing for its caller.
#[derive(Debug, Clone)]
enum Job {
    /// A key operation.
    Kv(Op),
    /// A shard-master command (an administrator's Join, Leave, Move or Query).
    Admin,
}

/// The call in flight for a job.
#[derive(Debug, Clone)]
enum Stage {
    /// To a shard group's server.
    Kv { to: NodeId, request: Request<Op> },
    /// To a shard-master replica (the clerk's query for a configuration, or an admin job).
    Master {
        to: NodeId,
        request: shardmaster::Request,
    },
}

struct InFlight {
    job: Job,
    invocation: Option<Invocation>,
    invoked: Time,
    stage: Stage,
    tag: u64,
    retry_at: Time,
}

struct WorldClerk {
    kv: ShardClerk,
    master: Clerk<shardmaster::Command>,
    call: Option<InFlight>,
    result: Option<ClusterReply>,
}

/// A sharded cluster on the simulator with lab-style clerks. See the module docs.
pub struct ShardWorld {
    /// The simulator.
    pub sim: Sim<WorldHost>,
    /// Every key operation so far.
    pub history: History,
    /// A call with no answer for this long is retried elsewhere.
    pub retry_timeout: Duration,
    /// Record key operations in [`ShardWorld::history`].
    pub record: bool,
    /// Completed Appends (while recording), for [`ShardWorld::pin_appends`].
    pub completions: Vec<Completion<KvState>>,
    /// Crash-and-restart churn, if on.
    pub churn: Option<Churn>,
    /// Nodes the test killed (churn leaves them down).
    killed: Vec<bool>,
    clerks: Vec<WorldClerk>,
    tags: BTreeMap<u64, usize>,
    next_tag: u64,
    next_client: u64,
    unreliable: Vec<bool>,
    unreachable: Vec<bool>,
    rng: Rng,
    admin: usize,
}

/// Crash-and-restart churn among the shard groups' replicas (Lab 5's copies of the Lab 4
/// scenarios): every so often a replica whose group is otherwise whole crashes — half the
/// time tearing its last unsynced write — and restarts from its disk a little later.
#[derive(Debug, Clone)]
pub struct Churn {
    rng: Rng,
    next: Time,
    down: BTreeMap<usize, Time>,
    /// Crashes so far.
    pub crashes: u32,
}

impl Churn {
    /// Churn drawn from `seed`.
    pub fn new(seed: u64) -> Churn {
        Churn {
            rng: Rng::new(seed),
            next: Time::ZERO,
            down: BTreeMap::new(),
            crashes: 0,
        }
    }
}

/// Settings of a world.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// Shard-master replicas.
    pub masters: usize,
    /// Shard groups.
    pub groups: usize,
    /// Replicas per group.
    pub replicas: usize,
    /// The first group's id (the lab's 100).
    pub first_group: u64,
    /// Key to shard (its shard count must be the shard master's, 10).
    pub sharding: Sharding,
    /// The groups' duties.
    pub settings: ShardKvSettings,
    /// Every replica's `paxos.piggyback_commits` (the library's default: true; the
    /// server's nodes: false).
    pub piggyback_commits: bool,
    /// Every replica's `paxos.lease` (the library's default: none).
    pub lease: Option<crate::paxos::Lease>,
}

impl Default for WorldOptions {
    /// The lab's: 3 masters, 3 groups of 3, gids from 100.
    fn default() -> Self {
        WorldOptions {
            masters: 3,
            groups: 3,
            replicas: 3,
            first_group: 100,
            sharding: Sharding::LAB,
            settings: ShardKvSettings::default(),
            piggyback_commits: true,
            lease: None,
        }
    }
}

impl ShardWorld {
    /// The lab's world on a reliable network.
    pub fn new(seed: u64) -> ShardWorld {
        ShardWorld::with(seed, WorldOptions::default(), |_| {})
    }

    /// A world of `options`, with a hook to adjust the simulator options.
    pub fn with(
        seed: u64,
        options: WorldOptions,
        tune: impl FnOnce(&mut SimOptions),
    ) -> ShardWorld {
        let layout = Layout::new(
            options.masters,
            options.groups,
            options.replicas,
            options.first_group,
        );
        let nodes = layout.nodes();
        let mut sim_options = SimOptions::new(nodes);
        tune(&mut sim_options);
        let config = |replicas| {
            let mut config = ReplicaConfig::new(NodeId(0), replicas);
            config.paxos.piggyback_commits = options.piggyback_commits;
            config.paxos.lease = options.lease;
            config
        };
        let host = WorldHost::new(
            seed,
            Blueprint {
                master_config: config(options.masters),
                kv_config: config(options.replicas),
                settings: options.settings,
                sharding: options.sharding,
                initial_joins: Vec::new(),
                layout,
            },
        );
        let mut world = ShardWorld {
            sim: Sim::new(seed, sim_options, host),
            history: History::new(),
            retry_timeout: Duration::from_millis(300),
            record: true,
            completions: Vec::new(),
            churn: None,
            killed: vec![false; nodes],
            clerks: Vec::new(),
            tags: BTreeMap::new(),
            next_tag: 1,
            next_client: 1,
            unreliable: vec![false; nodes],
            unreachable: vec![false; nodes],
            rng: Rng::new(seed ^ 0x5348_4152_4457_4F52),
            admin: 0,
        };
        world.admin = world.clerk();
        world
    }

    /// Which nodes are which.
    pub fn layout(&self) -> &Layout {
        &self.sim.host().blueprint.layout
    }

    /// The harness's random generator.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// Group `g`'s id.
    pub fn gid(&self, g: usize) -> GroupId {
        self.layout().groups[g].0
    }

    /// Group `g`'s nodes.
    pub fn group_nodes(&self, g: usize) -> Vec<usize> {
        self.layout().groups[g]
            .1
            .iter()
            .map(|n| n.index())
            .collect()
    }

    /// The shard-master replicas' nodes.
    pub fn master_nodes(&self) -> Vec<usize> {
        self.layout().masters.iter().map(|n| n.index()).collect()
    }

    /// A new clerk (fresh client id).
    pub fn clerk(&mut self) -> usize {
        let client = ClientId(self.next_client);
        self.next_client += 1;
        let masters = self.layout().masters.clone();
        let sharding = self.sim.host().blueprint.sharding;
        self.clerks.push(WorldClerk {
            kv: ShardClerk::new(client, sharding),
            master: Clerk::new(client, masters),
            call: None,
            result: None,
        });
        self.clerks.len() - 1
    }

    /// Starts key operation `op` on clerk `c` (which must be idle).
    pub fn begin(&mut self, c: usize, op: Op) {
        let now = self.sim.now();
        let client = self.clerks[c].kv.client().0;
        let invocation = self.record.then(|| {
            self.history
                .invoke(client, super::kv::input_of(&op), now.as_micros())
        });
        let step = self.clerks[c]
            .kv
            .begin(op.clone())
            .unwrap_or_else(|e| panic!("seed {}: {e}", self.sim.seed()));
        self.clerks[c].result = None;
        let stage = self.stage_for(c, step);
        self.clerks[c].call = Some(InFlight {
            job: Job::Kv(op),
            invocation,
            invoked: now,
            stage,
            tag: 0,
            retry_at: now,
        });
        self.send(c);
    }

    /// Abandons clerk `c`'s call (its outcome stays unknown in the history). The clerk is
    /// retired: its client id must not be reused.
    pub fn abandon(&mut self, c: usize) {
        if let Some(mut call) = self.clerks[c].call.take() {
            if let Some(invocation) = call.invocation.take() {
                self.history.give_up(invocation);
            }
        }
    }

    /// Starts shard-master command `command` on clerk `c` (which must be idle); its answer
    /// comes back through [`ShardWorld::take_admin_result`].
    pub fn begin_admin(&mut self, c: usize, command: shardmaster::Command) {
        let now = self.sim.now();
        let (to, request) = self.clerks[c]
            .master
            .begin(command)
            .unwrap_or_else(|e| panic!("seed {}: {e}", self.sim.seed()));
        self.clerks[c].result = None;
        self.clerks[c].call = Some(InFlight {
            job: Job::Admin,
            invocation: None,
            invoked: now,
            stage: Stage::Master { to, request },
            tag: 0,
            retry_at: now,
        });
        self.send(c);
    }

    /// The stage a clerk's step leads to (a query starts a master call).
    fn stage_for(&mut self, c: usize, step: Step) -> Stage {
        match step {
            Step::Send { to, request } => Stage::Kv {
                to: resolve(&to).unwrap_or_else(|| panic!("unknown server {to}")),
                request,
            },
            Step::Query => {
                let clerk = &mut self.clerks[c].master;
                // A query abandons nothing: the master clerk has no other call.
                let (to, request) = clerk
                    .begin(shardmaster::Command::Query { num: None })
                    .unwrap_or_else(|e| panic!("{e}"));
                Stage::Master { to, request }
            }
        }
    }

    /// True if clerk `c` has no call in progress.
    pub fn idle(&self, c: usize) -> bool {
        self.clerks[c].call.is_none()
    }

    /// The answer to clerk `c`'s last key operation, once it arrived.
    pub fn take_result(&mut self, c: usize) -> Option<Reply> {
        match self.clerks[c].result.take() {
            Some(ClusterReply::Kv(reply)) => Some(reply),
            _ => None,
        }
    }

    /// The answer to clerk `c`'s last shard-master command, once it arrived.
    pub fn take_admin_result(&mut self, c: usize) -> Option<shardmaster::Reply> {
        match self.clerks[c].result.take() {
            Some(ClusterReply::Master(reply)) => Some(reply),
            _ => None,
        }
    }

    /// Runs `duration` of virtual time, delivering answers and retrying failed calls.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.sim.now() + duration;
        while self.sim.now() < end {
            let step = POLL.min(end - self.sim.now());
            self.sim.run_for(step);
            self.drain_events();
            self.retry_due();
            self.churn();
        }
    }

    /// Restarts churned replicas that are due and crashes another when it is time.
    fn churn(&mut self) {
        let Some(mut churn) = self.churn.take() else {
            return;
        };
        let now = self.sim.now();
        let due: Vec<usize> = churn
            .down
            .iter()
            .filter(|(_, &at)| at <= now)
            .map(|(&i, _)| i)
            .collect();
        for i in due {
            churn.down.remove(&i);
            if !self.sim.is_up(i) && !self.killed[i] {
                self.sim.restart(i);
            }
        }
        if now >= churn.next {
            churn.next = now + Duration::from_millis(churn.rng.range(200, 700));
            let groups = self.layout().groups.len();
            let g = churn.rng.below(groups as u64) as usize;
            let nodes = self.group_nodes(g);
            if nodes.iter().all(|&i| self.sim.is_up(i)) {
                let i = nodes[churn.rng.below(nodes.len() as u64) as usize];
                let torn = if churn.rng.chance(0.5) {
                    kv_engine::fs::Torn::Prefix(churn.rng.next_u64())
                } else {
                    kv_engine::fs::Torn::None
                };
                self.sim.crash(i, torn);
                churn.crashes += 1;
                let back = now + Duration::from_millis(churn.rng.range(100, 1000));
                churn.down.insert(i, back);
            }
        }
        self.churn = Some(churn);
    }

    /// Stops the churn, restarts every replica it left down, and returns how many crashes
    /// it caused (0 without churn).
    pub fn stop_churn(&mut self) -> u32 {
        let Some(churn) = self.churn.take() else {
            return 0;
        };
        for i in churn.down.keys() {
            if !self.sim.is_up(*i) && !self.killed[*i] {
                self.sim.restart(*i);
            }
        }
        churn.crashes
    }

    /// Runs until every clerk in `clerks` is idle or `limit` passes; true if they are.
    pub fn wait(&mut self, clerks: &[usize], limit: Duration) -> bool {
        self.wait_idle(clerks, limit)
    }

    /// Runs `op` on clerk `c` and waits up to `limit` for the answer.
    pub fn call(&mut self, c: usize, op: Op, limit: Duration) -> Option<Reply> {
        match self.call_within(c, WorldCall::Kv(op), limit)? {
            ClusterReply::Kv(reply) => Some(reply),
            other => panic!(
                "seed {}: a key operation answered {other:?}",
                self.sim.seed()
            ),
        }
    }

    /// Runs `op` on clerk `c`; panics (with the seed) if no answer within [`OP_LIMIT`](super::script::OP_LIMIT).
    pub fn must(&mut self, c: usize, op: Op) -> Reply {
        self.must_kv(c, op)
    }

    /// Runs a shard-master command through the admin clerk; panics if unanswered within
    /// [`OP_LIMIT`].
    pub fn admin(&mut self, command: shardmaster::Command) -> shardmaster::Reply {
        let c = self.admin;
        match self.must_answer(c, WorldCall::Admin(command)) {
            ClusterReply::Master(reply) => reply,
            other => panic!(
                "seed {}: an admin command answered {other:?}",
                self.sim.seed()
            ),
        }
    }

    /// Joins group `g` (by index in the layout).
    pub fn join(&mut self, g: usize) {
        let group = self.gid(g);
        let servers = self.layout().servers(g);
        self.admin(shardmaster::Command::Join { group, servers });
    }

    /// Group `g` leaves.
    pub fn leave(&mut self, g: usize) {
        let group = self.gid(g);
        self.admin(shardmaster::Command::Leave { group });
    }

    /// Moves `shard` to group `g`.
    pub fn move_shard(&mut self, shard: u32, g: usize) {
        let group = self.gid(g);
        self.admin(shardmaster::Command::Move {
            shard: ShardId(shard),
            group,
        });
    }

    /// The latest configuration.
    pub fn query(&mut self) -> Arc<Config> {
        match self.admin(shardmaster::Command::Query { num: None }) {
            shardmaster::Reply::Config(config) => config,
            other => panic!("seed {}: Query answered {other:?}", self.sim.seed()),
        }
    }

    /// The lab's unreliable mode for node `i` (client requests and replies too).
    pub fn set_unreliable(&mut self, i: usize, on: bool) {
        self.unreliable[i] = on;
        self.sim.set_unreliable(i, on);
    }

    /// The lab's deleted socket file: node `i` takes no requests from clients or nodes.
    pub fn set_unreachable(&mut self, i: usize, on: bool) {
        self.unreachable[i] = on;
        self.sim.set_deaf(i, on);
    }

    /// Crashes node `i` for good (its disk keeps what was synced; churn leaves it down).
    pub fn kill(&mut self, i: usize) {
        self.killed[i] = true;
        if self.sim.is_up(i) {
            self.sim.crash(i, kv_engine::fs::Torn::None);
        }
    }

    /// The shard groups' replicas that are up, with their state.
    pub fn kv_nodes(&self) -> Vec<(usize, &ShardKvNode)> {
        (0..self.sim.len())
            .filter_map(|i| self.sim.node(i).and_then(|n| n.kv()).map(|k| (i, k)))
            .collect()
    }

    /// Pins the order of the Appends on `key` by the lengths they reported, given its final
    /// `value` (see [`super::kv::KvCluster::pin_appends`]).
    pub fn pin_appends(&self, key: &str, value: &[u8]) {
        super::kv::pin_appends(
            &self.history,
            &self.completions,
            key,
            value,
            self.sim.seed(),
        );
    }

    /// Checks the history for linearizability; panics with the seed if it is not.
    pub fn check_linearizable(&self) {
        let verdict = linearizability::check(&self.history, Budget::DEFAULT);
        assert_eq!(
            verdict,
            CheckResult::Ok,
            "seed {}: {verdict}",
            self.sim.seed()
        );
    }

    /// True once every up replica of every group has applied configuration `num`, holds
    /// every shard it was given, keeps no old copy, and has applied what the other replicas
    /// of its group applied.
    pub fn settled(&self, num: ConfigNum) -> bool {
        let machines_done = self.kv_nodes().iter().all(|(_, n)| {
            let m = n.machine();
            m.config().num() == num && m.pulling().is_empty() && m.leaving().is_empty()
        });
        machines_done
            && (0..self.layout().groups.len()).all(|g| {
                let digests: Vec<(Seq, u64)> = self
                    .group_nodes(g)
                    .into_iter()
                    .filter_map(|i| self.sim.node(i).map(|n| n.applied_digest()))
                    .collect();
                digests.windows(2).all(|w| w[0] == w[1])
            })
    }

    /// Runs until [`ShardWorld::settled`] on the shard master's latest configuration (or
    /// `limit`); true if it did.
    pub fn wait_settled(&mut self, limit: Duration) -> bool {
        let num = self.query().num();
        let end = self.sim.now() + limit;
        loop {
            if self.settled(num) {
                return true;
            }
            if self.sim.now() >= end {
                return false;
            }
            self.run_for(Duration::from_millis(10));
        }
    }

    /// Panics unless the world is settled on configuration `config`: every shard is served
    /// by its owner's replicas and no other replica holds any of its data, and each group's
    /// replicas hold equal data.
    pub fn assert_settled(&self, config: &Config) {
        let seed = self.sim.seed();
        for (i, node) in self.kv_nodes() {
            let m = node.machine();
            assert_eq!(
                m.config().num(),
                config.num(),
                "seed {seed}: n{i} is not at the latest configuration"
            );
            for shard in m.sharding().all() {
                let owner = config.owner(shard).unwrap_or(GroupId::NONE);
                let mine = owner == m.group();
                assert_eq!(
                    m.serves(shard),
                    mine,
                    "seed {seed}: n{i} of {} serves shard {shard}: {}, owner {owner}",
                    m.group(),
                    m.serves(shard)
                );
                if !mine && owner != GroupId::NONE {
                    assert!(
                        !m.kv().holds(shard),
                        "seed {seed}: n{i} of {} still holds shard {shard} of {owner}",
                        m.group()
                    );
                }
            }
            assert!(m.leaving().is_empty(), "seed {seed}: n{i} keeps old copies");
        }
        for g in 0..self.layout().groups.len() {
            let images: Vec<(usize, Vec<Vec<u8>>)> = self
                .group_nodes(g)
                .into_iter()
                .filter_map(|i| {
                    let n = self.sim.node(i)?.kv()?;
                    Some((i, n.machine().kv().image_bytes()))
                })
                .collect();
            for pair in images.windows(2) {
                assert!(
                    pair[0].1 == pair[1].1,
                    "seed {seed}: n{} and n{} of group {g} hold different data",
                    pair[0].0,
                    pair[1].0
                );
            }
        }
    }

    fn send(&mut self, c: usize) {
        let now = self.sim.now();
        let tag = self.next_tag;
        self.next_tag += 1;
        let retry_timeout = self.retry_timeout;
        let Some(call) = self.clerks[c].call.as_mut() else {
            return;
        };
        call.tag = tag;
        call.retry_at = now + retry_timeout;
        let (to, request) = match &call.stage {
            Stage::Kv { to, request } => (*to, ClusterRequest::Kv(request.clone())),
            Stage::Master { to, request } => (*to, ClusterRequest::Master(request.clone())),
        };
        self.tags.insert(tag, c);
        let i = to.index();
        let lost = self.unreliable[i] && self.rng.chance(UNRELIABLE_REQUEST_LOSS);
        if !self.sim.is_up(i) || self.unreachable[i] || lost {
            if let Some(call) = self.clerks[c].call.as_mut() {
                call.retry_at = now + REDIAL;
            }
            return;
        }
        // An answer the node gives at once (a read under a lease, a refusal) is taken at
        // the next poll, not here: a clerk bouncing between a group that refuses the key
        // and a shard master that answers at once would otherwise spin at one instant.
        self.sim
            .call(i, |node, now, out| node.on_request(now, tag, request, out));
    }

    /// Takes the answers the nodes gave so far. Answers given while these are handled
    /// (calls they lead to) wait for the next poll.
    fn drain_events(&mut self) {
        let seed = self.sim.seed();
        let events = std::mem::take(&mut self.sim.host_mut().events);
        for (node, event) in events {
            let (unreliable, rng) = (self.unreliable[node.index()], &mut self.rng);
            let lost = || unreliable && rng.chance(UNRELIABLE_REPLY_LOSS);
            let answer = ClusterNode::answer(&event);
            match route(&mut self.tags, node, answer, lost, seed) {
                Some(Routed::Reply {
                    tag,
                    call: c,
                    reply,
                }) if self.clerks[c]
                    .call
                    .as_ref()
                    .is_some_and(|call| call.tag == tag) =>
                {
                    self.on_answer(c, reply)
                }
                Some(Routed::Failed { tag, call: c }) => self.fail_if_current(c, tag),
                Some(Routed::Reply { .. }) | None => {}
            }
        }
    }

    fn fail_if_current(&mut self, c: usize, tag: u64) {
        let now = self.sim.now();
        if let Some(call) = self.clerks[c].call.as_mut() {
            if call.tag == tag {
                call.retry_at = now;
            }
        }
    }

    fn on_answer(&mut self, c: usize, reply: ClusterReply) {
        let seed = self.sim.seed();
        let Some(call) = self.clerks[c].call.as_ref() else {
            return;
        };
        match (&call.job, &call.stage, reply) {
            (Job::Admin, Stage::Master { request, .. }, ClusterReply::Master(reply)) => {
                let seq = request.seq;
                if let Some(reply) = self.clerks[c].master.on_reply(seq, reply) {
                    self.clerks[c].call = None;
                    self.clerks[c].result = Some(ClusterReply::Master(reply));
                }
            }
            (Job::Kv(_), Stage::Master { request, .. }, ClusterReply::Master(reply)) => {
                let seq = request.seq;
                let Some(reply) = self.clerks[c].master.on_reply(seq, reply) else {
                    return;
                };
                let shardmaster::Reply::Config(config) = reply else {
                    panic!("seed {seed}: a query answered {reply:?}");
                };
                if let Some(step) = self.clerks[c].kv.on_config(config) {
                    self.next_stage(c, step);
                }
            }
            (Job::Kv(op), Stage::Kv { request, .. }, ClusterReply::Kv(reply)) => {
                let op = op.clone();
                let seq = request.seq;
                match self.clerks[c].kv.on_reply(seq, reply) {
                    Ok(Some(reply)) => self.complete(c, &op, reply),
                    Ok(None) => {}
                    Err(step) => self.next_stage(c, step),
                }
            }
            (job, _, reply) => panic!("seed {seed}: clerk {c} doing {job:?} got {reply:?}"),
        }
    }

    fn next_stage(&mut self, c: usize, step: Step) {
        let stage = self.stage_for(c, step);
        if let Some(call) = self.clerks[c].call.as_mut() {
            call.stage = stage;
        }
        self.send(c);
    }

    fn complete(&mut self, c: usize, op: &Op, reply: Reply) {
        let seed = self.sim.seed();
        let now = self.sim.now();
        let Some(mut call) = self.clerks[c].call.take() else {
            return;
        };
        let Some(output) = super::kv::output_of(&reply) else {
            panic!("seed {seed}: clerk {c} got {reply:?} for {op:?}")
        };
        if let Some(invocation) = call.invocation.take() {
            self.history.complete(invocation, output, now.as_micros());
        }
        if self.record && super::kv::is_append(op, &reply) {
            // Kept as the kv group keeps it: a request of one op.
            self.completions.push(Completion {
                client: self.clerks[c].kv.client(),
                command: Batch::one(op.clone()),
                reply: reply.clone(),
                invoked: call.invoked,
                returned: now,
            });
        }
        self.clerks[c].result = Some(ClusterReply::Kv(reply));
    }

    fn retry_due(&mut self) {
        let now = self.sim.now();
        for c in 0..self.clerks.len() {
            let Some(call) = self.clerks[c].call.as_ref() else {
                continue;
            };
            let to = match &call.stage {
                Stage::Kv { to, .. } | Stage::Master { to, .. } => *to,
            };
            if call.retry_at > now && self.sim.is_up(to.index()) {
                continue;
            }
            let step = match &call.stage {
                Stage::Kv { .. } => self.clerks[c].kv.on_failure().map(|s| self.stage_for(c, s)),
                Stage::Master { .. } => self.clerks[c]
                    .master
                    .on_failure()
                    .map(|(to, request)| Stage::Master { to, request }),
            };
            match step {
                Some(stage) => {
                    if let Some(call) = self.clerks[c].call.as_mut() {
                        call.stage = stage;
                    }
                    self.send(c);
                }
                None => {
                    // The master clerk had nothing outstanding: a stale state; start over.
                    if let Some(call) = self.clerks[c].call.as_mut() {
                        call.retry_at = now + self.retry_timeout;
                    }
                }
            }
        }
    }
}

/// A key of the lab's tests as bytes.
pub fn key(k: &str) -> Bytes {
    Bytes::copy_from_slice(k.as_bytes())
}

/// What a world script asks a clerk to do.
#[derive(Debug, Clone)]
pub enum WorldCall {
    /// A key operation.
    Kv(Op),
    /// A shard-master command (an administrator's Join, Leave, Move or Query).
    Admin(shardmaster::Command),
}

use super::script::{route, Routed};
pub use super::script::{Harness, Script};
/// What a world client script does next.
pub type Action = super::script::Action<WorldCall>;
/// Concurrent world client scripts.
pub type Scripts = super::script::Scripts<ShardWorld>;

impl Harness for ShardWorld {
    type Call = WorldCall;
    type Answer = ClusterReply;

    fn now(&self) -> Time {
        self.sim.now()
    }

    fn start(&mut self, clerk: usize, call: WorldCall) {
        match call {
            WorldCall::Kv(op) => self.begin(clerk, op),
            WorldCall::Admin(command) => self.begin_admin(clerk, command),
        }
    }

    fn idle(&self, clerk: usize) -> bool {
        ShardWorld::idle(self, clerk)
    }

    fn answer(&mut self, clerk: usize) -> Option<ClusterReply> {
        self.clerks[clerk].result.take()
    }

    fn run_for(&mut self, duration: Duration) {
        ShardWorld::run_for(self, duration)
    }

    fn seed(&self) -> u64 {
        self.sim.seed()
    }
}

impl KvCalls for ShardWorld {
    fn must_kv(&mut self, c: usize, op: Op) -> Reply {
        match self.must_answer(c, WorldCall::Kv(op)) {
            ClusterReply::Kv(reply) => reply,
            other => panic!(
                "seed {}: a key operation answered {other:?}",
                self.sim.seed()
            ),
        }
    }
}

impl ShardWorld {
    /// Runs `scripts` for up to `duration`, returning early once all finished; true if
    /// they did.
    pub fn drive(&mut self, scripts: &mut Scripts, duration: Duration) -> bool {
        scripts.drive(self, duration)
    }
}

impl super::group_sweep::Faulted for ShardWorld {
    fn nodes(&self) -> usize {
        self.sim.len()
    }

    fn cohort(&self, i: usize) -> Vec<usize> {
        match self.layout().group_of(NodeId(i as u32)) {
            Some(g) => self.group_nodes(g),
            None => self.master_nodes(),
        }
    }

    fn sim_mut(&mut self) -> &mut dyn super::group_sweep::Faultable {
        &mut self.sim
    }

    fn sim_ref(&self) -> &dyn super::group_sweep::Faultable {
        &self.sim
    }

    fn set_unreliable(&mut self, i: usize, on: bool) {
        ShardWorld::set_unreliable(self, i, on)
    }

    fn started(&self, i: usize) -> Option<(u64, u64)> {
        let node = self.sim.node(i).filter(|n| n.is_ready())?;
        let status = node.replica_status();
        Some((status.incarnation, status.boots))
    }

    fn knows_later_start(
        &self,
        observer: usize,
        node: usize,
        incarnation: u64,
        boots: u64,
    ) -> bool {
        let Some(member) = self.cohort(node).iter().position(|&j| j == node) else {
            return false;
        };
        self.sim
            .node(observer)
            .and_then(|n| n.peer_memory(member))
            .is_some_and(|m| super::group_sweep::later_start(&m, incarnation, boots))
    }
}
