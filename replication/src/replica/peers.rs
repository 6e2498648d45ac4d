//! What a replica knows about every replica of its group, itself included: incarnations,
//! boots, and what each peer has told it of its own durable state.
//!
//! - **Incarnation**: raised each time a replica rebuilds after losing its disk (or after
//!   finding its disk older than what it had told its peers). Every Paxos message carries
//!   the sender's vector; votes from an earlier incarnation are dropped (see `rebuild`).
//! - **Boot**: a replica counts its starts and draws a random nonce at each; both are
//!   durable before it says anything. A copy of its directory restored later starts with
//!   a count a peer has already seen (with another nonce), or lower. A start its peers
//!   never confirmed is not counted again: the next start repeats it exactly.
//! - **Witness**: the highest ballot a peer promised and the highest instance it accepted,
//!   as it told *us* (in promises, acceptances and rejections). A replica's genuine disk
//!   always holds at least that much (it persists before it replies); a disk restored from
//!   an older copy may not.
//!
//! Replicas share what they remember (a small [`super::Message::Witness`] every gossip
//! interval while it changes), so a fact one peer witnessed — a follower's acceptance,
//! seen only by the leader — soon reaches every peer: whoever answers a restart check
//! knows it. A fact about a replica, learned from anyone, is still a fact about that
//! replica's genuine disk.
//!
//! A restarted replica asks its peers to check its boot and durable state against what
//! they remember before it votes again (see `rebuild`). Boots are recorded durably when a
//! peer confirms one; witness facts are kept in memory and in snapshots (best effort: a
//! crash may lose the newest, which only weakens detection, never safety of genuine
//! restarts).

use serde::{Deserialize, Serialize};

use crate::paxos::{Ballot, Seq};

/// One start of a replica.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Boot {
    /// How many times the replica has started on this disk.
    pub count: u64,
    /// Random, drawn at that start.
    pub nonce: u64,
}

/// What a replica knows of one replica of its group.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PeerMemory {
    /// Its incarnation.
    pub incarnation: u64,
    /// Its latest boot confirmed here (this replica's own current boot, for itself).
    pub boot: Boot,
    /// The highest ballot it told us it promised.
    pub promised: Ballot,
    /// The highest instance it told us it accepted.
    pub accepted: Option<Seq>,
    /// For this replica's own entry: its current start was confirmed by its peers. A start
    /// that was not is repeated as it was (same count, same nonce) at the next start, so a
    /// restored copy cannot climb past the starts its peers saw by restarting over and over.
    pub verified: bool,
}

/// What a restarted replica claims about itself when it asks to be checked.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// Its incarnation.
    pub incarnation: u64,
    /// This start.
    pub boot: Boot,
    /// Its durable promise.
    pub promised: Ballot,
    /// The highest instance its disk knows of (Paxos `max()`).
    pub max: Option<Seq>,
}

/// The verdict on a [`Claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Consistent with everything remembered: the boot was recorded.
    Current,
    /// The claimant's disk is older than what it told us: why.
    Stale(String),
}

impl PeerMemory {
    /// Notes a promise (or the promise implied by an acceptance or a rejection).
    pub fn saw_promise(&mut self, ballot: Ballot) {
        self.promised = self.promised.max(ballot);
    }

    /// Notes an acceptance of `seq` at `ballot`.
    pub fn saw_accept(&mut self, ballot: Ballot, seq: Seq) {
        self.saw_promise(ballot);
        self.accepted = self.accepted.max(Some(seq));
    }

    /// Takes in what another replica remembers of the same replica (same incarnation):
    /// the higher promise, the higher acceptance, the later confirmed start. Returns
    /// whether anything changed.
    pub fn absorb(&mut self, theirs: &PeerMemory) -> bool {
        if theirs.incarnation != self.incarnation {
            return false;
        }
        let before = *self;
        self.saw_promise(theirs.promised);
        self.accepted = self.accepted.max(theirs.accepted);
        if theirs.boot.count > self.boot.count {
            self.boot = theirs.boot;
        }
        *self != before
    }

