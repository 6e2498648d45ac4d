//! One replica of a kv group: a Paxos peer, the replicated state machine, and the client
//! requests waiting for the log.
//!
//! # Request path
//!
//! A request goes into `waiting` (one per client: the lab's one-outstanding-request rule).
//! The leader (the peer holding Paxos phase 1) batches waiting requests into one value per
//! instance, keeping up to `inflight_max` instances started and undecided; a follower
//! forwards its clients' requests to the replica it believes leads (the owner of the highest
//! ballot seen in an accept or prepare), and proposes them itself if they are not applied
//! within `forward_timeout`. Requests forwarded *to* a replica are always proposed there,
//! never forwarded again, so forwarding cannot loop. Every replica applies every decided
//! instance in order and answers the requests it holds when their instance is applied.
//!
//! # Catch-up
//!
//! When the next instance to apply stays undecided while later ones are known, the replica
//! fetches decided values from a peer ([`Message::Fetch`]); a peer that no longer holds them
//! sends its whole applied state instead ([`Message::Snapshot`]). If the instance stays
//! undecided longer (a hole left by a failed proposer), the replica proposes a no-op there.
//!
//! # Lost disk (Lab 5's RejoinMix rules) and why it is safe
//!
//! A replica started on a wiped disk is *recovering*: its Paxos peer neither votes nor
//! proposes, this layer drops every Paxos message to it, and it answers no client and no
//! peer's recovery. It rebuilds in two steps, each needing answers from a majority of the
//! whole group drawn from *intact* peers (itself never counted; recovering peers do not
//! answer): (1) learn the highest incarnation of itself they know, and pick one above it;
//! (2) announce that incarnation; each intact peer durably records it, drops any proposer
//! state that may count promises or acceptances from the old incarnation, and only then
//! reports its promise, highest instance seen, incarnation vector, Paxos acceptor state
//! and applied state. The replica adopts the most advanced applied state and an acceptor
//! state merged from the reports: the highest reported promise and, per instance, the
//! decided value if a reporter knows it, else the accepted value with the highest ballot.
//! For every instance up to the highest one reported (the *fence*) it therefore answers
//! prepares with what the majority knew, never with an empty memory.
//!
//! Why no decided value can change. Let `v` be chosen at ballot `b` in some instance by a
//! quorum that includes the old incarnation. Without it the quorum still meets every
//! majority of the other replicas, so some reporter `X` accepted `(b, v)`. If `X` did so
//! before reporting, the merged state holds a ballot `>= b` for that instance, whose value
//! is `v` (Paxos: every proposal above a chosen ballot carries the chosen value). If `X`
//! did so after reporting, its `Accepted` carried the new incarnation, so the proposer
//! discarded the old incarnation's vote before counting `X`'s and never learned `v`. The
//! same argument with promises instead of acceptances shows that a proposer never wins
//! phase 1 on the strength of a promise the old incarnation made and the new one cannot
//! honour: either a reporter had promised at least as much (and the adopted promise is at
//! least that high), or the proposer learned of the reincarnation first. Incarnation
//! knowledge itself survives a minority of lost disks: it is durable, and a rebuilt
//! replica adopts the maximum vector of a majority.
//!
//! This deliberately goes beyond the lab's rule "take part only in instances above what
//! the majority reported": taken literally, two replicas of a 3-replica group rebuilt at
//! different times can both be barred from an undecided instance below their fences, and
//! the group then never decides it (the kv sweep found such a schedule).
//!
//! # Durability
//!
//! See the `durable` module: one combined snapshot plus WAL records. A snapshot is taken when
//! the log since the last one outgrows both a minimum and the applied state's image, after a
//! state transfer, at the end of a rebuild, and once the replica has been idle for a while
//! with something new to compact. Paxos `done` is only called for instances the snapshot
//! covers; since Paxos is silent while idle, the replica re-announces its `done` (an empty
//! Paxos `Learned`) while `min()` lags behind it, so an idle group forgets its log.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use kv_engine::kv::{ClientId, Op, Reply, Request};
use kv_engine::store::Recovered;

use super::durable::{Durable, Record};
use super::machine::Machine;
use super::message::{Batch, Message, Report};
use super::{Error, Event, Output, ReplicaConfig, ReplicaStatus, Result, Role, RECORD_KIND};
use crate::codec;
use crate::effects::Persist;
use crate::paxos::{self, Ballot, Body, Fate, Paxos, Seq, SnapshotInstance, SnapshotState};
use crate::rng::Rng;
use crate::timing;
use crate::types::{NodeId, Time};

/// Most decided values buffered from fetch replies ahead of the apply cursor.
const FETCH_WINDOW: u64 = 4096;
/// Most entries in one fetch reply.
const FETCH_ENTRIES_MAX: usize = 1024;
/// Bound on apply/propose rounds within one call (each round makes progress).
const SETTLE_ROUNDS_MAX: usize = 64;
/// Longest wait between two fetches while the apply cursor does not move.
const FETCH_INTERVAL_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting to be put in a batch.
    Queued,
    /// Handed to the presumed leader at `at`.
    Forwarded { at: Time },
    /// In the batch this replica proposed for `slot`.
    Proposed { slot: Seq },
}

#[derive(Debug)]
struct Waiting {
    request: Request,
    /// The driver's tags to answer (empty for requests forwarded here by a peer).
    tags: Vec<u64>,
    state: State,
    /// Forwarded here by a peer: always proposed here, never forwarded again.
    relayed: bool,
}

#[derive(Debug)]
struct InFlight {
    value: Bytes,
    requests: Vec<(ClientId, u64)>,
}

#[derive(Debug)]
enum Phase {
    /// Step 1: incarnations of this replica known by intact peers.
    Probing { known: BTreeMap<NodeId, u64> },
    /// Step 2: reports of intact peers that recorded `incarnation`.
    Collecting {
        incarnation: u64,
        reports: BTreeMap<NodeId, Report>,
    },
}

#[derive(Debug)]
struct Recovery {
    nonce: u64,
    phase: Phase,
    last_sent: Option<Time>,
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Propose,
    Forward(NodeId),
}

