//! Linearizable reads that append nothing to the log: read index.
//!
//! A read ([`StateMachine::is_read`]) is answered from the applied state once this replica
//! has applied every instance below the read's *bound*, a log position fixed by the leader:
//!
//! - **At the leader.** Reads that arrive are batched into one *confirmation round*: when
//!   no round is in flight, the leader fixes `bound` = one past the highest instance it
//!   knows to exist ([`Replica::known_max`]: seen by its Paxos peer, which notes every
//!   instance it started, took over or heard of; fetched; fenced; or announced done by a
//!   peer), then asks every acceptor whether its promise is still the leader's ballot
//!   ([`crate::paxos::Paxos::confirm_leadership`]). Once a majority says yes, every read of the round
//!   waits for `applied.next >= bound` and is answered by [`StateMachine::read`]. Reads
//!   that arrive while a round is in flight wait for the next one, so one confirmation
//!   serves every read that queued up behind it.
//! - **At a follower.** The reads it holds are batched into one [`Message::ReadIndex`] to
//!   the replica it believes leads, which puts the ask into its next round and answers
//!   [`Message::ReadIndexed`] with that round's bound once confirmed; the follower answers
//!   the reads once it has applied below the bound. A follower that gets no answer within
//!   `forward_timeout`, or is told the asked replica does not lead, and a replica that
//!   knows no leader, sends its reads through the log (as every command), which is always
//!   safe. A replica that is not active (restarting, rebuilding) answers no read.
//!
//! # Why this is linearizable
//!
//! Let a round start at time `t` at the leader `L` holding ballot `b`, with bound `B`. A
//! read of the round arrived before `t`; it is answered from a state that includes every
//! instance below `B` (and perhaps more, all decided, so all invoked before the answer).
//! It suffices that every instance decided before `t` lies below `B`: then every write
//! acknowledged before the read arrived is in the state read, and no write in an instance
//! at or above the state's cursor was acknowledged before the read arrived, so the read
//! can be placed in the log order after the state's last instance. An instance `s` decided
//! before `t` was accepted by a majority at some ballot `c`:
//!
//! - `c > b` is impossible: a majority answered the round with promise `b`, each after
//!   `t`; an acceptor that accepts at `c` first raises its promise to `c`, promises never
//!   fall, and any two majorities intersect.
//! - `c = b`: only `L` proposes at `b`, and it notes every instance it starts.
//! - `c < b`, `s >=` the instance `L` prepared from: a majority promised `b` to `L`; one
//!   of them had accepted `s` (at `c` or a later ballot) before promising, and reported
//!   it in its promise — or had forgotten it, which an acceptor does only at or below its
//!   own `done`, which its promise carries to `L` (`peer_done`).
//! - `c < b`, `s <` that instance: `L` prepares from its lowest own proposal, which it
//!   noted, so `s` is below an instance `L` knows.
//!
//! In every case `s <= known_max` at `t`, so `s < B`. A follower's read arrived before it
//! asked, hence before the leader's round started. Without leases (below), nothing
//! assumes clocks. Acceptors that lost their disk take part only after rebuilding their
//! promise from a majority (see `rebuild`), and confirmations travel as Paxos messages, so
//! incarnation checks apply.
//!
//! [`ReplicaConfig::unsafe_skip_read_confirmation`] skips the round (tests only: the
//! sweep must catch the stale reads of a deposed leader that it lets through).
//!
//! **Leases.** With [`crate::paxos::Lease`]s on, a leader that holds one releases a round
//! at once, without confirmation: the grants behind its lease show, until it ends, what a
//! majority's answers to a round would (the argument is in `paxos/peer/lease.rs`). A
//! follower still asks the leader, which then answers at once. This rests on the lease's
//! assumption about clock rates, which nothing above does.
//!
//! Reads are never deduplicated: answering one twice is harmless.

use std::collections::BTreeMap;

use super::machine::StateMachine;
use super::message::Message;
use super::requests::{Route, State};
use super::{Output, Replica};
use crate::paxos::{self, Seq};
use crate::types::{ClientId, NodeId, Time};

