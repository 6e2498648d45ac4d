//! The admin HTTP endpoint: `/livez` (the process is up), `/readyz` (the replica can serve:
//! not rebuilding after a lost disk) and `/metrics` (Prometheus text format).
//!
//! A deliberately small HTTP/1.1 responder: it reads one request head (bounded), answers,
//! and closes. It only reads: GET of those three paths (a query string after the path is
//! ignored); any other method gets 405 (before the path is looked at), any other path 404,
//! a malformed or oversized head 400. Nothing here changes the cluster; that goes through
//! `kv admin` on the native protocol. At most `connections_max` connections are open at
//! once, each for at most [`REQUEST_TIMEOUT`].

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::limits::Gate;
use crate::metrics::{Exposition, HistogramSnapshot, Kind, MICROS, UNITS};
use crate::node::{Input, Status};

/// Largest request head read.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Longest an admin connection stays open.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the admin endpoint reads a node's status: one part per replica it hosts, each
/// with its group's name (empty for the unsharded node's one core, `100` or `master` for
/// a sharded node's replicas).
pub trait StatusSource: Clone + Send + Sync + 'static {
    /// Every part's status; `None` if the node is stopping.
    fn parts(&self) -> impl std::future::Future<Output = Option<Vec<(String, Status)>>> + Send;
}

impl<M: Send + 'static, Q: Send + 'static, R: Send + 'static> StatusSource
    for mpsc::Sender<Input<M, Q, R>>
{
    async fn parts(&self) -> Option<Vec<(String, Status)>> {
        Some(vec![(String::new(), crate::node::ask_status(self).await?)])
    }
}

/// Serves node `node`'s admin HTTP until shutdown, at most `connections_max` connections
/// at once.
pub async fn serve<S: StatusSource>(
    listener: TcpListener,
    node: u32,
    source: S,
    mut shutdown: watch::Receiver<bool>,
    connections_max: usize,
) {
    crate::metrics::PROCESS.start();
    let mut gate = Gate::new("admin", connections_max);
    while let Some(admitted) = gate.accept(&listener, &mut shutdown).await {
        let source = source.clone();
        tokio::spawn(async move {
            let respond = respond(admitted.stream, node, source);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond).await;
            drop(admitted.permit);
        });
    }
}

