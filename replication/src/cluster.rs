//! A node of a sharded cluster, whatever it runs: [`ClusterNode`] is a shard-master replica
//! (served, so shard groups reach it with messages) or a shard group's replica
//! ([`ShardKvNode`]), with one message, request, reply and event type for both. The
//! simulator's sharded world and the server's multi-group processes drive the same type.
//!
//! # Addressing
//! Every replica of every group is an *endpoint* with its own [`NodeId`], as the
//! [`Layout`] numbers them: the shard master's replicas first (`0..masters`, so their
//! member indexes are their ids), then each group's replicas in member order.
//! Configurations name servers `n<endpoint>` ([`server_name`], [`resolve`]). A process
//! that hosts several groups hosts several endpoints; where an endpoint lives is the
//! driver's business.

use std::sync::Arc;

use kv_engine::store::Recovered;
use serde::{Deserialize, Serialize};

use crate::effects::Effects;
use crate::node::{Answer, Node};
use crate::paxos::Seq;
use crate::replica::{self, Event, Replica, ReplicaConfig, Request};
use crate::served::{Served, ServedMsgOf};
use crate::shardkv::{self, ShardKvNode, ShardKvSettings, ShardKvSetup};
use crate::shardmaster::{self, GroupId, ShardMaster};
use crate::types::{NodeId, Time};
use kv_engine::kv::{Op, Reply, Sharding};

/// A shard-master replica that answers other nodes' calls.
pub type MasterNode = Served<Replica<ShardMaster>>;

/// A node of a sharded cluster.
pub enum ClusterNode {
    /// A shard-master replica.
    Master(Box<MasterNode>),
    /// A shard group's replica.
    Kv(Box<ShardKvNode>),
}

/// A message between endpoints of a sharded cluster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClusterMsg {
    /// To a shard-master replica.
    Master(ServedMsgOf<Replica<ShardMaster>>),
    /// To a shard group's replica.
    Kv(shardkv::Message),
}

/// A client request to an endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ClusterRequest {
    /// To the shard master.
    Master(shardmaster::Request),
    /// To a shard group.
    Kv(Request<Op>),
}

/// An answer from an endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ClusterReply {
    /// From the shard master.
    Master(shardmaster::Reply),
    /// From a shard group.
    Kv(Reply),
}

/// An upward notification of an endpoint.
#[derive(Clone, Debug)]
pub enum ClusterEvent {
    /// Of a shard-master replica.
    Master(shardmaster::Event),
    /// Of a shard group's replica.
    Kv(Event<Reply>),
}

/// What a call into a cluster node produces.
pub type ClusterEffects = Effects<ClusterMsg, ClusterEvent>;
type MasterEffects = Effects<ServedMsgOf<Replica<ShardMaster>>, shardmaster::Event>;

/// Where a master replica's message goes: its peers' traffic stays with the masters, its
/// answers go to the shard groups that called.
fn from_master(to: NodeId, msg: ServedMsgOf<Replica<ShardMaster>>) -> (NodeId, ClusterMsg) {
    match msg {
        crate::served::ServedMsg::Call(call) => {
            (to, ClusterMsg::Kv(shardkv::Message::Master(call)))
        }
        peer => (to, ClusterMsg::Master(peer)),
    }
}

/// Where a shard group's message goes: calls to the shard master go to its replicas.
fn from_kv(to: NodeId, msg: shardkv::Message) -> (NodeId, ClusterMsg) {
    match msg {
        shardkv::Message::Master(call) => {
            (to, ClusterMsg::Master(crate::served::ServedMsg::Call(call)))
        }
        other => (to, ClusterMsg::Kv(other)),
    }
}

/// How every endpoint of a cluster is built: the parts of its setup that are the same for
/// all of them.
#[derive(Clone, Debug)]
pub struct Blueprint {
    /// Which endpoints are which.
    pub layout: Layout,
    /// Shard-master replica configuration template (`me` and `peers` are filled in).
    pub master_config: ReplicaConfig,
    /// Shard-group replica configuration template.
    pub kv_config: ReplicaConfig,
    /// The groups' duties.
    pub settings: ShardKvSettings,
    /// Key to shard (its shard count is the shard master's).
    pub sharding: Sharding,
    /// Groups the shard master's initial state has joined, in order (after configuration
    /// 0, one configuration per Join), so a cluster starts with its groups serving. Part
    /// of every master replica's initial state, so it must never change for a cluster.
    pub initial_joins: Vec<(GroupId, Vec<String>)>,
}