/// A read: its client and seq (stale once the client's waiting request is another).
type ReadId = (ClientId, u64);

/// The reads of one replica on their way to an answer.
#[derive(Debug, Default)]
pub(super) struct Reads {
    /// Reads not yet put in a round or asked of the leader.
    new: Vec<ReadId>,
    /// The confirmation round in flight at this (leading) replica.
    round: Option<Round>,
    /// Followers' asks for the next round.
    asks: Vec<(NodeId, u64)>,
    /// Asks this replica sent: when, and their reads.
    asked: BTreeMap<u64, (Time, Vec<ReadId>)>,
    /// Reads with a bound, by bound.
    ready: BTreeMap<Seq, Vec<ReadId>>,
    /// Numbers rounds and asks.
    counter: u64,
    /// The highest bound this replica waits for: instances below it exist.
    pub horizon: Option<Seq>,
    /// Reads answered at a read index.
    pub answered: u64,
    /// Reads sent through the log instead.
    pub logged: u64,
    /// Rounds this replica released under a lease, without confirmation.
    pub leased: u64,
}

#[derive(Debug)]
struct Round {
    id: u64,
    bound: Seq,
    reads: Vec<ReadId>,
    asks: Vec<(NodeId, u64)>,
}

impl Reads {
    /// Whether a read waits for instance `seq` to be applied (its bound is above it).
    pub fn wait_for(&self, seq: Seq) -> bool {
        self.ready
            .keys()
            .next_back()
            .is_some_and(|bound| *bound > seq)
    }

    /// Takes a new read.
    pub fn push(&mut self, read: ReadId) {
        self.new.push(read);
    }

    /// Forgets everything (the replica dropped its waiting requests).
    pub fn clear(&mut self) {
        *self = Reads {
            counter: self.counter,
            answered: self.answered,
            logged: self.logged,
            leased: self.leased,
            ..Reads::default()
        };
    }

    fn next_id(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }
}

impl<M: StateMachine> Replica<M> {
    /// Moves reads along: finishes or abandons the round in flight, starts the next round
    /// or asks the leader (unless held), and answers the reads whose bound is applied.
    pub(super) fn serve_reads(&mut self, now: Time, out: &mut Output<M>) {
        if !self.phase.is_active() {
            return;
        }
        self.finish_round(out);
        if !self.held {
            self.route_reads(now, out);
        }
        self.answer_reads(out);
    }

    /// The bound of a round starting now: one past every instance known to exist.
    fn read_bound(&self) -> Seq {
        self.known_max()
            .map_or(Seq::ZERO, Seq::next)
            .max(self.applied.next)
    }

