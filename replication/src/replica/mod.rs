//! The replicated state machine library: one replica of a Paxos-replicated group, generic
//! over the [`StateMachine`] it replicates, sans IO.
//!
//! A [`Replica`] owns one [`Paxos`] peer, the replicated state (the machine, the
//! at-most-once [`Sessions`] table, the apply cursor) and the client requests waiting for
//! the log. Inputs — client requests, messages from the other replicas, ticks, each stamped
//! with `now` — go in; effects come out (see [`crate::effects`]). The kv group and the
//! shard master are two machines on this one library.
//!
//! Each job has its own file:
//!
//! | file | job |
//! | --- | --- |
//! | `requests.rs` | client requests: one per client, batching, forwarding to the leader, answers |
//! | `reads.rs` | reads without log entries: read index, leadership confirmation, with the safety argument |
//! | `link.rs` | the Paxos link: its effects, incarnation vectors, leader hints, witness facts |
//! | `catchup.rs` | fetching decided values, filling holes, receiving and serving state transfers |
//! | `transfer.rs` | streaming a large state in chunks, with flow control |
//! | `compaction.rs` | snapshots, `done`, bounding what is kept for lagging peers, `done` gossip |
//! | `rebuild.rs` | lost-disk rebuild and the restart check, with the safety argument |
//! | `applied.rs`, `sessions.rs`, `machine.rs` | the replicated state, at-most-once, the machine contract |
//! | `durable.rs`, `frames.rs`, `message.rs`, `peers.rs` | disk and wire formats, peer memory |
//! | `node.rs` | the replica as a [`crate::node::Node`], for every driver |
//!
//! # Invariants
//!
//! - **Every write goes through the log.** A replica answers a write only after applying a
//!   decided instance that holds it, so a replica in a minority, or a deposed leader, never
//!   answers a new write. (A re-sent write already executed is answered from the
//!   at-most-once table: the stored outcome of a logged execution.) A read is answered from
//!   the applied state once it covers a read index that a majority confirmed the leader
//!   still held (see `reads`), so a deposed leader never answers a read either.
//! - **At most once.** Writes are deduplicated by `(client, seq)` in [`Sessions`], part of
//!   the replicated state, bounded there by a deterministic rule.
//! - **Order.** Instances are applied in sequence; a decided value that does not decode
//!   halts the replica ([`Event::Halted`]) — skipping it would diverge from the group.
//! - **Durability.** The durable state is one combined snapshot plus the WAL records after
//!   it (see `durable`). Paxos `done` is raised only with a snapshot that covers it.
//! - **Bounded.** Every message is bounded in size; large states move in chunks; what is
//!   kept for a lagging peer is bounded ([`ReplicaConfig::retain_bytes_max`]), beyond which
//!   it catches up by state transfer.
//! - **Lost or old disks.** A replica that lost its disk, or finds at restart that its disk
//!   is older than what it told its peers (a restored backup), takes no part in agreement
//!   until it has rebuilt from a majority of intact peers (see `rebuild`).
//!
//! # Failure model
//!
//! Crashes lose unsynced writes; messages may be lost, duplicated, delayed and reordered; a
//! minority of replicas may lose their disks, or have them restored from an older copy, at
//! once. A majority losing its disks may leave the group dead. Undecodable messages from
//! peers are dropped, never panicked on.

pub(crate) mod applied;
mod catchup;
mod compaction;
pub mod durable;
pub(crate) mod frames;
mod link;
pub mod machine;
pub mod message;
mod node;
pub mod peers;
mod reads;
mod rebuild;
mod requests;
pub mod sessions;
pub(crate) mod transfer;

pub use machine::{Context, ImageBuilder, Request, StateMachine};
pub use message::{Message, Report};
pub use peers::{Boot, Claim, PeerMemory};
pub use sessions::{Seen, Session, Sessions};

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use kv_engine::store::Recovered;

