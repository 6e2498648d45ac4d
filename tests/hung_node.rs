//! A node that hangs rather than dies, on real processes: SIGSTOP keeps its sockets open
//! (the kernel still accepts connections to it and acknowledges what is sent), but nothing
//! answers. A node that dies closes its connections and the others notice at once; a hung
//! one must be noticed by its silence.
//!
//! Before the other nodes probed each other, a sharded node's RESP connections sent every
//! key of a group the hung node had led to it first, each waiting out the 5 s call timeout
//! even after the group had elected another leader, and in Redis Cluster mode the other
//! nodes went on answering `-MOVED` to the hung node for as long as it hung.

mod common;

use std::time::Duration;

use common::{three_groups, wait_for, Cluster};
use kv_server::sharded::CALL_TIMEOUT;

/// Hang guard for a command that may wait for an election.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Hang guard for the others to stop counting a stopped node as up (it takes them about
/// `PROBE_TIMEOUT` + `PROBE_INTERVAL`).
const NOTICE_TIMEOUT: Duration = Duration::from_secs(20);

/// Keys over every shard (and so every group).
fn keys() -> Vec<String> {
    (0..48).map(|i| format!("key-{i}")).collect()
}

/// Sets every key to itself through node 0 (in Redis Cluster mode after ASKING, which
/// makes a node run a key whoever masters it): node 0's replicas campaign for the groups
/// that have no leader yet, so node 0 leads when it is stopped.
fn write_through_node_0(cluster: &Cluster, redis_cluster: bool) {
    let mut con = cluster.redis(0, IO_TIMEOUT);
    for key in keys() {
        if redis_cluster {
            let _: String = redis::cmd("ASKING").query(&mut con).unwrap();
        }
        let reply: String = redis::cmd("SET")
            .arg(&key)
            .arg(&key)
            .query(&mut con)
            .unwrap();
        assert_eq!(reply, "OK");
    }
}

/// GET `key` on a new connection to node `id` whose reads time out after `timeout`.
fn get(cluster: &Cluster, id: u32, key: &str, timeout: Duration) -> redis::RedisResult<String> {
    let mut con = cluster.redis(id, timeout);
    redis::cmd("GET").arg(key).query(&mut con)
}

#[test]
fn a_stopped_node_holds_up_no_new_connection_once_its_groups_have_moved_on() {
    let mut cluster = Cluster::start_sharded(3, three_groups(false));
    write_through_node_0(&cluster, false);
    cluster.signal(0, libc::SIGSTOP);
    // Every key through the others: the groups node 0 led elect new leaders meanwhile.
    for id in [1, 2] {
        for key in keys() {
            assert_eq!(get(&cluster, id, &key, IO_TIMEOUT).as_deref(), Ok(&*key));
        }
    }
    // Now no GET on a new connection waits for the stopped node: one that went there first
    // would wait CALL_TIMEOUT for it before trying another.
    for id in [1, 2] {
        for key in keys() {
            let read = get(&cluster, id, &key, CALL_TIMEOUT / 2);
            assert_eq!(read.as_deref(), Ok(&*key), "GET {key} through node {id}");
        }
    }
    cluster.signal(0, libc::SIGCONT);
    cluster.wait_ready_all();
    assert_eq!(
        get(&cluster, 0, "key-0", IO_TIMEOUT).as_deref(),
        Ok("key-0")
    );
    cluster.assert_no_panic();
}

#[test]
fn in_cluster_mode_no_node_sends_clients_to_a_stopped_one() {
    let mut cluster = Cluster::start_sharded(3, three_groups(true));
    let stopped = format!("{}", cluster.node(0).resp);
    write_through_node_0(&cluster, true);
    // Whether node `id`'s CLUSTER NODES gives node 0 slots to master.
    let names_node_0 = |id: u32| {
        let mut con = cluster.redis(id, IO_TIMEOUT);
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut con).unwrap();
        nodes.lines().any(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            fields.len() > 8 && fields[1].starts_with(&format!("{stopped}@"))
        })
    };
    wait_for("node 1 names node 0 a master", NOTICE_TIMEOUT, || {
        names_node_0(1).then_some(())
    });
    cluster.signal(0, libc::SIGSTOP);
    // The others stop naming it once it misses a probe (about a second); the bound only
    // guards against waiting for ever (before probes, they named it for as long as it
    // hung).
    wait_for("nodes 1 and 2 stop naming node 0", NOTICE_TIMEOUT, || {
        (!names_node_0(1) && !names_node_0(2)).then_some(())
    });
    // Every key through either node, following redirects, never to node 0: first while
    // the groups node 0 led elect new leaders, then with reads that would time out before
    // a call to node 0 did.
    for timeout in [IO_TIMEOUT, CALL_TIMEOUT / 2] {
        for id in [1, 2] {
            for key in keys() {
                let mut at = id;
                let value = loop {
                    match get(&cluster, at, &key, timeout) {
                        Ok(value) => break value,
                        Err(e) if e.redirect_node().is_some() => {
                            let (addr, _) = e.redirect_node().expect("a redirect names a node");
                            assert_ne!(
                                addr, stopped,
                                "GET {key} through node {at}: sent to node 0"
                            );
                            at = (0..cluster.len())
                                .find(|&n| format!("{}", cluster.node(n).resp) == addr)
                                .expect("a node of the cluster");
                        }
                        Err(e) => panic!("GET {key} through node {at}: {e}"),
                    }
                };
                assert_eq!(value, key);
            }
        }
    }
    cluster.signal(0, libc::SIGCONT);
    cluster.wait_ready_all();
    cluster.assert_no_panic();
}
