//! Runs the Paxos-replicated KV group core ([`kv_replication::kvgroup::Replica`]) under the
//! production driver: the adapter between the core's API and the driver's [`Core`] trait.

use kv_replication::kvgroup::Request;
use kv_replication::kvgroup::{self, Replica, ReplicaConfig};
use kv_replication::types::{NodeId, Time};
use tokio::sync::watch;

use crate::config::ClusterConfig;
use crate::node::Core;
use crate::run::{run_node, NodeOptions, Start};
use crate::wire::ClientReply;

impl Core for Replica {
    type Msg = kvgroup::Message;
    type Event = kvgroup::Event;

    fn on_request(&mut self, now: Time, tag: u64, request: Request, out: &mut kvgroup::Output) {
        Replica::on_request(self, now, tag, request, out)
    }

    fn on_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: kvgroup::Message,
        out: &mut kvgroup::Output,
    ) {
        Replica::on_message(self, now, from, msg, out)
    }

    fn on_tick(&mut self, now: Time, out: &mut kvgroup::Output) {
        Replica::on_tick(self, now, out)
    }

    fn on_boot(&mut self, now: Time, out: &mut kvgroup::Output) {
        Replica::on_boot(self, now, out)
    }

    fn hold(&mut self) {
        Replica::hold(self)
    }

    fn release(&mut self, now: Time, out: &mut kvgroup::Output) {
        Replica::release(self, now, out)
    }

    fn reply_of(event: kvgroup::Event) -> Option<(u64, ClientReply)> {
        match event {
            kvgroup::Event::Reply { tag, reply } => Some((tag, ClientReply::Done(reply))),
            kvgroup::Event::Dropped { tag } => Some((
                tag,
                ClientReply::Unavailable("the replica dropped the request; retry".into()),
            )),
            kvgroup::Event::Halted { reason } => {
                tracing::error!(%reason, "the replica halted: it cannot apply the log");
                None
            }
        }
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        Replica::status(self).fields()
    }

    fn is_ready(&self) -> bool {
        Replica::is_ready(self)
    }

    fn leader(&self) -> Option<NodeId> {
        Replica::leader(self)
    }
}

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
