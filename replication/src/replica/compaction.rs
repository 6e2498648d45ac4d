//! Compaction: snapshots, Paxos `done`, and how much log is kept for peers.
//!
//! A snapshot is taken when the log since the last one outgrows both a minimum and the
//! live state (so its cost stays proportional to the log written, and disk and memory to
//! the live data), after a state transfer, at the end of a rebuild, and once the replica
//! has been idle for a while with something new to compact. Taking one costs a few frozen
//! clones; the driver streams it to disk (see `durable`).
//!
//! The replicas of a group apply the same log, so their logs outgrow the threshold at the
//! same instance: left alone, all of them would write and fsync a snapshot at once, and
//! the WAL fsyncs that commit the next instances would queue behind all of them (on one
//! disk, or on a majority of disks). So a size-triggered snapshot waits for its replica's
//! *turn*: the instances are cut into windows that rotate among the replicas by index, and
//! a replica starts one only while the next instance it applies is in a window of its own.
//! A window is a power of two near a `2 * peers`-th of the instances between two
//! snapshots (what every replica of the group measures alike), so the wait stays under
//! half a snapshot interval and the replicas' snapshots fall in different windows: a
//! majority keeps fsyncing at full speed while one replica snapshots.
//!
//! With the snapshot, the replica marks every applied instance `done` in Paxos — without a
//! record of its own, so `done` is durable exactly when the snapshot is.
//!
//! A snapshot taken because the log grew or the group went idle holds nothing the disk
//! does not: the records since the last durable snapshot rebuild the same state. It is a
//! [`Persist::Compaction`], which nothing waits for — so the node's sends and replies
//! never queue behind the write of a whole snapshot. A crash before it is durable loses
//! only the compaction, and the `done` it implies may already have been announced: the
//! replica then restarts with a lower `done` than its peers heard, and if they forgot an
//! instance it still needs, it catches up by state transfer — the path every replica
//! already takes when peers forget past the retention bound. A snapshot that carries
//! state the records do not (an installed state transfer, a rebuild's adopted state, a
//! snapshot Paxos asked for) is a [`Persist::Snapshot`], and the step's sends wait for it. Paxos forgets an
//! instance once every peer is done with it; a peer that is down would so make the others
//! keep the log forever. Past [`ReplicaConfig::retain_bytes_max`](super::ReplicaConfig)
//! (or the live state's size, if larger) of kept values, the replica forgets the oldest
//! instances it has applied anyway (a peer only a little behind still finds the recent
//! ones), and a peer that needs a forgotten one catches up by state transfer — one
//! transfer, one snapshot on the receiver, however far behind it is.
//!
//! Paxos is silent while idle, so the replica re-announces its `done` (an empty Paxos
//! `Learned`) while `min()` lags behind it: an idle group forgets its log too.

use std::sync::Arc;

use super::durable::{DurableSnapshot, Header, SNAPSHOT_VERSION};
use super::machine::StateMachine;
use super::message::Message;
use super::{Output, Replica};
use crate::effects::Persist;
use crate::paxos::{self, Body, Seq};
use crate::types::{NodeId, Time};

/// The instances in one snapshot turn, for `peers` replicas snapshotting every `interval`
/// instances: the largest power of two at most `interval / (2 * peers)` (at least 1), so
/// replicas that measured slightly different intervals still agree on it.
fn snapshot_window(interval: u64, peers: u64) -> u64 {
    let share = (interval / (2 * peers.max(1))).max(1);
    1 << (63 - share.leading_zeros())
}