/// One replica of a kv group. See the [module docs](self).
#[derive(Debug)]
pub struct Replica {
    config: ReplicaConfig,
    rng: Rng,
    paxos: Paxos,
    machine: Machine,
    incarnations: Vec<u64>,
    fence: Option<Seq>,
    recovery: Option<Recovery>,
    boot_pending: bool,
    /// Set between [`Replica::hold`] and [`Replica::release`]: no batch is proposed or
    /// forwarded meanwhile.
    held: bool,
    // Client requests.
    waiting: BTreeMap<ClientId, Waiting>,
    own_queue: VecDeque<ClientId>,
    relay_queue: VecDeque<ClientId>,
    inflight: BTreeMap<Seq, InFlight>,
    next_slot: Seq,
    leader_hint: Option<Ballot>,
    propose_locally_until: Time,
    // Catch-up.
    fetched: BTreeMap<Seq, Bytes>,
    stall: Option<(Seq, Time)>,
    /// The highest `done` any peer announced: instances up to it exist and are decided.
    peer_done: Option<Seq>,
    last_fetch: Option<Time>,
    /// Fetches sent since the apply cursor last moved (each waits twice as long).
    fetch_attempts: u32,
    last_noop: Option<Time>,
    fetch_turn: usize,
    image_wanted: bool,
    // Snapshots and done.
    done: Option<Seq>,
    log_bytes: u64,
    /// Bytes of the applied state's image at the last snapshot: the log may grow to this
    /// (or the configured minimum) before the next snapshot. Not the snapshot's own size,
    /// which also holds the Paxos instances kept for peers — about the log since the
    /// previous snapshot — so sizing the interval by it made every snapshot bigger than the
    /// last, without bound (a 3-node cluster under `kv bench` grew it from 6.6 to 22 MB in
    /// 45 s over 1.1 MB of live data).
    image_size: u64,
    snapshot_next: Seq,
    snapshot_min: Seq,
    last_snapshot: Time,
    last_apply: Time,
    snapshot_wanted: bool,
    last_gossip: Option<Time>,
    gossip_now: bool,
    undecodable: u64,
}

impl Replica {
    /// Builds a replica from what its store recovered. `wiped` means the directory was lost
    /// (whatever it holds now is ignored): the replica rebuilds from intact peers before it
    /// takes part in anything. A replica that crashed while rebuilding resumes rebuilding.
    pub fn recover(
        config: ReplicaConfig,
        recovered: Recovered,
        wiped: bool,
        seed: u64,
        now: Time,
    ) -> Result<Replica> {
        if config.peers == 0 || config.me.index() >= config.peers {
            return Err(Error::Corrupt(format!(
                "replica {} of a group of {}",
                config.me, config.peers
            )));
        }
        let mut rng = Rng::new(seed);
        let mut paxos_config = paxos_config(&config);
        paxos_config.recovering = wiped;
        if wiped {
            let paxos = Paxos::recover(paxos_config, rng.fork(), None, std::iter::empty())?;
            let mut replica = Replica::assemble(config, rng, paxos, Machine::new(), None, now);
            replica.start_recovery();
            return Ok(replica);
        }
        let peers = config.peers;
        let (paxos_bytes, machine, incarnations, fence) = match &recovered.snapshot {
            Some(snapshot) => {
                let Durable::V1 {
                    paxos,
                    machine,
                    incarnations,
                    fence,
                } = codec::decode(&snapshot.data)?;
                (
                    Some(paxos),
                    Machine::from_image(&machine)?,
                    incarnations,
                    fence,
                )
            }
            None => (None, Machine::new(), vec![0; peers], None),
        };
        check_incarnations(&incarnations, peers)?;
        let records = recovered
            .records
            .iter()
            .map(|r| (r.kind, r.payload.as_slice()));
        let paxos = Paxos::recover(paxos_config, rng.fork(), paxos_bytes.as_deref(), records)?;
        let mut replica = Replica::assemble(config, rng, paxos, machine, fence, now);
        replica.incarnations = incarnations;
        for record in recovered.records.iter().filter(|r| r.kind == RECORD_KIND) {
            let Record::Incarnations(vector) = codec::decode(&record.payload)?;
            check_incarnations(&vector, peers)?;
            for (mine, theirs) in replica.incarnations.iter_mut().zip(vector) {
                *mine = (*mine).max(theirs);
            }
        }
        replica.log_bytes = recovered
            .records
            .iter()
            .map(|r| r.payload.len() as u64)
            .sum();
        replica.image_size = replica.machine.image().len() as u64;
        replica.done = replica.machine.next().0.checked_sub(1).map(Seq);
        if replica.paxos.is_recovering() {
            replica.start_recovery();
        }
        Ok(replica)
    }

    fn assemble(
        config: ReplicaConfig,
        rng: Rng,
        paxos: Paxos,
        machine: Machine,
        fence: Option<Seq>,
        now: Time,
    ) -> Replica {
        let peers = config.peers;
        let snapshot_next = machine.next();
        let snapshot_min = paxos.min();
        Replica {
            config,
            rng,
            paxos,
            machine,
            incarnations: vec![0; peers],
            fence,
            recovery: None,
            boot_pending: true,
            held: false,
            waiting: BTreeMap::new(),
            own_queue: VecDeque::new(),
            relay_queue: VecDeque::new(),
            inflight: BTreeMap::new(),
            next_slot: Seq::ZERO,
            leader_hint: None,
            propose_locally_until: now,
            fetched: BTreeMap::new(),
            stall: None,
            peer_done: None,
            last_fetch: None,
            fetch_attempts: 0,
            last_noop: None,
            fetch_turn: 0,
            image_wanted: false,
            done: None,
            log_bytes: 0,
            image_size: 0,
            snapshot_next,
            snapshot_min,
            last_snapshot: now,
            last_apply: now,
            snapshot_wanted: false,
            last_gossip: None,
            gossip_now: false,
            undecodable: 0,
        }
    }

    fn start_recovery(&mut self) {
        self.recovery = Some(Recovery {
            nonce: self.rng.next_u64(),
            phase: Phase::Probing {
                known: BTreeMap::new(),
            },
            last_sent: None,
        });
    }

    // ---------------------------------------------------------------------------------
    // Inputs.
    // ---------------------------------------------------------------------------------

    /// Work due right after (re)start: a replica on a wiped disk durably records that it
    /// is rebuilding. Also done implicitly by the first other call.
    pub fn on_boot(&mut self, _now: Time, out: &mut Output) {
        self.boot(out);
    }

    /// A client request. The answer comes back as [`Event::Reply`] with `tag` once the
    /// request is applied here (or at once if it was already executed), or as
    /// [`Event::Dropped`] if this replica gives up on it.
    pub fn on_request(&mut self, now: Time, tag: u64, request: Request, out: &mut Output) {
        let mark = out.events.len();
        self.boot(out);
        self.accept_request(Some(tag), request, false, out);
        self.settle(now, out);
        self.report(mark, out);
    }

    /// A message from replica `from`.
    pub fn on_message(&mut self, now: Time, from: NodeId, msg: Message, out: &mut Output) {
        let mark = out.events.len();
        self.on_message_inner(now, from, msg, out);
        self.report(mark, out);
    }

