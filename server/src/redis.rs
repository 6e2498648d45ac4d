//! The Redis-protocol (RESP2) front door: every node serves it, so redis-cli,
//! redis-benchmark and Redis client libraries work unchanged.
//!
//! Layers read in one direction: bytes → [`crate::resp::Frame`] → [`Command`] → a
//! [`Request`] to the local replica core, which proposes it through the replicated log (a
//! node that does not lead forwards it inside the cluster) and answers only once it has been
//! applied — after a majority decided it and this node's log is durable.
//!
//! Each connection is one client for at-most-once purposes: a fresh random client id, and
//! a sequence number per operation. Commands on a connection run one at a time, in order,
//! which is Redis's own pipelining semantics.
//!
//! Bad input: a frame that can never become valid gets `-ERR Protocol error` and the
//! connection is closed (as Redis does); unknown commands and wrong arities get Redis-style
//! errors and the connection continues.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use kv_engine::kv::{Op, Reply};
use kv_replication::kvgroup::Request;
use kv_replication::types::ClientId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::node::Input;
use crate::resp::{Frame, FrameError, Limits};
use crate::wire::ClientReply;

/// Largest value a client may send, in bytes (one WAL record must hold it with its batch).
pub const VALUE_BYTES_MAX: usize = 16 << 20;
/// How long a RESP command keeps being retried after the replica drops it.
pub const RETRY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// Concurrent RESP connections per node.
pub const CONNECTIONS_MAX: usize = 10_000;

/// The reader limits for client frames.
pub const LIMITS: Limits = Limits {
    bulk_bytes_max: VALUE_BYTES_MAX,
    array_len_max: 1 << 16,
    depth_max: 2,
    line_bytes_max: 64 * 1024,
    frame_bytes_max: VALUE_BYTES_MAX + (1 << 20),
};

/// A parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// GET key
    Get(Bytes),
    /// SET key value
    Set(Bytes, Bytes),
    /// APPEND key value
    Append(Bytes, Bytes),
    /// DEL key [key ...]
    Del(Vec<Bytes>),
    /// EXISTS key [key ...]
    Exists(Vec<Bytes>),
    /// MGET key [key ...]
    MGet(Vec<Bytes>),
    /// PING \[message\]
    Ping(Option<Bytes>),
    /// ECHO message
    Echo(Bytes),
    /// INFO \[section\]
    Info,
    /// QUIT
    Quit,
    /// SELECT db (only 0 exists)
    Select(Bytes),
    /// DBSIZE
    DbSize,
    /// COMMAND [...] (clients probe it on connect)
    CommandDocs,
    /// HELLO [protover ...]
    Hello(Option<Bytes>),
    /// CLIENT SETNAME / SETINFO / ... (accepted and ignored)
    Client,
    /// CONFIG GET pattern (answers with nothing configured)
    ConfigGet,
}

/// Why a frame is not a command we run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError(pub String);

