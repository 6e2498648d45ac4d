//! The etcd driver of `kv bench --target etcd://...`: etcd's own protocol, gRPC over
//! HTTP/2, with one connection per client and one call outstanding, as `kv bench` drives
//! Redis and kv through RESP. (etcd's JSON gateway would add a JSON encoding and an
//! in-process gRPC hop to every request, which etcd's own clients never pay.)
//!
//! Only two calls are spoken, `etcdserverpb.KV/Put` and `etcdserverpb.KV/Range` — the
//! latter with etcd's defaults, a linearizable read — and their requests are encoded by
//! hand: each is one or two length-delimited protobuf fields.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use kv_engine::kv::Op;

/// An HTTP/2 connection to one etcd member.
pub struct Connection {
    sender: h2::client::SendRequest<Bytes>,
    authority: String,
}

impl super::Connection for Connection {
    async fn connect(addr: SocketAddr) -> Result<Connection, String> {
        let stream = super::connect_tcp(addr).await?;
        let (sender, connection) = h2::client::handshake(stream)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            authority: addr.to_string(),
        })
    }

    /// Sends `op` as a Put or a Range and waits for its reply; a gRPC status other than
    /// OK is an error.
    async fn execute(&mut self, op: &Op) -> Result<(), String> {
        let (method, message) = match op {
            // PutRequest { key = 1, value = 2 }
            Op::Put { key, value } => ("Put", fields(&[(1, key), (2, value)])),
            // RangeRequest { key = 1 }: no range_end, not serializable.
            Op::Get { key } => ("Range", fields(&[(1, key)])),
            other => {
                return Err(format!(
                    "the etcd driver sends Put and Range only, not {other:?}"
                ))
            }
        };
        let request = http::Request::builder()
            .method("POST")
            .uri(format!(
                "http://{}/etcdserverpb.KV/{method}",
                self.authority
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| e.to_string())?;
        let mut sender = self
            .sender
            .clone()
            .ready()
            .await
            .map_err(|e| e.to_string())?;
        let (response, mut body) = sender
            .send_request(request, false)
            .map_err(|e| e.to_string())?;
        body.send_data(grpc_frame(&message), true)
            .map_err(|e| e.to_string())?;
        let response = response.await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP status {}", response.status()));
        }
        // A call that fails before any message carries its status in the headers.
        if let Some(status) = grpc_status(response.headers()) {
            return status;
        }
        let mut stream = response.into_body();
        while let Some(chunk) = stream.data().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            let _ = stream.flow_control().release_capacity(chunk.len());
        }
        let trailers = stream.trailers().await.map_err(|e| e.to_string())?;
        trailers
            .as_ref()
            .and_then(grpc_status)
            .unwrap_or_else(|| Err("no grpc-status trailer".to_string()))
    }
}

/// `Ok` for grpc-status 0, the status and message otherwise; `None` without one.
fn grpc_status(headers: &http::HeaderMap) -> Option<Result<(), String>> {
    let status = headers.get("grpc-status")?;
    Some(if status == "0" {
        Ok(())
    } else {
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or("");
        Err(format!(
            "grpc-status {}: {message}",
            status.to_str().unwrap_or("?")
        ))
    })
}

/// A protobuf message of length-delimited fields (wire type 2), in the order given.
fn fields(items: &[(u32, &Bytes)]) -> BytesMut {
    let mut out = BytesMut::new();
    for (number, data) in items {
        varint(&mut out, u64::from(number << 3 | 2));
        varint(&mut out, data.len() as u64);
        out.put_slice(data);
    }
    out
}

fn varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8(value as u8 | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// One gRPC message: an uncompressed flag, its length (big-endian u32), its bytes.
fn grpc_frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_request_encodes_key_then_value_as_length_delimited_fields() {
        let key = Bytes::from_static(b"k");
        let value = Bytes::from(vec![b'v'; 200]);
        let message = fields(&[(1, &key), (2, &value)]);
        assert_eq!(&message[..3], &[0x0a, 1, b'k']);
        // 200 needs two varint bytes: 0xc8 0x01.
        assert_eq!(&message[3..6], &[0x12, 0xc8, 0x01]);
        assert_eq!(message.len(), 6 + 200);
        let framed = grpc_frame(&message);
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 206]);
    }
}
