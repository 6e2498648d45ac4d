//! A node of a sharded cluster: one process hosting a replica (an *endpoint*) of every
//! group the cluster file places on it — the shard master's and any number of KV groups' —
//! over one peer listener, one RESP listener and one data directory.
//!
//! # Endpoints
//! Each replica is a [`ClusterNode`] with its own endpoint id ([`ClusterConfig::endpoints`]),
//! its own directory under the node's (`master/`, `group-<gid>/`) holding its snapshots.
//! One driver task per runtime thread runs them ([`crate::node::run_cores`]; with `kv node
//! --threads 1`, one for all): a step takes the inputs queued for every replica it runs
//! and makes all their writes durable with one fsync. Peers' messages travel between
//! processes in a [`Routed`] envelope naming both endpoints; a message between two
//! endpoints of the same process never leaves it. An envelope whose sender is not an
//! endpoint of the connection's node is dropped.
//!
//! # One log per node
//! Every replica of the node persists through one shared write-ahead log (`wal/` in the
//! node's directory; see [`kv_engine::shared`]) driven by one group-commit writer, so one
//! fdatasync makes the newest records of every group durable. With a log per group, the
//! node's fsyncs were split among its groups: on this project's machine 3 groups on the
//! same 3 nodes did less than half the puts of 1 group at 50 clients, and the same build
//! on tmpfs did not show the gap. Each replica still snapshots on its own schedule into its
//! own directory, and the log is compacted past what every replica's snapshot covers. A
//! group directory of the earlier layout (with a log of its own) is taken over on start.
//!
//! # Lost disks
//! Every endpoint directory is stamped with its endpoint id (`kv init` stamps them all).
//! A directory without its stamp has lost its disk: that replica starts in the lost-disk
//! rejoin mode and is stamped again once it is ready, as an unsharded node is. Its records
//! in the shared log belong to the directory's lost incarnation and are passed over. A stamp
//! naming another endpoint (a cluster file whose groups were reordered) is refused.
//!
//! # Clients
//! RESP takes any key: each connection has a sans-IO [`ShardClerk`], which routes every op
//! to the group that owns its shard in the newest configuration this node knows, starting
//! at the replica this node believes leads the group (see `routing`): its own replica of
//! the group (which forwards to the leader inside the group if it does not lead) or,
//! through a native connection, the leader's node. A group that answers "not
//! held", or none of whose replicas answers, makes the clerk ask the shard master for the
//! latest configuration (one query at a time per process, shared by every connection).
//! Every retry re-sends the same request, so each op executes at most once.
//!
//! # Redis Cluster mode
//! With `redis_cluster = true`, the node also tells cluster clients where each slot is
//! served ([`ClusterView`], see `impl ClusterView for Host`) and runs only the keys of
//! slots it masters, redirecting the others (`crate::redis_cluster`). It then refreshes
//! its configuration every [`CONFIG_REFRESH_INTERVAL`]; a node that does not answer its
//! status probes is never named a slot's master (see `routing`). An op its group
//! refuses ("not held") before executing it goes back to the client as a redirect if
//! another node now masters the slot (`-ASK`), or if the shard has been arriving at the
//! group this node leads for [`ARRIVAL_WAIT_MAX`] (`-TRYAGAIN`) — never once a send went
//! unanswered (the op may have executed; only the same request may be retried), and
//! never for a command sent after `ASKING`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv_engine::group::GroupCommit;
use kv_engine::kv::Sharding;
use kv_engine::shared::{SharedStore, StreamSpec};
use kv_engine::store::StoreOptions;
use kv_replication::cluster::{Blueprint, ClusterMsg, ClusterNode, ClusterReply, ClusterRequest};
use kv_replication::shardkv::ShardKvSettings;
use kv_replication::shardmaster::{ConfigNum, GroupId};
use kv_replication::types::{NodeId, Time};

