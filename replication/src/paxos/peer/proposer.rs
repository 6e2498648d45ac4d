//! The proposer's side of a peer: campaigns (phase 1), proposals and their accept
//! rounds (phase 2), retries, stepping down, and proposals forwarded to the leader.

use super::*;

/// Resends of one accept a leader makes without hearing from a majority before it stops
/// leading (see `retry_proposal`).
pub(super) const UNANSWERED_RESENDS_MAX: u32 = 4;

impl Paxos {
    pub(super) fn majority(&self) -> usize {
        self.config.peers / 2 + 1
    }

    pub(super) fn add_proposal(&mut self, now: Time, seq: Seq, value: Bytes, out: &mut Output) {
        if self.is_silent()
            || self.proposals.contains_key(&seq)
            || matches!(self.instances.get(&seq), Some(Instance::Decided(_)))
        {
            return;
        }
        self.proposals.insert(
            seq,
            Proposal {
                value,
                stage: Stage::Waiting,
                deadline: now,
                forwards: 0,
                attempts: 0,
            },
        );
        self.drive(now, seq, out);
    }

    /// Moves a waiting proposal forward: phase 2 if this peer leads its range, else a
    /// forward to the presumed leader, else a campaign (phase 1).
    pub(super) fn drive(&mut self, now: Time, seq: Seq, out: &mut Output) {
        if self.is_silent() {
            return;
        }
        if self.prepared_from.is_some_and(|from| seq >= from) {
            self.send_accepts(now, seq, out);
            return;
        }
        if self.campaign.is_some() {
            return; // the campaign's outcome drives it
        }
        if self.prepared_from.is_some() {
            // Leading, but not this low: extend phase 1 downwards with the same ballot.
            self.begin_campaign(now, false, out);
            return;
        }
        let me = self.config.me;
        let forward_to = self.leader.filter(|l| *l != me);
        let leader_alive = self.leader_alive(now);
        let Some(proposal) = self.proposals.get(&seq) else {
            return;
        };
        let (forwards, bytes) = (proposal.forwards, proposal.value.len());
        match forward_to {
            // Forward once; forward again (waiting longer each time) for as long as the
            // leader shows signs of life, instead of deposing a leader that is only slow.
            Some(leader) if forwards < FORWARD_ATTEMPTS_MAX || leader_alive => {
                let wait = self.patience(self.config.forward_timeout, forwards, bytes);
                let Some(proposal) = self.proposals.get_mut(&seq) else {
                    return;
                };
                proposal.forwards += 1;
                proposal.deadline = now + wait;
                let value = proposal.value.clone();
                self.send(out, leader, Body::Forward { seq, value });
            }
            _ => self.begin_campaign(now, true, out),
        }
    }

    /// How long to wait before acting again on something sent `attempts` times before,
    /// whose payload is `bytes` long: `base` doubled per attempt up to
    /// `retry_interval_max`, plus the payload's transfer time at `transfer_bytes_per_sec`.
    pub(super) fn patience(&self, base: Duration, attempts: u32, bytes: usize) -> Duration {
        timing::backoff(base, attempts, self.config.retry_interval_max)
            + timing::transfer_time(bytes, self.config.transfer_bytes_per_sec)
    }

    /// True if the leader this peer knows was heard from within `leader_timeout`.
    pub(super) fn leader_alive(&self, now: Time) -> bool {
        self.leader_seen
            .is_some_and(|seen| now - seen < self.config.leader_timeout)
    }

    pub(super) fn set_leader(&mut self, now: Time, leader: NodeId) {
        if self.leader != Some(leader) {
            self.leader_changes += 1;
        }
        self.leader = Some(leader);
        self.leader_seen = Some(now);
    }

