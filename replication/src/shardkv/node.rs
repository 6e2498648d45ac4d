//! A shard group's replica as a node: [`ShardKvNode`], the replication library's replica of
//! [`ShardKv`] plus the duties that make a group part of a sharded cluster.
//!
//! # Duties
//! Each duty is driven by the replicated state, so a restart, a leader change or a lost
//! message costs only time: the next replica to act reads from its applied state what is
//! still to do and does it again. Commands it proposes are idempotent
//! ([`super::machine`]), so doing a duty twice is harmless.
//!
//! - **Configurations.** Ask the shard master for configuration `n + 1` (the lab's tick);
//!   when it exists and every shard of `n` has arrived, propose
//!   [`Command::Reconfigure`].
//! - **Arriving shards.** For each shard still arriving, ask a server of the group that
//!   holds it for the next piece ([`Message::Pull`]) and propose it
//!   ([`Command::Install`]); one piece in flight per shard, the next asked once the last is
//!   applied.
//! - **Leaving copies.** For each frozen copy, ask the new owner whether it holds the shard
//!   ([`Message::Has`]); once it does, propose [`Command::Release`].
//! - **Answering other groups.** Any ready replica answers [`Message::Pull`] and
//!   [`Message::Has`] from its applied state (which is decided, so durable on a majority).
//!
//! The replica that believes it leads does the duties at once; the others do a duty only
//! once it has made no progress for [`ShardKvSettings::takeover`] (a leader that died, or
//! a group with no leader and no client traffic to elect one), so a healthy group's log
//! holds each command about once.
//!
//! # Addressing
//! The group's replica talks to its peers by member index (`0..members`); this node
//! translates to and from the cluster's [`NodeId`]s. Servers named in configurations are
//! resolved to node ids by the driver's [`Resolver`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kv_engine::kv::{Op, Reply, ShardId, Sharding};
use kv_engine::store::Recovered;
use serde::{Deserialize, Serialize};

use super::machine::{ChunkAnswer, Command, Position, ShardKv};
use crate::effects::Effects;
use crate::node::{Answer, Node};
use crate::replica::{self, Event, Replica, ReplicaConfig, Request};
use crate::rng::Rng;
use crate::served::Call;
use crate::shardmaster::{self, ConfigNum, GroupId};
use crate::timing::transfer_time;
use crate::types::{ClientId, NodeId, Time};

/// Maps a server name from a configuration to the node that runs it.
pub type Resolver = Arc<dyn Fn(&str) -> Option<NodeId> + Send + Sync>;

/// What shard-group nodes send each other (and the shard master).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Between replicas of one group.
    Group(replica::Message<Command>),
    /// A call to the shard master, or its answer.
    Master(Call<shardmaster::Request, shardmaster::Reply>),
    /// Asks a replica of `group` for the piece at `at` of the shard it gave away under
    /// `config`.
    Pull {
        /// The group asked.
        group: GroupId,
        /// The configuration that moved the shard.
        config: ConfigNum,
        /// The shard.
        shard: ShardId,
        /// Where the piece starts.
        at: Position,
    },
    /// The answer to [`Message::Pull`].
    Pulled {
        /// Echo.
        config: ConfigNum,
        /// Echo.
        shard: ShardId,
        /// Echo.
        at: Position,
        /// The piece, or why not.
        answer: ChunkAnswer,
    },
    /// Asks a replica of `group` whether it holds `shard` as configuration `config` gave it.
    Has {
        /// The group asked.
        group: GroupId,
        /// The configuration that moved the shard.
        config: ConfigNum,
        /// The shard.
        shard: ShardId,
    },
    /// The answer to [`Message::Has`].
    Holds {
        /// Echo.
        config: ConfigNum,
        /// Echo.
        shard: ShardId,
        /// Whether it holds it.
        yes: bool,
    },
}

impl Message {
    fn is_response(&self) -> bool {
        match self {
            Message::Group(m) => m.is_response(),
            Message::Master(call) => call.is_response(),
            Message::Pulled { .. } | Message::Holds { .. } => true,
            Message::Pull { .. } | Message::Has { .. } => false,
        }
    }

