//! A client of any kind of cluster — the native client of an unsharded one or of a
//! primary/backup one, or a shard clerk (through [`Outside`]) of a sharded one, whichever
//! the cluster file says: what the CLI, the load generator and batch jobs use.

use std::sync::Arc;
use std::time::Duration;

use kv_engine::kv::{Op, Reply, Scan, ScanPage, Sharding};
use kv_replication::kvgroup::{self, Batch};

use crate::auth::ClusterKey;
use crate::config::{ClusterConfig, ConfigError};
use crate::native::{random_client_id, Client, ClientError, ClientOptions, PrimaryBackup};
use crate::sharded::{Outside, ShardedStore};

/// A client of either kind of cluster.
pub enum AnyClient {
    /// An unsharded cluster's.
    Group(Box<Client>),
    /// A primary/backup cluster's (it follows the primary each node names).
    PrimaryBackup(Box<Client<PrimaryBackup>>),
    /// A sharded cluster's.
    Sharded(Box<ShardedStore<Outside>>),
}

/// What clients of one cluster share: its id and secret, and a sharded cluster's
/// connections and configuration.
#[derive(Clone)]
pub struct Shared {
    key: ClusterKey,
    outside: Option<Arc<Outside>>,
}

impl Shared {
    /// For clients of `config`: an error if its secret cannot be read (see
    /// [`ClusterConfig::key`]).
    pub fn new(config: &ClusterConfig) -> Result<Shared, ConfigError> {
        let key = config.key()?;
        let outside = config
            .is_sharded()
            .then(|| Arc::new(Outside::new(config, key.clone())));
        Ok(Shared { key, outside })
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
        match &shared.outside {
            Some(outside) => AnyClient::Sharded(Box::new(ShardedStore::new(
                random_client_id(),
                outside.clone(),
            ))),
            None if config.is_primary_backup() => {
                // Start on a server (the view service only redirects): clients spread over
                // the servers and move to the primary.
                let servers = config.pb_servers();
                let first = servers[index % servers.len()] as usize;
                let nodes = config.nodes.iter().map(|n| n.peer).collect();
                AnyClient::PrimaryBackup(Box::new(Client::new(
                    shared.key.clone(),
                    nodes,
                    first,
                    options,
                )))
            }
            None => {
                let nodes = config.nodes.iter().map(|n| n.peer).collect();
                AnyClient::Group(Box::new(Client::new(
                    shared.key.clone(),
                    nodes,
                    index,
                    options,
                )))
            }
        }
    }

    /// How the cluster's keys map to shards: the shards a walk of every key reads.
    pub fn sharding(&self) -> Sharding {
        match self {
            AnyClient::Group(_) | AnyClient::PrimaryBackup(_) => kvgroup::SHARDING,
            AnyClient::Sharded(store) => crate::sharded::Router::sharding(store.router().as_ref()),
        }
    }

    /// Executes one op, at most once, within `deadline`.
    pub async fn execute(&mut self, op: Op, deadline: Duration) -> Result<Reply, String> {
        match self {
            AnyClient::Group(client) => client.execute(op).await.map_err(|e| e.to_string()),
            AnyClient::PrimaryBackup(client) => client.execute(op).await.map_err(|e| e.to_string()),
            AnyClient::Sharded(store) => {
                let answer = within(deadline, store.execute(op)).await;
                explained(answer, store)
            }
        }
    }

    /// Executes a batch's ops, at most once each, within `deadline`: one reply per op, in
    /// order. (An unsharded cluster runs the batch as one request at one log position; a
    /// sharded one runs its ops on several clerks at once.)
    pub async fn execute_batch(
        &mut self,
        batch: Batch,
        deadline: Duration,
    ) -> Result<Vec<Reply>, String> {
        let reply = match self {
            AnyClient::Group(client) => return batch_result(client.execute_batch(batch).await),
            AnyClient::PrimaryBackup(client) => {
                return batch_result(client.execute_batch(batch).await)
            }
            AnyClient::Sharded(store) => {
                let answer = within(deadline, store.execute_batch(batch.clone())).await;
                explained(answer, store)?
            }
        };
        batch
            .split_reply(reply)
            .map_err(|refused| format!("the batch did not run: {refused:?}"))
    }

    /// Reads one page of a scan (a read of the shard's owner), within `deadline`.
    pub async fn scan(&mut self, scan: Scan, deadline: Duration) -> Result<ScanPage, String> {
        match self.execute(Op::from(scan), deadline).await? {
            Reply::Scanned(page) => Ok(page),
            other => Err(format!("a scan was answered {other:?}")),
        }
    }
}

/// A native client's answer to a batch, with a refusal or failure in words.
fn batch_result(
    answer: Result<Result<Vec<Reply>, Reply>, ClientError>,
) -> Result<Vec<Reply>, String> {
    match answer {
        Ok(Ok(replies)) => Ok(replies),
        Ok(Err(refused)) => Err(format!("the batch did not run: {refused:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// A sharded store's answer, with the handshake a node refused on the way added to a
/// failure (a wrong cluster secret shows as that, not as a mere timeout).
fn explained<T>(answer: Result<T, String>, store: &ShardedStore<Outside>) -> Result<T, String> {
    answer.map_err(|failure| match store.router().refused() {
        Some(why) => format!("{failure}: {why}"),
        None => failure,
    })
}

/// A sharded store's answer within `deadline`, as a result with the failure in words.
async fn within(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<Reply, crate::sharded::Failure>>,
) -> Result<Reply, String> {
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result.map_err(|f| f.message()),
        Err(_) => Err(format!("no answer within {deadline:?}")),
    }
}
