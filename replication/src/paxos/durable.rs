//! What a Paxos peer keeps on disk: WAL records and the snapshot that supersedes them.
//!
//! Invariants: a `Promise` or `Accept` record is durable before any reply that depends on
//! it leaves (the driver's persist-then-send order); an `Accept` record implies a promise of
//! at least its ballot; a `Decide` record with `value: None` refers to the value accepted
//! for that instance by an earlier record (or the snapshot), which is necessarily the
//! decided one because every accepted ballot at or above the deciding ballot carries it.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ids::{Ballot, Seq};

/// The WAL record kind Paxos uses (records of other kinds are ignored on recovery, so a
/// store may be shared with a layer above).
pub const RECORD_KIND: u8 = 1;

/// One WAL record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// The acceptor promised not to accept anything below `ballot`, in any instance.
    Promise(Ballot),
    /// The acceptor accepted `value` at `ballot` in `seq`.
    Accept {
        /// The instance.
        seq: Seq,
        /// The ballot.
        ballot: Ballot,
        /// The value.
        value: Bytes,
    },
    /// `seq` is decided; `value` is absent when it equals the locally accepted value.
    Decide {
        /// The instance.
        seq: Seq,
        /// The decided value, unless it is the accepted one.
        value: Option<Bytes>,
    },
    /// The local application called `done(seq)`.
    Done(Seq),
    /// The peer lost its disk and must not vote (`true`), or has rebuilt and may (`false`).
    /// Durable so that a crash of a recovering peer does not turn it back into a voter.
    Recovering(bool),
}

/// One live instance in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotInstance {
    /// Accepted, not known decided.
    Accepted {
        /// The ballot.
        ballot: Ballot,
        /// The value.
        value: Bytes,
    },
    /// Decided.
    Decided(Bytes),
}

/// The whole durable state of a peer at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotState {
    /// The acceptor's promise.
    pub promised: Ballot,
    /// Known `done` values of every peer.
    pub dones: Vec<Option<Seq>>,
    /// The highest `done` the local application passed.
    pub local_done: Option<Seq>,
    /// The highest instance seen.
    pub max: Option<Seq>,
    /// The peer is recovering from a lost disk (see [`Record::Recovering`]).
    pub recovering: bool,
    /// Every instance at or above `min()`.
    pub instances: Vec<(Seq, SnapshotInstance)>,
}
