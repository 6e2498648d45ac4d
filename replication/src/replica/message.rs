//! Wire messages between the replicas of one group, and the format of the values they
//! agree on.
//!
//! Every Paxos message travels inside [`Message::Paxos`] with the sender's incarnation
//! vector (see `peers` and `rebuild`). The other messages are idempotent requests and
//! answers — forwarded client requests, catch-up, state transfer, lost-disk rebuild,
//! restart checks — none of which can change a vote. Every message is bounded in size:
//! lists carry a byte budget and large states move as a stream of chunks.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::machine::Request;
use super::peers::{Claim, PeerMemory};
use crate::codec::{self, CodecError};
use crate::paxos::{self, Ballot, Seq, SnapshotInstance};
use crate::types::NodeId;

/// One message between replicas of a group replicating commands of type `C`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Message<C> {
    /// A Paxos message, with the sender's incarnation vector (index = replica id).
    Paxos {
        /// The sender's knowledge of every replica's incarnation.
        incarnations: std::sync::Arc<[u64]>,
        /// The Paxos message.
        msg: paxos::Message,
    },
    /// Client requests a replica hands to the replica it believes leads; the receiver
    /// proposes them (the sender still answers its clients once it applies them).
    Forward {
        /// The requests.
        requests: Vec<Request<C>>,
    },
    /// Catch-up: asks for the decided values of instances `from, from+1, ...`.
    Fetch {
        /// The first instance the asker has not applied.
        from: Seq,
    },
    /// Catch-up answer: consecutive decided instances starting at the asked `from`.
    Fetched {
        /// `(instance, decided value)`, ascending and consecutive.
        entries: Vec<(Seq, Bytes)>,
    },
    /// Answer to a fetch below what the sender keeps: the asker needs a state transfer.
    Forgotten {
        /// The sender forgot every instance below this.
        below: Seq,
    },
    /// State transfer: asks for chunk `chunk` of transfer `transfer` (chosen by the asker;
    /// chunk 0 starts it, from a frozen copy of the sender's applied state).
    ImageRequest {
        /// Identifies the transfer.
        transfer: u64,
        /// The chunk wanted (the asker asks again for one that went missing).
        chunk: u64,
    },
    /// One chunk of a state transfer: whole image frames.
    ImageChunk {
        /// Echo of the request.
        transfer: u64,
        /// Echo of the request.
        chunk: u64,
        /// The frames (see `frames`).
        frames: Bytes,
        /// True for the last chunk.
        last: bool,
    },
    /// The sender has no such transfer (it restarted, or gave up on an idle one): start
    /// again.
    ImageGone {
        /// Echo of the request.
        transfer: u64,
    },
    /// Lost-disk rebuild, step 1: "which incarnation of me do you know?"
    RecoverProbe {
        /// Identifies this rebuild attempt.
        nonce: u64,
    },
    /// Answer to [`Message::RecoverProbe`] from an intact replica.
    RecoverProbed {
        /// Echo of the probe's nonce.
        nonce: u64,
        /// The asker's incarnation as the answerer knows it.
        incarnation: u64,
    },
    /// Lost-disk rebuild, step 2: "I am now `incarnation`; report your state."
    RecoverRequest {
        /// Identifies this rebuild attempt.
        nonce: u64,
        /// The asker's new incarnation (above every one a majority knew).
        incarnation: u64,
    },
    /// Answer to [`Message::RecoverRequest`] from an intact replica, sent only after the
    /// answerer durably recorded the asker's new incarnation. The acceptor state follows
    /// in pages ([`Message::AcceptorPage`]).
    RecoverReply {
        /// Echo of the request's nonce.
        nonce: u64,
        /// Echo of the request's incarnation.
        incarnation: u64,
        /// The answerer's state, without its instances.
        report: Report,
    },
    /// Lost-disk rebuild: asks a reporter for its accepted and decided instances from
    /// `from` on.
    AcceptorPageRequest {
        /// The rebuild attempt.
        nonce: u64,
        /// The first instance wanted.
        from: Seq,
    },
    /// A page of a reporter's instances: `from..next` (everything from `from` on when
    /// `next` is `None`).
    AcceptorPage {
        /// Echo of the request's nonce.
        nonce: u64,
        /// Echo of the request's `from`.
        from: Seq,
        /// The instances, ascending.
        instances: Vec<(Seq, SnapshotInstance)>,
        /// Where the next page starts.
        next: Option<Seq>,
    },
    /// What the sender remembers of every replica (see `peers`), shared so that each
    /// witnessed fact reaches every peer.
    Witness {
        /// The sender's peer memory table.
        peers: Vec<PeerMemory>,
    },
    /// A restarted replica asks to be checked before it votes again (see `rebuild`).
    RestartCheck {
        /// Identifies this check.
        nonce: u64,
        /// What the replica claims about itself.
        claim: Claim,
    },
    /// The verdict, sent after the answerer durably recorded the boot (if current).
    RestartChecked {
        /// Echo of the check's nonce.
        nonce: u64,
        /// `None` if the claim matches everything the answerer remembers; else why not.
        stale: Option<String>,
    },
    /// A replica asks the one it believes leads for a read index, for the reads it holds
    /// (see `reads`).
    ReadIndex {
        /// Identifies the asking batch of reads (chosen by the asker).
        ask: u64,
    },
    /// The answer to [`Message::ReadIndex`], sent once the leader confirmed it leads.
    ReadIndexed {
        /// Echo of the ask.
        ask: u64,
        /// The reads may be answered once the asker has applied every instance below this;
        /// `None`: the sender does not lead (the asker sends the reads through the log).
        bound: Option<Seq>,
    },
}

