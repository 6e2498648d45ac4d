//! What a replica keeps on disk: one combined snapshot and this layer's WAL records.
//!
//! The combined snapshot holds the Paxos peer's whole durable state, the applied state
//! machine, the incarnation vector and the fence, taken at one moment; it supersedes every
//! earlier record (Paxos's and ours). Records after it: Paxos records
//! ([`crate::paxos::RECORD_KIND`]) and [`Record`]s ([`super::RECORD_KIND`]).
//!
//! Invariant: a Paxos `done(s)` is only ever issued right before a combined snapshot whose
//! machine has applied every instance `<= s`, so recovery never needs an instance that the
//! recovered Paxos peer has forgotten.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::paxos::Seq;

/// The combined snapshot. An enum so the first byte tags the format.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) enum Durable {
    V1 {
        /// `Paxos::snapshot_bytes()`.
        paxos: Bytes,
        /// `Machine::image()`.
        machine: Bytes,
        /// The incarnation vector.
        incarnations: Vec<u64>,
        /// The fence (see `Replica`).
        fence: Option<Seq>,
    },
}

/// One WAL record of this layer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// The incarnation vector changed (a peer rebuilt after a lost disk).
    Incarnations(Vec<u64>),
}
