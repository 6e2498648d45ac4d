//! Issue 9, item 2, on real processes: values of the documented maximum size commit one
//! after another with a stable leader. Before size-aware Paxos timers, six 16 MiB SETs
//! livelocked the group for good: each large accept outlived the retransmit and election
//! timers, so every SET changed the leader and the sixth never committed.

mod common;

use std::time::Duration;

use common::Cluster;
use kv_server::config::{Mode, Shape};
use kv_server::redis::VALUE_BYTES_MAX;

/// SETs of a maximum-size value, back to back.
const SETS: usize = 50;
/// Keys they overwrite in turn (keeps the live data at a few values).
const KEYS: usize = 3;
/// Hang guard for one command; never a measure of speed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The `i`th value: maximum size, its first bytes say which SET wrote it.
fn value(i: usize) -> Vec<u8> {
    let mut value = vec![b'a' + (i % 26) as u8; VALUE_BYTES_MAX];
    let tag = format!("set-{i}:");
    value[..tag.len()].copy_from_slice(tag.as_bytes());
    value
}

/// Every node's ballot, once all of them report the same one.
fn common_ballot(cluster: &Cluster) -> Vec<String> {
    common::wait_for(
        "every node reports the same ballot",
        COMMAND_TIMEOUT,
        || {
            let ballots: Vec<String> = (0..cluster.len())
                .map(|id| {
                    cluster
                        .status_fields(id)
                        .map(|s| s.get("ballot").to_string())
                })
                .collect::<Option<_>>()?;
            ballots.iter().all(|b| *b == ballots[0]).then_some(ballots)
        },
    )
}

#[test]
fn fifty_maximum_size_values_commit_back_to_back_without_a_leader_change() {
    let cluster = Cluster::start(3);
    let mut connections: Vec<redis::Connection> = (0..cluster.len())
        .map(|id| cluster.redis(id, COMMAND_TIMEOUT))
        .collect();
    let mut ballots = None;
    for i in 0..SETS {
        // Spread over the nodes: two of every three SETs reach a node that does not lead.
        let node = i % connections.len();
        let key = format!("big-{}", i % KEYS);
        let reply: redis::RedisResult<String> = redis::cmd("SET")
            .arg(&key)
            .arg(value(i))
            .query(&mut connections[node]);
        assert_eq!(
            reply.as_deref(),
            Ok("OK"),
            "SET {i} through node {node}; node logs:\n{}",
            (0..cluster.len())
                .map(|id| cluster.log(id))
                .collect::<Vec<_>>()
                .join("\n---\n")
        );
        if i == 0 {
            ballots = Some(common_ballot(&cluster));
        }
    }
    let after_first = ballots.expect("recorded after the first SET");
    let after_last: Vec<String> = (0..cluster.len())
        .map(|id| {
            cluster
                .status_fields(id)
                .expect("status")
                .get("ballot")
                .to_string()
        })
        .collect();
    assert_eq!(
        after_last, after_first,
        "every node's ballot after {SETS} SETs equals the one after the first: no leader change"
    );

    // Every key holds the last value written to it, read through every node.
    for (node, connection) in connections.iter_mut().enumerate() {
        for k in 0..KEYS {
            let last = (0..SETS).rev().find(|i| i % KEYS == k).expect("written");
            let read: Vec<u8> = redis::cmd("GET")
                .arg(format!("big-{k}"))
                .query(connection)
                .unwrap_or_else(|e| panic!("GET big-{k} through node {node}: {e}"));
            assert!(
                read == value(last),
                "big-{k} through node {node}: {} bytes starting {:?}, expected SET {last}'s value",
                read.len(),
                String::from_utf8_lossy(&read[..read.len().min(12)])
            );
        }
    }
    cluster.assert_no_panic();
}

/// The value limit holds for every write, not only for a SET's own bulk string: an APPEND
/// that would grow a value past it is refused, through RESP and through the native client,
/// and changes nothing. Before, sixty 1 MiB APPENDs to a maximum-size value built one of
/// 79 MB that no GET could return and no state transfer could carry: a replica of its
/// group that lost its disk never rebuilt. Here one does, and then serves the value.
#[test]
fn an_append_past_the_value_limit_is_refused_and_a_wiped_node_still_rebuilds() {
    let mut cluster = Cluster::start_sharded(
        3,
        Shape {
            replicas: 3,
            groups: 1,
            shards: 4,
            redis_cluster: false,
            mode: Mode::Paxos,
        },
    );
    let mut redis = cluster.redis(0, COMMAND_TIMEOUT);
    let reply: redis::RedisResult<String> =
        redis::cmd("SET").arg("big").arg(value(0)).query(&mut redis);
    assert_eq!(reply.as_deref(), Ok("OK"));
    for _ in 0..3 {
        let refused: redis::RedisResult<i64> = redis::cmd("APPEND")
            .arg("big")
            .arg(vec![b'x'; 1 << 20])
            .query(&mut redis);
        let error = refused.expect_err("an APPEND past the limit").to_string();
        assert!(
            error.contains("string exceeds maximum allowed size (16777216 bytes)"),
            "{error}"
        );
    }
    let native = cluster.kv(&["append", "big", "x"]).expect_err("refused");
    assert!(
        native.contains("over the limit of 16777216 bytes; nothing was written"),
        "{native}"
    );
    // Up to the limit an APPEND still grows a value.
    let appended: i64 = redis::cmd("APPEND")
        .arg("small")
        .arg(&value(1)[1..])
        .query(&mut redis)
        .expect("APPEND up to the limit");
    assert_eq!(appended, VALUE_BYTES_MAX as i64 - 1);
    let appended: i64 = redis::cmd("APPEND")
        .arg("small")
        .arg("!")
        .query(&mut redis)
        .expect("APPEND to the limit");
    assert_eq!(appended, VALUE_BYTES_MAX as i64);

    // Node 2 loses its disk and rebuilds; then node 0 dies, so the group's majority needs
    // node 2's rebuilt copy.
    cluster.kill_node(2);
    cluster.wipe_node(2);
    cluster.start_node(2);
    cluster.wait_ready(2);
    cluster.kill_node(0);
    let mut redis = cluster.redis(2, COMMAND_TIMEOUT);
    let read: Vec<u8> = redis::cmd("GET")
        .arg("big")
        .query(&mut redis)
        .expect("GET through the rebuilt node");
    assert!(read == value(0), "big read back {} bytes", read.len());
    let read: Vec<u8> = redis::cmd("GET")
        .arg("small")
        .query(&mut redis)
        .expect("GET through the rebuilt node");
    assert_eq!(read.len(), VALUE_BYTES_MAX);
    cluster.assert_no_panic();
}