    /// Forgets everything but the incarnation (the replica rebuilt: its new state is
    /// whatever it adopted, and its old promises are void).
    pub fn reincarnate(&mut self, incarnation: u64) {
        *self = PeerMemory {
            incarnation,
            ..PeerMemory::default()
        };
    }

    /// Checks a restarted replica's claim against this memory and, if it holds, records
    /// the new boot (the caller persists the memory before answering).
    pub fn check(&mut self, claim: &Claim) -> Verdict {
        if claim.incarnation < self.incarnation {
            return Verdict::Stale(format!(
                "incarnation {} but {} was seen",
                claim.incarnation, self.incarnation
            ));
        }
        if claim.incarnation > self.incarnation {
            // It rebuilt since we last heard: nothing we remember applies to it.
            self.reincarnate(claim.incarnation);
        }
        let boot = self.boot;
        if claim.boot.count < boot.count
            || (claim.boot.count == boot.count && claim.boot.nonce != boot.nonce)
        {
            return Verdict::Stale(format!(
                "start {} but start {} was already seen",
                claim.boot.count, boot.count
            ));
        }
        if claim.promised < self.promised {
            return Verdict::Stale(format!(
                "promise {} on disk but {} was promised",
                claim.promised, self.promised
            ));
        }
        if claim.max < self.accepted {
            return Verdict::Stale(format!(
                "log known up to {:?} but {:?} was accepted",
                claim.max, self.accepted
            ));
        }
        self.boot = claim.boot;
        Verdict::Current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NodeId;

    fn ballot(round: u64) -> Ballot {
        Ballot {
            round,
            node: NodeId(1),
        }
    }

    fn claim(count: u64, nonce: u64, promised: u64, max: Option<u64>) -> Claim {
        Claim {
            incarnation: 0,
            boot: Boot { count, nonce },
            promised: ballot(promised),
            max: max.map(Seq),
        }
    }

    #[test]
    fn a_genuine_restart_passes_and_its_boot_is_recorded() {
        let mut memory = PeerMemory::default();
        assert_eq!(memory.check(&claim(1, 7, 0, None)), Verdict::Current);
        memory.saw_accept(ballot(3), Seq(10));
        assert_eq!(memory.check(&claim(2, 9, 3, Some(12))), Verdict::Current);
        assert_eq!(memory.boot, Boot { count: 2, nonce: 9 });
        // The same claim again (a retry) still passes.
        assert_eq!(memory.check(&claim(2, 9, 3, Some(12))), Verdict::Current);
    }

    #[test]
    fn a_restored_copy_is_caught_by_its_boot_its_promise_or_its_log() {
        let mut memory = PeerMemory::default();
        memory.check(&claim(5, 1, 0, None));
        memory.saw_accept(ballot(4), Seq(20));
        let stale = |m: &mut PeerMemory, c| matches!(m.check(&c), Verdict::Stale(_));
        assert!(
            stale(&mut memory.clone(), claim(5, 2, 4, Some(20))),
            "same count, other nonce"
        );
        assert!(
            stale(&mut memory.clone(), claim(4, 1, 4, Some(20))),
            "older count"
        );
        assert!(
            stale(&mut memory.clone(), claim(6, 3, 3, Some(20))),
            "lower promise"
        );
        assert!(
            stale(&mut memory.clone(), claim(6, 3, 4, Some(19))),
            "shorter log"
        );
        assert!(!stale(&mut memory.clone(), claim(6, 3, 4, Some(20))));
    }

    #[test]
    fn a_new_incarnation_resets_the_memory_and_an_old_one_is_stale() {
        let mut memory = PeerMemory::default();
        memory.check(&claim(5, 1, 0, None));
        memory.saw_accept(ballot(9), Seq(50));
        let mut reborn = claim(1, 2, 0, None);
        reborn.incarnation = 1;
        assert_eq!(memory.check(&reborn), Verdict::Current);
        assert_eq!(memory.incarnation, 1);
        assert!(matches!(
            memory.check(&claim(6, 1, 9, Some(50))),
            Verdict::Stale(_)
        ));
    }
}
