//! The Redis-protocol front door: every node serves it, so redis-cli, redis-benchmark and
//! Redis client libraries work unchanged. A connection speaks RESP2 until `HELLO 3`
//! switches it to RESP3 (maps, the `_` null), as Redis 6+ does.
//!
//! Layers read in one direction: bytes → [`crate::resp::Frame`] → [`Command`] → a
//! [`Request`] to the local replica core, which proposes it through the replicated log (a
//! node that does not lead forwards it inside the cluster) and answers only once it has been
//! applied — after a majority decided it and this node's log is durable.
//!
//! Each connection is one client for at-most-once purposes: a fresh random client id, and
//! a sequence number per request. Commands on a connection run in order and are answered
//! in order, which is Redis's own pipelining semantics.
//!
//! # Pipelining
//! The store commands a connection has already sent (GET, SET, APPEND, DEL, EXISTS, MGET —
//! every whole frame in its input buffer) go to the log together: their ops are put, in
//! order, into as few [`Batch`]es as the batch rules allow (reads and writes apart, at most
//! [`kv_replication::kvgroup::BATCH_WRITES_MAX`] writes or
//! [`kv_replication::kvgroup::BATCH_READS_MAX`] reads, at most
//! [`kv_replication::kvgroup::BATCH_BYTES_MAX`] bytes), each one request — one round
//! through the log, at most once, at one log position. So a pipeline of N SETs costs about
//! N / 1024 rounds and an MGET of many keys one, instead of one round per command; a lone
//! command is a batch of one, as before. Any other command first waits for the batch
//! before it to be answered. What the client has already sent but is not yet in the
//! input buffer joins the batch too (a read that does not wait); then the batch runs.
//! Replies are made from the batch's replies in command order (an MGET's elements as they
//! come).
//!
//! # Redis Cluster mode
//! When the store has a [`ClusterView`] (a sharded node with `redis_cluster = true`),
//! each store command is checked before it joins a batch: keys of several slots get
//! `-CROSSSLOT`, a slot the node does not serve `-MOVED` (unless the command follows
//! `ASKING`, which runs it alone with [`Store::set_asking`]); an op the store answers
//! [`Reply::NotHeld`] makes its command's reply `-ASK` or `-TRYAGAIN`
//! ([`crate::redis_cluster`] renders them and the CLUSTER replies). Without a view,
//! CLUSTER, ASKING and READONLY are refused as Redis refuses them outside cluster mode.
//!
//! # Authentication
//! Redis's `requirepass` and protected mode, with Redis's replies ([`auth`]): with a
//! password a connection runs nothing but AUTH, HELLO, PING and QUIT until it
//! authenticates; without one, clients off loopback are refused unless protected mode is
//! off.
//!
//! # Limits
//! - Connections: at most the `connections_max` given to [`serve`] (sized from the
//!   process's open-file limit, see [`crate::limits`]); a connection over it is closed at
//!   once.
//! - Input: one frame of at most [`LIMITS`]; bytes are read only once every whole frame
//!   already buffered has been answered or joined the batch being built, and read ahead
//!   only while a batch is being built (so what a connection holds unanswered is bounded
//!   by the batch limits plus one frame).
//! - Output, like Redis's client-output-buffer-limit: replies collect in the connection's
//!   buffer until it holds [`OUTPUT_BUFFER_BYTES_SOFT`]; then they are written before the
//!   next command (or the next element of an `MGET`) runs. A client that does not read
//!   its replies therefore stops the connection: nothing more is read or run for it, and
//!   its unsent replies stay below the soft limit plus one reply element. A connection
//!   whose unsent replies would pass [`OUTPUT_BUFFER_BYTES_HARD`] is closed.
//!
//! # Bad input and failures
//! A frame that can never become valid, or a frame that is not an array of bulk strings, gets
//! `-ERR Protocol error` and the connection is closed (as Redis does); unknown commands and
//! wrong arities get Redis-style errors and the connection continues. A node that can no
//! longer write to its disk answers `-MISCONF` (Redis's reply when it cannot persist)
//! until it stops.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;

