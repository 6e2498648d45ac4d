//! A node of a sharded cluster: one process hosting a replica (an *endpoint*) of every
//! group the cluster file places on it — the shard master's and any number of KV groups' —
//! over one peer listener, one RESP listener and one data directory.
//!
//! # Endpoints
//! Each replica is a [`ClusterNode`] with its own endpoint id ([`ClusterConfig::endpoints`]),
//! its own store in its own directory under the node's (`master/`, `group-<gid>/`), and
//! its own driver task ([`crate::node::run_core`]: its own group-commit writer, so one
//! group's fsyncs never wait behind another's, and compaction is per group by
//! construction). Peers' messages travel between processes in a [`Routed`] envelope naming
//! both endpoints; a message between two endpoints of the same process never leaves it.
//! An envelope whose sender is not an endpoint of the connection's node is dropped.
//!
//! Why one WAL per group rather than one shared WAL: the engine's store, snapshots and
//! lost-disk rebuild are per replica already, so each group compacts, snapshots and
//! rebuilds on its own schedule with no cross-group bookkeeping, and a wiped group
//! directory is exactly one replica's lost disk. What it costs is one fsync stream per
//! group; group commit batches within each, and on one disk the fsyncs of different groups
//! proceed concurrently.
//!
//! # Lost disks
//! Every endpoint directory is stamped with its endpoint id (`kv init` stamps them all).
//! A directory without its stamp has lost its disk: that replica starts in the lost-disk
//! rejoin mode and is stamped again once it is ready, as an unsharded node is. A stamp
//! naming another endpoint (a cluster file whose groups were reordered) is refused.
//!
//! # Clients
//! RESP takes any key: each connection has a sans-IO [`ShardClerk`], which routes every op
//! to the group that owns its shard in the newest configuration this node knows, through
//! the local replica of that group when there is one (which forwards to its leader inside
//! the group) or a native connection to a node that hosts one. A group that answers "not
//! held", or none of whose replicas answers, makes the clerk ask the shard master for the
//! latest configuration (one query at a time per process, shared by every connection).
//! Every retry re-sends the same request, so each op executes at most once.
//!
//! # Redis Cluster mode
//! With `redis_cluster = true`, the node also tells cluster clients where each slot is
//! served ([`ClusterView`], see `impl ClusterView for Host`) and runs only the keys of
//! slots it masters, redirecting the others (`crate::redis_cluster`). It then refreshes
//! its configuration every [`CONFIG_REFRESH_INTERVAL`] and holds a connection to every
//! other node, whose closing tells it at once that the node is down. An op its group
//! refuses ("not held") before executing it goes back to the client as a redirect if
//! another node now masters the slot (`-ASK`), or if the shard has been arriving at the
//! group this node leads for [`ARRIVAL_WAIT_MAX`] (`-TRYAGAIN`) — never once a send went
//! unanswered (the op may have executed; only the same request may be retried), and
//! never for a command sent after `ASKING`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use kv_engine::kv::{Op, Reply, ShardId, Sharding};
use kv_replication::cluster::{
    resolve, server_name, Blueprint, ClusterMsg, ClusterNode, ClusterReply, ClusterRequest,
};
use kv_replication::kvgroup::Batch;
use kv_replication::shardkv::{ShardClerk, ShardKvSettings, Step};
use kv_replication::shardmaster::{self, Config, ConfigNum, GroupId};
use kv_replication::types::{ClientId, NodeId, Time};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::config::{self, ClusterConfig, Endpoint, Role};
use crate::node::{self, DriverOptions, Input, LeaderHint, PeerSender, Status};
use crate::redis::{self, Failure, RETRY_DEADLINE};
use crate::redis_cluster::{self, ClusterView, NodeView, Route, SlotRange, Topology};
use crate::run::{open_node, open_replica, stamp_when_ready, NodeOptions, Opened};
use crate::transport::{self, Peers, Service};
use crate::wire::{self, ClientReply, Frame};
use crate::{admin, replica};

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
type EndpointInput = Input<ClusterMsg, ClusterRequest, ClusterReply>;

/// How long one call to a replica may take before the caller tries another (a replica cut
/// off from its group never answers; a maximum-size value takes about a second).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Shortest time between two shard-master queries of one process: callers within it share
/// the last answer.
pub const QUERY_INTERVAL_MIN: Duration = Duration::from_millis(50);