impl<M: StateMachine> Replica<M> {
    pub(super) fn maybe_snapshot(&mut self, now: Time, out: &mut Output<M>) {
        if !self.phase.applies() {
            return;
        }
        if std::mem::take(&mut self.snapshot_baseline_pending) {
            // What the disk held after a restart is already on disk: only what comes next
            // counts towards the next snapshot (so starting needs no more room than the
            // node already uses).
            self.snapshot_next = self.applied.next;
            self.snapshot_min = self.paxos.min();
            self.last_snapshot = now;
        }
        // (live bytes are summed only once the log passed the floor)
        let floor = self.config.snapshot_log_bytes_min;
        let size_due = self.log_bytes >= floor && {
            let threshold = floor.max(self.applied.machine.live_bytes());
            self.log_bytes >= threshold && self.snapshot_turn()
        };
        let changed =
            self.applied.next > self.snapshot_next || self.paxos.min() > self.snapshot_min;
        let idle = self.config.snapshot_idle;
        let idle_due = changed && now - self.last_apply >= idle && now - self.last_snapshot >= idle;
        if self.snapshot_wanted {
            self.take_snapshot(now, out);
        } else if size_due || idle_due {
            self.snapshot(now, false, out);
        }
    }

    /// Whether the next instance to apply is in a snapshot window of this replica's (see
    /// the module documentation).
    fn snapshot_turn(&self) -> bool {
        let peers = self.config.peers as u64;
        let interval = self.applied.next.0.saturating_sub(self.snapshot_next.0);
        let window = snapshot_window(interval, peers);
        (self.applied.next.0 / window) % peers == self.config.me.index() as u64
    }

    /// Marks every applied instance done in Paxos (forgetting beyond the retention bound),
    /// then persists the combined snapshot, which supersedes every earlier record; the
    /// step's sends wait for it (it may hold state no record does).
    pub(super) fn take_snapshot(&mut self, now: Time, out: &mut Output<M>) {
        self.snapshot(now, true, out);
    }

    /// [`Replica::take_snapshot`], as a [`Persist::Snapshot`] if `gates` and else as a
    /// [`Persist::Compaction`] (see the module documentation).
    fn snapshot(&mut self, now: Time, gates: bool, out: &mut Output<M>) {
        let next = self.applied.next;
        if let Some(done) = next.0.checked_sub(1).map(Seq) {
            let mut p = paxos::Output::new();
            self.paxos.done_in_snapshot(done, &mut p);
            let keep = self
                .config
                .retain_bytes_max
                .max(self.applied.machine.live_bytes());
            if self.paxos.instance_bytes() > keep {
                self.paxos.forget_to_fit(keep, &mut p);
            }
            self.absorb(p, out);
            if self.done < Some(done) {
                self.done = Some(done);
                self.gossip_now = true;
            }
        }
        let snapshot = DurableSnapshot {
            header: Header {
                version: SNAPSHOT_VERSION,
                peers: self.peers.clone(),
                fence: self.fence,
            },
            acceptor: self.paxos.durable_state(),
            applied: self.applied.clone(),
        };
        self.log_bytes = 0;
        self.snapshot_wanted = false;
        self.snapshot_next = next;
        self.snapshot_min = self.paxos.min();
        self.last_snapshot = now;
        let snapshot = Arc::new(snapshot);
        out.persist.push(if gates {
            Persist::Snapshot(snapshot)
        } else {
            Persist::Compaction(snapshot)
        });
    }

    /// Re-announces this replica's `done` while the group's `min()` lags behind it.
    pub(super) fn gossip(&mut self, now: Time, out: &mut Output<M>) {
        let Some(done) = self.done else {
            return;
        };
        // Announce a new `done` once even if every peer seems done already (they may not
        // know ours), and keep announcing while some peer seems to lag.
        let lagging = self.paxos.min() <= done;
        let due = lagging
            && self
                .last_gossip
                .is_none_or(|t| now - t >= self.config.gossip_interval);
        if !(self.gossip_now || due) {
            return;
        }
        self.gossip_now = false;
        self.last_gossip = Some(now);
        let msg = paxos::Message {
            dones: self.paxos.dones().to_vec(),
            leads: self.paxos.leads_answered(now),
            body: Body::Learned {
                commits: Vec::new(),
            },
        };
        let incarnations = self.incarnations();
        let peers: Vec<NodeId> = self.others().collect();
        for peer in peers {
            out.send.push((
                peer,
                Message::Paxos {
                    incarnations: incarnations.clone(),
                    msg: msg.clone(),
                },
            ));
        }
    }
}