use self::applied::{Applied, ImageAssembler, ImageStream};
use self::durable::{Record, LEGACY_RECORD_KINDS, RECORD_KIND};
use self::reads::Reads;
use self::rebuild::Phase;
use self::requests::{InFlight, Queue, Waiting};
use self::transfer::{Incoming, Outgoing};
use crate::codec::CodecError;
use crate::effects::Effects;
use crate::paxos::{self, Ballot, Paxos, Seq};
use crate::rng::Rng;
use crate::types::{ClientId, NodeId, Time};

/// What a call into a replica produces.
pub type Output<M> =
    Effects<Message<<M as StateMachine>::Command>, Event<<M as StateMachine>::Reply>>;

/// Upward notifications of a replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<R> {
    /// The request the driver tagged `tag` was applied (or found already applied); this is
    /// its answer.
    Reply {
        /// The driver's tag from [`Replica::on_request`].
        tag: u64,
        /// The answer.
        reply: R,
    },
    /// The replica gave up on the request tagged `tag` without answering (it is not serving
    /// yet, a newer request of the same client replaced it, or its queue is full): the
    /// client should retry, here or elsewhere, with the same seq.
    Dropped {
        /// The driver's tag.
        tag: u64,
    },
    /// The replica stopped applying the log: a decided value does not decode (written by a
    /// newer version, or damaged). Skipping it would make this replica diverge; an operator
    /// must look. Reported once.
    Halted {
        /// What went wrong.
        reason: String,
    },
}

/// A replica's role, for status reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds phase 1 for a range of instances (the stable leader).
    Leader,
    /// Votes and forwards client requests to the leader.
    Follower,
    /// Restarted: waiting for its peers to confirm its disk is current before it votes.
    Verifying,
    /// Rebuilding after a lost (or outdated) disk: takes no part in agreement.
    Recovering,
    /// Stopped applying the log (see [`Event::Halted`]).
    Halted,
}

impl Role {
    /// The role's name in status reports.
    pub fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Verifying => "verifying",
            Role::Recovering => "recovering",
            Role::Halted => "halted",
        }
    }
}

/// A snapshot of a replica's progress, for `kv admin status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The role.
    pub role: Role,
    /// The Paxos acceptor's promise.
    pub ballot: Ballot,
    /// The highest instance this replica has seen (Paxos `max()`, or the last applied if
    /// higher).
    pub decided: Option<Seq>,
    /// The last applied instance.
    pub applied: Option<Seq>,
    /// The first instance the latest snapshot this replica took does not cover (so
    /// `Seq(0)` before its first).
    pub snapshot_next: Seq,
    /// Paxos `min()`: instances below it are forgotten.
    pub paxos_min: Seq,
    /// Client requests waiting for their instance to be applied.
    pub pending_requests: usize,
    /// This replica's incarnation (raised by every rebuild).
    pub incarnation: u64,
    /// How many times this replica has started on its disk.
    pub boots: u64,
    /// After a rebuild: the highest instance the rebuilding majority reported.
    pub fence: Option<Seq>,
    /// Clients in the at-most-once table.
    pub sessions: usize,
    /// Bytes of live data in the machine.
    pub live_bytes: u64,
    /// State transfers being received (0 or 1) and served.
    pub transfers: (usize, usize),
    /// State transfers installed since this replica started.
    pub installs: u64,
    /// Times the leader this replica knows changed since it started.
    pub leader_changes: u64,
    /// Own proposals decided with their value since this replica started.
    pub proposals_decided: u64,
    /// Own proposals decided with another value, or abandoned, since it started.
    pub proposals_failed: u64,
    /// Reads answered at a read index (not through the log) since this replica started.
    pub reads_indexed: u64,
    /// Reads sent through the log instead (no leader known, or it did not answer).
    pub reads_logged: u64,
    /// Read rounds this replica released as leader under a lease, without confirming.
    pub read_rounds_leased: u64,
    /// Why the replica halted, if it did.
    pub halted: Option<String>,
    /// The machine's own fields.
    pub machine: Vec<(&'static str, String)>,
}

