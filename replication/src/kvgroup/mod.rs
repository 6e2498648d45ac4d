//! A Paxos-replicated, persistent key-value group (Lab 3B + Lab 5 for one group): the
//! replica and clerk cores, sans IO.
//!
//! # Purpose
//!
//! A [`Replica`] owns one [`Paxos`](crate::paxos::Paxos) peer and one [`KvState`]. Clients
//! send it [`Request`]s (client id + sequence number + op); it batches the requests it holds
//! into one Paxos value per instance, with several instances in flight, applies decided
//! instances strictly in order, and answers each request with an [`Event::Reply`] once the
//! instance holding it is applied here. A [`Clerk`] is the client side: it tags requests,
//! keeps one outstanding, and retries across replicas until one answers.
//!
//! # Invariants
//!
//! - **Everything goes through the log.** Gets included: a replica answers a request only
//!   after applying a decided instance that holds it, so a replica in a minority, or a
//!   deposed leader, never answers a new request. (A re-sent *write* that was already
//!   executed is answered from the dedup table, which is the stored outcome of a logged
//!   execution.)
//! - **At most once.** Writes are deduplicated by `(client, seq)` in the replicated
//!   [`KvState`] dedup table, which travels in snapshots and state transfers. The table is
//!   bounded: when it holds more than [`DEDUP_CLIENTS_MAX`] clients, the client whose last
//!   write was applied longest ago is forgotten — a deterministic rule applied by every
//!   replica at the same log position. Gets are not recorded: a read re-executed at a later
//!   log position still returns a value the register held while the client was waiting.
//! - **Order.** Instances are applied in sequence; a replica calls Paxos `done` only for
//!   instances covered by a durable snapshot, so a crash never leaves the replica needing an
//!   instance that Paxos forgot.
//! - **Durability.** The replica's durable state is one combined snapshot (Paxos acceptor
//!   state + `KvState` + apply cursor + incarnations + fence) plus the WAL records after it
//!   (Paxos records, and this layer's own). Paxos's own snapshots are intercepted and
//!   replaced by combined ones, because a snapshot supersedes every earlier record.
//! - **Lost disk.** A replica whose disk was wiped neither votes, accepts, proposes nor
//!   reports state until it has rebuilt from a majority of *intact* peers (never counting
//!   itself; recovering peers never answer each other). It then adopts their most advanced
//!   applied state, raises its promise to the highest promise they reported, and, for every
//!   instance up to the highest they reported, takes part only with the acceptor state they
//!   reported (decided value, else highest-ballot accepted value), never with an empty
//!   memory. An incarnation vector on every Paxos message makes every proposer drop
//!   promises and acceptances from a peer's earlier incarnation (see [`replica`] for the
//!   argument).
//!
//! # Failure model
//!
//! Crashes lose unsynced writes (the driver's effects order keeps every reply behind the
//! durable state it depends on); messages may be lost, duplicated, delayed and reordered;
//! a minority of replicas may lose their disks at once. A majority losing its disks may
//! leave the group dead (the lab allows it). Undecodable values or messages from peers are
//! dropped, never panicked on.

pub mod clerk;
mod durable;
mod machine;
pub mod message;
pub mod replica;

pub use clerk::{Clerk, ClerkError};
pub use message::{Message, Report};
pub use replica::Replica;

use std::time::Duration;

use kv_engine::kv::Reply;

use crate::codec::CodecError;
use crate::effects::Effects;
use crate::paxos::{self, Ballot, Seq};
use crate::types::NodeId;

#[cfg(doc)]
use kv_engine::kv::{KvState, Request};

/// Most clients the dedup table remembers; beyond it, the least recently written client is
/// forgotten (deterministically, by log position). A constant, not a tunable: every replica
/// must apply the same rule or their states diverge.
pub const DEDUP_CLIENTS_MAX: usize = 10_000;

/// WAL record kind used by this layer (Paxos uses [`paxos::RECORD_KIND`]).
pub const RECORD_KIND: u8 = 2;

/// What a call into a replica produces.
pub type Output = Effects<Message, Event>;

/// Upward notifications of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The request the driver tagged `tag` was applied (or found already applied); this is
    /// its answer.
    Reply {
        /// The driver's tag from [`Replica::on_request`].
        tag: u64,
        /// The answer.
        reply: Reply,
    },
    /// The replica gave up on the request tagged `tag` without answering (it is rebuilding
    /// after a lost disk, a newer request of the same client replaced it, or its queue is
    /// full): the client should retry, here or elsewhere, with the same seq.
    Dropped {
        /// The driver's tag.
        tag: u64,
    },
}