/// In Redis Cluster mode, how often a node asks the shard master for a newer
/// configuration on its own (besides whenever a group refuses a key), so that its slot map
/// follows moves no client of its own ran into.
pub const CONFIG_REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// In Redis Cluster mode, how often a node tries to reconnect to another node it lost
/// (see `Host::watch_nodes`), and how long a connect may take.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// In Redis Cluster mode, how long an op waits for a shard arriving at the group this
/// node leads before the client is told `-TRYAGAIN`.
pub const ARRIVAL_WAIT_MAX: Duration = Duration::from_secs(5);

/// A replica this process hosts.
struct Local {
    endpoint: Endpoint,
    inputs: mpsc::Sender<EndpointInput>,
    leader: LeaderHint,
}

/// What every task of a sharded node shares.
pub struct Host {
    node: u32,
    nodes: usize,
    endpoints: Vec<Endpoint>,
    local: BTreeMap<u32, Local>,
    peers: Peers<Routed<ClusterMsg>>,
    remote: Remote,
    sharding: Sharding,
    cache: ConfigCache,
    /// Redis Cluster mode: what clients are told about slots and nodes.
    cluster: Option<ClusterFacts>,
}

/// What a node in Redis Cluster mode knows besides its replicas (see [`Host::route`]).
struct ClusterFacts {
    cluster_id: u64,
    /// Each node's RESP and peer addresses.
    addresses: Vec<(SocketAddr, SocketAddr)>,
    /// Whether each node is reachable (see `Host::watch_nodes`).
    up: Vec<std::sync::atomic::AtomicBool>,
    /// For groups this node does not host: the endpoint the last native reply from one of
    /// their replicas named as leader.
    remote_leaders: Mutex<BTreeMap<u64, u32>>,
}

/// The [`Service`] of a sharded node's peer listener.
#[derive(Clone)]
pub struct HostService(pub Arc<Host>);

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
    published: std::sync::RwLock<Option<Arc<Config>>>,
    client: ClientId,
    seq: std::sync::atomic::AtomicU64,
}

