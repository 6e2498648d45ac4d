//! TCP transport: one listener per node for peers and native clients, and one outbound
//! connection task per peer.
//!
//! - Outbound: each peer has a queue of encoded frames bounded in messages
//!   ([`PEER_QUEUE_MESSAGES_MAX`]) and in bytes ([`PEER_QUEUE_BYTES_MAX`]); a message that
//!   does not fit is dropped (the protocols retransmit), except that one message always
//!   fits an empty queue — so a slow or dead peer cannot exhaust memory, however large the
//!   messages, and no message is too large to send. Messages are encoded when queued, so
//!   the bound counts the bytes that will go on the wire. The task connects, runs the
//!   handshake (`Hello`, the peer's `Challenge`, its own `Proof`: see [`kv_client::auth`]),
//!   and forwards messages; on any error it reconnects with capped exponential backoff. A
//!   peer that does not prove it knows the cluster secret gets no message (logged).
//! - Inbound: the first frame of a connection says what it is, and the handshake that
//!   follows proves it knows the cluster secret, within [`HELLO_TIMEOUT`] and
//!   [`wire::HELLO_FRAME_BYTES_MAX`]. `Hello` (with the right cluster id, naming this node)
//!   makes it a peer connection whose messages go to the core; `ClientHello` (likewise) a
//!   client connection, whose `Request`s and `StatusRequest`s are served one at a time.
//!   Only once the caller's proof checks may its frames grow, to [`wire::FRAME_BYTES_MAX`]
//!   for a peer and [`wire::CLIENT_FRAME_BYTES_MAX`] for a client, and reach a core: a
//!   stranger cannot make the node buffer more than a few KiB, nor vote, apply or write
//!   anything. A frame that is oversized or does not decode, and a failed handshake, close
//!   that connection with a logged reason; the node and its other connections carry on.
//! - Connections are capped by a [`Gate`] sized from the open-file limit (see
//!   [`crate::limits`]), with slots kept for peers; accept errors back off.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kv_engine::kv::Reply;
use kv_replication::kvgroup::Request;
use kv_replication::types::NodeId;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::Framed;

use kv_client::auth::{self, Caller, ClusterKey, Transcript};

use crate::limits::{Budget, Gate, Permit};
use crate::node::{Input, LeaderHint, PeerSender};
use crate::wire::{self, frame_name, ClientReply, Frame};

/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// Encoded bytes queued for one peer before new messages are dropped (a message larger
/// than this still goes, alone, through an empty queue). Room for several maximum-size
/// values (16 MiB) behind each other, so a leader streaming large accepts does not drop
/// its own; yet a peer that stops reading costs at most this, not the count bound's
/// thousands of multi-megabyte messages.
pub const PEER_QUEUE_BYTES_MAX: usize = 128 << 20;
/// Frames the outbound task writes before it flushes the connection.
const FRAMES_PER_FLUSH_MAX: usize = 256;
/// How long a new inbound connection has to say who it is and prove it knows the secret
/// before it is closed (and how long a caller waits for each answer of the handshake).
pub const HELLO_TIMEOUT: Duration = auth::HANDSHAKE_TIMEOUT;
/// First reconnect delay.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(20);
/// Largest reconnect delay.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// The bytes waiting in one peer's queue, against a limit. Shared by the senders, which
/// reserve a frame's bytes before queueing it, and the outbound task, which releases them
/// once it has handed the frame to the connection.
#[derive(Debug)]
pub struct QueueBytes {
    queued: AtomicUsize,
    max: usize,
}

impl QueueBytes {
    /// An empty queue that holds at most `max` bytes (or one message of any size).
    pub fn new(max: usize) -> QueueBytes {
        QueueBytes {
            queued: AtomicUsize::new(0),
            max,
        }
    }

