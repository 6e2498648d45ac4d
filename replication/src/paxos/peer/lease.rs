//! Leader leases ([`Config::lease`](super::Config), off by default): a leader that holds
//! one answers reads without a confirmation round.
//!
//! # The rules
//!
//! - **Acceptor.** Whenever it acknowledges an accept or a confirmation of a ballot, it
//!   *grants* the ballot's node a lease until `now + duration` on its own clock. (Not a
//!   prepare: a node that is campaigning leads nothing yet, and a campaign that cannot
//!   win must not bar the others.) While a grant to another node runs, it raises its
//!   promise to no ballot of a different node: a prepare or confirmation from one gets
//!   no answer (the asker retries), and this peer's own proposer does not campaign. (Answering at the ballot
//!   it already promised changes nothing and is allowed.) A peer that starts — a restart,
//!   a rebuild after a lost or stale disk, a new cluster — does not remember what it
//!   granted, so at boot ([`Paxos::on_boot`], or the first time it looks) it assumes a
//!   grant to no node, running from then for `duration`: it raises its promise for nobody
//!   until that ends.
//! - **Leader.** When a majority (itself included) acknowledged accepts or a confirmation
//!   round of its ballot that it first sent at `sent`, it holds the lease until
//!   `sent + duration × (1 − drift) / (1 + drift)` on its clock, as long as it keeps that
//!   ballot and leads. `duration` and `drift` are the acknowledgements' own: each carries
//!   the grant its acceptor made ([`Grant`]: its length, and its clock's drift bound), and
//!   the leader takes the shortest length and the largest drift bound among them and its
//!   own. An acknowledgement without a grant (its acceptor runs without leases) gives no
//!   lease. So peers need not agree on their settings, and a longer `duration` (or leases
//!   turned on) may roll through them one restart at a time. A shorter one may not: the
//!   restarted acceptor assumes only its new `duration` at boot, while the grant it made
//!   before the restart may run longer.
//!
//! # Why a leader holding a lease leads
//!
//! Let clocks run at rates within `1 ± drift` of real time. A leader `L` at ballot `b`
//! holds the lease at real time `t`: a majority `M` acknowledged a message `L` sent at real
//! time `s`, and `L`'s clock advanced less than `duration × (1 − drift) / (1 + drift)`
//! since `s`, so `t − s < duration / (1 + drift)`. Each member of `M` granted at a real time
//! `g >= s` (it received the message after it was sent) and its grant runs at least
//! `duration / (1 + drift)` of real time, past `t`.
//!
//! Suppose some ballot `c > b` of another node had been promised by a majority `P` before
//! `t`. `P` meets `M` in an acceptor `x`. If `x` promised `c` after granting to `b`'s node,
//! it did so after that grant ended (past `t`): impossible. So `x` promised `c` before its
//! grant; but then its promise was `c > b` when `L`'s message arrived, and it would have
//! rejected it rather than acknowledge it. (An accept can raise a promise without a
//! prepare, but an accept at `c` exists only after `c`'s owner won phase 1, that is
//! after a majority promised `c`: the same contradiction.) Hence at `t` no majority has
//! promised or accepted above `b`, exactly what a confirmation round answered by a
//! majority after `t` shows, and the read-index argument in `crate::replica`'s reads
//! applies unchanged. A restarted acceptor's assumed grant covers whatever it granted
//! before the crash: that grant ended at most `duration` after it was made, before the
//! assumed one did.
//!
//! What it costs: when a leader fails, the others elect a new one only once their grants
//! end, at most `duration` after they last heard from it; a follower waits
//! `leader_timeout` anyway, so a `duration` below that costs nothing then. A peer that
//! campaigns sooner (its forwarded value went unanswered) waits for its grant to end.

use super::*;

/// The holder of the grant a starting peer assumes: no node, so it binds against all.
const NOBODY: NodeId = NodeId(u32::MAX);