/// A replica's role, for status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds phase 1 for a range of instances (the stable leader).
    Leader,
    /// Votes and forwards client requests to the leader.
    Follower,
    /// Rebuilding after a lost disk: takes no part in agreement.
    Recovering,
}

/// A snapshot of a replica's progress, for `kv admin status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The role.
    pub role: Role,
    /// The Paxos acceptor's promise.
    pub ballot: Ballot,
    /// The highest instance this replica has seen (Paxos `max()`).
    pub decided: Option<Seq>,
    /// The last applied instance.
    pub applied: Option<Seq>,
    /// Paxos `min()`: instances below it are forgotten.
    pub paxos_min: Seq,
    /// Keys held.
    pub keys: usize,
    /// Sum of key and value lengths held.
    pub live_bytes: u64,
    /// Client requests waiting for their instance to be applied.
    pub pending_requests: usize,
    /// This replica's incarnation (bumped on every lost-disk rebuild).
    pub incarnation: u64,
    /// After a lost-disk rebuild: the highest instance the rebuilding majority reported
    /// (up to it, this replica's acceptor state is the one they reported).
    pub fence: Option<Seq>,
    /// Clients in the dedup table.
    pub dedup_clients: usize,
}

/// Tunables of one replica. Durations are virtual time in the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// This replica.
    pub me: NodeId,
    /// Number of replicas; ids are `0..peers`.
    pub peers: usize,
    /// The Paxos peer's tunables (`me`, `peers` and `recovering` are set by the replica).
    pub paxos: paxos::Config,
    /// Most client requests in one Paxos value.
    pub batch_ops_max: usize,
    /// A batch stops growing once its requests' keys and values reach this many bytes (a
    /// single larger request still goes alone).
    pub batch_bytes_max: usize,
    /// Most instances this replica keeps started and undecided at once.
    pub inflight_max: usize,
    /// Most client requests held at once (beyond: [`Event::Dropped`]).
    pub pending_max: usize,
    /// How long requests forwarded to the presumed leader may stay unapplied before this
    /// replica proposes them itself.
    pub forward_timeout: Duration,
    /// How long the next instance to apply may stay undecided, while later ones are known,
    /// before this replica fetches decided instances from a peer.
    pub catchup_delay: Duration,
    /// How long the next instance to apply may stay undecided before this replica proposes a
    /// no-op there to fill a hole.
    pub hole_timeout: Duration,
    /// Most bytes of decided values in one fetch reply.
    pub fetch_bytes_max: usize,
    /// Snapshot when the log since the last snapshot exceeds both this and the size of the
    /// applied state's image (so snapshot cost stays proportional to the log written, and
    /// disk and memory to the live data).
    pub snapshot_log_bytes_min: u64,
    /// Snapshot once nothing was applied for this long and something changed since the
    /// last snapshot (so an idle group's disk shrinks to its live data).
    pub snapshot_idle: Duration,
    /// How often a rebuilding replica re-asks peers that have not answered.
    pub recovery_retry: Duration,
    /// How often a replica re-announces its Paxos `done` while `min()` lags behind it (Paxos
    /// itself says nothing while idle).
    pub gossip_interval: Duration,
}

impl ReplicaConfig {
    /// Defaults for replica `me` of `peers`.
    pub fn new(me: NodeId, peers: usize) -> ReplicaConfig {
        let mut paxos = paxos::Config::new(me, peers);
        // This layer owns snapshots (they must hold the key-value state too).
        paxos.snapshot_log_bytes_min = u64::MAX;
        ReplicaConfig {
            me,
            peers,
            paxos,
            batch_ops_max: 1024,
            batch_bytes_max: 1 << 20,
            inflight_max: 4,
            pending_max: 100_000,
            forward_timeout: Duration::from_millis(400),
            catchup_delay: Duration::from_millis(40),
            hole_timeout: Duration::from_millis(300),
            fetch_bytes_max: 1 << 20,
            snapshot_log_bytes_min: 64 * 1024,
            snapshot_idle: Duration::from_millis(200),
            recovery_retry: Duration::from_millis(100),
            gossip_interval: Duration::from_millis(500),
        }
    }

    /// Majority size of the group.
    pub fn majority(&self) -> usize {
        self.peers / 2 + 1
    }
}

/// Errors rebuilding a replica from its disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Paxos part of the durable state is bad.
    #[error("paxos state: {0}")]
    Paxos(#[from] paxos::Error),
    /// A record or snapshot did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The key-value part of the durable state is bad.
    #[error("key-value state: {0}")]
    State(#[from] kv_engine::Error),
    /// The durable state contradicts itself or the configuration.
    #[error("corrupt replica state: {0}")]
    Corrupt(String),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
