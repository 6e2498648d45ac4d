//! The shard master (Lab 4A): a replicated group whose state is the numbered list of
//! configurations — which replica group serves each shard — changed by Join, Leave and
//! Move and read by Query, all through the log.
//!
//! [`ShardMaster`] is the state machine ([`machine`]); [`Config`] and the even,
//! minimal-movement, deterministic [`rebalance`] rule are in [`config`]. Everything else —
//! batching, the Paxos link, catch-up, compaction, lost-disk rebuild, at-most-once — is the
//! replication library's ([`crate::replica`]), shared with the kv group; see its docs for
//! the invariants and the failure model. Clients use the library's [`Clerk`].
//!
//! The number of shards is the machine's const parameter (the lab's 10 by default,
//! [`LAB_SHARDS`]): it is part of the replicated state's type, so replicas cannot disagree
//! on it, and an image of another count is refused. Everything below the machine
//! ([`Config`], [`rebalance`]) works with any count.
//!
//! The lab's clerk sends Query(-1); here that is `Query { num: None }`.

pub mod config;
pub mod machine;

pub use config::{rebalance, Config, ConfigNum, GroupId};
pub use machine::{
    Command, ImageError, Refusal, Reply, ShardMaster, ShardMasterBuilder, CONFIGS_PER_PIECE_MAX,
    GROUPS_MAX, LAB_SHARDS, SERVERS_PER_GROUP_MAX, SERVER_NAME_BYTES_MAX, SHARDS_MAX,
};

use crate::replica;

/// One replica of the lab's shard master (10 shards).
pub type Replica = replica::Replica<ShardMaster>;
/// A message between shard-master replicas.
pub type Message = replica::Message<Command>;
/// An upward notification of a shard-master replica.
pub type Event = replica::Event<Reply>;
/// What a call into a shard-master replica produces.
pub type Output = replica::Output<ShardMaster>;
/// A client's request to the shard master.
pub type Request = replica::Request<Command>;
/// A client of the shard master.
pub type Clerk = crate::clerk::Clerk<Command>;

#[cfg(test)]
mod tests;