fn arity(name: &str) -> CommandError {
    CommandError(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

impl Command {
    /// Parses a client frame (an array of bulk strings).
    pub fn from_frame(frame: Frame) -> Result<Command, CommandError> {
        let Frame::Array(items) = frame else {
            return Err(CommandError(
                "ERR Protocol error: expected an array of bulk strings".into(),
            ));
        };
        let mut args = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Frame::Bulk(b) => args.push(b),
                Frame::Simple(s) => args.push(Bytes::from(s)),
                Frame::Integer(i) => args.push(Bytes::from(i.to_string())),
                _ => {
                    return Err(CommandError(
                        "ERR Protocol error: expected bulk strings".into(),
                    ))
                }
            }
        }
        let Some(name) = args.first() else {
            return Err(CommandError("ERR empty command".into()));
        };
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let rest = &args[1..];
        let one = |n: &str| -> Result<Bytes, CommandError> {
            match rest {
                [a] => Ok(a.clone()),
                _ => Err(arity(n)),
            }
        };
        let two = |n: &str| -> Result<(Bytes, Bytes), CommandError> {
            match rest {
                [a, b] => Ok((a.clone(), b.clone())),
                _ => Err(arity(n)),
            }
        };
        let many = |n: &str| -> Result<Vec<Bytes>, CommandError> {
            if rest.is_empty() {
                Err(arity(n))
            } else {
                Ok(rest.to_vec())
            }
        };
        Ok(match name.as_str() {
            "get" => Command::Get(one("get")?),
            "set" => match rest {
                [k, v] => Command::Set(k.clone(), v.clone()),
                [_, _, ..] => {
                    return Err(CommandError(
                        "ERR SET options (EX, PX, NX, XX, ...) are not supported".into(),
                    ))
                }
                _ => return Err(arity("set")),
            },
            "append" => {
                let (k, v) = two("append")?;
                Command::Append(k, v)
            }
            "del" | "unlink" => Command::Del(many(&name)?),
            "exists" => Command::Exists(many("exists")?),
            "mget" => Command::MGet(many("mget")?),
            "ping" => match rest {
                [] => Command::Ping(None),
                [m] => Command::Ping(Some(m.clone())),
                _ => return Err(arity("ping")),
            },
            "echo" => Command::Echo(one("echo")?),
            "info" => Command::Info,
            "quit" => Command::Quit,
            "select" => Command::Select(one("select")?),
            "dbsize" => Command::DbSize,
            "command" => Command::CommandDocs,
            "hello" => Command::Hello(rest.first().cloned()),
            "client" => Command::Client,
            "config" => match rest.first().map(|s| s.to_ascii_lowercase()) {
                Some(sub) if sub == b"get" => Command::ConfigGet,
                _ => return Err(CommandError("ERR only CONFIG GET is supported".into())),
            },
            _ => {
                let first = rest
                    .first()
                    .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
                    .unwrap_or_default();
                return Err(CommandError(format!(
                    "ERR unknown command '{name}', with args beginning with: {first}"
                )));
            }
        })
    }
}

/// A process-wide source of fresh client ids: random base, then a counter, hashed.
struct ClientIds {
    seed: RandomState,
    next: AtomicU64,
}

impl ClientIds {
    fn fresh(&self) -> ClientId {
        let mut hasher = self.seed.build_hasher();
        hasher.write_u64(self.next.fetch_add(1, Ordering::Relaxed));
        ClientId(hasher.finish())
    }
}

/// Serves RESP on `listener` until shutdown, sending requests to the local core.
pub async fn serve<M: Send + 'static>(
    listener: TcpListener,
    inputs: mpsc::Sender<Input<M>>,
    shutdown: watch::Receiver<bool>,
) {
    let ids = Arc::new(ClientIds {
        seed: RandomState::new(),
        next: AtomicU64::new(0),
    });
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, remote)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "too many RESP connections; refusing");
            continue;
        };
        let inputs = inputs.clone();
        let client = ids.fresh();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(reason) = connection(stream, client, inputs, shutdown).await {
                tracing::info!(%remote, %reason, "closed RESP connection");
            }
            drop(permit);
        });
    }
}

struct Session<M> {
    client: ClientId,
    seq: u64,
    inputs: mpsc::Sender<Input<M>>,
}

impl<M: Send + 'static> Session<M> {
    /// Runs one operation through the replicated log. If the replica gives up on it (it is
    /// rebuilding, or overloaded), the same request — same sequence number, so at most once
    /// — is sent again with capped backoff; a Redis client should not have to retry.
    async fn run(&mut self, op: Op) -> Result<Reply, String> {
        self.seq += 1;
        let request = Request {
            client: self.client,
            seq: self.seq,
            command: op,
        };
        let started = std::time::Instant::now();
        let mut backoff = std::time::Duration::from_millis(10);
        loop {
            let (tx, rx) = oneshot::channel();
            self.inputs
                .send(Input::Client {
                    request: request.clone(),
                    reply: tx,
                })
                .await
                .map_err(|_| "node is stopping".to_string())?;
            match rx.await {
                Ok(ClientReply::Done(reply)) => return Ok(reply),
                Ok(ClientReply::Unavailable(why)) if started.elapsed() >= RETRY_DEADLINE => {
                    return Err(why)
                }
                Ok(ClientReply::Unavailable(_)) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
                }
                Err(_) => return Err("node is stopping".into()),
            }
        }
    }

    async fn status(&self) -> Option<crate::node::Status> {
        let (tx, rx) = oneshot::channel();
        self.inputs.send(Input::Status(tx)).await.ok()?;
        rx.await.ok()
    }
}

