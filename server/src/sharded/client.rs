//! A RESP connection's store on a sharded node: the client crate's [`ShardedStore`]
//! routed through this node's [`Host`].

use kv_engine::kv::{Op, Reply};
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

    /// The keys of every shard this node presents (every shard, or in cluster mode those
    /// whose slots it masters in its own view, as SCAN and KEYS walk them), each counted
    /// by the group that owns it in the newest configuration ([`Op::Count`], a read of
    /// the shard's size, no scan); shards no group owns have none.
    async fn key_count(&mut self) -> Result<u64, Failure> {
        // The newest configuration, not merely the cached one: the shard master is asked
        // unless another caller asked it in the last moment.
        let router = self.router().as_ref();
        let cached = latest_config(router, None).await.map(|c| c.num());
        let config = latest_config(router, cached).await;
        let ops: Vec<Op> = redis::scan::shards(self)
            .into_iter()
            .filter(|&shard| {
                config
                    .as_ref()
                    .is_none_or(|c| c.owner(shard).is_some_and(|g| g != GroupId::NONE))
            })
            .map(|shard| Op::Count { shard })
            .collect();
        let Ok(batch) = Batch::new(ops) else {
            return Ok(0);
        };
        redis::total_counted(self.execute_batch(batch).await?)
    }

    async fn status(&self) -> Option<Status> {
        let parts = self.router().parts().await?;
        let mut merged = Status {
            ready: parts.iter().all(|(_, s)| s.ready),
            ..Status::default()
        };
        for (_, status) in &parts {
            merged.wal_bytes += status.wal_bytes;
            merged.snapshot_bytes += status.snapshot_bytes;
        }
        Some(merged)
    }
}
