//! One Paxos peer: acceptor, proposer and learner in a single sans-IO state machine.
//!
//! Invariants (checked by assertions where cheap):
//! - `promised` only grows; every accepted ballot is `<= promised`.
//! - Within one ballot this proposer never proposes two values for one instance: a value
//!   is fixed when the first `Accept` for `(ballot, seq)` goes out (`Stage::Accepting`).
//! - `instances`, `proposals` and `recovered` hold nothing below `min`.
//! - A decided instance never changes its value (a conflict panics).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;

use super::durable::{Record, SnapshotInstance, SnapshotState, RECORD_KIND};
use super::ids::{Ballot, Seq};
use super::message::{Body, Commit, Entry, Grant, Message};
use super::{Config, Error, Event, Fate, Lease, Output, Result};
use crate::codec;
use crate::effects::Persist;
use crate::rng::Rng;
use crate::timing;
use crate::types::{NodeId, Time};

mod acceptor;
mod confirm;
mod decisions;
mod lease;
mod proposer;

/// How many times a value is forwarded to the presumed leader before proposing directly.
const FORWARD_ATTEMPTS_MAX: u32 = 1;
/// Per-instance overhead assumed when estimating the size of a snapshot.
const SNAPSHOT_INSTANCE_OVERHEAD_BYTES: u64 = 64;

#[derive(Debug, Clone)]
enum Instance {
    Accepted { ballot: Ballot, value: Bytes },
    Decided(Bytes),
}

#[derive(Debug)]
enum Stage {
    /// Not in phase 2 at the current ballot: forwarded, backing off, or awaiting phase 1.
    Waiting,
    /// Accepts for `(ballot, value)` are out; `acks` includes this peer.
    Accepting {
        ballot: Ballot,
        value: Bytes,
        acks: BTreeSet<NodeId>,
        /// When the first of these accepts went out.
        sent: Time,
        /// How long after `sent` the acks so far let this peer count on a lease (the
        /// shortest any of them allows; see `lease.rs`).
        lease: Duration,
    },
}

#[derive(Debug)]
struct Proposal {
    value: Bytes,
    stage: Stage,
    /// When the tick should next act on this proposal.
    deadline: Time,
    forwards: u32,
    /// Resends of the current accepts so far (each doubles the wait).
    attempts: u32,
}

#[derive(Debug)]
struct Campaign {
    from: Seq,
    /// Peers whose promise has been received in full (every page).
    promises: BTreeSet<NodeId>,
    /// Peers that sent some pages: where the next page starts.
    partial: BTreeMap<NodeId, Seq>,
    deadline: Time,
    /// Resends of the prepares so far (each doubles the wait).
    attempts: u32,
    /// Peers that refused, following a live leader ([`Body::Follow`]).
    refused: BTreeSet<NodeId>,
}

/// A leadership confirmation round in flight (see [`Paxos::confirm_leadership`]).
#[derive(Debug)]
struct Confirmation {
    round: u64,
    /// The ballot whose leadership is being confirmed.
    ballot: Ballot,
    /// Peers whose promise was `ballot` when they answered (this peer included).
    acks: BTreeSet<NodeId>,
    /// When the round went out.
    started: Time,
    /// How long after `started` the acks so far let this peer count on a lease.
    lease: Duration,
    deadline: Time,
    /// Resends so far (each doubles the wait).
    attempts: u32,
}

#[derive(Debug, Clone, Copy)]
struct PendingCommit {
    seq: Seq,
    ballot: Ballot,
    acked: bool,
}