async fn connection<M: Send + 'static>(
    mut stream: TcpStream,
    client: ClientId,
    inputs: mpsc::Sender<Input<M>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut session = Session {
        client,
        seq: 0,
        inputs,
    };
    let mut buffer = BytesMut::with_capacity(4096);
    let mut out = BytesMut::with_capacity(4096);
    loop {
        // Answer every whole frame already buffered, then flush once.
        loop {
            let mut cursor = Cursor::new(&buffer[..]);
            match Frame::check_within(&mut cursor, &LIMITS) {
                Ok(()) => {
                    let len = cursor.position() as usize;
                    let mut cursor = Cursor::new(&buffer[..len]);
                    let frame = Frame::parse_within(&mut cursor, &LIMITS)
                        .map_err(|e| format!("frame checked but did not parse: {e}"))?;
                    buffer.advance(len);
                    if let Frame::Array(items) = &frame {
                        if items.is_empty() {
                            continue; // an empty inline line: ignored, as Redis does
                        }
                    }
                    let quit = answer(&mut session, frame, &mut out).await;
                    if quit {
                        stream.write_all(&out).await.map_err(|e| e.to_string())?;
                        return Ok(());
                    }
                }
                Err(FrameError::Incomplete) => break,
                Err(FrameError::Invalid(why)) => {
                    Frame::Error(format!("ERR Protocol error: {why}")).write_to(&mut out);
                    stream.write_all(&out).await.map_err(|e| e.to_string())?;
                    return Err(format!("protocol error: {why}"));
                }
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            out.clear();
        }
        let read = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            read = stream.read_buf(&mut buffer) => read.map_err(|e| e.to_string())?,
        };
        if read == 0 {
            return Ok(());
        }
    }
}

/// Runs one command and writes its reply; returns true if the connection should close.
async fn answer<M: Send + 'static>(
    session: &mut Session<M>,
    frame: Frame,
    out: &mut BytesMut,
) -> bool {
    let command = match Command::from_frame(frame) {
        Ok(command) => command,
        Err(CommandError(message)) => {
            Frame::Error(message).write_to(out);
            return false;
        }
    };
    let reply = match execute(session, command).await {
        Ok(Some(reply)) => reply,
        Ok(None) => {
            Frame::Simple("OK".into()).write_to(out);
            return true;
        }
        Err(why) => Frame::Error(format!("ERR {why}")),
    };
    reply.write_to(out);
    false
}

