//! The Redis Cluster protocol's side of the RESP front door: what a node in cluster mode
//! (`redis_cluster = true` in the cluster file) says about slots and nodes, and the
//! replies that redirect a client. The node decides ([`ClusterView`], implemented by
//! `crate::sharded::Host`); this module only renders, as Redis Cluster does:
//!
//! - `CLUSTER SLOTS` / `SHARDS` / `NODES` / `INFO` / `KEYSLOT` / `MYID` from a
//!   [`Topology`]: every node of the cluster file is a Redis Cluster *master*; a slot
//!   range's master is the node whose replica leads the group that owns the range.
//!   A node leading one group while following another cannot hold one Redis role, so
//!   `CLUSTER SLOTS` and `CLUSTER NODES` list masters only, and `CLUSTER SHARDS` lists,
//!   per range, the other nodes hosting its group as replicas.
//! - Redirections: `-MOVED slot host:port` when the node's map names another master for
//!   the slot; `-ASK slot host:port` for one command the node accepted but whose shard
//!   had just moved away (it learned so from the refusal, before anything executed);
//!   `-TRYAGAIN` when the shard is still arriving at this node's group after
//!   [`crate::sharded::ARRIVAL_WAIT_MAX`]; `-CROSSSLOT` for keys of several slots.
//! - `COMMAND` / `COMMAND INFO` / `COMMAND COUNT` / `COMMAND LIST` / `COMMAND GETKEYS`
//!   describe every command with its key positions ([`COMMANDS`]), so cluster clients can
//!   route by key.
//!
//! Node ids are 40 hex digits made from the cluster id and the node id, so every node
//! names every other one the same way, across restarts.

use std::net::SocketAddr;

use bytes::Bytes;

use crate::resp::Frame;

/// Number of Redis Cluster hash slots.
pub const SLOTS: u16 = kv_engine::kv::SLOTS as u16;

/// A node as cluster clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Its 40-hex-digit node id ([`node_name`]).
    pub name: String,
    /// Its RESP address.
    pub resp: SocketAddr,
    /// Its peer address (Redis Cluster's bus port).
    pub bus: SocketAddr,
    /// Whether the viewing node can reach it.
    pub up: bool,
}

/// A run of consecutive slots whose group is led on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotRange {
    /// First slot.
    pub first: u16,
    /// Last slot (inclusive).
    pub last: u16,
    /// The master: the node (index into [`Topology::nodes`]) leading the owning group.
    pub master: usize,
    /// The other nodes hosting the owning group.
    pub replicas: Vec<usize>,
}

/// One node's view of the cluster: the nodes and who serves each slot range, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The viewing node (index into `nodes`).
    pub me: usize,
    /// Every node of the cluster file, by node id.
    pub nodes: Vec<NodeView>,
    /// The slot ranges that have an owner, ascending and disjoint.
    pub ranges: Vec<SlotRange>,
    /// The configuration number the ranges come from (the cluster's epoch).
    pub epoch: u64,
}

/// Where a command for one slot goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node serves it.
    Serve,
    /// Another node does: the client is redirected to its RESP address.
    Elsewhere(SocketAddr),
    /// No group owns the slot.
    Unserved,
}

/// What a node in cluster mode knows about the cluster (see the module docs).
pub trait ClusterView: Send + Sync {
    /// Where a command on `slot` goes now.
    fn route(&self, slot: u16) -> Route;
    /// The slot ranges and nodes, as this node knows them.
    fn topology(&self) -> Topology;
}

/// The node id cluster clients see for node `node` of cluster `cluster_id`.
pub fn node_name(cluster_id: u64, node: u32) -> String {
    format!("{cluster_id:024x}{:016x}", u64::from(node))
}

/// The redirect for a command on `slot` that this node does not serve: `MOVED`, or
/// `ASK` for a one-time redirect.
pub fn redirect(route: &Route, slot: u16, ask: bool) -> Frame {
    match route {
        Route::Elsewhere(addr) => Frame::Error(format!(
            "{} {slot} {}:{}",
            if ask { "ASK" } else { "MOVED" },
            addr.ip(),
            addr.port()
        )),
        Route::Serve => {
            Frame::Error("TRYAGAIN Multiple keys request during rehashing of slot".into())
        }
        Route::Unserved => Frame::Error("CLUSTERDOWN Hash slot not served".into()),
    }
}

/// `-CROSSSLOT`, for a command whose keys are in different slots.
pub fn cross_slot() -> Frame {
    Frame::Error("CROSSSLOT Keys in request don't hash to the same slot".into())
}

/// Keys of one command hash to different slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrossSlot;