/// A Paxos peer. See the [module docs](super) for the interface and protocol.
#[derive(Debug)]
pub struct Paxos {
    config: Config,
    rng: Rng,
    // Acceptor and learner.
    promised: Ballot,
    instances: BTreeMap<Seq, Instance>,
    dones: Vec<Option<Seq>>,
    local_done: Option<Seq>,
    min: Seq,
    max: Option<Seq>,
    // Proposer.
    ballot: Ballot,
    highest_seen: Ballot,
    prepared_from: Option<Seq>,
    campaign: Option<Campaign>,
    recovered: BTreeMap<Seq, (Ballot, Bytes)>,
    proposals: BTreeMap<Seq, Proposal>,
    leader: Option<NodeId>,
    /// When this peer last heard from `leader` (an accept, a decision, gossip, a
    /// confirmation round — sent while leading; not a prepare).
    leader_seen: Option<Time>,
    /// When this peer last heard anything from each peer (see [`Paxos::heard_from`]).
    heard: Vec<Option<Time>>,
    /// Times `leader` changed since this peer started (counted for metrics).
    leader_changes: u64,
    failures: u32,
    pending: BTreeMap<NodeId, Vec<PendingCommit>>,
    /// Between [`Paxos::hold_decisions`] and [`Paxos::release_decisions`]: decisions wait
    /// in `pending` rather than leaving at the end of each call.
    holding_decisions: bool,
    /// The leadership confirmation round in flight, if any.
    confirmation: Option<Confirmation>,
    /// The last round a majority confirmed.
    confirmed: Option<u64>,
    leases: lease::Leases,
    // Disk accounting.
    log_bytes_since_snapshot: u64,
    /// `log_bytes_since_snapshot` at which the next snapshot check measures the live
    /// state again (measuring walks every instance, so it is not done on every step).
    snapshot_check_at: u64,
    min_at_snapshot: Seq,
    /// Created recovering and the disk does not say so yet.
    recovering_marker_pending: bool,
    /// Neither votes nor proposes for now (not durable: a restarted replica verifying that
    /// its disk is current, see `replica`).
    passive: bool,
    /// Instances below this were forgotten by [`Paxos::forget_below`] whatever the peers'
    /// `done` values (they catch up by state transfer); durable in snapshots.
    floor: Seq,
    /// Bytes of values in `instances`, kept up to date (so nothing walks the map to ask).
    instance_bytes: u64,
}

impl Paxos {
    /// A fresh peer with an empty disk. `seed` drives its backoff jitter.
    pub fn new(config: Config, seed: u64) -> Paxos {
        let peers = config.peers;
        Paxos {
            config,
            rng: Rng::new(seed),
            promised: Ballot::ZERO,
            instances: BTreeMap::new(),
            dones: vec![None; peers],
            local_done: None,
            min: Seq::ZERO,
            max: None,
            ballot: Ballot::ZERO,
            highest_seen: Ballot::ZERO,
            prepared_from: None,
            campaign: None,
            recovered: BTreeMap::new(),
            proposals: BTreeMap::new(),
            leader: None,
            leader_seen: None,
            heard: vec![None; peers],
            leader_changes: 0,
            failures: 0,
            pending: BTreeMap::new(),
            holding_decisions: false,
            confirmation: None,
            confirmed: None,
            leases: lease::Leases::default(),
            log_bytes_since_snapshot: 0,
            snapshot_check_at: 0,
            min_at_snapshot: Seq::ZERO,
            recovering_marker_pending: false,
            passive: false,
            floor: Seq::ZERO,
            instance_bytes: 0,
        }
    }

    /// Rebuilds a peer from what its store recovered: the newest snapshot (if any) and the
    /// WAL records after it as `(kind, payload)`; records of other kinds are skipped.
    pub fn recover<'a>(
        config: Config,
        seed: u64,
        snapshot: Option<&[u8]>,
        records: impl IntoIterator<Item = (u8, &'a [u8])>,
    ) -> Result<Paxos> {
        let state = match snapshot {
            Some(bytes) => Some(codec::decode::<SnapshotState>(bytes)?),
            None => None,
        };
        Paxos::from_state(config, seed, state, records)
    }

    /// [`Paxos::recover`] from an already decoded snapshot state.
    pub fn from_state<'a>(
        config: Config,
        seed: u64,
        snapshot: Option<SnapshotState>,
        records: impl IntoIterator<Item = (u8, &'a [u8])>,
    ) -> Result<Paxos> {
        let wiped = config.recovering;
        let mut peer = Paxos::new(config, seed);
        if let Some(state) = snapshot {
            peer.install_snapshot(state)?;
        }
        for (kind, payload) in records {
            if kind != RECORD_KIND {
                continue;
            }
            let record: Record = codec::decode(payload)?;
            peer.log_bytes_since_snapshot += payload.len() as u64;
            peer.replay(record)?;
        }
        if wiped && !peer.config.recovering {
            // The caller says the disk was lost, whatever (little) is on it now.
            peer.config.recovering = true;
        }
        peer.recovering_marker_pending = wiped;
        peer.highest_seen = peer.promised;
        let min = peer.computed_min();
        peer.drop_below(min);
        peer.min = min;
        peer.min_at_snapshot = min;
        Ok(peer)
    }

