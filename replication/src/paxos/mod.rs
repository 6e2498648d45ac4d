//! Paxos: the lab 3A library interface on a Multi-Paxos core that does no IO.
//!
//! # Interface (the lab's, spec §5.1–5.2)
//!
//! - [`Paxos::start`]`(seq, v)` returns at once and starts agreement on instance `seq`;
//!   calling it again (here or on other peers, with other values) is legal; it is ignored
//!   below [`Paxos::min`].
//! - [`Paxos::status`]`(seq)` is a local query: [`Fate::Decided`], [`Fate::Pending`] or
//!   [`Fate::Forgotten`] (below `min()`).
//! - [`Paxos::done`]`(seq)` keeps the maximum ever passed.
//! - [`Paxos::max`] is the highest instance seen (it survives forgetting);
//!   [`Paxos::min`] is one more than the minimum over all peers of their `done` values, and
//!   every instance below it is freed in memory and, via snapshots, on disk.
//!
//! # Protocol
//!
//! Ballots are `(round, node)`. An acceptor keeps one promise for all instances, plus an
//! accepted `(ballot, value)` (or a decided value) per live instance. A proposer that wins
//! phase 1 for every instance `>= from` is the *stable leader*: it runs only phase 2 per
//! instance (one round trip, one fsync per acceptor), with any number of instances in
//! flight; decisions ride on the next `Accept` to each peer, or are flushed on the next
//! tick. Any peer may still propose any instance: it forwards the value to the leader it
//! knows, and if no decision follows in time it runs full two-phase Paxos itself. A
//! rejecting acceptor names the highest ballot it has promised. The local acceptor is called
//! directly, never through a message. Values are opaque bytes (a batch of client operations,
//! for the layer above). Every message carries the sender's view of all peers' `done`
//! values; nothing is sent while no instance this peer started is undecided.
//!
//! A leader can also *confirm* that it still leads ([`Paxos::confirm_leadership`], for
//! reads that skip the log): it asks every acceptor in a round of `Confirm` messages at its
//! ballot; an acceptor whose promise is higher rejects, one whose promise is lower first
//! promises the ballot (durably, as for a prepare); a majority of `Confirmed` answers means
//! no higher ballot had been promised or accepted by a majority when the round started.
//! With [`Lease`]s on, the acknowledgements of its accepts and confirmations also give the
//! leader a lease during which it may skip that round ([`Paxos::holds_lease`]), and bind
//! the acceptors that gave them not to promise another node meanwhile (`peer/lease.rs`).
//!
//! # Who leads
//!
//! A follower counts its leader alive while it heard from it, *leading*, within
//! [`Config::leader_timeout`]: an accept, a decision, a confirmation round or gossip whose
//! [`Message::leads`] is set. A prepare is no such sign (a node that cannot hear the
//! answers keeps sending them), so promising one names the new leader without starting
//! the wait for it. Three rules keep a group led by a node its majority can answer:
//! - A leader whose accept (or confirmation round) goes unanswered by a majority through
//!   four resends stops leading: its answers do not arrive, and its accepts would keep the
//!   followers that still receive them from electing one they can answer.
//! - A leader's gossip says it leads only while it heard from a majority (itself included,
//!   prepares not counted) within twice `leader_timeout`
//!   ([`Paxos::leads_answered`]): an idle leader whose peers' messages no longer reach it
//!   stops keeping them waiting.
//! - An acceptor whose leader is alive (or which leads and hears from a majority) promises
//!   no other node: it answers [`Body::Follow`], naming the ballot it follows (Raft's rule
//!   against disruptive servers). The asker stops campaigning and forwards to that leader
//!   once the leader itself says so or too many refuse for it to win. Refusing is always
//!   safe; a leader that is really gone is past `leader_timeout` for all who followed it.
//!
//! What remains: a new leader that idles for longer than `leader_timeout` cannot be told
//! from a dead one, so a node that still cannot hear it may depose it then, once per
//! ballot (the deposed leader wins again with its next request).
//!
//! # Durability and failure model
//!
//! Promises and accepted values become synced [`Persist`] records: the driver makes them
//! durable before sending the messages of the same call (see [`crate::effects`]).
//! Decisions and local `done` calls are *lazy* records (no fsync of their own; they become
//! durable with the next synced record), so a stable leader pays one fsync per instance.
//! A decision learned just before a crash may therefore read `Pending` after the restart
//! until it is learned again; its value cannot change, because a majority holds it as
//! accepted. When `min()` advances and the log since the last snapshot has grown
//! past twice the live state, the peer emits a snapshot of its live state, which lets the
//! store delete the log behind it. [`Paxos::recover`] rebuilds a peer from snapshot + log.
//! A peer created with [`Config::recovering`] (its disk was lost) neither votes nor
//! proposes: it may have forgotten promises it made. When gossip shows that the peers have
//! forgotten instances this peer's application never finished, the peer emits
//! [`Event::Behind`]: the layer above must transfer state (a snapshot) to it.
//!
//! Safety violations detected locally (two decided values for one instance) panic.
//!
//! [`Persist`]: crate::effects::Persist

