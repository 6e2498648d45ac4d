//! The native protocol: length-delimited frames (a u32 big-endian length, then the body)
//! carrying postcard-encoded [`Frame`]s. One listener per node serves both peers and
//! native clients; the first frame of a connection says which it is.
//!
//! Limits: a frame longer than [`FRAME_BYTES_MAX`] is refused by the codec before its
//! body is buffered; a frame that does not decode closes that connection (logged), and
//! never affects any other connection or the node.

use bytes::Bytes;
use kv_engine::kv::Reply;
use kv_replication::kvgroup::Request;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio_util::codec::LengthDelimitedCodec;

/// Largest frame accepted or sent: room for the largest WAL record plus framing.
pub const FRAME_BYTES_MAX: usize = kv_engine::wal::RECORD_PAYLOAD_BYTES_MAX + (1 << 20);

/// One frame of the native protocol. `M` is the replicas' peer message type.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Frame<M> {
    /// First frame of a peer connection: who is calling, from which cluster.
    Hello {
        /// Cluster id (from the cluster file); a mismatch closes the connection.
        cluster_id: u64,
        /// The caller's node id.
        node: u32,
    },
    /// A protocol message between replicas.
    Peer(M),
    /// A client request; `tag` is echoed in the reply.
    Request {
        /// Chosen by the client; echoed.
        tag: u64,
        /// The operation, with the client's id and sequence number.
        request: Request,
    },
    /// The answer to a request.
    Reply {
        /// The request's tag.
        tag: u64,
        /// The result.
        reply: ClientReply,
        /// The node the answering node believes leads (clients may send there directly).
        leader: Option<u32>,
    },
    /// Asks for the node's status.
    StatusRequest,
    /// The node's status, as `key: value` lines.
    Status(String),
}

/// What a client gets back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    /// The request was applied (or had been: at-most-once) with this result.
    Done(Reply),
    /// The node cannot serve now (e.g. shutting down or overloaded); retry, possibly
    /// elsewhere, with the same sequence number.
    Unavailable(String),
}

/// A codec with the frame limit applied.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(FRAME_BYTES_MAX)
        .new_codec()
}

/// Encodes a frame body.
pub fn encode<M: Serialize>(frame: &Frame<M>) -> Result<Bytes, postcard::Error> {
    postcard::to_stdvec(frame).map(Bytes::from)
}

/// Decodes a frame body.
pub fn decode<M: DeserializeOwned>(body: &[u8]) -> Result<Frame<M>, postcard::Error> {
    postcard::from_bytes(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kv_engine::kv::Op;
    use kv_replication::types::ClientId;

    #[test]
    fn frames_round_trip() {
        let frame: Frame<u32> = Frame::Request {
            tag: 9,
            request: Request {
                client: ClientId(3),
                seq: 4,
                command: Op::Put {
                    key: Bytes::from_static(b"k"),
                    value: Bytes::from_static(b"v"),
                },
            },
        };
        let bytes = encode(&frame).unwrap();
        match decode::<u32>(&bytes).unwrap() {
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
            let _ = decode::<Vec<u8>>(&bytes);
        }
        assert!(decode::<u32>(&[0xff, 0xff, 0xff]).is_err());
    }
}
