//! The replicated state: the machine, the at-most-once table, the apply cursor and a hash
//! chain over every applied value — and its image, streamed frame by frame.
//!
//! Invariants: `next` is the first instance not applied; every change happens in
//! [`Applied::apply`], in log order, as a pure function of the decided value and the state,
//! so replicas at equal `next` hold equal states, equal images and equal digests (the
//! simulator checks the digests after every step).
//!
//! # Image
//! Frames of the [`Section::Image`] section ([`ImageFrame`]): a header (format version,
//! cursor, digest, number of sessions), the sessions in client order, the machine's pieces,
//! and an end marker. [`ImageStream`] produces them one at a time from a frozen copy;
//! [`ImageAssembler`] checks and consumes them one at a time. An image from a peer or the
//! disk is refused as a whole if any frame is bad.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::frames::{self, Section};
use super::machine::{Context, ImageBuilder, Request, StateMachine};
use super::sessions::{Seen, Session, Sessions};
use crate::codec;
use crate::paxos::Seq;
use crate::types::ClientId;

/// The image format written today.
pub(crate) const IMAGE_VERSION: u16 = 1;
/// Sessions per image frame.
const SESSIONS_PER_FRAME: usize = 512;

/// The replicated state. Cloning is cheap when the machine's is (a frozen copy).
#[derive(Clone, Debug)]
pub(crate) struct Applied<M: StateMachine> {
    pub machine: M,
    pub sessions: Sessions<M::Reply>,
    pub next: Seq,
    pub digest: u64,
}

/// CRC-32 of nothing: the digest of the empty log.
const DIGEST_EMPTY: u64 = 0;

impl<M: StateMachine> Applied<M> {
    /// The state of a group that applied nothing, whose machine is `machine`.
    pub fn initial(machine: M) -> Applied<M> {
        Applied {
            machine,
            sessions: Sessions::new(),
            next: Seq::ZERO,
            digest: DIGEST_EMPTY,
        }
    }

    /// Applies decided instance `seq` (which must be `next`), whose value `value` holds
    /// `requests`; returns one reply per request.
    pub fn apply(
        &mut self,
        seq: Seq,
        value: &[u8],
        requests: &[Request<M::Command>],
    ) -> Vec<M::Reply> {
        assert_eq!(seq, self.next, "instances must be applied in order");
        self.digest = chain(self.digest, value);
        let replies = requests.iter().map(|r| self.execute(seq, r)).collect();
        self.next = seq.next();
        replies
    }

    fn execute(&mut self, at: Seq, request: &Request<M::Command>) -> M::Reply {
        let read = M::is_read(&request.command) || request.is_internal();
        if !read {
            match self.sessions.seen(request.client, request.seq) {
                Seen::New => {}
                Seen::Duplicate(reply) => return reply,
                Seen::Stale(last) => return M::stale(last),
            }
        }
        let mut context = Context {
            at,
            sessions: &mut self.sessions,
        };
        let reply = self.machine.apply(&request.command, &mut context);
        if !read && !M::is_refusal(&reply) {
            self.sessions
                .record(request.client, request.seq, reply.clone(), at);
        }
        reply
    }

    /// The answer for a write already executed here: its stored reply, or a stale reply for
    /// an older one. `None` if it has not been executed, or is a read (never recorded).
    pub fn executed(&self, request: &Request<M::Command>) -> Option<M::Reply> {
        if M::is_read(&request.command) || request.is_internal() {
            return None;
        }
        match self.sessions.seen(request.client, request.seq) {
            Seen::New => None,
            Seen::Duplicate(reply) => Some(reply),
            Seen::Stale(last) => Some(M::stale(last)),
        }
    }
}

/// Extends the hash chain by one value: CRC-32 (hardware-accelerated, so a 16 MiB value
/// costs microseconds, not the tens of milliseconds a byte-at-a-time hash would) seeded
/// with the chain so far, shifted into the chain.
fn chain(digest: u64, value: &[u8]) -> u64 {
    let mut hasher = crc32fast::Hasher::new_with_initial((digest ^ (digest >> 32)) as u32);
    hasher.update(&(value.len() as u64).to_le_bytes());
    hasher.update(value);
    (digest << 32) | u64::from(hasher.finalize())
}

/// One frame of an image. An enum so the first byte tags the frame kind.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum ImageFrame<R> {
    /// The first frame.
    Header {
        /// [`IMAGE_VERSION`] of the writer.
        version: u16,
        /// The first instance not applied.
        next: Seq,
        /// The hash chain over every applied value.
        digest: u64,
        /// How many sessions follow.
        sessions: u64,
    },
    /// At-most-once entries, in client order.
    Sessions(Vec<(ClientId, Session<R>)>),
    /// One piece of the machine's image.
    Machine(Bytes),
    /// The last frame.
    End,
}

enum Stage<C> {
    Header,
    Sessions(Option<ClientId>),
    Machine(Option<C>),
    End,
    Done,
}

/// Produces the image frames of a frozen state, one at a time.
pub(crate) struct ImageStream<M: StateMachine> {
    applied: Applied<M>,
    stage: Stage<M::Cursor>,
}

