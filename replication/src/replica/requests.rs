//! Client requests: from arrival to answer.
//!
//! A request goes into `waiting` (one per client: the lab's one-outstanding-request rule).
//! The leader (the peer holding Paxos phase 1) batches waiting requests into one value per
//! instance, keeping up to `inflight_max` instances started and undecided; a follower
//! forwards its clients' requests to the replica it believes leads (the owner of the highest
//! ballot seen in an accept or prepare), and proposes them itself if they are not applied
//! within `forward_timeout` (plus their transfer time). Requests forwarded *to* a replica
//! are always proposed there, never forwarded again, so forwarding cannot loop. Every
//! replica applies every decided instance in order and answers the requests it holds when
//! their instance is applied.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::applied::Applied;
use super::machine::{Request, StateMachine};
use super::message::{Batch, Message};
use super::rebuild::Phase;
use super::{Event, Output, Replica};
use crate::paxos::{self, Fate, Seq};
use crate::timing;
use crate::types::{ClientId, NodeId, Time};

/// Bound on apply/propose rounds within one call (each round makes progress).
const SETTLE_ROUNDS_MAX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Waiting to be put in a batch.
    Queued,
    /// Handed to the presumed leader at `at`.
    Forwarded { at: Time },
    /// In the batch this replica proposed for `slot`.
    Proposed { slot: Seq },
    /// A read on the read-index path (see `reads`), in no queue for the log.
    Reading,
}

#[derive(Debug)]
pub(super) struct Waiting<C> {
    pub request: Request<C>,
    /// The driver's tags to answer (empty for requests forwarded here by a peer).
    pub tags: Vec<u64>,
    pub state: State,
    /// Forwarded here by a peer: always proposed here, never forwarded again.
    pub relayed: bool,
}

#[derive(Debug)]
pub(super) struct InFlight {
    pub value: Bytes,
    pub requests: Vec<(ClientId, u64)>,
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Route {
    Propose,
    Forward(NodeId),
}

impl<M: StateMachine> Replica<M> {
    pub(super) fn accept_request(
        &mut self,
        tag: Option<u64>,
        request: Request<M::Command>,
        relayed: bool,
        out: &mut Output<M>,
    ) {
        if !self.phase.serves_requests() {
            drop_tag::<M>(tag, out);
            return;
        }
        if request.is_internal() {
            // Only replicas propose these (see `Replica::propose`); a client cannot.
            if relayed {
                self.internal.push_back(request.command);
            } else {
                drop_tag::<M>(tag, out);
            }
            return;
        }
        if let Some(reply) = self.applied.executed(&request) {
            if let Some(tag) = tag {
                out.events.push(Event::Reply { tag, reply });
            }
            return;
        }
        let client = request.client;
        match self.waiting.get_mut(&client) {
            Some(w) if w.request.seq == request.seq => {
                w.tags.extend(tag);
                return;
            }
            Some(w) if w.request.seq > request.seq => {
                drop_tag::<M>(tag, out);
                return;
            }
            Some(_) => {
                if let Some(old) = self.waiting.remove(&client) {
                    for tag in old.tags {
                        out.events.push(Event::Dropped { tag });
                    }
                }
            }
            None => {}
        }
        if self.waiting.len() >= self.config.pending_max {
            drop_tag::<M>(tag, out);
            return;
        }
        // Reads take the read-index path; a read a peer forwarded is already on the log's.
        let read = !relayed && M::is_read(&request.command);
        if read {
            self.reads.push((client, request.seq));
        } else {
            let bytes = M::command_bytes(&request.command);
            self.queue_of(relayed).push_back(client, bytes);
        }
        self.waiting.insert(
            client,
            Waiting {
                request,
                tags: tag.into_iter().collect(),
                state: if read { State::Reading } else { State::Queued },
                relayed,
            },
        );
    }

    fn queue_of(&mut self, relayed: bool) -> &mut Queue {
        if relayed {
            &mut self.relay_queue
        } else {
            &mut self.own_queue
        }
    }

    /// Answers the waiting request of `client` if it is number `seq`; drops it if the
    /// client has moved past it.
    pub(super) fn answer(
        &mut self,
        client: ClientId,
        seq: u64,
        reply: &M::Reply,
        out: &mut Output<M>,
    ) {
        let Some(w) = self.waiting.get(&client) else {
            return;
        };
        if w.request.seq > seq {
            return;
        }
        let answered = w.request.seq == seq;
        let Some(w) = self.waiting.remove(&client) else {
            return;
        };
        for tag in w.tags {
            out.events.push(if answered {
                Event::Reply {
                    tag,
                    reply: reply.clone(),
                }
            } else {
                Event::Dropped { tag }
            });
        }
    }