/// The one slot of `keys`, or `Err` if they span several (`None` for no keys).
pub fn slot_of_keys<'a>(
    keys: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Option<u16>, CrossSlot> {
    let mut slot = None;
    for key in keys {
        let this = kv_engine::kv::slot_of(key);
        match slot {
            None => slot = Some(this),
            Some(s) if s == this => {}
            Some(_) => return Err(CrossSlot),
        }
    }
    Ok(slot)
}

/// A CLUSTER subcommand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterCommand {
    /// CLUSTER SLOTS
    Slots,
    /// CLUSTER SHARDS
    Shards,
    /// CLUSTER NODES
    Nodes,
    /// CLUSTER INFO
    Info,
    /// CLUSTER KEYSLOT key
    KeySlot(Bytes),
    /// CLUSTER MYID
    MyId,
}

impl ClusterCommand {
    /// Parses CLUSTER's arguments (after the command name).
    pub fn parse(args: &[Bytes]) -> Result<ClusterCommand, String> {
        let Some((sub, rest)) = args.split_first() else {
            return Err("ERR wrong number of arguments for 'cluster' command".into());
        };
        let name = String::from_utf8_lossy(sub).to_ascii_lowercase();
        Ok(match (name.as_str(), rest) {
            ("slots", []) => ClusterCommand::Slots,
            ("shards", []) => ClusterCommand::Shards,
            ("nodes", []) => ClusterCommand::Nodes,
            ("info", []) => ClusterCommand::Info,
            ("keyslot", [key]) => ClusterCommand::KeySlot(key.clone()),
            ("myid", []) => ClusterCommand::MyId,
            _ => {
                return Err(format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLUSTER HELP.",
                String::from_utf8_lossy(sub)
            ))
            }
        })
    }

    /// The reply, from `view`'s topology.
    pub fn answer(&self, view: &dyn ClusterView) -> Frame {
        match self {
            ClusterCommand::KeySlot(key) => Frame::Integer(kv_engine::kv::slot_of(key).into()),
            ClusterCommand::Slots => slots_frame(&view.topology()),
            ClusterCommand::Shards => shards_frame(&view.topology()),
            ClusterCommand::Nodes => Frame::Bulk(nodes_text(&view.topology()).into()),
            ClusterCommand::Info => Frame::Bulk(info_text(&view.topology()).into()),
            ClusterCommand::MyId => {
                let topology = view.topology();
                Frame::Bulk(topology.nodes[topology.me].name.clone().into())
            }
        }
    }
}

fn text(s: impl Into<String>) -> Frame {
    Frame::Bulk(Bytes::from(s.into()))
}

/// A node as `CLUSTER SLOTS` lists it: ip, port, id, and (Redis 7) its extra networking
/// metadata, none here.
fn slots_node(node: &NodeView) -> Frame {
    Frame::Array(vec![
        text(node.resp.ip().to_string()),
        Frame::Integer(node.resp.port().into()),
        text(node.name.clone()),
        Frame::Map(Vec::new()),
    ])
}

/// `CLUSTER SLOTS`: each range with its master, then as its replicas the other nodes of
/// its group that are up and master no range, as Redis lists a master's replicas (leaving
/// out failed ones). So a cluster client learns every node that hosts a group even when one
/// node masters every slot: redis-py, for one, refreshes its slot map only through the
/// nodes the last map named, and would have nowhere to ask once that one node died. A node
/// that masters a range is never listed as a replica too: in Redis a node is one or the
/// other, and redis-py takes the first role it sees for a node's role everywhere (a master
/// taken for a replica is left out of commands sent to every master, as SCAN).
pub fn slots_frame(topology: &Topology) -> Frame {
    let masters: std::collections::BTreeSet<usize> =
        topology.ranges.iter().map(|r| r.master).collect();
    Frame::Array(
        topology
            .ranges
            .iter()
            .map(|range| {
                let mut fields = vec![
                    Frame::Integer(range.first.into()),
                    Frame::Integer(range.last.into()),
                    slots_node(&topology.nodes[range.master]),
                ];
                fields.extend(
                    range
                        .replicas
                        .iter()
                        .filter(|r| !masters.contains(r) && topology.nodes[**r].up)
                        .map(|&r| slots_node(&topology.nodes[r])),
                );
                Frame::Array(fields)
            })
            .collect(),
    )
}

