//! The admin HTTP endpoint: `/livez` (the process is up), `/readyz` (the replica can serve:
//! not rebuilding after a lost disk) and `/metrics` (Prometheus text format).
//!
//! A deliberately small HTTP/1.1 responder: it reads one request head (bounded), answers,
//! and closes. It only reads: GET of those three paths; any other method gets 405 (before
//! the path is looked at), any other path 404, a malformed or oversized head 400. Nothing
//! here changes the cluster; that goes through `kv admin` on the native protocol. At most
//! `connections_max` connections are open at once, each for at most [`REQUEST_TIMEOUT`].

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::limits::Gate;
use crate::node::{Input, Status};

/// Largest request head read.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Longest an admin connection stays open.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves admin HTTP until shutdown, at most `connections_max` connections at once.
/// Where the admin endpoint reads a node's status: one part per replica it hosts, each
/// with its label (empty for the unsharded node's one core, `group="100"` or
/// `group="master"` for a sharded node's replicas).
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

pub async fn serve<S: StatusSource>(
    listener: TcpListener,
    source: S,
    mut shutdown: watch::Receiver<bool>,
    connections_max: usize,
) {
    let mut gate = Gate::new("admin", connections_max);
    while let Some(admitted) = gate.accept(&listener, &mut shutdown).await {
        let source = source.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond(admitted.stream, source)).await;
            drop(admitted.permit);
        });
    }
}

async fn respond<S: StatusSource>(mut stream: TcpStream, source: S) {
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
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
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
            Some(parts) => write(&mut stream, 200, &metrics_of(&parts)).await,
            None => write(&mut stream, 503, "node stopping\n").await,
        },
        _ => write(&mut stream, 404, "not found\n").await,
    };
}

/// Renders the status as Prometheus text: every numeric field is a gauge `kv_<name>`.
pub fn metrics(status: &Status) -> String {
    metrics_of(&[(String::new(), status.clone())])
}

/// The samples of one status: each numeric field's name and value.
fn samples(status: &Status) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = status
        .core
        .iter()
        .map(|(name, value)| (name.to_string(), value.clone()))
        .collect();
    for (name, value) in [
        ("ready", u64::from(status.ready)),
        ("wal_bytes", status.wal_bytes),
        ("snapshot_bytes", status.snapshot_bytes),
        ("snapshot_index", status.snapshot_index),
        ("snapshots_skipped_total", status.snapshots_skipped),
        ("durable_index", status.durable_index),
        ("fsyncs_total", status.fsyncs),
        ("persisted_steps_total", status.persisted_steps),
        ("dropped_peer_messages_total", status.dropped_messages),
    ] {
        out.push((name.to_string(), value.to_string()));
    }
    out.retain(|(_, value)| value.parse::<f64>().is_ok());
    out
}

/// The Prometheus text of every part: one `# TYPE` line per metric, then its samples, each
/// with its part's label (such as `group="100"`) unless that is empty.
pub fn metrics_of(parts: &[(String, Status)]) -> String {
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for (label, status) in parts {
        let labels = if label.is_empty() {
            String::new()
        } else {
            format!("{{{label}}}")
        };
        for (name, value) in samples(status) {
            let line = format!("kv_{name}{labels} {value}\n");
            match by_name.iter_mut().find(|(n, _)| *n == name) {
                Some((_, lines)) => lines.push(line),
                None => by_name.push((name, vec![line])),
            }
        }
    }
    let mut out = String::new();
    for (name, lines) in by_name {
        out.push_str(&format!("# TYPE kv_{name} gauge\n"));
        for line in lines {
            out.push_str(&line);
        }
    }
    out
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