    fn requeue_if_proposed(&mut self, client: ClientId, seq: u64, slot: Seq) {
        let Some(w) = self.waiting.get_mut(&client) else {
            return;
        };
        if w.request.seq == seq && w.state == (State::Proposed { slot }) {
            w.state = State::Queued;
            let relayed = w.relayed;
            let bytes = M::command_bytes(&w.request.command);
            self.queue_of(relayed).push_front(client, bytes);
        }
    }

    pub(super) fn expire_forwards(&mut self, now: Time) {
        let timeout = self.config.forward_timeout;
        let rate = self.config.paxos.transfer_bytes_per_sec;
        let mut expired = Vec::new();
        for (client, w) in self.waiting.iter_mut() {
            if let State::Forwarded { at } = w.state {
                // A large request takes longer to reach the leader and its log.
                let bytes = M::command_bytes(&w.request.command);
                if now - at >= timeout + timing::transfer_time(bytes, rate) {
                    w.state = State::Queued;
                    expired.push((*client, bytes));
                }
            }
        }
        if !expired.is_empty() {
            // The presumed leader did not get them decided: propose ourselves for a while.
            self.propose_locally_until = now + timeout;
            for (client, bytes) in expired {
                self.own_queue.push_back(client, bytes);
            }
        }
    }

    /// Puts queued requests into batches: proposes them (leader, or no live leader known)
    /// or forwards them to the presumed leader. Returns whether anything was proposed.
    fn pump(&mut self, now: Time, out: &mut Output<M>) -> bool {
        if !self.phase.is_active() || self.held {
            return false;
        }
        let mut proposed = false;
        loop {
            if self.inflight.len() >= self.config.inflight_max {
                break;
            }
            if !self.internal.is_empty() {
                self.propose_internal(now, out);
                proposed = true;
                continue;
            }
            // One instance in flight: the next waits for it unless a batch is full.
            let wait = !self.inflight.is_empty() && !self.full_batch_queued();
            if !wait {
                let relayed = take_batch::<M>(
                    &mut self.relay_queue,
                    &self.waiting,
                    self.config.batch_ops_max,
                    self.config.batch_bytes_max,
                );
                if !relayed.is_empty() {
                    self.propose_batch(now, relayed, out);
                    proposed = true;
                    continue;
                }
            }
            let route = self.route(now);
            if wait && matches!(route, Route::Propose) {
                break;
            }
            let own = take_batch::<M>(
                &mut self.own_queue,
                &self.waiting,
                self.config.batch_ops_max,
                self.config.batch_bytes_max,
            );
            if own.is_empty() {
                break;
            }
            match route {
                Route::Propose => {
                    self.propose_batch(now, own, out);
                    proposed = true;
                }
                Route::Forward(leader) => self.forward(now, leader, own, out),
            }
        }
        proposed
    }

    /// Whether the queued requests (relayed and own) fill a batch (counting, until a
    /// batch is taken, entries whose requests moved on meanwhile).
    fn full_batch_queued(&self) -> bool {
        self.relay_queue.len() + self.own_queue.len() >= self.config.batch_ops_max
            || self.relay_queue.bytes() + self.own_queue.bytes() >= self.config.batch_bytes_max
    }

    pub(super) fn route(&self, now: Time) -> Route {
        if self.paxos.is_leader() || now < self.propose_locally_until {
            return Route::Propose;
        }
        match self.leader_hint {
            Some(ballot) if ballot.node != self.config.me => Route::Forward(ballot.node),
            _ => Route::Propose,
        }
    }

    fn propose_batch(&mut self, now: Time, clients: Vec<ClientId>, out: &mut Output<M>) {
        let slot = self.free_slot();
        let mut ids = Vec::with_capacity(clients.len());
        for client in clients {
            if let Some(w) = self.waiting.get_mut(&client) {
                w.state = State::Proposed { slot };
                ids.push((client, w.request.seq));
            }
        }
        let requests: Vec<&Request<M::Command>> = ids
            .iter()
            .map(|(client, _)| &self.waiting[client].request)
            .collect();
        let value = Batch::encode(self.config.me, &requests);
        self.inflight.insert(
            slot,
            InFlight {
                value: value.clone(),
                requests: ids,
            },
        );
        let mut p = paxos::Output::new();
        self.paxos.start(now, slot, value, &mut p);
        self.absorb(p, out);
    }