use kv_engine::kv::{Op, Reply};
use kv_replication::clerk::Clerk;
use kv_replication::kvgroup::{Batch, BatchBuilder};
use kv_replication::types::{ClientId, NodeId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::limits::Gate;
use crate::metrics::PROCESS;
use crate::node::Input;
use crate::redis_cluster::{self, ClusterView, Route};
use crate::resp::{Frame, FrameError, Limits, Protocol};
use crate::wire::ClientReply;

/// Largest value a client may send, in bytes (one WAL record must hold it with its batch).
pub const VALUE_BYTES_MAX: usize = crate::wire::VALUE_BYTES_MAX;
/// Most concurrent RESP connections per node, however high the open-file limit.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Unsent reply bytes at which a connection writes them out before running anything else
/// (and so stops reading while its client does not read).
pub const OUTPUT_BUFFER_BYTES_SOFT: usize = 64 * 1024;
/// Unsent reply bytes past which a connection is closed. Above the soft limit plus the
/// largest reply element (a value of [`VALUE_BYTES_MAX`]), so only a reply that cannot be
/// written in pieces could reach it.
pub const OUTPUT_BUFFER_BYTES_HARD: usize = 2 * VALUE_BYTES_MAX;
/// An input buffer emptier than this, or an output buffer after it is written, that holds
/// more capacity than this is given back (a large frame or reply does not stay resident in
/// an idle connection).
pub const BUFFER_BYTES_IDLE_MAX: usize = 64 * 1024;
/// What a connection over the cap is told before it is closed (Redis's words).
pub const MAX_CLIENTS_REPLY: &[u8] = b"-ERR max number of clients reached\r\n";
/// Initial capacity of a connection's input and output buffers.
const BUFFER_BYTES_INITIAL: usize = 4096;
/// Room made in the input buffer for each read-ahead while a batch is being built.
const READ_AHEAD_BYTES: usize = 64 * 1024;

/// The reader limits for client frames.
pub const LIMITS: Limits = Limits {
    bulk_bytes_max: VALUE_BYTES_MAX,
    array_len_max: 1 << 16,
    depth_max: 2,
    line_bytes_max: 64 * 1024,
    frame_bytes_max: VALUE_BYTES_MAX + (1 << 20),
};

/// Limits on one connection's unsent replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Write the replies out before running more once this many bytes wait.
    pub soft_bytes: usize,
    /// Close the connection once more than this many bytes wait.
    pub hard_bytes: usize,
}

impl OutputLimits {
    /// [`OUTPUT_BUFFER_BYTES_SOFT`] and [`OUTPUT_BUFFER_BYTES_HARD`].
    pub const DEFAULT: OutputLimits = OutputLimits {
        soft_bytes: OUTPUT_BUFFER_BYTES_SOFT,
        hard_bytes: OUTPUT_BUFFER_BYTES_HARD,
    };
}

pub mod auth;
mod command;
mod info;
mod session;
use session::Session;
pub mod scan;
pub use auth::Access;
pub use command::{ClientCommand, Command, CommandError, Transaction};
pub use scan::ResumePoints;

/// A process-wide source of fresh client ids: random base, then a counter, hashed. The
/// counter also numbers connections (`HELLO`'s `id`).
struct ClientIds {
    seed: RandomState,
    next: AtomicU64,
}

impl ClientIds {
    /// A connection number and a client id no other connection of this process has.
    fn fresh(&self) -> (u64, ClientId) {
        let number = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut hasher = self.seed.build_hasher();
        hasher.write_u64(number);
        // Id 0 is the replicas' own (`Request::INTERNAL`).
        (number, ClientId(hasher.finish().max(1)))
    }
}

/// The keys a batch of [`kv_engine::kv::Op::Count`]s counted: the sum of its replies (a
/// batch of one is answered with the one reply).
pub fn total_counted(reply: Reply) -> Result<u64, Failure> {
    let replies = match reply {
        Reply::Batch(replies) => replies,
        one => vec![one],
    };
    replies
        .into_iter()
        .map(|reply| match reply {
            Reply::Counted(keys) => Ok(keys),
            other => Err(Failure::Unavailable(format!(
                "a shard's count was answered {other:?}"
            ))),
        })
        .sum()
}

