//! What a protocol core asks its driver to do, and in which order.
//!
//! # Ordering contract
//!
//! After every call into a core (message, tick, client call) the driver takes the
//! [`Effects`] and:
//!
//! 1. makes every entry of `persist` durable, **in order** (append the records, write the
//!    snapshot, then sync) — a [`Persist::Snapshot`] supersedes every record persisted
//!    before it. A record with `sync: false` is *lazy*: it is appended in order but need not
//!    be synced before the sends (a crash may lose it, and with it any later lazy record,
//!    but never an earlier synced one); the driver syncs only if some record of the call
//!    has `sync: true`. A [`Persist::Compaction`] is a snapshot the sends need not wait
//!    for: it is written in order like any snapshot, but a crash may lose it (with the
//!    records it would have replaced still on disk);
//! 2. only then hands every `send` to the network;
//! 3. only then delivers `events` (and, for client-facing cores, replies) upward.
//!
//! So no message or reply ever depends on state that a crash could take back.
//!
//! The one exception is `send_early` and `events_early`: messages and events the core
//! vouches reveal nothing this call persists. They may go once every *earlier* call's
//! persists are durable, without waiting for this call's own — so a Paxos leader's fsync of
//! its own acceptance overlaps the followers', and a decision or a client reply does not
//! wait for the fsync of the next instance's acceptance (see `paxos::Config::early_accepts`
//! for why that is safe). A driver may batch several calls into one step; "earlier" then
//! means earlier steps. State the
//! core exposes through queries (e.g. `Paxos::status`) is likewise meaningful only once the
//! effects of the call that produced it have been applied.

use std::fmt;
use std::sync::Arc;

use kv_engine::snapshot::SnapshotSource;

use crate::types::NodeId;

/// Something that must be durable before the accompanying sends leave.
#[derive(Clone)]
pub enum Persist {
    /// Append one WAL record.
    Record {
        /// Caller-defined record type (see each core's `RECORD_KIND`).
        kind: u8,
        /// Encoded record.
        payload: Vec<u8>,
        /// Must be durable before this call's sends (false: lazy, losing it is harmless).
        sync: bool,
    },
    /// A snapshot of the whole durable state, superseding every record persisted before it
    /// (the driver writes it at the index of the last record appended so far). The source
    /// is a frozen copy that writes itself: the driver may stream it on another thread
    /// while the core goes on.
    Snapshot(Arc<dyn SnapshotSource>),
    /// A snapshot of nothing the disk does not already hold: the core could rebuild the
    /// same state from the records and snapshots persisted before it, so it only lets the
    /// driver compact the log. Written in order like [`Persist::Snapshot`], but nothing
    /// waits for it — not the call's sends, events or sync — and a crash before it is
    /// durable loses only the compaction. (So the node's queue never stalls for the whole
    /// write of a large snapshot.)
    Compaction(Arc<dyn SnapshotSource>),
}

impl Persist {
    /// The snapshot's source, if this is a snapshot of either kind.
    pub fn snapshot(&self) -> Option<&Arc<dyn SnapshotSource>> {
        match self {
            Persist::Record { .. } => None,
            Persist::Snapshot(source) | Persist::Compaction(source) => Some(source),
        }
    }

    /// Whether the call's sends must wait for this to be durable.
    pub fn gates_sends(&self) -> bool {
        match self {
            Persist::Record { sync, .. } => *sync,
            Persist::Snapshot(_) => true,
            Persist::Compaction(_) => false,
        }
    }
}

impl fmt::Debug for Persist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Persist::Record {
                kind,
                payload,
                sync,
            } => f
                .debug_struct("Record")
                .field("kind", kind)
                .field("bytes", &payload.len())
                .field("sync", sync)
                .finish(),
            Persist::Snapshot(_) => f.write_str("Snapshot"),
            Persist::Compaction(_) => f.write_str("Compaction"),
        }
    }
}

impl PartialEq for Persist {
    fn eq(&self, other: &Persist) -> bool {
        match (self, other) {
            (
                Persist::Record {
                    kind: a,
                    payload: p,
                    sync: s,
                },
                Persist::Record {
                    kind: b,
                    payload: q,
                    sync: t,
                },
            ) => a == b && p == q && s == t,
            (Persist::Snapshot(a), Persist::Snapshot(b))
            | (Persist::Compaction(a), Persist::Compaction(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// Output of one call into a core.
#[derive(Debug)]
pub struct Effects<M, E> {
    /// Durable first, in order.
    pub persist: Vec<Persist>,
    /// Then sent.
    pub send: Vec<(NodeId, M)>,
    /// Sent once earlier calls' persists are durable, not waiting for this call's.
    pub send_early: Vec<(NodeId, M)>,
    /// Then reported upward.
    pub events: Vec<E>,
    /// Reported once earlier calls' persists are durable, not waiting for this call's.
    pub events_early: Vec<E>,
}

impl<M, E> Default for Effects<M, E> {
    fn default() -> Self {
        Effects {
            persist: Vec::new(),
            send: Vec::new(),
            send_early: Vec::new(),
            events: Vec::new(),
            events_early: Vec::new(),
        }
    }
}

impl<M, E> Effects<M, E> {
    /// Nothing to do.
    pub fn new() -> Self {
        Self::default()
    }

    /// True if the call produced nothing.
    pub fn is_empty(&self) -> bool {
        self.persist.is_empty()
            && self.send.is_empty()
            && self.send_early.is_empty()
            && self.events.is_empty()
            && self.events_early.is_empty()
    }

    /// Moves every effect into `out`, in order, readdressing and converting each message
    /// with `send` and each event with `event` (for a node that wraps another).
    pub fn move_into<M2, E2>(
        self,
        out: &mut Effects<M2, E2>,
        mut send: impl FnMut(NodeId, M) -> (NodeId, M2),
        mut event: impl FnMut(E) -> E2,
    ) {
        out.persist.extend(self.persist);
        out.send
            .extend(self.send.into_iter().map(|(to, m)| send(to, m)));
        out.send_early
            .extend(self.send_early.into_iter().map(|(to, m)| send(to, m)));
        out.events.extend(self.events.into_iter().map(&mut event));
        out.events_early
            .extend(self.events_early.into_iter().map(&mut event));
    }

    /// Empties every list.
    pub fn clear(&mut self) {
        self.persist.clear();
        self.send.clear();
        self.send_early.clear();
        self.events.clear();
        self.events_early.clear();
    }
}
