//! Leadership confirmation for reads: a round at this peer's ballot that a majority must
//! answer with an unchanged promise (the argument is in `crate::replica`'s reads).

use super::*;

impl Paxos {
    /// Starts leadership confirmation round `round` (chosen by the caller, increasing)
    /// at this peer's ballot, replacing any round in flight: every peer is asked whether
    /// its promise is still that ballot. Once a majority (this peer included) says yes,
    /// [`Paxos::confirmed_round`] is `round`: no ballot above this peer's was promised or
    /// accepted by a majority before the round started (each acknowledging acceptor had
    /// promised nothing higher when it answered, after the start; promises only grow).
    /// Returns false, starting nothing, unless this peer leads.
    pub fn confirm_leadership(&mut self, now: Time, round: u64, out: &mut Output) -> bool {
        if self.prepared_from.is_none() || self.is_silent() || self.promised != self.ballot {
            return false;
        }
        let mut acks = BTreeSet::new();
        acks.insert(self.config.me);
        self.confirmation = Some(Confirmation {
            round,
            ballot: self.ballot,
            acks,
            started: now,
            lease: self.own_lease(),
            deadline: now + self.config.retry_interval,
            attempts: 0,
        });
        let ballot = self.ballot;
        for peer in self.others() {
            self.send(out, peer, Body::Confirm { ballot, round });
        }
        self.check_confirmation();
        true
    }

    /// The confirmation round in flight, if any (abandoned when leadership ends).
    pub fn confirming_round(&self) -> Option<u64> {
        self.confirmation.as_ref().map(|c| c.round)
    }

    /// The last confirmation round a majority answered.
    pub fn confirmed_round(&self) -> Option<u64> {
        self.confirmed
    }

    /// Acceptor: answers a leader's confirmation round. A lower ballot than the promise is
    /// rejected (the asker steps down); a higher one is promised first, as a prepare would
    /// be (durably: the answer waits for the record), so the answer always means "my
    /// promise is `ballot`".
    pub(super) fn on_confirm(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        round: u64,
        out: &mut Output,
    ) {
        if self.promise_to(now, from, ballot, out) {
            let grant = self.grant_lease(now, ballot.node);
            self.send(
                out,
                from,
                Body::Confirmed {
                    ballot,
                    round,
                    grant,
                },
            );
        }
    }

    pub(super) fn on_confirmed(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        round: u64,
        grant: Option<Grant>,
    ) {
        let held = self.lease_held_for(grant);
        let Some(confirmation) = self.confirmation.as_mut() else {
            return;
        };
        if confirmation.round == round && confirmation.ballot == ballot && ballot == self.ballot {
            confirmation.acks.insert(from);
            confirmation.lease = confirmation.lease.min(held);
            self.check_confirmation();
        }
    }

    pub(super) fn check_confirmation(&mut self) {
        let majority = self.majority();
        if let Some(c) = self.confirmation.take_if(|c| c.acks.len() >= majority) {
            self.confirmed = Some(c.round);
            self.extend_lease(c.ballot, c.started, c.lease);
        }
    }

    pub(super) fn retry_confirmation(&mut self, now: Time, out: &mut Output) {
        let Some(attempts) = self.confirmation.as_ref().map(|c| c.attempts) else {
            return;
        };
        let wait = self.patience(self.config.retry_interval, attempts + 1, 0);
        let Some(c) = self.confirmation.as_mut() else {
            return;
        };
        if c.deadline > now {
            return;
        }
        if c.attempts >= super::proposer::UNANSWERED_RESENDS_MAX && c.ballot == self.ballot {
            // As with an accept (see `retry_proposal`): no majority answers.
            self.abdicate(now);
            return;
        }
        c.deadline = now + wait;
        c.attempts += 1;
        let (ballot, round) = (c.ballot, c.round);
        let silent: Vec<NodeId> = (0..self.config.peers as u32)
            .map(NodeId)
            .filter(|p| !c.acks.contains(p))
            .collect();
        for peer in silent {
            self.send(out, peer, Body::Confirm { ballot, round });
        }
    }
}