/// Where a RESP connection's batches go: the unsharded node's core ([`GroupStore`]), or a
/// sharded cluster's groups (`crate::sharded`). One per connection, made for its client id.
pub trait Store: Send + Sync + 'static {
    /// Runs one batch of operations, at most once (retrying it as the same request until
    /// [`RETRY_DEADLINE`]); a batch of one op is answered with the op's reply, a longer one
    /// with [`Reply::Batch`].
    fn run(
        &mut self,
        batch: Batch,
    ) -> impl std::future::Future<Output = Result<Reply, Failure>> + Send;
    /// How keys map to shards in the groups behind it: the shards SCAN and KEYS walk.
    fn sharding(&self) -> kv_engine::kv::Sharding;
    /// The node's status (INFO).
    fn status(&self) -> impl std::future::Future<Output = Option<crate::node::Status>> + Send;
    /// DBSIZE's and INFO keyspace's count: the keys behind this node (by default the
    /// `keys` of its status; a sharded node counts every group's shards, see
    /// `crate::sharded`).
    fn key_count(&mut self) -> impl std::future::Future<Output = Result<u64, Failure>> + Send {
        async move {
            let status = self.status().await.unwrap_or_default();
            Ok(status
                .core
                .iter()
                .find(|(name, _)| *name == "keys")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0))
        }
    }
    /// In Redis Cluster mode, what the node knows of the cluster; `None` (the default)
    /// for a node that takes any key.
    fn cluster(&self) -> Option<&dyn ClusterView> {
        None
    }
    /// Whether the batches that follow come from a command sent after ASKING: then an op
    /// the owning group refuses is never answered with [`Reply::NotHeld`] (which the
    /// connection turns into a redirect) but waited for, since the client was sent here.
    fn set_asking(&mut self, _asking: bool) {}
}

/// Serves RESP on `listener` until shutdown, sending each connection's batches to the
/// store `store` makes for it; at most `connections_max` connections at once, each
/// admitted and authenticated as `access` says.
pub async fn serve<S: Store>(
    listener: TcpListener,
    store: impl Fn(ClientId) -> S + Send + Sync + 'static,
    access: Access,
    shutdown: watch::Receiver<bool>,
    connections_max: usize,
) {
    let access = Arc::new(access);
    let ids = Arc::new(ClientIds {
        seed: RandomState::new(),
        next: AtomicU64::new(0),
    });
    let points = Arc::new(ResumePoints::new());
    let port = listener.local_addr().map_or(0, |a| a.port());
    PROCESS.start();
    let mut gate = Gate::new("RESP", connections_max).with_refusal(MAX_CLIENTS_REPLY);
    let connected = gate.counter();
    let mut stop = shutdown.clone();
    while let Some(mut admitted) = gate.accept(&listener, &mut stop).await {
        PROCESS.resp_connections.fetch_add(1, Ordering::Relaxed);
        if let Err(denied) = access.admits(admitted.remote) {
            tokio::spawn(async move {
                tracing::warn!(remote = %admitted.remote, "refused RESP connection: protected mode (no requirepass) admits only loopback clients");
                let mut reply = BytesMut::new();
                denied.write_as(Protocol::Resp2, &mut reply);
                let _ = admitted.stream.write_all(&reply).await;
                drop(admitted.permit);
            });
            continue;
        }
        let (number, client) = ids.fresh();
        let session = Session {
            number,
            protocol: Protocol::Resp2,
            asking: false,
            authenticated: access.open(),
            name: None,
            discarding: false,
            access: access.clone(),
            store: store(client),
            connected: connected.clone(),
            points: points.clone(),
            port,
        };
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let remote = admitted.remote;
            let connection = Connection::new(admitted.stream, session, OutputLimits::DEFAULT);
            if let Err(reason) = connection.serve(shutdown).await {
                tracing::info!(%remote, %reason, "closed RESP connection");
            }
            drop(admitted.permit);
        });
    }
}

pub use kv_client::sharded::{Failure, RETRY_DEADLINE};

/// The error reply a Redis client gets for a failure.
fn failure_frame(failure: &Failure) -> Frame {
    Frame::Error(match failure {
        Failure::Stopping => "ERR node is stopping".into(),
        Failure::Unavailable(why) => format!("ERR {why}"),
        // Redis Cluster's words for a slot no node serves, in both modes.
        Failure::Unserved => "CLUSTERDOWN Hash slot not served".into(),
        Failure::StorageFailed(why) => format!(
            "MISCONF kv cannot write to its data directory, so this node has stopped \
             serving commands; use another node ({why})"
        ),
    })
}

/// The unsharded node's store: its one core, as one client for at-most-once purposes (the
/// replication library's [`Clerk`], whose only replica is the local core: it forwards to
/// its leader inside the group).
pub struct GroupStore<M> {
    clerk: Clerk<Batch>,
    inputs: mpsc::Sender<Input<M>>,
}

impl<M> GroupStore<M> {
    /// The store of client `client` of the core fed by `inputs`.
    pub fn new(client: ClientId, inputs: mpsc::Sender<Input<M>>) -> GroupStore<M> {
        GroupStore {
            clerk: Clerk::new(client, vec![NodeId(0)]),
            inputs,
        }
    }
}

