//! TCP transport: one listener per node for peers and native clients, and one outbound
//! connection task per peer.
//!
//! - Outbound: each peer has a bounded queue ([`PEER_QUEUE_MESSAGES_MAX`]); a full queue
//!   drops the message (the protocols retransmit), so a slow or dead peer cannot exhaust
//!   memory. The task connects, sends `Hello`, and forwards messages; on any error it
//!   reconnects with capped exponential backoff.
//! - Inbound: the first frame of a connection says what it is, within
//!   [`HELLO_TIMEOUT`] and [`wire::HELLO_FRAME_BYTES_MAX`]. `Hello` (with the right cluster
//!   id) makes it a peer connection whose messages go to the core; `ClientHello` (with the
//!   right cluster id) a client connection, whose `Request`s and `StatusRequest`s are
//!   served one at a time. Only then may its frames grow, to [`wire::FRAME_BYTES_MAX`]
//!   for a peer and [`wire::CLIENT_FRAME_BYTES_MAX`] for a client: a stranger cannot make
//!   the node buffer more than a few KiB. A frame that is oversized or does not decode
//!   closes that connection with a logged reason; the node and its other connections
//!   carry on.
//! - Connections are capped by a [`Gate`] sized from the open-file limit (see
//!   [`crate::limits`]), with slots kept for peers; accept errors back off.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kv_replication::types::NodeId;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::Framed;

use crate::limits::{Budget, Gate, Permit};
use crate::node::{Input, LeaderHint, PeerSender};
use crate::wire::{self, ClientReply, Frame};

/// Messages queued for one peer before new ones are dropped.
pub const PEER_QUEUE_MESSAGES_MAX: usize = 4096;
/// How long a new inbound connection has to say who it is before it is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
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

/// Who an inbound connection is, and how to reach the core.
struct Listener<M> {
    cluster_id: u64,
    peers: usize,
    inputs: mpsc::Sender<Input<M>>,
    leader: LeaderHint,
}

impl<M> Clone for Listener<M> {
    fn clone(&self) -> Self {
        Listener {
            cluster_id: self.cluster_id,
            peers: self.peers,
            inputs: self.inputs.clone(),
            leader: self.leader.clone(),
        }
    }
}

/// Accepts peer and native-client connections until shutdown, within `budget`.
pub async fn serve<M>(
    listener: TcpListener,
    cluster_id: u64,
    peers: usize,
    inputs: mpsc::Sender<Input<M>>,
    leader: LeaderHint,
    budget: Budget,
    mut shutdown: watch::Receiver<bool>,
) where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let mut gate = Gate::new("peer", budget.native).with_reserve(budget.peer_reserve);
    let this = Listener {
        cluster_id,
        peers,
        inputs,
        leader,
    };
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

fn frame_name<M>(frame: &Frame<M>) -> &'static str {
    match frame {
        Frame::Hello { .. } => "Hello",
        Frame::ClientHello { .. } => "ClientHello",
        Frame::Peer(_) => "Peer",
        Frame::Request { .. } => "Request",
        Frame::StatusRequest => "StatusRequest",
        Frame::Reply { .. } => "Reply",
        Frame::Status(_) => "Status",
    }
}

