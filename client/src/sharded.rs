//! The client side of a sharded cluster: how a shard clerk reaches replicas ([`Router`]:
//! from inside a node, the server's `Host`; from outside, [`Outside`]), the configuration
//! a process caches, the native calls to other nodes, the administrator's shard-master
//! call, and [`ShardedStore`], one client's clerks (a RESP connection's store inside a
//! node, the CLI's, the load generator's and batch jobs' outside).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kv_engine::kv::{Op, Reply, Sharding};
use kv_replication::cluster::{resolve, server_name, ClusterMsg, ClusterReply, ClusterRequest};
use kv_replication::kvgroup::Batch;
use kv_replication::shardkv::{ShardClerk, Step};
use kv_replication::shardmaster::{self, Config, ConfigNum, GroupId};
use kv_replication::types::{ClientId, NodeId};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::auth::ClusterKey;
use crate::config::{ClusterConfig, Endpoint, Role};
use crate::wire::{self, ClientReply, Frame};

/// How long a command keeps being retried (as the same request) before the client is
/// told it failed.
pub const RETRY_DEADLINE: Duration = Duration::from_secs(30);

/// Why a command got no result from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The node is shutting down.
    Stopping,
    /// The replicas kept giving up on the request until [`RETRY_DEADLINE`].
    Unavailable(String),
    /// The node cannot write to its data directory and has stopped serving.
    StorageFailed(String),
    /// The op's shard has no owner in the newest configuration (every group left), so
    /// nothing can serve it; nothing was executed.
    Unserved,
}

impl Failure {
    /// What went wrong, in words.
    pub fn message(&self) -> String {
        match self {
            Failure::Stopping => "the node is stopping".into(),
            Failure::Unavailable(why) => why.clone(),
            Failure::StorageFailed(why) => {
                format!("a node cannot write to its data directory: {why}")
            }
            Failure::Unserved => "no group owns the key's shard".into(),
        }
    }
}

/// A peer message between endpoints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Routed<T> {
    /// The sending endpoint.
    pub from: u32,
    /// The receiving endpoint.
    pub to: u32,
    /// The message.
    pub body: T,
}

/// A native client's request to one endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToEndpoint<T> {
    /// The endpoint asked.
    pub to: u32,
    /// The request.
    pub request: T,
}

/// The frames of a sharded cluster's native protocol.
pub type ShardedFrame = Frame<Routed<ClusterMsg>, ToEndpoint<ClusterRequest>, ClusterReply>;

/// How long one call to a replica may take before the caller tries another (a replica cut
/// off from its group never answers; a maximum-size value takes about a second).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest time between two shard-master queries of one process: callers within it share
/// the last answer.
pub const QUERY_INTERVAL_MIN: Duration = Duration::from_millis(50);

/// How a clerk reaches a sharded cluster's replicas: from inside a node ([`Host`]: its own
/// replicas directly, the others through their nodes) or from outside ([`Outside`]).
pub trait Router: Send + Sync + 'static {
    /// The replica `endpoint`'s answer to `request` (`None` if it gave none within
    /// [`CALL_TIMEOUT`], or is not an endpoint), and the endpoint it believes leads its
    /// group.
    fn call(
        &self,
        endpoint: u32,
        request: ClusterRequest,
    ) -> impl std::future::Future<Output = (Option<ClusterReply>, Option<u32>)> + Send;
    /// The shard master's replicas, the cheapest to ask first.
    fn masters(&self) -> Vec<u32>;
    /// The newest configuration known, shared by every clerk of this router.
    fn cache(&self) -> &ConfigCache;
    /// Key to shard.
    fn sharding(&self) -> Sharding;
    /// The endpoint this router believes leads group `gid`, if it knows better than a
    /// clerk's own hints (a node hosting a replica of the group follows its elections). A
    /// request's first send to the group goes there. None, by default.
    fn leader(&self, _gid: GroupId) -> Option<u32> {
        None
    }
    /// Whether ops its group refused, unexecuted, may go back to the client as redirects
    /// (a node in Redis Cluster mode; see [`Host`]'s `redirect`). Never, by default.
    fn redirects(&self) -> bool {
        false
    }
    /// Whether an op on `slot` that its group refused, unexecuted, goes back to the
    /// client as a redirect (only asked when [`Router::redirects`]).
    fn redirect(
        &self,
        _known: Option<ConfigNum>,
        _slot: u16,
        _arriving_since: &mut Option<Instant>,
    ) -> impl std::future::Future<Output = bool> + Send {
        async { false }
    }
}

