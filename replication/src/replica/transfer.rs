//! Streaming a large state to a peer: chunked, pulled, resumable, bounded in memory.
//!
//! The receiver pulls: it asks for chunk 0 of a transfer id it picks, then for each next
//! chunk once the previous one arrived (one chunk in flight: flow control is the asking),
//! and asks again for a chunk that does not arrive in time (waits growing with each try).
//! The sender answers chunk 0 by starting a [`FrameSource`] over a frozen copy of its
//! state, and every later request by producing the next chunk — whole frames up to
//! [`CHUNK_BYTES`] — keeping only the last chunk for a re-sent request. So a dropped
//! connection or a lost message costs one chunk, never the transfer; and the sender holds,
//! per transfer, one chunk plus whatever its frozen copy no longer shares with the live
//! state — nothing proportional to the state's size. A sender that restarted, or gave up
//! on a transfer idle for [`SOURCE_IDLE`], answers [`Served::Gone`] and the receiver
//! starts over.
//!
//! Both sides are written once, here, for every user: the replicated groups' catch-up and
//! the primary/backup mode's new backup ([`crate::pbservice`]).

use std::time::Duration;

use bytes::Bytes;

use super::frames::{self, Section};
use crate::timing;
use crate::types::{NodeId, Time};

/// Target bytes of frames per chunk (a single larger frame still goes whole).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Bytes of state per frame inside a chunk.
pub const FRAME_BYTES: usize = 256 << 10;
/// Transfers served at once; a new one evicts the least recently used.
pub const SOURCES_MAX: usize = 4;
/// A transfer nobody asked about for this long is dropped.
pub const SOURCE_IDLE: Duration = Duration::from_secs(30);

/// Tries of one chunk before the transfer is abandoned (and started again, maybe from
/// another peer).
pub const CHUNK_ATTEMPTS_MAX: u32 = 6;

/// Produces frames, in order.
pub(crate) trait FrameSource {
    /// Appends the next frame (about `budget` bytes) to `out`; false once all were produced.
    fn next_frame(&mut self, budget: usize, out: &mut Vec<u8>) -> bool;
}

/// What the sender answers a chunk request with.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Served {
    /// The chunk.
    Chunk {
        /// Whole frames.
        frames: Bytes,
        /// True for the last chunk.
        last: bool,
    },
    /// No such transfer (or chunk): start again.
    Gone,
}

struct Source<S> {
    to: NodeId,
    transfer: u64,
    /// `None` once the last chunk was produced.
    stream: Option<S>,
    next: u64,
    last: Option<(u64, Bytes, bool)>,
    touched: Time,
}

/// The transfers this replica is serving.
pub(crate) struct Outgoing<S> {
    sources: Vec<Source<S>>,
}

impl<S> Default for Outgoing<S> {
    fn default() -> Self {
        Outgoing {
            sources: Vec::new(),
        }
    }
}