impl<M> Listener<M>
where
    M: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Serves one inbound connection: its introduction, then its role.
    async fn connection(
        &self,
        stream: TcpStream,
        permit: &Permit,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, wire::codec_within(wire::HELLO_FRAME_BYTES_MAX));
        let first = tokio::time::timeout(HELLO_TIMEOUT, next_body(&mut framed, &mut shutdown))
            .await
            .map_err(|_| format!("no Hello within {HELLO_TIMEOUT:?}"))??;
        let Some(body) = first else { return Ok(()) };
        let frame: Frame<M> = wire::decode(&body).map_err(|e| format!("undecodable frame: {e}"))?;
        match frame {
            Frame::Hello { cluster_id, node } => {
                self.check_cluster(cluster_id)?;
                if node as usize >= self.peers {
                    return Err(format!(
                        "peer claims node id {node}, cluster has {}",
                        self.peers
                    ));
                }
                framed
                    .codec_mut()
                    .set_max_frame_length(wire::FRAME_BYTES_MAX);
                self.peer(framed, NodeId(node), shutdown).await
            }
            Frame::ClientHello { cluster_id } => {
                self.check_cluster(cluster_id)?;
                if permit.reserved {
                    return Err("client connection limit reached".into());
                }
                framed
                    .codec_mut()
                    .set_max_frame_length(wire::CLIENT_FRAME_BYTES_MAX);
                self.client(framed, shutdown).await
            }
            other => Err(format!(
                "first frame must be Hello or ClientHello, got {}",
                frame_name(&other)
            )),
        }
    }

    fn check_cluster(&self, cluster_id: u64) -> Result<(), String> {
        if cluster_id != self.cluster_id {
            return Err(format!(
                "connection from cluster {cluster_id}, expected {}",
                self.cluster_id
            ));
        }
        Ok(())
    }

    /// A peer's messages, to the core.
    async fn peer(
        &self,
        mut framed: Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>,
        from: NodeId,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), String> {
        while let Some(body) = next_body(&mut framed, &mut shutdown).await? {
            let frame: Frame<M> =
                wire::decode(&body).map_err(|e| format!("undecodable frame: {e}"))?;
            let Frame::Peer(msg) = frame else {
                return Err(format!(
                    "unexpected {} frame on a peer connection",
                    frame_name(&frame)
                ));
            };
            if self.inputs.send(Input::Peer { from, msg }).await.is_err() {
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
        while let Some(body) = next_body(&mut framed, &mut shutdown).await? {
            let frame: Frame<M> =
                wire::decode(&body).map_err(|e| format!("undecodable frame: {e}"))?;
            let answer = match frame {
                Frame::Request { tag, request } => {
                    let (tx, rx) = oneshot::channel();
                    let reply = match self.inputs.send(Input::Client { request, reply: tx }).await {
                        Ok(()) => rx
                            .await
                            .unwrap_or_else(|_| ClientReply::Unavailable("node stopping".into())),
                        Err(_) => ClientReply::Unavailable("node stopping".into()),
                    };
                    let leader = self.leader.get();
                    Frame::<M>::Reply { tag, reply, leader }
                }
                Frame::StatusRequest => {
                    let (tx, rx) = oneshot::channel();
                    let text = match self.inputs.send(Input::Status(tx)).await {
                        Ok(()) => rx.await.map(|s| s.render()).unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    Frame::<M>::Status(text)
                }
                other => {
                    return Err(format!(
                        "unexpected {} frame on a client connection",
                        frame_name(&other)
                    ))
                }
            };
            send_frame(&mut framed, &answer).await?;
        }
        Ok(())
    }
}

impl<M> Peers<M> {
    /// Messages dropped so far because a peer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Admitted;
    use tokio::io::AsyncWriteExt;

    fn listener() -> (Listener<()>, mpsc::Receiver<Input<()>>) {
        let (inputs, rx) = mpsc::channel(16);
        let this = Listener {
            cluster_id: 5,
            peers: 3,
            inputs,
            leader: LeaderHint::default(),
        };
        (this, rx)
    }

    /// A client socket and the connection the gate admitted for it.
    async fn admit(gate: &mut Gate, socket: &TcpListener) -> (TcpStream, Admitted) {
        let (_stop, mut shutdown) = watch::channel(false);
        let (client, admitted) = tokio::join!(
            TcpStream::connect(socket.local_addr().unwrap()),
            gate.accept(socket, &mut shutdown)
        );
        (client.unwrap(), admitted.unwrap())
    }

    async fn send(client: &mut TcpStream, frame: &Frame<()>) {
        let body = wire::encode(frame).unwrap();
        client
            .write_all(&(body.len() as u32).to_be_bytes())
            .await
            .unwrap();
        client.write_all(&body).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_does_not_say_who_it_is_is_closed_after_the_hello_timeout() {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut gate = Gate::new("test", 1);
        let (_client, admitted) = admit(&mut gate, &socket).await;
        let (this, _inputs) = listener();
        let (_stop, shutdown) = watch::channel(false);
        let started = tokio::time::Instant::now();
        let result = this
            .connection(admitted.stream, &admitted.permit, shutdown)
            .await;
        assert!(
            result.as_ref().is_err_and(|e| e.contains("no Hello")),
            "{result:?}"
        );
        assert!(started.elapsed() >= HELLO_TIMEOUT);
    }

    #[tokio::test]
    async fn the_slots_kept_for_peers_refuse_clients_and_admit_peers() {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut gate = Gate::new("test", 0).with_reserve(2);
        let (this, mut inputs) = listener();

        let (mut client, admitted) = admit(&mut gate, &socket).await;
        assert!(admitted.permit.reserved);
        send(&mut client, &Frame::ClientHello { cluster_id: 5 }).await;
        let (_stop, shutdown) = watch::channel(false);
        let result = this
            .connection(admitted.stream, &admitted.permit, shutdown.clone())
            .await;
        assert_eq!(result, Err("client connection limit reached".to_string()));

        let (mut peer, admitted) = admit(&mut gate, &socket).await;
        assert!(admitted.permit.reserved);
        send(
            &mut peer,
            &Frame::Hello {
                cluster_id: 5,
                node: 1,
            },
        )
        .await;
        send(&mut peer, &Frame::Peer(())).await;
        drop(peer);
        let result = this
            .connection(admitted.stream, &admitted.permit, shutdown)
            .await;
        assert_eq!(result, Ok(()));
        assert!(matches!(
            inputs.try_recv(),
            Ok(Input::Peer {
                from: NodeId(1),
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_stranger_cannot_announce_a_frame_larger_than_a_hello() {
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut gate = Gate::new("test", 1);
        let (mut client, admitted) = admit(&mut gate, &socket).await;
        let announced = wire::HELLO_FRAME_BYTES_MAX as u32 + 1;
        client.write_all(&announced.to_be_bytes()).await.unwrap();
        let (this, _inputs) = listener();
        let (_stop, shutdown) = watch::channel(false);
        let result = this
            .connection(admitted.stream, &admitted.permit, shutdown)
            .await;
        assert!(
            result.as_ref().is_err_and(|e| e.contains("bad frame")),
            "{result:?}"
        );
    }
}
