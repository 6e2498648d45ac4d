//! Catching up: fetching decided values, filling holes, and state transfer.
//!
//! When the next instance to apply stays undecided while it is known to be decided
//! somewhere (a later instance is decided here, a peer announced it done, a rebuild fenced
//! it), the replica fetches decided values from a peer ([`Message::Fetch`], bounded
//! answers), backing off while nothing moves; an instance merely *seen* (the tip of the
//! log, still being agreed on) is fetched only after a longer wait, so a large value is
//! not moved twice. If the instance stays undecided longer (a hole left by a failed
//! proposer), the replica proposes a no-op there.
//!
//! A peer that no longer holds the instances asked for answers [`Message::Forgotten`]; the
//! replica then pulls the peer's applied state as a stream of chunks (see `transfer`),
//! one transfer at a time, resumable after lost messages and dropped connections, and
//! installs it — taking one snapshot, since the installed state is in no log record.

use std::time::Duration;

use bytes::Bytes;

use super::applied::{ImageAssembler, ImageStream};

use super::machine::{Request, StateMachine};
use super::message::{Batch, Message};
use super::transfer::{FrameSource, Incoming, Received, Retry, Served};
use super::{Output, Replica};
use crate::paxos::{self, Fate, Seq};
use crate::timing;
use crate::types::{NodeId, Time};

/// Most decided values buffered from fetch replies ahead of the apply cursor.
const FETCH_WINDOW: u64 = 4096;
/// Most entries in one fetch reply.
const FETCH_ENTRIES_MAX: usize = 1024;
/// Longest wait between two fetches while the apply cursor does not move.
const FETCH_INTERVAL_MAX: Duration = Duration::from_secs(2);

impl<M: StateMachine> FrameSource for ImageStream<M> {
    fn next_frame(&mut self, budget: usize, out: &mut Vec<u8>) -> bool {
        ImageStream::next_frame(self, budget, out)
    }
}