    fn summary(&self) -> String {
        match self {
            Message::Group(m) => m.summary(),
            Message::Master(Call::Request { tag, request }) => {
                format!("master-call#{tag} {:?}", request.command)
            }
            Message::Master(Call::Answer { tag, .. }) => format!("master-answer#{tag}"),
            Message::Master(Call::Dropped { tag }) => format!("master-dropped#{tag}"),
            Message::Pull {
                group,
                config,
                shard,
                at,
            } => format!("pull {group} {config} s{shard} {}", position(at)),
            Message::Pulled {
                config,
                shard,
                at,
                answer,
            } => {
                let what = match answer {
                    ChunkAnswer::Chunk(c) => format!(
                        "{} entries {} sessions last={}",
                        c.entries.len(),
                        c.sessions.len(),
                        c.next.is_none()
                    ),
                    ChunkAnswer::NotYet => "not-yet".into(),
                    ChunkAnswer::Gone => "gone".into(),
                };
                format!("pulled {config} s{shard} {} {what}", position(at))
            }
            Message::Has {
                group,
                config,
                shard,
            } => format!("has {group} {config} s{shard}"),
            Message::Holds { config, shard, yes } => format!("holds {config} s{shard} {yes}"),
        }
    }

    fn wire_bytes(&self) -> usize {
        match self {
            Message::Group(m) => m.wire_bytes(<ShardKv as replica::StateMachine>::command_bytes),
            Message::Pulled {
                answer: ChunkAnswer::Chunk(chunk),
                ..
            } => 64 + chunk.bytes(),
            _ => 256,
        }
    }
}

fn position(at: &Position) -> String {
    match at {
        Position::Entries(None) => "start".into(),
        Position::Entries(Some(key)) => format!("after-key({}B)", key.len()),
        Position::Sessions(None) => "sessions".into(),
        Position::Sessions(Some(c)) => format!("sessions-after({c})"),
    }
}

/// Timing and sizes of the duties.
#[derive(Debug, Clone)]
pub struct ShardKvSettings {
    /// How often the acting replica asks the shard master for the next configuration.
    pub poll: Duration,
    /// How long a duty may make no progress before a replica that does not lead takes it
    /// on.
    pub takeover: Duration,
    /// How long to wait for an answer from another group (plus the transfer time of a
    /// piece at [`ShardKvSettings::bandwidth`]) before asking again, elsewhere.
    pub retry: Duration,
    /// How often a leaving copy's new owner is asked whether it holds the shard.
    pub release_check: Duration,
    /// Bytes per piece of a moving shard (one entry at least).
    pub chunk_bytes: usize,
    /// The bandwidth assumed when waiting for a piece.
    pub bandwidth: u64,
}

impl Default for ShardKvSettings {
    fn default() -> Self {
        ShardKvSettings {
            poll: Duration::from_millis(100),
            takeover: Duration::from_millis(1000),
            retry: Duration::from_millis(300),
            release_check: Duration::from_millis(200),
            chunk_bytes: 1 << 20,
            bandwidth: 16 << 20,
        }
    }
}

/// Who a shard group is and whom it talks to.
#[derive(Clone)]
pub struct ShardKvSetup {
    /// The group.
    pub group: GroupId,
    /// Its replicas' nodes, in member order.
    pub members: Vec<NodeId>,
    /// The shard master's replicas.
    pub masters: Vec<NodeId>,
    /// How keys map to shards (the shard master's shard count).
    pub sharding: Sharding,
    /// Names in configurations to nodes.
    pub resolve: Resolver,
    /// Timing and sizes.
    pub settings: ShardKvSettings,
}

impl fmt::Debug for ShardKvSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardKvSetup")
            .field("group", &self.group)
            .field("members", &self.members)
            .field("masters", &self.masters)
            .field("sharding", &self.sharding)
            .finish()
    }
}

/// Progress of one duty: what it was waiting for, since when, and the last ask.
#[derive(Debug, Clone)]
struct Duty<K> {
    /// The state the duty last saw (a change is progress).
    mark: K,
    since: Time,
    asked: Option<Time>,
    target: usize,
}

impl<K: PartialEq> Duty<K> {
    fn new(mark: K, now: Time) -> Duty<K> {
        Duty {
            mark,
            since: now,
            asked: None,
            target: 0,
        }
    }

    /// Resets the duty if the state moved on.
    fn observe(&mut self, mark: K, now: Time) {
        if self.mark != mark {
            *self = Duty::new(mark, now);
        }
    }
}

/// A shard group's replica in a cluster. See the module docs.
pub struct ShardKvNode {
    replica: Replica<ShardKv>,
    setup: ShardKvSetup,
    me: NodeId,
    /// This node's client id at the shard master.
    master_client: ClientId,
    master_seq: u64,
    master_target: usize,
    next_tag: u64,
    config_duty: Duty<ConfigNum>,
    query: Option<(u64, Time)>,
    pulls: BTreeMap<ShardId, Duty<(ConfigNum, Position)>>,
    releases: BTreeMap<(ConfigNum, ShardId), Duty<()>>,
}

