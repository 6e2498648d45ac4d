//! Paxos wire messages. Every message carries the sender's view of every peer's `done`
//! value, so `done` information spreads (transitively) on ordinary protocol traffic and
//! there is no traffic while idle.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ids::{Ballot, Seq};

/// One message between Paxos peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The sender's knowledge of each peer's highest `done` argument (index = node id).
    pub dones: Vec<Option<Seq>>,
    /// The sender led (held phase 1 at its ballot) when it sent this. Only then does a
    /// message from the node a peer follows count as hearing from its leader: a leader
    /// that gave up leading still gossips, and must not keep its followers waiting.
    pub leads: bool,
    /// What the message says.
    pub body: Body,
}

/// A decision notice. `value == None` means "the value you accepted for `seq` at a ballot
/// `>= ballot`", which the sender uses for peers it saw accept — any accepted ballot at or
/// above the deciding one carries the decided value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The instance.
    pub seq: Seq,
    /// The ballot at which it was decided (or `Ballot::ZERO` when `value` is present).
    pub ballot: Ballot,
    /// The decided value, unless the receiver already holds it.
    pub value: Option<Bytes>,
}

/// An acceptor's state for one instance, as reported in a promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The instance.
    pub seq: Seq,
    /// The ballot of the accepted value (meaningless when `decided`).
    pub ballot: Ballot,
    /// The accepted (or decided) value.
    pub value: Bytes,
    /// True if the acceptor knows the value is decided.
    pub decided: bool,
}

/// The message kinds. Requests: `Prepare`, `Accept`, `Decided`, `Forward`, `Learn`,
/// `Confirm`; responses: `Promise`, `Accepted`, `Reject`, `Learned`, `Confirmed` (see
/// [`Body::is_response`]). New kinds go at the end (the first byte tags the kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Phase 1a for every instance `>= from`.
    Prepare {
        /// The proposer's ballot.
        ballot: Ballot,
        /// Lowest instance the proposer wants to lead.
        from: Seq,
    },
    /// Phase 1b: the acceptor promised `ballot` and reports its instances `>= from`, one
    /// page at a time: `entries` covers `from..next` (everything from `from` on when `next`
    /// is `None`), so a promise never grows with the log. The proposer asks for the next
    /// page with another `Prepare` at the same ballot from `next`.
    Promise {
        /// The promised ballot.
        ballot: Ballot,
        /// Echo of the prepare's `from`.
        from: Seq,
        /// Accepted or decided instances in `from..next`.
        entries: Vec<Entry>,
        /// Where the next page starts, if this page is not the last.
        next: Option<Seq>,
    },
    /// Phase 2a, with decision notices for earlier instances riding along.
    Accept {
        /// The proposer's ballot.
        ballot: Ballot,
        /// The instance.
        seq: Seq,
        /// The proposed value.
        value: Bytes,
        /// Piggybacked decisions.
        commits: Vec<Commit>,
    },
    /// Phase 2b.
    Accepted {
        /// The accepted ballot.
        ballot: Ballot,
        /// The instance.
        seq: Seq,
        /// The lease the acceptor granted the ballot's node with this answer, if it grants
        /// leases.
        grant: Option<Grant>,
    },
    /// A refused prepare or accept, naming the highest ballot the acceptor has promised.
    Reject {
        /// The refused ballot.
        ballot: Ballot,
        /// The acceptor's promise, so the proposer can jump past it.
        promised: Ballot,
    },
    /// Decision notices (one-way).
    Decided {
        /// The decisions.
        commits: Vec<Commit>,
    },
    /// A non-leader asks the leader to get `value` decided in `seq`.
    Forward {
        /// The instance.
        seq: Seq,
        /// The value the forwarder would propose.
        value: Bytes,
    },
    /// Asks for the decided values of instances.
    Learn {
        /// The instances.
        seqs: Vec<Seq>,
    },
    /// Decided values (answer to `Learn` or `Forward`; may be empty, which still carries
    /// the sender's `dones`).
    Learned {
        /// The decisions, values included.
        commits: Vec<Commit>,
    },
    /// A leader asks whether it still leads at `ballot` (a leadership confirmation round,
    /// for reads; see [`super::Paxos::confirm_leadership`]).
    Confirm {
        /// The leader's ballot.
        ballot: Ballot,
        /// The round, chosen by the leader.
        round: u64,
    },
    /// "My promise is `ballot`": the acceptor has promised and accepted nothing higher.
    /// (An acceptor that promised higher answers `Reject`.)
    Confirmed {
        /// Echo of the confirm's ballot.
        ballot: Ballot,
        /// Echo of the confirm's round.
        round: u64,
        /// The lease the acceptor granted the ballot's node with this answer, if it grants
        /// leases.
        grant: Option<Grant>,
    },
    /// A refused prepare (or confirmation round) of a ballot above the acceptor's promise:
    /// the acceptor follows `leader`, a ballot it heard leading within `leader_timeout`
    /// (or its own, leading and hearing from a majority). The asker stops campaigning and
    /// sends its proposals there.
    Follow {
        /// The refused ballot.
        ballot: Ballot,
        /// The ballot the acceptor follows.
        leader: Ballot,
    },
}