impl<C> Message<C> {
    /// True for answers to a request (the simulator delivers them to deaf replicas and
    /// loses them from unreliable ones).
    pub fn is_response(&self) -> bool {
        match self {
            Message::Paxos { msg, .. } => msg.body.is_response(),
            Message::Fetched { .. }
            | Message::Forgotten { .. }
            | Message::ImageChunk { .. }
            | Message::ImageGone { .. }
            | Message::RecoverProbed { .. }
            | Message::RecoverReply { .. }
            | Message::AcceptorPage { .. }
            | Message::RestartChecked { .. }
            | Message::ReadIndexed { .. } => true,
            Message::Forward { .. }
            | Message::Fetch { .. }
            | Message::ImageRequest { .. }
            | Message::RecoverProbe { .. }
            | Message::RecoverRequest { .. }
            | Message::AcceptorPageRequest { .. }
            | Message::Witness { .. }
            | Message::RestartCheck { .. }
            | Message::ReadIndex { .. } => false,
        }
    }

    /// An estimate of the encoded size in bytes, given each command's size (for budgets
    /// and the simulator's bandwidth model).
    pub fn wire_bytes(&self, command_bytes: impl Fn(&C) -> usize) -> usize {
        const HEADER: usize = 32;
        const ITEM: usize = 24;
        HEADER
            + match self {
                Message::Paxos { incarnations, msg } => incarnations.len() * 9 + msg.wire_bytes(),
                Message::Forward { requests } => requests
                    .iter()
                    .map(|r| ITEM + command_bytes(&r.command))
                    .sum(),
                Message::Fetched { entries } => entries.iter().map(|(_, v)| ITEM + v.len()).sum(),
                Message::ImageChunk { frames, .. } => frames.len(),
                Message::RecoverReply { report, .. } => report.peers.len() * 40,
                Message::Witness { peers } => peers.len() * 40,
                Message::AcceptorPage { instances, .. } => {
                    instances.iter().map(|(_, i)| ITEM + i.value().len()).sum()
                }
                Message::Fetch { .. }
                | Message::Forgotten { .. }
                | Message::ImageRequest { .. }
                | Message::ImageGone { .. }
                | Message::RecoverProbe { .. }
                | Message::RecoverProbed { .. }
                | Message::RecoverRequest { .. }
                | Message::AcceptorPageRequest { .. }
                | Message::RestartCheck { .. }
                | Message::RestartChecked { .. }
                | Message::ReadIndex { .. }
                | Message::ReadIndexed { .. } => 0,
            }
    }

