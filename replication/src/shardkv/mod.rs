//! Sharded kv groups (Lab 4B, and Lab 5 across groups): many replicated groups, each
//! serving the shards the shard master ([`crate::shardmaster`]) assigns it, handing shards
//! to each other — data and at-most-once entries — as configurations change.
//!
//! - [`machine`]: [`ShardKv`], the group's state machine (client operations,
//!   reconfigurations, shard pieces, releases), replicated by the library
//!   ([`crate::replica`]) like any other machine.
//! - [`clerk`]: [`ShardClerk`], the client: routes by configuration, retries the same
//!   request elsewhere.
//! - [`node`]: [`ShardKvNode`], a group's replica plus its duties in the cluster (polling
//!   the shard master, pulling arriving shards, releasing copies the new owner holds).
//!
//! Clients route each key to its shard's group with a configuration from the shard
//! master and retry elsewhere on [`kv_engine::kv::Reply::NotHeld`] (the lab's
//! `ErrWrongGroup`), with the same request: at-most-once holds across groups because the
//! entries travel with the shards.

pub mod clerk;
pub mod machine;
pub mod node;

pub use clerk::{ShardClerk, Step};
pub use machine::{Chunk, ChunkAnswer, Command, Position, ShardKv, ShardKvBuilder};
pub use node::{Message, Resolver, ShardKvNode, ShardKvSettings, ShardKvSetup};

#[cfg(test)]
mod tests;
