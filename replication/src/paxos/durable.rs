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
/// store may be shared with a layer above). The kind is also the format's version: kind 1
/// was the first, unversioned format, which this build refuses to read.
pub const RECORD_KIND: u8 = 3;

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
    /// Instances below this were forgotten whatever the peers' `done` values.
    pub floor: Seq,
    /// Every instance at or above `min()`.
    pub instances: Vec<(Seq, SnapshotInstance)>,
}

/// The parts of a [`SnapshotState`] as frames of bounded size, for snapshots and state
/// transfer (see `replica::frames`). An enum so the first byte tags the kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcceptorFrame {
    /// Everything but the instances; first.
    Header {
        /// See [`SnapshotState::promised`].
        promised: Ballot,
        /// See [`SnapshotState::dones`].
        dones: Vec<Option<Seq>>,
        /// See [`SnapshotState::local_done`].
        local_done: Option<Seq>,
        /// See [`SnapshotState::max`].
        max: Option<Seq>,
        /// See [`SnapshotState::recovering`].
        recovering: bool,
        /// See [`SnapshotState::floor`].
        floor: Seq,
    },
    /// Instances, ascending, continuing the previous frame's.
    Instances(Vec<(Seq, SnapshotInstance)>),
}

impl SnapshotState {
    /// The state as frames whose instances carry about `budget` bytes of values each.
    pub fn frames(&self, budget: usize) -> Vec<AcceptorFrame> {
        let mut frames = vec![AcceptorFrame::Header {
            promised: self.promised,
            dones: self.dones.clone(),
            local_done: self.local_done,
            max: self.max,
            recovering: self.recovering,
            floor: self.floor,
        }];
        let mut batch = Vec::new();
        let mut bytes = 0;
        for (seq, instance) in &self.instances {
            if !batch.is_empty() && bytes >= budget {
                frames.push(AcceptorFrame::Instances(std::mem::take(&mut batch)));
                bytes = 0;
            }
            bytes += instance.value().len() + 16;
            batch.push((*seq, instance.clone()));
        }
        if !batch.is_empty() {
            frames.push(AcceptorFrame::Instances(batch));
        }
        frames
    }

    /// Rebuilds a state from its frames, checking the order.
    pub fn from_frames(
        frames: impl IntoIterator<Item = AcceptorFrame>,
    ) -> Result<SnapshotState, String> {
        let mut frames = frames.into_iter();
        let Some(AcceptorFrame::Header {
            promised,
            dones,
            local_done,
            max,
            recovering,
            floor,
        }) = frames.next()
        else {
            return Err("acceptor state without its header".into());
        };
        let mut state = SnapshotState {
            promised,
            dones,
            local_done,
            max,
            recovering,
            floor,
            instances: Vec::new(),
        };
        for frame in frames {
            let AcceptorFrame::Instances(instances) = frame else {
                return Err("a second acceptor header".into());
            };
            for (seq, instance) in instances {
                if state.instances.last().is_some_and(|(last, _)| *last >= seq) {
                    return Err("acceptor instances out of order".into());
                }
                state.instances.push((seq, instance));
            }
        }
        Ok(state)
    }
}

impl SnapshotInstance {
    /// The value (accepted or decided).
    pub fn value(&self) -> &Bytes {
        match self {
            SnapshotInstance::Accepted { value, .. } | SnapshotInstance::Decided(value) => value,
        }
    }
}