async fn respond<S: StatusSource>(mut stream: TcpStream, node: u32, source: S) {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > HEAD_BYTES_MAX {
            let _ = write(&mut stream, 400, "request head too large\n").await;
            return;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    // The path is the target up to its query string, which nothing here reads.
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    if method != "GET" {
        let _ = write(&mut stream, 405, "only GET is served\n").await;
        return;
    }
    let _ = match path {
        "/livez" => write(&mut stream, 200, "ok\n").await,
        "/readyz" => match source.parts().await {
            Some(parts) if parts.iter().all(|(_, s)| s.ready) => {
                write(&mut stream, 200, "ready\n").await
            }
            _ => write(&mut stream, 503, "not ready\n").await,
        },
        "/metrics" => match source.parts().await {
            Some(parts) => write(&mut stream, 200, &metrics_of(&parts, node)).await,
            None => write(&mut stream, 503, "node stopping\n").await,
        },
        _ => write(&mut stream, 404, "not found\n").await,
    };
}

/// Renders one unlabelled status (a node's only core) as Prometheus text.
pub fn metrics(status: &Status, node: u32) -> String {
    metrics_of(&[(String::new(), status.clone())], node)
}

/// How a core status field is exposed: its family, type and help. Fields not listed here
/// whose value is an integer are exposed as gauges `kv_<field>`; other values (text such
/// as a halt reason, `-` for "none yet") are not exposed.
struct Field {
    field: &'static str,
    metric: &'static str,
    kind: Kind,
    help: &'static str,
}

const fn field(field: &'static str, metric: &'static str, kind: Kind, help: &'static str) -> Field {
    Field {
        field,
        metric,
        kind,
        help,
    }
}

/// The core status fields with a family of their own.
const FIELDS: &[Field] = &[
    field(
        "ballot_round",
        "kv_paxos_ballot_round",
        Kind::Gauge,
        "Round of the highest Paxos ballot this replica promised.",
    ),
    field(
        "ballot_node",
        "kv_paxos_ballot_node",
        Kind::Gauge,
        "Node whose Paxos ballot this replica promised last.",
    ),
    field(
        "decided_index",
        "kv_decided_index",
        Kind::Gauge,
        "Highest log instance known decided.",
    ),
    field(
        "applied_index",
        "kv_applied_index",
        Kind::Gauge,
        "Highest log instance applied to the state machine.",
    ),
    field(
        "paxos_min",
        "kv_paxos_min_index",
        Kind::Gauge,
        "Lowest log instance still held (those below are forgotten).",
    ),
    field(
        "pending_requests",
        "kv_pending_requests",
        Kind::Gauge,
        "Client requests waiting to be decided.",
    ),
    field(
        "incarnation",
        "kv_incarnation",
        Kind::Gauge,
        "The replica's incarnation (grows when it rebuilds after a lost disk).",
    ),
    field(
        "boots",
        "kv_boots_total",
        Kind::Counter,
        "Times the replica has started from its disk.",
    ),
    field(
        "fence",
        "kv_rebuild_fence_index",
        Kind::Gauge,
        "After a rebuild, the highest instance the rebuilding majority reported.",
    ),
    field(
        "sessions",
        "kv_client_sessions",
        Kind::Gauge,
        "Clients in the at-most-once table.",
    ),
    field(
        "live_bytes",
        "kv_live_bytes",
        Kind::Gauge,
        "Bytes of live data in the state machine.",
    ),
    field(
        "transfers_in",
        "kv_state_transfers_incoming",
        Kind::Gauge,
        "State transfers being received.",
    ),
    field(
        "transfers_out",
        "kv_state_transfers_outgoing",
        Kind::Gauge,
        "State transfers being served.",
    ),
    field(
        "installs",
        "kv_state_transfers_installed_total",
        Kind::Counter,
        "State transfers installed since the replica started.",
    ),
    field(
        "leader_changes",
        "kv_leader_changes_total",
        Kind::Counter,
        "Times the leader this replica knows changed since it started.",
    ),
    field(
        "proposals_decided",
        "kv_proposals_decided_total",
        Kind::Counter,
        "Instances this replica proposed that were decided with its value.",
    ),
    field(
        "proposals_failed",
        "kv_proposals_failed_total",
        Kind::Counter,
        "Instances this replica proposed that were decided with another value or abandoned.",
    ),
    field(
        "reads_indexed",
        "kv_reads_indexed_total",
        Kind::Counter,
        "Reads answered at a read index, without a log round.",
    ),
    field(
        "reads_logged",
        "kv_reads_logged_total",
        Kind::Counter,
        "Reads sent through the log.",
    ),
    field(
        "read_rounds_leased",
        "kv_read_rounds_leased_total",
        Kind::Counter,
        "Read rounds a leader released under its lease, without confirming leadership.",
    ),
    field("keys", "kv_keys", Kind::Gauge, "Keys held."),
    field(
        "config",
        "kv_shard_config_num",
        Kind::Gauge,
        "Number of the newest shard configuration known.",
    ),
    field(
        "configs",
        "kv_shard_configs",
        Kind::Gauge,
        "Shard configurations the shard master holds.",
    ),
    field(
        "groups",
        "kv_shard_groups",
        Kind::Gauge,
        "Replica groups in the newest shard configuration.",
    ),
    field(
        "shards_serving",
        "kv_shards_serving",
        Kind::Gauge,
        "Shards this group serves.",
    ),
    field(
        "shards_arriving",
        "kv_shards_arriving",
        Kind::Gauge,
        "Shards this group waits to receive.",
    ),
    field(
        "shards_leaving",
        "kv_shards_leaving",
        Kind::Gauge,
        "Shards this group holds for a group that has yet to take them.",
    ),
];

/// Core status fields not exposed as numbers: text, or exposed another way (`role` as
/// the `kv_role` state set, `group` as a label, `ballot` as round and node).
const NOT_NUMBERS: &[&str] = &["role", "ballot", "group", "halted"];

/// Roles a Paxos replica can be in (`kv_role` has one sample per role, 1 for the current
/// one).
const ROLES: &[&str] = &["leader", "follower", "verifying", "recovering", "halted"];

/// One family's samples across parts, gathered before it is written.
struct Family {
    name: String,
    kind: Kind,
    help: String,
    samples: Vec<(Vec<(String, String)>, Sample)>,
}

enum Sample {
    Number(u64),
    Histogram(Box<HistogramSnapshot>, f64),
}

/// Families in first-seen order.
#[derive(Default)]
struct Families(Vec<Family>);

impl Families {
    fn add(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        labels: Vec<(String, String)>,
        sample: Sample,
    ) {
        let index = match self.0.iter().position(|f| f.name == name) {
            Some(index) => index,
            None => {
                self.0.push(Family {
                    name: name.to_string(),
                    kind,
                    help: help.to_string(),
                    samples: Vec::new(),
                });
                self.0.len() - 1
            }
        };
        self.0[index].samples.push((labels, sample));
    }

    fn write(self, out: &mut Exposition) {
        for family in self.0 {
            out.family(&family.name, family.kind, &family.help);
            for (labels, sample) in &family.samples {
                let labels: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                match sample {
                    Sample::Number(value) => out.sample(&labels, value),
                    Sample::Histogram(snapshot, divisor) => {
                        out.histogram(&labels, snapshot, *divisor)
                    }
                }
            }
        }
    }
}

/// Adds one part's families: its core's fields, its storage figures and histograms.
fn add_part(families: &mut Families, labels: &[(String, String)], status: &Status) {
    let with = |extra: Option<(&str, &str)>| {
        let mut labels = labels.to_vec();
        labels.extend(extra.map(|(k, v)| (k.to_string(), v.to_string())));
        labels
    };
    if let Some((_, role)) = status.core.iter().find(|(name, _)| *name == "role") {
        // A core with roles of its own (primary/backup's) reports its role alone.
        let own = (!ROLES.contains(&role.as_str())).then_some(role.as_str());
        for candidate in ROLES.iter().copied().chain(own) {
            families.add(
                "kv_role",
                Kind::Gauge,
                "The replica's role: 1 for the role it is in, 0 for the others.",
                with(Some(("role", candidate))),
                Sample::Number(u64::from(role.as_str() == candidate)),
            );
        }
    }
    for (name, value) in &status.core {
        if NOT_NUMBERS.contains(name) {
            continue;
        }
        let Ok(value) = value.parse::<u64>() else {
            continue;
        };
        match FIELDS.iter().find(|f| f.field == *name) {
            Some(f) => families.add(f.metric, f.kind, f.help, with(None), Sample::Number(value)),
            None => families.add(
                &format!("kv_{name}"),
                Kind::Gauge,
                &format!("The core's status field {name}."),
                with(None),
                Sample::Number(value),
            ),
        }
    }
    let storage: [(&str, Kind, &str, u64); 9] = [
        (
            "kv_ready",
            Kind::Gauge,
            "1 if the replica serves, 0 while it rebuilds or checks its disk.",
            u64::from(status.ready),
        ),
        (
            "kv_wal_bytes",
            Kind::Gauge,
            "Bytes of write-ahead log on disk.",
            status.wal_bytes,
        ),
        (
            "kv_snapshot_bytes",
            Kind::Gauge,
            "Bytes of snapshots on disk.",
            status.snapshot_bytes,
        ),
        (
            "kv_snapshot_index",
            Kind::Gauge,
            "Log index of the newest snapshot.",
            status.snapshot_index,
        ),
        (
            "kv_snapshots_skipped_total",
            Kind::Counter,
            "Snapshots skipped for want of disk room.",
            status.snapshots_skipped,
        ),
        (
            "kv_durable_index",
            Kind::Gauge,
            "Highest write-ahead log index known durable.",
            status.durable_index,
        ),
        (
            "kv_fsyncs_total",
            Kind::Counter,
            "Write-ahead log batches made durable (one fsync each).",
            status.fsyncs,
        ),
        (
            "kv_persisted_steps_total",
            Kind::Counter,
            "Persist steps the fsynced batches carried.",
            status.persisted_steps,
        ),
        (
            "kv_dropped_peer_messages_total",
            Kind::Counter,
            "Peer messages dropped because a peer's queue was full.",
            status.dropped_messages,
        ),
    ];
    for (name, kind, help, value) in storage {
        families.add(name, kind, help, with(None), Sample::Number(value));
    }
    families.add(
        "kv_fsync_duration_seconds",
        Kind::Histogram,
        "How long each write-ahead log fsync took.",
        with(None),
        Sample::Histogram(Box::new(status.fsync_micros), MICROS),
    );
    families.add(
        "kv_fsync_batch_size",
        Kind::Histogram,
        "Persist steps (append commands) each fsync made durable.",
        with(None),
        Sample::Histogram(Box::new(status.batch_appends), UNITS),
    );
}

/// The Prometheus text of node `node`: every part's families, each sample labelled with
/// `node` and, for a part with a name (a sharded node's `master` or group number), `group`;
/// then the process's own families ([`crate::metrics::PROCESS`]).
pub fn metrics_of(parts: &[(String, Status)], node: u32) -> String {
    let mut families = Families::default();
    for (group, status) in parts {
        let mut labels = vec![("node".to_string(), node.to_string())];
        if !group.is_empty() {
            labels.push(("group".to_string(), group.clone()));
        }
        add_part(&mut families, &labels, status);
    }
    let mut out = Exposition::new();
    families.write(&mut out);
    crate::metrics::PROCESS.render(&mut out, node);
    out.finish()
}

async fn write(stream: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let allow = if code == 405 { "allow: GET\r\n" } else { "" };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\n{allow}content-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(role: &str, ballot: &str) -> Status {
        Status {
            core: vec![
                ("role", role.to_string()),
                ("ballot", ballot.to_string()),
                ("ballot_round", "3".to_string()),
                ("decided_index", "-".to_string()),
                ("leader_changes", "2".to_string()),
                ("group", "100".to_string()),
                ("viewnum", "7".to_string()),
            ],
            fsyncs: 5,
            ..Status::default()
        }
    }

    #[test]
    fn fields_become_typed_families_labelled_with_node_and_group() {
        let page = metrics_of(
            &[
                ("master".into(), status("follower", "3.1")),
                ("100".into(), status("leader", "3.1")),
            ],
            4,
        );
        for line in [
            "# TYPE kv_leader_changes_total counter\n",
            "kv_leader_changes_total{node=\"4\",group=\"master\"} 2\n",
            "kv_leader_changes_total{node=\"4\",group=\"100\"} 2\n",
            "kv_paxos_ballot_round{node=\"4\",group=\"100\"} 3\n",
            "kv_role{node=\"4\",group=\"100\",role=\"leader\"} 1\n",
            "kv_role{node=\"4\",group=\"100\",role=\"follower\"} 0\n",
            "kv_role{node=\"4\",group=\"master\",role=\"follower\"} 1\n",
            "kv_fsyncs_total{node=\"4\",group=\"100\"} 5\n",
            "# HELP kv_viewnum The core's status field viewnum.\n",
            "kv_fsync_duration_seconds_count{node=\"4\",group=\"100\"} 0\n",
        ] {
            assert!(page.contains(line), "{line:?} missing from\n{page}");
        }
        assert_eq!(page.matches("# TYPE kv_role gauge\n").count(), 1);
        for absent in ["kv_ballot", "kv_decided_index", "kv_group"] {
            assert!(!page.contains(absent), "{absent} in\n{page}");
        }
    }

    #[test]
    fn a_role_of_another_kind_of_core_is_reported_alone() {
        let page = metrics(&status("primary", "1"), 0);
        assert!(
            page.contains("kv_role{node=\"0\",role=\"primary\"} 1\n"),
            "{page}"
        );
        assert!(
            page.contains("kv_role{node=\"0\",role=\"leader\"} 0\n"),
            "{page}"
        );
    }
}
