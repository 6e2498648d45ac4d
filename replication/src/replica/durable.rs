//! What a replica keeps on disk: one combined snapshot and this layer's WAL records.
//!
//! # The snapshot
//! The payload of the engine's snapshot file is
//!
//! ```text
//! "KVREPL02" | frames (see `frames`): Header, Acceptor…, Image…, End
//! ```
//!
//! holding, at one moment, the peer memory table (incarnations, boots, witness facts), the
//! fence, the Paxos acceptor's whole durable state and the applied state's image. It
//! supersedes every earlier record, Paxos's and this layer's. It is written from frozen
//! copies by the driver (see `DurableSnapshot`), frame by frame, so taking one costs the
//! replica a few clones, not an encoding of the state.
//!
//! # Records
//! After the snapshot: Paxos records ([`crate::paxos::RECORD_KIND`]) and `Record`s
//! ([`RECORD_KIND`]).
//!
//! # Versions
//! The magic and the header's `version` name the snapshot format; a record's kind names
//! its format (kinds 1 and 2 were the first, unversioned formats, refused with a clear
//! error). Golden fixtures of each format are decoded by `tests/formats.rs`.
//!
//! Invariant: Paxos `done` is only ever raised together with a combined snapshot that has
//! applied every instance up to it, and leaves no record of its own, so recovery never
//! needs an instance that the recovered Paxos peer has forgotten.

use std::io::{self, Write};

use serde::{Deserialize, Serialize};

use super::applied::{Applied, ImageAssembler, ImageStream};
use super::frames::{self, Section};
use super::machine::StateMachine;
use super::peers::PeerMemory;
use crate::codec;
use crate::paxos::{AcceptorFrame, Seq, SnapshotState};

/// WAL record kind used by this layer (Paxos uses [`crate::paxos::RECORD_KIND`]). The
/// kind is the format's version: kind 2 was the first, unversioned one.
pub const RECORD_KIND: u8 = 4;
/// Record kinds of the first, unversioned formats (refused on recovery).
pub const LEGACY_RECORD_KINDS: [u8; 2] = [1, 2];

/// The start of every snapshot payload this build writes.
pub(crate) const SNAPSHOT_MAGIC: &[u8; 8] = b"KVREPL02";
/// The snapshot format this build writes and reads.
pub(crate) const SNAPSHOT_VERSION: u16 = 2;
/// Bytes of values per acceptor and image frame.
const FRAME_BUDGET: usize = 256 << 10;

/// The snapshot's first frame.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// [`SNAPSHOT_VERSION`] of the writer.
    pub version: u16,
    /// What this replica knows of every replica, itself included.
    pub peers: Vec<PeerMemory>,
    /// The fence (see `rebuild`).
    pub fence: Option<Seq>,
}

/// One WAL record of this layer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    /// The peer memory table changed (a peer reincarnated, a boot was recorded, this
    /// replica started again).
    Peers(Vec<PeerMemory>),
}

impl Record {
    /// The record's payload.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self).expect("a record always encodes")
    }
}

/// A snapshot to be written: frozen copies of everything it holds. The driver streams it
/// (see [`kv_engine::snapshot::SnapshotSource`]), possibly on another thread.
pub(crate) struct DurableSnapshot<M: StateMachine> {
    pub header: Header,
    pub acceptor: SnapshotState,
    pub applied: Applied<M>,
}

impl<M: StateMachine> kv_engine::snapshot::SnapshotSource for DurableSnapshot<M> {
    fn write_payload(&self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(SNAPSHOT_MAGIC)?;
        frames::write(out, Section::Header, &encode(&self.header))?;
        for frame in self.acceptor.frames(FRAME_BUDGET) {
            frames::write(out, Section::Acceptor, &encode(&frame))?;
        }
        let mut stream = ImageStream::new(self.applied.clone());
        let mut buffer = Vec::new();
        while stream.next_frame(FRAME_BUDGET, &mut buffer) {
            out.write_all(&buffer)?;
            buffer.clear();
        }
        frames::write(out, Section::End, &[])
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value).expect("a snapshot frame always encodes")
}

/// A snapshot read back.
pub(crate) struct Restored<M: StateMachine> {
    pub header: Header,
    pub acceptor: SnapshotState,
    pub applied: Applied<M>,
}

/// Decodes a snapshot payload, checking every frame; the error names the byte offset of
/// the first bad frame.
pub(crate) fn restore<M: StateMachine>(payload: &[u8]) -> Result<Restored<M>, String> {
    let Some(body) = payload.strip_prefix(SNAPSHOT_MAGIC) else {
        return Err(
            "not a snapshot of this format (written by an earlier version of kv, whose \
             unversioned format this build does not read)"
                .into(),
        );
    };
    let mut reader = frames::Reader::new(body);
    let mut header = None;
    let mut acceptor = Vec::new();
    let mut image = ImageAssembler::<M>::new();
    let mut ended = false;
    let at = |reader: &frames::Reader<'_>| SNAPSHOT_MAGIC.len() + reader.offset();
    while let Some(frame) = reader.next() {
        let offset = at(&reader);
        let (section, bytes) = frame.map_err(|e| format!("at byte {offset}: {e}"))?;
        let bad = |e: String| format!("frame ending at byte {offset}: {e}");
        match (section, &header, ended) {
            (_, _, true) => return Err(bad("a frame after the end".into())),
            (Section::Header, None, _) => {
                let decoded: Header = codec::decode(bytes).map_err(|e| bad(e.to_string()))?;
                if decoded.version != SNAPSHOT_VERSION {
                    return Err(bad(format!(
                        "snapshot format {}, this build reads {SNAPSHOT_VERSION}",
                        decoded.version
                    )));
                }
                header = Some(decoded);
            }
            (_, None, _) => return Err(bad("a frame before the header".into())),
            (Section::Header, Some(_), _) => return Err(bad("a second header".into())),
            (Section::Acceptor, Some(_), _) => {
                let frame: AcceptorFrame = codec::decode(bytes).map_err(|e| bad(e.to_string()))?;
                acceptor.push(frame);
            }
            (Section::Image, Some(_), _) => image.add(bytes).map_err(bad)?,
            (Section::End, Some(_), _) => ended = true,
        }
    }
    let header = header.ok_or("a snapshot without a header")?;
    if !ended {
        return Err("a snapshot cut short (no end frame)".into());
    }
    let acceptor = SnapshotState::from_frames(acceptor)?;
    let applied = image.finish()?;
    Ok(Restored {
        header,
        acceptor,
        applied,
    })
}