    /// A one-line description for traces (no payloads).
    pub fn summary(&self) -> String {
        match self {
            Message::Paxos { incarnations, msg } => {
                use std::fmt::Write;
                let mut out = String::with_capacity(32);
                let _ = write!(out, "paxos {} inc", msg.body.kind());
                for incarnation in incarnations.iter() {
                    let _ = write!(out, " {incarnation}");
                }
                out
            }
            Message::Forward { requests } => format!("forward {} requests", requests.len()),
            Message::Fetch { from } => format!("fetch from {from}"),
            Message::Fetched { entries } => format!("fetched {} entries", entries.len()),
            Message::Forgotten { below } => format!("forgotten below {below}"),
            Message::ImageRequest { transfer, chunk } => {
                format!("image-request {transfer:x} chunk {chunk}")
            }
            Message::ImageChunk {
                transfer,
                chunk,
                frames,
                last,
            } => format!(
                "image-chunk {transfer:x} #{chunk} ({} bytes{})",
                frames.len(),
                if *last { ", last" } else { "" }
            ),
            Message::ImageGone { transfer } => format!("image-gone {transfer:x}"),
            Message::RecoverProbe { nonce } => format!("recover-probe {nonce:x}"),
            Message::RecoverProbed { nonce, incarnation } => {
                format!("recover-probed {nonce:x} inc {incarnation}")
            }
            Message::RecoverRequest { nonce, incarnation } => {
                format!("recover-request {nonce:x} inc {incarnation}")
            }
            Message::RecoverReply {
                nonce,
                incarnation,
                report,
            } => format!(
                "recover-reply {nonce:x} inc {incarnation} promised {} max {:?}",
                report.promised, report.max
            ),
            Message::AcceptorPageRequest { nonce, from } => {
                format!("acceptor-page-request {nonce:x} from {from}")
            }
            Message::AcceptorPage {
                nonce,
                from,
                instances,
                next,
            } => format!(
                "acceptor-page {nonce:x} from {from} ({} instances, next {next:?})",
                instances.len()
            ),
            Message::Witness { peers } => format!("witness ({} peers)", peers.len()),
            Message::RestartCheck { nonce, claim } => format!(
                "restart-check {nonce:x} inc {} boot {} promised {} max {:?}",
                claim.incarnation, claim.boot.count, claim.promised, claim.max
            ),
            Message::RestartChecked { nonce, stale } => match stale {
                None => format!("restart-checked {nonce:x} current"),
                Some(reason) => format!("restart-checked {nonce:x} stale: {reason}"),
            },
            Message::ReadIndex { ask } => format!("read-index {ask}"),
            Message::ReadIndexed { ask, bound } => format!("read-indexed {ask} below {bound:?}"),
        }
    }
}

/// What an intact replica reports to a rebuilding one, besides its instances.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The reporter's Paxos promise.
    pub promised: Ballot,
    /// The highest instance the reporter has seen or applied.
    pub max: Option<Seq>,
    /// The reporter's `min()`: its instances start there.
    pub min: Seq,
    /// The reporter's apply cursor (the rebuilding replica takes the most advanced image).
    pub applied: Seq,
    /// The reporter's peer memory table.
    pub peers: Vec<PeerMemory>,
}

/// A Paxos value: the client requests one replica proposed for one instance. An empty
/// batch is a no-op (used to fill holes). An enum so the first byte tags the format: a
/// replica that cannot decode a decided value halts rather than skip it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Batch<C> {
    /// The format written today.
    V1 {
        /// The replica that proposed it.
        proposer: NodeId,
        /// The requests, applied in this order.
        requests: Vec<Request<C>>,
    },
}

/// [`Batch`] as it is written, over borrowed requests (the same bytes: serde encodes a
/// reference as what it points to).
#[derive(Serialize)]
enum BatchRef<'a, Q> {
    V1 { proposer: NodeId, requests: &'a [Q] },
}

impl<C: Serialize + serde::de::DeserializeOwned> Batch<C> {
    /// Encodes a batch of requests (owned or borrowed) as a Paxos value.
    pub fn encode<Q>(proposer: NodeId, requests: &[Q]) -> Bytes
    where
        Q: std::borrow::Borrow<Request<C>> + Serialize,
    {
        Bytes::from(
            codec::encode(&BatchRef::V1 { proposer, requests }).expect("a batch always encodes"),
        )
    }

    /// Decodes a Paxos value into its requests.
    pub fn decode(value: &[u8]) -> Result<Vec<Request<C>>, CodecError> {
        let Batch::V1 { requests, .. } = codec::decode(value)?;
        Ok(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ClientId;

    #[test]
    fn a_batch_round_trips_and_garbage_is_an_error() {
        let requests = vec![Request {
            client: ClientId(7),
            seq: 3,
            command: 42u32,
        }];
        let value = Batch::encode(NodeId(2), &requests);
        assert_eq!(Batch::<u32>::decode(&value).unwrap(), requests);
        assert!(Batch::<u32>::decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(Batch::<u32>::decode(&[1]).is_err(), "an unknown version");
    }

    #[test]
    fn messages_round_trip_through_the_codec() {
        let msg: Message<u32> = Message::AcceptorPage {
            nonce: 9,
            from: Seq(3),
            instances: vec![(Seq(3), SnapshotInstance::Decided(Bytes::from_static(b"v")))],
            next: Some(Seq(4)),
        };
        let bytes = codec::encode(&msg).unwrap();
        assert_eq!(codec::decode::<Message<u32>>(&bytes).unwrap(), msg);
        assert!(msg.is_response());
        assert!(!Message::<u32>::Fetch { from: Seq(1) }.is_response());
    }
}