/// What a call into a shard-group node produces.
pub type NodeEffects = Effects<Message, Event<Reply>>;

impl ShardKvNode {
    /// Rebuilds member `me` (a node id of `setup.members`) from what its store recovered
    /// (see [`Replica::recover`]).
    pub fn recover(
        setup: ShardKvSetup,
        me: NodeId,
        mut config: ReplicaConfig,
        recovered: Recovered,
        wiped: bool,
        seed: u64,
        now: Time,
    ) -> Result<ShardKvNode, replica::Error> {
        let Some(local) = setup.members.iter().position(|&m| m == me) else {
            return Err(replica::Error::Corrupt(format!(
                "{me} is not a member of {}",
                setup.group
            )));
        };
        config.me = NodeId(local as u32);
        config.paxos.me = config.me;
        config.peers = setup.members.len();
        config.paxos.peers = config.peers;
        let initial = ShardKv::new(setup.group, setup.sharding);
        let replica = Replica::recover(config, initial, recovered, wiped, seed, now)?;
        if replica.machine().group() != setup.group {
            return Err(replica::Error::Corrupt(format!(
                "the disk holds a replica of {}, not of {}",
                replica.machine().group(),
                setup.group
            )));
        }
        let mut rng = Rng::new(seed ^ 0x5A4D_5A4D);
        let master_client = ClientId(rng.next_u64().max(1));
        let num = replica.machine().config().num();
        Ok(ShardKvNode {
            replica,
            me,
            master_client,
            master_seq: 0,
            master_target: rng.below(setup.masters.len().max(1) as u64) as usize,
            next_tag: 1,
            config_duty: Duty::new(num, now),
            query: None,
            pulls: BTreeMap::new(),
            releases: BTreeMap::new(),
            setup,
        })
    }

    /// The replica.
    pub fn replica(&self) -> &Replica<ShardKv> {
        &self.replica
    }

    /// The applied machine.
    pub fn machine(&self) -> &ShardKv {
        self.replica.machine()
    }

    /// The group.
    pub fn group(&self) -> GroupId {
        self.setup.group
    }

    fn local(&self, node: NodeId) -> Option<NodeId> {
        self.setup
            .members
            .iter()
            .position(|&m| m == node)
            .map(|i| NodeId(i as u32))
    }

    /// Runs `f` on the replica and moves its effects into `out`, addressed by node id.
    fn run(
        &mut self,
        out: &mut NodeEffects,
        f: impl FnOnce(&mut Replica<ShardKv>, &mut replica::Output<ShardKv>),
    ) {
        let mut inner = replica::Output::<ShardKv>::new();
        f(&mut self.replica, &mut inner);
        let members = &self.setup.members;
        inner.move_into(out, |to, m| (members[to.index()], Message::Group(m)), |e| e);
    }

    fn propose(&mut self, now: Time, command: Command, out: &mut NodeEffects) {
        self.run(out, |r, o| r.propose(now, command, o));
    }

    fn send(&mut self, out: &mut NodeEffects, to: NodeId, msg: Message) {
        if to != self.me {
            out.send.push((to, msg));
        }
    }