/// The newest configuration a process knows, and when the master was last asked; with
/// the process's client id at the shard master.
pub struct ConfigCache {
    state: tokio::sync::Mutex<(Option<Arc<Config>>, Option<Instant>)>,
    /// The newest configuration, for readers that cannot wait (slot routing).
    pub published: std::sync::RwLock<Option<Arc<Config>>>,
    client: ClientId,
    seq: std::sync::atomic::AtomicU64,
}

impl Default for ConfigCache {
    fn default() -> ConfigCache {
        ConfigCache::new()
    }
}

impl ConfigCache {
    pub fn new() -> ConfigCache {
        ConfigCache {
            state: tokio::sync::Mutex::new((None, None)),
            published: std::sync::RwLock::new(None),
            client: crate::native::random_client_id(),
            seq: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

/// The newest configuration: `known`'s successor if the shard master has one, else the
/// newest it has (asking it at most every [`QUERY_INTERVAL_MIN`], one query at a time).
/// `None` only if no configuration was ever learned and no master replica answers.
pub async fn latest_config<R: Router>(router: &R, known: Option<ConfigNum>) -> Option<Arc<Config>> {
    let cache = router.cache();
    let mut cached = cache.state.lock().await;
    if let (Some(config), at) = &*cached {
        let newer = known.is_none_or(|k| config.num() > k);
        let fresh = at.is_some_and(|at| at.elapsed() < QUERY_INTERVAL_MIN);
        if newer || fresh {
            return Some(config.clone());
        }
    }
    for endpoint in router.masters() {
        let seq = cache.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let request = ClusterRequest::Master(shardmaster::Request {
            client: cache.client,
            seq,
            command: shardmaster::Command::Query { num: None },
        });
        if let (Some(ClusterReply::Master(shardmaster::Reply::Config(config))), _) =
            router.call(endpoint, request).await
        {
            if cached.0.as_ref().is_none_or(|c| c.num() <= config.num()) {
                *cache.published.write().expect("config lock") = Some(config.clone());
                cached.0 = Some(config);
            }
            cached.1 = Some(Instant::now());
            return cached.0.clone();
        }
    }
    cached.0.clone()
}

/// Native connections to other nodes, for calls to endpoints this process does not host:
/// a small pool per node, each connection carrying one call at a time.
pub struct Remote {
    key: ClusterKey,
    addresses: Vec<SocketAddr>,
    pools: Vec<Mutex<Vec<Framed<TcpStream, LengthDelimitedCodec>>>>,
    /// The last handshake a node failed to prove the cluster secret in (a wrong secret
    /// here or there), in words: what a call that times out was up against.
    refused: Mutex<Option<String>>,
}

/// Idle connections kept per node.
const REMOTE_POOL_MAX: usize = 256;

impl Remote {
    /// Connections to the nodes of `key`'s cluster, at `addresses` (their peer and
    /// native-client listeners, by node id), made when first needed.
    pub fn new(key: ClusterKey, addresses: Vec<SocketAddr>) -> Remote {
        let pools = addresses.iter().map(|_| Mutex::new(Vec::new())).collect();
        Remote {
            key,
            addresses,
            pools,
            refused: Mutex::new(None),
        }
    }

    /// Why the last refused handshake was refused, if one was: a node that did not prove
    /// it knows this client's cluster secret.
    pub fn refused(&self) -> Option<String> {
        self.refused.lock().expect("refused lock").clone()
    }

    /// Endpoint `request.to`'s answer from node `node`, and the leader the node named.
    pub async fn call(
        &self,
        node: u32,
        request: ToEndpoint<ClusterRequest>,
    ) -> (ClientReply<ClusterReply>, Option<u32>) {
        let unavailable = |why: String| (ClientReply::Unavailable(why), None);
        let Some(&addr) = self.addresses.get(node as usize) else {
            return unavailable(format!("no node {node}"));
        };
        let pooled = self.pools[node as usize].lock().expect("pool lock").pop();
        let mut framed = match pooled {
            Some(framed) => framed,
            None => match self.connect(node, addr).await {
                Ok(framed) => framed,
                Err(e) => {
                    let why = format!("node {node} at {addr}: {e}");
                    if e.kind() == std::io::ErrorKind::PermissionDenied {
                        *self.refused.lock().expect("refused lock") = Some(why.clone());
                    }
                    return unavailable(why);
                }
            },
        };
        let frame: ShardedFrame = Frame::Request { tag: 0, request };
        let Ok(bytes) = wire::encode(&frame) else {
            return unavailable("request does not encode".into());
        };
        if framed.send(bytes).await.is_err() {
            return unavailable(format!("node {node}: connection lost"));
        }
        let reply = match framed.next().await {
            Some(Ok(body)) => {
                match wire::decode::<Routed<ClusterMsg>, ToEndpoint<ClusterRequest>, ClusterReply>(
                    &body,
                ) {
                    Ok(Frame::Reply { reply, leader, .. }) => (reply, leader),
                    _ => return unavailable(format!("node {node}: unexpected answer")),
                }
            }
            _ => return unavailable(format!("node {node}: connection lost")),
        };
        let mut pool = self.pools[node as usize].lock().expect("pool lock");
        if pool.len() < REMOTE_POOL_MAX {
            pool.push(framed);
        }
        reply
    }

    /// A new native connection to node `node` at `addr`, the handshake done.
    pub async fn connect(
        &self,
        node: u32,
        addr: SocketAddr,
    ) -> std::io::Result<Framed<TcpStream, LengthDelimitedCodec>> {
        crate::native::connect(&self.key, node, addr).await
    }
}

/// A cluster seen from outside (the CLI, the load generator): every call goes to the
/// node that hosts the endpoint, over the native protocol.
pub struct Outside {
    remote: Remote,
    endpoints: Vec<Endpoint>,
    sharding: Sharding,
    cache: ConfigCache,
}

impl Outside {
    /// Why the last refused handshake was refused, if one was ([`Remote::refused`]).
    pub fn refused(&self) -> Option<String> {
        self.remote.refused()
    }

    /// A router to the sharded cluster `config`, whose id and secret are `key`.
    pub fn new(config: &ClusterConfig, key: ClusterKey) -> Outside {
        Outside {
            remote: Remote::new(key, config.nodes.iter().map(|n| n.peer).collect()),
            endpoints: config.endpoints(),
            sharding: Sharding::Slots {
                shards: config.shards().unwrap_or(1),
            },
            cache: ConfigCache::new(),
        }
    }
}

/// A call's outcome as a router reports it: the reply if the replica applied the request in
/// time, and its leader hint.
pub fn done<E>(
    outcome: Result<(ClientReply<ClusterReply>, Option<u32>), E>,
) -> (Option<ClusterReply>, Option<u32>) {
    match outcome {
        Ok((ClientReply::Done(reply), leader)) => (Some(reply), leader),
        Ok((_, leader)) => (None, leader),
        Err(_) => (None, None),
    }
}

impl Router for Outside {
    async fn call(
        &self,
        endpoint: u32,
        request: ClusterRequest,
    ) -> (Option<ClusterReply>, Option<u32>) {
        let Some(target) = self.endpoints.get(endpoint as usize) else {
            return (None, None);
        };
        let call = self.remote.call(
            target.node,
            ToEndpoint {
                to: endpoint,
                request,
            },
        );
        done(tokio::time::timeout(CALL_TIMEOUT, call).await)
    }

    fn masters(&self) -> Vec<u32> {
        self.endpoints
            .iter()
            .filter(|e| e.role == Role::Master)
            .map(|e| e.id)
            .collect()
    }

    fn cache(&self) -> &ConfigCache {
        &self.cache
    }

    fn sharding(&self) -> Sharding {
        self.sharding
    }
}

/// Sends one shard-master command to the cluster from outside it (an administrator's
/// Join, Leave, Move or Query): the same request, at most once, to each master replica in
/// turn until one answers, for up to `timeout`.
pub async fn master_call(
    config: &ClusterConfig,
    command: shardmaster::Command,
    timeout: Duration,
) -> Result<shardmaster::Reply, String> {
    let masters: Vec<Endpoint> = config
        .endpoints()
        .into_iter()
        .filter(|e| e.role == Role::Master)
        .collect();
    if masters.is_empty() {
        return Err("the cluster is not sharded: it has no shard master".into());
    }
    let key = config.key().map_err(|e| e.to_string())?;
    let remote = Remote::new(key, config.nodes.iter().map(|n| n.peer).collect());
    let request = shardmaster::Request {
        client: crate::native::random_client_id(),
        seq: 1,
        command,
    };
    let started = Instant::now();
    let mut last = String::from("no master replica answered");
    let mut backoff = Duration::from_millis(20);
    for endpoint in masters.iter().cycle() {
        if started.elapsed() >= timeout {
            break;
        }
        let call = remote.call(
            endpoint.node,
            ToEndpoint {
                to: endpoint.id,
                request: ClusterRequest::Master(request.clone()),
            },
        );
        match tokio::time::timeout(CALL_TIMEOUT.min(timeout), call).await {
            Ok((ClientReply::Done(ClusterReply::Master(reply)), _)) => return Ok(reply),
            Ok((ClientReply::Done(other), _)) => {
                return Err(format!("unexpected answer {other:?}"))
            }
            Ok((ClientReply::Unavailable(why) | ClientReply::StorageFailed(why), _)) => last = why,
            Err(_) => last = format!("node {} did not answer", endpoint.node),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
    Err(format!(
        "the shard master did not answer within {timeout:?}: {last}"
    ))
}

/// Most clerks (client ids) one client of a sharded cluster runs a pipeline's ops on.
pub const LANES_MAX: usize = 32;

/// One client of a sharded cluster — a RESP connection's store inside a node, or a native
/// client outside. Each op goes through a clerk that routes it by the configuration (see
/// the module docs). A batch of several ops (a pipeline, a multi-key command) runs on up to
/// [`LANES_MAX`] clerks at once, each with its own client id, an op's lane chosen by its
/// key: ops on one key run in order on one lane, ops on different keys — concurrent as
/// far as the client can tell, since it sent them without waiting — in parallel, so a
/// pipeline costs about its length divided by the lanes in rounds, not its length.
pub struct ShardedStore<R: Router> {
    lanes: Vec<ShardClerk>,
    router: Arc<R>,
    /// The ops running come from a command sent with ASKING (cluster mode).
    asking: bool,
}

impl<R: Router> ShardedStore<R> {
    /// The store of client `client` (its first lane; more are made with fresh ids when a
    /// batch needs them).
    pub fn new(client: ClientId, router: Arc<R>) -> ShardedStore<R> {
        ShardedStore {
            lanes: vec![ShardClerk::new(client, router.sharding())],
            router,
            asking: false,
        }
    }

    /// The router this store's clerks send through.
    pub fn router(&self) -> &Arc<R> {
        &self.router
    }

    /// Whether the batches that follow come from a command sent after ASKING (Redis
    /// Cluster mode): then an op its group refuses is waited for, never redirected.
    pub fn set_asking(&mut self, asking: bool) {
        self.asking = asking;
    }

    /// Runs one op at most once, retrying until [`RETRY_DEADLINE`].
    pub async fn execute(&mut self, op: Op) -> Result<Reply, Failure> {
        let redirects = self.router.redirects() && !self.asking;
        one(self.router.as_ref(), &mut self.lanes[0], op, redirects).await
    }

    /// Runs a batch's ops (see the type's docs); one op's reply for one op, else
    /// [`Reply::Batch`] of every op's reply in order, or the first op's failure.
    pub async fn execute_batch(&mut self, batch: Batch) -> Result<Reply, Failure> {
        let ops = batch.into_ops();
        if ops.len() == 1 {
            let op = ops.into_iter().next().expect("one op");
            return self.execute(op).await;
        }
        let lanes = ops.len().min(LANES_MAX);
        while self.lanes.len() < lanes {
            let clerk = ShardClerk::new(crate::native::random_client_id(), self.router.sharding());
            self.lanes.push(clerk);
        }
        let mut queues: Vec<Vec<(usize, Op)>> = vec![Vec::new(); lanes];
        for (i, op) in ops.into_iter().enumerate() {
            let lane = match op.key() {
                Some(key) => kv_engine::kv::slot_of(key) as usize ^ key.len(),
                None => op.shard(self.router.sharding()).0 as usize,
            } % lanes;
            queues[lane].push((i, op));
        }
        let router = self.router.as_ref();
        let redirects = router.redirects() && !self.asking;
        let runs = self
            .lanes
            .iter_mut()
            .zip(queues)
            .map(|(clerk, queue)| async move {
                let mut out = Vec::with_capacity(queue.len());
                for (i, op) in queue {
                    out.push((i, one(router, clerk, op, redirects).await));
                }
                out
            });
        let mut replies: Vec<(usize, Result<Reply, Failure>)> =
            futures_util::future::join_all(runs)
                .await
                .into_iter()
                .flatten()
                .collect();
        replies.sort_by_key(|(i, _)| *i);
        replies
            .into_iter()
            .map(|(_, reply)| reply)
            .collect::<Result<Vec<Reply>, Failure>>()
            .map(Reply::Batch)
    }
}

/// `step`, a request's first send to its group (the clerk tried none of its servers yet),
/// sent instead to the replica `router` believes leads the group if that is another. A
/// fresh clerk (a new RESP connection's) would start at the group's first server, which
/// may be an old leader that no longer answers; every such request then waited out
/// [`CALL_TIMEOUT`] there.
fn first_to_leader<R: Router>(router: &R, clerk: &mut ShardClerk, step: Step) -> Step {
    let Step::Send { to, .. } = &step else {
        return step;
    };
    let Some(config) = clerk.config().cloned() else {
        return step;
    };
    let group = config
        .groups()
        .iter()
        .find(|(_, servers)| servers.contains(to))
        .map(|(gid, _)| *gid);
    match group.and_then(|gid| router.leader(gid)) {
        Some(leader) if server_name(NodeId(leader)) != *to => {
            clerk.on_leader(&server_name(NodeId(leader)));
            clerk.on_config(config).unwrap_or(step)
        }
        _ => step,
    }
}

/// Runs one op through `clerk` to completion, or until [`RETRY_DEADLINE`]. With
/// `redirects` (cluster mode, not after ASKING) an op on a key refused by its group before
/// anything executed it may end as [`Reply::NotHeld`] instead, for the connection to
/// redirect ([`Router::redirect`]); a scan, which names a shard and no key, never is.
async fn one<R: Router>(
    router: &R,
    clerk: &mut ShardClerk,
    op: Op,
    redirects: bool,
) -> Result<Reply, Failure> {
    let started = Instant::now();
    let slot = op.key().map(|key| kv_engine::kv::slot_of(key));
    let redirects = redirects && slot.is_some();
    let slot = slot.unwrap_or_default();
    let shard = op.shard(router.sharding());
    // A send that got no answer may have executed the op: from then on only the same
    // request may be retried (never a redirect, which the client would re-send as a new
    // one).
    let mut uncertain = false;
    let mut arriving_since = None;
    let mut backoff = Duration::from_millis(5);
    // A request whose caller stopped waiting (an op cancelled at the caller's deadline,
    // mid-send) is never resumed: without this the clerk would refuse every later op as
    // busy. It may still execute, once at most; this one has a higher sequence number.
    clerk.abandon();
    let step = clerk
        .begin(op)
        .map_err(|e| Failure::Unavailable(e.to_string()))?;
    let mut step = first_to_leader(router, clerk, step);
    loop {
        if started.elapsed() >= RETRY_DEADLINE {
            clerk.abandon();
            return Err(Failure::Unavailable(
                "no group serving the key answered; retry".into(),
            ));
        }
        step = match step {
            Step::Send { to, request } => {
                let seq = request.seq;
                let (answer, leader) = match resolve(&to) {
                    Some(endpoint) => router.call(endpoint.0, ClusterRequest::Kv(request)).await,
                    None => (None, None),
                };
                if let Some(leader) = leader {
                    clerk.on_leader(&server_name(NodeId(leader)));
                }
                match answer {
                    Some(ClusterReply::Kv(reply)) => match clerk.on_reply(seq, reply) {
                        Ok(Some(reply)) => return Ok(reply),
                        Ok(None) => clerk.on_failure().unwrap_or(Step::Query),
                        Err(query) => {
                            let known = clerk.config().map(|c| c.num());
                            if redirects
                                && !uncertain
                                && router.redirect(known, slot, &mut arriving_since).await
                            {
                                clerk.abandon();
                                return Ok(Reply::NotHeld(shard));
                            }
                            query
                        }
                    },
                    _ => {
                        uncertain = true;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                        clerk.on_failure().unwrap_or(Step::Query)
                    }
                }
            }
            Step::Query => {
                let known = clerk.config().map(|c| c.num());
                match latest_config(router, known).await {
                    Some(config) => {
                        if known == Some(config.num()) {
                            // No group owns the shard (every group left): nothing will
                            // serve it until one joins, so the client hears it now.
                            let owner = config.owner(shard).unwrap_or(GroupId::NONE);
                            if owner == GroupId::NONE && !uncertain {
                                clerk.abandon();
                                return Err(Failure::Unserved);
                            }
                            // Nothing newer yet (a shard still arriving): wait a little.
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_millis(200));
                        }
                        let step = clerk.on_config(config).unwrap_or(Step::Query);
                        first_to_leader(router, clerk, step)
                    }
                    None => {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_millis(200));
                        Step::Query
                    }
                }
            }
        };
    }
}
