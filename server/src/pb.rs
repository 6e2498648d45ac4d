//! Primary/backup mode on real processes: a node runs the view service or a
//! primary/backup server (`kv_replication::pbservice`), as the cluster file says, under
//! the same driver, transport, RESP front door and admin endpoint as every other node
//! ([`crate::run::run_node`]).
//!
//! # Reaching the primary
//! Only the primary of the current view serves. A native client is *redirected*: any
//! other node (a backup, an idle server, the view service) answers `Unavailable` naming
//! the primary it knows, and the client sends the same request (same sequence number)
//! there. A RESP connection, whose Redis client cannot follow a redirect, is *forwarded*:
//! the node runs it as a native client of the cluster ([`PbStore`]), starting with itself,
//! so on the primary it is served at once and elsewhere it is sent on to the primary —
//! with one client id and one sequence number per command however often it is retried,
//! so at most once either way.
//!
//! # Persistence
//! The view service persists its view and the view's acknowledgement through the engine
//! (WAL + snapshots) before any answer that shows them, and resumes from them when
//! restarted; a view service whose directory lost its stamp refuses to start, since it
//! could no longer tell which servers hold the data. The servers keep their data in
//! memory, as the lab does: a restarted server is a new, empty life that the view service
//! brings back only as a backup that receives the whole state. The driver still opens
//! their store (it stays empty) and holds the directory's lock. What loses nothing is
//! stated in the README's primary/backup section and in `kv_replication::pbservice`.

use std::time::Duration;

use kv_engine::kv::{Op, Reply};
use kv_replication::kvgroup::Batch;
use kv_replication::pbservice::{AnyCore, PbServer, ViewService};
use kv_replication::types::{ClientId, NodeId, Time};
use tokio::sync::{mpsc, watch};

use crate::client::{Client, ClientError, ClientOptions, PrimaryBackup};
use crate::config::ClusterConfig;
use crate::node::{CoreInput, Status};
use crate::redis::{self, Failure, Store, RETRY_DEADLINE};
use crate::run::{run_node, NodeOptions, Start};

/// How long one node gets to answer a forwarded RESP command before the next is tried: a
/// primary stopped or cut off is given up on this soon, and the command goes on to the
/// node the others name.
pub const FORWARD_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs node `id` of a primary/backup cluster — the view service or a server, as the
/// cluster file says — until `shutdown`.
pub async fn run(
    config: ClusterConfig,
    id: u32,
    shutdown: watch::Receiver<bool>,
    options: NodeOptions,
) -> Result<(), String> {
    let view_service = config
        .view_service
        .ok_or("the cluster file is not in primary-backup mode")?;
    let seed = crate::replica::kv_engine_seed(config.cluster_id, id);
    let forward = Forward {
        key: config.key().map_err(|e| e.to_string())?,
        nodes: config.nodes.iter().map(|n| n.peer).collect(),
        me: id as usize,
    };
    run_node(
        config,
        id,
        move |start: Start| make_core(start, view_service, seed),
        move |client, inputs| PbStore::new(client, &forward, inputs),
        shutdown,
        options,
    )
    .await
}

/// The core of node `start.id`: the view service from what its disk holds, or a new life
/// of a server.
fn make_core(start: Start, view_service: u32, seed: u64) -> Result<AnyCore, String> {
    if start.id != view_service {
        let server = PbServer::new(NodeId(start.id), NodeId(view_service), seed);
        tracing::info!(
            node = start.id,
            boot = server.member().boot,
            "primary/backup server, a new life with an empty state"
        );
        return Ok(AnyCore::server(server));
    }
    if start.wiped {
        return Err(format!(
            "node {} is the view service and its data directory has no stamp: its view (which \
             servers hold the data) is lost, so it refuses to start; restore the directory, \
             or make a new primary-backup cluster",
            start.id
        ));
    }
    let core = ViewService::recover(Time::ZERO, &start.recovered)
        .map_err(|e| format!("recovering the view service: {e}"))?;
    tracing::info!(node = start.id, view = %core.view(), acked = core.acked(), "view service");
    Ok(AnyCore::view_service(core))
}

/// Where a node forwards its RESP connections' commands: the cluster's nodes, itself first.
#[derive(Clone)]
struct Forward {
    key: kv_client::auth::ClusterKey,
    nodes: Vec<std::net::SocketAddr>,
    me: usize,
}

/// A RESP connection's store on a primary/backup node: a native client of the cluster
/// under the connection's client id, which tries this node first and follows the primary
/// it names (see the module docs). INFO reads this node's own status; DBSIZE and INFO
/// keyspace count the primary's keys.
pub struct PbStore {
    client: Client<PrimaryBackup>,
    inputs: mpsc::Sender<CoreInput<AnyCore>>,
}

impl PbStore {
    fn new(client: ClientId, forward: &Forward, inputs: mpsc::Sender<CoreInput<AnyCore>>) -> Self {
        let options = ClientOptions {
            attempt_timeout: FORWARD_ATTEMPT_TIMEOUT,
            deadline: RETRY_DEADLINE,
        };
        PbStore {
            client: Client::with_id(
                client,
                forward.key.clone(),
                forward.nodes.clone(),
                forward.me,
                options,
            ),
            inputs,
        }
    }
}

impl Store for PbStore {
    async fn run(&mut self, batch: Batch) -> Result<Reply, Failure> {
        self.client.send(batch).await.map_err(|e| match e {
            ClientError::Timeout(_) => Failure::Unavailable(format!(
                "no primary answered within {RETRY_DEADLINE:?} (the command may or may not have \
                 been applied)"
            )),
            ClientError::Protocol(why) => Failure::Unavailable(why),
            refused @ ClientError::Refused { .. } => Failure::Unavailable(refused.to_string()),
        })
    }

    fn sharding(&self) -> kv_engine::kv::Sharding {
        // A server's state holds every shard of the unsharded group's sharding.
        kv_replication::kvgroup::SHARDING
    }

    async fn status(&self) -> Option<Status> {
        crate::node::ask_status(&self.inputs).await
    }

    /// The primary's keys, whichever node the connection reached: a read of every
    /// shard's size, forwarded as GET is (the view service and an idle server hold no
    /// keys, and a backup's copy may trail the primary's).
    async fn key_count(&mut self) -> Result<u64, Failure> {
        let ops: Vec<Op> = self
            .sharding()
            .all()
            .map(|shard| Op::Count { shard })
            .collect();
        let batch = Batch::new(ops)
            .map_err(|e| Failure::Unavailable(format!("counting the keys: {e:?}")))?;
        redis::total_counted(self.run(batch).await?)
    }
}