    fn tag(&mut self) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        tag
    }

    fn leads(&self) -> bool {
        self.replica.leader().is_some() && self.replica.leader() == self.local(self.me)
    }

    /// Whether to do a duty that has waited since `since`: at once when leading; when no
    /// leader is known, after a delay that grows with the member index (so one replica
    /// usually goes first); otherwise once the duty has stalled for the takeover time.
    fn acting(&self, now: Time, since: Time) -> bool {
        if self.leads() {
            return true;
        }
        let settings = &self.setup.settings;
        let stagger = match (self.replica.leader(), self.local(self.me)) {
            (None, Some(local)) => settings.poll * local.0,
            _ => settings.takeover,
        };
        now >= since + stagger
    }

    fn retry_after(&self) -> Duration {
        self.setup.settings.retry
            + transfer_time(
                self.setup.settings.chunk_bytes,
                self.setup.settings.bandwidth,
            )
    }

    /// Does whatever duty is due (see the module docs).
    fn duties(&mut self, now: Time, out: &mut NodeEffects) {
        if !self.replica.is_ready() {
            return;
        }
        self.config_duty_step(now, out);
        self.pull_duties(now, out);
        self.release_duties(now, out);
    }

    fn config_duty_step(&mut self, now: Time, out: &mut NodeEffects) {
        let machine = self.replica.machine();
        let num = machine.config().num();
        let idle = machine.pulling().is_empty();
        self.config_duty.observe(num, now);
        if !idle || !self.acting(now, self.config_duty.since) {
            return;
        }
        let settings = &self.setup.settings;
        let interval = if self.leads() {
            settings.poll
        } else {
            settings.takeover
        };
        if let Some((_, asked)) = self.query {
            if now < asked + self.setup.settings.retry {
                return;
            }
            // No answer: try the next master.
            self.master_target += 1;
            self.query = None;
        }
        if self.config_duty.asked.is_some_and(|at| now < at + interval) {
            return;
        }
        let masters = &self.setup.masters;
        if masters.is_empty() {
            return;
        }
        let to = masters[self.master_target % masters.len()];
        self.master_seq += 1;
        let request = Request {
            client: self.master_client,
            seq: self.master_seq,
            command: shardmaster::Command::Query {
                num: Some(num.next()),
            },
        };
        let tag = self.tag();
        self.query = Some((tag, now));
        self.config_duty.asked = Some(now);
        self.send(out, to, Message::Master(Call::Request { tag, request }));
    }

    fn on_master(
        &mut self,
        now: Time,
        call: Call<shardmaster::Request, shardmaster::Reply>,
        out: &mut NodeEffects,
    ) {
        let (tag, reply) = match call {
            Call::Answer { tag, reply } => (tag, Some(reply)),
            Call::Dropped { tag } => (tag, None),
            Call::Request { .. } => return,
        };
        if self.query.map(|(t, _)| t) != Some(tag) {
            return;
        }
        self.query = None;
        match reply {
            Some(shardmaster::Reply::Config(config)) => {
                if self.replica.is_ready() && self.replica.machine().wants(config.num()) {
                    self.propose(now, Command::Reconfigure(config), out);
                }
            }
            _ => {
                // Dropped or not an answer to a query: ask the next master.
                self.master_target += 1;
                self.config_duty.asked = None;
            }
        }
    }

    fn pull_duties(&mut self, now: Time, out: &mut NodeEffects) {
        let machine = self.replica.machine();
        let config = machine.config().num();
        let pulling: Vec<(ShardId, Position, Vec<String>, GroupId)> = machine
            .pulling()
            .iter()
            .map(|(s, p)| (*s, p.next.clone(), p.servers.clone(), p.from))
            .collect();
        self.pulls
            .retain(|s, _| pulling.iter().any(|(p, ..)| p == s));
        let retry = self.retry_after();
        for (shard, at, servers, from) in pulling {
            let duty = self
                .pulls
                .entry(shard)
                .or_insert_with(|| Duty::new((config, at.clone()), now));
            duty.observe((config, at.clone()), now);
            let since = duty.since;
            let asked = duty.asked;
            if !self.acting(now, since) || asked.is_some_and(|t| now < t + retry) {
                continue;
            }
            let Some(duty) = self.pulls.get_mut(&shard) else {
                continue;
            };
            if asked.is_some() {
                duty.target += 1;
            }
            duty.asked = Some(now);
            let target = duty.target;
            if let Some(to) = pick(&servers, target, &self.setup.resolve) {
                self.send(
                    out,
                    to,
                    Message::Pull {
                        group: from,
                        config,
                        shard,
                        at,
                    },
                );
            }
        }
    }

    fn on_pulled(
        &mut self,
        now: Time,
        config: ConfigNum,
        shard: ShardId,
        at: Position,
        answer: ChunkAnswer,
        out: &mut NodeEffects,
    ) {
        let machine = self.replica.machine();
        let current = machine.config().num() == config
            && machine.pulling().get(&shard).is_some_and(|p| p.next == at);
        if !current {
            return;
        }
        match answer {
            ChunkAnswer::Chunk(chunk) => {
                self.propose(
                    now,
                    Command::Install {
                        config,
                        shard,
                        chunk,
                    },
                    out,
                );
            }
            ChunkAnswer::NotYet | ChunkAnswer::Gone => {
                // Ask another replica of the holder at the next tick.
                if let Some(duty) = self.pulls.get_mut(&shard) {
                    duty.target += 1;
                    duty.asked = None;
                }
            }
        }
    }

    fn release_duties(&mut self, now: Time, out: &mut NodeEffects) {
        let leaving: Vec<((ConfigNum, ShardId), GroupId, Vec<String>)> = self
            .replica
            .machine()
            .leaving()
            .iter()
            .map(|(k, l)| (*k, l.to, l.servers.clone()))
            .collect();
        self.releases
            .retain(|k, _| leaving.iter().any(|(l, ..)| l == k));
        let interval = self.setup.settings.release_check;
        for (key, to, servers) in leaving {
            let duty = self
                .releases
                .entry(key)
                .or_insert_with(|| Duty::new((), now));
            let since = duty.since;
            let asked = duty.asked;
            if !self.acting(now, since) || asked.is_some_and(|t| now < t + interval) {
                continue;
            }
            let Some(duty) = self.releases.get_mut(&key) else {
                continue;
            };
            if asked.is_some() {
                duty.target += 1;
            }
            duty.asked = Some(now);
            let target = duty.target;
            if let Some(node) = pick(&servers, target, &self.setup.resolve) {
                self.send(
                    out,
                    node,
                    Message::Has {
                        group: to,
                        config: key.0,
                        shard: key.1,
                    },
                );
            }
        }
    }

    fn on_holds(
        &mut self,
        now: Time,
        config: ConfigNum,
        shard: ShardId,
        yes: bool,
        out: &mut NodeEffects,
    ) {
        if !self
            .replica
            .machine()
            .leaving()
            .contains_key(&(config, shard))
        {
            return;
        }
        if yes {
            self.propose(now, Command::Release { config, shard }, out);
        }
    }

    /// Answers another group's [`Message::Pull`] or [`Message::Has`] from the applied state.
    fn answer_group(&mut self, from: NodeId, msg: Message, out: &mut NodeEffects) {
        if !self.replica.is_ready() {
            return;
        }
        let machine = self.replica.machine();
        let answer = match msg {
            Message::Pull {
                group,
                config,
                shard,
                at,
            } if group == machine.group() => {
                let answer = machine.chunk(config, shard, &at, self.setup.settings.chunk_bytes);
                Message::Pulled {
                    config,
                    shard,
                    at,
                    answer,
                }
            }
            Message::Has {
                group,
                config,
                shard,
            } if group == machine.group() => Message::Holds {
                config,
                shard,
                yes: machine.has_received(config, shard),
            },
            _ => return,
        };
        self.send(out, from, answer);
    }
}

