//! The native client: used by `kv get|put|append|del`, `kv bench` and the end-to-end tests.
//!
//! A client is one at-most-once identity: a random client id and a sequence number per
//! request, one request outstanding at a time. A request is one operation
//! ([`Client::execute`]) or a batch of them run in order at one log position
//! ([`Client::execute_batch`]: pipelining, at the cost of one round). Each connection starts with a
//! `ClientHello` naming the cluster and a handshake proving both sides know the cluster
//! secret (see [`crate::auth`]). An attempt that gets no answer within
//! [`ClientOptions::attempt_timeout`] (a node in a minority never answers) is retried with
//! the *same* sequence number on the next node; the replicas' dedup table makes the retry
//! harmless. After [`ClientOptions::deadline`] without an answer the operation fails with
//! [`ClientError::Timeout`] — its outcome is then unknown.
//!
//! A client speaks one cluster's [`Protocol`]: a Paxos cluster's nodes take kv requests as
//! they are ([`Group`]); a primary/backup cluster's take them inside their own request
//! type, beside the view query ([`PrimaryBackup`]). Either way a node that cannot serve
//! names the node it believes can (the leader, the primary), and the client goes there.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kv_engine::kv::{Op, Reply};
use kv_replication::clerk::Clerk;
use kv_replication::kvgroup::{Batch, Request};
use kv_replication::pbservice;
use kv_replication::types::{ClientId, NodeId};
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::auth::{self, Caller, ClusterKey};
use crate::wire::{self, ClientReply, Frame};

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No node answered before the deadline; the operation may or may not have happened.
    #[error(
        "no answer from any node within {0:?} (the operation may or may not have been applied)"
    )]
    Timeout(Duration),
    /// No node answered before the deadline, and a node refused the handshake on the way:
    /// it did not prove it knows this client's cluster secret (the secret here, or there,
    /// is not the cluster's).
    #[error(
        "no answer from any node within {deadline:?}: {why} (the operation may or may not have been applied)"
    )]
    Refused {
        /// The deadline.
        deadline: Duration,
        /// The refused handshake, in words.
        why: String,
    },
    /// A node answered with something that is not a reply.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Client tunables.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// How long one node gets to answer before the next is tried.
    pub attempt_timeout: Duration,
    /// How long an operation may take in all.
    pub deadline: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            attempt_timeout: Duration::from_secs(2),
            deadline: Duration::from_secs(30),
        }
    }
}

/// How a cluster's nodes take a kv request from a native client, and answer it.
pub trait Protocol: Send + Sync + 'static {
    /// What a request frame carries.
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// What a reply frame carries.
    type Reply: Serialize + DeserializeOwned + Send + Sync + 'static;
    /// The kv request as the nodes take it.
    fn wrap(request: Request) -> Self::Request;
    /// The kv reply in a node's answer (`None`: the answer is not a kv reply).
    fn unwrap(reply: Self::Reply) -> Option<Reply>;
}

/// A Paxos cluster's nodes: kv requests and replies as they are.
pub struct Group;

impl Protocol for Group {
    type Request = Request;
    type Reply = Reply;

    fn wrap(request: Request) -> Request {
        request
    }

    fn unwrap(reply: Reply) -> Option<Reply> {
        Some(reply)
    }
}

/// A primary/backup cluster's nodes: kv requests beside the view query.
pub struct PrimaryBackup;

impl Protocol for PrimaryBackup {
    type Request = pbservice::Request;
    type Reply = pbservice::Reply;

    fn wrap(request: Request) -> pbservice::Request {
        pbservice::Request::Kv(request)
    }

    fn unwrap(reply: pbservice::Reply) -> Option<Reply> {
        match reply {
            pbservice::Reply::Kv(reply) => Some(reply),
            pbservice::Reply::View(_) => None,
        }
    }
}

/// A connection-per-node native client of a cluster speaking protocol `P` (the `M` of
/// frames is irrelevant here: `()`). Its numbering, retries and leader-following are the
/// replication library's [`Clerk`].
pub struct Client<P: Protocol = Group> {
    key: ClusterKey,
    nodes: Vec<SocketAddr>,
    connections: Vec<Option<Framed<TcpStream, LengthDelimitedCodec>>>,
    clerk: Clerk<Batch>,
    options: ClientOptions,
    /// The last handshake a node refused (see [`ClientError::Refused`]).
    refused: Option<String>,
    protocol: std::marker::PhantomData<fn(P)>,
}

/// A fresh random client id.
pub fn random_client_id() -> ClientId {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    // Id 0 is the replicas' own (`Request::INTERNAL`).
    ClientId(hasher.finish().max(1))
}

