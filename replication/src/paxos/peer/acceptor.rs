//! The acceptor: promises, accepts, and the pages of accepted instances a promise reports.

use super::*;

impl Paxos {
    pub(super) fn on_prepare(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        f: Seq,
        out: &mut Output,
    ) {
        if !self.promise_to(now, from, ballot, out) {
            return;
        }
        let (entries, next) = self.entries_page(f);
        self.send(
            out,
            from,
            Body::Promise {
                ballot,
                from: f,
                entries,
                next,
            },
        );
    }

    pub(super) fn on_accept(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        seq: Seq,
        value: Bytes,
        out: &mut Output,
    ) {
        if self.is_silent() {
            return;
        }
        self.note_seq(seq);
        if seq < self.min {
            self.send(out, from, Body::Learned { commits: vec![] });
            return;
        }
        if ballot < self.promised {
            let promised = self.promised;
            self.send(out, from, Body::Reject { ballot, promised });
            return;
        }
        self.observe_ballot(now, ballot);
        self.set_leader(now, ballot.node);
        match self.instances.get(&seq) {
            Some(Instance::Decided(decided)) => {
                // Nothing to accept: tell the proposer the outcome instead. (A lower ballot
                // than the deciding one may legitimately carry another value.)
                let commits = vec![Commit {
                    seq,
                    ballot: Ballot::ZERO,
                    value: Some(decided.clone()),
                }];
                self.send(out, from, Body::Learned { commits });
                return;
            }
            Some(Instance::Accepted {
                ballot: accepted,
                value: v,
            }) if *accepted == ballot => {
                assert_eq!(
                    v, &value,
                    "two values proposed at ballot {ballot} for {seq}"
                );
            }
            _ => {
                self.promised = ballot;
                self.insert_instance(
                    seq,
                    Instance::Accepted {
                        ballot,
                        value: value.clone(),
                    },
                );
                self.persist(Record::Accept { seq, ballot, value }, out);
            }
        }
        let grant = self.grant_lease(now, ballot.node);
        self.send(out, from, Body::Accepted { ballot, seq, grant });
    }

    /// Promises `ballot` (durably, if it is new) and takes its owner as the leader; false
    /// (having told the asker the higher promise) if this acceptor promised higher, or may
    /// not vote.
    pub(super) fn promise_to(
        &mut self,
        now: Time,
        from: NodeId,
        ballot: Ballot,
        out: &mut Output,
    ) -> bool {
        if self.is_silent() {
            return false;
        }
        if ballot < self.promised {
            let promised = self.promised;
            self.send(out, from, Body::Reject { ballot, promised });
            return false;
        }
        if self.lease_forbids(now, ballot) {
            return false; // a lease to another node runs: the asker retries
        }
        if ballot != self.promised && self.follows_another(now, ballot.node) {
            // This peer's leader is alive: the asker should follow it too.
            let leader = self.promised;
            self.send(out, from, Body::Follow { ballot, leader });
            return false;
        }
        self.observe_ballot(now, ballot);
        self.raise_promise(ballot, out);
        // A prepare is no sign that its sender leads (one that cannot hear the answers
        // keeps sending them): it names the leader, but only a change of leader starts
        // the wait for it to show it leads.
        if self.leader != Some(ballot.node) {
            self.set_leader(now, ballot.node);
        }
        true
    }

    /// Whether this peer follows a leader other than `node` that is alive: one it heard
    /// leading within `leader_timeout`, or itself, leading and hearing from a majority
    /// ([`Paxos::leads_answered`]). Such an acceptor promises `node` nothing, so a node
    /// that cannot hear the leader (and so campaigns) does not depose a leader a majority
    /// works with (Raft's "disruptive servers"). Refusing a promise is always safe; a
    /// leader that is really gone is past `leader_timeout` for everyone who followed it.
    fn follows_another(&self, now: Time, node: NodeId) -> bool {
        // Only while the promise is the leader's ballot: the refusal names it.
        match self
            .leader
            .filter(|&l| l != node && l == self.promised.node)
        {
            None => false,
            Some(leader) if leader == self.config.me => self.leads_answered(now),
            Some(_) => self.leader_alive(now),
        }
    }

    pub(super) fn raise_promise(&mut self, ballot: Ballot, out: &mut Output) {
        if ballot > self.promised {
            self.promised = ballot;
            self.persist(Record::Promise(ballot), out);
        }
    }

    pub(super) fn entries_from(&self, from: Seq) -> Vec<Entry> {
        self.instances
            .range(from.max(self.min)..)
            .map(|(seq, i)| entry(*seq, i))
            .collect()
    }

    /// The instances from `from` on (accepted or decided) until their values reach
    /// `message_bytes_max` (at least one), and where the next page starts if any remain:
    /// what a rebuilding peer reads of this acceptor.
    pub fn instances_page(&self, from: Seq) -> (Vec<(Seq, SnapshotInstance)>, Option<Seq>) {
        let (entries, next) = self.entries_page(from);
        let instances = entries
            .into_iter()
            .map(|e| {
                let instance = if e.decided {
                    SnapshotInstance::Decided(e.value)
                } else {
                    SnapshotInstance::Accepted {
                        ballot: e.ballot,
                        value: e.value,
                    }
                };
                (e.seq, instance)
            })
            .collect();
        (instances, next)
    }

    /// One promise page: the instances from `from` on until their values reach
    /// `message_bytes_max` (at least one), and where the next page starts if any remain.
    pub(super) fn entries_page(&self, from: Seq) -> (Vec<Entry>, Option<Seq>) {
        let budget = self.config.message_bytes_max;
        let mut entries = Vec::new();
        let mut bytes = 0;
        for (seq, instance) in self.instances.range(from.max(self.min)..) {
            let size = instance_bytes(instance);
            if !entries.is_empty() && bytes + size > budget {
                return (entries, Some(*seq));
            }
            bytes += size;
            entries.push(entry(*seq, instance));
        }
        (entries, None)
    }
}