/// Tunables of one replica. Durations are virtual time in the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// This replica.
    pub me: NodeId,
    /// Number of replicas; ids are `0..peers`.
    pub peers: usize,
    /// The Paxos peer's tunables (`me`, `peers` and `recovering` are set by the replica).
    pub paxos: paxos::Config,
    /// Most client requests in one Paxos value.
    pub batch_ops_max: usize,
    /// A batch stops growing once its commands reach this many bytes (a single larger one
    /// still goes alone).
    pub batch_bytes_max: usize,
    /// Most instances this replica keeps started and undecided at once. While one is
    /// undecided, another starts only with a full batch (`batch_ops_max` requests or
    /// `batch_bytes_max` bytes): requests that arrive meanwhile wait for the one in flight
    /// and then go together. An instance costs every replica messages, a log record and
    /// a share of an fsync whatever it carries, so this is what keeps batches large under
    /// moderate load; a lone request never waits (nothing is in flight).
    pub inflight_max: usize,
    /// Most client requests held at once (beyond: [`Event::Dropped`]).
    pub pending_max: usize,
    /// How long requests forwarded to the presumed leader may stay unapplied before this
    /// replica proposes them itself (plus their transfer time).
    pub forward_timeout: Duration,
    /// How long the next instance to apply may stay undecided, while a later one is known
    /// decided, before this replica fetches decided instances from a peer.
    pub catchup_delay: Duration,
    /// How long the next instance to apply may stay undecided before this replica proposes
    /// a no-op there to fill a hole.
    pub hole_timeout: Duration,
    /// Most bytes of decided values in one fetch reply.
    pub fetch_bytes_max: usize,
    /// Snapshot when the log since the last snapshot exceeds both this and the live state
    /// (so snapshot cost stays proportional to the log written, and disk and memory to the
    /// live data).
    pub snapshot_log_bytes_min: u64,
    /// Snapshot once nothing was applied for this long and something changed since the
    /// last snapshot (so an idle group's disk shrinks to its live data).
    pub snapshot_idle: Duration,
    /// Bytes of decided values kept for peers that lag behind (Paxos instances not yet
    /// `done` everywhere): beyond this and the live state's size, this replica forgets what
    /// it has applied anyway, and a peer that needs it catches up by state transfer.
    pub retain_bytes_max: u64,
    /// How often a rebuilding or restarted replica re-asks peers that have not answered.
    pub recovery_retry: Duration,
    /// How long a receiver of a state transfer first waits for a chunk before asking again
    /// (doubling per try, plus the chunk's transfer time).
    pub transfer_retry: Duration,
    /// How often a replica re-announces its Paxos `done` while `min()` lags behind it (Paxos
    /// itself says nothing while idle).
    pub gossip_interval: Duration,
    /// **For tests only; unsafe.** The leader answers reads without confirming with a
    /// majority that it still leads, so a deposed leader serves stale reads. Exists so a
    /// test can check that the sweeps catch exactly that (see `reads`).
    pub unsafe_skip_read_confirmation: bool,
}

impl ReplicaConfig {
    /// Defaults for replica `me` of `peers`.
    pub fn new(me: NodeId, peers: usize) -> ReplicaConfig {
        let mut paxos = paxos::Config::new(me, peers);
        // This layer owns snapshots (they must hold the applied state too).
        paxos.snapshot_log_bytes_min = u64::MAX;
        ReplicaConfig {
            me,
            peers,
            paxos,
            batch_ops_max: 1024,
            batch_bytes_max: 1 << 20,
            inflight_max: 4,
            pending_max: 100_000,
            forward_timeout: Duration::from_millis(400),
            catchup_delay: Duration::from_millis(40),
            hole_timeout: Duration::from_millis(300),
            fetch_bytes_max: 1 << 20,
            snapshot_log_bytes_min: 64 * 1024,
            snapshot_idle: Duration::from_millis(200),
            retain_bytes_max: 64 << 20,
            recovery_retry: Duration::from_millis(100),
            transfer_retry: Duration::from_millis(200),
            gossip_interval: Duration::from_millis(500),
            unsafe_skip_read_confirmation: false,
        }
    }

    /// Majority size of the group.
    pub fn majority(&self) -> usize {
        self.peers / 2 + 1
    }
}