    fn install_snapshot(&mut self, state: SnapshotState) -> Result<()> {
        if state.dones.len() != self.config.peers {
            return Err(Error::Corrupt(format!(
                "snapshot knows {} peers, config says {}",
                state.dones.len(),
                self.config.peers
            )));
        }
        self.promised = state.promised;
        self.dones = state.dones;
        self.local_done = state.local_done;
        self.max = state.max;
        self.floor = state.floor;
        self.config.recovering = state.recovering;
        for (seq, instance) in state.instances {
            self.note_seq(seq);
            let instance = match instance {
                SnapshotInstance::Accepted { ballot, value } => {
                    if ballot > self.promised {
                        return Err(Error::Corrupt(format!(
                            "{seq} accepted at {ballot}, above the promise {}",
                            self.promised
                        )));
                    }
                    Instance::Accepted { ballot, value }
                }
                SnapshotInstance::Decided(value) => Instance::Decided(value),
            };
            self.insert_instance(seq, instance);
        }
        Ok(())
    }

    fn replay(&mut self, record: Record) -> Result<()> {
        match record {
            Record::Promise(ballot) => self.promised = self.promised.max(ballot),
            Record::Accept { seq, ballot, value } => {
                self.promised = self.promised.max(ballot);
                self.note_seq(seq);
                if !matches!(self.instances.get(&seq), Some(Instance::Decided(_))) {
                    self.insert_instance(seq, Instance::Accepted { ballot, value });
                }
            }
            Record::Decide { seq, value } => {
                self.note_seq(seq);
                let value = match (value, self.instances.get(&seq)) {
                    (Some(v), _) => v,
                    (None, Some(Instance::Accepted { value, .. })) => value.clone(),
                    (None, Some(Instance::Decided(value))) => value.clone(),
                    (None, None) => {
                        return Err(Error::Corrupt(format!(
                            "decision of {seq} refers to an accepted value that is not on disk"
                        )))
                    }
                };
                self.insert_instance(seq, Instance::Decided(value));
            }
            Record::Recovering(on) => self.config.recovering = on,
            Record::Done(seq) => {
                self.local_done = self.local_done.max(Some(seq));
                let me = self.config.me.index();
                self.dones[me] = self.dones[me].max(Some(seq));
            }
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------
    // The lab interface.
    // ---------------------------------------------------------------------------------

    /// Starts agreement on `seq` proposing `value`; returns at once. Ignored below `min()`,
    /// for instances already decided here, and while the peer is recovering.
    pub fn start(&mut self, now: Time, seq: Seq, value: Bytes, out: &mut Output) {
        if seq >= self.min {
            self.note_seq(seq);
            self.add_proposal(now, seq, value, out);
        }
        self.end_step(out);
    }

    /// The local fate of `seq`; no messages.
    pub fn status(&self, seq: Seq) -> Fate {
        if seq < self.min {
            return Fate::Forgotten;
        }
        match self.instances.get(&seq) {
            Some(Instance::Decided(value)) => Fate::Decided(value.clone()),
            _ => Fate::Pending,
        }
    }

    /// The application no longer needs instances `<= seq` (the maximum is kept).
    pub fn done(&mut self, seq: Seq, out: &mut Output) {
        if self.local_done < Some(seq) {
            self.local_done = Some(seq);
            self.persist(Record::Done(seq), out);
            let me = self.config.me.index();
            self.dones[me] = self.dones[me].max(Some(seq));
            self.advance_min(out);
        }
        self.end_step(out);
    }

    /// The highest instance this peer has seen, if any.
    pub fn max(&self) -> Option<Seq> {
        self.max
    }

    /// Every peer's `done`, as far as this peer knows (index = node id).
    pub fn dones(&self) -> &[Option<Seq>] {
        &self.dones
    }

    /// One more than the minimum `done` over all peers (as far as this peer knows).
    pub fn min(&self) -> Seq {
        self.min
    }

    // ---------------------------------------------------------------------------------
    // Introspection.
    // ---------------------------------------------------------------------------------

    /// This peer's id.
    pub fn me(&self) -> NodeId {
        self.config.me
    }

    /// Bytes of values this peer holds in memory (accepted, decided, proposed).
    pub fn retained_bytes(&self) -> u64 {
        let proposals: usize = self.proposals.values().map(|p| p.value.len()).sum();
        let recovered: usize = self.recovered.values().map(|(_, v)| v.len()).sum();
        self.instance_bytes + (proposals + recovered) as u64
    }

    /// Bytes of accepted and decided values held (instances at or above `min()`); O(1).
    pub fn instance_bytes(&self) -> u64 {
        self.instance_bytes
    }

    /// True while this peer holds phase 1 for some range of instances.
    pub fn is_leader(&self) -> bool {
        self.prepared_from.is_some()
    }

    /// Whether this peer leads and heard from a majority (itself included) within twice
    /// `leader_timeout`: what its gossip tells the peers ([`Message::leads`]), and what
    /// keeps it from promising another node (see `follows_another`). A leader whose
    /// peers' messages no longer reach it so stops keeping them waiting for it, idle or
    /// not (busy, it also stops leading once its accepts go unanswered).
    pub fn leads_answered(&self, now: Time) -> bool {
        let window = self.config.leader_timeout * 2;
        let heard = self
            .heard
            .iter()
            .enumerate()
            .filter(|&(i, t)| i == self.config.me.index() || t.is_some_and(|t| now - t < window))
            .count();
        self.is_leader() && heard >= self.majority()
    }

    /// Notes a message from `from` of any kind, this layer's or the caller's (say, a
    /// replica's own gossip): what [`Paxos::leads_answered`] counts.
    pub fn heard_from(&mut self, now: Time, from: NodeId) {
        if let Some(t) = self.heard.get_mut(from.index()) {
            *t = Some(now);
        }
    }

    /// Times the leader this peer knows changed (to another node, or from none to one)
    /// since it started.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes
    }

    /// The acceptor's promise.
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// Number of instances this peer started (or took over) that are not decided yet.
    pub fn undecided_proposals(&self) -> usize {
        self.proposals.len()
    }

    /// True if some instance above `seq` is decided here (so `seq` is not merely the tip
    /// of the log still being agreed on).
    pub fn decided_after(&self, seq: Seq) -> bool {
        self.instances
            .range(seq.next()..)
            .any(|(_, i)| matches!(i, Instance::Decided(_)))
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Every decided instance this peer holds, in order (for checkers).
    pub fn decided(&self) -> impl Iterator<Item = (Seq, &Bytes)> + '_ {
        self.instances.iter().filter_map(|(seq, i)| match i {
            Instance::Decided(v) => Some((*seq, v)),
            Instance::Accepted { .. } => None,
        })
    }

    /// True if the peer was created without its disk and may not vote.
    pub fn is_recovering(&self) -> bool {
        self.config.recovering
    }

    /// Makes the peer passive (it neither votes nor proposes, but still learns decisions)
    /// or active again. Not durable: the layer above decides it at every start.
    pub fn set_passive(&mut self, passive: bool) {
        self.passive = passive;
        if passive {
            self.campaign = None;
            self.prepared_from = None;
            self.confirmation = None;
            self.recovered.clear();
            self.reset_stages();
        }
    }

    /// True while the peer may not vote or propose (recovering or passive).
    pub fn is_silent(&self) -> bool {
        self.config.recovering || self.passive
    }

    /// Like [`Paxos::done`], but writes no record: for a caller whose snapshot, persisted
    /// right after this call, holds this peer's state (so `done` never becomes durable
    /// before the state that justifies it).
    pub fn done_in_snapshot(&mut self, seq: Seq, out: &mut Output) {
        if self.local_done < Some(seq) {
            self.local_done = Some(seq);
            let me = self.config.me.index();
            self.dones[me] = self.dones[me].max(Some(seq));
            self.advance_min(out);
        }
        self.end_step(out);
    }

    /// Forgets the oldest instances, whatever the other peers' `done` values, until the
    /// values kept fit in `bytes_max` — bounding what is kept for a lagging peer, which then
    /// catches up by state transfer, while a peer only a little behind still gets the
    /// recent instances it needs. Only instances this peer's own `done` covers are
    /// forgotten. Like [`Paxos::done_in_snapshot`], durable only through the caller's next
    /// snapshot; below the new floor this peer never accepts or reports anything again.
    pub fn forget_to_fit(&mut self, bytes_max: u64, out: &mut Output) {
        let limit = self.local_done.map_or(Seq::ZERO, Seq::next);
        let mut excess = self.instance_bytes.saturating_sub(bytes_max);
        let mut floor = self.floor;
        for (seq, instance) in self.instances.range(..limit) {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(instance_bytes(instance) as u64);
            floor = seq.next();
        }
        if floor > self.floor {
            self.floor = floor;
            self.advance_min(out);
        }
        self.end_step(out);
    }

    /// The durable state as of now (a snapshot holds exactly this).
    pub fn durable_state(&self) -> SnapshotState {
        let instances = self
            .instances
            .iter()
            .map(|(seq, i)| {
                let i = match i {
                    Instance::Accepted { ballot, value } => SnapshotInstance::Accepted {
                        ballot: *ballot,
                        value: value.clone(),
                    },
                    Instance::Decided(value) => SnapshotInstance::Decided(value.clone()),
                };
                (*seq, i)
            })
            .collect();
        SnapshotState {
            promised: self.promised,
            dones: self.dones.clone(),
            local_done: self.local_done,
            max: self.max,
            recovering: self.config.recovering,
            floor: self.floor,
            instances,
        }
    }

    /// Work to do right after (re)start, before any input: a peer created without its
    /// disk records durably that it is recovering, so a later crash cannot make it a voter;
    /// with leases, the grant a starting peer assumes runs from `now`.
    pub fn on_boot(&mut self, now: Time, out: &mut Output) {
        self.start_leases(now);
        if self.recovering_marker_pending {
            self.recovering_marker_pending = false;
            self.persist(Record::Recovering(true), out);
        }
    }

    /// The encoded durable state, as a snapshot would hold it.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        codec::encode(&self.durable_state()).expect("a paxos snapshot always encodes")
    }

