//! The client of a sharded cluster, sans IO: [`ShardClerk`] routes each operation to the
//! group that serves its key's shard under the newest configuration it knows, and asks the
//! shard master for a newer one when a group answers "not held" or none of its servers
//! answers (the lab's clerk loop).
//!
//! One request is outstanding at a time, numbered by one counter across every group, and
//! every retry — to another server, another group, after a new configuration — re-sends
//! the *same* request: the groups' at-most-once entries travel with their shards, so a
//! request executed by a shard's old owner is answered from its entry by the new one.
//!
//! The driver does the IO: it sends [`Step::Send`] requests to the named server, asks the
//! shard master for the latest configuration on [`Step::Query`] and hands it over with
//! [`ShardClerk::on_config`], and reports replies ([`ShardClerk::on_reply`]) and failures
//! ([`ShardClerk::on_failure`]).

use std::sync::Arc;

use kv_engine::kv::{Op, Reply, Sharding};

use crate::clerk::{ClerkError, Outstanding};
use crate::replica::Request;
use crate::shardmaster::{Config, GroupId};
use crate::types::ClientId;

/// What the driver does next for the outstanding request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this request to the server named `to`.
    Send {
        /// The server, as configurations name it.
        to: String,
        /// The request (the same one on every retry).
        request: Request<Op>,
    },
    /// Ask the shard master for its latest configuration, then call
    /// [`ShardClerk::on_config`].
    Query,
}

/// A client of a sharded cluster. See the module docs.
#[derive(Debug, Clone)]
pub struct ShardClerk {
    outstanding: Outstanding<Op>,
    sharding: Sharding,
    config: Option<Arc<Config>>,
    /// How many servers of the current group this request has tried.
    tried: usize,
    /// Per group, the server last said to lead it: tried first.
    leaders: std::collections::BTreeMap<GroupId, String>,
}

impl ShardClerk {
    /// A clerk for `client` of a cluster whose keys map to shards by `sharding`.
    pub fn new(client: ClientId, sharding: Sharding) -> ShardClerk {
        ShardClerk {
            outstanding: Outstanding::new(client),
            sharding,
            config: None,
            tried: 0,
            leaders: std::collections::BTreeMap::new(),
        }
    }

    /// A server said `leader` leads its group (a hint: it goes first in that group's
    /// order from now on). A name of no group in the configuration is ignored.
    pub fn on_leader(&mut self, leader: &str) {
        let Some(config) = &self.config else { return };
        let group = config
            .groups()
            .iter()
            .find(|(_, servers)| servers.iter().any(|s| s == leader));
        if let Some((group, _)) = group {
            self.leaders.insert(*group, leader.to_string());
        }
    }

    /// The client id.
    pub fn client(&self) -> ClientId {
        self.outstanding.client()
    }

    /// The newest configuration this clerk knows.
    pub fn config(&self) -> Option<&Arc<Config>> {
        self.config.as_ref()
    }

    /// The outstanding request, if any.
    pub fn outstanding(&self) -> Option<&Request<Op>> {
        self.outstanding.get()
    }

    /// Starts a request for `op`.
    pub fn begin(&mut self, op: Op) -> Result<Step, ClerkError> {
        self.outstanding.begin(op)?;
        self.tried = 0;
        Ok(self.route())
    }

    /// A configuration from the shard master (newer ones replace older ones). Returns the
    /// next step for the outstanding request, if any.
    pub fn on_config(&mut self, config: Arc<Config>) -> Option<Step> {
        if self
            .config
            .as_ref()
            .is_none_or(|known| known.num() <= config.num())
        {
            self.config = Some(config);
        }
        self.tried = 0;
        self.outstanding.get()?;
        Some(self.route())
    }

    /// A reply to request `seq` arrived. Returns the answer if it completes the
    /// outstanding request; "not held" instead means [`Step::Query`] (returned as `Err`),
    /// and a reply to anything else (a late duplicate) is ignored (`Ok(None)`).
    pub fn on_reply(&mut self, seq: u64, reply: Reply) -> Result<Option<Reply>, Step> {
        if self
            .outstanding
            .get()
            .is_none_or(|request| request.seq != seq)
        {
            return Ok(None);
        }
        if let Reply::NotHeld(_) = reply {
            self.tried = 0;
            return Err(Step::Query);
        }
        self.outstanding.complete(seq);
        Ok(Some(reply))
    }

    /// The last send failed or timed out: the next server of the group, or, once every
    /// server was tried, [`Step::Query`]. `None` if nothing is outstanding.
    pub fn on_failure(&mut self) -> Option<Step> {
        self.outstanding.get()?;
        self.tried += 1;
        Some(self.route())
    }