/// `CLUSTER SHARDS`: each range as a shard, its master and the replicas of its group.
pub fn shards_frame(topology: &Topology) -> Frame {
    let node = |index: usize, role: &str| {
        let n = &topology.nodes[index];
        Frame::Map(vec![
            (text("id"), text(n.name.clone())),
            (text("port"), Frame::Integer(n.resp.port().into())),
            (text("ip"), text(n.resp.ip().to_string())),
            (text("endpoint"), text(n.resp.ip().to_string())),
            (text("role"), text(role)),
            (text("replication-offset"), Frame::Integer(0)),
            (text("health"), text(if n.up { "online" } else { "failed" })),
        ])
    };
    Frame::Array(
        topology
            .ranges
            .iter()
            .map(|range| {
                let mut nodes = vec![node(range.master, "master")];
                nodes.extend(range.replicas.iter().map(|&r| node(r, "replica")));
                Frame::Map(vec![
                    (
                        text("slots"),
                        Frame::Array(vec![
                            Frame::Integer(range.first.into()),
                            Frame::Integer(range.last.into()),
                        ]),
                    ),
                    (text("nodes"), Frame::Array(nodes)),
                ])
            })
            .collect(),
    )
}

/// `CLUSTER NODES`: one line per node — id, `ip:port@bus`, flags, master (`-`), ping
/// sent, pong received, config epoch, link state, then its slot ranges.
pub fn nodes_text(topology: &Topology) -> String {
    let mut out = String::new();
    for (index, node) in topology.nodes.iter().enumerate() {
        let mut flags = String::new();
        if index == topology.me {
            flags.push_str("myself,");
        }
        flags.push_str("master");
        if !node.up {
            flags.push_str(",fail");
        }
        out.push_str(&format!(
            "{} {}:{}@{} {flags} - 0 0 {} {}",
            node.name,
            node.resp.ip(),
            node.resp.port(),
            node.bus.port(),
            topology.epoch,
            if node.up { "connected" } else { "disconnected" }
        ));
        for range in topology.ranges.iter().filter(|r| r.master == index) {
            if range.first == range.last {
                out.push_str(&format!(" {}", range.first));
            } else {
                out.push_str(&format!(" {}-{}", range.first, range.last));
            }
        }
        out.push('\n');
    }
    out
}

/// `CLUSTER INFO`.
pub fn info_text(topology: &Topology) -> String {
    let assigned: u32 = topology
        .ranges
        .iter()
        .map(|r| u32::from(r.last - r.first) + 1)
        .sum();
    let failed: u32 = topology
        .ranges
        .iter()
        .filter(|r| !topology.nodes[r.master].up)
        .map(|r| u32::from(r.last - r.first) + 1)
        .sum();
    let mut masters: Vec<usize> = topology.ranges.iter().map(|r| r.master).collect();
    masters.sort_unstable();
    masters.dedup();
    let state = if assigned == u32::from(SLOTS) {
        "ok"
    } else {
        "fail"
    };
    format!(
        "cluster_enabled:1\r\ncluster_state:{state}\r\ncluster_slots_assigned:{assigned}\r\n\
         cluster_slots_ok:{}\r\ncluster_slots_pfail:0\r\ncluster_slots_fail:{failed}\r\n\
         cluster_known_nodes:{}\r\ncluster_size:{}\r\ncluster_current_epoch:{}\r\n\
         cluster_my_epoch:{}\r\n",
        assigned - failed,
        topology.nodes.len(),
        masters.len(),
        topology.epoch,
        topology.epoch,
    )
}

/// A command as `COMMAND` describes it: name, arity (negative: at least), flags, and key
/// positions (first, last — negative counts from the end — and step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower-case name.
    pub name: &'static str,
    /// Arguments including the name; negative means at least that many.
    pub arity: i64,
    /// Redis command flags.
    pub flags: &'static [&'static str],
    /// Position of the first key (0: no keys).
    pub first_key: i64,
    /// Position of the last key (negative: from the end).
    pub last_key: i64,
    /// Step between keys.
    pub step: i64,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
) -> CommandSpec {
    CommandSpec {
        name,
        arity,
        flags,
        first_key: keys.0,
        last_key: keys.1,
        step: keys.2,
    }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);