    /// Reserves room for a message of `bytes`: false if it does not fit. A message always
    /// fits an empty queue.
    pub fn reserve(&self, bytes: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |queued| {
                (queued == 0 || queued.saturating_add(bytes) <= self.max)
                    .then(|| queued.saturating_add(bytes))
            })
            .is_ok()
    }

    /// Gives back the room of a message that left the queue (or was never queued).
    pub fn release(&self, bytes: usize) {
        let before = self.queued.fetch_sub(bytes, Ordering::AcqRel);
        assert!(before >= bytes, "released {bytes} bytes of {before} queued");
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// One peer's outbound queue: encoded `Peer` frames and their byte count.
struct PeerQueue {
    frames: mpsc::Sender<Bytes>,
    bytes: Arc<QueueBytes>,
}

/// Outbound queues to every peer.
pub struct Peers<M> {
    queues: Vec<Option<PeerQueue>>,
    dropped: Arc<AtomicU64>,
    message: std::marker::PhantomData<fn(M)>,
}

impl<M: Serialize + Send + 'static> PeerSender<M> for Peers<M> {
    fn send(&self, to: NodeId, msg: M) -> bool {
        let Some(queue) = self.queues.get(to.index()).and_then(Option::as_ref) else {
            return false;
        };
        let queued = match wire::encode(&Frame::<M>::Peer(msg)) {
            Ok(frame) => enqueue(queue, frame),
            Err(e) => {
                tracing::error!(peer = to.0, error = %e, "a peer message does not encode");
                false
            }
        };
        if !queued {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }
}

/// Queues an encoded frame if it fits both bounds.
fn enqueue(queue: &PeerQueue, frame: Bytes) -> bool {
    let bytes = frame.len();
    if !queue.bytes.reserve(bytes) {
        return false;
    }
    match queue.frames.try_send(frame) {
        Ok(()) => true,
        Err(_) => {
            queue.bytes.release(bytes);
            false
        }
    }
}

/// Starts an outbound task per peer (every address but `me`'s) of `key`'s cluster.
pub fn connect_peers<M>(
    key: ClusterKey,
    me: u32,
    addresses: &[SocketAddr],
    shutdown: watch::Receiver<bool>,
) -> Peers<M>
where
    M: Serialize + Send + Sync + 'static,
{
    let queues = addresses
        .iter()
        .enumerate()
        .map(|(i, &addr)| {
            if i as u32 == me {
                return None;
            }
            let (frames, rx) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
            let bytes = Arc::new(QueueBytes::new(PEER_QUEUE_BYTES_MAX));
            tokio::spawn(outbound(
                key.clone(),
                me,
                i as u32,
                addr,
                (rx, bytes.clone()),
                shutdown.clone(),
            ));
            Some(PeerQueue { frames, bytes })
        })
        .collect();
    Peers {
        queues,
        dropped: Arc::new(AtomicU64::new(0)),
        message: std::marker::PhantomData,
    }
}

async fn outbound(
    key: ClusterKey,
    me: u32,
    peer: u32,
    addr: SocketAddr,
    (mut queue, bytes): (mpsc::Receiver<Bytes>, Arc<QueueBytes>),
    shutdown: watch::Receiver<bool>,
) {
    let mut delay = RECONNECT_DELAY_MIN;
    // The last handshake failure logged: a peer that keeps failing is logged once, until
    // the reason changes.
    let mut refused: Option<String> = None;
    while !*shutdown.borrow() {
        let stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RECONNECT_DELAY_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, wire::codec());
        if let Err(e) = auth::introduce(&mut framed, &key, Caller::Peer(me), peer).await {
            let reason = e.to_string();
            if refused.as_ref() != Some(&reason) {
                tracing::warn!(peer, %addr, %reason, "handshake with peer failed");
                refused = Some(reason);
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECONNECT_DELAY_MAX);
            continue;
        }
        refused = None;
        delay = RECONNECT_DELAY_MIN;
        tracing::debug!(peer, %addr, "connected to peer");
        loop {
            let Some(frame) = queue.recv().await else {
                return;
            };
            if forward_frames(&mut framed, frame, &mut queue, &bytes)
                .await
                .is_err()
            {
                tracing::debug!(peer, %addr, "lost connection to peer");
                break;
            }
        }
    }
}

/// Writes `first` and whatever else is queued (up to [`FRAMES_PER_FLUSH_MAX`]), then
/// flushes. Each frame's bytes are released once the connection has taken it, so the
/// queue's bound plus the connection's write buffer (about one frame) bound the memory.
async fn forward_frames(
    framed: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    first: Bytes,
    queue: &mut mpsc::Receiver<Bytes>,
    bytes: &QueueBytes,
) -> Result<(), String> {
    let mut next = Some(first);
    let mut written = 0;
    while let Some(frame) = next.take() {
        let len = frame.len();
        let fed = framed.feed(frame).await;
        bytes.release(len);
        fed.map_err(|e| e.to_string())?;
        written += 1;
        if written < FRAMES_PER_FLUSH_MAX {
            next = queue.try_recv().ok();
        }
    }
    SinkExt::<Bytes>::flush(framed)
        .await
        .map_err(|e: std::io::Error| e.to_string())
}

/// What a node's listener serves: where peers' messages go and how native clients'
/// requests are answered. The unsharded node serves its one core ([`CoreService`]); a
/// sharded node routes among the replicas it hosts (`crate::sharded`).
pub trait Service: Clone + Send + Sync + 'static {
    /// What peers send (a [`Frame::Peer`]'s payload).
    type Msg: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What native clients ask.
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What they are answered.
    type Reply: Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Number of nodes: a peer's `Hello` must name one of `0..nodes`.
    fn nodes(&self) -> usize;
    /// Hands a message from node `from` on; false once the node is stopping.
    fn deliver(&self, from: NodeId, msg: Self::Msg) -> impl Future<Output = bool> + Send;
    /// Answers a client's request, with the node believed to lead (a hint for the client).
    fn request(
        &self,
        request: Self::Request,
    ) -> impl Future<Output = (ClientReply<Self::Reply>, Option<u32>)> + Send;
    /// The node's status as `key: value` lines.
    fn status(&self) -> impl Future<Output = String> + Send;
}

