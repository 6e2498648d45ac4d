//! A RESP connection's store on a sharded node: the client crate's [`ShardedStore`]
//! routed through this node's [`Host`].

use kv_engine::kv::Reply;
use kv_replication::kvgroup::Batch;

use crate::node::Status;
use crate::redis::{self, Failure};
use crate::redis_cluster::ClusterView;

use super::*;

impl redis::Store for ShardedStore<Host> {
    fn cluster(&self) -> Option<&dyn ClusterView> {
        self.router()
            .cluster
            .as_ref()
            .map(|_| &**self.router() as &dyn ClusterView)
    }

    fn set_asking(&mut self, asking: bool) {
        ShardedStore::set_asking(self, asking);
    }

    fn sharding(&self) -> kv_engine::kv::Sharding {
        self.router().sharding
    }

    async fn run(&mut self, batch: Batch) -> Result<Reply, Failure> {
        self.execute_batch(batch).await
    }

    async fn status(&self) -> Option<Status> {
        let parts = self.router().parts().await?;
        let mut merged = Status {
            ready: parts.iter().all(|(_, s)| s.ready),
            ..Status::default()
        };
        let mut keys = 0u64;
        for (label, status) in &parts {
            if label != "master" {
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