/// Every command the front door runs, as `COMMAND` describes it.
pub const COMMANDS: &[CommandSpec] = &[
    spec("get", 2, &["readonly", "fast"], (1, 1, 1)),
    spec("set", -3, &["write", "denyoom"], (1, 1, 1)),
    spec("append", 3, &["write", "denyoom", "fast"], (1, 1, 1)),
    spec("del", -2, &["write"], (1, -1, 1)),
    spec("unlink", -2, &["write", "fast"], (1, -1, 1)),
    spec("exists", -2, &["readonly", "fast"], (1, -1, 1)),
    spec("mget", -2, &["readonly", "fast"], (1, -1, 1)),
    spec("ping", -1, &["fast", "stale"], NO_KEYS),
    spec("echo", 2, &["fast"], NO_KEYS),
    spec("info", -1, &["loading", "stale"], NO_KEYS),
    spec("quit", -1, &["fast", "loading", "stale"], NO_KEYS),
    spec("select", 2, &["loading", "stale", "fast"], NO_KEYS),
    spec("dbsize", 1, &["readonly", "fast"], NO_KEYS),
    spec("scan", -2, &["readonly"], NO_KEYS),
    spec("keys", 2, &["readonly"], NO_KEYS),
    spec("command", -1, &["loading", "stale"], NO_KEYS),
    spec(
        "hello",
        -1,
        &["noscript", "loading", "stale", "fast"],
        NO_KEYS,
    ),
    spec("client", -2, &["loading", "stale"], NO_KEYS),
    spec("config", -2, &["loading", "stale"], NO_KEYS),
    spec("cluster", -2, &["stale"], NO_KEYS),
    spec("asking", 1, &["fast"], NO_KEYS),
    spec("readonly", 1, &["loading", "stale", "fast"], NO_KEYS),
    spec("readwrite", 1, &["loading", "stale", "fast"], NO_KEYS),
];

/// The spec of command `name` (any case).
pub fn command_spec(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
}