impl<S: FrameSource> Outgoing<S> {
    /// Answers `to`'s request for `chunk` of `transfer`; `start` makes the frame source
    /// when chunk 0 of a new transfer is asked for.
    pub fn serve(
        &mut self,
        now: Time,
        to: NodeId,
        transfer: u64,
        chunk: u64,
        start: impl FnOnce() -> S,
    ) -> Served {
        self.sources.retain(|s| now - s.touched < SOURCE_IDLE);
        let index = match self
            .sources
            .iter()
            .position(|s| s.to == to && s.transfer == transfer)
        {
            Some(index) => index,
            None if chunk == 0 => {
                // Any earlier transfer to the same peer is abandoned.
                self.sources.retain(|s| s.to != to);
                if self.sources.len() >= SOURCES_MAX {
                    let oldest = self
                        .sources
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.touched)
                        .map(|(i, _)| i)
                        .expect("at least one source");
                    self.sources.remove(oldest);
                }
                self.sources.push(Source {
                    to,
                    transfer,
                    stream: Some(start()),
                    next: 0,
                    last: None,
                    touched: now,
                });
                self.sources.len() - 1
            }
            None => return Served::Gone,
        };
        let source = &mut self.sources[index];
        source.touched = now;
        if let Some((n, frames, last)) = &source.last {
            if *n == chunk {
                return Served::Chunk {
                    frames: frames.clone(),
                    last: *last,
                };
            }
        }
        if chunk != source.next {
            return Served::Gone;
        }
        let Some(stream) = source.stream.as_mut() else {
            return Served::Gone;
        };
        let mut frames = Vec::new();
        let mut more = true;
        while frames.len() < CHUNK_BYTES {
            more = stream.next_frame(FRAME_BYTES, &mut frames);
            if !more {
                break;
            }
        }
        // (A stream whose frames end exactly at a chunk boundary ends with an empty chunk.)
        let frames = Bytes::from(frames);
        let last = !more;
        if last {
            source.stream = None;
        }
        source.last = Some((chunk, frames.clone(), last));
        source.next += 1;
        Served::Chunk { frames, last }
    }

    /// Transfers being served.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Bytes of chunks kept for re-sending.
    pub fn retained_bytes(&self) -> u64 {
        self.sources
            .iter()
            .filter_map(|s| s.last.as_ref())
            .map(|(_, frames, _)| frames.len() as u64)
            .sum()
    }
}

/// Consumes frames, in order.
pub(crate) trait FrameSink {
    /// Adds the next frame; an error names what is wrong with it.
    fn add_frame(&mut self, section: Section, body: &[u8]) -> Result<(), String>;
}

/// What the receiver does after a chunk arrived.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Not the chunk asked for (a duplicate, or from an abandoned transfer): nothing.
    Ignored,
    /// The chunk was bad: drop the transfer and start again later.
    Bad,
    /// Ask for this chunk next.
    Ask(u64),
    /// That was the last chunk: the sink holds everything.
    Complete,
}

/// What the receiver does when no chunk arrived for a while.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Keep waiting.
    Wait,
    /// Ask for chunk `chunk` of `transfer` again, from `to`.
    Ask {
        /// The sender.
        to: NodeId,
        /// The transfer.
        transfer: u64,
        /// The chunk.
        chunk: u64,
    },
    /// The sender went quiet: start over, maybe elsewhere.
    GiveUp,
}

/// A transfer this replica is receiving.
pub(crate) struct Incoming<A> {
    /// The sender.
    pub from: NodeId,
    /// The transfer id this replica picked.
    pub transfer: u64,
    /// The chunk asked for.
    pub next: u64,
    /// When it was (last) asked for.
    pub asked: Time,
    /// How many times it was asked for.
    pub attempts: u32,
    /// Where the frames go.
    pub sink: A,
}

impl<A: FrameSink> Incoming<A> {
    /// A new transfer `transfer` from `from` into `sink`, chunk 0 asked for `now`.
    pub fn start(from: NodeId, transfer: u64, now: Time, sink: A) -> Incoming<A> {
        Incoming {
            from,
            transfer,
            next: 0,
            asked: now,
            attempts: 0,
            sink,
        }
    }

    /// Takes chunk `chunk` of `transfer` from `from`: its frames go to the sink.
    pub fn receive(
        &mut self,
        now: Time,
        from: NodeId,
        transfer: u64,
        chunk: u64,
        bytes: &[u8],
        last: bool,
    ) -> Received {
        if self.from != from || self.transfer != transfer || self.next != chunk {
            return Received::Ignored;
        }
        let sink = &mut self.sink;
        let added = frames::Reader::new(bytes).try_for_each(|frame| {
            let (section, body) = frame?;
            sink.add_frame(section, body)
        });
        if added.is_err() {
            return Received::Bad;
        }
        if last {
            return Received::Complete;
        }
        self.next += 1;
        self.attempts = 0;
        self.asked = now;
        Received::Ask(self.next)
    }

