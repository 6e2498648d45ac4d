//! A sharded cluster on real processes: nodes that host the shard master and several KV
//! groups, RESP on every node taking any key.

mod common;

use std::time::Duration;

use common::{Cluster, Shape};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn shape(groups: u32) -> Shape {
    Shape {
        replicas: 3,
        groups,
        shards: 16,
        redis_cluster: false,
    }
}

#[test]
fn every_node_takes_any_key_and_multi_key_commands_span_groups() {
    let cluster = Cluster::start_sharded(3, shape(3));
    let keys: Vec<String> = (0..120).map(|i| format!("key-{i}")).collect();
    let mut connections: Vec<_> = (0..3).map(|id| cluster.redis(id, IO_TIMEOUT)).collect();
    for (i, key) in keys.iter().enumerate() {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(format!("v{i}"))
            .query(&mut connections[i % 3])
            .unwrap();
    }
    // Every node reads every key, whichever group holds it.
    for connection in &mut connections {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(connection).unwrap();
        let expected: Vec<Option<String>> =
            (0..keys.len()).map(|i| Some(format!("v{i}"))).collect();
        assert_eq!(values, expected);
    }
    // The keys landed in every group: each group's replicas hold some of them.
    let text = cluster.status(0).expect("status");
    let mut groups_with_keys = 0;
    let mut in_kv_group = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_kv_group = line.starts_with("[group");
        } else if in_kv_group {
            if let Some(n) = line.strip_prefix("keys: ") {
                if n.parse::<u64>().unwrap() > 0 {
                    groups_with_keys += 1;
                }
            }
        }
    }
    assert_eq!(groups_with_keys, 3, "status:\n{text}");
    // Multi-key writes and counts across groups.
    let deleted: u64 = redis::cmd("DEL")
        .arg(&keys[..60])
        .query(&mut connections[1])
        .unwrap();
    assert_eq!(deleted, 60);
    let exists: u64 = redis::cmd("EXISTS")
        .arg(&keys)
        .query(&mut connections[2])
        .unwrap();
    assert_eq!(exists, 60);
    let appended: u64 = redis::cmd("APPEND")
        .arg(&keys[70])
        .arg("+")
        .query(&mut connections[0])
        .unwrap();
    assert_eq!(appended, "v70+".len() as u64);
    cluster.assert_no_panic();
}