/// Errors rebuilding a replica from its disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Paxos part of the durable state is bad.
    #[error("paxos state: {0}")]
    Paxos(#[from] paxos::Error),
    /// A record did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The durable state contradicts itself or the configuration, or is in a format this
    /// build does not read.
    #[error("replica state: {0}")]
    Corrupt(String),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One replica of a group. See the [module docs](self).
pub struct Replica<M: StateMachine> {
    config: ReplicaConfig,
    rng: Rng,
    paxos: Paxos,
    applied: Applied<M>,
    /// What this replica knows of every replica (itself at `me`).
    peers: Vec<PeerMemory>,
    /// After a rebuild: the highest instance the rebuilding majority reported.
    fence: Option<Seq>,
    /// The peer memory changed since it was last shared.
    witness_changed: bool,
    last_witness: Option<Time>,
    phase: Phase,
    /// Work due at the first call after (re)start.
    boot_pending: bool,
    /// Set between [`Replica::hold`] and [`Replica::release`].
    held: bool,
    // Client requests (`requests.rs`).
    waiting: BTreeMap<ClientId, Waiting<M::Command>>,
    own_queue: Queue,
    relay_queue: Queue,
    inflight: BTreeMap<Seq, InFlight>,
    /// The replicas' own commands waiting for an instance (see [`Replica::propose`]).
    internal: VecDeque<M::Command>,
    next_slot: Seq,
    leader_hint: Option<Ballot>,
    propose_locally_until: Time,
    // Catch-up (`catchup.rs`).
    fetched: BTreeMap<Seq, Bytes>,
    stall: Option<(Seq, Time)>,
    /// The highest `done` any peer announced: instances up to it exist and are decided.
    peer_done: Option<Seq>,
    last_fetch: Option<Time>,
    fetch_attempts: u32,
    last_noop: Option<Time>,
    fetch_turn: usize,
    image_wanted: bool,
    /// A peer that said it forgot what this replica needs: ask it for the image first.
    image_from: Option<NodeId>,
    incoming: Option<Incoming<ImageAssembler<M>>>,
    outgoing: Outgoing<ImageStream<M>>,
    installs: u64,
    /// Instances this replica proposed whose own value was decided there.
    proposals_decided: u64,
    /// Instances this replica proposed that were decided with another value, or that it
    /// gave up on (it stopped serving).
    proposals_failed: u64,
    // Snapshots and done (`compaction.rs`).
    done: Option<Seq>,
    log_bytes: u64,
    snapshot_next: Seq,
    snapshot_min: Seq,
    last_snapshot: Time,
    last_apply: Time,
    snapshot_wanted: bool,
    /// Set until the first settle after (re)start has applied what the disk held: what was
    /// recovered is not a change since the last snapshot (a restart writes no snapshot).
    snapshot_baseline_pending: bool,
    last_gossip: Option<Time>,
    gossip_now: bool,
    // Reads (`reads.rs`).
    reads: Reads,
}

impl<M: StateMachine> std::fmt::Debug for Replica<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("me", &self.config.me)
            .field("status", &self.status())
            .finish()
    }
}