    // ---------------------------------------------------------------------------------
    // Inputs.
    // ---------------------------------------------------------------------------------

    /// Handles one message from peer `from`.
    pub fn on_message(&mut self, now: Time, from: NodeId, msg: Message, out: &mut Output) {
        if from.index() >= self.config.peers || from == self.config.me {
            return;
        }
        self.merge_dones(&msg.dones, out);
        if !matches!(msg.body, Body::Prepare { .. }) {
            // (A prepare says its sender does not follow this peer: it is not the sign of
            // a working majority that `leads_answered` looks for.)
            self.heard_from(now, from);
        }
        if self.leader == Some(from)
            && msg.leads
            && matches!(
                msg.body,
                Body::Accept { .. }
                    | Body::Decided { .. }
                    | Body::Learned { .. }
                    | Body::Confirm { .. }
            )
        {
            self.leader_seen = Some(now);
        }
        match msg.body {
            Body::Prepare { ballot, from: f } => self.on_prepare(now, from, ballot, f, out),
            Body::Promise {
                ballot,
                from: f,
                entries,
                next,
            } => self.on_promise(now, from, ballot, f, entries, next, out),
            Body::Accept {
                ballot,
                seq,
                value,
                commits,
            } => {
                self.on_commits(from, commits, out);
                self.on_accept(now, from, ballot, seq, value, out);
            }
            Body::Accepted { ballot, seq, grant } => {
                self.on_accepted(from, ballot, seq, grant, out)
            }
            Body::Reject { ballot, promised } => self.on_reject(now, ballot, promised),
            Body::Decided { commits } | Body::Learned { commits } => {
                self.on_commits(from, commits, out)
            }
            Body::Forward { seq, value } => self.on_forward(now, from, seq, value, out),
            Body::Learn { seqs } => self.on_learn(from, seqs, out),
            Body::Confirm { ballot, round } => self.on_confirm(now, from, ballot, round, out),
            Body::Confirmed {
                ballot,
                round,
                grant,
            } => self.on_confirmed(from, ballot, round, grant),
            Body::Follow { ballot, leader } => self.on_follow(now, from, ballot, leader),
        }
        self.end_step(out);
    }

