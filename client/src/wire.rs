//! The native protocol: length-delimited frames (a u32 big-endian length, then the body)
//! carrying postcard-encoded [`Frame`]s. One listener per node serves both peers and
//! native clients; the first frame of a connection says which it is: [`Frame::Hello`]
//! (a peer) or [`Frame::ClientHello`] (a client), each naming the cluster. Then both sides
//! prove they know the cluster secret ([`Frame::Challenge`], [`Frame::Proof`]; see
//! [`crate::auth`]).
//!
//! Limits: until a connection has introduced itself and proved it knows the secret, its
//! frames may be at most
//! [`HELLO_FRAME_BYTES_MAX`]; then a client's at most [`CLIENT_FRAME_BYTES_MAX`] and a
//! peer's at most [`FRAME_BYTES_MAX`]. A longer frame is refused by the codec as soon as
//! its length is read, before its body is buffered, so a connection never holds more than
//! one frame of its limit. A frame that does not decode closes that connection (logged),
//! and never affects any other connection or the node.

use bytes::Bytes;
use kv_engine::kv::Reply;
use kv_replication::kvgroup::Request;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

use crate::auth::{Nonce, Proof};

/// Largest frame accepted or sent: room for the largest WAL record plus framing.
pub const FRAME_BYTES_MAX: usize = kv_engine::wal::RECORD_PAYLOAD_BYTES_MAX + (1 << 20);
/// Largest value a client may write, in bytes, natively or over RESP (the store's limit,
/// [`kv_engine::kv::VALUE_BYTES_MAX`]).
pub const VALUE_BYTES_MAX: usize = kv_engine::kv::VALUE_BYTES_MAX;
/// Largest frame from a native client: a request carries one op with a key and a value,
/// or a batch of ops with at most [`kv_replication::kvgroup::BATCH_BYTES_MAX`] of them.
pub const CLIENT_FRAME_BYTES_MAX: usize = 2 * VALUE_BYTES_MAX + (64 << 10);
/// Largest frame from a connection that has not yet said who it is.
pub const HELLO_FRAME_BYTES_MAX: usize = 4 << 10;

/// One frame of the native protocol. `M` is the replicas' peer message type, `Q` a
/// client's request and `R` its reply (the unsharded group's by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Frame<M, Q = Request, R = Reply> {
    /// First frame of a peer connection: who is calling, from which cluster, to whom.
    Hello {
        /// Cluster id (from the cluster file); a mismatch closes the connection.
        cluster_id: u64,
        /// The caller's node id.
        node: u32,
        /// The node the caller means to reach; any other closes the connection.
        to: u32,
        /// The caller's fresh nonce, for the handshake.
        nonce: Nonce,
    },
    /// A protocol message between replicas.
    Peer(M),
    /// A client request; `tag` is echoed in the reply.
    Request {
        /// Chosen by the client; echoed.
        tag: u64,
        /// The operation, with the client's id and sequence number.
        request: Q,
    },
    /// The answer to a request.
    Reply {
        /// The request's tag.
        tag: u64,
        /// The result.
        reply: ClientReply<R>,
        /// The node the answering node believes leads (clients may send there directly).
        leader: Option<u32>,
    },
    /// Asks for the node's status.
    StatusRequest,
    /// The node's status, as `key: value` lines.
    Status(String),
    /// First frame of a native client's connection: which cluster it means to talk to (a
    /// mismatch closes the connection).
    ClientHello {
        /// Cluster id (from the cluster file).
        cluster_id: u64,
        /// The node the client means to reach; any other closes the connection.
        to: u32,
        /// The client's fresh nonce, for the handshake.
        nonce: Nonce,
    },
    /// The listener's answer to a hello: its own nonce and its proof that it knows the
    /// cluster secret (see [`crate::auth`]).
    Challenge {
        /// The listener's fresh nonce.
        nonce: Nonce,
        /// The listener's HMAC of the exchange.
        proof: Proof,
    },
    /// The caller's proof that it knows the cluster secret; the last frame of the
    /// handshake.
    Proof {
        /// The caller's HMAC of the exchange.
        proof: Proof,
    },
}

/// What a client gets back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply<R = Reply> {
    /// The request was applied (or had been: at-most-once) with this result.
    Done(R),
    /// The node cannot serve now (e.g. shutting down or overloaded); retry, possibly
    /// elsewhere, with the same sequence number.
    Unavailable(String),
    /// The node cannot write to its data directory and is stopping: retry elsewhere, with
    /// the same sequence number (the request may have been applied by the others).
    StorageFailed(String),
}

/// A frame's variant, for errors and logs (never its payload).
pub fn frame_name<M, Q, R>(frame: &Frame<M, Q, R>) -> &'static str {
    match frame {
        Frame::Hello { .. } => "Hello",
        Frame::ClientHello { .. } => "ClientHello",
        Frame::Peer(_) => "Peer",
        Frame::Request { .. } => "Request",
        Frame::StatusRequest => "StatusRequest",
        Frame::Reply { .. } => "Reply",
        Frame::Status(_) => "Status",
        Frame::Challenge { .. } => "Challenge",
        Frame::Proof { .. } => "Proof",
    }
}

/// A codec with the frame limit ([`FRAME_BYTES_MAX`]) applied.
pub fn codec() -> LengthDelimitedCodec {
    codec_within(FRAME_BYTES_MAX)
}

/// A codec refusing frames longer than `frame_bytes_max`.
pub fn codec_within(frame_bytes_max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(frame_bytes_max)
        .new_codec()
}

/// Encodes a frame body.
pub fn encode<M: Serialize, Q: Serialize, R: Serialize>(
    frame: &Frame<M, Q, R>,
) -> Result<Bytes, postcard::Error> {
    postcard::to_stdvec(frame).map(Bytes::from)
}

/// Decodes a frame body.
pub fn decode<M: DeserializeOwned, Q: DeserializeOwned, R: DeserializeOwned>(
    body: &[u8],
) -> Result<Frame<M, Q, R>, postcard::Error> {
    postcard::from_bytes(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_engine::kv::Op;
    use kv_replication::kvgroup::Batch;
    use kv_replication::types::ClientId;

    #[test]
    fn frames_round_trip() {
        let frame: Frame<u32> = Frame::Request {
            tag: 9,
            request: Request {
                client: ClientId(3),
                seq: 4,
                command: Batch::one(Op::Put {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v"),
                }),
            },
        };
        let bytes = encode(&frame).unwrap();
        match decode::<u32, Request, Reply>(&bytes).unwrap() {
            Frame::Request { tag, request } => {
                assert_eq!(tag, 9);
                assert_eq!(request.seq, 4);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbage_does_not_decode_and_does_not_panic() {
        for seed in 0..2000u32 {
            let bytes: Vec<u8> = (0..(seed % 40))
                .map(|i| (seed.wrapping_mul(2654435761).wrapping_add(i * 97) >> 7) as u8)
                .collect();
            let _ = decode::<Vec<u8>, Request, Reply>(&bytes);
        }
        assert!(decode::<u32, Request, Reply>(&[0xff, 0xff, 0xff]).is_err());
    }
}
