//! Runs the Paxos-replicated KV group core ([`kv_replication::kvgroup::Replica`]) under the
//! production driver (the replica is a [`crate::node::Core`] as it is a
//! [`kv_replication::node::Node`]).

use std::time::Duration;

use kv_engine::kv::KvState;
use kv_replication::kvgroup::{Replica, ReplicaConfig};
use kv_replication::paxos::Lease;
use kv_replication::types::{NodeId, Time};
use tokio::sync::watch;

use crate::config::{ClusterConfig, ReadLease};
use crate::redis::GroupStore;
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
    let lease = config.read_lease;
    run_node(
        config,
        id,
        move |start: Start| {
            let replica_config = tuned(NodeId(start.id), start.peers, lease);
            Replica::recover(
                replica_config,
                KvState::holding_all(kv_replication::kvgroup::SHARDING),
                start.recovered,
                start.wiped,
                seed,
                Time::ZERO,
            )
            .map_err(|e| format!("recovering node {id}: {e}"))
        },
        GroupStore::new,
        shutdown,
        options,
    )
    .await
}

/// The replica configuration every node of a real cluster runs with: the library's
/// defaults, tuned for real processes sharing a disk, with the cluster file's leases.
pub fn tuned(me: NodeId, peers: usize, lease: Option<ReadLease>) -> ReplicaConfig {
    let mut replica_config = ReplicaConfig::new(me, peers);
    replica_config.paxos.lease = lease.map(|lease| Lease {
        duration: Duration::from_millis(lease.ms),
        drift_ppm: lease.clock_drift_ppm,
    });
    // Send each decision at once rather than on the next accept or tick: followers
    // answer their own clients only once they learn the decision, so waiting for
    // the next tick would cap every follower-attached client at one op per tick.
    replica_config.paxos.piggyback_commits = false;
    // Size waits for large messages by what three nodes sharing a disk achieve, not
    // by the library's default of 64 MiB/s: measured on real processes here, a
    // 16 MiB accept round (send, fsync on three nodes, snapshots competing) took up
    // to a second, so 16 MiB values were resent before the first copy was
    // acknowledged — several copies queued behind each other — and a follower
    // waiting behind them stopped hearing the leader and deposed it
    // (tests/large_values.rs: 1–2 leader changes in 50 SETs at 64 MiB/s; none and
    // no resent accept at 16 MiB/s).
    replica_config.paxos.transfer_bytes_per_sec = 16 << 20;
    replica_config
}

/// A per-boot seed for the core's randomness (backoff jitter): distinct per node and boot.
pub fn kv_engine_seed(cluster_id: u64, id: u32) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    cluster_id ^ (u64::from(id) << 48) ^ nanos
}
