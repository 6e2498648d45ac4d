//! Native clients learn the leader from every reply and send there directly: real `kv node`
//! processes on loopback; a client started on a follower moves to the leader after one
//! request, and after the leader is killed it finds the new one.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Cluster;
use kv_engine::kv::{Op, Reply};
use kv_server::client::ClientOptions;

fn options() -> ClientOptions {
    ClientOptions {
        attempt_timeout: Duration::from_millis(800),
        deadline: Duration::from_secs(20),
    }
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: Bytes::from(key.to_owned()),
        value: Bytes::from(value.to_owned()),
    }
}

/// The ballot node `id` has promised, from its status.
fn ballot(cluster: &Cluster, id: u32) -> Option<String> {
    let text = cluster.status(id)?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("ballot: "))
        .map(str::to_owned)
}

/// The node whose status says it leads, waiting up to `limit` for one to say so.
fn leader(cluster: &Cluster, live: &[u32], limit: Duration) -> u32 {
    let started = Instant::now();
    loop {
        for &id in live {
            if let Some(text) = cluster.status(id) {
                if text.lines().any(|l| l.trim() == "role: leader") {
                    return id;
                }
            }
        }
        assert!(started.elapsed() < limit, "no leader among {live:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn clients_move_to_the_leader_and_follow_it_after_a_failover() {
    let mut cluster = Cluster::start(3);
    cluster.wait_ready_all();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Writes make some node lead; wait until every node knows it (the same ballot
    // everywhere), or a node that has seen no ballot yet would start its own campaign
    // for the next request and move the leadership under the test.
    let mut first = cluster.client(0, options());
    let started = Instant::now();
    loop {
        assert_eq!(
            rt.block_on(first.execute(put("k", "0"))).unwrap(),
            Reply::Ok
        );
        let ballots: Vec<Option<String>> = (0..3).map(|id| ballot(&cluster, id)).collect();
        if ballots[0].is_some() && ballots.iter().all(|b| *b == ballots[0]) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "ballots {ballots:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = leader(&cluster, &[0, 1, 2], Duration::from_secs(10));

    for start in 0..3usize {
        let mut client = cluster.client(start, options());
        assert_eq!(client.node(), start);
        let value = format!("from {start}");
        assert_eq!(
            rt.block_on(client.execute(put("k", &value))).unwrap(),
            Reply::Ok
        );
        assert_eq!(client.node(), old as usize, "client started on {start}");
    }

    // Kill the leader: the client's next request fails over, and the answer it gets names
    // the new leader, which it then uses.
    let mut client = cluster.client(old as usize, options());
    assert_eq!(
        rt.block_on(client.execute(put("k", "a"))).unwrap(),
        Reply::Ok
    );
    cluster.kill_node(old);
    let live: Vec<u32> = (0..3).filter(|&i| i != old).collect();
    for n in 0..5 {
        let value = format!("after {n}");
        assert_eq!(
            rt.block_on(client.execute(put("k", &value))).unwrap(),
            Reply::Ok
        );
    }
    let new = leader(&cluster, &live, Duration::from_secs(10));
    assert_ne!(new, old);
    assert_eq!(client.node(), new as usize);
    let read = rt
        .block_on(client.execute(Op::Get {
            key: Bytes::from_static(b"k"),
        }))
        .unwrap();
    assert_eq!(read, Reply::Value(Some(Bytes::from_static(b"after 4"))));
}