    /// Proposes the replica's own queued commands (a batch of them) in a free instance.
    fn propose_internal(&mut self, now: Time, out: &mut Output<M>) {
        let mut requests = Vec::new();
        let mut bytes = 0;
        while let Some(command) = self.internal.front() {
            let size = M::command_bytes(command);
            if !requests.is_empty()
                && (requests.len() >= self.config.batch_ops_max
                    || bytes + size > self.config.batch_bytes_max)
            {
                break;
            }
            bytes += size;
            let command = self.internal.pop_front().expect("front exists");
            requests.push(Request::internal(command));
        }
        let slot = self.free_slot();
        let value = Batch::encode(self.config.me, &requests);
        self.inflight.insert(
            slot,
            InFlight {
                value: value.clone(),
                requests: Vec::new(),
            },
        );
        let mut p = paxos::Output::new();
        self.paxos.start(now, slot, value, &mut p);
        self.absorb(p, out);
    }

    fn forward(&mut self, now: Time, leader: NodeId, clients: Vec<ClientId>, out: &mut Output<M>) {
        let mut requests = Vec::with_capacity(clients.len());
        for client in clients {
            if let Some(w) = self.waiting.get_mut(&client) {
                w.state = State::Forwarded { at: now };
                requests.push(w.request.clone());
            }
        }
        // Client requests reveal nothing this replica persists.
        let message = Message::Forward { requests };
        if self.early_ok(out) {
            out.send_early.push((leader, message));
        } else {
            out.send.push((leader, message));
        }
    }

    /// The lowest instance this replica may start: above everything it has applied, seen,
    /// fetched, fenced off or started.
    fn free_slot(&mut self) -> Seq {
        let mut slot = self
            .next_slot
            .max(self.applied.next)
            .max(self.known_max().map_or(Seq::ZERO, Seq::next));
        while self.inflight.contains_key(&slot) {
            slot = slot.next();
        }
        self.next_slot = slot.next();
        slot
    }

    /// The highest instance known to exist: seen by Paxos, fetched, reported at the last
    /// rebuild, or marked done by a peer.
    pub(super) fn known_max(&self) -> Option<Seq> {
        let fetched = self.fetched.keys().next_back().copied();
        self.paxos
            .max()
            .max(fetched)
            .max(self.fence)
            .max(self.peer_done)
    }

    // ---------------------------------------------------------------------------------
    // Applying.
    // ---------------------------------------------------------------------------------

    /// Applies and proposes until nothing changes, then snapshots if due.
    pub(super) fn settle(&mut self, now: Time, out: &mut Output<M>) {
        for _ in 0..SETTLE_ROUNDS_MAX {
            let applied = self.apply_ready(now, out);
            self.serve_reads(now, out);
            let proposed = self.pump(now, out);
            if !applied && !proposed {
                break;
            }
        }
        self.maybe_snapshot(now, out);
    }

    fn apply_ready(&mut self, now: Time, out: &mut Output<M>) -> bool {
        if !self.phase.applies() {
            return false;
        }
        let mut applied = false;
        loop {
            let seq = self.applied.next;
            if self.fetched.is_empty()
                && seq >= self.paxos.min()
                && self.paxos.max().is_none_or(|max| max < seq)
            {
                // Nothing at or beyond `seq` is known yet (the common case once caught up).
                break;
            }
            let fate = self.paxos.status(seq);
            let value = match fate {
                Fate::Decided(value) => {
                    self.fetched.remove(&seq);
                    value
                }
                Fate::Pending | Fate::Forgotten => match self.fetched.remove(&seq) {
                    Some(value) => value,
                    None => {
                        if fate == Fate::Forgotten {
                            self.image_wanted = true;
                        }
                        break;
                    }
                },
            };
            if !self.apply_value(now, seq, &value, out) {
                break;
            }
            applied = true;
        }
        applied
    }