impl Blueprint {
    /// Rebuilds endpoint `id` from what its store recovered (see [`Replica::recover`]).
    pub fn recover(
        &self,
        id: NodeId,
        recovered: Recovered,
        wiped: bool,
        seed: u64,
        now: Time,
    ) -> Result<ClusterNode, replica::Error> {
        match self.layout.group_of(id) {
            None => {
                let Some(member) = self.layout.masters.iter().position(|&m| m == id) else {
                    return Err(replica::Error::Corrupt(format!(
                        "{id} is not an endpoint of this cluster"
                    )));
                };
                let mut config = self.master_config.clone();
                config.me = NodeId(member as u32);
                config.paxos.me = config.me;
                config.peers = self.layout.masters.len();
                config.paxos.peers = config.peers;
                let shards = self.sharding.shards();
                let mut initial = ShardMaster::new(shards);
                for (group, servers) in &self.initial_joins {
                    initial.execute(&shardmaster::Command::Join {
                        group: *group,
                        servers: servers.clone(),
                    });
                }
                let replica = Replica::recover(config, initial, recovered, wiped, seed, now)?;
                let held = replica.machine().shard_count();
                if held != shards {
                    return Err(replica::Error::Corrupt(format!(
                        "the disk holds a shard master of {held} shards, the cluster has {shards}"
                    )));
                }
                Ok(ClusterNode::Master(Box::new(Served::new(replica))))
            }
            Some(g) => {
                let (group, members) = self.layout.groups[g].clone();
                let setup = ShardKvSetup {
                    group,
                    members,
                    masters: self.layout.masters.clone(),
                    sharding: self.sharding,
                    resolve: Arc::new(resolve),
                    settings: self.settings.clone(),
                };
                let node = ShardKvNode::recover(
                    setup,
                    id,
                    self.kv_config.clone(),
                    recovered,
                    wiped,
                    seed,
                    now,
                )?;
                Ok(ClusterNode::Kv(Box::new(node)))
            }
        }
    }
}

impl ClusterNode {
    fn run(
        &mut self,
        out: &mut ClusterEffects,
        master: impl FnOnce(&mut MasterNode, &mut MasterEffects),
        kv: impl FnOnce(&mut ShardKvNode, &mut shardkv::node::NodeEffects),
    ) {
        match self {
            ClusterNode::Master(n) => {
                let mut inner = Effects::new();
                master(n, &mut inner);
                inner.move_into(out, from_master, ClusterEvent::Master);
            }
            ClusterNode::Kv(n) => {
                let mut inner = Effects::new();
                kv(n, &mut inner);
                inner.move_into(out, from_kv, ClusterEvent::Kv);
            }
        }
    }

    /// The shard group replica, if this is one.
    pub fn kv(&self) -> Option<&ShardKvNode> {
        match self {
            ClusterNode::Kv(n) => Some(n),
            ClusterNode::Master(_) => None,
        }
    }

    /// The shard-master replica, if this is one.
    pub fn master(&self) -> Option<&Replica<ShardMaster>> {
        match self {
            ClusterNode::Master(n) => Some(n.inner()),
            ClusterNode::Kv(_) => None,
        }
    }

    /// Its replica's status.
    pub fn replica_status(&self) -> crate::replica::ReplicaStatus {
        match self {
            ClusterNode::Master(n) => n.inner().status(),
            ClusterNode::Kv(n) => n.replica().status(),
        }
    }

    /// What its replica knows of the replica with member index `member` in its group.
    pub fn peer_memory(&self, member: usize) -> Option<crate::replica::PeerMemory> {
        let peer = NodeId(member as u32);
        match self {
            ClusterNode::Master(n) => n.inner().peer_memory(peer),
            ClusterNode::Kv(n) => n.replica().peer_memory(peer),
        }
    }

    /// `(next instance to apply, digest)` of its replica.
    pub fn applied_digest(&self) -> (Seq, u64) {
        match self {
            ClusterNode::Master(n) => n.inner().applied_digest(),
            ClusterNode::Kv(n) => n.replica().applied_digest(),
        }
    }
}

impl Node for ClusterNode {
    type Msg = ClusterMsg;
    type Request = ClusterRequest;
    type Reply = ClusterReply;
    type Event = ClusterEvent;

    fn on_boot(&mut self, now: Time, out: &mut ClusterEffects) {
        self.run(out, |n, o| n.on_boot(now, o), |n, o| n.on_boot(now, o));
    }

    fn on_message(&mut self, now: Time, from: NodeId, msg: ClusterMsg, out: &mut ClusterEffects) {
        match (self, msg) {
            (ClusterNode::Master(n), ClusterMsg::Master(m)) => {
                let mut inner = Effects::new();
                n.on_message(now, from, m, &mut inner);
                inner.move_into(out, from_master, ClusterEvent::Master);
            }
            (ClusterNode::Kv(n), ClusterMsg::Kv(m)) => {
                let mut inner = Effects::new();
                n.on_message(now, from, m, &mut inner);
                inner.move_into(out, from_kv, ClusterEvent::Kv);
            }
            // Misaddressed: lost, as a message to the wrong kind of process would be.
            _ => {}
        }
    }

