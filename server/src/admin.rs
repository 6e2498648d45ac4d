//! The admin HTTP endpoint: `/livez` (the process is up), `/readyz` (the replica can serve:
//! not rebuilding after a lost disk) and `/metrics` (Prometheus text format).
//!
//! A deliberately small HTTP/1.1 responder: it reads one request head (bounded), answers,
//! and closes. Anything else gets 404; a malformed or oversized head gets 400. At most
//! `connections_max` connections are open at once, each for at most [`REQUEST_TIMEOUT`].

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::limits::Gate;
use crate::node::{Input, Status};

/// Largest request head read.
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Longest an admin connection stays open.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves admin HTTP until shutdown, at most `connections_max` connections at once.
pub async fn serve<M: Send + 'static>(
    listener: TcpListener,
    inputs: mpsc::Sender<Input<M>>,
    mut shutdown: watch::Receiver<bool>,
    connections_max: usize,
) {
    let mut gate = Gate::new("admin", connections_max);
    while let Some(admitted) = gate.accept(&listener, &mut shutdown).await {
        let inputs = inputs.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, respond(admitted.stream, inputs)).await;
            drop(admitted.permit);
        });
    }
}

async fn respond<M: Send + 'static>(mut stream: TcpStream, inputs: mpsc::Sender<Input<M>>) {
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
        let _ = write(&mut stream, 400, "only GET is served\n").await;
        return;
    }
    let status = async {
        let (tx, rx) = oneshot::channel();
        inputs.send(Input::Status(tx)).await.ok()?;
        rx.await.ok()
    };
    let _ = match path {
        "/livez" => write(&mut stream, 200, "ok\n").await,
        "/readyz" => match status.await {
            Some(s) if s.ready => write(&mut stream, 200, "ready\n").await,
            _ => write(&mut stream, 503, "not ready\n").await,
        },
        "/metrics" => match status.await {
            Some(s) => write(&mut stream, 200, &metrics(&s)).await,
            None => write(&mut stream, 503, "node stopping\n").await,
        },
        _ => write(&mut stream, 404, "not found\n").await,
    };
}

/// Renders the status as Prometheus text: every numeric field is a gauge `kv_<name>`.
pub fn metrics(status: &Status) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, value: String| {
        if value.parse::<f64>().is_ok() {
            out.push_str(&format!("# TYPE kv_{name} gauge\nkv_{name} {value}\n"));
        }
    };
    for (name, value) in &status.core {
        gauge(name, value.clone());
    }
    gauge("ready", (status.ready as u8).to_string());
    gauge("wal_bytes", status.wal_bytes.to_string());
    gauge("snapshot_bytes", status.snapshot_bytes.to_string());
    gauge("snapshot_index", status.snapshot_index.to_string());
    gauge(
        "snapshots_skipped_total",
        status.snapshots_skipped.to_string(),
    );
    gauge("durable_index", status.durable_index.to_string());
    gauge("fsyncs_total", status.fsyncs.to_string());
    gauge("persisted_steps_total", status.persisted_steps.to_string());
    gauge(
        "dropped_peer_messages_total",
        status.dropped_messages.to_string(),
    );
    out
}

async fn write(stream: &mut TcpStream, code: u16, body: &str) -> std::io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await
}
