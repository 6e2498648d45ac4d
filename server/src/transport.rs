//! TCP transport: one listener per node for peers and native clients, and one outbound
//! connection task per peer.
//!
//! - Outbound: each peer has a bounded queue ([`PEER_QUEUE_MESSAGES_MAX`]); a full queue
//!   drops the message (the protocols retransmit), so a slow or dead peer cannot exhaust
//!   memory. The task connects, sends `Hello`, and forwards messages; on any error it
//!   reconnects with capped exponential backoff.
//! - Inbound: the first frame of a connection says what it is. `Hello` (with the right
//!   cluster id) makes it a peer connection whose messages go to the core; `Request` or
//!   `StatusRequest` make it a client connection, served one request at a time. A frame
//!   that is oversized or does not decode closes that connection with a logged reason; the
//!   node and its other connections carry on.
//! - Connections are bounded by a semaphore ([`CONNECTIONS_MAX`]); accept errors back off.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kv_replication::types::NodeId;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::codec::Framed;

use crate::node::{Input, LeaderHint, PeerSender};
use crate::wire::{self, ClientReply, Frame};

/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// Concurrent inbound connections per listener.
pub const CONNECTIONS_MAX: usize = 4096;
/// First reconnect delay.
pub const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(20);
/// Largest reconnect delay.
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(1);

/// Outbound queues to every peer.
pub struct Peers<M> {
    queues: Vec<Option<mpsc::Sender<M>>>,
    dropped: Arc<AtomicU64>,
}

impl<M: Send + 'static> PeerSender<M> for Peers<M> {
    fn send(&self, to: NodeId, msg: M) -> bool {
        match self.queues.get(to.index()).and_then(Option::as_ref) {
            Some(queue) => match queue.try_send(msg) {
                Ok(()) => true,
                Err(_) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    false
                }
            },
            None => false,
        }
    }
}

/// Starts an outbound task per peer (every address but `me`'s).
pub fn connect_peers<M>(
    cluster_id: u64,
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
            let (tx, rx) = mpsc::channel(PEER_QUEUE_MESSAGES_MAX);
            tokio::spawn(outbound(
                cluster_id,
                me,
                i as u32,
                addr,
                rx,
                shutdown.clone(),
            ));
            Some(tx)
        })
        .collect();
    Peers {
        queues,
        dropped: Arc::new(AtomicU64::new(0)),
    }
}

async fn outbound<M: Serialize>(
    cluster_id: u64,
    me: u32,
    peer: u32,
    addr: SocketAddr,
    mut queue: mpsc::Receiver<M>,
    shutdown: watch::Receiver<bool>,
) {
    let mut delay = RECONNECT_DELAY_MIN;
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
        let hello: Frame<M> = Frame::Hello {
            cluster_id,
            node: me,
        };
        if send_frame(&mut framed, &hello).await.is_err() {
            continue;
        }
        delay = RECONNECT_DELAY_MIN;
        tracing::debug!(peer, %addr, "connected to peer");
        loop {
            let Some(msg) = queue.recv().await else {
                return;
            };
            let mut batch = vec![Frame::Peer(msg)];
            while let Ok(more) = queue.try_recv() {
                batch.push(Frame::Peer(more));
                if batch.len() >= 256 {
                    break;
                }
            }
            if feed_frames(&mut framed, &batch).await.is_err() {
                tracing::debug!(peer, %addr, "lost connection to peer");
                break;
            }
        }
    }
}

async fn send_frame<M: Serialize>(
    framed: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    frame: &Frame<M>,
) -> Result<(), String> {
    let bytes = wire::encode(frame).map_err(|e| e.to_string())?;
    framed.send(bytes).await.map_err(|e| e.to_string())
}

async fn feed_frames<M: Serialize>(
    framed: &mut Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
    frames: &[Frame<M>],
) -> Result<(), String> {
    for frame in frames {
        let bytes = wire::encode(frame).map_err(|e| e.to_string())?;
        framed.feed(bytes).await.map_err(|e| e.to_string())?;
    }
    SinkExt::<Bytes>::flush(framed)
        .await
        .map_err(|e: std::io::Error| e.to_string())
}

/// Accepts peer and native-client connections until shutdown.
pub async fn serve<M>(
    listener: TcpListener,
    cluster_id: u64,
    peers: usize,
    inputs: mpsc::Sender<Input<M>>,
    leader: LeaderHint,
    mut shutdown: watch::Receiver<bool>,
) where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let permits = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let mut backoff = Duration::from_millis(1);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => {
                backoff = Duration::from_millis(1);
                pair
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%remote, "too many connections; refusing");
            continue;
        };
        let inputs = inputs.clone();
        let shutdown = shutdown.clone();
        let leader = leader.clone();
        tokio::spawn(async move {
            if let Err(reason) =
                connection(stream, cluster_id, peers, inputs, leader, shutdown).await
            {
                tracing::info!(%remote, %reason, "closed connection");
            }
            drop(permit);
        });
    }
}

async fn connection<M>(
    stream: TcpStream,
    cluster_id: u64,
    peers: usize,
    inputs: mpsc::Sender<Input<M>>,
    leader: LeaderHint,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, wire::codec());
    let mut peer: Option<NodeId> = None;
    loop {
        let next = tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            next = framed.next() => next,
        };
        let body = match next {
            None => return Ok(()),
            Some(Ok(body)) => body,
            Some(Err(e)) => return Err(format!("bad frame: {e}")),
        };
        let frame: Frame<M> = wire::decode(&body).map_err(|e| format!("undecodable frame: {e}"))?;
        match (frame, peer) {
            (
                Frame::Hello {
                    cluster_id: id,
                    node,
                },
                None,
            ) => {
                if id != cluster_id {
                    return Err(format!("peer from cluster {id}, expected {cluster_id}"));
                }
                if node as usize >= peers {
                    return Err(format!("peer claims node id {node}, cluster has {peers}"));
                }
                peer = Some(NodeId(node));
            }
            (Frame::Peer(msg), Some(from)) => {
                if inputs.send(Input::Peer { from, msg }).await.is_err() {
                    return Ok(());
                }
            }
            (Frame::Request { tag, request }, None) => {
                let (tx, rx) = oneshot::channel();
                let reply = match inputs.send(Input::Client { request, reply: tx }).await {
                    Ok(()) => rx
                        .await
                        .unwrap_or_else(|_| ClientReply::Unavailable("node stopping".into())),
                    Err(_) => ClientReply::Unavailable("node stopping".into()),
                };
                let leader = leader.get();
                send_frame(&mut framed, &Frame::<M>::Reply { tag, reply, leader }).await?;
            }
            (Frame::StatusRequest, None) => {
                let (tx, rx) = oneshot::channel();
                let text = match inputs.send(Input::Status(tx)).await {
                    Ok(()) => rx.await.map(|s| s.render()).unwrap_or_default(),
                    Err(_) => String::new(),
                };
                send_frame(&mut framed, &Frame::<M>::Status(text)).await?;
            }
            (other, _) => {
                return Err(format!(
                    "unexpected {} frame",
                    match other {
                        Frame::Hello { .. } => "second Hello",
                        Frame::Peer(_) => "Peer (before Hello)",
                        Frame::Request { .. } => "Request on a peer connection",
                        Frame::StatusRequest => "StatusRequest on a peer connection",
                        Frame::Reply { .. } => "Reply",
                        Frame::Status(_) => "Status",
                    }
                ))
            }
        }
    }
}

impl<M> Peers<M> {
    /// Messages dropped so far because a peer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
