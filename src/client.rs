//! The CLI's and load generator's client: the native client of an unsharded cluster or of
//! a primary/backup one, or a shard clerk (through [`Outside`]) of a sharded one —
//! whichever the cluster file says.

use std::sync::Arc;
use std::time::Duration;

use kv_engine::kv::{Op, Reply};
use kv_server::client::{random_client_id, Client, ClientOptions, PrimaryBackup};
use kv_server::config::ClusterConfig;
use kv_server::sharded::{Outside, ShardedStore};

/// A client of either kind of cluster.
pub enum AnyClient {
    /// An unsharded cluster's.
    Group(Box<Client>),
    /// A primary/backup cluster's (it follows the primary each node names).
    PrimaryBackup(Box<Client<PrimaryBackup>>),
    /// A sharded cluster's.
    Sharded(Box<ShardedStore<Outside>>),
}

/// What clients of one cluster share: a sharded cluster's connections and configuration.
#[derive(Clone)]
pub struct Shared(Option<Arc<Outside>>);

impl Shared {
    /// For clients of `config`.
    pub fn new(config: &ClusterConfig) -> Shared {
        Shared(config.is_sharded().then(|| Arc::new(Outside::new(config))))
    }
}

impl AnyClient {
    /// Client number `index` of `config` (the index spreads unsharded clients over nodes).
    pub fn new(
        config: &ClusterConfig,
        shared: &Shared,
        index: usize,
        options: ClientOptions,
    ) -> AnyClient {
        match &shared.0 {
            Some(outside) => AnyClient::Sharded(Box::new(ShardedStore::new(
                random_client_id(),
                outside.clone(),
            ))),
            None if config.is_primary_backup() => {
                // Start on a server (index 0 would be the view service, which only
                // redirects): clients spread over the servers and move to the primary.
                let servers = config.pb_servers();
                let first = servers[index % servers.len()] as usize;
                let nodes = config.nodes.iter().map(|n| n.peer).collect();
                AnyClient::PrimaryBackup(Box::new(Client::new(
                    config.cluster_id,
                    nodes,
                    first,
                    options,
                )))
            }
            None => {
                let nodes = config.nodes.iter().map(|n| n.peer).collect();
                AnyClient::Group(Box::new(Client::new(
                    config.cluster_id,
                    nodes,
                    index,
                    options,
                )))
            }
        }
    }

    /// Executes one op, at most once, within `deadline`.
    pub async fn execute(&mut self, op: Op, deadline: Duration) -> Result<Reply, String> {
        match self {
            AnyClient::Group(client) => client.execute(op).await.map_err(|e| e.to_string()),
            AnyClient::PrimaryBackup(client) => client.execute(op).await.map_err(|e| e.to_string()),
            AnyClient::Sharded(store) => {
                match tokio::time::timeout(deadline, store.execute(op)).await {
                    Ok(result) => result.map_err(|f| f.message()),
                    Err(_) => Err(format!("no answer within {deadline:?}")),
                }
            }
        }
    }
}