/// One command's entry in `COMMAND`'s reply (Redis 7's ten fields: name, arity, flags,
/// first key, last key, step, ACL categories, tips, key specs, subcommands).
fn command_frame(c: &CommandSpec) -> Frame {
    Frame::Array(vec![
        text(c.name),
        Frame::Integer(c.arity),
        Frame::Array(
            c.flags
                .iter()
                .map(|f| Frame::Simple(f.to_string()))
                .collect(),
        ),
        Frame::Integer(c.first_key),
        Frame::Integer(c.last_key),
        Frame::Integer(c.step),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}

/// The keys of a command line by its spec (`None` for an unknown command or wrong arity).
pub fn command_keys(args: &[Bytes]) -> Option<Vec<Bytes>> {
    let c = command_spec(args.first()?)?;
    let len = args.len() as i64;
    if (c.arity >= 0 && len != c.arity) || (c.arity < 0 && len < -c.arity) {
        return None;
    }
    if c.first_key == 0 {
        return Some(Vec::new());
    }
    let last = if c.last_key < 0 {
        len + c.last_key
    } else {
        c.last_key
    };
    Some(
        (c.first_key..=last)
            .step_by(c.step.max(1) as usize)
            .filter_map(|i| args.get(i as usize).cloned())
            .collect(),
    )
}

/// `COMMAND [subcommand ...]`'s reply. `COMMAND DOCS` answers with no documentation.
pub fn command_reply(args: &[Bytes]) -> Frame {
    let Some((sub, rest)) = args.split_first() else {
        return Frame::Array(COMMANDS.iter().map(command_frame).collect());
    };
    match sub.to_ascii_lowercase().as_slice() {
        b"info" if rest.is_empty() => Frame::Array(COMMANDS.iter().map(command_frame).collect()),
        b"info" => Frame::Array(
            rest.iter()
                .map(|name| command_spec(name).map_or(Frame::Null, command_frame))
                .collect(),
        ),
        b"count" => Frame::Integer(COMMANDS.len() as i64),
        b"list" => Frame::Array(COMMANDS.iter().map(|c| text(c.name)).collect()),
        b"docs" => Frame::Map(Vec::new()),
        b"getkeys" => match command_keys(rest) {
            Some(keys) if !keys.is_empty() => {
                Frame::Array(keys.into_iter().map(Frame::Bulk).collect())
            }
            Some(_) => Frame::Error("ERR The command has no key arguments".into()),
            None => Frame::Error("ERR Invalid command specified".into()),
        },
        _ => Frame::Error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            String::from_utf8_lossy(sub)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn topology() -> Topology {
        let node = |id: u32, up: bool| NodeView {
            name: node_name(7, id),
            resp: addr(6380 + id as u16),
            bus: addr(7000 + id as u16),
            up,
        };
        Topology {
            me: 1,
            nodes: vec![node(0, true), node(1, true), node(2, false)],
            ranges: vec![
                SlotRange {
                    first: 0,
                    last: 8191,
                    master: 0,
                    replicas: vec![1, 2],
                },
                SlotRange {
                    first: 8192,
                    last: 8192,
                    master: 1,
                    replicas: vec![],
                },
                SlotRange {
                    first: 8193,
                    last: 16383,
                    master: 2,
                    replicas: vec![0],
                },
            ],
            epoch: 4,
        }
    }

    #[test]
    fn node_names_are_forty_hex_digits_and_distinct() {
        let a = node_name(u64::MAX >> 1, 0);
        assert_eq!(a.len(), 40);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, node_name(u64::MAX >> 1, 1));
    }

    #[test]
    fn cluster_slots_lists_each_ranges_master_then_its_up_replicas_that_master_nothing() {
        let port = |node: &Frame| match node {
            Frame::Array(fields) => match fields[1] {
                Frame::Integer(port) => port,
                _ => panic!("{fields:?}"),
            },
            other => panic!("{other:?}"),
        };
        let node = |id: u32, up: bool| NodeView {
            name: node_name(7, id),
            resp: addr(6380 + id as u16),
            bus: addr(7000 + id as u16),
            up,
        };
        let topology = Topology {
            me: 0,
            nodes: vec![node(0, true), node(1, true), node(2, true), node(3, false)],
            ranges: vec![
                SlotRange {
                    first: 0,
                    last: 8191,
                    master: 0,
                    replicas: vec![1, 2, 3],
                },
                SlotRange {
                    first: 8192,
                    last: 16383,
                    master: 1,
                    replicas: vec![0, 2],
                },
            ],
            epoch: 4,
        };
        let Frame::Array(ranges) = slots_frame(&topology) else {
            panic!("an array")
        };
        let listed: Vec<Vec<i64>> = ranges
            .iter()
            .map(|range| match range {
                Frame::Array(fields) => fields[2..].iter().map(port).collect(),
                other => panic!("{other:?}"),
            })
            .collect();
        // Node 2 masters nothing: a replica of both. Node 3 is down and node 0 and 1
        // master ranges: none of them is listed as a replica.
        assert_eq!(listed, vec![vec![6380, 6382], vec![6381, 6382]]);
    }

    #[test]
    fn key_slots_follow_redis_cluster_with_hash_tags() {
        assert_eq!(slot_of_keys([&b"foo"[..]]), Ok(Some(12182)));
        assert_eq!(
            slot_of_keys([&b"{user1000}.following"[..], b"{user1000}.followers"]),
            Ok(Some(kv_engine::kv::slot_of(b"user1000")))
        );
        assert_eq!(slot_of_keys([&b"a"[..], b"b"]), Err(CrossSlot));
        assert_eq!(slot_of_keys(std::iter::empty()), Ok(None));
    }

    #[test]
    fn cluster_nodes_lists_every_node_with_its_ranges() {
        let text = nodes_text(&topology());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].ends_with(" master - 0 0 4 connected 0-8191"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains(" myself,master - "), "{}", lines[1]);
        assert!(lines[1].ends_with(" 8192"), "{}", lines[1]);
        assert!(lines[2].contains("@7002 master,fail - "), "{}", lines[2]);
        assert_eq!(lines[0].split(' ').count(), 9);
    }

    #[test]
    fn cluster_info_counts_assigned_and_failed_slots() {
        let info = info_text(&topology());
        assert!(info.contains("cluster_state:ok\r\n"), "{info}");
        assert!(info.contains("cluster_slots_fail:8191\r\n"), "{info}");
        assert!(info.contains("cluster_size:3\r\n"), "{info}");
    }

    #[test]
    fn redirects_name_the_slot_and_address() {
        let route = Route::Elsewhere(addr(6390));
        assert_eq!(
            redirect(&route, 12182, false),
            Frame::Error("MOVED 12182 127.0.0.1:6390".into())
        );
        assert_eq!(
            redirect(&route, 7, true),
            Frame::Error("ASK 7 127.0.0.1:6390".into())
        );
        assert!(
            matches!(redirect(&Route::Serve, 7, true), Frame::Error(m) if m.starts_with("TRYAGAIN"))
        );
    }

    #[test]
    fn command_describes_key_positions() {
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        assert_eq!(
            command_keys(&[b("MGET"), b("a"), b("b")]),
            Some(vec![b("a"), b("b")])
        );
        assert_eq!(
            command_keys(&[b("set"), b("k"), b("v")]),
            Some(vec![b("k")])
        );
        assert_eq!(command_keys(&[b("get")]), None);
        assert_eq!(command_keys(&[b("ping")]), Some(vec![]));
        let Frame::Array(all) = command_reply(&[]) else {
            panic!()
        };
        assert_eq!(all.len(), COMMANDS.len());
        let Frame::Array(fields) = &all[0] else {
            panic!()
        };
        assert_eq!(fields.len(), 10);
        assert_eq!(
            command_reply(&[b("info"), b("nosuch")]),
            Frame::Array(vec![Frame::Null])
        );
    }
}