impl<P: Protocol> Client<P> {
    /// A client of the cluster `key` names, whose nodes are at `nodes` (their peer/native
    /// addresses, by node id), starting at `first`.
    pub fn new(
        key: ClusterKey,
        nodes: Vec<SocketAddr>,
        first: usize,
        options: ClientOptions,
    ) -> Client<P> {
        Client::with_id(random_client_id(), key, nodes, first, options)
    }

    /// [`Client::new`] with the at-most-once identity `client` (one no other client uses).
    pub fn with_id(
        client: ClientId,
        key: ClusterKey,
        nodes: Vec<SocketAddr>,
        first: usize,
        options: ClientOptions,
    ) -> Client<P> {
        let count = nodes.len().max(1);
        let mut clerk = Clerk::new(client, (0..count as u32).map(NodeId).collect());
        clerk.on_leader(NodeId((first % count) as u32));
        Client {
            key,
            connections: (0..nodes.len()).map(|_| None).collect(),
            nodes,
            clerk,
            options,
            refused: None,
            protocol: std::marker::PhantomData,
        }
    }

    /// The node (index into the address list) the next request goes to first.
    pub fn node(&self) -> usize {
        self.clerk.target().index()
    }

    /// This client's at-most-once identity.
    pub fn id(&self) -> ClientId {
        self.clerk.client()
    }

    /// Sends later requests to the node a reply named as leader (saving the hop a follower
    /// would forward them over).
    fn follow(&mut self, leader: Option<u32>) {
        if let Some(leader) = leader {
            self.clerk.on_leader(NodeId(leader));
        }
    }

    /// Runs one operation, retrying across nodes until it is applied or the deadline passes.
    /// The reply is the op's, or [`Reply::Stale`] / [`Reply::NotHeld`] if it did not run.
    pub async fn execute(&mut self, op: Op) -> Result<Reply, ClientError> {
        let batch = Batch::one(op);
        let reply = self.send(batch.clone()).await?;
        Ok(match batch.split_reply(reply) {
            Ok(mut replies) => replies.pop().expect("one reply for one op"),
            Err(other) => other,
        })
    }

    /// Runs a batch of operations as one request (in order, at one log position, at most
    /// once as a whole), retrying across nodes until it is applied or the deadline passes.
    /// `Ok` holds one reply per op; `Err` the reply that says why the ops did not run
    /// ([`Reply::Stale`], [`Reply::NotHeld`]). The answer travels in one frame: a batch of
    /// reads whose values pass [`wire::FRAME_BYTES_MAX`] gets none (the node cannot send
    /// it) and times out; read fewer keys per batch.
    pub async fn execute_batch(
        &mut self,
        batch: Batch,
    ) -> Result<Result<Vec<Reply>, Reply>, ClientError> {
        let reply = self.send(batch.clone()).await?;
        Ok(batch.split_reply(reply))
    }