use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{self, ClusterConfig, Endpoint, Role};
use crate::node::{self, Input, LeaderHint, PeerSender, Status};
use crate::redis::{self};
use crate::redis_cluster::{ClusterView, Route};
use crate::run::{
    log_shared_recovery, lost_disk, open_node, stamp_when_ready, NodeOptions, Opened,
};
use crate::transport::{self, Peers, Service};
use crate::wire::ClientReply;
use crate::{admin, replica};

mod client;
mod handoffs;
mod redis_mode;
mod routing;

pub use routing::PROBE_TIMEOUT;

use kv_client::sharded::{done, Remote};
pub use kv_client::sharded::{
    latest_config, master_call, ConfigCache, Outside, Routed, Router, ShardedFrame, ShardedStore,
    ToEndpoint, CALL_TIMEOUT, LANES_MAX, QUERY_INTERVAL_MIN,
};

type EndpointInput = Input<ClusterMsg, ClusterRequest, ClusterReply>;

/// The shared log's directory, inside the node's.
pub const SHARED_LOG_DIR: &str = "wal";

/// In Redis Cluster mode, how often a node asks the shard master for a newer
/// configuration on its own (besides whenever a group refuses a key), so that its slot map
/// follows moves no client of its own ran into.
pub const CONFIG_REFRESH_INTERVAL: Duration = Duration::from_millis(500);
/// How often a node asks each other node whether it answers, or tries to reconnect to
/// one it lost (see `Host::watch_nodes`).
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
    /// Each node's peer (and native client) address.
    addresses: Vec<SocketAddr>,
    /// Whether each node answered its last status probe (see `Host::watch_nodes`).
    up: Vec<std::sync::atomic::AtomicBool>,
    /// For groups this node does not host: the endpoint the last native reply from one of
    /// their replicas named as leader.
    remote_leaders: Mutex<BTreeMap<u64, u32>>,
    /// Redis Cluster mode: what clients are told about slots and nodes.
    cluster: Option<ClusterFacts>,
}

/// What a node in Redis Cluster mode knows besides its replicas (see [`Host::route`]).
struct ClusterFacts {
    cluster_id: u64,
    /// Each node's RESP and peer addresses.
    addresses: Vec<(SocketAddr, SocketAddr)>,
}