/// The node of server `target` (round robin) of `servers`.
fn pick(servers: &[String], target: usize, resolve: &Resolver) -> Option<NodeId> {
    if servers.is_empty() {
        return None;
    }
    resolve(&servers[target % servers.len()])
}

impl Node for ShardKvNode {
    type Msg = Message;
    type Request = Request<Op>;
    type Reply = Reply;
    type Event = Event<Reply>;

    fn on_boot(&mut self, now: Time, out: &mut NodeEffects) {
        self.run(out, |r, o| r.on_boot(now, o));
    }

    fn on_message(&mut self, now: Time, from: NodeId, msg: Message, out: &mut NodeEffects) {
        match msg {
            Message::Group(m) => {
                if let Some(local) = self.local(from) {
                    self.run(out, |r, o| r.on_message(now, local, m, o));
                }
            }
            Message::Master(call) => self.on_master(now, call, out),
            msg @ (Message::Pull { .. } | Message::Has { .. }) => self.answer_group(from, msg, out),
            Message::Pulled {
                config,
                shard,
                at,
                answer,
            } => self.on_pulled(now, config, shard, at, answer, out),
            Message::Holds { config, shard, yes } => self.on_holds(now, config, shard, yes, out),
        }
    }

    fn on_request(&mut self, now: Time, tag: u64, request: Request<Op>, out: &mut NodeEffects) {
        let request = Request {
            client: request.client,
            seq: request.seq,
            command: Command::Op(request.command),
        };
        self.run(out, |r, o| r.on_request(now, tag, request, o));
    }

    fn on_tick(&mut self, now: Time, out: &mut NodeEffects) {
        self.run(out, |r, o| r.on_tick(now, o));
        self.duties(now, out);
    }

    fn hold(&mut self) {
        self.replica.hold();
    }

    fn release(&mut self, now: Time, out: &mut NodeEffects) {
        self.run(out, |r, o| r.release(now, o));
    }

    fn answer(event: &Event<Reply>) -> Option<Answer<Reply>> {
        <Replica<ShardKv> as Node>::answer(event)
    }

    fn is_response(msg: &Message) -> bool {
        msg.is_response()
    }

    fn summarize(msg: &Message) -> String {
        msg.summary()
    }

    fn wire_bytes(msg: &Message) -> usize {
        msg.wire_bytes()
    }

    fn retained_bytes(&self) -> u64 {
        self.replica.retained_bytes()
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        self.replica.status().fields()
    }

    fn is_ready(&self) -> bool {
        self.replica.is_ready()
    }

    fn leader(&self) -> Option<NodeId> {
        self.replica
            .leader()
            .and_then(|l| self.setup.members.get(l.index()).copied())
    }
}