    /// Applies one decided value; false (and halted) if it does not decode.
    fn apply_value(&mut self, now: Time, seq: Seq, value: &[u8], out: &mut Output<M>) -> bool {
        let requests = match Batch::<M::Command>::decode(value) {
            Ok(requests) => requests,
            Err(e) => {
                let reason = format!("the value decided for {seq} does not decode: {e}");
                out.events.push(Event::Halted {
                    reason: reason.clone(),
                });
                self.phase = Phase::Halted(reason);
                return false;
            }
        };
        let replies = self.applied.apply(seq, value, &requests);
        for (request, reply) in requests.iter().zip(&replies) {
            self.answer(request.client, request.seq, reply, out);
        }
        if let Some(flight) = self.inflight.remove(&seq) {
            if flight.value[..] == value[..] {
                self.proposals_decided += 1;
            } else {
                self.proposals_failed += 1;
            }
            for (client, s) in flight.requests {
                self.requeue_if_proposed(client, s, seq);
            }
        }
        self.last_apply = now;
        self.stall = None;
        self.image_wanted = false;
        true
    }

    /// Adopts a more advanced applied state (state transfer).
    pub(super) fn install(&mut self, now: Time, applied: Applied<M>, out: &mut Output<M>) {
        self.installs += 1;
        let next = applied.next;
        self.applied = applied;
        self.fetched = self.fetched.split_off(&next);
        let passed: Vec<Seq> = self.inflight.range(..next).map(|(s, _)| *s).collect();
        for slot in passed {
            if let Some(flight) = self.inflight.remove(&slot) {
                for (client, s) in flight.requests {
                    self.requeue_if_proposed(client, s, slot);
                }
            }
        }
        let mut executed = Vec::new();
        for (client, w) in &self.waiting {
            if let Some(reply) = self.applied.executed(&w.request) {
                executed.push((*client, w.request.seq, reply));
            }
        }
        for (client, seq, reply) in executed {
            self.answer(client, seq, &reply, out);
        }
        self.next_slot = self.next_slot.max(next);
        self.image_wanted = false;
        self.stall = None;
        self.last_apply = now;
        self.take_snapshot(now, out);
    }

    /// Drops every waiting request (the replica stopped serving).
    pub(super) fn drop_waiting(&mut self, out: &mut Output<M>) {
        for (_, w) in std::mem::take(&mut self.waiting) {
            for tag in w.tags {
                out.events.push(Event::Dropped { tag });
            }
        }
        self.own_queue.clear();
        self.relay_queue.clear();
        self.proposals_failed += self.inflight.len() as u64;
        self.inflight.clear();
        self.reads.clear();
    }
}

fn drop_tag<M: StateMachine>(tag: Option<u64>, out: &mut Output<M>) {
    if let Some(tag) = tag {
        out.events.push(Event::Dropped { tag });
    }
}

/// Clients whose requests wait to be batched, in order, with their commands' bytes as
/// queued. An entry whose request was answered or moved on meanwhile stays (and counts)
/// until a batch is taken past it.
#[derive(Debug, Default)]
pub(super) struct Queue {
    clients: VecDeque<(ClientId, usize)>,
    bytes: usize,
}

impl Queue {
    pub(super) fn push_back(&mut self, client: ClientId, bytes: usize) {
        self.clients.push_back((client, bytes));
        self.bytes += bytes;
    }

    fn push_front(&mut self, client: ClientId, bytes: usize) {
        self.clients.push_front((client, bytes));
        self.bytes += bytes;
    }

    fn front(&self) -> Option<ClientId> {
        self.clients.front().map(|(client, _)| *client)
    }

    fn pop_front(&mut self) {
        if let Some((_, bytes)) = self.clients.pop_front() {
            self.bytes -= bytes;
        }
    }

    fn len(&self) -> usize {
        self.clients.len()
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn clear(&mut self) {
        self.clients.clear();
        self.bytes = 0;
    }
}

/// Pops queued requests (skipping entries no longer queued) into one batch.
fn take_batch<M: StateMachine>(
    queue: &mut Queue,
    waiting: &BTreeMap<ClientId, Waiting<M::Command>>,
    ops_max: usize,
    bytes_max: usize,
) -> Vec<ClientId> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(client) = queue.front() {
        let Some(w) = waiting.get(&client).filter(|w| w.state == State::Queued) else {
            queue.pop_front();
            continue;
        };
        if batch.contains(&client) {
            queue.pop_front();
            continue;
        }
        let size = M::command_bytes(&w.request.command);
        if !batch.is_empty() && (batch.len() >= ops_max || bytes + size > bytes_max) {
            break;
        }
        queue.pop_front();
        batch.push(client);
        bytes += size;
    }
    batch
}
