//! Redis Cluster mode on a sharded node: which node masters each slot, the topology
//! clients see, and the node's watches that keep both current (see the module docs of
//! [`super`]).

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use kv_engine::kv::ShardId;
use kv_replication::shardmaster::{Config, GroupId};
use tokio::sync::watch;

use crate::config::{Endpoint, Role};
use crate::redis_cluster::{self, ClusterView, NodeView, Route, SlotRange, Topology};

use super::*;

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
    pub(super) async fn refresh_config(self: Arc<Host>, mut stop: watch::Receiver<bool>) {
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
    pub(super) async fn watch_nodes(self: Arc<Host>, stop: watch::Receiver<bool>) {
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
            match tokio::time::timeout(PROBE_INTERVAL, self.remote.connect(node as u32, peer)).await
            {
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