/// The frames a service's connections carry.
type ServiceFrame<S> = Frame<<S as Service>::Msg, <S as Service>::Request, <S as Service>::Reply>;

/// The unsharded node's service: one core, all of whose peers are the cluster's nodes.
pub struct CoreService<M, Q = Request, R = Reply> {
    /// The core's inputs.
    pub inputs: mpsc::Sender<Input<M, Q, R>>,
    /// The core's leader hint.
    pub leader: LeaderHint,
    /// Number of nodes.
    pub nodes: usize,
}

impl<M, Q, R> Clone for CoreService<M, Q, R> {
    fn clone(&self) -> Self {
        CoreService {
            inputs: self.inputs.clone(),
            leader: self.leader.clone(),
            nodes: self.nodes,
        }
    }
}

impl<M, Q, R> CoreService<M, Q, R> {
    /// Sends a request to the core and waits for its answer.
    pub async fn ask(&self, request: Q) -> ClientReply<R> {
        let (tx, rx) = oneshot::channel();
        match self.inputs.send(Input::Client { request, reply: tx }).await {
            Ok(()) => rx
                .await
                .unwrap_or_else(|_| ClientReply::Unavailable("node stopping".into())),
            Err(_) => ClientReply::Unavailable("node stopping".into()),
        }
    }

    /// The core's status.
    pub async fn core_status(&self) -> Option<crate::node::Status> {
        crate::node::ask_status(&self.inputs).await
    }
}

impl<M, Q, R> Service for CoreService<M, Q, R>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
    Q: Serialize + DeserializeOwned + Send + Sync + 'static,
    R: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Msg = M;
    type Request = Q;
    type Reply = R;

    fn nodes(&self) -> usize {
        self.nodes
    }

    async fn deliver(&self, from: NodeId, msg: M) -> bool {
        self.inputs.send(Input::Peer { from, msg }).await.is_ok()
    }

    async fn request(&self, request: Q) -> (ClientReply<R>, Option<u32>) {
        let reply = self.ask(request).await;
        (reply, self.leader.get())
    }

    async fn status(&self) -> String {
        self.core_status()
            .await
            .map(|s| s.render())
            .unwrap_or_default()
    }
}

/// Who an inbound connection is, and what it is served.
#[derive(Clone)]
struct Listener<S> {
    key: ClusterKey,
    me: u32,
    service: S,
}

/// Accepts peer and native-client connections to node `me` of `key`'s cluster until
/// shutdown, within `budget`; each proves it knows the cluster secret before its frames
/// reach `service`.
pub async fn serve<S: Service>(
    listener: TcpListener,
    key: ClusterKey,
    me: u32,
    service: S,
    budget: Budget,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut gate = Gate::new("peer", budget.native).with_reserve(budget.peer_reserve);
    let this = Listener { key, me, service };
    while let Some(admitted) = gate.accept(&listener, &mut shutdown).await {
        let this = this.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let remote = admitted.remote;
            if let Err(reason) = this
                .connection(admitted.stream, &admitted.permit, shutdown)
                .await
            {
                tracing::info!(%remote, %reason, "closed connection");
            }
        });
    }
}