impl ConfigCache {
    fn new() -> ConfigCache {
        ConfigCache {
            state: tokio::sync::Mutex::new((None, None)),
            published: std::sync::RwLock::new(None),
            client: crate::client::random_client_id(),
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

impl Router for Host {
    fn redirects(&self) -> bool {
        self.cluster.is_some()
    }

    /// Cluster mode: after learning the newest configuration, yes if another node masters
    /// the slot now (the shard moved away: `-ASK`), or if this node does but the shard has
    /// been arriving for [`ARRIVAL_WAIT_MAX`] (`-TRYAGAIN`); else the op waits for the
    /// shard here.
    async fn redirect(
        &self,
        known: Option<ConfigNum>,
        slot: u16,
        arriving_since: &mut Option<Instant>,
    ) -> bool {
        latest_config(self, known).await;
        match self.route(slot) {
            Route::Elsewhere(_) => true,
            Route::Serve => {
                arriving_since.get_or_insert_with(Instant::now).elapsed() >= ARRIVAL_WAIT_MAX
            }
            Route::Unserved => false,
        }
    }

    fn masters(&self) -> Vec<u32> {
        // This process's own master replica first: no network hop.
        let masters = self.endpoints.iter().filter(|e| e.role == Role::Master);
        let (mut order, others): (Vec<u32>, Vec<u32>) = masters
            .map(|e| e.id)
            .partition(|e| self.local.contains_key(e));
        order.extend(others);
        order
    }

    fn cache(&self) -> &ConfigCache {
        &self.cache
    }

    fn sharding(&self) -> Sharding {
        self.sharding
    }

    async fn call(
        &self,
        endpoint: u32,
        request: ClusterRequest,
    ) -> (Option<ClusterReply>, Option<u32>) {
        let Some(target) = self.endpoints.get(endpoint as usize) else {
            return (None, None);
        };
        let call = async {
            match self.local.get(&endpoint) {
                Some(local) => (ask(&local.inputs, request).await.0, local.leader.get()),
                None => {
                    let to = ToEndpoint {
                        to: endpoint,
                        request,
                    };
                    let (reply, leader) = self.remote.call(target.node, to).await;
                    if let (Some(facts), Some(leader), Role::Group(gid)) =
                        (&self.cluster, leader, target.role)
                    {
                        facts
                            .remote_leaders
                            .lock()
                            .expect("leaders lock")
                            .insert(gid, leader);
                    }
                    (reply, leader)
                }
            }
        };
        done(tokio::time::timeout(CALL_TIMEOUT, call).await)
    }
}

impl Host {
    /// Every hosted replica's status, labelled by what it replicates.
    pub async fn parts(&self) -> Option<Vec<(String, Status)>> {
        let mut parts = Vec::new();
        for local in self.local.values() {
            let (tx, rx) = oneshot::channel();
            local.inputs.send(Input::Status(tx)).await.ok()?;
            let status = rx.await.ok()?;
            let label = match local.endpoint.role {
                Role::Master => "group=\"master\"".to_string(),
                Role::Group(gid) => format!("group=\"{gid}\""),
            };
            parts.push((label, status));
        }
        Some(parts)
    }

    /// The node's parts' status as text: a `[master]` or `[group G]` heading, then the
    /// part's `key: value` lines.
    async fn render_status(&self) -> String {
        let Some(parts) = self.parts().await else {
            return String::new();
        };
        let mut out = String::new();
        for ((_, status), local) in parts.iter().zip(self.local.values()) {
            let heading = match local.endpoint.role {
                Role::Master => "[master]".to_string(),
                Role::Group(gid) => format!("[group {gid}]"),
            };
            out.push_str(&format!(
                "{heading}\nendpoint: {}\nmember: {}\n{}\n",
                local.endpoint.id,
                local.endpoint.member,
                status.render()
            ));
        }
        out
    }
}

/// Redis Cluster mode: slot routing and the topology clients see.
///
/// A slot's *master* is the node that leads the group owning its shard in the newest
/// configuration this node knows: the node of the leader its own replica of the group
/// names (or, for a group it does not host, the last native reply from one of the group's
/// replicas named) — unless that node is down (its watch connection closed) or no
/// leader is known: then this node if it hosts the group (it routes inside the cluster,
/// and its replica finds or becomes the new leader), else the first reachable node
/// hosting the group.
///
/// A node *serves* a key exactly when it is its slot's master in its own map; any other
/// node answers `-MOVED` naming the master (a node with a stale leader hint or map may
/// send a client one hop further; the master it names answers the same way). Serving
/// means running the command through the node's shard clerk, as every node does outside
/// cluster mode, so a command served by a node whose map was stale still completes.
impl Host {
    /// The node that masters group `gid`'s slots (see the impl docs).
    fn master_of(&self, facts: &ClusterFacts, gid: GroupId) -> u32 {
        let up = |node: u32| {
            node == self.node
                || facts
                    .up
                    .get(node as usize)
                    .is_some_and(|u| u.load(std::sync::atomic::Ordering::Relaxed))
        };
        let hosting: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.role == Role::Group(gid.0))
            .collect();
        let hint = hosting
            .iter()
            .find_map(|e| self.local.get(&e.id).and_then(|l| l.leader.get()))
            .or_else(|| {
                let leaders = facts.remote_leaders.lock().expect("leaders lock");
                leaders.get(&gid.0).copied()
            });
        if let Some(leader) = hint.and_then(|l| self.endpoints.get(l as usize)) {
            if leader.role == Role::Group(gid.0) && up(leader.node) {
                return leader.node;
            }
        }
        if hosting.iter().any(|e| e.node == self.node) {
            return self.node;
        }
        hosting
            .iter()
            .map(|e| e.node)
            .find(|&n| up(n))
            .or(hosting.first().map(|e| e.node))
            .unwrap_or(self.node)
    }

    fn published(&self) -> Option<Arc<Config>> {
        self.cache.published.read().expect("config lock").clone()
    }

    /// Asks the shard master for a newer configuration every [`CONFIG_REFRESH_INTERVAL`].
    async fn refresh_config(self: Arc<Host>, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            let known = self.published().map(|c| c.num());
            latest_config(self.as_ref(), known).await;
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(CONFIG_REFRESH_INTERVAL) => {}
            }
        }
    }

