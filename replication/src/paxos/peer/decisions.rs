//! Decisions to other peers: which decided instances each peer is still owed, and when
//! they leave — riding with an accept to that peer, in `Decided` messages of their own at
//! the end of a call (or of a burst, see [`Paxos::hold_decisions`]), or on the next tick.

use super::*;

/// Largest accepted value decisions ride along with; an accept of a larger one leaves the
/// decisions to a message of their own, so they do not wait behind its transfer.
const COMMITS_RIDE_VALUE_BYTES_MAX: usize = 64 << 10;

impl Paxos {
    /// Until [`Paxos::release_decisions`], the decisions this peer reaches do not leave at
    /// the end of each call (with `piggyback_commits` off) but wait, and an accept to the
    /// same peer started meanwhile carries them. A driver that handles a burst of messages
    /// at once brackets it with the two: under load the burst that decides one instance
    /// starts the next, whose accepts then carry the decision — a message per peer per
    /// instance saved — and the decision still leaves when the burst ends.
    pub fn hold_decisions(&mut self) {
        self.holding_decisions = true;
    }

    /// Ends [`Paxos::hold_decisions`]: sends every decision still waiting (unless
    /// `piggyback_commits` says they wait for the next accept or tick anyway).
    pub fn release_decisions(&mut self, out: &mut Output) {
        self.holding_decisions = false;
        if !self.config.piggyback_commits {
            self.flush_commits(out);
        }
    }

    /// Sends the pending decisions unless they wait: for the next accept or tick
    /// (`piggyback_commits`), or for the end of a burst ([`Paxos::hold_decisions`]).
    pub(super) fn send_decisions_now(&mut self, out: &mut Output) {
        if !self.config.piggyback_commits && !self.holding_decisions {
            self.flush_commits(out);
        }
    }

    fn commits_for(&self, list: Vec<PendingCommit>) -> Vec<Commit> {
        list.into_iter()
            .filter_map(|pc| match self.instances.get(&pc.seq) {
                Some(Instance::Decided(value)) => Some(Commit {
                    seq: pc.seq,
                    ballot: pc.ballot,
                    value: if pc.acked { None } else { Some(value.clone()) },
                }),
                _ => None,
            })
            .collect()
    }

    /// The decisions pending for `peer` that ride with an accept of a `value_bytes` value:
    /// none if the value is large, so that no decision waits behind its transfer.
    pub(super) fn commits_riding(&mut self, peer: NodeId, value_bytes: usize) -> Vec<Commit> {
        if value_bytes > COMMITS_RIDE_VALUE_BYTES_MAX {
            return Vec::new();
        }
        self.take_commits(peer)
    }

    /// The decisions pending for `peer` that fit in one message; the rest stay pending.
    fn take_commits(&mut self, peer: NodeId) -> Vec<Commit> {
        match self.pending.remove(&peer) {
            Some(list) => {
                let mut pages = self.commit_pages(list);
                let first = pages.next().unwrap_or_default();
                let rest: Vec<Commit> = pages.flatten().collect();
                if !rest.is_empty() {
                    // Re-queue by value (they are decided here, so this is exact).
                    let list = self.pending.entry(peer).or_default();
                    list.extend(rest.iter().map(|c| PendingCommit {
                        seq: c.seq,
                        ballot: c.ballot,
                        acked: c.value.is_none(),
                    }));
                }
                first
            }
            None => Vec::new(),
        }
    }

    /// The decisions of `list`, split into messages of at most `message_bytes_max` of
    /// values each.
    fn commit_pages(&self, list: Vec<PendingCommit>) -> impl Iterator<Item = Vec<Commit>> {
        let budget = self.config.message_bytes_max;
        let mut pages: Vec<Vec<Commit>> = Vec::new();
        let mut bytes = 0;
        for commit in self.commits_for(list) {
            let size = commit.value_bytes();
            match pages.last_mut() {
                Some(page) if bytes + size <= budget => {
                    bytes += size;
                    page.push(commit);
                }
                _ => {
                    bytes = size;
                    pages.push(vec![commit]);
                }
            }
        }
        pages.into_iter()
    }

    pub(super) fn flush_commits(&mut self, out: &mut Output) {
        let pending = std::mem::take(&mut self.pending);
        let early = self.early();
        for (peer, list) in pending {
            let pages: Vec<Vec<Commit>> = self.commit_pages(list).collect();
            for commits in pages {
                if early {
                    let message = self.message(Body::Decided { commits });
                    out.send_early.push((peer, message));
                } else {
                    self.send(out, peer, Body::Decided { commits });
                }
            }
        }
    }
}