/// A lease an acceptor granted with an acknowledgement (see [`super::Lease`]): it raises
/// its promise for no other node's ballot for `micros` on its own clock, and its clock's
/// rate is within `drift_ppm` of real time. A leader counts on what each acknowledgement
/// says rather than on its own settings, so peers may differ (while a longer
/// `[read_lease]` rolls through the nodes, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// How long the grant binds the acceptor, in microseconds of its clock.
    pub micros: u64,
    /// The largest rate error the acceptor allows for, in parts per million.
    pub drift_ppm: u32,
}

impl Message {
    /// An estimate of the encoded size in bytes: the values it carries plus a small
    /// allowance per item (for budgets and for the simulator's bandwidth model).
    pub fn wire_bytes(&self) -> usize {
        const HEADER: usize = 32;
        const ITEM: usize = 24;
        let values = |values: &mut dyn Iterator<Item = usize>| -> usize {
            values.map(|len| len + ITEM).sum()
        };
        let body = match &self.body {
            Body::Prepare { .. }
            | Body::Accepted { .. }
            | Body::Reject { .. }
            | Body::Confirm { .. }
            | Body::Confirmed { .. }
            | Body::Follow { .. } => 0,
            Body::Promise { entries, .. } => values(&mut entries.iter().map(|e| e.value.len())),
            Body::Accept { value, commits, .. } => {
                value.len() + values(&mut commits.iter().map(Commit::value_bytes))
            }
            Body::Decided { commits } | Body::Learned { commits } => {
                values(&mut commits.iter().map(Commit::value_bytes))
            }
            Body::Forward { value, .. } => value.len(),
            Body::Learn { seqs } => seqs.len() * 8,
        };
        HEADER + self.dones.len() * 9 + body
    }
}

impl Commit {
    /// Bytes of value this notice carries (0 when it refers to an accepted value).
    pub fn value_bytes(&self) -> usize {
        self.value.as_ref().map_or(0, Bytes::len)
    }
}

impl Body {
    /// True for replies to a request (a deaf peer still receives those; an unreliable
    /// peer's replies are the ones that get lost after the request ran).
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            Body::Promise { .. }
                | Body::Accepted { .. }
                | Body::Reject { .. }
                | Body::Learned { .. }
                | Body::Confirmed { .. }
                | Body::Follow { .. }
        )
    }

    /// A short name for traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Prepare { .. } => "prepare",
            Body::Promise { .. } => "promise",
            Body::Accept { .. } => "accept",
            Body::Accepted { .. } => "accepted",
            Body::Reject { .. } => "reject",
            Body::Decided { .. } => "decided",
            Body::Forward { .. } => "forward",
            Body::Learn { .. } => "learn",
            Body::Learned { .. } => "learned",
            Body::Confirm { .. } => "confirm",
            Body::Confirmed { .. } => "confirmed",
            Body::Follow { .. } => "follow",
        }
    }
}