    /// Periodic work: retransmissions for undecided instances this peer drives, and
    /// flushing decisions that found no accept to ride on. Sends nothing while idle.
    pub fn on_tick(&mut self, now: Time, out: &mut Output) {
        self.retry_campaign(now, out);
        self.retry_confirmation(now, out);
        let due: Vec<Seq> = self
            .proposals
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in due {
            self.retry_proposal(now, seq, out);
        }
        self.flush_commits(out);
        self.end_step(out);
    }

    // ---------------------------------------------------------------------------------
    // Learner.
    // ---------------------------------------------------------------------------------

    fn on_commits(&mut self, from: NodeId, commits: Vec<Commit>, out: &mut Output) {
        let mut missing = Vec::new();
        for commit in commits {
            self.note_seq(commit.seq);
            if commit.seq < self.min {
                continue;
            }
            match (commit.value, self.instances.get(&commit.seq)) {
                (Some(value), _) => self.learn(commit.seq, value, out),
                (None, Some(Instance::Decided(_))) => {}
                (None, Some(Instance::Accepted { ballot, value })) if *ballot >= commit.ballot => {
                    let value = value.clone();
                    self.learn(commit.seq, value, out);
                }
                (None, _) => missing.push(commit.seq),
            }
        }
        if !missing.is_empty() {
            self.send(out, from, Body::Learn { seqs: missing });
        }
    }