impl<M: Send + 'static> Store for GroupStore<M> {
    /// Runs one batch of operations through the replicated log, as one request. If the
    /// replica gives up on it (it is rebuilding, or overloaded), the same request — same
    /// sequence number, so at most once — is sent again with capped backoff; a Redis client
    /// should not have to retry.
    async fn run(&mut self, batch: Batch) -> Result<Reply, Failure> {
        // Whatever an earlier call gave up on stays given up: this one has a higher seq.
        self.clerk.abandon();
        let (_, request) = self
            .clerk
            .begin(batch)
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
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
                .map_err(|_| Failure::Stopping)?;
            match rx.await {
                Ok(ClientReply::Done(reply)) => {
                    self.clerk.on_reply(request.seq, ());
                    return Ok(reply);
                }
                Ok(ClientReply::StorageFailed(why)) => return Err(Failure::StorageFailed(why)),
                Ok(ClientReply::Unavailable(why)) if started.elapsed() >= RETRY_DEADLINE => {
                    return Err(Failure::Unavailable(why))
                }
                Ok(ClientReply::Unavailable(_)) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_millis(500));
                    self.clerk.on_failure();
                }
                Err(_) => return Err(Failure::Stopping),
            }
        }
    }

    fn sharding(&self) -> kv_engine::kv::Sharding {
        kv_replication::kvgroup::SHARDING
    }

    async fn status(&self) -> Option<crate::node::Status> {
        crate::node::ask_status(&self.inputs).await
    }
}

/// A connection's unsent replies, encoded in its protocol, within [`OutputLimits`].
struct Output {
    buffer: BytesMut,
    limits: OutputLimits,
}

/// The unsent replies passed the hard limit.
#[derive(Debug, PartialEq, Eq)]
struct OutputOverflow(usize);

impl Output {
    fn new(limits: OutputLimits) -> Output {
        Output {
            buffer: BytesMut::with_capacity(BUFFER_BYTES_INITIAL),
            limits,
        }
    }

    /// Adds a reply (or one element of one).
    fn push(&mut self, frame: &Frame, protocol: Protocol) -> Result<(), OutputOverflow> {
        frame.write_as(protocol, &mut self.buffer);
        self.check()
    }

    /// Adds the header of an array whose elements follow one by one.
    fn push_array_header(&mut self, len: usize) -> Result<(), OutputOverflow> {
        Frame::write_array_header(len, &mut self.buffer);
        self.check()
    }

    fn check(&self) -> Result<(), OutputOverflow> {
        if self.buffer.len() > self.limits.hard_bytes {
            return Err(OutputOverflow(self.buffer.len()));
        }
        Ok(())
    }

    /// Whether the replies must be written before anything else runs.
    fn over_soft_limit(&self) -> bool {
        self.buffer.len() >= self.limits.soft_bytes
    }

    /// Forgets what was written, giving back a large buffer.
    fn written(&mut self) {
        self.buffer.clear();
        if self.buffer.capacity() > BUFFER_BYTES_IDLE_MAX {
            self.buffer = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
        }
    }
}

/// Whether the connection goes on after a command.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

/// A store command waiting for the replies of its ops.
struct Answering {
    reduce: Reduce,
    /// In cluster mode, the slot of its keys.
    slot: Option<u16>,
    /// The redirect its first op was refused with: its reply, in place of any other.
    refused: Option<Frame>,
    /// Ops the command has in all.
    ops: usize,
    /// Of them, ops in the batch being built.
    in_batch: usize,
    /// Replies it has had.
    replied: usize,
    /// Its name, and when it was read (for its latency).
    name: &'static str,
    started: std::time::Instant,
    /// One of its ops failed.
    failed: bool,
}

/// How a store command's reply is made from the replies of its ops.
enum Reduce {
    /// GET: the value.
    Get,
    /// SET: `+OK`.
    Set,
    /// APPEND: the new length.
    Append,
    /// DEL (`deletes`: keys that existed) or EXISTS (keys that exist): a count, or the
    /// first error among its ops.
    Count {
        deletes: bool,
        count: i64,
        error: Option<Frame>,
    },
    /// MGET: an array, written element by element as the replies come.
    MGet,
}