impl<M: StateMachine> Replica<M> {
    /// Builds a replica from what its store recovered. `wiped` means the directory was lost
    /// (whatever it holds now is ignored): the replica rebuilds from intact peers before it
    /// takes part in anything. A replica that crashed while rebuilding resumes rebuilding;
    /// any other restart first has its peers check that its disk is current. `initial` is
    /// the machine of a group that has applied nothing (used when the disk holds no
    /// snapshot).
    pub fn recover(
        config: ReplicaConfig,
        initial: M,
        recovered: Recovered,
        wiped: bool,
        seed: u64,
        now: Time,
    ) -> Result<Replica<M>> {
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
            let paxos = Paxos::from_state(paxos_config, rng.fork(), None, std::iter::empty())?;
            let peers = vec![PeerMemory::default(); config.peers];
            let mut replica = Replica::assemble(
                config,
                rng,
                paxos,
                Applied::initial(initial),
                peers,
                None,
                now,
            );
            replica.phase = Phase::rebuilding(&mut replica.rng);
            return Ok(replica);
        }
        if let Some(legacy) = recovered
            .records
            .iter()
            .find(|r| LEGACY_RECORD_KINDS.contains(&r.kind))
        {
            return Err(Error::Corrupt(format!(
                "record {} is of kind {}, a format of an earlier version of kv that this \
                 build does not read",
                legacy.index, legacy.kind
            )));
        }
        let (acceptor, applied, mut peers, fence) = match &recovered.snapshot {
            Some(snapshot) => {
                let restored = durable::restore::<M>(&snapshot.data).map_err(|e| {
                    Error::Corrupt(format!("snapshot at index {}: {e}", snapshot.index))
                })?;
                (
                    Some(restored.acceptor),
                    restored.applied,
                    restored.header.peers,
                    restored.header.fence,
                )
            }
            None => (
                None,
                Applied::initial(initial),
                vec![PeerMemory::default(); config.peers],
                None,
            ),
        };
        check_peers(&peers, config.peers)?;
        let mut log_bytes = 0;
        for record in recovered.records.iter() {
            log_bytes += record.payload.len() as u64;
            if record.kind == RECORD_KIND {
                let Record::Peers(table) = crate::codec::decode(&record.payload)?;
                check_peers(&table, config.peers)?;
                peers = table;
            }
        }
        let records = recovered
            .records
            .iter()
            .map(|r| (r.kind, r.payload.as_slice()));
        let paxos = Paxos::from_state(paxos_config, rng.fork(), acceptor, records)?;
        let mut replica = Replica::assemble(config, rng, paxos, applied, peers, fence, now);
        replica.log_bytes = log_bytes;
        replica.done = replica.applied.next.0.checked_sub(1).map(Seq);
        replica.phase = if replica.paxos.is_recovering() {
            Phase::rebuilding(&mut replica.rng)
        } else {
            Phase::restarted(&mut replica.rng)
        };
        Ok(replica)
    }

    fn assemble(
        config: ReplicaConfig,
        rng: Rng,
        paxos: Paxos,
        applied: Applied<M>,
        peers: Vec<PeerMemory>,
        fence: Option<Seq>,
        now: Time,
    ) -> Replica<M> {
        let snapshot_next = applied.next;
        let snapshot_min = paxos.min();
        Replica {
            config,
            rng,
            paxos,
            applied,
            peers,
            fence,
            witness_changed: false,
            last_witness: None,
            phase: Phase::Active,
            boot_pending: true,
            held: false,
            waiting: BTreeMap::new(),
            own_queue: Queue::default(),
            relay_queue: Queue::default(),
            inflight: BTreeMap::new(),
            internal: VecDeque::new(),
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
            image_from: None,
            incoming: None,
            outgoing: Outgoing::default(),
            installs: 0,
            proposals_decided: 0,
            proposals_failed: 0,
            done: None,
            log_bytes: 0,
            snapshot_next,
            snapshot_min,
            last_snapshot: now,
            last_apply: now,
            snapshot_wanted: false,
            snapshot_baseline_pending: true,
            last_gossip: None,
            gossip_now: false,
            reads: Reads::default(),
        }
    }

    // ---------------------------------------------------------------------------------
    // Inputs.
    // ---------------------------------------------------------------------------------

    /// Work due right after (re)start: recording this start (or, on a wiped disk, that the
    /// replica is rebuilding) and asking the peers to check it. Also done implicitly by the
    /// first other call.
    pub fn on_boot(&mut self, now: Time, out: &mut Output<M>) {
        let mark = out.events.len();
        self.boot(now, out);
        self.report(mark, out);
    }

    /// A client request. The answer comes back as [`Event::Reply`] with `tag` once the
    /// request is applied here (or at once if it was already executed), or as
    /// [`Event::Dropped`] if this replica gives up on it.
    pub fn on_request(
        &mut self,
        now: Time,
        tag: u64,
        request: Request<M::Command>,
        out: &mut Output<M>,
    ) {
        let mark = out.events.len();
        self.boot(now, out);
        self.accept_request(Some(tag), request, false, out);
        self.settle_unless_held(now, out);
        self.report(mark, out);
    }

    /// A message from replica `from`.
    pub fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: Message<M::Command>,
        out: &mut Output<M>,
    ) {
        let mark = out.events.len();
        self.boot(now, out);
        if from.index() < self.config.peers && from != self.config.me && !self.phase.is_halted() {
            if !matches!(msg, Message::Paxos { .. }) {
                self.paxos.heard_from(now, from); // (Paxos messages: Paxos notes them)
            }
            self.dispatch(now, from, msg, out);
            self.settle_unless_held(now, out);
        }
        self.report(mark, out);
    }

    fn dispatch(&mut self, now: Time, from: NodeId, msg: Message<M::Command>, out: &mut Output<M>) {
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
            Message::Forgotten { below } => self.on_forgotten(from, below),
            Message::ImageRequest { transfer, chunk } => {
                self.on_image_request(now, from, transfer, chunk, out)
            }
            Message::ImageChunk {
                transfer,
                chunk,
                frames,
                last,
            } => self.on_image_chunk(now, from, transfer, chunk, &frames, last, out),
            Message::ImageGone { transfer } => self.on_image_gone(from, transfer),
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
            } => self.on_recover_reply(from, nonce, incarnation, report, out),
            Message::AcceptorPageRequest { nonce, from: first } => {
                self.on_acceptor_page_request(from, nonce, first, out)
            }
            Message::AcceptorPage {
                nonce,
                from: first,
                instances,
                next,
            } => self.on_acceptor_page(now, from, nonce, first, instances, next, out),
            Message::Witness { peers } => self.on_witness(&peers, out),
            Message::RestartCheck { nonce, claim } => {
                self.on_restart_check(now, from, nonce, claim, out)
            }
            Message::RestartChecked { nonce, stale } => {
                self.on_restart_checked(now, from, nonce, stale, out)
            }
            Message::ReadIndex { ask } => self.on_read_index(from, ask, out),
            Message::ReadIndexed { ask, bound } => self.on_read_indexed(ask, bound),
        }
    }

    /// Proposes a command of the replicas' own (a reconfiguration, a shard install): it goes
    /// into the log like a client's, is never deduplicated and answers nobody. Such
    /// commands must be idempotent — several replicas may propose the same one, and a
    /// proposal may be lost to a leader change, after which the caller proposes it again
    /// once it sees the machine still needs it. Ignored unless the replica is active.
    pub fn propose(&mut self, now: Time, command: M::Command, out: &mut Output<M>) {
        let mark = out.events.len();
        self.boot(now, out);
        if self.phase.is_active() {
            self.internal.push_back(command);
            self.settle_unless_held(now, out);
        }
        self.report(mark, out);
    }

    /// Holds back new batches (proposals and forwards) until [`Replica::release`]. A driver
    /// that takes a burst of inputs at once brackets it with the two, so the burst's
    /// requests share one instance, or one forward, instead of each starting its own.
    /// Everything else (voting, applying, answering) goes on as usual.
    pub fn hold(&mut self) {
        self.held = true;
        self.paxos.hold_decisions();
    }

    /// Settles now unless held: a held replica settles once, at [`Replica::release`],
    /// for the whole burst (what a burst's later messages see is then what they would have
    /// seen had they arrived a moment earlier).
    fn settle_unless_held(&mut self, now: Time, out: &mut Output<M>) {
        if !self.held {
            self.settle(now, out);
        }
    }

    /// Ends a [`Replica::hold`]: batches what queued up meanwhile.
    pub fn release(&mut self, now: Time, out: &mut Output<M>) {
        let mark = out.events.len();
        self.held = false;
        self.settle(now, out);
        // The decisions of the burst that no new instance's accepts carried.
        let mut p = paxos::Output::new();
        self.paxos.release_decisions(&mut p);
        self.absorb(p, out);
        self.report(mark, out);
    }

    /// Periodic work: Paxos retransmissions, forward timeouts, catch-up, hole filling,
    /// `done` gossip, idle snapshots, and the rebuild and restart-check retries.
    pub fn on_tick(&mut self, now: Time, out: &mut Output<M>) {
        let mark = out.events.len();
        self.boot(now, out);
        match self.phase {
            Phase::Halted(_) => {}
            Phase::Rebuilding(_) => self.rebuild_tick(now, out),
            Phase::Active | Phase::Verifying(_) => {
                if self.phase.is_verifying() {
                    self.check_tick(now, out);
                }
                let mut p = paxos::Output::new();
                self.paxos.on_tick(now, &mut p);
                self.absorb(p, out);
                self.expire_forwards(now);
                self.expire_read_asks(now);
                self.catch_up(now, out);
                self.gossip(now, out);
                self.share_witness(now, out);
                self.settle(now, out);
            }
        }
        self.report(mark, out);
    }

    /// Whether what this call sends or reports may go early (see [`crate::effects`]):
    /// replies and decisions reveal only decided, applied state — durable on a majority,
    /// and for a leader's own acceptance durable in the earlier call that sent its accepts
    /// (see [`paxos::Config::early_accepts`]) — unless this layer's own state (peer memory,
    /// a snapshot and the `done` it implies) is part of what is still being persisted.
    fn early_ok(&self, out: &Output<M>) -> bool {
        self.config.paxos.early_accepts
            && self.config.peers > 1
            && self.phase.is_active()
            && !out.persist.iter().any(|p| match p {
                crate::effects::Persist::Record { kind, .. } => *kind == RECORD_KIND,
                crate::effects::Persist::Snapshot(_) => true,
                // Only compacts what is durable already (its `done` may be announced
                // before it is: see `compaction`).
                crate::effects::Persist::Compaction(_) => false,
            })
    }

    /// Moves the events this call reported (from `mark` on) to the early list if allowed.
    fn report(&self, mark: usize, out: &mut Output<M>) {
        if out.events.len() > mark && self.early_ok(out) {
            let events: Vec<Event<M::Reply>> = out.events.drain(mark..).collect();
            out.events_early.extend(events);
        }
    }

    // ---------------------------------------------------------------------------------
    // Queries.
    // ---------------------------------------------------------------------------------

    /// Progress and sizes, for status reports.
    pub fn status(&self) -> ReplicaStatus {
        let role = match &self.phase {
            Phase::Halted(_) => Role::Halted,
            Phase::Rebuilding(_) => Role::Recovering,
            Phase::Verifying(_) => Role::Verifying,
            Phase::Active if self.paxos.is_leader() => Role::Leader,
            Phase::Active => Role::Follower,
        };
        let me = self.config.me.index();
        ReplicaStatus {
            role,
            ballot: self.paxos.promised(),
            // What was applied was decided, though a restarted peer's Paxos `max()`
            // forgets what its snapshot covers.
            decided: self
                .paxos
                .max()
                .max(self.applied.next.0.checked_sub(1).map(Seq)),
            applied: self.applied.next.0.checked_sub(1).map(Seq),
            snapshot_next: self.snapshot_next,
            paxos_min: self.paxos.min(),
            pending_requests: self.waiting.len(),
            incarnation: self.peers[me].incarnation,
            boots: self.peers[me].boot.count,
            fence: self.fence,
            sessions: self.applied.sessions.len(),
            live_bytes: self.applied.machine.live_bytes(),
            transfers: (usize::from(self.incoming.is_some()), self.outgoing.len()),
            installs: self.installs,
            leader_changes: self.paxos.leader_changes(),
            proposals_decided: self.proposals_decided,
            proposals_failed: self.proposals_failed,
            reads_indexed: self.reads.answered,
            reads_logged: self.reads.logged,
            read_rounds_leased: self.reads.leased,
            halted: match &self.phase {
                Phase::Halted(reason) => Some(reason.clone()),
                _ => None,
            },
            machine: self.applied.machine.status(),
        }
    }

    /// The replica believed to lead: this one if it holds Paxos phase 1, else the owner of
    /// the highest ballot seen (None while not active or before any ballot is seen).
    pub fn leader(&self) -> Option<NodeId> {
        if !self.phase.is_active() {
            None
        } else if self.paxos.is_leader() {
            Some(self.config.me)
        } else {
            self.leader_hint.map(|b| b.node)
        }
    }

    /// True once the replica takes part in agreement (not rebuilding, verifying or halted).
    pub fn is_ready(&self) -> bool {
        self.phase.is_active()
    }

    /// Bytes held in memory: live data, Paxos values, waiting and in-flight requests,
    /// buffered fetched values and chunks kept for state transfers.
    pub fn retained_bytes(&self) -> u64 {
        let waiting: usize = self
            .waiting
            .values()
            .map(|w| M::command_bytes(&w.request.command))
            .sum();
        let inflight: usize = self.inflight.values().map(|f| f.value.len()).sum();
        let fetched: usize = self.fetched.values().map(|v| v.len()).sum();
        self.applied.machine.live_bytes()
            + self.paxos.retained_bytes()
            + self.outgoing.retained_bytes()
            + (waiting + inflight + fetched) as u64
    }

    /// The applied machine (for tests and tools; serve clients through the log).
    pub fn machine(&self) -> &M {
        &self.applied.machine
    }

    /// The at-most-once table.
    pub fn sessions(&self) -> &Sessions<M::Reply> {
        &self.applied.sessions
    }

    /// `(next instance to apply, hash chain over every applied value)`: equal `next` must
    /// mean equal digests on every replica (the simulator checks this after every step).
    pub fn applied_digest(&self) -> (Seq, u64) {
        (self.applied.next, self.applied.digest)
    }

    /// The encoded image of the applied state (for tests comparing replicas).
    pub fn state_image(&self) -> Vec<u8> {
        let mut stream = ImageStream::new(self.applied.clone());
        let mut out = Vec::new();
        while stream.next_frame(usize::MAX, &mut out) {}
        out
    }

    /// What this replica knows of replica `peer`.
    pub fn peer_memory(&self, peer: NodeId) -> Option<PeerMemory> {
        self.peers.get(peer.index()).copied()
    }

    fn others(&self) -> impl Iterator<Item = NodeId> {
        let me = self.config.me;
        (0..self.config.peers as u32)
            .map(NodeId)
            .filter(move |p| *p != me)
    }
}