    /// Gives up on the outstanding request (its caller stopped waiting). It may still be
    /// executed, once at most; the next request has a higher sequence number, so after
    /// that one nothing older can execute.
    pub fn abandon(&mut self) {
        self.outstanding.abandon();
        self.tried = 0;
    }

    /// Where the outstanding request goes now.
    fn route(&mut self) -> Step {
        let Some(request) = self.outstanding.get().cloned() else {
            return Step::Query;
        };
        let Some(config) = &self.config else {
            return Step::Query;
        };
        let shard = request.command.shard(self.sharding);
        let owner = config.owner(shard).unwrap_or(GroupId::NONE);
        let servers = match config.groups().get(&owner) {
            Some(servers) if !servers.is_empty() => servers,
            _ => return Step::Query,
        };
        if self.tried >= servers.len() {
            self.tried = 0;
            return Step::Query;
        }
        let first = self
            .leaders
            .get(&owner)
            .and_then(|leader| servers.iter().position(|s| s == leader))
            .unwrap_or(0);
        Step::Send {
            to: servers[(first + self.tried) % servers.len()].clone(),
            request,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kv_engine::kv::ShardId;

    fn config_with(groups: &[(u64, &[&str])], owner: u64) -> Arc<Config> {
        let mut config = Config::initial(10);
        for (g, servers) in groups {
            config =
                config.with_group(GroupId(*g), servers.iter().map(|s| s.to_string()).collect());
        }
        for shard in 0..10 {
            if config.owner(ShardId(shard)) != Some(GroupId(owner)) {
                config = config.with_move(ShardId(shard), GroupId(owner));
            }
        }
        Arc::new(config)
    }

    fn put() -> Op {
        Op::Put {
            key: Bytes::from_static(b"k"),
            value: Bytes::from_static(b"v"),
        }
    }

    #[test]
    fn without_a_configuration_the_clerk_asks_the_master_first() {
        let mut clerk = ShardClerk::new(ClientId(3), Sharding::LAB);
        assert_eq!(clerk.begin(put()), Ok(Step::Query));
        let step = clerk.on_config(config_with(&[(1, &["a", "b"])], 1));
        let Some(Step::Send { to, request }) = step else {
            panic!("{step:?}")
        };
        assert_eq!(
            (to.as_str(), request.seq, request.client),
            ("a", 1, ClientId(3))
        );
    }

    #[test]
    fn failures_walk_the_group_then_ask_again_with_the_same_request() {
        let mut clerk = ShardClerk::new(ClientId(3), Sharding::LAB);
        clerk.on_config(config_with(&[(1, &["a", "b"])], 1));
        let Ok(Step::Send { request, .. }) = clerk.begin(put()) else {
            panic!()
        };
        let Some(Step::Send { to, request: again }) = clerk.on_failure() else {
            panic!()
        };
        assert_eq!((to.as_str(), &again), ("b", &request));
        assert_eq!(clerk.on_failure(), Some(Step::Query));
        // A newer configuration moved the key: the same request goes to the new group.
        let step = clerk.on_config(config_with(&[(1, &["a", "b"]), (2, &["c"])], 2));
        assert_eq!(
            step,
            Some(Step::Send {
                to: "c".into(),
                request: request.clone()
            })
        );
        assert_eq!(
            clerk.on_reply(request.seq, Reply::NotHeld(ShardId(7))),
            Err(Step::Query)
        );
        assert_eq!(clerk.on_reply(request.seq + 1, Reply::Ok), Ok(None));
        assert_eq!(clerk.on_reply(request.seq, Reply::Ok), Ok(Some(Reply::Ok)));
        assert_eq!(clerk.on_failure(), None);
    }

    #[test]
    fn a_leader_hint_goes_first_and_failures_walk_on_from_it() {
        let mut clerk = ShardClerk::new(ClientId(3), Sharding::LAB);
        clerk.on_config(config_with(&[(1, &["a", "b", "c"])], 1));
        clerk.on_leader("b");
        clerk.on_leader("nobody");
        let Ok(Step::Send { to, .. }) = clerk.begin(put()) else {
            panic!()
        };
        assert_eq!(to, "b");
        let Some(Step::Send { to, .. }) = clerk.on_failure() else {
            panic!()
        };
        assert_eq!(to, "c");
        let Some(Step::Send { to, .. }) = clerk.on_failure() else {
            panic!()
        };
        assert_eq!(to, "a");
        assert_eq!(clerk.on_failure(), Some(Step::Query));
    }

    #[test]
    fn an_older_configuration_does_not_replace_a_newer_one() {
        let mut clerk = ShardClerk::new(ClientId(3), Sharding::LAB);
        let newer = config_with(&[(1, &["a"]), (2, &["b"])], 2);
        let older = config_with(&[(1, &["a"])], 1);
        clerk.on_config(newer.clone());
        clerk.on_config(older);
        assert_eq!(clerk.config(), Some(&newer));
    }
}