    fn on_request(
        &mut self,
        now: Time,
        tag: u64,
        request: ClusterRequest,
        out: &mut ClusterEffects,
    ) {
        match (self, request) {
            (ClusterNode::Master(n), ClusterRequest::Master(r)) => {
                let mut inner = Effects::new();
                n.on_request(now, tag, r, &mut inner);
                inner.move_into(out, from_master, ClusterEvent::Master);
            }
            (ClusterNode::Kv(n), ClusterRequest::Kv(r)) => {
                let mut inner = Effects::new();
                n.on_request(now, tag, r, &mut inner);
                inner.move_into(out, from_kv, ClusterEvent::Kv);
            }
            (ClusterNode::Master(_), ClusterRequest::Kv(_)) => out
                .events
                .push(ClusterEvent::Master(Event::Dropped { tag })),
            (ClusterNode::Kv(_), ClusterRequest::Master(_)) => {
                out.events.push(ClusterEvent::Kv(Event::Dropped { tag }))
            }
        }
    }

    fn on_tick(&mut self, now: Time, out: &mut ClusterEffects) {
        self.run(out, |n, o| n.on_tick(now, o), |n, o| n.on_tick(now, o));
    }

    fn hold(&mut self) {
        match self {
            ClusterNode::Master(n) => n.hold(),
            ClusterNode::Kv(n) => n.hold(),
        }
    }

    fn release(&mut self, now: Time, out: &mut ClusterEffects) {
        self.run(out, |n, o| n.release(now, o), |n, o| n.release(now, o));
    }

    fn answer(event: &ClusterEvent) -> Option<Answer<ClusterReply>> {
        let answer = match event {
            ClusterEvent::Master(e) => map_answer(MasterNode::answer(e)?, ClusterReply::Master),
            ClusterEvent::Kv(e) => map_answer(ShardKvNode::answer(e)?, ClusterReply::Kv),
        };
        Some(answer)
    }

    fn is_response(msg: &ClusterMsg) -> bool {
        match msg {
            ClusterMsg::Master(m) => MasterNode::is_response(m),
            ClusterMsg::Kv(m) => ShardKvNode::is_response(m),
        }
    }

    fn summarize(msg: &ClusterMsg) -> String {
        match msg {
            ClusterMsg::Master(m) => format!("sm:{}", MasterNode::summarize(m)),
            ClusterMsg::Kv(m) => ShardKvNode::summarize(m),
        }
    }

    fn wire_bytes(msg: &ClusterMsg) -> usize {
        match msg {
            ClusterMsg::Master(m) => MasterNode::wire_bytes(m),
            ClusterMsg::Kv(m) => ShardKvNode::wire_bytes(m),
        }
    }

    fn retained_bytes(&self) -> u64 {
        match self {
            ClusterNode::Master(n) => n.retained_bytes(),
            ClusterNode::Kv(n) => n.retained_bytes(),
        }
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        match self {
            ClusterNode::Master(n) => n.status(),
            ClusterNode::Kv(n) => n.status(),
        }
    }

    fn is_ready(&self) -> bool {
        match self {
            ClusterNode::Master(n) => n.is_ready(),
            ClusterNode::Kv(n) => n.is_ready(),
        }
    }

    fn leader(&self) -> Option<NodeId> {
        match self {
            ClusterNode::Master(n) => n.leader(),
            ClusterNode::Kv(n) => n.leader(),
        }
    }
}

fn map_answer<R>(answer: Answer<R>, f: impl FnOnce(R) -> ClusterReply) -> Answer<ClusterReply> {
    match answer {
        Answer::Reply { tag, reply } => Answer::Reply {
            tag,
            reply: f(reply),
        },
        Answer::Dropped { tag } => Answer::Dropped { tag },
        Answer::Halted { reason } => Answer::Halted { reason },
    }
}

/// Which nodes are which.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The shard master's replicas.
    pub masters: Vec<NodeId>,
    /// Each group and its replicas, in member order.
    pub groups: Vec<(GroupId, Vec<NodeId>)>,
}

impl Layout {
    /// `masters` shard-master replicas, then `groups` groups of `replicas` each, with ids
    /// `first_group, first_group + 1, ...`.
    pub fn new(masters: usize, groups: usize, replicas: usize, first_group: u64) -> Layout {
        let mut next = 0u32;
        let mut ids = |n: usize| -> Vec<NodeId> {
            let v = (next..next + n as u32).map(NodeId).collect();
            next += n as u32;
            v
        };
        let masters = ids(masters);
        let groups = (0..groups)
            .map(|g| (GroupId(first_group + g as u64), ids(replicas)))
            .collect();
        Layout { masters, groups }
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.masters.len() + self.groups.iter().map(|(_, m)| m.len()).sum::<usize>()
    }

    /// The group index of node `id`, or `None` for a shard-master replica.
    pub fn group_of(&self, id: NodeId) -> Option<usize> {
        self.groups.iter().position(|(_, m)| m.contains(&id))
    }

    /// The servers of group `g` as configurations name them.
    pub fn servers(&self, g: usize) -> Vec<String> {
        self.groups[g].1.iter().map(|n| server_name(*n)).collect()
    }
}

/// The name of node `id` in configurations.
pub fn server_name(id: NodeId) -> String {
    format!("n{}", id.0)
}

/// The node a server name stands for.
pub fn resolve(name: &str) -> Option<NodeId> {
    name.strip_prefix('n')?.parse().ok().map(NodeId)
}
