//! Issue 9, item 3, on real processes, step by step as reported: a node whose data
//! directory is restored from an older copy of itself must not vote on what it no longer
//! remembers. Before the restart check, `GET rollback_key` answered nil with only the
//! restored node and the node that missed the write up, and starting the third node then
//! panicked ("decided twice with different values").
//!
//! The copy is taken with the node stopped (SIGTERM, so the copy is a consistent image of a
//! cleanly closed directory, as an operator's backup would be); the nodes that go down
//! later are SIGKILLed.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Cluster;

/// How long the GET must stay unanswered while the only intact copy of the write is down.
/// An assertion of absence, so a wait; the test does not depend on its length.
const NO_ANSWER_FOR: Duration = Duration::from_secs(5);
/// Hang guard for an answer that must come.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `GET key` on a raw RESP connection (a reply can be waited for in pieces).
fn send_get(stream: &mut TcpStream, key: &str) {
    let wire = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    stream.write_all(wire.as_bytes()).expect("send GET");
}

/// Reads one whole reply (a bulk string, nil, or a one-line reply) as text.
fn read_reply(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if stream.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        reply.push(byte[0]);
        let text = String::from_utf8_lossy(&reply);
        let Some((first, rest)) = text.split_once("\r\n") else {
            continue;
        };
        match first.strip_prefix('$').map(str::parse::<i64>) {
            Some(Ok(len)) if len >= 0 && rest.len() < len as usize + 2 => continue,
            _ => return Ok(text.trim_end().to_string()),
        }
    }
}

/// A connection to a node's RESP port, once the (just started) node listens.
fn connect(cluster: &Cluster, id: u32) -> TcpStream {
    common::wait_for("the node listens", ANSWER_TIMEOUT, || {
        TcpStream::connect(cluster.node(id).resp).ok()
    })
}

#[test]
fn a_node_restored_from_an_old_copy_of_its_directory_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let mut writer = cluster.redis(0, ANSWER_TIMEOUT);
    for i in 0..20 {
        let _: () = redis::cmd("SET")
            .arg(format!("warm-{i}"))
            .arg("up")
            .query(&mut writer)
            .expect("SET before the copy");
    }

    // Copy node 1's directory (stopped, so the copy is consistent); restart it.
    let backup = cluster.dir.path().join("node-1-backup");
    cluster.stop_node(1);
    cluster.copy_data_dir(1, &backup);
    cluster.start_node(1);
    cluster.wait_ready(1);

    // Stop node 2; write through the two others.
    cluster.kill_node(2);
    let reply: String = redis::cmd("SET")
        .arg("rollback_key")
        .arg("v1")
        .query(&mut writer)
        .expect("SET with nodes 0 and 1 up");
    assert_eq!(reply, "OK");
    drop(writer);

    // Stop nodes 0 and 1; restore node 1 from the copy; start 1 and 2.
    cluster.kill_node(0);
    cluster.kill_node(1);
    cluster.restore_data_dir(1, &backup);
    cluster.start_node(1);
    cluster.start_node(2);

    // Neither may answer: node 1's disk is older than what it told the others, and node 2
    // never saw the write. Nil here is the lost write.
    let mut pending: Vec<(u32, TcpStream)> = [1, 2]
        .into_iter()
        .map(|id| {
            let mut stream = connect(&cluster, id);
            send_get(&mut stream, "rollback_key");
            (id, stream)
        })
        .collect();
    for (id, stream) in &mut pending {
        stream.set_read_timeout(Some(NO_ANSWER_FOR)).unwrap();
        match read_reply(stream) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!(
                "node {id} answered GET rollback_key without the only intact copy of the \
                 write: {other:?}; its log:\n{}",
                cluster.log(*id)
            ),
        }
    }

    // With node 0 back, the same GETs answer, with the write.
    cluster.start_node(0);
    for (id, stream) in &mut pending {
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        let reply = read_reply(stream).unwrap_or_else(|e| {
            panic!(
                "node {id}: no answer to GET rollback_key once node 0 is back: {e}; log:\n{}",
                cluster.log(*id)
            )
        });
        assert_eq!(reply, "$2\r\nv1", "node {id}'s answer to GET rollback_key");
    }
    cluster.wait_ready_all();
    for id in 0..cluster.len() {
        let mut connection = cluster.redis(id, ANSWER_TIMEOUT);
        let value: Option<String> = redis::cmd("GET")
            .arg("rollback_key")
            .query(&mut connection)
            .expect("GET");
        assert_eq!(
            value.as_deref(),
            Some("v1"),
            "GET rollback_key on node {id}"
        );
    }

    cluster.assert_no_panic();
    let incarnation = cluster.status_u64(1, "incarnation");
    assert!(
        incarnation > 0,
        "node 1 rejoined through the lost-disk rebuild (incarnation {incarnation})"
    );
}