    fn route_reads(&mut self, now: Time, out: &mut Output<M>) {
        if self.paxos.is_leader() {
            self.start_round(now, out);
            return;
        }
        if self.reads.new.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.reads.new);
        match self.route(now) {
            Route::Forward(leader) => {
                let ask = self.reads.next_id();
                self.reads.asked.insert(ask, (now, reads));
                out.send.push((leader, Message::ReadIndex { ask }));
            }
            Route::Propose => self.reads_to_log(reads),
        }
    }

    fn start_round(&mut self, now: Time, out: &mut Output<M>) {
        if self.reads.round.is_some() || (self.reads.new.is_empty() && self.reads.asks.is_empty()) {
            return;
        }
        let id = self.reads.next_id();
        let round = Round {
            id,
            bound: self.read_bound(),
            reads: std::mem::take(&mut self.reads.new),
            asks: std::mem::take(&mut self.reads.asks),
        };
        if self.config.unsafe_skip_read_confirmation {
            self.release_round(round, out);
            return;
        }
        if self.paxos.holds_lease(now) {
            // The acknowledgements that granted the lease show what a round would.
            self.reads.leased += 1;
            self.release_round(round, out);
            return;
        }
        let mut p = paxos::Output::new();
        let started = self.paxos.confirm_leadership(now, id, &mut p);
        self.absorb(p, out);
        if started {
            self.reads.round = Some(round);
            self.finish_round(out);
        } else {
            self.abandon_round(round, out);
        }
    }

    /// Releases the round in flight once a majority confirmed it; abandons it once the
    /// Paxos peer gave it up (leadership ended).
    fn finish_round(&mut self, out: &mut Output<M>) {
        let Some(id) = self.reads.round.as_ref().map(|r| r.id) else {
            return;
        };
        let confirmed = self.paxos.confirmed_round() == Some(id);
        if !confirmed && self.paxos.confirming_round() == Some(id) {
            return;
        }
        let round = self.reads.round.take().expect("a round is in flight");
        if confirmed {
            self.release_round(round, out);
        } else {
            self.abandon_round(round, out);
        }
    }

    fn release_round(&mut self, round: Round, out: &mut Output<M>) {
        let bound = Some(round.bound);
        for (peer, ask) in round.asks {
            out.send.push((peer, Message::ReadIndexed { ask, bound }));
        }
        self.reads
            .ready
            .entry(round.bound)
            .or_default()
            .extend(round.reads);
    }

    /// The round cannot be confirmed: its reads are routed again, and the askers told.
    fn abandon_round(&mut self, round: Round, out: &mut Output<M>) {
        for (peer, ask) in round.asks {
            out.send
                .push((peer, Message::ReadIndexed { ask, bound: None }));
        }
        self.reads.new.extend(round.reads);
    }

    /// Answers every read whose bound is applied, from the applied state.
    fn answer_reads(&mut self, out: &mut Output<M>) {
        while let Some(entry) = self.reads.ready.first_entry() {
            if *entry.key() > self.applied.next {
                break;
            }
            for (client, seq) in entry.remove() {
                let Some(w) = self.waiting.get(&client) else {
                    continue;
                };
                if w.request.seq == seq && w.state == State::Reading {
                    let reply = self.applied.machine.read(&w.request.command);
                    self.reads.answered += 1;
                    self.answer(client, seq, &reply, out);
                }
            }
        }
    }

    /// Sends reads through the log instead.
    fn reads_to_log(&mut self, reads: Vec<ReadId>) {
        for (client, seq) in reads {
            if let Some(w) = self.waiting.get_mut(&client) {
                if w.request.seq == seq && w.state == State::Reading {
                    w.state = State::Queued;
                    let bytes = M::command_bytes(&w.request.command);
                    self.own_queue.push_back(client, bytes);
                    self.reads.logged += 1;
                }
            }
        }
    }

    /// A peer asks this replica, which it believes leads, for a read index.
    pub(super) fn on_read_index(&mut self, from: NodeId, ask: u64, out: &mut Output<M>) {
        if self.phase.is_active() && self.paxos.is_leader() {
            self.reads.asks.push((from, ask));
        } else {
            out.send
                .push((from, Message::ReadIndexed { ask, bound: None }));
        }
    }

    /// The leader's answer to an ask of ours.
    pub(super) fn on_read_indexed(&mut self, ask: u64, bound: Option<Seq>) {
        let Some((_, reads)) = self.reads.asked.remove(&ask) else {
            return;
        };
        match bound {
            Some(bound) => {
                let last = bound.0.checked_sub(1).map(Seq);
                self.reads.horizon = self.reads.horizon.max(last);
                self.reads.ready.entry(bound).or_default().extend(reads);
            }
            None => self.reads_to_log(reads),
        }
    }

    /// Sends through the log the reads whose ask went unanswered for `forward_timeout`.
    pub(super) fn expire_read_asks(&mut self, now: Time) {
        let timeout = self.config.forward_timeout;
        let expired: Vec<u64> = self
            .reads
            .asked
            .iter()
            .filter(|(_, (at, _))| now - *at >= timeout)
            .map(|(ask, _)| *ask)
            .collect();
        for ask in expired {
            if let Some((_, reads)) = self.reads.asked.remove(&ask) {
                self.reads_to_log(reads);
            }
        }
    }
}