    /// Phase 1 for every instance from the lowest undecided proposal up; with `new_ballot`
    /// a fresh ballot above everything seen, else the current one again (to cover lower
    /// instances).
    pub(super) fn begin_campaign(&mut self, now: Time, new_ballot: bool, out: &mut Output) {
        let Some(from) = self.proposals.keys().next().copied() else {
            return;
        };
        if let Some(until) = self.lease_grant_ending(now, self.config.me) {
            // This peer's acceptor granted another node a lease: campaign once it ends.
            for p in self.proposals.values_mut() {
                p.deadline = p.deadline.max(until);
            }
            return;
        }
        if new_ballot || self.ballot < self.promised {
            let round = self.highest_seen.round.max(self.promised.round) + 1;
            self.ballot = Ballot {
                round,
                node: self.config.me,
            };
            self.prepared_from = None;
            self.confirmation = None;
            self.recovered.clear();
            self.reset_stages();
        }
        let ballot = self.ballot;
        self.highest_seen = self.highest_seen.max(ballot);
        self.raise_promise(ballot, out);
        let mut promises = BTreeSet::new();
        promises.insert(self.config.me);
        let local = self.entries_from(from);
        self.absorb_entries(local, out);
        self.campaign = Some(Campaign {
            from,
            promises,
            partial: BTreeMap::new(),
            deadline: now + self.config.retry_interval,
            attempts: 0,
            refused: BTreeSet::new(),
        });
        for peer in self.others() {
            self.send(out, peer, Body::Prepare { ballot, from });
        }
        if self.majority() <= 1 {
            self.win(now, out);
        }
    }

    pub(super) fn retry_campaign(&mut self, now: Time, out: &mut Output) {
        let Some(attempts) = self.campaign.as_ref().map(|c| c.attempts) else {
            return;
        };
        // A promise page may carry up to `message_bytes_max` of values.
        let wait = self.patience(
            self.config.retry_interval,
            attempts + 1,
            self.config.message_bytes_max,
        );
        let Some(campaign) = self.campaign.as_mut() else {
            return;
        };
        if campaign.deadline > now {
            return;
        }
        campaign.deadline = now + wait;
        campaign.attempts += 1;
        let silent: Vec<(NodeId, Seq)> = (0..self.config.peers as u32)
            .map(NodeId)
            .filter(|p| !campaign.promises.contains(p))
            .map(|p| {
                (
                    p,
                    campaign.partial.get(&p).copied().unwrap_or(campaign.from),
                )
            })
            .collect();
        let ballot = self.ballot;
        for (peer, from) in silent {
            self.send(out, peer, Body::Prepare { ballot, from });
        }
    }

