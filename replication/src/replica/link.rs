//! The Paxos link: moving a Paxos peer's effects into the replica's, and Paxos messages
//! from the wire into the peer.
//!
//! Outgoing Paxos messages are wrapped with this replica's incarnation vector. Incoming
//! ones from an older incarnation of their sender are dropped; a newer incarnation of any
//! replica, learned from any message, is adopted durably and voids every campaign and
//! proposal that may count the old incarnation's votes (the Paxos peer is rebuilt from its
//! own durable state and this replica's in-flight batches are started again). Promises,
//! acceptances and rejections are noted as witness facts about their sender (see `peers`).
//! Paxos's own snapshots are intercepted: this layer's combined snapshot replaces them.

use bytes::Bytes;

use super::durable::{Record, RECORD_KIND};
use super::machine::StateMachine;
use super::message::Message;
use super::peers::PeerMemory;
use super::{Output, Replica};
use crate::effects::Persist;
use crate::paxos::{self, Ballot, Body, Paxos, Seq};
use crate::types::{NodeId, Time};

impl<M: StateMachine> Replica<M> {
    /// This replica's incarnation vector.
    pub(super) fn incarnations(&self) -> std::sync::Arc<[u64]> {
        self.peers.iter().map(|p| p.incarnation).collect()
    }

    /// Moves a Paxos call's effects into ours: records pass through (Paxos snapshots are
    /// replaced by a combined snapshot at the end of the step), messages are wrapped with
    /// the incarnation vector, and events are noted.
    pub(super) fn absorb(&mut self, p: paxos::Output, out: &mut Output<M>) {
        for persist in p.persist {
            match persist {
                Persist::Record { ref payload, .. } => {
                    self.log_bytes += payload.len() as u64;
                    out.persist.push(persist);
                }
                Persist::Snapshot(_) | Persist::Compaction(_) => self.snapshot_wanted = true,
            }
        }
        if p.send.is_empty() && p.send_early.is_empty() {
            return self.note_paxos_events(p.events);
        }
        let incarnations = self.incarnations();
        for (to, msg) in p.send {
            out.send.push((
                to,
                Message::Paxos {
                    incarnations: incarnations.clone(),
                    msg,
                },
            ));
        }
        // Early Paxos messages carry this layer's incarnation vector too: they may only
        // leave early if this layer's own state is not part of what is being persisted.
        let early = self.early_ok(out);
        for (to, msg) in p.send_early {
            let message = Message::Paxos {
                incarnations: incarnations.clone(),
                msg,
            };
            if early {
                out.send_early.push((to, message));
            } else {
                out.send.push((to, message));
            }
        }
        self.note_paxos_events(p.events);
    }

    fn note_paxos_events(&mut self, events: Vec<paxos::Event>) {
        for event in events {
            if let paxos::Event::Behind { forgotten_below } = event {
                if forgotten_below > self.applied.next {
                    self.image_wanted = true;
                }
            }
        }
    }

    pub(super) fn on_paxos(
        &mut self,
        now: Time,
        from: NodeId,
        incarnations: std::sync::Arc<[u64]>,
        msg: paxos::Message,
        out: &mut Output<M>,
    ) {
        if self.phase.is_rebuilding() || incarnations.len() != self.config.peers {
            return;
        }
        if incarnations[from.index()] < self.peers[from.index()].incarnation {
            return; // from an incarnation of the sender that lost its disk since
        }
        self.merge_incarnations(now, &incarnations, out);
        let claim = leadership_claim(&msg.body);
        let hint = self.leader_hint;
        if let Some((ballot, _)) = claim {
            self.note_leader(ballot);
        }
        self.note_witness(from, &msg.body);
        let announced = msg.dones.iter().flatten().max().copied();
        self.peer_done = self.peer_done.max(announced);
        let mut p = paxos::Output::new();
        self.paxos.on_message(now, from, msg, &mut p);
        self.absorb(p, out);
        if let Some((ballot, true)) = claim {
            if self.paxos.promised() != ballot && self.leader_hint == Some(ballot) {
                self.leader_hint = hint; // refused: not where requests should go
            }
        }
    }

    /// Adopts newer incarnations of other replicas. If any replica reincarnated, its old
    /// promises and acceptances must not be counted any more: the Paxos peer is rebuilt
    /// from its own durable state, which drops every campaign and proposal in progress
    /// (our in-flight batches are then started again).
    pub(super) fn merge_incarnations(&mut self, now: Time, theirs: &[u64], out: &mut Output<M>) {
        let me = self.config.me.index();
        let mut changed = false;
        for (j, (mine, theirs)) in self.peers.iter_mut().zip(theirs).enumerate() {
            if j != me && *theirs > mine.incarnation {
                mine.reincarnate(*theirs);
                changed = true;
            }
        }
        if changed {
            self.persist_peers(out);
            self.reset_paxos(now, out);
        }
    }