    /// Watches every other node: a native connection held open to each tells at once,
    /// by closing, that its process is gone (a reconnect is tried every
    /// [`PROBE_INTERVAL`]). Clients must not be sent to a dead master: a cluster client
    /// retries a failed connection only a few times, without waiting in between.
    async fn watch_nodes(self: Arc<Host>, stop: watch::Receiver<bool>) {
        let Some(facts) = &self.cluster else { return };
        let mut watches = tokio::task::JoinSet::new();
        for (node, &(_, peer)) in facts.addresses.iter().enumerate() {
            if node as u32 != self.node {
                watches.spawn(self.clone().watch_node(node, peer, stop.clone()));
            }
        }
        while watches.join_next().await.is_some() {}
    }

    async fn watch_node(
        self: Arc<Host>,
        node: usize,
        peer: SocketAddr,
        mut stop: watch::Receiver<bool>,
    ) {
        let Some(facts) = &self.cluster else { return };
        let up = |value: bool| facts.up[node].store(value, std::sync::atomic::Ordering::Relaxed);
        while !*stop.borrow() {
            match tokio::time::timeout(PROBE_INTERVAL, self.remote.connect(peer)).await {
                Ok(Ok(mut framed)) => {
                    up(true);
                    // Nothing is ever sent on it: it ends when the node does.
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = framed.next() => {}
                    }
                    up(false);
                }
                _ => up(false),
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
    }
}

impl ClusterView for Host {
    fn route(&self, slot: u16) -> Route {
        let (Some(facts), Some(config)) = (&self.cluster, self.published()) else {
            // No configuration yet: take the key and route it inside the cluster.
            return Route::Serve;
        };
        match config.owner(self.sharding.shard_of_slot(slot)) {
            None | Some(GroupId::NONE) => Route::Unserved,
            Some(gid) => {
                let master = self.master_of(facts, gid);
                if master == self.node {
                    Route::Serve
                } else {
                    Route::Elsewhere(facts.addresses[master as usize].0)
                }
            }
        }
    }

    fn topology(&self) -> Topology {
        let facts = self.cluster.as_ref().expect("cluster mode");
        let nodes = facts
            .addresses
            .iter()
            .enumerate()
            .map(|(node, &(resp, bus))| NodeView {
                name: redis_cluster::node_name(facts.cluster_id, node as u32),
                resp,
                bus,
                up: node as u32 == self.node
                    || facts.up[node].load(std::sync::atomic::Ordering::Relaxed),
            })
            .collect();
        let config = self.published();
        let mut ranges: Vec<SlotRange> = Vec::new();
        let shards = config.as_ref().map_or(&[][..], |c| c.shards());
        for (shard, &gid) in shards.iter().enumerate() {
            let Some((first, last)) = self.sharding.slots_of(ShardId(shard as u32)) else {
                continue;
            };
            if gid == GroupId::NONE {
                continue;
            }
            let master = self.master_of(facts, gid) as usize;
            let mut replicas: Vec<usize> = self
                .endpoints
                .iter()
                .filter(|e| e.role == Role::Group(gid.0) && e.node as usize != master)
                .map(|e| e.node as usize)
                .collect();
            replicas.dedup();
            match ranges.last_mut() {
                Some(run)
                    if run.master == master
                        && run.replicas == replicas
                        && run.last + 1 == first =>
                {
                    run.last = last;
                }
                _ => ranges.push(SlotRange {
                    first,
                    last,
                    master,
                    replicas,
                }),
            }
        }
        Topology {
            me: self.node as usize,
            nodes,
            ranges,
            epoch: config.map_or(0, |c| c.num().0),
        }
    }
}

/// Sends `request` to a local core and waits for its answer and leader hint.
async fn ask(
    inputs: &mpsc::Sender<EndpointInput>,
    request: ClusterRequest,
) -> (ClientReply<ClusterReply>, ()) {
    let (tx, rx) = oneshot::channel();
    let reply = match inputs.send(Input::Client { request, reply: tx }).await {
        Ok(()) => rx
            .await
            .unwrap_or_else(|_| ClientReply::Unavailable("node stopping".into())),
        Err(_) => ClientReply::Unavailable("node stopping".into()),
    };
    (reply, ())
}

impl Service for HostService {
    type Msg = Routed<ClusterMsg>;
    type Request = ToEndpoint<ClusterRequest>;
    type Reply = ClusterReply;