mod durable;
mod ids;
mod message;
mod peer;

pub use durable::{AcceptorFrame, Record, SnapshotInstance, SnapshotState, RECORD_KIND};
pub use ids::{Ballot, Seq};
pub use message::{Body, Commit, Entry, Grant, Message};
pub use peer::Paxos;

use std::time::Duration;

use bytes::Bytes;

use crate::codec::CodecError;
use crate::effects::Effects;
use crate::types::NodeId;

/// What a call into a Paxos peer produces.
pub type Output = Effects<Message, Event>;

/// The fate of one instance, as far as this peer knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Agreed on this value.
    Decided(Bytes),
    /// Not yet known to be decided.
    Pending,
    /// Below `min()`: freed.
    Forgotten,
}

/// Upward notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// This peer learned the decided value of `seq`.
    Decided {
        /// The instance.
        seq: Seq,
    },
    /// The peers have forgotten every instance below `forgotten_below`, including some this
    /// peer's application never marked done: it needs a state transfer (snapshot) from a
    /// peer, after which it should call `done(forgotten_below - 1)`.
    Behind {
        /// The new `min()`.
        forgotten_below: Seq,
    },
}

/// Errors recovering a peer from its disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A record or snapshot did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The durable state contradicts itself.
    #[error("corrupt paxos state: {0}")]
    Corrupt(String),
}

/// Result alias for this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tunables of one peer. Durations are virtual time in the simulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This peer.
    pub me: NodeId,
    /// Number of peers; node ids are `0..peers`.
    pub peers: usize,
    /// How long a proposer first waits for replies before resending a prepare or accept;
    /// each unanswered resend doubles the wait, up to [`Config::retry_interval_max`], and
    /// every wait is lengthened by the time the message's payload takes to move at
    /// [`Config::transfer_bytes_per_sec`] — so a multi-megabyte accept is never resent
    /// while the first copy is still on its way.
    pub retry_interval: Duration,
    /// The longest wait between resends (before the payload allowance).
    pub retry_interval_max: Duration,
    /// The rate assumed for moving and persisting a payload when sizing waits: a
    /// conservative floor for a network plus an fsync, not a measurement.
    pub transfer_bytes_per_sec: u64,
    /// How long a peer that forwarded a value waits for the decision before forwarding it
    /// again (the same doubling and payload allowance as resends apply).
    pub forward_timeout: Duration,
    /// A follower starts a campaign of its own only if it has not heard from the leader it
    /// knows, leading, for this long (see "Who leads" in the module docs): a leader that is
    /// busy moving large values is not deposed for being slow.
    pub leader_timeout: Duration,
    /// Soft bound on the bytes of values in one message that bundles several (a promise
    /// page, a batch of decisions, an answer to `Learn`); a single larger value still goes,
    /// alone. Keeps every message far below the transport's frame limit.
    pub message_bytes_max: usize,
    /// Smallest backoff after losing to a higher ballot (doubles per loss, jittered).
    pub backoff_min: Duration,
    /// Largest backoff.
    pub backoff_max: Duration,
    /// If true, decisions wait for the next accept to the same peer or the next tick; if
    /// false, they are sent at the end of the call that made them.
    pub piggyback_commits: bool,
    /// Never snapshot for less than this many bytes of log.
    pub snapshot_log_bytes_min: u64,
    /// A leader in phase 2 sends its accept requests as `send_early`: they leave without
    /// waiting for the fsync of its own acceptance, which then overlaps the followers'.
    /// Decisions (`Decided` messages) go early too. Safe because:
    /// 1. the leader's promise of its ballot was durable before it sent the prepares that
    ///    won it (an ordinary send);
    /// 2. its own acceptance counts towards a decision, but the acknowledgements that
    ///    complete the decision answer accepts sent in an earlier call, so the acceptance
    ///    (persisted in that call) is durable before anything revealing the decision
    ///    leaves — a `Decided` message or a later early accept carrying it (with a group
    ///    of one, where a value is decided in the call that proposes it, nothing goes
    ///    early);
    /// 3. a leader that crashes before its acceptance is durable restarts not leading and
    ///    campaigns above its durable promise, so it never reuses the ballot with another
    ///    value.
    ///
    /// The simulator crashes nodes right after early sends
    /// (`sim::Faults::crash_after_early_send`) to test exactly this window.
    pub early_accepts: bool,
    /// The peer lost its disk: it must not vote or propose (see module docs).
    pub recovering: bool,
    /// Leader leases (`None`: off, the default): see [`Lease`].
    pub lease: Option<Lease>,
}

