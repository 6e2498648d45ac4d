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
//! - `sim` (feature `sim`): the deterministic simulator, generic over a node trait, with
//!   the Paxos host and lab-style cluster harness.

pub mod codec;
pub mod effects;
pub mod kvgroup;
pub mod linearizability;
pub mod node;
pub mod paxos;
pub mod replica;
pub mod rng;
#[cfg(feature = "sim")]
pub mod sim;
pub mod timing;
pub mod types;
