//! `kv admin`: the cluster's status, the shard master's commands (query, join, leave,
//! move), and a primary/backup cluster's view. Every argument is checked against the cluster file before anything is sent, so
//! a mistake gets one clear line and changes nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kv_engine::kv::ShardId;
use kv_replication::shardmaster::{Command, Config, ConfigNum, GroupId, Reply};
use kv_server::config::{span, ClusterConfig};
use serde_json::json;

/// `kv admin` subcommands.
#[derive(clap::Subcommand)]
pub enum AdminCommand {
    /// Every node's replicas: role, ballot, decided/applied index, shards, WAL and snapshot
    /// sizes.
    Status {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Print JSON: one object per node, each replica's fields typed (integers as
        /// numbers, `true`/`false` as booleans, a value shown as `-` as null).
        #[arg(long)]
        json: bool,
    },
    /// A primary/backup cluster's current view, from its view service: view number,
    /// primary, backup, and whether the primary acknowledged it.
    View {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show configuration NUM (the latest without it): its groups and their shards.
    Query {
        /// The configuration number.
        num: Option<u64>,
        #[command(flatten)]
        cluster: ClusterArg,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add group GID (from the cluster file) to the configuration; shards rebalance onto it.
    Join {
        /// The group id.
        gid: u64,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Remove group GID from the configuration; its shards move to the others.
    Leave {
        /// The group id.
        gid: u64,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Put shard SHARD on group GID.
    Move {
        /// The shard.
        shard: u32,
        /// The group id.
        gid: u64,
        #[command(flatten)]
        cluster: ClusterArg,
    },
}

/// The cluster file and how long to wait.
#[derive(clap::Args)]
pub struct ClusterArg {
    /// The cluster file.
    #[arg(long, default_value = "./kv-data/cluster.toml")]
    cluster: PathBuf,
    /// Give up after this many seconds without an answer.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

impl ClusterArg {
    fn load(&self) -> Result<ClusterConfig> {
        Ok(ClusterConfig::load(&self.cluster)?)
    }
}

pub fn run(command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::Status { cluster, json } => status(&cluster.load()?, json),
        AdminCommand::View { cluster, json } => view(&cluster, json),
        AdminCommand::Query { num, cluster, json } => {
            let config = sharded(&cluster)?;
            let reply = call(
                &config,
                &cluster,
                Command::Query {
                    num: num.map(ConfigNum),
                },
            )?;
            let Reply::Config(shown) = reply else {
                bail!("unexpected answer {reply:?}");
            };
            if let Some(num) = num {
                if shown.num() != ConfigNum(num) {
                    bail!(
                        "configuration {num} does not exist yet; the latest is {}",
                        shown.num().0
                    );
                }
            }
            print_config(&config, &shown, json);
            Ok(())
        }
        AdminCommand::Join { gid, cluster } => {
            let config = sharded(&cluster)?;
            known_group(&config, gid)?;
            let servers = config.servers(gid);
            let command = Command::Join {
                group: GroupId(gid),
                servers,
            };
            report(
                call(&config, &cluster, command)?,
                &format!("group {gid} joined"),
            )
        }
        AdminCommand::Leave { gid, cluster } => {
            let config = sharded(&cluster)?;
            known_group(&config, gid)?;
            // The shard master would accept it (the lab's semantics) and leave every shard
            // to no group: refused here, before anything is sent.
            let Reply::Config(latest) = call(&config, &cluster, Command::Query { num: None })?
            else {
                bail!("unexpected answer to a query");
            };
            let groups = latest.groups();
            if groups.len() == 1 && groups.contains_key(&GroupId(gid)) {
                bail!(
                    "refused: group {gid} is the last group of configuration {}; without it \
                     no group would serve any shard (join another group first)",
                    latest.num().0
                );
            }
            let command = Command::Leave {
                group: GroupId(gid),
            };
            report(
                call(&config, &cluster, command)?,
                &format!("group {gid} left"),
            )
        }
        AdminCommand::Move {
            shard,
            gid,
            cluster,
        } => {
            let config = sharded(&cluster)?;
            let shards = config.shards().expect("sharded");
            if shard >= shards {
                bail!(
                    "no shard {shard}: the cluster has shards {}",
                    span(0u32, shards - 1)
                );
            }
            known_group(&config, gid)?;
            let command = Command::Move {
                shard: ShardId(shard),
                group: GroupId(gid),
            };
            report(
                call(&config, &cluster, command)?,
                &format!("shard {shard} moved to group {gid}"),
            )
        }
    }
}

/// Prints the view service's current view.
fn view(cluster: &ClusterArg, json: bool) -> Result<()> {
    let config = cluster.load()?;
    let Some(view_service) = config.view_service else {
        bail!(
            "{} describes a {} cluster: only a primary-backup cluster has views",
            cluster.cluster.display(),
            config.mode
        );
    };
    let node = config.node(view_service).expect("validated");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let timeout = Duration::from_secs(cluster.timeout);
    let shown = rt
        .block_on(kv_server::client::view(
            &config.key()?,
            view_service,
            node.peer,
            timeout,
        ))
        .with_context(|| {
            format!(
                "asking the view service (node {view_service}, {})",
                node.peer
            )
        })?;
    let name = |n: Option<kv_replication::types::NodeId>| n.map(|n| n.0);
    if json {
        let value = json!({
            "viewnum": shown.viewnum,
            "primary": name(shown.primary_node()),
            "backup": name(shown.backup_node()),
            "view_service": view_service,
        });
        out!("{value}");
        return Ok(());
    }
    let show = |n: Option<kv_replication::types::NodeId>| {
        n.map_or("none".to_string(), |n| format!("node {}", n.0))
    };
    out!("viewnum: {}", shown.viewnum);
    out!("primary: {}", show(shown.primary_node()));
    out!("backup: {}", show(shown.backup_node()));
    Ok(())
}

fn sharded(cluster: &ClusterArg) -> Result<ClusterConfig> {
    let config = cluster.load()?;
    if !config.is_sharded() {
        bail!(
            "{} describes an unsharded cluster (no [master] section): it has no shard master",
            cluster.cluster.display()
        );
    }
    Ok(config)
}

fn known_group(config: &ClusterConfig, gid: u64) -> Result<()> {
    if config.groups.iter().any(|g| g.gid == gid) {
        return Ok(());
    }
    let known: Vec<String> = config.groups.iter().map(|g| g.gid.to_string()).collect();
    bail!(
        "group {gid} is not in the cluster file (its groups: {})",
        known.join(", ")
    )
}

fn call(config: &ClusterConfig, cluster: &ClusterArg, command: Command) -> Result<Reply> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let timeout = Duration::from_secs(cluster.timeout);
    rt.block_on(kv_server::sharded::master_call(config, command, timeout))
        .map_err(|e| anyhow::anyhow!(e))
}

fn report(reply: Reply, done: &str) -> Result<()> {
    match reply {
        Reply::Changed(num) => {
            out!("{done}: configuration {}", num.0);
            Ok(())
        }
        Reply::Unchanged(num) => {
            out!("nothing to change: configuration {} stays", num.0);
            Ok(())
        }
        Reply::Refused(why) => bail!("refused: {why}"),
        other => bail!("unexpected answer {other:?}"),
    }
}

/// The node that runs endpoint `n<id>`, for display.
fn node_of(config: &ClusterConfig, server: &str) -> Option<u32> {
    let endpoint = kv_replication::cluster::resolve(server)?;
    config.endpoints().get(endpoint.index()).map(|e| e.node)
}

/// Shard ids as ranges: `0-3, 7, 9-10`.
fn ranges(shards: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < shards.len() {
        let start = shards[i];
        let mut end = start;
        while i + 1 < shards.len() && shards[i + 1] == end + 1 {
            i += 1;
            end = shards[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

fn print_config(config: &ClusterConfig, shown: &Arc<Config>, json: bool) {
    let mut by_group: BTreeMap<GroupId, Vec<u32>> = BTreeMap::new();
    for (shard, owner) in shown.shards().iter().enumerate() {
        by_group.entry(*owner).or_default().push(shard as u32);
    }
    if json {
        let groups: Vec<_> = shown
            .groups()
            .iter()
            .map(|(gid, servers)| {
                json!({
                    "gid": gid.0,
                    "servers": servers,
                    "nodes": servers.iter().filter_map(|s| node_of(config, s)).collect::<Vec<_>>(),
                    "shards": by_group.get(gid).cloned().unwrap_or_default(),
                })
            })
            .collect();
        let owners: Vec<u64> = shown.shards().iter().map(|g| g.0).collect();
        let value = json!({ "num": shown.num().0, "groups": groups, "shards": owners });
        out!("{value}");
        return;
    }
    out!(
        "configuration {}: {} groups, {} shards",
        shown.num().0,
        shown.groups().len(),
        shown.shards().len()
    );
    for (gid, servers) in shown.groups() {
        let nodes: Vec<String> = servers
            .iter()
            .map(|s| match node_of(config, s) {
                Some(n) => format!("node {n}"),
                None => s.clone(),
            })
            .collect();
        let shards = by_group.get(gid).map(|s| ranges(s)).unwrap_or_default();
        out!(
            "  group {}: {} shards [{shards}] on {}",
            gid.0,
            by_group.get(gid).map_or(0, Vec::len),
            nodes.join(", ")
        );
    }
    if let Some(unowned) = by_group.get(&GroupId::NONE) {
        out!(
            "  unassigned: {} shards [{}]",
            unowned.len(),
            ranges(unowned)
        );
    }
}

fn status(config: &ClusterConfig, json: bool) -> Result<()> {
    let key = config.key()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut nodes = Vec::new();
    for node in &config.nodes {
        let answer = rt.block_on(kv_server::client::status(
            &key,
            node.id,
            node.peer,
            Duration::from_secs(3),
        ));
        if !json {
            out!(
                "node {} (peer {}, resp {}, admin {})",
                node.id,
                node.peer,
                node.resp,
                node.admin
            );
            match &answer {
                Ok(text) => {
                    for line in text.lines().filter(|l| !l.is_empty()) {
                        out!("  {line}");
                    }
                }
                Err(e) => out!("  unreachable: {e}"),
            }
            continue;
        }
        let parts = match &answer {
            Ok(text) => parse_parts(text),
            Err(_) => Vec::new(),
        };
        nodes.push(json!({
            "node": node.id,
            "peer": node.peer.to_string(),
            "resp": node.resp.to_string(),
            "admin": node.admin.to_string(),
            "reachable": answer.is_ok(),
            "replicas": parts,
        }));
    }
    if json {
        out!(
            "{}",
            json!({ "cluster_id": config.cluster_id, "nodes": nodes })
        );
    }
    Ok(())
}

/// A node's status text as one JSON object per replica: `[master]` / `[group G]`
/// headings start a replica (an unsharded node's text is one replica), each `key: value`
/// line a field, its value typed by [`typed`].
fn parse_parts(text: &str) -> Vec<serde_json::Value> {
    let mut parts: Vec<serde_json::Map<String, serde_json::Value>> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(heading) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let mut part = serde_json::Map::new();
            let group = heading.strip_prefix("group ").unwrap_or(heading);
            part.insert("group".into(), typed(group));
            parts.push(part);
            continue;
        }
        if parts.is_empty() {
            parts.push(serde_json::Map::new());
        }
        if let Some((key, value)) = line.split_once(": ") {
            let part = parts.last_mut().expect("one part at least");
            part.insert(key.to_string(), typed(value));
        }
    }
    parts.into_iter().map(serde_json::Value::Object).collect()
}

/// A status value as JSON: an integer is a number, `true` and `false` booleans, `-` (no
/// value yet, such as the applied index of a replica that applied nothing) null, and
/// anything else (a role, a ballot such as `3.1`, a reason) a string.
fn typed(value: &str) -> serde_json::Value {
    match value {
        "-" | "" => serde_json::Value::Null,
        "true" => json!(true),
        "false" => json!(false),
        _ if value.bytes().all(|b| b.is_ascii_digit()) => match value.parse::<u64>() {
            Ok(n) => json!(n),
            Err(_) => json!(value),
        },
        _ if value.starts_with('-') && value[1..].bytes().all(|b| b.is_ascii_digit()) => {
            match value.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => json!(value),
            }
        }
        _ => json!(value),
    }
}

/// Groups of a sharded cluster's file (or a primary/backup cluster's roles), for `kv up`'s
/// banner.
pub fn group_lines(config: &ClusterConfig) -> Vec<String> {
    if let Some(view_service) = config.view_service {
        let servers: Vec<String> = config.pb_servers().iter().map(|n| n.to_string()).collect();
        return vec![format!(
            "view service on node {view_service}; primary/backup servers on nodes {}",
            servers.join(", ")
        )];
    }
    config
        .groups
        .iter()
        .map(|g| {
            let nodes: Vec<String> = g.nodes.iter().map(|n| n.to_string()).collect();
            format!("group {} on nodes {}", g.gid, nodes.join(", "))
        })
        .chain(config.master.iter().map(|m| {
            let nodes: Vec<String> = m.nodes.iter().map(|n| n.to_string()).collect();
            format!(
                "shard master ({} shards) on nodes {}",
                m.shards,
                nodes.join(", ")
            )
        }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_lists_print_as_ranges() {
        assert_eq!(ranges(&[0, 1, 2, 3, 7, 9, 10]), "0-3, 7, 9-10");
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn status_text_parses_into_one_object_per_replica() {
        let parts = parse_parts("[master]\nrole: leader\n\n[group 100]\nkeys: 3\nready: true\n");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0]["group"], "master");
        assert_eq!(parts[1]["group"], 100);
        assert_eq!(parts[1]["keys"], 3);
        let single = parse_parts("role: leader\nready: true\n");
        assert_eq!(single.len(), 1);
        assert_eq!(single[0]["role"], "leader");
    }

    #[test]
    fn status_values_become_json_numbers_booleans_and_nulls() {
        let parts = parse_parts(
            "[group 101]\nrole: follower\nballot: 3.1\nballot_round: 3\napplied_index: 5\n\
             decided_index: -\nfence: -\nready: false\nacked: true\n\
             storage_failed: disk full\nbig: 18446744073709551615\nhuge: 18446744073709551616\n",
        );
        let part = &parts[0];
        assert_eq!(part["group"], json!(101));
        assert_eq!(part["role"], json!("follower"));
        // A ballot reads like a decimal but is two numbers: it stays a string.
        assert_eq!(part["ballot"], json!("3.1"));
        assert_eq!(part["ballot_round"], json!(3));
        assert_eq!(part["applied_index"], json!(5));
        assert!(part["applied_index"].is_u64());
        assert!(part["decided_index"].is_null());
        assert!(part["fence"].is_null());
        assert_eq!(part["ready"], json!(false));
        assert_eq!(part["acked"], json!(true));
        assert_eq!(part["storage_failed"], json!("disk full"));
        assert_eq!(part["big"], json!(u64::MAX));
        // Past u64 it is kept exactly, as text, rather than rounded.
        assert_eq!(part["huge"], json!("18446744073709551616"));
        assert_eq!(typed("-7"), json!(-7));
    }
}