    fn on_message_inner(&mut self, now: Time, from: NodeId, msg: Message, out: &mut Output) {
        self.boot(out);
        if from.index() >= self.config.peers || from == self.config.me {
            return;
        }
        match msg {
            Message::Paxos { incarnations, msg } => {
                self.on_paxos(now, from, incarnations, msg, out)
            }
            Message::Forward { requests } => {
                for request in requests {
                    self.accept_request(None, request, true, out);
                }
            }
            Message::Fetch { from: first } => self.on_fetch(from, first, out),
            Message::Fetched { entries } => self.on_fetched(entries),
            Message::Snapshot { image } => self.on_snapshot(now, &image, out),
            Message::RecoverProbe { nonce } => self.on_recover_probe(from, nonce, out),
            Message::RecoverProbed { nonce, incarnation } => {
                self.on_recover_probed(now, from, nonce, incarnation, out)
            }
            Message::RecoverRequest { nonce, incarnation } => {
                self.on_recover_request(now, from, nonce, incarnation, out)
            }
            Message::RecoverReply {
                nonce,
                incarnation,
                report,
            } => self.on_recover_reply(now, from, nonce, incarnation, report, out),
        }
        self.settle(now, out);
    }

    /// Holds back new batches (proposals and forwards) until [`Replica::release`]. A driver
    /// that takes a burst of inputs at once brackets it with the two, so the burst's
    /// requests share one instance, or one forward, instead of each starting its own.
    /// Everything else (voting, applying, answering) goes on as usual.
    pub fn hold(&mut self) {
        self.held = true;
    }

    /// Ends a [`Replica::hold`]: batches what queued up meanwhile.
    pub fn release(&mut self, now: Time, out: &mut Output) {
        let mark = out.events.len();
        self.held = false;
        self.settle(now, out);
        self.report(mark, out);
    }

    /// Whether what this call sends or reports may go early (see
    /// [`crate::effects`]): replies and decisions reveal only decided, applied state —
    /// durable on a majority, and for a leader's own acceptance durable in the earlier call
    /// that sent its accepts (see [`paxos::Config::early_accepts`]) — unless this layer's
    /// own state (an incarnation change, a fence, a snapshot and the `done` it implies) is
    /// part of what is still being persisted.
    fn early_ok(&self, out: &Output) -> bool {
        self.config.paxos.early_accepts
            && self.config.peers > 1
            && self.recovery.is_none()
            && !out.persist.iter().any(|p| match p {
                Persist::Record { kind, .. } => *kind == RECORD_KIND,
                Persist::Snapshot(_) => true,
            })
    }

    /// Moves the events this call reported (from `mark` on) to the early list if allowed.
    fn report(&self, mark: usize, out: &mut Output) {
        if out.events.len() > mark && self.early_ok(out) {
            let events: Vec<Event> = out.events.drain(mark..).collect();
            out.events_early.extend(events);
        }
    }

    /// Periodic work: Paxos retransmissions, forward timeouts, catch-up, hole filling,
    /// `done` gossip, idle snapshots, and the rebuild protocol's retries.
    pub fn on_tick(&mut self, now: Time, out: &mut Output) {
        let mark = out.events.len();
        self.on_tick_inner(now, out);
        self.report(mark, out);
    }

    fn on_tick_inner(&mut self, now: Time, out: &mut Output) {
        self.boot(out);
        if self.recovery.is_some() {
            self.recovery_tick(now, out);
            return;
        }
        let mut p = paxos::Output::new();
        self.paxos.on_tick(now, &mut p);
        self.absorb(p, out);
        self.expire_forwards(now);
        self.catch_up(now, out);
        self.gossip(now, out);
        self.settle(now, out);
    }

    // ---------------------------------------------------------------------------------
    // Queries.
    // ---------------------------------------------------------------------------------

    /// Progress and sizes, for status reports.
    pub fn status(&self) -> ReplicaStatus {
        let role = if self.recovery.is_some() {
            Role::Recovering
        } else if self.paxos.is_leader() {
            Role::Leader
        } else {
            Role::Follower
        };
        ReplicaStatus {
            role,
            ballot: self.paxos.promised(),
            decided: self.paxos.max(),
            applied: self.machine.next().0.checked_sub(1).map(Seq),
            paxos_min: self.paxos.min(),
            keys: self.machine.kv().len(),
            live_bytes: self.machine.kv().live_bytes(),
            pending_requests: self.waiting.len(),
            incarnation: self.incarnations[self.config.me.index()],
            fence: self.fence,
            dedup_clients: self.machine.kv().dedup_len(),
        }
    }

    /// The replica believed to lead: this one if it holds Paxos phase 1, else the owner of
    /// the highest ballot seen (None while rebuilding or before any ballot is seen).
    pub fn leader(&self) -> Option<NodeId> {
        if self.recovery.is_some() {
            None
        } else if self.paxos.is_leader() {
            Some(self.config.me)
        } else {
            self.leader_hint.map(|b| b.node)
        }
    }

    /// True once the replica can serve (not rebuilding after a lost disk).
    pub fn is_ready(&self) -> bool {
        self.recovery.is_none()
    }

    /// Bytes held in memory: key-value data, Paxos values, waiting and in-flight requests,
    /// and buffered fetched values.
    pub fn retained_bytes(&self) -> u64 {
        let waiting: usize = self
            .waiting
            .values()
            .map(|w| request_bytes(&w.request))
            .sum();
        let inflight: usize = self.inflight.values().map(|f| f.value.len()).sum();
        let fetched: usize = self.fetched.values().map(|v| v.len()).sum();
        self.machine.kv().live_bytes()
            + self.paxos.retained_bytes()
            + (waiting + inflight + fetched) as u64
    }

    /// The applied key-value state (for tests and tools; serve clients through the log).
    pub fn kv(&self) -> &kv_engine::kv::KvState {
        self.machine.kv()
    }

    /// The encoded applied state; equal on replicas that applied the same instances.
    pub fn state_image(&self) -> Bytes {
        self.machine.image()
    }

    /// `(next instance to apply, hash chain over every applied value)`: equal `next` must
    /// mean equal digests on every replica (the simulator checks this after every step).
    pub fn applied_digest(&self) -> (Seq, u64) {
        (self.machine.next(), self.machine.digest())
    }

    /// Decided values that failed to decode as batches (applied as no-ops).
    pub fn undecodable_values(&self) -> u64 {
        self.undecodable
    }

    // ---------------------------------------------------------------------------------
    // Client requests.
    // ---------------------------------------------------------------------------------

    fn accept_request(
        &mut self,
        tag: Option<u64>,
        request: Request,
        relayed: bool,
        out: &mut Output,
    ) {
        if self.recovery.is_some() {
            drop_tags(tag, out);
            return;
        }
        if let Some(reply) = self.machine.executed(&request) {
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
                drop_tags(tag, out);
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
            drop_tags(tag, out);
            return;
        }
        self.waiting.insert(
            client,
            Waiting {
                request,
                tags: tag.into_iter().collect(),
                state: State::Queued,
                relayed,
            },
        );
        self.queue_of(relayed).push_back(client);
    }