/// Leader leases: an acceptor that acknowledges a ballot's accept or confirmation
/// promises no other node's ballot for `duration` on its own clock; a leader whose accepts
/// or confirmation a majority acknowledged may answer reads without a confirmation round
/// until `duration × (1 − drift) / (1 + drift)` after it sent them, on its clock.
///
/// **The assumptions:** every peer's clock runs at a rate within `drift_ppm` parts per
/// million of real time (the rate, not the reading: clocks need not agree on the time,
/// and a step such as a wall-clock jump must not reach them; the server reads
/// CLOCK_BOOTTIME, which is monotonic and also runs while the machine is suspended). Peers
/// may run different leases: each acknowledgement carries its acceptor's [`Grant`], and a
/// leader counts on the shortest among a majority's. But a peer that restarts with a
/// shorter `duration`, or none, must not have granted a longer one within the new
/// `duration` before: it assumes at boot only what its new settings grant. Beyond the drift bound a deposed leader can serve stale reads
/// (the simulator shows it: `replication/tests/leases.rs`). The argument is in
/// `peer/lease.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// How long an acceptor's acknowledgement binds it, on its own clock. Keep it below
    /// [`Config::leader_timeout`]: a node whose leader went silent campaigns after that
    /// long, and its prepares are refused until the leases it granted end.
    pub duration: Duration,
    /// The largest rate error of any peer's clock, in parts per million.
    pub drift_ppm: u32,
}

impl Lease {
    /// How long after sending what a majority acknowledged a leader may count on it.
    pub fn holder_duration(&self) -> Duration {
        let ppm = u128::from(self.drift_ppm.min(999_999));
        let micros = self.duration.as_micros() * (1_000_000 - ppm) / (1_000_000 + ppm);
        Duration::from_micros(micros as u64)
    }

    /// The grant an acceptor with these settings makes with each acknowledgement.
    pub fn grant(&self) -> Grant {
        Grant {
            micros: u64::try_from(self.duration.as_micros()).unwrap_or(u64::MAX),
            drift_ppm: self.drift_ppm,
        }
    }
}

impl Config {
    /// Defaults for peer `me` of `peers`.
    pub fn new(me: NodeId, peers: usize) -> Config {
        assert!(peers >= 1 && me.index() < peers, "bad peer set");
        Config {
            me,
            peers,
            retry_interval: Duration::from_millis(50),
            retry_interval_max: Duration::from_secs(1),
            transfer_bytes_per_sec: 64 << 20,
            forward_timeout: Duration::from_millis(60),
            leader_timeout: Duration::from_millis(500),
            message_bytes_max: 4 << 20,
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(500),
            piggyback_commits: true,
            snapshot_log_bytes_min: 256 * 1024,
            early_accepts: true,
            recovering: false,
            lease: None,
        }
    }
}
