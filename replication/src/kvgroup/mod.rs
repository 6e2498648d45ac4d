//! The kv group (Lab 3B + Lab 5 for one group): [`KvState`] replicated by the library in
//! [`crate::replica`]. Clients send [`Request`]s, each carrying a [`Batch`] of [`Op`]s
//! (one, or the commands a client pipelined); the group applies them in log order, at
//! most once per `(client, seq)`, and answers with a [`Reply`] ([`Reply::Batch`]: one per
//! op). A
//! [`Clerk`] (the library's, [`crate::clerk`]) is the client side: it tags requests, keeps
//! one outstanding, and retries across replicas until one answers.
//!
//! Everything but the machine itself — batching, the Paxos link, catch-up, compaction,
//! lost-disk rebuild, the restart check, the at-most-once table — is the library's; see its
//! docs for the invariants and the failure model.

mod batch;
mod machine;

pub use crate::clerk::ClerkError;
pub use batch::{
    Batch, BatchBuilder, BatchError, BATCH_BYTES_MAX, BATCH_READS_MAX, BATCH_WRITES_MAX,
};
pub use machine::KvBuilder;

#[cfg(doc)]
use kv_engine::kv::Op;
use kv_engine::kv::{KvState, Reply, Sharding};

use crate::replica;

pub use crate::replica::{Error, ReplicaConfig, ReplicaStatus, Role};

/// How a kv group's state splits keys into shards: [`KvState::new`]'s, every shard held.
/// Nothing moves between shards in a group; a scan of every key walks these shards.
pub const SHARDING: Sharding = Sharding::LAB;

/// One replica of a kv group.
pub type Replica = replica::Replica<KvState>;
/// A message between kv replicas.
pub type Message = replica::Message<Batch>;
/// An upward notification of a kv replica.
pub type Event = replica::Event<Reply>;
/// What a call into a kv replica produces.
pub type Output = replica::Output<KvState>;
/// A client's request to a kv group.
pub type Request = replica::Request<Batch>;
/// A client of a kv group.
pub type Clerk = crate::clerk::Clerk<Batch>;