/// A peer's leases: what it granted as an acceptor and what it holds as a leader.
#[derive(Debug, Default)]
pub(super) struct Leases {
    /// The node this acceptor granted a lease to, and until when (its own clock).
    granted: Option<(NodeId, Time)>,
    /// Whether the grant assumed at start was made.
    started: bool,
    /// The ballot whose lease this peer holds as a leader, and until when (its clock).
    held: Option<(Ballot, Time)>,
}

impl Paxos {
    /// Acceptor: whether a running grant to another node forbids promising `ballot` now.
    /// Answering at the ballot already promised changes nothing and is never forbidden.
    pub(super) fn lease_forbids(&mut self, now: Time, ballot: Ballot) -> bool {
        ballot != self.promised && self.lease_grant_ending(now, ballot.node).is_some()
    }

    /// Acceptor: when the running grant that forbids promising `node` ends, if one does.
    pub(super) fn lease_grant_ending(&mut self, now: Time, node: NodeId) -> Option<Time> {
        self.start_leases(now);
        self.leases
            .granted
            .filter(|(holder, until)| *holder != node && now < *until)
            .map(|(_, until)| until)
    }

    /// Acceptor: grants `node` a lease from `now` (it just acknowledged an accept or a
    /// confirmation of a ballot of `node`'s); returns the grant, for the acknowledgement
    /// to carry (none without leases).
    pub(super) fn grant_lease(&mut self, now: Time, node: NodeId) -> Option<Grant> {
        let lease = self.config.lease?;
        self.start_leases(now);
        let until = now + lease.duration;
        self.leases.granted = match self.leases.granted {
            Some((holder, end)) if holder == node => Some((node, end.max(until))),
            _ => Some((node, until)),
        };
        Some(lease.grant())
    }

    /// Leader: how long after sending what an acknowledgement carrying `grant` answered
    /// this peer may count on that acceptor: the grant's length shrunk by the larger of
    /// its drift bound and this peer's (see the module docs). Zero without a grant, or
    /// without leases here.
    pub(super) fn lease_held_for(&self, grant: Option<Grant>) -> Duration {
        match (self.config.lease, grant) {
            (Some(own), Some(grant)) => Lease {
                duration: Duration::from_micros(grant.micros),
                drift_ppm: grant.drift_ppm.max(own.drift_ppm),
            }
            .holder_duration(),
            _ => Duration::ZERO,
        }
    }

    /// Leader: what this peer's own acceptor's acknowledgement lets it count on.
    pub(super) fn own_lease(&self) -> Duration {
        self.lease_held_for(self.config.lease.map(|lease| lease.grant()))
    }

    pub(super) fn start_leases(&mut self, now: Time) {
        let Some(lease) = self.config.lease else {
            return;
        };
        if !self.leases.started {
            self.leases.started = true;
            self.leases.granted = Some((NOBODY, now + lease.duration));
        }
    }

    /// Takes over the grants `old` made, for a peer rebuilt from `old`'s own durable
    /// state in the same process (not a restart: nothing was forgotten).
    pub fn keep_leases_of(&mut self, old: &Paxos) {
        self.leases.granted = old.leases.granted;
        self.leases.started = old.leases.started;
    }

    /// Leader: a majority acknowledged a message at `ballot` first sent at `sent`, each
    /// granting a lease this peer may count on for `held` after `sent` at least.
    pub(super) fn extend_lease(&mut self, ballot: Ballot, sent: Time, held: Duration) {
        if self.config.lease.is_none() || held.is_zero() {
            return;
        }
        if ballot != self.ballot || self.promised != ballot {
            return;
        }
        // This peer's own acceptor acknowledged it when it was sent.
        self.grant_lease(sent, self.config.me);
        let until = sent + held;
        self.leases.held = match self.leases.held {
            Some((b, end)) if b == ballot => Some((ballot, end.max(until))),
            _ => Some((ballot, until)),
        };
    }

    /// Whether this peer leads under a lease at `now`: it may answer reads at a read index
    /// without confirming its leadership (see the module docs).
    pub fn holds_lease(&self, now: Time) -> bool {
        self.prepared_from.is_some()
            && !self.is_silent()
            && self.promised == self.ballot
            && self
                .leases
                .held
                .is_some_and(|(ballot, until)| ballot == self.ballot && now < until)
    }
}