impl ReplicaStatus {
    /// True once the replica takes part in agreement.
    pub fn ready(&self) -> bool {
        matches!(self.role, Role::Leader | Role::Follower)
    }

    /// `(name, value)` pairs for status pages and metrics.
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let seq = |s: Option<Seq>| s.map_or_else(|| "-".to_string(), |s| s.0.to_string());
        let mut fields = vec![
            ("role", self.role.name().to_string()),
            ("ballot", self.ballot.to_string()),
            ("ballot_round", self.ballot.round.to_string()),
            ("ballot_node", self.ballot.node.0.to_string()),
            ("decided_index", seq(self.decided)),
            ("applied_index", seq(self.applied)),
            ("paxos_min", self.paxos_min.0.to_string()),
            ("pending_requests", self.pending_requests.to_string()),
            ("incarnation", self.incarnation.to_string()),
            ("boots", self.boots.to_string()),
            ("fence", seq(self.fence)),
            ("sessions", self.sessions.to_string()),
            ("live_bytes", self.live_bytes.to_string()),
            ("transfers_in", self.transfers.0.to_string()),
            ("transfers_out", self.transfers.1.to_string()),
            ("installs", self.installs.to_string()),
            ("leader_changes", self.leader_changes.to_string()),
            ("proposals_decided", self.proposals_decided.to_string()),
            ("proposals_failed", self.proposals_failed.to_string()),
            ("reads_indexed", self.reads_indexed.to_string()),
            ("reads_logged", self.reads_logged.to_string()),
            ("read_rounds_leased", self.read_rounds_leased.to_string()),
        ];
        if let Some(reason) = &self.halted {
            fields.push(("halted", reason.clone()));
        }
        fields.extend(self.machine.iter().cloned());
        fields
    }
}

fn paxos_config(config: &ReplicaConfig) -> paxos::Config {
    let mut paxos = config.paxos.clone();
    paxos.me = config.me;
    paxos.peers = config.peers;
    paxos.recovering = false;
    paxos
}

fn check_peers(table: &[PeerMemory], peers: usize) -> Result<()> {
    if table.len() == peers {
        Ok(())
    } else {
        Err(Error::Corrupt(format!(
            "peer table of {} entries for a group of {peers}",
            table.len()
        )))
    }
}
