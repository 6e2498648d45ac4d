//! Which replica leads each group, as this node sees it, and which nodes answer: what the
//! shard clerks of the node's RESP connections start from ([`Router::leader`]) and what
//! Redis Cluster mode names as each slot's master.
//!
//! A node that holds its connections open but answers nothing (stopped, or wedged) looks
//! alive to TCP, and a leader there keeps its followers' allegiance while they are idle:
//! routing by the leader hint alone sent every new connection's first try of that group
//! there, to wait out [`CALL_TIMEOUT`], and cluster clients `-MOVED` there for as long as
//! it hung. So each node asks every other one for its status every [`PROBE_INTERVAL`] and
//! counts it down once an answer is [`PROBE_TIMEOUT`] late, or at once when the probe's
//! connection closes (a node that dies).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use kv_replication::shardmaster::GroupId;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::config::Role;
use crate::wire::{self, Frame};

use super::*;

/// How long another node may take to answer a status probe before it counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Host {
    /// The replica that leads group `gid`, as far as this node knows: the one its own
    /// replica of the group names leader (or, for a group it does not host, the one the
    /// last native reply from the group named), unless that replica's node does not answer
    /// or none is known; then this node's own replica of the group (which finds the leader
    /// or becomes it), else the first replica on a node that answers. `None` for a group
    /// no node hosts.
    pub(super) fn leader_endpoint(&self, gid: GroupId) -> Option<u32> {
        let hosting: Vec<&Endpoint> = self
            .endpoints
            .iter()
            .filter(|e| e.role == Role::Group(gid.0))
            .collect();
        let hint = hosting
            .iter()
            .find_map(|e| self.local.get(&e.id).and_then(|l| l.leader.get()))
            .or_else(|| {
                let leaders = self.remote_leaders.lock().expect("leaders lock");
                leaders.get(&gid.0).copied()
            });
        if let Some(leader) = hint.and_then(|l| self.endpoints.get(l as usize)) {
            if leader.role == Role::Group(gid.0) && self.is_up(leader.node) {
                return Some(leader.id);
            }
        }
        if let Some(own) = hosting.iter().find(|e| e.node == self.node) {
            return Some(own.id);
        }
        hosting
            .iter()
            .find(|e| self.is_up(e.node))
            .or(hosting.first())
            .map(|e| e.id)
    }

    /// The node of [`Host::leader_endpoint`] (this node if no node hosts the group).
    pub(super) fn leader_node(&self, gid: GroupId) -> u32 {
        self.leader_endpoint(gid)
            .and_then(|e| self.endpoints.get(e as usize))
            .map_or(self.node, |e| e.node)
    }

    /// Whether node `node` answered its last status probe (this node always does).
    pub(super) fn is_up(&self, node: u32) -> bool {
        node == self.node
            || self
                .up
                .get(node as usize)
                .is_some_and(|up| up.load(Ordering::Relaxed))
    }

    /// Probes every other node until `stop` (see the module docs).
    pub(super) async fn watch_nodes(self: Arc<Host>, stop: watch::Receiver<bool>) {
        let mut watches = tokio::task::JoinSet::new();
        for (node, &peer) in self.addresses.iter().enumerate() {
            if node as u32 != self.node {
                watches.spawn(self.clone().watch_node(node, peer, stop.clone()));
            }
        }
        while watches.join_next().await.is_some() {}
    }

    async fn watch_node(
        self: Arc<Host>,
        node: usize,
        peer: SocketAddr,
        mut stop: watch::Receiver<bool>,
    ) {
        let up = |value: bool| self.up[node].store(value, Ordering::Relaxed);
        while !*stop.borrow() {
            // The handshake needs the node to answer too, so a connect that succeeds
            // already says it is up.
            match tokio::time::timeout(PROBE_TIMEOUT, self.remote.connect(node as u32, peer)).await
            {
                Ok(Ok(mut framed)) => loop {
                    let answered = tokio::select! {
                        _ = stop.changed() => return,
                        answered = tokio::time::timeout(PROBE_TIMEOUT, answers(&mut framed)) => {
                            answered.unwrap_or(false)
                        }
                    };
                    up(answered);
                    if !answered {
                        break;
                    }
                    // Between probes, the connection closing says at once that the node
                    // is gone (a cluster client retries a refused connection only a few
                    // times, without waiting in between). It carries nothing else.
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = framed.next() => {
                            up(false);
                            break;
                        }
                        _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                    }
                },
                _ => up(false),
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
    }
}

/// Whether the node at the other end of `framed` answers a status request.
async fn answers(framed: &mut Framed<TcpStream, LengthDelimitedCodec>) -> bool {
    let request: ShardedFrame = Frame::StatusRequest;
    let Ok(bytes) = wire::encode(&request) else {
        return false;
    };
    if framed.send(bytes).await.is_err() {
        return false;
    }
    match framed.next().await {
        Some(Ok(body)) => matches!(
            wire::decode::<Routed<ClusterMsg>, ToEndpoint<ClusterRequest>, ClusterReply>(&body),
            Ok(Frame::Status(_))
        ),
        _ => false,
    }
}
