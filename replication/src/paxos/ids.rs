//! Paxos numbers: instance numbers and ballots.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::types::NodeId;

/// An instance (slot) number. The lab's `-1` ("none") is `Option<Seq>::None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Seq(pub u64);

impl Seq {
    /// The first instance.
    pub const ZERO: Seq = Seq(0);

    /// The next instance.
    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A proposal number: totally ordered by `(round, node)`, so two proposers never share one.
/// `Ballot::ZERO` (round 0) is never used by a proposer; it means "nothing promised yet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Compared first.
    pub round: u64,
    /// Breaks ties between proposers.
    pub node: NodeId,
}

impl Default for Ballot {
    fn default() -> Ballot {
        Ballot::ZERO
    }
}

impl Ballot {
    /// Below every real ballot.
    pub const ZERO: Ballot = Ballot {
        round: 0,
        node: NodeId(0),
    };
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.node.0)
    }
}
