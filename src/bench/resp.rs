//! The Redis-protocol driver of `kv bench --target redis://...`: one connection, one
//! command outstanding, frames encoded and checked with the server's own RESP code
//! ([`kv_server::resp::Frame`]), so Redis and kv's RESP front door are loaded by the same
//! bytes.

use std::io::Cursor;
use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use kv_engine::kv::Op;
use kv_server::resp::{Frame, FrameError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read buffer to start with; a GET reply of a 100 B value is about 110 bytes.
const READ_BUFFER_BYTES: usize = 4096;

/// A RESP connection to one server.
pub struct Connection {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
}

impl super::Connection for Connection {
    async fn connect(addr: SocketAddr) -> Result<Connection, String> {
        Ok(Connection {
            stream: super::connect_tcp(addr).await?,
            input: BytesMut::with_capacity(READ_BUFFER_BYTES),
            output: BytesMut::new(),
        })
    }

    /// Sends `op` as SET or GET and waits for its reply; an error reply is an error.
    async fn execute(&mut self, op: &Op) -> Result<(), String> {
        let command = match op {
            Op::Put { key, value } => vec![
                Frame::Bulk(Bytes::from_static(b"SET")),
                Frame::Bulk(key.clone()),
                Frame::Bulk(value.clone()),
            ],
            Op::Get { key } => vec![
                Frame::Bulk(Bytes::from_static(b"GET")),
                Frame::Bulk(key.clone()),
            ],
            other => {
                return Err(format!(
                    "the RESP driver sends SET and GET only, not {other:?}"
                ))
            }
        };
        self.output.clear();
        Frame::Array(command).write_to(&mut self.output);
        self.stream
            .write_all(&self.output)
            .await
            .map_err(|e| e.to_string())?;
        match self.read_frame().await? {
            Frame::Error(text) => Err(text),
            _ => Ok(()),
        }
    }
}

impl Connection {
    async fn read_frame(&mut self) -> Result<Frame, String> {
        loop {
            let mut cursor = Cursor::new(&self.input[..]);
            match Frame::check(&mut cursor) {
                Ok(()) => {
                    let len = cursor.position() as usize;
                    let mut cursor = Cursor::new(&self.input[..len]);
                    let frame = Frame::parse(&mut cursor).map_err(|e| e.to_string())?;
                    self.input.advance(len);
                    return Ok(frame);
                }
                Err(FrameError::Incomplete) => {}
                Err(FrameError::Invalid(reason)) => return Err(reason),
            }
            let read = self
                .stream
                .read_buf(&mut self.input)
                .await
                .map_err(|e| e.to_string())?;
            if read == 0 {
                return Err("connection closed by the server".to_string());
            }
        }
    }
}
