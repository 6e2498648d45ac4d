//! Crash tests on real processes: three `kv node`s on loopback, concurrent clients, SIGKILL
//! at random moments, restarts, a wiped data directory. Every client operation is recorded
//! (invoke and return times; unknown outcomes as indeterminate) and the whole history,
//! including reads after the final restart, must be linearizable — so no acknowledged write
//! may be lost, duplicated or reordered.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{clock, Cluster};
use kv_engine::kv::{Op, Reply};
use kv_replication::linearizability::{check, Budget, CheckResult, History, Input, Output};
use kv_server::client::ClientOptions;

const KEYS: u64 = 4;

fn options() -> ClientOptions {
    ClientOptions {
        attempt_timeout: Duration::from_millis(800),
        deadline: Duration::from_secs(20),
    }
}

/// Runs `clients` closed-loop clients until `stop`, recording every operation.
fn spawn_clients(
    rt: &tokio::runtime::Runtime,
    cluster: &Cluster,
    clients: usize,
    history: History,
    epoch: Instant,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..clients)
        .map(|c| {
            let mut client = cluster.client(c, options());
            let history = history.clone();
            let stop = stop.clone();
            rt.spawn(async move {
                let mut acked = 0;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("k{}", (c as u64 * 7 + n) % KEYS);
                    let token = format!("[{c}.{n}]");
                    let (op, input) = match n % 5 {
                        0 => (
                            Op::Get {
                                key: Bytes::from(key.clone()),
                            },
                            Input::Get {
                                key: key.clone().into_bytes(),
                            },
                        ),
                        1 => (
                            Op::Put {
                                key: Bytes::from(key.clone()),
                                value: Bytes::from(token.clone()),
                            },
                            Input::Put {
                                key: key.clone().into_bytes(),
                                value: token.clone().into_bytes(),
                            },
                        ),
                        _ => (
                            Op::Append {
                                key: Bytes::from(key.clone()),
                                value: Bytes::from(token.clone()),
                            },
                            Input::Append {
                                key: key.clone().into_bytes(),
                                value: token.clone().into_bytes(),
                            },
                        ),
                    };
                    let call = history.invoke(c as u64, input, clock(epoch));
                    match client.execute(op).await {
                        Ok(Reply::Value(v)) => history.complete(
                            call,
                            Output::Value(v.map(|b| b.to_vec())),
                            clock(epoch),
                        ),
                        Ok(Reply::Ok | Reply::Appended(_)) => {
                            acked += 1;
                            history.complete(call, Output::Ok, clock(epoch))
                        }
                        Ok(other) => panic!("unexpected reply {other:?}"),
                        Err(_) => history.give_up(call),
                    }
                }
                acked
            })
        })
        .collect()
}

/// Reads every key once through a fresh client and records the reads.
fn final_reads(rt: &tokio::runtime::Runtime, cluster: &Cluster, history: &History, epoch: Instant) {
    let mut client = cluster.client(0, options());
    for k in 0..KEYS {
        let key = format!("k{k}");
        let call = history.invoke(
            1_000,
            Input::Get {
                key: key.clone().into_bytes(),
            },
            clock(epoch),
        );
        match rt
            .block_on(client.execute(Op::Get {
                key: Bytes::from(key.clone()),
            }))
            .expect("the restarted cluster answers")
        {
            Reply::Value(v) => {
                history.complete(call, Output::Value(v.map(|b| b.to_vec())), clock(epoch))
            }
            other => panic!("unexpected reply {other:?}"),
        }
    }
}

fn assert_linearizable(history: &History) {
    let result = check(history, Budget::DEFAULT);
    assert_eq!(
        result,
        CheckResult::Ok,
        "history of {} operations: {result}",
        history.len()
    );
}

#[test]
fn repeated_sigkill_of_random_nodes_then_of_all_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let history = History::new();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(&rt, &cluster, 6, history.clone(), epoch, stop.clone());

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
    stop.store(true, Ordering::Relaxed);
    let acked: u64 = clients.into_iter().map(|c| rt.block_on(c).unwrap()).sum();
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

    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_clients(&rt, &cluster, 4, history.clone(), epoch, stop.clone());
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
    stop.store(true, Ordering::Relaxed);
    let acked: u64 = clients.into_iter().map(|c| rt.block_on(c).unwrap()).sum();
    assert!(acked > 20, "{acked} writes acknowledged");

    // Nodes 0 and 1 alone must answer, with every acknowledged write.
    final_reads(&rt, &cluster, &history, epoch);
    assert_linearizable(&history);
    cluster.start_node(2);
    cluster.wait_ready(2);
}