    /// Answers with the decided values asked for, up to `message_bytes_max` (the asker
    /// asks again for what is still missing).
    fn on_learn(&mut self, from: NodeId, seqs: Vec<Seq>, out: &mut Output) {
        let budget = self.config.message_bytes_max;
        let mut commits: Vec<Commit> = Vec::new();
        let mut bytes = 0;
        for seq in seqs {
            let Fate::Decided(value) = self.status(seq) else {
                continue;
            };
            if !commits.is_empty() && bytes + value.len() > budget {
                break;
            }
            bytes += value.len();
            commits.push(Commit {
                seq,
                ballot: Ballot::ZERO,
                value: Some(value),
            });
        }
        self.send(out, from, Body::Learned { commits });
    }

    /// Records that `seq` is decided with `value`.
    fn learn(&mut self, seq: Seq, value: Bytes, out: &mut Output) {
        if seq < self.min {
            return;
        }
        self.note_seq(seq);
        let by_reference = match self.instances.get(&seq) {
            Some(Instance::Decided(decided)) => {
                assert_eq!(
                    decided, &value,
                    "safety: {seq} decided twice with different values on {}",
                    self.config.me
                );
                return;
            }
            Some(Instance::Accepted { value: v, .. }) => *v == value,
            None => false,
        };
        let record_value = if by_reference {
            None
        } else {
            Some(value.clone())
        };
        self.persist(
            Record::Decide {
                seq,
                value: record_value,
            },
            out,
        );
        self.insert_instance(seq, Instance::Decided(value));
        self.proposals.remove(&seq);
        self.recovered.remove(&seq);
        out.events.push(Event::Decided { seq });
    }

    // ---------------------------------------------------------------------------------
    // Done values, forgetting, snapshots.
    // ---------------------------------------------------------------------------------

    fn merge_dones(&mut self, dones: &[Option<Seq>], out: &mut Output) {
        let mut changed = false;
        for (mine, theirs) in self.dones.iter_mut().zip(dones) {
            if *theirs > *mine {
                *mine = *theirs;
                changed = true;
            }
        }
        if changed {
            self.advance_min(out);
        }
    }

    /// One more than the minimum `done` of all peers, or the floor if that is higher.
    fn computed_min(&self) -> Seq {
        self.dones
            .iter()
            .map(|d| d.map_or(Seq::ZERO, Seq::next))
            .min()
            .unwrap_or(Seq::ZERO)
            .max(self.floor)
    }

    fn advance_min(&mut self, out: &mut Output) {
        let min = self.computed_min();
        if min <= self.min {
            return;
        }
        self.drop_below(min);
        self.min = min;
        if self.local_done.map_or(Seq::ZERO, Seq::next) < min {
            out.events.push(Event::Behind {
                forgotten_below: min,
            });
        }
    }