    /// Sends one batch as one request, with the next sequence number, until a node answers
    /// it: the reply as the node gave it (a batch of one op: that op's reply; of more:
    /// [`Reply::Batch`]).
    pub async fn send(&mut self, batch: Batch) -> Result<Reply, ClientError> {
        // A request abandoned at its deadline is never resumed: the next has a higher seq.
        self.clerk.abandon();
        let (mut to, request) = self
            .clerk
            .begin(batch)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let started = Instant::now();
        let mut tag = 0u64;
        let mut redirected = false;
        while started.elapsed() < self.options.deadline {
            tag += 1;
            let node = to.index();
            let attempt = tokio::time::timeout(
                self.options.attempt_timeout,
                self.attempt(node, tag, request.clone()),
            )
            .await;
            match attempt {
                Ok(Ok(Some(reply))) => {
                    if let Some(reply) = self.clerk.on_reply(request.seq, reply) {
                        return Ok(reply);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) => {
                    if self.clerk.target() != to && !redirected {
                        redirected = true;
                        to = self.clerk.target();
                        continue; // told where the leader is: go there at once (once)
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(_elapsed) => {}
            }
            // No answer: drop the connection (a late reply must not be read as the answer
            // to a later request) and try the next node with the same request.
            self.connections[node] = None;
            if self.clerk.target() == to {
                to = self.clerk.on_failure().map_or(to, |(next, _)| next);
            } else {
                to = self.clerk.target();
            }
        }
        self.clerk.abandon();
        Err(match self.refused.take() {
            Some(why) => ClientError::Refused {
                deadline: self.options.deadline,
                why,
            },
            None => ClientError::Timeout(self.options.deadline),
        })
    }

    /// One attempt on one node: `Ok(None)` if the node could not be reached or was
    /// unavailable.
    async fn attempt(
        &mut self,
        node: usize,
        tag: u64,
        request: Request,
    ) -> Result<Option<Reply>, ClientError> {
        if self.connections[node].is_none() {
            match connect(&self.key, node as u32, self.nodes[node]).await {
                Ok(framed) => self.connections[node] = Some(framed),
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        self.refused = Some(format!("node {node} at {}: {e}", self.nodes[node]));
                    }
                    return Ok(None);
                }
            }
        }
        let framed = self.connections[node].as_mut().expect("just connected");
        let frame: Frame<(), P::Request, P::Reply> = Frame::Request {
            tag,
            request: P::wrap(request),
        };
        let bytes = wire::encode(&frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if framed.send(bytes).await.is_err() {
            self.connections[node] = None;
            return Ok(None);
        }
        match framed.next().await {
            Some(Ok(body)) => match wire::decode::<(), P::Request, P::Reply>(&body) {
                Ok(Frame::Reply {
                    tag: t,
                    reply: ClientReply::Done(reply),
                    leader,
                }) if t == tag => {
                    self.follow(leader);
                    P::unwrap(reply)
                        .map(Some)
                        .ok_or_else(|| ClientError::Protocol("a reply that is not kv".into()))
                }
                Ok(Frame::Reply {
                    reply: ClientReply::Unavailable(_) | ClientReply::StorageFailed(_),
                    leader,
                    ..
                }) => {
                    self.follow(leader);
                    Ok(None)
                }
                Ok(other) => Err(ClientError::Protocol(format!(
                    "unexpected {} frame",
                    wire::frame_name(&other)
                ))),
                Err(e) => Err(ClientError::Protocol(e.to_string())),
            },
            _ => {
                self.connections[node] = None;
                Ok(None)
            }
        }
    }
}

/// Connects to node `node` (at `addr`) of `key`'s cluster as a native client: the
/// handshake done, both sides proved to know the secret.
pub async fn connect(
    key: &ClusterKey,
    node: u32,
    addr: SocketAddr,
) -> std::io::Result<Framed<TcpStream, LengthDelimitedCodec>> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, wire::codec());
    auth::introduce(&mut framed, key, Caller::Client, node).await?;
    Ok(framed)
}

/// Sends one frame to node `node` (at `addr`) of `key`'s cluster on a connection of its
/// own and returns the node's answer, within `timeout`.
async fn exchange<Q, R>(
    key: &ClusterKey,
    node: u32,
    addr: SocketAddr,
    frame: Frame<(), Q, R>,
    timeout: Duration,
) -> Result<Frame<(), Q, R>, ClientError>
where
    Q: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let ask = async {
        let mut framed = connect(key, node, addr)
            .await
            .map_err(|e| ClientError::Protocol(format!("{addr}: {e}")))?;
        let bytes = wire::encode(&frame).map_err(|e| ClientError::Protocol(e.to_string()))?;
        framed
            .send(bytes)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        match framed.next().await {
            Some(Ok(body)) => wire::decode::<(), Q, R>(&body)
                .map_err(|e| ClientError::Protocol(format!("{addr}: {e}"))),
            _ => Err(ClientError::Protocol(format!("{addr}: connection closed"))),
        }
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

/// Asks node `node` (at `addr`) of `key`'s cluster for its status text.
pub async fn status(
    key: &ClusterKey,
    node: u32,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<String, ClientError> {
    match exchange::<Request, Reply>(key, node, addr, Frame::StatusRequest, timeout).await? {
        Frame::Status(text) => Ok(text),
        other => Err(ClientError::Protocol(format!(
            "{addr}: unexpected {} frame",
            wire::frame_name(&other)
        ))),
    }
}

/// Asks the view service of a primary/backup cluster (node `node`, at `addr`) for its
/// current view.
pub async fn view(
    key: &ClusterKey,
    node: u32,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<pbservice::View, ClientError> {
    let ask = Frame::Request {
        tag: 1,
        request: pbservice::Request::View,
    };
    match exchange::<pbservice::Request, pbservice::Reply>(key, node, addr, ask, timeout).await? {
        Frame::Reply {
            reply: ClientReply::Done(pbservice::Reply::View(view)),
            ..
        } => Ok(view),
        Frame::Reply {
            reply: ClientReply::Unavailable(why) | ClientReply::StorageFailed(why),
            ..
        } => Err(ClientError::Protocol(format!("{addr}: {why}"))),
        other => Err(ClientError::Protocol(format!(
            "{addr}: unexpected {} frame (is it a primary/backup cluster's view service?)",
            wire::frame_name(&other)
        ))),
    }
}