    /// Persists the peer memory table (synced: answers that depend on it wait for it).
    pub(super) fn persist_peers(&mut self, out: &mut Output<M>) {
        let payload = Record::Peers(self.peers.clone()).encode();
        self.log_bytes += payload.len() as u64;
        out.persist.push(Persist::Record {
            kind: RECORD_KIND,
            payload,
            sync: true,
        });
    }

    pub(super) fn reset_paxos(&mut self, now: Time, out: &mut Output<M>) {
        let state = self.paxos.durable_state();
        let config = super::paxos_config(&self.config);
        let passive = !self.phase.is_active();
        let mut paxos = Paxos::from_state(config, self.rng.fork(), Some(state), std::iter::empty())
            .expect("a peer's own durable state always installs");
        // The same process, the same clock: what this acceptor granted still binds it, so
        // the new peer need not wait out a lease as a started one does.
        paxos.keep_leases_of(&self.paxos);
        self.paxos = paxos;
        self.paxos.set_passive(passive);
        let restart: Vec<(Seq, Bytes)> = self
            .inflight
            .iter()
            .map(|(slot, f)| (*slot, f.value.clone()))
            .collect();
        for (slot, value) in restart {
            let mut p = paxos::Output::new();
            self.paxos.start(now, slot, value, &mut p);
            self.absorb(p, out);
        }
    }

    /// Follows `ballot` as where requests go, unless a higher one is known.
    fn note_leader(&mut self, ballot: Ballot) {
        if self.leader_hint.is_none_or(|b| ballot >= b) {
            self.leader_hint = Some(ballot);
        }
    }

    /// Notes what `from` told us of its own durable acceptor state.
    fn note_witness(&mut self, from: NodeId, body: &Body) {
        let memory = &mut self.peers[from.index()];
        let before = *memory;
        match body {
            Body::Promise { ballot, .. } => memory.saw_promise(*ballot),
            Body::Accepted { ballot, seq, .. } => memory.saw_accept(*ballot, *seq),
            Body::Reject { promised, .. } => memory.saw_promise(*promised),
            _ => {}
        }
        self.witness_changed |= *memory != before;
    }

    /// Takes in what another replica remembers (of every replica but this one).
    /// A start learned this way is persisted (synced) before anything else this replica
    /// says, as one checked directly is: a crash must not make it forget a later start of a
    /// peer and then vouch for that peer's restored older disk.
    pub(super) fn on_witness(&mut self, table: &[PeerMemory], out: &mut Output<M>) {
        if table.len() != self.config.peers || self.phase.is_rebuilding() {
            return;
        }
        let me = self.config.me.index();
        let mut new_start = false;
        for (j, theirs) in table.iter().enumerate() {
            let boot = self.peers[j].boot;
            if j != me && self.peers[j].absorb(theirs) {
                self.witness_changed = true;
                new_start |= self.peers[j].boot != boot;
            }
        }
        if new_start {
            self.persist_peers(out);
        }
    }

    /// Shares this replica's memory with every peer, at most once per gossip interval and
    /// only when it changed.
    pub(super) fn share_witness(&mut self, now: Time, out: &mut Output<M>) {
        if !self.witness_changed
            || self
                .last_witness
                .is_some_and(|t| now - t < self.config.gossip_interval)
        {
            return;
        }
        self.witness_changed = false;
        self.last_witness = Some(now);
        let peers: Vec<NodeId> = self.others().collect();
        for peer in peers {
            out.send.push((
                peer,
                Message::Witness {
                    peers: self.peers.clone(),
                },
            ));
        }
    }
}

/// The ballot a message shows leading or about to lead (an accept's, a prepare's, the
/// leader a refusal names in [`Body::Follow`]), and whether it is a prepare's. The
/// replica follows it before the Paxos peer handles the message, so what that step routes
/// goes there; a prepare the acceptor then refused (say, from a node that cannot hear the
/// leader and so keeps campaigning) is taken back, so requests do not go to it.
fn leadership_claim(body: &Body) -> Option<(Ballot, bool)> {
    match body {
        Body::Prepare { ballot, .. } => Some((*ballot, true)),
        Body::Accept { ballot, .. } => Some((*ballot, false)),
        Body::Follow { leader, .. } => Some((*leader, false)),
        _ => None,
    }
}
