//! Crash tests on real processes: three `kv node`s on loopback, concurrent clients, SIGKILL
//! at random moments, restarts, a wiped data directory. Every client operation is recorded
//! (invoke and return times; unknown outcomes as indeterminate) and the whole history,
//! including reads after the final restart, must be linearizable — so no acknowledged write
//! may be lost, duplicated or reordered.

mod common;

use std::time::{Duration, Instant};

use common::workload::{self, assert_linearizable, spawn_clients};
use common::Cluster;
use kv_replication::linearizability::History;
use kv_server::client::{Client, ClientOptions};

const KEYS: u64 = 4;

fn options() -> ClientOptions {
    ClientOptions {
        attempt_timeout: Duration::from_millis(800),
        deadline: Duration::from_secs(20),
    }
}

fn clients(cluster: &Cluster, count: usize) -> Vec<Client> {
    (0..count).map(|c| cluster.client(c, options())).collect()
}

fn final_reads(rt: &tokio::runtime::Runtime, cluster: &Cluster, history: &History, epoch: Instant) {
    let mut client = cluster.client(0, options());
    workload::final_reads(rt, &mut client, KEYS, history, epoch);
}

#[test]
fn repeated_sigkill_of_random_nodes_then_of_all_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let history = History::new();
    let epoch = Instant::now();
    let load = spawn_clients(&rt, clients(&cluster, 6), KEYS, history.clone(), epoch);

    // Kill a random node, restart it, again and again, while the clients write.
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..8 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = (seed % 3) as u32;
        std::thread::sleep(Duration::from_millis(400 + seed % 400));
        cluster.kill_node(victim);
        std::thread::sleep(Duration::from_millis(300));
        cluster.start_node(victim);
        cluster.wait_ready(victim);
    }
    std::thread::sleep(Duration::from_millis(500));
    let acked = load.finish(&rt);
    assert!(
        acked > 50,
        "the cluster made progress under crashes: {acked} writes acknowledged"
    );

    // Every node at once, then back.
    for id in 0..3 {
        cluster.kill_node(id);
    }
    for id in 0..3 {
        cluster.start_node(id);
    }
    cluster.wait_ready_all();
    final_reads(&rt, &cluster, &history, epoch);
    assert_linearizable(&history);
}

#[test]
fn wiped_node_rejoins_and_the_group_then_survives_killing_another() {
    let mut cluster = Cluster::start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let history = History::new();
    let epoch = Instant::now();

    let load = spawn_clients(&rt, clients(&cluster, 4), KEYS, history.clone(), epoch);
    std::thread::sleep(Duration::from_secs(2));

    // Node 1 loses its disk.
    cluster.kill_node(1);
    cluster.wipe_node(1);
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_node(1);
    // Crash it again almost at once — usually mid-rebuild — and start it once more: it
    // must resume rebuilding, not come back as a blank voter, and not refuse to start.
    std::thread::sleep(Duration::from_millis(30));
    cluster.kill_node(1);
    cluster.start_node(1);
    cluster.wait_ready(1);
    std::thread::sleep(Duration::from_secs(1));

    // Now a different node dies: the group must still have a majority with node 1 in it.
    cluster.kill_node(2);
    std::thread::sleep(Duration::from_secs(2));
    let acked = load.finish(&rt);
    assert!(acked > 20, "{acked} writes acknowledged");

    // Nodes 0 and 1 alone must answer, with every acknowledged write.
    final_reads(&rt, &cluster, &history, epoch);
    assert_linearizable(&history);
    cluster.start_node(2);
    cluster.wait_ready(2);
}