    fn queue_of(&mut self, relayed: bool) -> &mut VecDeque<ClientId> {
        if relayed {
            &mut self.relay_queue
        } else {
            &mut self.own_queue
        }
    }

    /// Answers the waiting request of `client` if it is number `seq`; drops it if the
    /// client has moved past it.
    fn answer(&mut self, client: ClientId, seq: u64, reply: &Reply, out: &mut Output) {
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
            self.queue_of(relayed).push_front(client);
        }
    }

    fn expire_forwards(&mut self, now: Time) {
        let timeout = self.config.forward_timeout;
        let rate = self.config.paxos.transfer_bytes_per_sec;
        let mut expired = Vec::new();
        for (client, w) in self.waiting.iter_mut() {
            if let State::Forwarded { at } = w.state {
                // A large request takes longer to reach the leader and its log.
                let patience = timeout + timing::transfer_time(request_bytes(&w.request), rate);
                if now - at >= patience {
                    w.state = State::Queued;
                    expired.push(*client);
                }
            }
        }
        if !expired.is_empty() {
            // The presumed leader did not get them decided: propose ourselves for a while.
            self.propose_locally_until = now + timeout;
            self.own_queue.extend(expired);
        }
    }

    /// Puts queued requests into batches: proposes them (leader, or no live leader known)
    /// or forwards them to the presumed leader. Returns whether anything was proposed.
    fn pump(&mut self, now: Time, out: &mut Output) -> bool {
        if self.recovery.is_some() || self.held {
            return false;
        }
        let mut proposed = false;
        loop {
            if self.inflight.len() >= self.config.inflight_max {
                break;
            }
            let relayed = take_batch(
                &mut self.relay_queue,
                &self.waiting,
                self.config.batch_ops_max,
                self.config.batch_bytes_max,
            );
            if !relayed.is_empty() {
                self.propose(now, relayed, out);
                proposed = true;
                continue;
            }
            let route = self.route(now);
            let own = take_batch(
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
                    self.propose(now, own, out);
                    proposed = true;
                }
                Route::Forward(leader) => self.forward(now, leader, own, out),
            }
        }
        proposed
    }

    fn route(&self, now: Time) -> Route {
        if self.paxos.is_leader() || now < self.propose_locally_until {
            return Route::Propose;
        }
        match self.leader_hint {
            Some(ballot) if ballot.node != self.config.me => Route::Forward(ballot.node),
            _ => Route::Propose,
        }
    }

    fn propose(&mut self, now: Time, clients: Vec<ClientId>, out: &mut Output) {
        let slot = self.free_slot();
        let mut requests = Vec::with_capacity(clients.len());
        let mut ids = Vec::with_capacity(clients.len());
        for client in clients {
            if let Some(w) = self.waiting.get_mut(&client) {
                w.state = State::Proposed { slot };
                ids.push((client, w.request.seq));
                requests.push(w.request.clone());
            }
        }
        let value = Batch {
            proposer: self.config.me,
            requests,
        }
        .encode();
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

    fn forward(&mut self, now: Time, leader: NodeId, clients: Vec<ClientId>, out: &mut Output) {
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
            .max(self.machine.next())
            .max(self.known_max().map_or(Seq::ZERO, Seq::next));
        while self.inflight.contains_key(&slot) {
            slot = slot.next();
        }
        self.next_slot = slot.next();
        slot
    }

    /// The highest instance known to exist: seen by Paxos, fetched, reported at the last
    /// rebuild, or marked done by a peer.
    fn known_max(&self) -> Option<Seq> {
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
    fn settle(&mut self, now: Time, out: &mut Output) {
        for _ in 0..SETTLE_ROUNDS_MAX {
            let applied = self.apply_ready(now, out);
            let proposed = self.pump(now, out);
            if !applied && !proposed {
                break;
            }
        }
        self.maybe_snapshot(now, out);
    }

    fn apply_ready(&mut self, now: Time, out: &mut Output) -> bool {
        if self.recovery.is_some() {
            return false;
        }
        let mut applied = false;
        loop {
            let seq = self.machine.next();
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
            self.apply_value(now, seq, &value, out);
            applied = true;
        }
        applied
    }

    fn apply_value(&mut self, now: Time, seq: Seq, value: &[u8], out: &mut Output) {
        let requests = match Batch::decode(value) {
            Ok(batch) => batch.requests,
            Err(_) => {
                self.undecodable += 1;
                Vec::new()
            }
        };
        let replies = self.machine.apply(seq, value, &requests);
        for (request, reply) in requests.iter().zip(&replies) {
            self.answer(request.client, request.seq, reply, out);
        }
        if let Some(flight) = self.inflight.remove(&seq) {
            for (client, s) in flight.requests {
                self.requeue_if_proposed(client, s, seq);
            }
        }
        self.last_apply = now;
        self.stall = None;
        self.image_wanted = false;
    }

    /// Adopts a more advanced applied state (state transfer or rebuild).
    fn install(&mut self, now: Time, machine: Machine, out: &mut Output) {
        let next = machine.next();
        self.machine = machine;
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
            if let Some(reply) = self.machine.executed(&w.request) {
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

    // ---------------------------------------------------------------------------------
    // Paxos plumbing.
    // ---------------------------------------------------------------------------------

    fn boot(&mut self, out: &mut Output) {
        if self.boot_pending {
            self.boot_pending = false;
            let mut p = paxos::Output::new();
            self.paxos.on_boot(&mut p);
            self.absorb(p, out);
        }
    }

    /// Moves a Paxos call's effects into ours: records pass through (Paxos snapshots are
    /// replaced by a combined snapshot at the end of the step), messages are wrapped with
    /// the incarnation vector, and events are noted.
    fn absorb(&mut self, p: paxos::Output, out: &mut Output) {
        for persist in p.persist {
            match persist {
                Persist::Record { ref payload, .. } => {
                    self.log_bytes += payload.len() as u64;
                    out.persist.push(persist);
                }
                Persist::Snapshot(_) => self.snapshot_wanted = true,
            }
        }
        for (to, msg) in p.send {
            out.send.push((
                to,
                Message::Paxos {
                    incarnations: self.incarnations.clone(),
                    msg,
                },
            ));
        }
        // Early Paxos messages carry this layer's incarnation vector too: they may only
        // leave early if this layer's own state is not part of what is being persisted.
        let early = self.early_ok(out);
        for (to, msg) in p.send_early {
            let message = Message::Paxos {
                incarnations: self.incarnations.clone(),
                msg,
            };
            if early {
                out.send_early.push((to, message));
            } else {
                out.send.push((to, message));
            }
        }
        for event in p.events {
            if let paxos::Event::Behind { forgotten_below } = event {
                if forgotten_below > self.machine.next() {
                    self.image_wanted = true;
                }
            }
        }
    }

    fn on_paxos(
        &mut self,
        now: Time,
        from: NodeId,
        incarnations: Vec<u64>,
        msg: paxos::Message,
        out: &mut Output,
    ) {
        if self.recovery.is_some() || incarnations.len() != self.config.peers {
            return;
        }
        if incarnations[from.index()] < self.incarnations[from.index()] {
            return; // from an incarnation of the sender that lost its disk since
        }
        self.merge_incarnations(now, &incarnations, out);
        self.note_leader(&msg.body);
        let announced = msg.dones.iter().flatten().max().copied();
        self.peer_done = self.peer_done.max(announced);
        let mut p = paxos::Output::new();
        self.paxos.on_message(now, from, msg, &mut p);
        self.absorb(p, out);
    }

    /// Adopts newer incarnations of other replicas. If any replica reincarnated, its old
    /// promises and acceptances must not be counted any more: the Paxos peer is rebuilt
    /// from its own durable state, which drops every campaign and proposal in progress
    /// (our in-flight batches are then started again).
    fn merge_incarnations(&mut self, now: Time, theirs: &[u64], out: &mut Output) {
        let me = self.config.me.index();
        let mut changed = false;
        for (j, (mine, theirs)) in self.incarnations.iter_mut().zip(theirs).enumerate() {
            if j != me && *theirs > *mine {
                *mine = *theirs;
                changed = true;
            }
        }
        if changed {
            self.persist_incarnations(out);
            self.reset_paxos(now, out);
        }
    }

    fn persist_incarnations(&mut self, out: &mut Output) {
        let record = Record::Incarnations(self.incarnations.clone());
        let payload = codec::encode(&record).expect("a record always encodes");
        self.log_bytes += payload.len() as u64;
        out.persist.push(Persist::Record {
            kind: RECORD_KIND,
            payload,
            sync: true,
        });
    }

    fn reset_paxos(&mut self, now: Time, out: &mut Output) {
        let bytes = self.paxos.snapshot_bytes();
        let config = paxos_config(&self.config);
        self.paxos = Paxos::recover(config, self.rng.fork(), Some(&bytes), std::iter::empty())
            .expect("a peer's own snapshot always decodes");
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

    fn note_leader(&mut self, body: &Body) {
        let ballot = match body {
            Body::Prepare { ballot, .. } | Body::Accept { ballot, .. } => *ballot,
            _ => return,
        };
        if self.leader_hint.is_none_or(|b| ballot >= b) {
            self.leader_hint = Some(ballot);
        }
    }

    // ---------------------------------------------------------------------------------
    // Catch-up and state transfer.
    // ---------------------------------------------------------------------------------

    /// Fetches decided values when the next instance to apply is known to be decided
    /// somewhere (a later instance is decided here, a peer announced it done, a rebuild
    /// fenced it, or the peers forgot it) or, after a longer wait, merely seen; proposes a
    /// no-op there if it stays a hole. The instance at the tip of the log, still being
    /// agreed on, is left alone: fetching it would only move a (possibly large) value twice.
    fn catch_up(&mut self, now: Time, out: &mut Output) {
        let cursor = self.machine.next();
        if matches!(self.paxos.status(cursor), Fate::Decided(_)) {
            self.stall = None;
            return;
        }
        let decided_elsewhere = self.image_wanted
            || self.peer_done.is_some_and(|d| d >= cursor)
            || self.fence.is_some_and(|f| f >= cursor)
            || self.fetched.range(cursor.next()..).next().is_some()
            || self.paxos.decided_after(cursor);
        let seen = self.paxos.max().is_some_and(|m| m >= cursor);
        if !decided_elsewhere && !seen {
            self.stall = None;
            return;
        }
        let since = match self.stall {
            Some((seq, since)) if seq == cursor => since,
            _ => {
                self.stall = Some((cursor, now));
                self.fetch_attempts = 0;
                now
            }
        };
        let waited = now - since;
        let base = if decided_elsewhere {
            self.config.catchup_delay
        } else {
            self.config.hole_timeout
        };
        let gap = timing::backoff(base, self.fetch_attempts, FETCH_INTERVAL_MAX);
        if waited >= base && self.last_fetch.is_none_or(|t| now - t >= gap) {
            self.last_fetch = Some(now);
            self.fetch_attempts += 1;
            if let Some(to) = self.fetch_target() {
                out.send.push((to, Message::Fetch { from: cursor }));
            }
        }
        let hole = self.config.hole_timeout;
        if decided_elsewhere
            && waited >= hole
            && !self.image_wanted
            && !self.inflight.contains_key(&cursor)
            && self.last_noop.is_none_or(|t| now - t >= hole)
        {
            self.last_noop = Some(now);
            let noop = Batch {
                proposer: self.config.me,
                requests: Vec::new(),
            }
            .encode();
            let mut p = paxos::Output::new();
            self.paxos.start(now, cursor, noop, &mut p);
            self.absorb(p, out);
        }
    }

    fn fetch_target(&mut self) -> Option<NodeId> {
        let others: Vec<NodeId> = self.others().collect();
        if others.is_empty() {
            return None;
        }
        self.fetch_turn = self.fetch_turn.wrapping_add(1);
        Some(others[self.fetch_turn % others.len()])
    }

    fn on_fetch(&mut self, from: NodeId, first: Seq, out: &mut Output) {
        if self.recovery.is_some() {
            return;
        }
        let mut entries = Vec::new();
        if first >= self.paxos.min() {
            let mut bytes = 0;
            let mut seq = first;
            while entries.len() < FETCH_ENTRIES_MAX && bytes < self.config.fetch_bytes_max {
                let Fate::Decided(value) = self.paxos.status(seq) else {
                    break;
                };
                bytes += value.len();
                entries.push((seq, value));
                seq = seq.next();
            }
        }
        if !entries.is_empty() {
            out.send.push((from, Message::Fetched { entries }));
        } else if self.machine.next() > first {
            let image = self.machine.image();
            out.send.push((from, Message::Snapshot { image }));
        }
    }

    fn on_fetched(&mut self, entries: Vec<(Seq, Bytes)>) {
        if self.recovery.is_some() {
            return;
        }
        let next = self.machine.next();
        for (seq, value) in entries {
            if seq >= next && seq.0 < next.0 + FETCH_WINDOW {
                self.fetched.insert(seq, value);
            }
        }
    }

    fn on_snapshot(&mut self, now: Time, image: &[u8], out: &mut Output) {
        if self.recovery.is_some() {
            return;
        }
        let Ok(machine) = Machine::from_image(image) else {
            return;
        };
        if machine.next() > self.machine.next() {
            self.install(now, machine, out);
        }
    }

    // ---------------------------------------------------------------------------------
    // Snapshots and done.
    // ---------------------------------------------------------------------------------

    fn maybe_snapshot(&mut self, now: Time, out: &mut Output) {
        if self.recovery.is_some() {
            return;
        }
        let size_due = self.log_bytes >= self.config.snapshot_log_bytes_min.max(self.image_size);
        let changed =
            self.machine.next() > self.snapshot_next || self.paxos.min() > self.snapshot_min;
        let idle = self.config.snapshot_idle;
        let idle_due = changed && now - self.last_apply >= idle && now - self.last_snapshot >= idle;
        if self.snapshot_wanted || size_due || idle_due {
            self.take_snapshot(now, out);
        }
    }

    /// Marks every applied instance done in Paxos, then persists the combined snapshot,
    /// which supersedes every earlier record.
    fn take_snapshot(&mut self, now: Time, out: &mut Output) {
        let next = self.machine.next();
        if let Some(done) = next.0.checked_sub(1).map(Seq) {
            let mut p = paxos::Output::new();
            self.paxos.done(done, &mut p);
            self.absorb(p, out);
            if self.done < Some(done) {
                self.done = Some(done);
                self.gossip_now = true;
            }
        }
        let machine = self.machine.image();
        self.image_size = machine.len() as u64;
        let durable = Durable::V1 {
            paxos: Bytes::from(self.paxos.snapshot_bytes()),
            machine,
            incarnations: self.incarnations.clone(),
            fence: self.fence,
        };
        let data = codec::encode(&durable).expect("a snapshot always encodes");
        self.log_bytes = 0;
        self.snapshot_wanted = false;
        self.snapshot_next = next;
        self.snapshot_min = self.paxos.min();
        self.last_snapshot = now;
        out.persist.push(Persist::Snapshot(data));
    }

    /// Re-announces this replica's `done` while the group's `min()` lags behind it.
    fn gossip(&mut self, now: Time, out: &mut Output) {
        let Some(done) = self.done else {
            return;
        };
        if self.paxos.min() > done {
            return;
        }
        let due = self
            .last_gossip
            .is_none_or(|t| now - t >= self.config.gossip_interval);
        if !(self.gossip_now || due) {
            return;
        }
        self.gossip_now = false;
        self.last_gossip = Some(now);
        let mut dones = vec![None; self.config.peers];
        dones[self.config.me.index()] = Some(done);
        let msg = paxos::Message {
            dones,
            body: Body::Learned {
                commits: Vec::new(),
            },
        };
        let peers: Vec<NodeId> = self.others().collect();
        for peer in peers {
            out.send.push((
                peer,
                Message::Paxos {
                    incarnations: self.incarnations.clone(),
                    msg: msg.clone(),
                },
            ));
        }
    }

    // ---------------------------------------------------------------------------------
    // Rebuilding after a lost disk.
    // ---------------------------------------------------------------------------------

    fn recovery_tick(&mut self, now: Time, out: &mut Output) {
        let retry = self.config.recovery_retry;
        let others: Vec<NodeId> = self.others().collect();
        let Some(recovery) = self.recovery.as_mut() else {
            return;
        };
        if recovery.last_sent.is_some_and(|t| now - t < retry) {
            return;
        }
        recovery.last_sent = Some(now);
        let nonce = recovery.nonce;
        for peer in others {
            let msg = match &recovery.phase {
                Phase::Probing { known } if !known.contains_key(&peer) => {
                    Message::RecoverProbe { nonce }
                }
                Phase::Collecting {
                    incarnation,
                    reports,
                } if !reports.contains_key(&peer) => Message::RecoverRequest {
                    nonce,
                    incarnation: *incarnation,
                },
                _ => continue,
            };
            out.send.push((peer, msg));
        }
    }

    fn on_recover_probe(&mut self, from: NodeId, nonce: u64, out: &mut Output) {
        if self.recovery.is_some() {
            return; // a rebuilding replica vouches for nothing
        }
        let incarnation = self.incarnations[from.index()];
        out.send
            .push((from, Message::RecoverProbed { nonce, incarnation }));
    }

    fn on_recover_probed(
        &mut self,
        now: Time,
        from: NodeId,
        nonce: u64,
        incarnation: u64,
        out: &mut Output,
    ) {
        let majority = self.config.majority();
        let Some(recovery) = self.recovery.as_mut() else {
            return;
        };
        let Phase::Probing { known } = &mut recovery.phase else {
            return;
        };
        if recovery.nonce != nonce {
            return;
        }
        known.insert(from, incarnation);
        if known.len() < majority {
            return;
        }
        let highest = known.values().copied().max().unwrap_or(0);
        recovery.phase = Phase::Collecting {
            incarnation: highest + 1,
            reports: BTreeMap::new(),
        };
        recovery.last_sent = None;
        self.recovery_tick(now, out);
    }

    fn on_recover_request(
        &mut self,
        now: Time,
        from: NodeId,
        nonce: u64,
        incarnation: u64,
        out: &mut Output,
    ) {
        if self.recovery.is_some() {
            return;
        }
        let known = self.incarnations[from.index()];
        if incarnation < known {
            return; // a stale attempt
        }
        if incarnation > known {
            self.incarnations[from.index()] = incarnation;
            self.persist_incarnations(out);
            self.reset_paxos(now, out);
        }
        let report = Report {
            promised: self.paxos.promised(),
            max: self
                .known_max()
                .max(self.machine.next().0.checked_sub(1).map(Seq)),
            incarnations: self.incarnations.clone(),
            acceptor: Bytes::from(self.paxos.snapshot_bytes()),
            image: self.machine.image(),
        };
        out.send.push((
            from,
            Message::RecoverReply {
                nonce,
                incarnation,
                report,
            },
        ));
    }

    fn on_recover_reply(
        &mut self,
        now: Time,
        from: NodeId,
        nonce: u64,
        incarnation: u64,
        report: Report,
        out: &mut Output,
    ) {
        let majority = self.config.majority();
        let peers = self.config.peers;
        let Some(recovery) = self.recovery.as_mut() else {
            return;
        };
        let Phase::Collecting {
            incarnation: wanted,
            reports,
        } = &mut recovery.phase
        else {
            return;
        };
        if recovery.nonce != nonce || *wanted != incarnation || report.incarnations.len() != peers {
            return;
        }
        reports.insert(from, report);
        if reports.len() >= majority {
            self.finish_recovery(now, out);
        }
    }

    /// Rebuilds from a majority of intact reports: adopts the most advanced applied state,
    /// and an acceptor state merged from theirs — the highest reported promise, and per
    /// instance the decided value if any reporter knows it, else the accepted value with the
    /// highest ballot. Then joins.
    fn finish_recovery(&mut self, now: Time, out: &mut Output) {
        let Some(Recovery {
            phase:
                Phase::Collecting {
                    incarnation,
                    reports,
                },
            ..
        }) = self.recovery.take()
        else {
            return;
        };
        let mut best = Machine::new();
        for report in reports.values() {
            if let Ok(machine) = Machine::from_image(&report.image) {
                if machine.next() > best.next() {
                    best = machine;
                }
            }
        }
        for report in reports.values() {
            for (mine, theirs) in self.incarnations.iter_mut().zip(&report.incarnations) {
                *mine = (*mine).max(*theirs);
            }
        }
        self.incarnations[self.config.me.index()] = incarnation;
        let acceptor = merge_acceptors(&reports, self.config.peers);
        self.fence = acceptor.max;
        let bytes = codec::encode(&acceptor).expect("an acceptor state always encodes");
        self.paxos = Paxos::recover(
            paxos_config(&self.config),
            self.rng.fork(),
            Some(&bytes),
            std::iter::empty(),
        )
        .expect("a merged acceptor state always decodes");
        self.machine = best;
        self.next_slot = self.machine.next();
        self.last_apply = now;
        // The combined snapshot carries the adopted state and "no longer recovering" at
        // once; until it is durable the disk still says "recovering".
        self.take_snapshot(now, out);
    }

    fn others(&self) -> impl Iterator<Item = NodeId> {
        let me = self.config.me;
        (0..self.config.peers as u32)
            .map(NodeId)
            .filter(move |p| *p != me)
    }
}

impl ReplicaStatus {
    /// True once the replica can serve (not rebuilding after a lost disk).
    pub fn ready(&self) -> bool {
        self.role != Role::Recovering
    }

    /// `(name, value)` pairs for status pages and metrics.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let seq = |s: Option<Seq>| s.map_or_else(|| "-".to_string(), |s| s.0.to_string());
        vec![
            (
                "role",
                match self.role {
                    Role::Leader => "leader",
                    Role::Follower => "follower",
                    Role::Recovering => "recovering",
                }
                .to_string(),
            ),
            ("ballot", self.ballot.to_string()),
            ("decided_index", seq(self.decided)),
            ("applied_index", seq(self.applied)),
            ("paxos_min", self.paxos_min.0.to_string()),
            ("keys", self.keys.to_string()),
            ("live_bytes", self.live_bytes.to_string()),
            ("pending_requests", self.pending_requests.to_string()),
            ("incarnation", self.incarnation.to_string()),
            ("fence", seq(self.fence)),
            ("dedup_clients", self.dedup_clients.to_string()),
        ]
    }
}

/// The acceptor state a rebuilt replica adopts from a majority of intact reports (see
/// `finish_recovery` and the module docs).
fn merge_acceptors(reports: &BTreeMap<NodeId, Report>, peers: usize) -> SnapshotState {
    let mut promised = Ballot::ZERO;
    let mut max = None;
    let mut instances: BTreeMap<Seq, SnapshotInstance> = BTreeMap::new();
    for report in reports.values() {
        max = max.max(report.max);
        let Ok(state) = codec::decode::<SnapshotState>(&report.acceptor) else {
            continue;
        };
        promised = promised.max(state.promised).max(report.promised);
        max = max.max(state.max);
        for (seq, theirs) in state.instances {
            let replace = match (instances.get(&seq), &theirs) {
                (None, _) => true,
                (Some(SnapshotInstance::Decided(_)), _) => false,
                (Some(_), SnapshotInstance::Decided(_)) => true,
                (
                    Some(SnapshotInstance::Accepted { ballot: ours, .. }),
                    SnapshotInstance::Accepted { ballot, .. },
                ) => ballot > ours,
            };
            if replace {
                instances.insert(seq, theirs);
            }
        }
    }
    SnapshotState {
        promised,
        dones: vec![None; peers],
        local_done: None,
        max,
        recovering: false,
        instances: instances.into_iter().collect(),
    }
}

fn paxos_config(config: &ReplicaConfig) -> paxos::Config {
    let mut paxos = config.paxos.clone();
    paxos.me = config.me;
    paxos.peers = config.peers;
    paxos.recovering = false;
    paxos
}

fn check_incarnations(vector: &[u64], peers: usize) -> Result<()> {
    if vector.len() == peers {
        Ok(())
    } else {
        Err(Error::Corrupt(format!(
            "incarnation vector of {} entries for a group of {peers}",
            vector.len()
        )))
    }
}

fn drop_tags(tag: Option<u64>, out: &mut Output) {
    if let Some(tag) = tag {
        out.events.push(Event::Dropped { tag });
    }
}

fn request_bytes(request: &Request) -> usize {
    match &request.op {
        Op::Get { key } | Op::Delete { key } => key.len(),
        Op::Put { key, value } | Op::Append { key, value } => key.len() + value.len(),
    }
}

/// Pops queued requests (skipping entries no longer queued) into one batch.
fn take_batch(
    queue: &mut VecDeque<ClientId>,
    waiting: &BTreeMap<ClientId, Waiting>,
    ops_max: usize,
    bytes_max: usize,
) -> Vec<ClientId> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some(&client) = queue.front() {
        let Some(w) = waiting.get(&client).filter(|w| w.state == State::Queued) else {
            queue.pop_front();
            continue;
        };
        if batch.contains(&client) {
            queue.pop_front();
            continue;
        }
        let size = request_bytes(&w.request);
        if !batch.is_empty() && (batch.len() >= ops_max || bytes + size > bytes_max) {
            break;
        }
        queue.pop_front();
        batch.push(client);
        bytes += size;
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_engine::store::Recovered;

    fn fresh(me: u32, peers: usize) -> Replica {
        let recovered = Recovered {
            snapshot: None,
            records: Vec::new(),
        };
        Replica::recover(
            ReplicaConfig::new(NodeId(me), peers),
            recovered,
            false,
            7,
            Time::ZERO,
        )
        .unwrap()
    }

    fn put(client: u64, seq: u64, key: &str, value: &str) -> Request {
        Request {
            client: ClientId(client),
            seq,
            op: Op::Put {
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
            },
        }
    }

    #[test]
    fn a_single_replica_group_answers_after_applying_and_persists_first() {
        let mut r = fresh(0, 1);
        let mut out = Output::new();
        r.on_request(Time::ZERO, 9, put(1, 1, "k", "v"), &mut out);
        assert_eq!(
            out.events,
            vec![Event::Reply {
                tag: 9,
                reply: Reply::Ok
            }]
        );
        assert!(!out.persist.is_empty());
        assert_eq!(r.kv().get(b"k"), Some(&Bytes::from_static(b"v")));
        // The same request again is answered from the dedup table, not re-executed.
        let mut out = Output::new();
        r.on_request(Time::ZERO, 10, put(1, 1, "k", "w"), &mut out);
        assert_eq!(
            out.events,
            vec![Event::Reply {
                tag: 10,
                reply: Reply::Ok
            }]
        );
        assert_eq!(r.kv().get(b"k"), Some(&Bytes::from_static(b"v")));
    }

    #[test]
    fn a_follower_alone_never_answers() {
        let mut r = fresh(1, 3);
        let mut out = Output::new();
        r.on_request(Time::ZERO, 1, put(1, 1, "k", "v"), &mut out);
        for ms in 1..200 {
            r.on_tick(Time::from_millis(ms * 10), &mut out);
        }
        assert!(out.events.iter().all(|e| !matches!(e, Event::Reply { .. })));
        assert_eq!(r.status().pending_requests, 1);
    }

    #[test]
    fn a_wiped_replica_drops_requests_and_marks_its_disk_before_anything_else() {
        let recovered = Recovered {
            snapshot: None,
            records: Vec::new(),
        };
        let mut r = Replica::recover(
            ReplicaConfig::new(NodeId(0), 3),
            recovered,
            true,
            1,
            Time::ZERO,
        )
        .unwrap();
        assert!(!r.is_ready());
        let mut out = Output::new();
        r.on_request(Time::ZERO, 4, put(1, 1, "k", "v"), &mut out);
        assert!(matches!(out.persist.first(), Some(Persist::Record { .. })));
        assert_eq!(out.events, vec![Event::Dropped { tag: 4 }]);
        assert_eq!(r.status().role, Role::Recovering);
    }

    #[test]
    fn a_newer_request_of_the_same_client_drops_the_older_one() {
        let mut r = fresh(1, 3);
        let mut out = Output::new();
        r.on_request(Time::ZERO, 1, put(1, 1, "k", "v"), &mut out);
        r.on_request(Time::ZERO, 2, put(1, 2, "k", "w"), &mut out);
        // In a group of three, answers go early (they reveal nothing being persisted).
        assert!(out.events.is_empty());
        assert!(out.events_early.contains(&Event::Dropped { tag: 1 }));
        r.on_request(Time::ZERO, 3, put(1, 1, "k", "v"), &mut out);
        assert!(out.events_early.contains(&Event::Dropped { tag: 3 }));
        assert_eq!(r.status().pending_requests, 1);
    }

    fn ballot(round: u64, node: u32) -> Ballot {
        Ballot {
            round,
            node: NodeId(node),
        }
    }

    fn paxos_msg(body: Body) -> paxos::Message {
        paxos::Message {
            dones: vec![None; 3],
            body,
        }
    }

    fn sent_prepare(out: &Output) -> Option<(Ballot, Seq)> {
        out.send.iter().find_map(|(_, m)| match m {
            Message::Paxos { msg, .. } => match msg.body {
                Body::Prepare { ballot, from } => Some((ballot, from)),
                _ => None,
            },
            _ => None,
        })
    }

    #[test]
    fn paxos_messages_from_an_older_incarnation_of_their_sender_are_dropped() {
        let mut r = fresh(0, 3);
        let prepare = |round| {
            paxos_msg(Body::Prepare {
                ballot: ballot(round, 1),
                from: Seq(0),
            })
        };
        let mut out = Output::new();
        let msg = Message::Paxos {
            incarnations: vec![0, 1, 0],
            msg: prepare(1),
        };
        r.on_message(Time::ZERO, NodeId(1), msg, &mut out);
        assert!(out.persist.iter().any(
            |p| matches!(p, Persist::Record { kind, sync: true, .. } if *kind == RECORD_KIND)
        ));
        assert!(out.send.iter().any(|(to, m)| *to == NodeId(1)
            && matches!(m, Message::Paxos { msg, .. } if matches!(msg.body, Body::Promise { .. }))));
        let mut out = Output::new();
        let stale = Message::Paxos {
            incarnations: vec![0, 0, 0],
            msg: prepare(2),
        };
        r.on_message(Time::ZERO, NodeId(1), stale, &mut out);
        assert!(out.send.is_empty() && out.persist.is_empty());
        assert_eq!(r.status().ballot, ballot(1, 1));
    }

    #[test]
    fn learning_that_a_peer_reincarnated_ends_leadership_and_reproposes() {
        let mut r = fresh(0, 3);
        let mut out = Output::new();
        r.on_request(Time::ZERO, 1, put(1, 1, "k", "v"), &mut out);
        let (b, from) = sent_prepare(&out).expect("a campaign");
        let promise = paxos_msg(Body::Promise {
            ballot: b,
            from,
            entries: Vec::new(),
            next: None,
        });
        let mut out = Output::new();
        let msg = Message::Paxos {
            incarnations: vec![0, 0, 0],
            msg: promise,
        };
        r.on_message(Time::ZERO, NodeId(1), msg, &mut out);
        assert_eq!(r.status().role, Role::Leader);
        // Replica 2 rebuilt after losing its disk: promises counted so far may be void.
        let mut out = Output::new();
        let msg = Message::Paxos {
            incarnations: vec![0, 0, 1],
            msg: paxos_msg(Body::Learned {
                commits: Vec::new(),
            }),
        };
        r.on_message(Time::ZERO, NodeId(1), msg, &mut out);
        assert_eq!(r.status().role, Role::Follower);
        let (again, _) = sent_prepare(&out).expect("the batch is proposed again");
        assert!(again > b);
        assert_eq!(r.status().pending_requests, 1);
    }

    #[test]
    fn a_rebuilt_acceptor_takes_decided_values_else_the_highest_ballot() {
        let value = |s: &'static str| Bytes::from_static(s.as_bytes());
        let report = |promised, instances: Vec<(Seq, SnapshotInstance)>, max| {
            let state = SnapshotState {
                promised,
                dones: vec![None; 3],
                local_done: None,
                max,
                recovering: false,
                instances,
            };
            Report {
                promised,
                max,
                incarnations: vec![0; 3],
                acceptor: Bytes::from(codec::encode(&state).unwrap()),
                image: Bytes::new(),
            }
        };
        let accepted = |round, v| SnapshotInstance::Accepted {
            ballot: ballot(round, 1),
            value: value(v),
        };
        let mut reports = BTreeMap::new();
        reports.insert(
            NodeId(1),
            report(
                ballot(5, 1),
                vec![(Seq(3), accepted(2, "low")), (Seq(4), accepted(4, "high"))],
                Some(Seq(4)),
            ),
        );
        reports.insert(
            NodeId(2),
            report(
                ballot(7, 2),
                vec![
                    (Seq(3), SnapshotInstance::Decided(value("decided"))),
                    (Seq(4), accepted(3, "lower")),
                    (Seq(6), accepted(1, "only")),
                ],
                Some(Seq(6)),
            ),
        );
        let merged = merge_acceptors(&reports, 3);
        assert_eq!(merged.promised, ballot(7, 2));
        assert_eq!(merged.max, Some(Seq(6)));
        assert!(!merged.recovering);
        assert_eq!(
            merged.instances,
            vec![
                (Seq(3), SnapshotInstance::Decided(value("decided"))),
                (Seq(4), accepted(4, "high")),
                (Seq(6), accepted(1, "only")),
            ]
        );
    }
}
