//! Runs the Paxos-replicated KV group core ([`kv_replication::kvgroup::Replica`]) under the
//! production driver (the replica is a [`crate::node::Core`] as it is a
//! [`kv_replication::node::Node`]).

use kv_engine::kv::KvState;
use kv_replication::kvgroup::{Replica, ReplicaConfig};
use kv_replication::types::{NodeId, Time};
use tokio::sync::watch;

use crate::config::ClusterConfig;
use crate::run::{run_node, NodeOptions, Start};

/// Runs node `id` of `config` as a replica of the KV group until `shutdown`.
pub async fn run(
    config: ClusterConfig,
    id: u32,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    run_with(config, id, shutdown, NodeOptions::default()).await
}

/// [`run`] with the node's options (a simulated disk, in tests).
pub async fn run_with(
    config: ClusterConfig,
    id: u32,
    shutdown: watch::Receiver<bool>,
    options: NodeOptions,
) -> Result<(), String> {
    let seed = kv_engine_seed(config.cluster_id, id);
    run_node(
        config,
        id,
        move |start: Start| {
            let mut replica_config = ReplicaConfig::new(NodeId(start.id), start.peers);
            // Send each decision at once rather than on the next accept or tick: followers
            // answer their own clients only once they learn the decision, so waiting for
            // the next tick would cap every follower-attached client at one op per tick.
            replica_config.paxos.piggyback_commits = false;
            Replica::recover(
                replica_config,
                KvState::new(),
                start.recovered,
                start.wiped,
                seed,
                Time::ZERO,
            )
            .map_err(|e| format!("recovering node {id}: {e}"))
        },
        shutdown,
        options,
    )
    .await
}

/// A per-boot seed for the core's randomness (backoff jitter): distinct per node and boot.
fn kv_engine_seed(cluster_id: u64, id: u32) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    cluster_id ^ (u64::from(id) << 48) ^ nanos
}