impl Reduce {
    /// Takes one op's reply (or the error its batch failed with). Returns what to write
    /// now: an element of an MGET, or the whole reply of another command once `last`.
    fn take(&mut self, reply: Result<Reply, Frame>, last: bool) -> Option<Frame> {
        if let Reduce::Count {
            deletes,
            count,
            error,
        } = self
        {
            match (*deletes, reply) {
                (true, Ok(Reply::Deleted(existed))) => *count += i64::from(existed),
                (false, Ok(Reply::Value(value))) => *count += i64::from(value.is_some()),
                (_, Ok(other)) => {
                    error.get_or_insert(Frame::Error(unexpected(other)));
                }
                (_, Err(failed)) => {
                    error.get_or_insert(failed);
                }
            }
            return last.then(|| error.clone().unwrap_or(Frame::Integer(*count)));
        }
        if let (Reduce::Get | Reduce::MGet, Ok(Reply::Value(value))) = (&*self, &reply) {
            let counter = match value {
                Some(_) => &PROCESS.keyspace_hits,
                None => &PROCESS.keyspace_misses,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Some(match (&*self, reply) {
            (_, Err(failed)) => failed,
            (Reduce::Get | Reduce::MGet, Ok(Reply::Value(value))) => {
                value.map_or(Frame::Null, Frame::Bulk)
            }
            (Reduce::Set, Ok(Reply::Ok)) => Frame::Simple("OK".into()),
            (Reduce::Append, Ok(Reply::Appended(len))) => Frame::Integer(len as i64),
            (_, Ok(Reply::TooLarge(_))) => Frame::Error(too_large()),
            (_, Ok(other)) => Frame::Error(unexpected(other)),
        })
    }
}

/// Store commands whose ops wait in a batch being built, in order.
#[derive(Default)]
struct Pending {
    batch: BatchBuilder,
    commands: VecDeque<Answering>,
}

/// One RESP connection: its socket, its session, its buffers, and the store commands it
/// has read but not yet run.
struct Connection<S> {
    stream: TcpStream,
    session: Session<S>,
    input: BytesMut,
    output: Output,
    pending: Pending,
    /// The last read filled the input buffer's room: the client may have sent more.
    maybe_more: bool,
}

impl<S: Store> Connection<S> {
    fn new(stream: TcpStream, session: Session<S>, limits: OutputLimits) -> Connection<S> {
        let _ = stream.set_nodelay(true);
        Connection {
            stream,
            session,
            input: BytesMut::with_capacity(BUFFER_BYTES_INITIAL),
            output: Output::new(limits),
            pending: Pending::default(),
            maybe_more: false,
        }
    }

    /// Answers commands until the client leaves, QUITs or breaks the protocol, or the node
    /// shuts down. `Err` says why the connection was closed on the client.
    async fn serve(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), String> {
        loop {
            // Answer every whole frame already buffered (store commands in as few batches
            // as they allow), then write what is left once.
            while let Some(frame) = self.next_frame().await? {
                if self.answer(frame).await? == Next::Close {
                    self.flush().await?;
                    return Ok(());
                }
            }
            if self.read_ahead()? {
                continue;
            }
            self.run_pending().await?;
            self.flush().await?;
            if self.input.is_empty() && self.input.capacity() > BUFFER_BYTES_IDLE_MAX {
                self.input = BytesMut::with_capacity(BUFFER_BYTES_INITIAL);
            }
            if self.input.capacity() == self.input.len() {
                self.input.reserve(BUFFER_BYTES_INITIAL);
            }
            let room = self.input.capacity() - self.input.len();
            let read = tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                read = self.stream.read_buf(&mut self.input) => read.map_err(|e| e.to_string())?,
            };
            if read == 0 {
                return Ok(());
            }
            self.maybe_more = read == room;
        }
    }

    /// While a batch is being built, takes whatever more the client has already sent
    /// (without waiting), so a pipeline goes to the log in batches as large as the rules
    /// allow rather than as large as one read. True if it read something.
    /// Only after a read that filled the buffer's room: a read that did not had taken all
    /// the client had sent, and a lone command should not pay for another read.
    fn read_ahead(&mut self) -> Result<bool, String> {
        if self.pending.batch.is_empty() || !self.maybe_more {
            return Ok(false);
        }
        if self.input.capacity() - self.input.len() < BUFFER_BYTES_INITIAL {
            self.input.reserve(READ_AHEAD_BYTES);
        }
        let room = self.input.capacity() - self.input.len();
        match self.stream.try_read_buf(&mut self.input) {
            Ok(read) => {
                self.maybe_more = read == room;
                Ok(read > 0)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.maybe_more = false;
                Ok(false)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The next whole frame in the input buffer, if there is one. A frame that can never
    /// be valid is answered with a protocol error and ends the connection.
    async fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        loop {
            let mut cursor = Cursor::new(&self.input[..]);
            match Frame::check_within(&mut cursor, &LIMITS) {
                Ok(()) => {
                    let len = cursor.position() as usize;
                    let mut cursor = Cursor::new(&self.input[..len]);
                    let frame = Frame::parse_within(&mut cursor, &LIMITS)
                        .map_err(|e| format!("frame checked but did not parse: {e}"))?;
                    self.input.advance(len);
                    match &frame {
                        // An empty inline line: ignored, as Redis does.
                        Frame::Array(items) if items.is_empty() => continue,
                        _ => return Ok(Some(frame)),
                    }
                }
                Err(FrameError::Incomplete) => return Ok(None),
                Err(FrameError::Invalid(why)) => {
                    // The commands before it are answered first.
                    self.run_pending().await?;
                    return Err(self
                        .protocol_error(format!("ERR Protocol error: {why}"))
                        .await);
                }
            }
        }
    }

    /// Sends a protocol error and gives the reason the connection is closed.
    async fn protocol_error(&mut self, message: String) -> String {
        let reason = format!("protocol error: {message}");
        match self.send(&Frame::Error(message)).await {
            Ok(()) => match self.flush().await {
                Ok(()) => reason,
                Err(e) => e,
            },
            Err(e) => e,
        }
    }

    /// Adds a reply (or reply element), writing the buffer out first if it is over the
    /// soft limit.
    async fn send(&mut self, frame: &Frame) -> Result<(), String> {
        let protocol = self.session.protocol;
        self.output
            .push(frame, protocol)
            .map_err(|OutputOverflow(bytes)| {
                format!("{bytes} bytes of replies unsent, over the hard limit")
            })?;
        if self.output.over_soft_limit() {
            self.flush().await?;
        }
        Ok(())
    }

    /// Writes every unsent reply; waits as long as the client does not read.
    async fn flush(&mut self) -> Result<(), String> {
        if !self.output.buffer.is_empty() {
            self.stream
                .write_all(&self.output.buffer)
                .await
                .map_err(|e| e.to_string())?;
            self.output.written();
        }
        Ok(())
    }

    /// Answers one command: a store command's ops join the batch being built; any other
    /// command runs once the commands before it are answered.
    async fn answer(&mut self, frame: Frame) -> Result<Next, String> {
        // ASKING holds for one command: this one.
        let asking = std::mem::take(&mut self.session.asking);
        let started = std::time::Instant::now();
        let command = match Command::from_frame(frame) {
            Ok(command) => command,
            Err(CommandError::Refused(message)) => {
                self.run_pending().await?;
                self.send(&Frame::Error(message)).await?;
                return Ok(Next::Continue);
            }
            Err(CommandError::Protocol(message)) => {
                self.run_pending().await?;
                return Err(self.protocol_error(message).await);
            }
        };
        let stats = PROCESS.resp_command(command.name());
        if !self.session.authenticated && !auth::allowed_before_auth(&command) {
            stats.reject();
            self.run_pending().await?;
            self.send(&Frame::Error(auth::NOAUTH.into())).await?;
            return Ok(Next::Continue);
        }
        if let Some(refused) = self.session.transaction(&command) {
            stats.record(started, matches!(refused, Frame::Error(_)));
            self.run_pending().await?;
            self.send(&refused).await?;
            return Ok(Next::Continue);
        }
        let name = command.name();
        let command = match command.into_ops() {
            Ok((reduce, ops)) => {
                let slot = match self.cluster_slot(&ops, asking) {
                    Ok(slot) => slot,
                    Err(redirect) => {
                        stats.reject();
                        self.run_pending().await?;
                        self.send(&redirect).await?;
                        return Ok(Next::Continue);
                    }
                };
                if asking && slot.is_some() {
                    // Alone in its batch, so that only its ops skip redirects.
                    self.run_pending().await?;
                    self.session.store.set_asking(true);
                    self.queue(reduce, ops, slot, (name, started)).await?;
                    let ran = self.run_pending().await;
                    self.session.store.set_asking(false);
                    ran?;
                } else {
                    self.queue(reduce, ops, slot, (name, started)).await?;
                }
                return Ok(Next::Continue);
            }
            Err(other) => other,
        };
        self.run_pending().await?;
        if command == Command::Quit {
            stats.record(started, false);
            self.send(&Frame::Simple("OK".into())).await?;
            return Ok(Next::Close);
        }
        let reply = self.execute(command).await;
        stats.record(started, matches!(reply, Frame::Error(_)));
        self.send(&reply).await?;
        Ok(Next::Continue)
    }

    /// In cluster mode, the slot of a store command's keys, or the reply that sends the
    /// client elsewhere: `-CROSSSLOT` for keys of several slots, `-MOVED` for a slot this
    /// node does not serve (unless the command came with ASKING).
    fn cluster_slot(&self, ops: &[Op], asking: bool) -> Result<Option<u16>, Frame> {
        let Some(view) = self.session.store.cluster() else {
            return Ok(None);
        };
        let slot = match redis_cluster::slot_of_keys(
            ops.iter().filter_map(|op| op.key()).map(|key| &key[..]),
        ) {
            Ok(Some(slot)) => slot,
            Ok(None) => return Ok(None),
            Err(redis_cluster::CrossSlot) => return Err(redis_cluster::cross_slot()),
        };
        if asking {
            return Ok(Some(slot));
        }
        match view.route(slot) {
            Route::Serve => Ok(Some(slot)),
            other => Err(redis_cluster::redirect(&other, slot, false)),
        }
    }

    /// The reply for an op of a command on `slot` that the store refused
    /// ([`Reply::NotHeld`]): `-ASK` to the slot's new master, or `-TRYAGAIN` if that is
    /// this node (the shard is still arriving).
    fn refusal(&self, slot: Option<u16>) -> Frame {
        match (self.session.store.cluster(), slot) {
            (Some(view), Some(slot)) => redis_cluster::redirect(&view.route(slot), slot, true),
            _ => Frame::Error("TRYAGAIN the key's shard is moving; try again".into()),
        }
    }

    /// Adds a store command's ops to the batch being built, running the batch first
    /// whenever it has no room for the next op (so one command's ops may span batches).
    async fn queue(
        &mut self,
        reduce: Reduce,
        ops: Vec<Op>,
        slot: Option<u16>,
        (name, started): (&'static str, std::time::Instant),
    ) -> Result<(), String> {
        self.pending.commands.push_back(Answering {
            reduce,
            slot,
            refused: None,
            ops: ops.len(),
            in_batch: 0,
            replied: 0,
            name,
            started,
            failed: false,
        });
        for op in ops {
            if !self.pending.batch.has_room_for(&op) {
                self.run_pending().await?;
            }
            self.pending.batch.push(op);
            if let Some(command) = self.pending.commands.back_mut() {
                command.in_batch += 1;
            }
        }
        Ok(())
    }

    /// Runs the batch being built, if there is one, as one request, and sends the replies
    /// it completes, in command order. If it fails, each of its ops gets the error.
    async fn run_pending(&mut self) -> Result<(), String> {
        let Some(batch) = self.pending.batch.take() else {
            return Ok(());
        };
        let ops = batch.len();
        let replies: Vec<Result<Reply, Frame>> = match self.session.store.run(batch.clone()).await {
            Ok(reply) => match batch.split_reply(reply) {
                Ok(replies) => replies.into_iter().map(Ok).collect(),
                // The owning group refused the whole batch before running any of it.
                Err(refused @ Reply::NotHeld(_)) => vec![Ok(refused); ops],
                Err(other) => vec![Err(Frame::Error(unexpected(other))); ops],
            },
            Err(failure) => vec![Err(failure_frame(&failure)); ops],
        };
        let mut replies = replies.into_iter();
        while let Some(mut command) = self.pending.commands.pop_front() {
            for _ in 0..command.in_batch {
                let reply = match replies.next().expect("one reply per op") {
                    Ok(Reply::NotHeld(_)) => Err(self.refusal(command.slot)),
                    reply => reply,
                };
                if command.replied == 0 && command.slot.is_some() {
                    if let Err(redirect) = &reply {
                        command.refused = Some(redirect.clone());
                    }
                }
                command.failed |= reply.is_err();
                if let Some(refused) = &command.refused {
                    command.replied += 1;
                    if command.replied == command.ops {
                        let refused = refused.clone();
                        self.send(&refused).await?;
                    }
                    continue;
                }
                if command.replied == 0 && matches!(command.reduce, Reduce::MGet) {
                    self.output.push_array_header(command.ops).map_err(
                        |OutputOverflow(bytes)| format!("{bytes} bytes of replies unsent"),
                    )?;
                }
                command.replied += 1;
                if let Some(frame) = command.reduce.take(reply, command.replied == command.ops) {
                    self.send(&frame).await?;
                }
            }
            command.in_batch = 0;
            if command.replied == command.ops {
                PROCESS
                    .resp_command(command.name)
                    .record(command.started, command.failed);
            }
            if command.replied < command.ops {
                // Its other ops go into the next batch.
                self.pending.commands.push_front(command);
                break;
            }
        }
        Ok(())
    }

    /// Executes a command that is not a store command (nor QUIT).
    async fn execute(&mut self, command: Command) -> Frame {
        let session = &mut self.session;
        match command {
            Command::Ping(None) => Frame::Simple("PONG".into()),
            Command::Ping(Some(m)) | Command::Echo(m) => Frame::Bulk(m),
            Command::Info(sections) => info::info(session, &sections).await,
            Command::Select(db) if &db[..] == b"0" => Frame::Simple("OK".into()),
            Command::Select(db) if is_redis_integer(&db) => {
                Frame::Error("ERR DB index is out of range".into())
            }
            Command::Select(_) => {
                Frame::Error("ERR value is not an integer or out of range".into())
            }
            Command::DbSize => match session.store.key_count().await {
                Ok(keys) => Frame::Integer(keys as i64),
                Err(failure) => failure_frame(&failure),
            },
            Command::Scan(args) => scan::scan(&mut session.store, &session.points, args).await,
            Command::Keys(pattern) => scan::keys(&mut session.store, pattern).await,
            Command::CommandInfo(args) => redis_cluster::command_reply(&args),
            Command::Cluster(_) | Command::Asking | Command::ReadMode
                if session.store.cluster().is_none() =>
            {
                Frame::Error("ERR This instance has cluster support disabled".into())
            }
            Command::Cluster(sub) => match session.store.cluster() {
                Some(view) => sub.answer(view),
                None => unreachable!("answered above"),
            },
            Command::Asking => {
                session.asking = true;
                Frame::Simple("OK".into())
            }
            Command::ReadMode => Frame::Simple("OK".into()),
            Command::Auth(credentials) => match session.authenticate(&credentials) {
                Ok(()) => Frame::Simple("OK".into()),
                Err(refused) => refused,
            },
            Command::Hello {
                protocol,
                auth,
                name,
            } => {
                if let Some(credentials) = auth {
                    if let Err(refused) = session.authenticate(&credentials) {
                        return refused;
                    }
                }
                if !session.authenticated {
                    return Frame::Error(auth::HELLO_NOAUTH.into());
                }
                if let Some(name) = name {
                    if let Err(refused) = session.set_name(name) {
                        return refused;
                    }
                }
                if let Some(protocol) = protocol {
                    session.protocol = protocol;
                }
                let cluster = session.store.cluster().is_some();
                hello(session.protocol, session.number, cluster)
            }
            Command::Client(ClientCommand::SetName(name)) => match session.set_name(name) {
                Ok(()) => Frame::Simple("OK".into()),
                Err(refused) => refused,
            },
            Command::Client(ClientCommand::GetName) => {
                session.name.clone().map_or(Frame::Null, Frame::Bulk)
            }
            Command::Client(ClientCommand::Id) => {
                Frame::Integer(i64::try_from(session.number).unwrap_or(i64::MAX))
            }
            Command::Client(ClientCommand::SetInfo) => Frame::Simple("OK".into()),
            Command::ConfigGet => Frame::Map(Vec::new()),
            Command::Transaction(_) => unreachable!("answered by the caller"),
            Command::Get(_)
            | Command::Set(..)
            | Command::Append(..)
            | Command::Del(_)
            | Command::Exists(_)
            | Command::MGet(_)
            | Command::Quit => unreachable!("answered by the caller"),
        }
    }
}

/// HELLO's reply: who we are, in the connection's (possibly new) protocol.
fn hello(protocol: Protocol, connection: u64, cluster: bool) -> Frame {
    let text = |s: &'static str| Frame::Bulk(Bytes::from_static(s.as_bytes()));
    Frame::Map(vec![
        (text("server"), text("kv")),
        (text("version"), text(env!("CARGO_PKG_VERSION"))),
        (text("proto"), Frame::Integer(protocol.version())),
        (
            text("id"),
            Frame::Integer(i64::try_from(connection).unwrap_or(i64::MAX)),
        ),
        (
            text("mode"),
            text(if cluster { "cluster" } else { "standalone" }),
        ),
        (text("role"), text("master")),
        (text("modules"), Frame::Array(Vec::new())),
    ])
}

/// Whether Redis reads `text` as a 64-bit integer (`string2ll`: an optional `-`, no
/// leading zeros or `+`, no spaces).
fn is_redis_integer(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = match digits {
        [b'0'] => text.len() == 1,
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    canonical
        && std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<i64>().ok())
            .is_some()
}

/// Redis's answer to a write past its value limit (`proto-max-bulk-len`), with ours.
fn too_large() -> String {
    format!("ERR string exceeds maximum allowed size ({VALUE_BYTES_MAX} bytes)")
}

fn unexpected(reply: Reply) -> String {
    format!("ERR unexpected reply from the store: {reply:?}")
}

#[cfg(test)]
mod tests;