    fn drop_below(&mut self, min: Seq) {
        let kept = self.instances.split_off(&min);
        let dropped = std::mem::replace(&mut self.instances, kept);
        self.instance_bytes -= dropped.values().map(instance_bytes).sum::<usize>() as u64;
        self.proposals = self.proposals.split_off(&min);
        self.recovered = self.recovered.split_off(&min);
        for list in self.pending.values_mut() {
            list.retain(|pc| pc.seq >= min);
        }
    }

    fn end_step(&mut self, out: &mut Output) {
        self.send_decisions_now(out);
        self.maybe_snapshot(out);
    }

    /// Snapshots once forgetting has freed something and the log since the last snapshot
    /// outweighs the live state twice over, so disk stays proportional to live data.
    fn maybe_snapshot(&mut self, out: &mut Output) {
        if self.min <= self.min_at_snapshot
            || self.log_bytes_since_snapshot < self.config.snapshot_log_bytes_min
            || self.log_bytes_since_snapshot < self.snapshot_check_at
        {
            return;
        }
        let estimate =
            self.retained_bytes() + SNAPSHOT_INSTANCE_OVERHEAD_BYTES * self.instances.len() as u64;
        if self.log_bytes_since_snapshot < 2 * estimate {
            // Measure again only after the log has grown by a share of what was just
            // walked, so the check costs O(1) amortised per logged byte.
            self.snapshot_check_at = self.log_bytes_since_snapshot + (estimate / 8).max(4096);
            return;
        }
        out.persist.push(Persist::Snapshot(std::sync::Arc::new(
            self.snapshot_bytes(),
        )));
        self.log_bytes_since_snapshot = 0;
        self.snapshot_check_at = 0;
        self.min_at_snapshot = self.min;
    }

    // ---------------------------------------------------------------------------------
    // Helpers.
    // ---------------------------------------------------------------------------------

    /// Inserts or replaces an instance, keeping `instance_bytes` exact.
    fn insert_instance(&mut self, seq: Seq, instance: Instance) {
        self.instance_bytes += instance_bytes(&instance) as u64;
        if let Some(old) = self.instances.insert(seq, instance) {
            self.instance_bytes -= instance_bytes(&old) as u64;
        }
    }

    fn note_seq(&mut self, seq: Seq) {
        if self.max < Some(seq) {
            self.max = Some(seq);
        }
    }

    fn others(&self) -> Vec<NodeId> {
        (0..self.config.peers as u32)
            .map(NodeId)
            .filter(|p| *p != self.config.me)
            .collect()
    }

    /// Whether accepts and decisions go as early sends (see [`Config::early_accepts`]).
    fn early(&self) -> bool {
        self.config.early_accepts && self.majority() > 1
    }

    /// `body` as this peer sends it: with its view of every peer's `done` and whether it
    /// leads.
    fn message(&self, body: Body) -> Message {
        Message {
            dones: self.dones.clone(),
            leads: self.is_leader(),
            body,
        }
    }

    fn send(&self, out: &mut Output, to: NodeId, body: Body) {
        out.send.push((to, self.message(body)));
    }

    fn persist(&mut self, record: Record, out: &mut Output) {
        // Decisions and done marks can be relearned (from peers) after a crash, so they
        // need no fsync of their own: they ride on the next synced record.
        let sync = !matches!(record, Record::Decide { .. } | Record::Done(_));
        let payload = codec::encode(&record).expect("a paxos record always encodes");
        self.log_bytes_since_snapshot += payload.len() as u64;
        out.persist.push(Persist::Record {
            kind: RECORD_KIND,
            payload,
            sync,
        });
    }
}

fn entry(seq: Seq, instance: &Instance) -> Entry {
    match instance {
        Instance::Accepted { ballot, value } => Entry {
            seq,
            ballot: *ballot,
            value: value.clone(),
            decided: false,
        },
        Instance::Decided(value) => Entry {
            seq,
            ballot: Ballot::ZERO,
            value: value.clone(),
            decided: true,
        },
    }
}

fn instance_bytes(instance: &Instance) -> usize {
    match instance {
        Instance::Accepted { value, .. } | Instance::Decided(value) => value.len(),
    }
}

#[cfg(test)]
mod tests;