impl<M: StateMachine> ImageStream<M> {
    /// A stream over `applied` (a frozen copy).
    pub fn new(applied: Applied<M>) -> ImageStream<M> {
        ImageStream {
            applied,
            stage: Stage::Header,
        }
    }

    /// Appends the next frame (about `budget` bytes) to `out`; false once all were
    /// produced.
    pub fn next_frame(&mut self, budget: usize, out: &mut Vec<u8>) -> bool {
        let frame: ImageFrame<M::Reply> = match std::mem::replace(&mut self.stage, Stage::Done) {
            Stage::Header => {
                self.stage = Stage::Sessions(None);
                ImageFrame::Header {
                    version: IMAGE_VERSION,
                    next: self.applied.next,
                    digest: self.applied.digest,
                    sessions: self.applied.sessions.len() as u64,
                }
            }
            Stage::Sessions(after) => {
                let entries = self.applied.sessions.range_after(after, SESSIONS_PER_FRAME);
                self.stage = match entries.last() {
                    Some((last, _)) if entries.len() == SESSIONS_PER_FRAME => {
                        Stage::Sessions(Some(*last))
                    }
                    _ => Stage::Machine(None),
                };
                if entries.is_empty() {
                    return self.next_frame(budget, out);
                }
                ImageFrame::Sessions(entries)
            }
            Stage::Machine(cursor) => {
                let mut piece = Vec::new();
                let next = self
                    .applied
                    .machine
                    .encode_piece(cursor.as_ref(), budget, &mut piece);
                self.stage = match next {
                    Some(next) => Stage::Machine(Some(next)),
                    None => Stage::End,
                };
                ImageFrame::Machine(Bytes::from(piece))
            }
            Stage::End => ImageFrame::End,
            Stage::Done => return false,
        };
        let body = codec::encode(&frame).expect("an image frame always encodes");
        frames::push(out, Section::Image, &body);
        true
    }
}

impl<M: StateMachine> super::transfer::FrameSink for ImageAssembler<M> {
    fn add_frame(&mut self, section: Section, body: &[u8]) -> Result<(), String> {
        if section != Section::Image {
            return Err(format!("a {section:?} frame in a state transfer"));
        }
        self.add(body)
    }
}

/// Consumes image frames, in order, into a state.
pub(crate) struct ImageAssembler<M: StateMachine> {
    header: Option<(Seq, u64, u64)>,
    sessions: Sessions<M::Reply>,
    last_client: Option<ClientId>,
    builder: M::Builder,
    machine_started: bool,
    ended: bool,
}

impl<M: StateMachine> Default for ImageAssembler<M> {
    fn default() -> Self {
        ImageAssembler::new()
    }
}

impl<M: StateMachine> ImageAssembler<M> {
    /// An assembler expecting the header frame.
    pub fn new() -> ImageAssembler<M> {
        ImageAssembler {
            header: None,
            sessions: Sessions::new(),
            last_client: None,
            builder: M::builder(),
            machine_started: false,
            ended: false,
        }
    }

    /// Adds the body of the next image frame.
    pub fn add(&mut self, body: &[u8]) -> Result<(), String> {
        if self.ended {
            return Err("a frame after the end of the image".into());
        }
        let frame: ImageFrame<M::Reply> =
            codec::decode(body).map_err(|e| format!("image frame: {e}"))?;
        match (frame, self.header) {
            (
                ImageFrame::Header {
                    version,
                    next,
                    digest,
                    sessions,
                },
                None,
            ) => {
                if version != IMAGE_VERSION {
                    return Err(format!(
                        "image format {version}, this build reads {IMAGE_VERSION}"
                    ));
                }
                self.header = Some((next, digest, sessions));
            }
            (ImageFrame::Header { .. }, Some(_)) => return Err("a second image header".into()),
            (_, None) => return Err("an image frame before the header".into()),
            (ImageFrame::Sessions(entries), Some((next, _, _))) => {
                if self.machine_started {
                    return Err("sessions after the machine's pieces".into());
                }
                for (client, session) in entries {
                    if self.last_client.is_some_and(|last| last >= client) {
                        return Err("sessions out of order".into());
                    }
                    self.last_client = Some(client);
                    self.sessions.restore(client, session, next)?;
                }
            }
            (ImageFrame::Machine(piece), Some(_)) => {
                self.machine_started = true;
                self.builder.add(&piece)?;
            }
            (ImageFrame::End, Some(_)) => self.ended = true,
        }
        Ok(())
    }

    /// The state, once the end frame arrived.
    pub fn finish(self) -> Result<Applied<M>, String> {
        let Some((next, digest, sessions)) = self.header else {
            return Err("an image without a header".into());
        };
        if !self.ended {
            return Err("an image without its end".into());
        }
        if sessions > Sessions::<M::Reply>::CLIENTS_MAX as u64 {
            return Err(format!(
                "the image holds {sessions} sessions, beyond the bound"
            ));
        }
        if self.sessions.len() as u64 != sessions {
            return Err(format!(
                "the image announced {sessions} sessions and held {}",
                self.sessions.len()
            ));
        }
        Ok(Applied {
            machine: self.builder.finish()?,
            sessions: self.sessions,
            next,
            digest,
        })
    }
}