/// The [`Service`] of a sharded node's peer listener.
#[derive(Clone)]
pub struct HostService(pub Arc<Host>);

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

    fn leader(&self, gid: GroupId) -> Option<u32> {
        self.leader_endpoint(gid)
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
                    if let (Some(leader), Role::Group(gid)) = (leader, target.role) {
                        self.remote_leaders
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
                Role::Master => "master".to_string(),
                Role::Group(gid) => gid.to_string(),
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

/// How every endpoint of a real cluster is built from the cluster file.
pub fn blueprint(config: &ClusterConfig) -> Blueprint {
    let layout = config.endpoint_layout();
    let shards = config.shards().unwrap_or(1);
    Blueprint {
        master_config: replica::tuned(NodeId(0), layout.masters.len(), config.read_lease),
        kv_config: replica::tuned(NodeId(0), 1, config.read_lease),
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
    let key = config.key().map_err(|e| e.to_string())?;
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
    // And against a shard count edited in the cluster file, before anything is opened.
    if let Some(shards) = config.shards() {
        config::check_shards(&dir, shards).map_err(|e| e.to_string())?;
    }
    let endpoints = config.endpoints();
    let hosted: Vec<Endpoint> = endpoints.iter().copied().filter(|e| e.node == id).collect();
    let blueprint = blueprint(&config);

    // Open the node's shared log with every hosted replica's stream, and rebuild each
    // replica's core, before anything runs.
    let mut specs = Vec::new();
    let mut lost = Vec::new();
    for endpoint in &hosted {
        let edir = config.endpoint_dir(endpoint);
        std::fs::create_dir_all(&edir).map_err(|e| format!("{}: {e}", edir.display()))?;
        lost.push(lost_disk(&edir, config.cluster_id, endpoint.id)?);
        specs.push(StreamSpec {
            dir: edir,
            new_incarnation: kv_client::native::random_client_id().0,
        });
    }
    let wal_dir = dir.join(SHARED_LOG_DIR);
    let (shared, recovered) = SharedStore::open(
        options.fs.clone(),
        &wal_dir,
        &specs,
        StoreOptions::default(),
    )
    .map_err(|e| format!("opening {}: {e}", wal_dir.display()))?;
    log_shared_recovery(id, shared.report());
    let mut cores = Vec::new();
    for (((endpoint, spec), recovered), wiped) in hosted.iter().zip(specs).zip(recovered).zip(lost)
    {
        let seed = replica::kv_engine_seed(config.cluster_id, endpoint.id);
        let core = blueprint
            .recover(NodeId(endpoint.id), recovered, wiped, seed, Time::ZERO)
            .map_err(|e| format!("recovering {}: {e}", spec.dir.display()))?;
        cores.push((*endpoint, spec.dir, core, wiped));
    }
    let commit = GroupCommit::start(shared, options.driver.group);

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
    });
    let host = Arc::new(Host {
        node: id,
        nodes: config.nodes.len(),
        endpoints,
        local,
        peers: transport::connect_peers(key.clone(), id, &addresses, shutdown.clone()),
        remote: Remote::new(key.clone(), addresses.clone()),
        sharding: blueprint.sharding,
        cache: ConfigCache::new(),
        up: addresses
            .iter()
            .map(|_| std::sync::atomic::AtomicBool::new(true))
            .collect(),
        addresses,
        remote_leaders: Mutex::new(BTreeMap::new()),
        cluster,
    });

    // One driver per runtime thread, each running its share of the replicas (see
    // `node::run_cores`; on one thread, one driver for all), on a stop signal the node's
    // other tasks share: the node stops as a whole when asked to or when its storage fails.
    let (stop_tx, stop_rx) = watch::channel(false);
    let drivers_max = tokio::runtime::Handle::current().metrics().num_workers();
    let mut shares: Vec<Vec<node::Hosted<ClusterNode, EndpointSender>>> = Vec::new();
    for (stream, ((endpoint, edir, core, wiped), inputs)) in
        cores.into_iter().zip(receivers).enumerate()
    {
        let hosted = node::Hosted {
            core,
            log: commit.stream(stream),
            peers: EndpointSender {
                me: endpoint.id,
                host: host.clone(),
            },
            inputs,
            leader: host.local[&endpoint.id].leader.clone(),
            on_ready: stamp_when_ready(wiped, edir, config.cluster_id, endpoint.id),
        };
        match shares.get_mut(stream % drivers_max.max(1)) {
            Some(share) => share.push(hosted),
            None => shares.push(vec![hosted]),
        }
    }
    let mut drivers = tokio::task::JoinSet::new();
    for share in shares {
        drivers.spawn(node::run_cores(
            share,
            stop_rx.clone(),
            options.driver.clone(),
        ));
    }

    tokio::spawn(host.clone().time_handoffs(stop_rx.clone()));
    tokio::spawn(host.clone().watch_nodes(stop_rx.clone()));
    if host.cluster.is_some() {
        tokio::spawn(host.clone().refresh_config(stop_rx.clone()));
    }
    let service = HostService(host.clone());
    tokio::spawn(transport::serve(
        peer_listener,
        key,
        id,
        service.clone(),
        budget,
        stop_rx.clone(),
    ));
    let resp_host = host.clone();
    tokio::spawn(redis::serve(
        resp_listener,
        move |client| ShardedStore::new(client, resp_host.clone()),
        redis::Access::of(&config),
        stop_rx.clone(),
        budget.resp,
    ));
    tokio::spawn(admin::serve(
        admin_listener,
        id,
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
                let outcome = done.map_err(|e| format!("a replicas' driver failed: {e}")).and_then(|r| r);
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
    // Everything queued is written before another process may take the directory.
    drop(commit);
    drop(lock);
    result
}