    fn nodes(&self) -> usize {
        self.0.nodes
    }

    async fn deliver(&self, from: NodeId, msg: Routed<ClusterMsg>) -> bool {
        let host = &self.0;
        let sender_ok = host
            .endpoints
            .get(msg.from as usize)
            .is_some_and(|e| e.node == from.0);
        match host.local.get(&msg.to) {
            Some(local) if sender_ok => {
                let input = Input::Peer {
                    from: NodeId(msg.from),
                    msg: msg.body,
                };
                local.inputs.send(input).await.is_ok()
            }
            // Misaddressed or forged: dropped, as the network would lose it.
            _ => true,
        }
    }

    async fn request(
        &self,
        request: ToEndpoint<ClusterRequest>,
    ) -> (ClientReply<ClusterReply>, Option<u32>) {
        match self.0.local.get(&request.to) {
            Some(local) => {
                let (reply, ()) = ask(&local.inputs, request.request).await;
                (reply, local.leader.get())
            }
            None => (
                ClientReply::Unavailable(format!(
                    "endpoint {} is not on node {}",
                    request.to, self.0.node
                )),
                None,
            ),
        }
    }

    async fn status(&self) -> String {
        self.0.render_status().await
    }
}

impl admin::StatusSource for HostService {
    async fn parts(&self) -> Option<Vec<(String, Status)>> {
        self.0.parts().await
    }
}

/// Where one endpoint's outgoing messages go: to an endpoint of this process directly,
/// else to its node in an envelope.
struct EndpointSender {
    me: u32,
    host: Arc<Host>,
}

impl PeerSender<ClusterMsg> for EndpointSender {
    fn send(&self, to: NodeId, msg: ClusterMsg) -> bool {
        let Some(target) = self.host.endpoints.get(to.index()) else {
            return false;
        };
        if target.node == self.host.node {
            let Some(local) = self.host.local.get(&to.0) else {
                return false;
            };
            let input = Input::Peer {
                from: NodeId(self.me),
                msg,
            };
            return local.inputs.try_send(input).is_ok();
        }
        let routed = Routed {
            from: self.me,
            to: to.0,
            body: msg,
        };
        self.host.peers.send(NodeId(target.node), routed)
    }
}

/// Native connections to other nodes, for calls to endpoints this process does not host:
/// a small pool per node, each connection carrying one call at a time.
struct Remote {
    cluster_id: u64,
    addresses: Vec<SocketAddr>,
    pools: Vec<Mutex<Vec<Framed<TcpStream, LengthDelimitedCodec>>>>,
}

/// Idle connections kept per node.
const REMOTE_POOL_MAX: usize = 256;

impl Remote {
    fn new(cluster_id: u64, addresses: Vec<SocketAddr>) -> Remote {
        let pools = addresses.iter().map(|_| Mutex::new(Vec::new())).collect();
        Remote {
            cluster_id,
            addresses,
            pools,
        }
    }

