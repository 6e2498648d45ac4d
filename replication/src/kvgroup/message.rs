//! Wire messages between the replicas of one kv group, and the Paxos value format.
//!
//! Every Paxos message travels inside [`Message::Paxos`] with the sender's *incarnation
//! vector*: for each replica, the highest incarnation the sender knows of it. A replica's
//! incarnation rises each time it rebuilds after a lost disk; receivers drop Paxos messages
//! from an older incarnation of their sender and, when they learn that some replica
//! reincarnated, discard the proposer state that may count its old promises. The other
//! messages are idempotent requests and answers (forwarded client requests, catch-up, state
//! transfer, lost-disk rebuild); none of them can change a vote.

use bytes::Bytes;
use kv_engine::kv::Request;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::paxos::{self, Ballot, Seq};
use crate::types::NodeId;

/// One message between replicas.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A Paxos message, with the sender's incarnation vector (index = replica id).
    Paxos {
        /// The sender's knowledge of every replica's incarnation.
        incarnations: Vec<u64>,
        /// The Paxos message.
        msg: paxos::Message,
    },
    /// Client requests a replica hands to the replica it believes leads; the receiver
    /// proposes them (the sender still answers its clients once it applies them).
    Forward {
        /// The requests.
        requests: Vec<Request>,
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
    /// State transfer: the sender's applied state (answer to a [`Message::Fetch`] for
    /// instances the sender no longer has).
    Snapshot {
        /// The encoded state image (apply cursor, key-value state, dedup ages).
        image: Bytes,
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
    /// answerer durably recorded the asker's new incarnation.
    RecoverReply {
        /// Echo of the request's nonce.
        nonce: u64,
        /// Echo of the request's incarnation.
        incarnation: u64,
        /// The answerer's state.
        report: Report,
    },
}

impl Message {
    /// True for answers to a request (the simulator delivers them to deaf replicas and
    /// loses them from unreliable ones).
    pub fn is_response(&self) -> bool {
        match self {
            Message::Paxos { msg, .. } => msg.body.is_response(),
            Message::Fetched { .. }
            | Message::Snapshot { .. }
            | Message::RecoverProbed { .. }
            | Message::RecoverReply { .. } => true,
            Message::Forward { .. }
            | Message::Fetch { .. }
            | Message::RecoverProbe { .. }
            | Message::RecoverRequest { .. } => false,
        }
    }

    /// An estimate of the encoded size in bytes (for budgets and the simulator's bandwidth
    /// model).
    pub fn wire_bytes(&self) -> usize {
        const HEADER: usize = 32;
        const ITEM: usize = 24;
        match self {
            Message::Paxos { incarnations, msg } => incarnations.len() * 9 + msg.wire_bytes(),
            Message::Forward { requests } => {
                HEADER
                    + requests
                        .iter()
                        .map(|r| ITEM + r.op.key().len() + op_value_bytes(&r.op))
                        .sum::<usize>()
            }
            Message::Fetched { entries } => {
                HEADER + entries.iter().map(|(_, v)| ITEM + v.len()).sum::<usize>()
            }
            Message::Snapshot { image } => HEADER + image.len(),
            Message::RecoverReply { report, .. } => {
                HEADER + report.acceptor.len() + report.image.len() + report.incarnations.len() * 9
            }
            Message::Fetch { .. }
            | Message::RecoverProbe { .. }
            | Message::RecoverProbed { .. }
            | Message::RecoverRequest { .. } => HEADER,
        }
    }

    /// A one-line description for traces (no payloads).
    pub fn summary(&self) -> String {
        match self {
            Message::Paxos { incarnations, msg } => {
                format!("paxos {} inc {incarnations:?}", msg.body.kind())
            }
            Message::Forward { requests } => format!("forward {} requests", requests.len()),
            Message::Fetch { from } => format!("fetch from {from}"),
            Message::Fetched { entries } => format!("fetched {} entries", entries.len()),
            Message::Snapshot { image } => format!("snapshot ({} bytes)", image.len()),
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
                "recover-reply {nonce:x} inc {incarnation} promised {} max {:?} ({} bytes)",
                report.promised,
                report.max,
                report.image.len()
            ),
        }
    }
}

fn op_value_bytes(op: &kv_engine::kv::Op) -> usize {
    match op {
        kv_engine::kv::Op::Put { value, .. } | kv_engine::kv::Op::Append { value, .. } => {
            value.len()
        }
        kv_engine::kv::Op::Get { .. } | kv_engine::kv::Op::Delete { .. } => 0,
    }
}

/// What an intact replica reports to a rebuilding one.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The reporter's Paxos promise.
    pub promised: Ballot,
    /// The highest instance the reporter has seen or applied.
    pub max: Option<Seq>,
    /// The reporter's incarnation vector.
    pub incarnations: Vec<u64>,
    /// The reporter's Paxos acceptor state (`Paxos::snapshot_bytes`): promise and every
    /// instance it accepted or knows decided.
    pub acceptor: Bytes,
    /// The reporter's applied state (see [`Message::Snapshot`]).
    pub image: Bytes,
}

/// A Paxos value: the client requests one replica proposed for one instance. An empty
/// batch is a no-op (used to fill holes).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    /// The replica that proposed it.
    pub proposer: NodeId,
    /// The requests, applied in this order.
    pub requests: Vec<Request>,
}

impl Batch {
    /// Encodes the batch as a Paxos value.
    pub fn encode(&self) -> Bytes {
        Bytes::from(codec::encode(self).expect("a batch always encodes"))
    }

    /// Decodes a Paxos value.
    pub fn decode(value: &[u8]) -> Result<Batch, CodecError> {
        codec::decode(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_engine::kv::{ClientId, Op};

    #[test]
    fn a_batch_round_trips_and_garbage_is_an_error() {
        let batch = Batch {
            proposer: NodeId(2),
            requests: vec![Request {
                client: ClientId(7),
                seq: 3,
                op: Op::Append {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v"),
                },
            }],
        };
        let value = batch.encode();
        assert_eq!(Batch::decode(&value).unwrap(), batch);
        assert!(Batch::decode(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn messages_round_trip_through_the_codec() {
        let msg = Message::RecoverReply {
            nonce: 9,
            incarnation: 2,
            report: Report {
                promised: Ballot {
                    round: 4,
                    node: NodeId(1),
                },
                max: Some(Seq(17)),
                incarnations: vec![2, 0, 1],
                acceptor: Bytes::from_static(b"acceptor"),
                image: Bytes::from_static(b"image"),
            },
        };
        let bytes = codec::encode(&msg).unwrap();
        assert_eq!(codec::decode::<Message>(&bytes).unwrap(), msg);
        assert!(msg.is_response());
        assert!(!Message::Fetch { from: Seq(1) }.is_response());
    }
}
