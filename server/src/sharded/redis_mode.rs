//! Redis Cluster mode on a sharded node: which node masters each slot, the topology
//! clients see, and the node's watches that keep both current (see the module docs of
//! [`super`]).

use std::sync::Arc;

use kv_engine::kv::ShardId;
use kv_replication::shardmaster::{Config, GroupId};
use tokio::sync::watch;

use crate::config::Role;
use crate::redis_cluster::{self, ClusterView, NodeView, Route, SlotRange, Topology};

use super::*;

/// Redis Cluster mode: slot routing and the topology clients see.
///
/// A slot's *master* is the node that leads the group owning its shard in the newest
/// configuration this node knows, as [`Host::leader_endpoint`] finds it (a node that does
/// not answer is never named).
///
/// A node *serves* a key exactly when it is its slot's master in its own map; any other
/// node answers `-MOVED` naming the master (a node with a stale leader hint or map may
/// send a client one hop further; the master it names answers the same way). Serving
/// means running the command through the node's shard clerk, as every node does outside
/// cluster mode, so a command served by a node whose map was stale still completes.
impl Host {
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
                let master = self.leader_node(gid);
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
                up: self.is_up(node as u32),
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
            let master = self.leader_node(gid) as usize;
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