    /// Whether to ask again for the chunk in flight: after `retry` doubled per earlier try
    /// (at most `cap`) plus a chunk's time at `bytes_per_sec`; after
    /// [`CHUNK_ATTEMPTS_MAX`] tries, give up.
    pub fn retry(
        &mut self,
        now: Time,
        retry: Duration,
        cap: Duration,
        bytes_per_sec: u64,
    ) -> Retry {
        let wait = timing::backoff(retry, self.attempts, cap)
            + timing::transfer_time(CHUNK_BYTES, bytes_per_sec);
        if now - self.asked < wait {
            return Retry::Wait;
        }
        if self.attempts >= CHUNK_ATTEMPTS_MAX {
            return Retry::GiveUp;
        }
        self.attempts += 1;
        self.asked = now;
        Retry::Ask {
            to: self.from,
            transfer: self.transfer,
            chunk: self.next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames of `size` bytes, `count` of them.
    struct Counting {
        left: usize,
        size: usize,
    }

    impl FrameSource for Counting {
        fn next_frame(&mut self, _budget: usize, out: &mut Vec<u8>) -> bool {
            if self.left == 0 {
                return false;
            }
            self.left -= 1;
            out.extend(std::iter::repeat_n(self.left as u8, self.size));
            true
        }
    }

    fn pull(
        outgoing: &mut Outgoing<Counting>,
        transfer: u64,
        count: usize,
        size: usize,
    ) -> Vec<u8> {
        let mut all = Vec::new();
        for chunk in 0.. {
            let served = outgoing.serve(Time::ZERO, NodeId(1), transfer, chunk, || Counting {
                left: count,
                size,
            });
            let Served::Chunk { frames, last } = served else {
                panic!("gone at chunk {chunk}");
            };
            assert!(frames.len() <= CHUNK_BYTES + size);
            all.extend_from_slice(&frames);
            if last {
                break;
            }
        }
        all
    }

    #[test]
    fn a_transfer_delivers_every_frame_in_bounded_chunks() {
        let mut outgoing = Outgoing::default();
        let all = pull(&mut outgoing, 7, 40, 100_000);
        assert_eq!(all.len(), 40 * 100_000);
        assert!(outgoing.retained_bytes() <= (CHUNK_BYTES + 100_000) as u64);
        // A re-sent request for the last chunk gets it again; anything else is gone.
        assert!(matches!(
            outgoing.serve(Time::ZERO, NodeId(1), 7, 3, || unreachable!()),
            Served::Chunk { last: true, .. }
        ));
        assert_eq!(
            outgoing.serve(Time::ZERO, NodeId(1), 7, 1, || unreachable!()),
            Served::Gone
        );
    }

    #[test]
    fn a_lost_chunk_is_served_again_and_unknown_transfers_are_gone() {
        let mut outgoing = Outgoing::default();
        let start = || Counting {
            left: 30,
            size: 100_000,
        };
        let first = outgoing.serve(Time::ZERO, NodeId(2), 1, 0, start);
        let again = outgoing.serve(Time::ZERO, NodeId(2), 1, 0, || unreachable!());
        assert_eq!(first, again);
        assert_eq!(
            outgoing.serve(Time::ZERO, NodeId(2), 9, 4, || unreachable!()),
            Served::Gone
        );
        // Idle transfers are dropped.
        let later = Time::ZERO + SOURCE_IDLE;
        assert_eq!(
            outgoing.serve(later, NodeId(2), 1, 1, || unreachable!()),
            Served::Gone
        );
        assert_eq!(outgoing.len(), 0);
    }

    #[test]
    fn at_most_a_few_transfers_are_served_at_once() {
        let mut outgoing = Outgoing::default();
        for peer in 0..10u32 {
            outgoing.serve(Time(u64::from(peer)), NodeId(peer), 1, 0, || Counting {
                left: 100,
                size: 100_000,
            });
        }
        assert_eq!(outgoing.len(), SOURCES_MAX);
    }
}