    /// One page of a promise. A peer's promise counts once every page from the campaign's
    /// `from` on has arrived; each page asks for the next at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_promise(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        f: Seq,
        entries: Vec<Entry>,
        next: Option<Seq>,
        out: &mut Output,
    ) {
        let current = ballot == self.ballot
            && self.campaign.as_ref().is_some_and(|c| {
                let expected = c.partial.get(&from).copied().unwrap_or(c.from);
                f <= expected && !c.promises.contains(&from)
            });
        if !current {
            // Still learn any decisions it reports.
            let decided = entries.into_iter().filter(|e| e.decided).collect();
            self.absorb_entries(decided, out);
            return;
        }
        self.absorb_entries(entries, out);
        let majority = self.majority();
        let Some(campaign) = self.campaign.as_mut() else {
            return;
        };
        match next {
            Some(next) => {
                campaign.partial.insert(from, next);
                self.send(out, from, Body::Prepare { ballot, from: next });
            }
            None => {
                campaign.partial.remove(&from);
                campaign.promises.insert(from);
                if campaign.promises.len() >= majority {
                    self.win(now, out);
                }
            }
        }
    }

    /// Learns decided entries and remembers the highest-ballot accepted value per instance.
    pub(super) fn absorb_entries(&mut self, entries: Vec<Entry>, out: &mut Output) {
        for entry in entries {
            self.note_seq(entry.seq);
            if entry.seq < self.min {
                continue;
            }
            if entry.decided {
                // A proposal of ours settled by what a promise reports: nobody else will
                // tell the peers that did not know, so this proposer does.
                let ours = self.proposals.contains_key(&entry.seq)
                    && !matches!(self.instances.get(&entry.seq), Some(Instance::Decided(_)));
                self.learn(entry.seq, entry.value, out);
                if ours {
                    for peer in self.others() {
                        self.pending.entry(peer).or_default().push(PendingCommit {
                            seq: entry.seq,
                            ballot: Ballot::ZERO,
                            acked: false,
                        });
                    }
                }
                continue;
            }
            if matches!(self.instances.get(&entry.seq), Some(Instance::Decided(_))) {
                continue;
            }
            match self.recovered.get(&entry.seq) {
                Some((b, _)) if *b >= entry.ballot => {}
                _ => {
                    self.recovered
                        .insert(entry.seq, (entry.ballot, entry.value));
                }
            }
        }
    }

    pub(super) fn win(&mut self, now: Time, out: &mut Output) {
        let Some(campaign) = self.campaign.take() else {
            return;
        };
        let from = self
            .prepared_from
            .map_or(campaign.from, |f| f.min(campaign.from));
        self.prepared_from = Some(from);
        self.failures = 0;
        self.set_leader(now, self.config.me);
        // Finish whatever a previous leader left accepted but undecided.
        let orphans: Vec<(Seq, Bytes)> = self
            .recovered
            .range(from..)
            .filter(|(seq, _)| !self.proposals.contains_key(seq))
            .map(|(seq, (_, v))| (*seq, v.clone()))
            .collect();
        for (seq, value) in orphans {
            self.proposals.insert(
                seq,
                Proposal {
                    value,
                    stage: Stage::Waiting,
                    deadline: now,
                    forwards: 0,
                    attempts: 0,
                },
            );
        }
        let waiting: Vec<Seq> = self
            .proposals
            .iter()
            .filter(|(_, p)| matches!(p.stage, Stage::Waiting))
            .map(|(s, _)| *s)
            .collect();
        for seq in waiting {
            self.drive(now, seq, out);
        }
    }

    pub(super) fn send_accepts(&mut self, now: Time, seq: Seq, out: &mut Output) {
        let ballot = self.ballot;
        if matches!(self.instances.get(&seq), Some(Instance::Decided(_))) {
            self.proposals.remove(&seq);
            return;
        }
        let Some(proposal) = self.proposals.get(&seq) else {
            return;
        };
        if matches!(&proposal.stage, Stage::Accepting { ballot: b, .. } if *b == ballot) {
            return;
        }
        assert!(
            self.promised == ballot,
            "leader {} at {ballot} but promised {}",
            self.config.me,
            self.promised
        );
        let value = match self.recovered.get(&seq) {
            Some((_, v)) => v.clone(),
            None => proposal.value.clone(),
        };
        self.insert_instance(
            seq,
            Instance::Accepted {
                ballot,
                value: value.clone(),
            },
        );
        self.persist(
            Record::Accept {
                seq,
                ballot,
                value: value.clone(),
            },
            out,
        );
        let mut acks = BTreeSet::new();
        acks.insert(self.config.me);
        let self_lease = self.own_lease();
        let deadline = now + self.patience(self.config.retry_interval, 0, value.len());
        if let Some(p) = self.proposals.get_mut(&seq) {
            p.stage = Stage::Accepting {
                ballot,
                value: value.clone(),
                acks,
                sent: now,
                lease: self_lease,
            };
            p.deadline = deadline;
            p.attempts = 0;
        }
        let early = self.early();
        for peer in self.others() {
            if early {
                // The decisions waiting for this peer ride along. Each was reached from
                // acknowledgements of accepts sent in an earlier step (or learned from a
                // peer that had them), so the acceptances it counts are durable before
                // this early send leaves (see `Config::early_accepts`).
                let commits = self.commits_riding(peer, value.len());
                let message = self.message(Body::Accept {
                    ballot,
                    seq,
                    value: value.clone(),
                    commits,
                });
                out.send_early.push((peer, message));
            } else {
                self.send_accept(out, peer, ballot, seq, value.clone());
            }
        }
        if self.majority() <= 1 {
            self.decide_as_proposer(seq, out);
        }
    }

    pub(super) fn send_accept(
        &mut self,
        out: &mut Output,
        peer: NodeId,
        ballot: Ballot,
        seq: Seq,
        value: Bytes,
    ) {
        let commits = self.commits_riding(peer, value.len());
        self.send(
            out,
            peer,
            Body::Accept {
                ballot,
                seq,
                value,
                commits,
            },
        );
    }

    pub(super) fn on_accepted(
        &mut self,
        from: NodeId,
        ballot: Ballot,
        seq: Seq,
        grant: Option<Grant>,
        out: &mut Output,
    ) {
        let majority = self.majority();
        let held = self.lease_held_for(grant);
        if let Some(Proposal {
            stage:
                Stage::Accepting {
                    ballot: b,
                    acks,
                    sent,
                    lease,
                    ..
                },
            ..
        }) = self.proposals.get_mut(&seq)
        {
            let reached = *b == ballot && {
                acks.insert(from);
                *lease = (*lease).min(held);
                acks.len() >= majority
            };
            if reached {
                let (sent, lease) = (*sent, *lease);
                self.extend_lease(ballot, sent, lease);
                self.decide_as_proposer(seq, out);
            }
            return;
        }
        // A late ack for something already decided: the commit can go by reference.
        if let Some(list) = self.pending.get_mut(&from) {
            for pc in list
                .iter_mut()
                .filter(|pc| pc.seq == seq && pc.ballot == ballot)
            {
                pc.acked = true;
            }
        }
    }

    pub(super) fn decide_as_proposer(&mut self, seq: Seq, out: &mut Output) {
        let Some(proposal) = self.proposals.remove(&seq) else {
            return;
        };
        let Stage::Accepting {
            ballot,
            value,
            acks,
            ..
        } = proposal.stage
        else {
            unreachable!("decide_as_proposer on a proposal not in phase 2");
        };
        self.learn(seq, value, out);
        for peer in self.others() {
            self.pending.entry(peer).or_default().push(PendingCommit {
                seq,
                ballot,
                acked: acks.contains(&peer),
            });
        }
        self.send_decisions_now(out);
    }

    pub(super) fn retry_proposal(&mut self, now: Time, seq: Seq, out: &mut Output) {
        let ballot = self.ballot;
        let Some((attempts, bytes)) = self
            .proposals
            .get(&seq)
            .map(|p| (p.attempts, p.value.len()))
        else {
            return;
        };
        let wait = self.patience(self.config.retry_interval, attempts + 1, bytes);
        let Some(proposal) = self.proposals.get_mut(&seq) else {
            return;
        };
        match &proposal.stage {
            Stage::Accepting {
                ballot: b,
                value,
                acks,
                ..
            } if *b == ballot && self.prepared_from.is_some() => {
                if proposal.attempts >= UNANSWERED_RESENDS_MAX {
                    self.abdicate(now);
                    return;
                }
                let value = value.clone();
                let silent: Vec<NodeId> = (0..self.config.peers as u32)
                    .map(NodeId)
                    .filter(|p| !acks.contains(p))
                    .collect();
                proposal.deadline = now + wait;
                proposal.attempts += 1;
                for peer in silent {
                    self.send_accept(out, peer, ballot, seq, value.clone());
                }
            }
            Stage::Accepting { .. } => {
                proposal.stage = Stage::Waiting;
                self.drive(now, seq, out);
            }
            Stage::Waiting => self.drive(now, seq, out),
        }
    }

    /// Acceptor `from` follows `leader`, alive, and refused this peer's `ballot`. Once so
    /// many refused that the campaign at `ballot` cannot win, or the leader itself
    /// answered so (this peer reaches it), this peer stops campaigning and follows
    /// `leader` too (sending it its proposals). A peer that already leads at `ballot`
    /// ignores it: a majority promised it.
    pub(super) fn on_follow(&mut self, now: Time, from: NodeId, ballot: Ballot, leader: Ballot) {
        if ballot != self.ballot || leader.node == self.config.me || self.prepared_from.is_some() {
            return;
        }
        let peers = self.config.peers;
        let majority = self.majority();
        let Some(campaign) = self.campaign.as_mut() else {
            return;
        };
        campaign.refused.insert(from);
        // The leader itself answering, or too many refusing for a majority.
        if from == leader.node || campaign.refused.len() > peers - majority {
            self.failures += 1;
            self.step_down(now, leader.node);
            if from != leader.node {
                // Hearsay: `leader` has shown this peer no sign of life yet. (Counting it
                // alive could chain peers into following each other in a circle.)
                self.leader_seen = None;
            }
        }
    }

    pub(super) fn on_reject(&mut self, now: Time, ballot: Ballot, promised: Ballot) {
        self.highest_seen = self.highest_seen.max(promised);
        if ballot != self.ballot || promised <= self.ballot {
            return;
        }
        if self.campaign.is_some() || self.prepared_from.is_some() {
            self.failures += 1;
            self.step_down(now, promised.node);
        }
    }

    /// Notes a ballot seen from another proposer; a higher one ends this peer's leadership.
    pub(super) fn observe_ballot(&mut self, now: Time, ballot: Ballot) {
        self.highest_seen = self.highest_seen.max(ballot);
        if ballot.node != self.config.me
            && ballot > self.ballot
            && (self.campaign.is_some() || self.prepared_from.is_some())
        {
            self.step_down(now, ballot.node);
        }
    }

    /// Stops leading because no majority answered through [`UNANSWERED_RESENDS_MAX`]
    /// resends: the answers do not arrive (or the peers are gone). Leading on, its accepts
    /// would keep the peers that still receive them from electing a leader they can
    /// answer; stepped down, it sends nothing that counts as leading, and its prepares do
    /// not count as hearing from it.
    pub(super) fn abdicate(&mut self, now: Time) {
        self.failures += 1;
        let me = self.config.me;
        self.step_down(now, me);
    }

    pub(super) fn step_down(&mut self, now: Time, leader: NodeId) {
        self.campaign = None;
        self.prepared_from = None;
        self.confirmation = None;
        self.recovered.clear();
        self.set_leader(now, leader);
        self.reset_stages();
        let cap = self.config.backoff_max.as_micros() as u64;
        let base = self.config.backoff_min.as_micros() as u64;
        let backoff = base
            .saturating_mul(1 << self.failures.min(16))
            .min(cap)
            .max(1);
        let seqs: Vec<Seq> = self.proposals.keys().copied().collect();
        for seq in seqs {
            let jitter = self.rng.below(backoff);
            if let Some(p) = self.proposals.get_mut(&seq) {
                p.deadline = now + Duration::from_micros(jitter);
                p.forwards = 0;
            }
        }
    }

    pub(super) fn reset_stages(&mut self) {
        for p in self.proposals.values_mut() {
            p.stage = Stage::Waiting;
        }
    }

    pub(super) fn on_forward(
        &mut self,
        now: Time,
        from: NodeId,
        seq: Seq,
        value: Bytes,
        out: &mut Output,
    ) {
        self.note_seq(seq);
        if seq < self.min {
            self.send(out, from, Body::Learned { commits: vec![] });
            return;
        }
        if let Fate::Decided(value) = self.status(seq) {
            let commits = vec![Commit {
                seq,
                ballot: Ballot::ZERO,
                value: Some(value),
            }];
            self.send(out, from, Body::Learned { commits });
            return;
        }
        // Leading or not, take it on: a peer that forwards here believes this one leads
        // (perhaps from before a restart that lost phase 1); dropping the value would leave
        // it forwarding here for as long as this peer shows signs of life. Not leading, the
        // proposal goes on to whoever this peer believes leads, or starts a campaign.
        self.add_proposal(now, seq, value, out);
    }
}