impl<M: StateMachine> Replica<M> {
    /// Fetches decided values when the next instance to apply is known to be decided
    /// somewhere or, after a longer wait, merely seen; proposes a no-op there if it stays a
    /// hole and something needs it filled — a later instance is decided, or a read waits
    /// for it (a read index covers every instance the leader has seen, and an instance
    /// seen but never proposed again would keep such a read waiting for good); pulls a
    /// state transfer when the peers forgot what this replica needs.
    pub(super) fn catch_up(&mut self, now: Time, out: &mut Output<M>) {
        if self.image_wanted {
            self.pull_image(now, out);
            return;
        }
        let cursor = self.applied.next;
        if matches!(self.paxos.status(cursor), Fate::Decided(_)) {
            self.stall = None;
            return;
        }
        let decided_elsewhere = self.peer_done.is_some_and(|d| d >= cursor)
            || self.fence.is_some_and(|f| f >= cursor)
            || self.fetched.range(cursor.next()..).next().is_some()
            || self.paxos.decided_after(cursor);
        let seen = self
            .paxos
            .max()
            .max(self.reads.horizon)
            .is_some_and(|m| m >= cursor);
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
        if (decided_elsewhere || self.reads.wait_for(cursor))
            && waited >= hole
            && !self.inflight.contains_key(&cursor)
            && self.last_noop.is_none_or(|t| now - t >= hole)
        {
            self.last_noop = Some(now);
            let noop = Batch::<M::Command>::encode::<Request<M::Command>>(self.config.me, &[]);
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

    pub(super) fn on_fetch(&mut self, from: NodeId, first: Seq, out: &mut Output<M>) {
        if self.phase.is_rebuilding() {
            return;
        }
        if first < self.paxos.min() {
            if self.applied.next > first {
                let below = self.paxos.min();
                out.send.push((from, Message::Forgotten { below }));
            }
            return;
        }
        let mut entries = Vec::new();
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
        if !entries.is_empty() {
            out.send.push((from, Message::Fetched { entries }));
        } else if self.applied.next > first {
            // Applied here, but its value is gone (this replica installed an image past it,
            // or forgot it to fit its retention bound): the asker needs an image.
            let below = self.applied.next;
            out.send.push((from, Message::Forgotten { below }));
        }
    }

    pub(super) fn on_fetched(&mut self, entries: Vec<(Seq, Bytes)>) {
        if self.phase.is_rebuilding() {
            return;
        }
        let next = self.applied.next;
        for (seq, value) in entries {
            if seq >= next && seq.0 < next.0 + FETCH_WINDOW {
                self.fetched.insert(seq, value);
            }
        }
    }

    pub(super) fn on_forgotten(&mut self, from: NodeId, below: Seq) {
        if below > self.applied.next && !self.phase.is_rebuilding() {
            self.image_wanted = true;
            self.image_from = Some(from);
        }
    }

    // ---------------------------------------------------------------------------------
    // State transfer: receiving.
    // ---------------------------------------------------------------------------------

    /// Starts, continues or re-asks for the state transfer this replica needs.
    pub(super) fn pull_image(&mut self, now: Time, out: &mut Output<M>) {
        let retry = self.config.transfer_retry;
        let cap = self.config.paxos.retry_interval_max;
        let rate = self.config.paxos.transfer_bytes_per_sec;
        if let Some(incoming) = self.incoming.as_mut() {
            match incoming.retry(now, retry, cap, rate) {
                Retry::Wait => return,
                Retry::Ask {
                    to,
                    transfer,
                    chunk,
                } => {
                    out.send
                        .push((to, Message::ImageRequest { transfer, chunk }));
                    return;
                }
                Retry::GiveUp => self.incoming = None,
            }
        }
        let source = if self.phase.is_rebuilding() {
            self.rebuild_image_source()
        } else {
            self.image_from.take().or_else(|| self.fetch_target())
        };
        let Some(from) = source else {
            return;
        };
        let transfer = self.rng.next_u64();
        self.incoming = Some(Incoming::start(from, transfer, now, ImageAssembler::new()));
        out.send
            .push((from, Message::ImageRequest { transfer, chunk: 0 }));
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_image_chunk(
        &mut self,
        now: Time,
        from: NodeId,
        transfer: u64,
        chunk: u64,
        bytes: &[u8],
        last: bool,
        out: &mut Output<M>,
    ) {
        let Some(incoming) = self.incoming.as_mut() else {
            return;
        };
        match incoming.receive(now, from, transfer, chunk, bytes, last) {
            Received::Ignored => return,
            Received::Bad => {
                self.incoming = None;
                return;
            }
            Received::Ask(next) => {
                out.send.push((
                    from,
                    Message::ImageRequest {
                        transfer,
                        chunk: next,
                    },
                ));
                return;
            }
            Received::Complete => {}
        }
        let Some(incoming) = self.incoming.take() else {
            return;
        };
        let Ok(applied) = incoming.sink.finish() else {
            return;
        };
        if self.phase.is_rebuilding() {
            self.rebuild_image(now, applied, out);
        } else if applied.next > self.applied.next {
            self.install(now, applied, out);
        } else {
            self.image_wanted = false;
        }
    }

    pub(super) fn on_image_gone(&mut self, from: NodeId, transfer: u64) {
        if self
            .incoming
            .as_ref()
            .is_some_and(|i| i.from == from && i.transfer == transfer)
        {
            self.incoming = None;
        }
    }

    // ---------------------------------------------------------------------------------
    // State transfer: serving.
    // ---------------------------------------------------------------------------------

    pub(super) fn on_image_request(
        &mut self,
        now: Time,
        from: NodeId,
        transfer: u64,
        chunk: u64,
        out: &mut Output<M>,
    ) {
        if self.phase.is_rebuilding() {
            out.send.push((from, Message::ImageGone { transfer }));
            return;
        }
        let applied = &self.applied;
        let served = self.outgoing.serve(now, from, transfer, chunk, || {
            ImageStream::new(applied.clone())
        });
        let reply = match served {
            Served::Chunk { frames, last } => Message::ImageChunk {
                transfer,
                chunk,
                frames,
                last,
            },
            Served::Gone => Message::ImageGone { transfer },
        };
        out.send.push((from, reply));
    }
}