    async fn call(
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
            None => match self.connect(addr).await {
                Ok(framed) => framed,
                Err(e) => return unavailable(format!("node {node} at {addr}: {e}")),
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

    async fn connect(
        &self,
        addr: SocketAddr,
    ) -> std::io::Result<Framed<TcpStream, LengthDelimitedCodec>> {
        let stream = TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        let mut framed = Framed::new(stream, wire::codec());
        let hello: ShardedFrame = Frame::ClientHello {
            cluster_id: self.cluster_id,
        };
        let bytes = wire::encode(&hello).map_err(std::io::Error::other)?;
        framed.send(bytes).await?;
        Ok(framed)
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
    /// A router to the sharded cluster `config`.
    pub fn new(config: &ClusterConfig) -> Outside {
        Outside {
            remote: Remote::new(
                config.cluster_id,
                config.nodes.iter().map(|n| n.peer).collect(),
            ),
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
fn done<E>(
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
    let remote = Remote::new(
        config.cluster_id,
        config.nodes.iter().map(|n| n.peer).collect(),
    );
    let request = shardmaster::Request {
        client: crate::client::random_client_id(),
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
pub struct ShardedStore<R: Router = Host> {
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
            let clerk = ShardClerk::new(crate::client::random_client_id(), self.router.sharding());
            self.lanes.push(clerk);
        }
        let mut queues: Vec<Vec<(usize, Op)>> = vec![Vec::new(); lanes];
        for (i, op) in ops.into_iter().enumerate() {
            let lane = (kv_engine::kv::slot_of(op.key()) as usize ^ op.key().len()) % lanes;
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

/// Runs one op through `clerk` to completion, or until [`RETRY_DEADLINE`]. With
/// `redirects` (cluster mode, not after ASKING) an op refused by its group before anything
/// executed it may end as [`Reply::NotHeld`] instead, for the connection to redirect
/// ([`Router::redirect`]).
async fn one<R: Router>(
    router: &R,
    clerk: &mut ShardClerk,
    op: Op,
    redirects: bool,
) -> Result<Reply, Failure> {
    let started = Instant::now();
    let slot = kv_engine::kv::slot_of(op.key());
    let shard = op.shard(router.sharding());
    // A send that got no answer may have executed the op: from then on only the same
    // request may be retried (never a redirect, which the client would re-send as a new
    // one).
    let mut uncertain = false;
    let mut arriving_since = None;
    let mut backoff = Duration::from_millis(5);
    let mut step = clerk
        .begin(op)
        .map_err(|e| Failure::Unavailable(e.to_string()))?;
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
                            // Nothing newer yet (a shard still arriving): wait a little.
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_millis(200));
                        }
                        clerk.on_config(config).unwrap_or(Step::Query)
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

impl redis::Store for ShardedStore<Host> {
    fn cluster(&self) -> Option<&dyn ClusterView> {
        self.router
            .cluster
            .as_ref()
            .map(|_| &*self.router as &dyn ClusterView)
    }

    fn set_asking(&mut self, asking: bool) {
        self.asking = asking;
    }

    async fn run(&mut self, batch: Batch) -> Result<Reply, Failure> {
        self.execute_batch(batch).await
    }

    async fn status(&self) -> Option<Status> {
        let parts = self.router.parts().await?;
        let mut merged = Status {
            ready: parts.iter().all(|(_, s)| s.ready),
            ..Status::default()
        };
        let mut keys = 0u64;
        for (label, status) in &parts {
            if label != "group=\"master\"" {
                keys += status
                    .core
                    .iter()
                    .find(|(name, _)| *name == "keys")
                    .and_then(|(_, v)| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
            merged.wal_bytes += status.wal_bytes;
            merged.snapshot_bytes += status.snapshot_bytes;
        }
        merged.core.push(("keys", keys.to_string()));
        Some(merged)
    }
}

/// How every endpoint of a real cluster is built from the cluster file.
pub fn blueprint(config: &ClusterConfig) -> Blueprint {
    let layout = config.endpoint_layout();
    let shards = config.shards().unwrap_or(1);
    Blueprint {
        master_config: replica::tuned(NodeId(0), layout.masters.len()),
        kv_config: replica::tuned(NodeId(0), 1),
        settings: ShardKvSettings::default(),
        sharding: Sharding::Slots { shards },
        initial_joins: config
            .master
            .iter()
            .flat_map(|m| m.initial_groups.iter())
            .map(|&gid| (GroupId(gid), config.servers(gid)))
            .collect(),
        layout,
    }
}

/// Runs node `id` of the sharded cluster `config` until `shutdown`.
pub async fn run(
    config: ClusterConfig,
    id: u32,
    shutdown: watch::Receiver<bool>,
    options: NodeOptions,
) -> Result<(), String> {
    let Opened {
        me,
        dir,
        lock,
        budget,
        peer_listener,
        resp_listener,
        admin_listener,
    } = open_node(&config, id).await?;
    // The node's own stamp guards against another cluster's or node's directory.
    if !config::check_stamp(&dir, config.cluster_id, id).map_err(|e| e.to_string())? {
        config::write_stamp(&dir, config.cluster_id, id).map_err(|e| e.to_string())?;
    }
    let endpoints = config.endpoints();
    let hosted: Vec<Endpoint> = endpoints.iter().copied().filter(|e| e.node == id).collect();
    let blueprint = blueprint(&config);

    // Open every hosted replica's store and rebuild its core before anything runs.
    let mut cores = Vec::new();
    for endpoint in &hosted {
        let edir = config.endpoint_dir(endpoint);
        std::fs::create_dir_all(&edir).map_err(|e| format!("{}: {e}", edir.display()))?;
        let (store, recovered, wiped) =
            open_replica(&options, &edir, config.cluster_id, endpoint.id)?;
        let seed = replica::kv_engine_seed(config.cluster_id, endpoint.id);
        let core = blueprint
            .recover(NodeId(endpoint.id), recovered, wiped, seed, Time::ZERO)
            .map_err(|e| format!("recovering {}: {e}", edir.display()))?;
        cores.push((*endpoint, edir, store, core, wiped));
    }

    let mut local = BTreeMap::new();
    let mut receivers = Vec::new();
    for (endpoint, ..) in &cores {
        let (tx, rx) = mpsc::channel(options.driver.inputs_max);
        local.insert(
            endpoint.id,
            Local {
                endpoint: *endpoint,
                inputs: tx,
                leader: LeaderHint::default(),
            },
        );
        receivers.push(rx);
    }
    let addresses: Vec<SocketAddr> = config.nodes.iter().map(|n| n.peer).collect();
    let cluster = config.redis_cluster.then(|| ClusterFacts {
        cluster_id: config.cluster_id,
        addresses: config.nodes.iter().map(|n| (n.resp, n.peer)).collect(),
        up: config
            .nodes
            .iter()
            .map(|_| std::sync::atomic::AtomicBool::new(true))
            .collect(),
        remote_leaders: Mutex::new(BTreeMap::new()),
    });
    let host = Arc::new(Host {
        node: id,
        nodes: config.nodes.len(),
        endpoints,
        local,
        peers: transport::connect_peers(config.cluster_id, id, &addresses, shutdown.clone()),
        remote: Remote::new(config.cluster_id, addresses),
        sharding: blueprint.sharding,
        cache: ConfigCache::new(),
        cluster,
    });

    // Every replica's driver, on a shared stop signal: the node stops as a whole when
    // asked to or when any replica's storage fails.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut drivers = tokio::task::JoinSet::new();
    for ((endpoint, edir, store, core, wiped), rx) in cores.into_iter().zip(receivers) {
        let sender = EndpointSender {
            me: endpoint.id,
            host: host.clone(),
        };
        let driver = DriverOptions {
            leader: host.local[&endpoint.id].leader.clone(),
            ..options.driver.clone()
        };
        let on_ready = stamp_when_ready(wiped, edir, config.cluster_id, endpoint.id);
        let stop = stop_rx.clone();
        drivers.spawn(async move {
            node::run_core::<ClusterNode, _>(core, store, sender, rx, stop, driver, on_ready).await
        });
    }

    if host.cluster.is_some() {
        tokio::spawn(host.clone().refresh_config(stop_rx.clone()));
        tokio::spawn(host.clone().watch_nodes(stop_rx.clone()));
    }
    let service = HostService(host.clone());
    tokio::spawn(transport::serve(
        peer_listener,
        config.cluster_id,
        service.clone(),
        budget,
        stop_rx.clone(),
    ));
    let resp_host = host.clone();
    tokio::spawn(redis::serve(
        resp_listener,
        move |client| ShardedStore::new(client, resp_host.clone()),
        stop_rx.clone(),
        budget.resp,
    ));
    tokio::spawn(admin::serve(
        admin_listener,
        service,
        stop_rx.clone(),
        budget.admin,
    ));
    tracing::info!(
        node = id,
        peer = %me.peer,
        resp = %me.resp,
        admin = %me.admin,
        replicas = hosted.len(),
        "sharded node started"
    );

    let mut shutdown = shutdown;
    let mut result = Ok(());
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    let _ = stop_tx.send(true);
                }
            }
            done = drivers.join_next() => {
                let Some(done) = done else { break };
                let outcome = done.map_err(|e| format!("a replica's driver failed: {e}")).and_then(|r| r);
                if let Err(reason) = outcome {
                    if result.is_ok() {
                        result = Err(reason);
                    }
                }
                let _ = stop_tx.send(true);
            }
        }
    }
    drop(host);
    drop(lock);
    result
}