/// The next frame's body; `None` at the end of the stream or on shutdown.
async fn next_body(
    framed: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<bytes::BytesMut>, String> {
    let next = tokio::select! {
        _ = shutdown.changed() => return Ok(None),
        next = framed.next() => next,
    };
    match next {
        None => Ok(None),
        Some(Ok(body)) => Ok(Some(body)),
        Some(Err(e)) => Err(format!("bad frame: {e}")),
    }
}

impl<S: Service> Listener<S> {
    fn decode(body: &[u8]) -> Result<ServiceFrame<S>, String> {
        wire::decode(body).map_err(|e| format!("undecodable frame: {e}"))
    }

    /// Serves one inbound connection: its introduction and handshake (together within
    /// [`HELLO_TIMEOUT`]), then its role.
    async fn connection(
        &self,
        stream: TcpStream,
        permit: &Permit,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, wire::codec_within(wire::HELLO_FRAME_BYTES_MAX));
        let introduced =
            tokio::time::timeout(HELLO_TIMEOUT, self.handshake(&mut framed, &mut shutdown))
                .await
                .map_err(|_| format!("no Hello and Proof within {HELLO_TIMEOUT:?}"))??;
        match introduced {
            None => Ok(()),
            Some(Caller::Peer(node)) => {
                framed
                    .codec_mut()
                    .set_max_frame_length(wire::FRAME_BYTES_MAX);
                self.peer(framed, NodeId(node), shutdown).await
            }
            Some(Caller::Client) => {
                if permit.reserved {
                    return Err("client connection limit reached".into());
                }
                framed
                    .codec_mut()
                    .set_max_frame_length(wire::CLIENT_FRAME_BYTES_MAX);
                self.client(framed, shutdown).await
            }
        }
    }

    /// The listener's side of the handshake (see [`kv_client::auth`]): who the caller is,
    /// once it has proved it knows the secret; `None` if it went away (or the node is
    /// stopping) first.
    async fn handshake(
        &self,
        framed: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<Caller>, String> {
        let Some(body) = next_body(framed, shutdown).await? else {
            return Ok(None);
        };
        let (caller, cluster_id, to, caller_nonce) = match Self::decode(&body)? {
            Frame::Hello {
                cluster_id,
                node,
                to,
                nonce,
            } => {
                if node as usize >= self.service.nodes() {
                    return Err(format!(
                        "peer claims node id {node}, cluster has {}",
                        self.service.nodes()
                    ));
                }
                (Caller::Peer(node), cluster_id, to, nonce)
            }
            Frame::ClientHello {
                cluster_id,
                to,
                nonce,
            } => (Caller::Client, cluster_id, to, nonce),
            other => {
                return Err(format!(
                    "first frame must be Hello or ClientHello, got {}",
                    frame_name(&other)
                ))
            }
        };
        if cluster_id != self.key.cluster_id() {
            return Err(format!(
                "connection from cluster {cluster_id}, expected {}",
                self.key.cluster_id()
            ));
        }
        if to != self.me {
            return Err(format!(
                "connection meant for node {to}, this is node {}",
                self.me
            ));
        }
        let transcript = Transcript {
            caller,
            to,
            caller_nonce,
            listener_nonce: auth::nonce(),
        };
        let challenge: ServiceFrame<S> = Frame::Challenge {
            nonce: transcript.listener_nonce,
            proof: transcript.listener_proof(&self.key),
        };
        let bytes = wire::encode(&challenge).map_err(|e| e.to_string())?;
        framed.send(bytes).await.map_err(|e| e.to_string())?;
        let Some(body) = next_body(framed, shutdown).await? else {
            if *shutdown.borrow() {
                return Ok(None);
            }
            // What a caller does when this node's proof fails its check: it holds another
            // secret (or this node does).
            return Err(
                "the caller left after the Challenge without a Proof (authentication \
                        failed: its cluster secret is not this node's?)"
                    .into(),
            );
        };
        match Self::decode(&body)? {
            Frame::Proof { proof } => transcript.verify_caller(&self.key, &proof)?,
            other => {
                return Err(format!(
                    "expected a Proof after the Challenge, got {}",
                    frame_name(&other)
                ))
            }
        }
        Ok(Some(caller))
    }

    /// A peer's messages, to the service.
    async fn peer(
        &self,
        mut framed: Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
        from: NodeId,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        while let Some(body) = next_body(&mut framed, &mut shutdown).await? {
            let frame = Self::decode(&body)?;
            let Frame::Peer(msg) = frame else {
                return Err(format!(
                    "unexpected {} frame on a peer connection",
                    frame_name(&frame)
                ));
            };
            if !self.service.deliver(from, msg).await {
                return Ok(());
            }
        }
        Ok(())
    }

    /// A native client's requests, answered one at a time.
    async fn client(
        &self,
        mut framed: Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let [requests, statuses] = &crate::metrics::PROCESS.native;
        while let Some(body) = next_body(&mut framed, &mut shutdown).await? {
            let started = std::time::Instant::now();
            let answer: ServiceFrame<S> = match Self::decode(&body)? {
                Frame::Request { tag, request } => {
                    let (reply, leader) = self.service.request(request).await;
                    let failed = !matches!(reply, ClientReply::Done(_));
                    requests.record(started, failed);
                    Frame::Reply { tag, reply, leader }
                }
                Frame::StatusRequest => {
                    let status = self.service.status().await;
                    statuses.record(started, false);
                    Frame::Status(status)
                }
                other => {
                    return Err(format!(
                        "unexpected {} frame on a client connection",
                        frame_name(&other)
                    ))
                }
            };
            let bytes = wire::encode(&answer).map_err(|e| e.to_string())?;
            framed.send(bytes).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl<M> Peers<M> {
    /// Messages dropped so far because a peer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Encoded bytes waiting in the queue to `to`.
    pub fn queued_bytes(&self, to: NodeId) -> usize {
        self.queues
            .get(to.index())
            .and_then(Option::as_ref)
            .map_or(0, |queue| queue.bytes.queued())
    }
}

#[cfg(test)]
mod tests;
