//! kv-replication: the sans-IO protocol cores of kv and the deterministic simulator that
//! drives them.
//!
//! Every protocol node (Paxos peer, KV replica, view service, primary/backup server, shard
//! master, shard KV replica) is a plain struct: inputs (messages, ticks, client requests,
//! each stamped with `now`) go in, effects come out. The driver applies effects in a fixed
//! order — make `persist` durable, then `send`, then `reply` — so an acknowledgement never
//! depends on state that a crash could take back. No core reads the clock, a global RNG, a
//! socket or a file.
//!
//! # Modules
//!
//! - [`types`], [`rng`], [`timing`], [`codec`]: node and client ids and virtual time, the
//!   seeded generator, the one rule for waits that grow, the one encoding.
//! - [`effects`], [`node`]: what a core asks its driver to do and in which order; the one
//!   node contract and the [`node::Pipeline`] every driver orders effects with.
//! - [`paxos`]: the Lab 3A interface on a Multi-Paxos core (stable leader, pipelined
//!   instances, durable acceptor state, bounded messages).
//! - [`replica`]: the replicated state machine library (batching, the Paxos link, catch-up
//!   and state transfer, compaction, lost-disk rebuild, the restart check, at-most-once),
//!   generic over a [`replica::StateMachine`]; its users are [`kvgroup`] (the kv group),
//!   [`shardmaster`] (Lab 4A's configurations) and [`shardkv`] (Lab 4B's sharded groups
//!   with shard handoff), and [`clerk`] is their one client ([`shardkv::ShardClerk`]
//!   routes by configuration on top of it). [`served`] lets nodes call a replicated
//!   service with messages; [`cluster`] is one node type for every endpoint of a sharded
//!   cluster, which the simulator and the server's multi-group processes both drive.
//! - [`pbservice`]: primary/backup replication with a view service (Lab 2), on the same
//!   state, at-most-once table and state transfer.
//! - [`linearizability`]: the history checker every simulated and real-process test uses
//!   (a kv model and a generic one, with the shard master's model).
//! - [`formats`]: a sample of every persisted format, for the golden tests.
//! - `sim` (feature `sim`): the deterministic simulator (network, disks with fsync
//!   latency, crashes, restores), the lab-style group harness for any machine, and the
//!   seeded sweeps.

pub mod clerk;
pub mod cluster;
pub mod codec;
pub mod effects;
pub mod formats;
pub mod kvgroup;
pub mod linearizability;
pub mod node;
pub mod paxos;
pub mod pbservice;
pub mod replica;
pub mod rng;
pub mod served;
pub mod shardkv;
pub mod shardmaster;
#[cfg(feature = "sim")]
pub mod sim;
pub mod timing;
pub mod types;
