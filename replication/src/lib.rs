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
//! - [`types`], [`rng`], [`effects`], [`codec`]: node ids and virtual time, the seeded
//!   generator, the effects contract (persist, then send, then reply), the one encoding.
//! - [`paxos`]: the Lab 3A interface on a Multi-Paxos core (stable leader, pipelined
//!   instances, durable acceptor state).
//! - [`replica`]: the replicated state machine library, generic over a machine; its users
//!   are [`kvgroup`] (the kv group) and [`shardmaster`] (Lab 4A's configurations), and
//!   [`clerk`] is their one client.
//! - [`linearizability`]: the history checker (a kv model and a generic one, with the
//!   shard master's model).
//! - `sim` (feature `sim`): the deterministic simulator, generic over a node trait, with
//!   the Paxos host, the lab-style group harness for any machine, and the seed sweeps.

pub mod clerk;
pub mod codec;
pub mod effects;
pub mod kvgroup;
pub mod linearizability;
pub mod paxos;
pub mod replica;
pub mod rng;
pub mod shardmaster;
#[cfg(feature = "sim")]
pub mod sim;
pub mod timing;
pub mod types;