/// Executes a command; `Ok(None)` means QUIT.
async fn execute<M: Send + 'static>(
    session: &mut Session<M>,
    command: Command,
) -> Result<Option<Frame>, String> {
    let frame = match command {
        Command::Get(key) => match session.run(Op::Get { key }).await? {
            Reply::Value(Some(v)) => Frame::Bulk(v),
            Reply::Value(None) => Frame::Null,
            other => return Err(unexpected(other)),
        },
        Command::Set(key, value) => match session.run(Op::Put { key, value }).await? {
            Reply::Ok => Frame::Simple("OK".into()),
            other => return Err(unexpected(other)),
        },
        Command::Append(key, value) => match session.run(Op::Append { key, value }).await? {
            Reply::Appended(len) => Frame::Integer(len as i64),
            other => return Err(unexpected(other)),
        },
        Command::Del(keys) => {
            let mut count = 0;
            for key in keys {
                match session.run(Op::Delete { key }).await? {
                    Reply::Deleted(existed) => count += existed as i64,
                    other => return Err(unexpected(other)),
                }
            }
            Frame::Integer(count)
        }
        Command::Exists(keys) => {
            let mut count = 0;
            for key in keys {
                match session.run(Op::Get { key }).await? {
                    Reply::Value(v) => count += v.is_some() as i64,
                    other => return Err(unexpected(other)),
                }
            }
            Frame::Integer(count)
        }
        Command::MGet(keys) => {
            let mut values = Vec::new();
            for key in keys {
                match session.run(Op::Get { key }).await? {
                    Reply::Value(Some(v)) => values.push(Frame::Bulk(v)),
                    Reply::Value(None) => values.push(Frame::Null),
                    other => return Err(unexpected(other)),
                }
            }
            Frame::Array(values)
        }
        Command::Ping(None) => Frame::Simple("PONG".into()),
        Command::Ping(Some(m)) | Command::Echo(m) => Frame::Bulk(m),
        Command::Info => {
            let status = session.status().await.unwrap_or_default();
            let mut text = String::from("# Server\r\nredis_version:7.0.0\r\nkv_version:");
            text.push_str(env!("CARGO_PKG_VERSION"));
            text.push_str("\r\nredis_mode:standalone\r\n\r\n# Replication\r\n");
            for (name, value) in &status.core {
                text.push_str(&format!("{name}:{value}\r\n"));
            }
            text.push_str(&format!(
                "\r\n# Persistence\r\nwal_bytes:{}\r\nsnapshot_bytes:{}\r\nsnapshot_index:{}\r\n",
                status.wal_bytes, status.snapshot_bytes, status.snapshot_index
            ));
            Frame::Bulk(Bytes::from(text))
        }
        Command::Quit => return Ok(None),
        Command::Select(db) if &db[..] == b"0" => Frame::Simple("OK".into()),
        Command::Select(_) => Frame::Error("ERR DB index is out of range".into()),
        Command::DbSize => {
            let status = session.status().await.unwrap_or_default();
            let keys = status
                .core
                .iter()
                .find(|(name, _)| *name == "keys")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            Frame::Integer(keys)
        }
        Command::CommandDocs => Frame::Array(Vec::new()),
        Command::Hello(Some(v)) if &v[..] != b"2" => {
            Frame::Error("NOPROTO this server speaks only RESP2".into())
        }
        Command::Hello(_) => Frame::Array(vec![
            Frame::Bulk(Bytes::from_static(b"server")),
            Frame::Bulk(Bytes::from_static(b"kv")),
            Frame::Bulk(Bytes::from_static(b"version")),
            Frame::Bulk(Bytes::from_static(env!("CARGO_PKG_VERSION").as_bytes())),
            Frame::Bulk(Bytes::from_static(b"proto")),
            Frame::Integer(2),
            Frame::Bulk(Bytes::from_static(b"mode")),
            Frame::Bulk(Bytes::from_static(b"standalone")),
        ]),
        Command::Client => Frame::Simple("OK".into()),
        Command::ConfigGet => Frame::Array(Vec::new()),
    };
    Ok(Some(frame))
}

fn unexpected(reply: Reply) -> String {
    format!("unexpected reply from the store: {reply:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Result<Command, CommandError> {
        Command::from_frame(Frame::Array(
            args.iter()
                .map(|a| Frame::Bulk(Bytes::copy_from_slice(a.as_bytes())))
                .collect(),
        ))
    }

    #[test]
    fn commands_parse_case_insensitively_with_arity_checks() {
        assert_eq!(
            cmd(&["GeT", "k"]),
            Ok(Command::Get(Bytes::from_static(b"k")))
        );
        assert!(matches!(cmd(&["set", "k", "v"]), Ok(Command::Set(..))));
        assert_eq!(
            cmd(&["get"]).unwrap_err().0,
            "ERR wrong number of arguments for 'get' command"
        );
        assert!(cmd(&["set", "k", "v", "EX", "10"])
            .unwrap_err()
            .0
            .contains("not supported"));
        assert!(matches!(cmd(&["del", "a", "b"]), Ok(Command::Del(keys)) if keys.len() == 2));
    }

    #[test]
    fn unknown_commands_get_redis_style_errors() {
        let err = cmd(&["flushall", "async"]).unwrap_err().0;
        assert_eq!(
            err,
            "ERR unknown command 'flushall', with args beginning with: 'async' "
        );
        assert!(Command::from_frame(Frame::Integer(3)).is_err());
    }
}
