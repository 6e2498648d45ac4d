//! A sharded cluster on real processes: nodes that host the shard master and several KV
//! groups, RESP on every node taking any key.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::workload::assert_linearizable;
use common::{clock, config_num, redis_cli, wait_for, Cluster, Shape};
use kv_replication::linearizability::{History, Input, Output};

const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn shape(groups: u32) -> Shape {
    Shape {
        replicas: 3,
        groups,
        shards: 16,
        redis_cluster: false,
        mode: kv_server::config::Mode::Paxos,
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

/// Which group owns each shard in the latest configuration (`kv admin query --json`).
fn shard_owners(cluster: &Cluster) -> Vec<u64> {
    let query = cluster.admin(&["query", "--json"]).unwrap();
    let config: serde_json::Value = serde_json::from_str(&query).unwrap();
    config["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_u64().unwrap())
        .collect()
}

/// Closed-loop RESP clients on random keys, each recording its operations; a client whose
/// node fails moves to the next node on a new connection (its op in flight: unknown).
fn spawn_resp_clients(
    cluster: &Cluster,
    clients: u64,
    keys: u64,
    history: &History,
    epoch: Instant,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<u64>> {
    (0..clients)
        .map(|c| {
            let addresses: Vec<String> = (0..cluster.len())
                .map(|id| format!("redis://{}/", cluster.node(id).resp))
                .collect();
            let history = history.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut node = c as usize % addresses.len();
                let mut connection: Option<redis::Connection> = None;
                let (mut n, mut acked) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let Some(conn) = connection.as_mut() else {
                        let client = redis::Client::open(addresses[node].as_str()).unwrap();
                        match client.get_connection_with_timeout(IO_TIMEOUT) {
                            Ok(conn) => {
                                conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                                connection = Some(conn);
                            }
                            Err(_) => {
                                node = (node + 1) % addresses.len();
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                        continue;
                    };
                    n += 1;
                    let key = format!("k{}", (c * 7 + n) % keys);
                    let token = format!("[{c}.{n}]");
                    let (command, input) = match n % 4 {
                        0 => (
                            redis::cmd("GET").arg(&key).clone(),
                            Input::Get {
                                key: key.clone().into_bytes(),
                            },
                        ),
                        _ => (
                            redis::cmd("APPEND").arg(&key).arg(&token).clone(),
                            Input::Append {
                                key: key.clone().into_bytes(),
                                value: token.into_bytes(),
                            },
                        ),
                    };
                    let get = matches!(input, Input::Get { .. });
                    let call = history.invoke(c, input, clock(epoch));
                    if get {
                        match command.query::<Option<Vec<u8>>>(conn) {
                            Ok(v) => history.complete(call, Output::Value(v), clock(epoch)),
                            Err(_) => {
                                history.give_up(call);
                                connection = None;
                                node = (node + 1) % addresses.len();
                            }
                        }
                    } else {
                        match command.query::<u64>(conn) {
                            Ok(_) => {
                                acked += 1;
                                history.complete(call, Output::Ok, clock(epoch));
                            }
                            Err(_) => {
                                history.give_up(call);
                                connection = None;
                                node = (node + 1) % addresses.len();
                            }
                        }
                    }
                }
                acked
            })
        })
        .collect()
}

/// Reads every key once through node `id` and records the reads.
fn final_reads(
    cluster: &Cluster,
    id: u32,
    keys: u64,
    history: &History,
    epoch: Instant,
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut conn = cluster.redis(id, IO_TIMEOUT);
    common::workload::recorded_reads(keys, history, epoch, |key| {
        redis::cmd("GET").arg(key).query(&mut conn).unwrap()
    })
}

/// Joins, leaves and moves while RESP clients append: a node is SIGKILLed right after a
/// handoff starts, another loses its disk right after the next one starts. Every history
/// is linearizable (so no acknowledged append is lost or doubled), and once the old owners
/// have released what they gave away each group's replicas hold exactly the keys of that
/// group's shards.
#[test]
fn handoffs_under_load_with_a_crash_and_a_lost_disk_lose_nothing() {
    const KEYS: u64 = 24;
    let settle = Duration::from_secs(120);
    const BULK: usize = 4000;
    let mut cluster = Cluster::start_sharded(3, shape(3));
    // Enough data that a handoff takes a while (about 8 MB in pieces of 1 MiB).
    let bulk_value = vec![b'b'; 2048];
    let mut pipe = redis::pipe();
    for i in 0..BULK {
        pipe.cmd("SET")
            .arg(format!("bulk-{i}"))
            .arg(&bulk_value)
            .ignore();
    }
    let _: () = pipe.query(&mut cluster.redis(0, IO_TIMEOUT)).unwrap();
    let history = History::new();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_resp_clients(&cluster, 6, KEYS, &history, epoch, &stop);
    let history_len = |n: usize| {
        wait_for("clients making progress", settle, || {
            (history.len() >= n).then_some(())
        })
    };
    history_len(200);

    // Group 102 leaves; node 1 dies as its shards start moving, and comes back.
    let num = config_num(&cluster.admin(&["leave", "102"]).unwrap());
    cluster.kill_node(1);
    history_len(history.len() + 100);
    cluster.start_node(1);
    cluster.wait_settled(num, settle);

    // Group 102 joins again; node 2 loses its disk as shards start arriving.
    let num = config_num(&cluster.admin(&["join", "102"]).unwrap());
    cluster.kill_node(2);
    cluster.wipe_node(2);
    cluster.start_node(2);
    cluster.wait_ready(2);
    cluster.wait_settled(num, settle);

    // Single shards move back and forth under load.
    let mut num = 0;
    for (shard, gid) in [(0, "101"), (5, "102"), (0, "100"), (9, "101")] {
        num = num.max(config_num(
            &cluster.admin(&["move", &shard.to_string(), gid]).unwrap(),
        ));
    }
    cluster.wait_settled(num, settle);
    history_len(history.len() + 200);

    stop.store(true, Ordering::Relaxed);
    let acked: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(acked > 0);
    eprintln!("{} operations, {acked} acknowledged appends", history.len());
    let finals = final_reads(&cluster, 0, KEYS, &history, epoch);
    assert_linearizable(&history);

    // Placement: each group's replicas hold exactly the keys of its shards.
    let owners: Vec<u64> = shard_owners(&cluster);
    let sharding = kv_engine::kv::Sharding::Slots { shards: 16 };
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let bulk = (0..BULK).map(|i| format!("bulk-{i}"));
    let present = finals
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.clone());
    for key in present.chain(bulk) {
        let owner = owners[sharding.shard_of(key.as_bytes()).0 as usize];
        *expected.entry(owner.to_string()).or_default() += 1;
    }
    let mut conn = cluster.redis(1, IO_TIMEOUT);
    let bulk_keys: Vec<String> = (0..BULK).map(|i| format!("bulk-{i}")).collect();
    let values: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&bulk_keys).query(&mut conn).unwrap();
    assert!(
        values.iter().all(|v| v.as_deref() == Some(&bulk_value[..])),
        "a bulk key was lost"
    );
    for id in 0..cluster.len() {
        for part in cluster
            .parts(id)
            .unwrap()
            .iter()
            .filter(|p| p.group != "master")
        {
            assert_eq!(
                part.u64("keys"),
                expected.get(&part.group).copied().unwrap_or(0),
                "node {id} group {}: {:?}",
                part.group,
                part.fields
            );
        }
    }
    cluster.assert_no_panic();
}

/// Lab 5's Test4Move on processes: once every replica of a group is stopped, Gets of
/// shards that moved away from it succeed and Gets of shards it still owns block.
#[test]
fn with_a_group_down_moved_shards_answer_and_its_own_shards_block() {
    // The shard master and group 100 on nodes 0-2; group 101 alone on node 3.
    let mut cluster = Cluster::start_edited(4, shape(2), Box::new(|_, _| {}), |config| {
        for section in [
            &mut config.master.as_mut().unwrap().nodes,
            &mut config.groups[0].nodes,
        ] {
            *section = vec![0, 1, 2];
        }
        config.groups[1].nodes = vec![3];
    });
    let sharding = kv_engine::kv::Sharding::Slots { shards: 16 };
    // One key per shard.
    let mut keys: BTreeMap<u32, String> = BTreeMap::new();
    for i in 0.. {
        let key = format!("key-{i}");
        keys.entry(sharding.shard_of(key.as_bytes()).0)
            .or_insert(key);
        if keys.len() == 16 {
            break;
        }
    }
    let mut conn = cluster.redis(0, IO_TIMEOUT);
    for key in keys.values() {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg(format!("v-{key}"))
            .query(&mut conn)
            .unwrap();
    }
    // Half of group 101's shards move to group 100.
    let before = shard_owners(&cluster);
    let of_101: Vec<usize> = (0..16).filter(|&s| before[s] == 101).collect();
    assert!(of_101.len() >= 4, "{before:?}");
    let mut num = 0;
    for shard in &of_101[..of_101.len() / 2] {
        num = config_num(&cluster.admin(&["move", &shard.to_string(), "100"]).unwrap());
    }
    cluster.wait_settled(num, Duration::from_secs(60));
    let after = shard_owners(&cluster);

    cluster.kill_node(3);
    let mut conn = cluster.redis(1, Duration::from_secs(2));
    for (shard, key) in &keys {
        let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(key).query(&mut conn);
        if after[*shard as usize] == 100 {
            assert_eq!(got.unwrap(), Some(format!("v-{key}")), "shard {shard}");
        } else {
            assert!(
                got.is_err(),
                "shard {shard} of the stopped group answered {got:?}"
            );
            // The blocked GET's connection is spent; take a fresh one.
            conn = cluster.redis(1, Duration::from_secs(2));
        }
    }
    cluster.assert_no_panic();
}

/// Bad input gets one clear line and changes nothing.
#[test]
fn admin_commands_naming_unknown_groups_or_shards_are_refused_and_change_nothing() {
    let cluster = Cluster::start_sharded(3, shape(2));
    let before = cluster.admin(&["query", "--json"]).unwrap();
    for (args, expected) in [
        (&["join", "7"][..], "group 7 is not in the cluster file"),
        (&["leave", "7"][..], "group 7 is not in the cluster file"),
        // Shards are named as an inclusive range, not Rust's `0..16`.
        (
            &["move", "16", "100"][..],
            "no shard 16: the cluster has shards 0–15",
        ),
        (
            &["move", "3", "7"][..],
            "group 7 is not in the cluster file",
        ),
        (&["query", "99"][..], "configuration 99 does not exist yet"),
    ] {
        let error = cluster.admin(args).unwrap_err();
        assert!(error.contains(expected), "{args:?}: {error}");
        assert_eq!(error.trim().lines().count(), 1, "{args:?}: {error}");
    }
    assert_eq!(cluster.admin(&["query", "--json"]).unwrap(), before);

    // A cluster file whose group names an unknown node is refused by every command.
    let path = cluster.dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&cluster.path).unwrap();
    let bad = text.replacen(
        "[[group]]\ngid = 100\nnodes = [\n    0,",
        "[[group]]\ngid = 100\nnodes = [\n    9,",
        1,
    );
    assert_ne!(bad, text, "the edit applies");
    std::fs::write(&path, bad).unwrap();
    for args in [&["node", "--id", "0"][..], &["admin", "query"][..]] {
        let out = std::process::Command::new(common::kv_binary())
            .args(args)
            .arg("--cluster")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("group 100 names node 9, which is not in the cluster file"),
            "{stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    assert_eq!(cluster.admin(&["query", "--json"]).unwrap(), before);

    // A group of the file that left the configuration is refused by the shard master,
    // which names it as every other message does ("group 101", not "g101").
    cluster.admin(&["leave", "101"]).unwrap();
    let error = cluster.admin(&["move", "3", "101"]).unwrap_err();
    assert_eq!(
        error.trim(),
        "error: refused: group 101 is not in the latest configuration"
    );
}

/// `kv admin status --json` types its values: numbers are JSON numbers, flags booleans,
/// and a value not known yet (`-` in the text) null, under the text's field names.
#[test]
fn admin_status_json_has_numbers_booleans_and_nulls() {
    let mut cluster = Cluster::start_sharded(3, shape(2));
    cluster.wait_ready(0);
    let status: serde_json::Value =
        serde_json::from_str(&cluster.admin(&["status", "--json"]).unwrap()).unwrap();
    let node = &status["nodes"][0];
    assert_eq!(node["node"], 0, "{node}");
    assert_eq!(node["reachable"], true, "{node}");
    let replicas = node["replicas"].as_array().expect("replicas");
    let group = replicas
        .iter()
        .find(|r| r["group"] == 100)
        .unwrap_or_else(|| panic!("no group 100 (a number) in {node}"));
    assert!(replicas.iter().any(|r| r["group"] == "master"), "{node}");
    for name in ["ballot_round", "paxos_min", "keys", "wal_bytes", "config"] {
        assert!(group[name].is_u64(), "{name}: {group}");
    }
    // Nothing may be decided yet: a number, or null.
    for name in ["applied_index", "decided_index"] {
        assert!(
            group[name].is_u64() || group[name].is_null(),
            "{name}: {group}"
        );
    }
    assert_eq!(group["ready"], true, "{group}");
    // No value is left as a string that reads as a number, a flag or "-".
    for replica in replicas {
        for (name, value) in replica.as_object().expect("an object") {
            let Some(text) = value.as_str() else { continue };
            assert!(
                text.parse::<i64>().is_err() && !matches!(text, "true" | "false" | "-"),
                "{name}: {value} in {replica}"
            );
        }
    }
    // No rebuild ever started: no fence.
    assert!(group["fence"].is_null(), "{group}");
    assert!(group["role"].is_string(), "{group}");
    // A ballot is `round.node`, not a decimal number.
    assert!(group["ballot"].is_string(), "{group}");
}

/// Growing the cluster as the README says, while RESP clients append: `kv grow` adds three
/// nodes and a group on them, the running nodes restart one at a time, the new ones start,
/// `kv admin join` moves shards onto the group. Nothing is lost and the new group serves
/// its share.
#[test]
fn growing_the_cluster_by_three_nodes_and_a_group_under_load_loses_nothing() {
    const KEYS: u64 = 24;
    let settle = Duration::from_secs(120);
    let mut cluster = Cluster::start_sharded(3, shape(2));
    let history = History::new();
    let epoch = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = spawn_resp_clients(&cluster, 4, KEYS, &history, epoch, &stop);
    let history_len = |n: usize| {
        wait_for("clients making progress", settle, || {
            (history.len() >= n).then_some(())
        })
    };
    history_len(100);

    let grown = cluster.kv(&["grow", "--nodes", "3"]).unwrap();
    assert!(
        grown.contains("added group 102 on nodes 3, 4, 5"),
        "{grown}"
    );
    cluster.reload();
    assert_eq!(cluster.len(), 6);
    cluster.reassign_ports(3..6);
    for id in 0..3 {
        cluster.stop_node(id);
        cluster.start_node(id);
        cluster.wait_ready(id);
    }
    for id in 3..6 {
        cluster.start_node(id);
    }
    for id in 3..6 {
        cluster.wait_ready(id);
    }
    let num = config_num(&cluster.admin(&["join", "102"]).unwrap());
    cluster.wait_settled(num, settle);
    history_len(history.len() + 100);

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    // Read through a new node.
    final_reads(&cluster, 4, KEYS, &history, epoch);
    assert_linearizable(&history);
    let owners = shard_owners(&cluster);
    let served_by_new = owners.iter().filter(|&&g| g == 102).count();
    assert!(
        served_by_new >= 5,
        "group 102 serves {served_by_new} of 16 shards: {owners:?}"
    );
    let new_keys: u64 = cluster
        .parts(3)
        .unwrap()
        .iter()
        .filter(|p| p.group == "102")
        .map(|p| p.u64("shards_serving"))
        .sum();
    assert_eq!(new_keys as usize, served_by_new);
    cluster.assert_no_panic();
}

/// Sum of the KV groups' applied indexes on node `id`: log instances applied.
fn instances(cluster: &Cluster, id: u32) -> u64 {
    cluster
        .parts(id)
        .unwrap()
        .iter()
        .filter(|p| p.group != "master")
        // "-": a replica that has applied nothing yet.
        .map(
            |p| match p.fields.get("applied_index").map(String::as_str) {
                Some("-") => 0,
                _ => p.u64("applied_index"),
            },
        )
        .sum()
}

/// A pipeline on a sharded cluster runs its ops on several clerks at once, so it costs far
/// fewer log instances than commands, and is still answered in order: a pipelined SET then
/// GET of one key sees the SET.
#[test]
fn a_pipeline_costs_fewer_log_instances_than_commands_and_keeps_per_key_order() {
    const N: usize = 2000;
    let cluster = Cluster::start_sharded(3, shape(3));
    let mut conn = cluster.redis(0, IO_TIMEOUT);
    let before = instances(&cluster, 0);
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.cmd("SET").arg(format!("p-{i}")).arg(i).ignore();
    }
    let _: () = pipe.query(&mut conn).unwrap();
    let used = instances(&cluster, 0) - before;
    // In order on each key: the APPEND sees the SET, the GET both.
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.cmd("APPEND").arg(format!("p-{i}")).arg("+");
        pipe.cmd("GET").arg(format!("p-{i}"));
    }
    let replies: Vec<redis::Value> = pipe.query(&mut conn).unwrap();
    assert_eq!(replies.len(), 2 * N);
    for (i, pair) in replies.chunks(2).enumerate() {
        let expected = format!("{i}+");
        assert_eq!(
            pair[0],
            redis::Value::Int(expected.len() as i64),
            "APPEND {i}"
        );
        assert_eq!(
            pair[1],
            redis::Value::BulkString(expected.into_bytes()),
            "GET {i}"
        );
    }
    eprintln!("{N} pipelined SETs took {used} log instances");
    // One lane would take N; measured here about N / 2 with 32 lanes over 3 groups.
    assert!(
        used <= (3 * N / 4) as u64,
        "{N} pipelined SETs took {used} log instances"
    );
}

/// Every file under `dir` (recursively) whose name ends with `suffix`.
fn files_under(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_under(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            found.push(path);
        }
    }
    found
}

/// A node keeps one write-ahead log for every group it hosts (`wal/` in its directory; a
/// group's directory holds its stamp and snapshots). When a node loses one group's
/// directory but not the rest, that replica rejoins from its peers, its old records in the
/// shared log are passed over, and once another node is down the rejoined replica is part
/// of every majority: nothing acknowledged is lost.
#[test]
fn one_log_per_node_and_a_lost_group_directory_rejoins_without_loss() {
    const KEYS: usize = 300;
    let mut cluster = Cluster::start_sharded(3, shape(3));
    let mut conn = cluster.redis(0, IO_TIMEOUT);
    for i in 0..KEYS {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(format!("v{i}"))
            .query(&mut conn)
            .unwrap();
    }
    let dir = cluster.data_dir(2);
    let segments = files_under(&dir, ".wal");
    assert!(!segments.is_empty());
    for segment in &segments {
        assert_eq!(
            segment.parent().unwrap(),
            dir.join("wal"),
            "a log outside the node's shared log: {segments:?}"
        );
    }

    cluster.kill_node(2);
    let group = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("group-")
        })
        .expect("a group directory");
    std::fs::remove_dir_all(&group).unwrap();
    cluster.start_node(2);
    cluster.wait_ready(2);
    let log = cluster.log(2);
    assert!(
        log.contains("lost disk") && log.contains("passed over log records"),
        "{log}"
    );

    cluster.kill_node(0);
    let mut conn = cluster.redis(1, IO_TIMEOUT);
    for i in 0..KEYS {
        let value: Option<String> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(value, Some(format!("v{i}")), "key k{i}");
    }
    cluster.assert_no_panic();
}

/// A native client of a sharded cluster that gave an op up at its deadline, mid-send (the
/// op's future dropped with the request outstanding), still runs the next op: it used to
/// refuse every later one as busy, so `kv bench` and batch jobs stopped for good after one
/// timeout (a node stopped or cut off).
#[test]
fn an_op_given_up_at_its_deadline_does_not_stop_the_client() {
    use bytes::Bytes;
    use futures_util::FutureExt;
    use kv_client::any::{AnyClient, Shared};
    use kv_engine::kv::{Op, Reply};

    let cluster = Cluster::start_sharded(3, shape(3));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let options = kv_server::client::ClientOptions {
        attempt_timeout: Duration::from_secs(1),
        deadline: IO_TIMEOUT,
    };
    let mut client = AnyClient::new(
        &cluster.config,
        &Shared::new(&cluster.config).expect("the cluster secret"),
        0,
        options,
    );
    let put = |value: &'static [u8]| Op::Put {
        key: Bytes::from_static(b"given-up"),
        value: Bytes::from_static(value),
    };
    // Polled once and dropped: the op is given up at its first wait, its request begun.
    let given_up = rt.block_on(async { client.execute(put(b"1"), IO_TIMEOUT).now_or_never() });
    assert!(given_up.is_none(), "answered at once: {given_up:?}");
    let next = rt.block_on(client.execute(put(b"2"), IO_TIMEOUT));
    assert!(matches!(next, Ok(Reply::Ok)), "the next op: {next:?}");
    let read = rt.block_on(client.execute(
        Op::Get {
            key: Bytes::from_static(b"given-up"),
        },
        IO_TIMEOUT,
    ));
    assert!(
        matches!(&read, Ok(Reply::Value(Some(v))) if &v[..] == b"2"),
        "{read:?}"
    );
}

/// DBSIZE, INFO keyspace and KEYS on one node's connection.
fn counts(cluster: &Cluster, id: u32) -> (u64, String, usize) {
    let mut conn = cluster.redis(id, IO_TIMEOUT);
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut conn).unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    (dbsize, info, keys.len())
}

/// Any node takes any key, so DBSIZE and INFO keyspace count every group's keys on every
/// node, as KEYS lists them, whichever groups the node hosts: each shard once, from the
/// group that owns it, also while a shard moves between groups on different nodes.
#[test]
fn dbsize_and_info_keyspace_count_every_groups_keys_on_every_node() {
    // The shard master and group 100 on nodes 0-2; group 101 alone on node 3.
    let cluster = Cluster::start_edited(4, shape(2), Box::new(|_, _| {}), |config| {
        for section in [
            &mut config.master.as_mut().unwrap().nodes,
            &mut config.groups[0].nodes,
        ] {
            *section = vec![0, 1, 2];
        }
        config.groups[1].nodes = vec![3];
    });
    let mut conn = cluster.redis(0, IO_TIMEOUT);
    let mut pipe = redis::pipe();
    for i in 0..300 {
        pipe.cmd("SET").arg(format!("key-{i}")).arg(i).ignore();
    }
    pipe.query::<()>(&mut conn).unwrap();
    let deleted: u64 = redis::cmd("DEL")
        .arg("key-0")
        .arg("key-1")
        .arg("missing")
        .query(&mut conn)
        .unwrap();
    assert_eq!(deleted, 2);
    let expect = |what: &str| {
        for id in 0..4 {
            let (dbsize, info, keys) = counts(&cluster, id);
            assert_eq!(keys, 298, "{what}: KEYS on node {id}");
            assert_eq!(dbsize, 298, "{what}: DBSIZE on node {id}");
            assert!(
                info.contains("db0:keys=298,expires=0,avg_ttl=0"),
                "{what}: INFO keyspace on node {id}: {info:?}"
            );
        }
    };
    expect("both groups hold keys");

    // A shard of group 101 (node 3) moves to group 100 (nodes 0-2): counted once, by
    // its owner, during the handoff and after.
    let owners = shard_owners(&cluster);
    let shard = owners.iter().position(|&g| g == 101).unwrap();
    let num = config_num(&cluster.admin(&["move", &shard.to_string(), "100"]).unwrap());
    expect("a shard moving");
    cluster.wait_settled(num, Duration::from_secs(60));
    expect("a shard moved");
    cluster.assert_no_panic();
}

/// `kv admin leave` of the configuration's last group is refused with one line and
/// changes nothing (the shard master itself accepts it, as the lab's does).
#[test]
fn leaving_the_last_group_is_refused_and_changes_nothing() {
    let cluster = Cluster::start_sharded(3, shape(2));
    let mut conn = cluster.redis(0, IO_TIMEOUT);
    let _: () = redis::cmd("SET")
        .arg("key1")
        .arg("v1")
        .query(&mut conn)
        .unwrap();
    let num = config_num(&cluster.admin(&["leave", "101"]).unwrap());
    let before = cluster.admin(&["query", "--json"]).unwrap();
    let error = cluster.admin(&["leave", "100"]).unwrap_err();
    assert_eq!(
        error.trim(),
        format!(
            "error: refused: group 100 is the last group of configuration {num}; without it \
             no group would serve any shard (join another group first)"
        )
    );
    assert_eq!(cluster.admin(&["query", "--json"]).unwrap(), before);
    // Leaving a group already gone still changes nothing, quietly.
    assert!(cluster
        .admin(&["leave", "101"])
        .unwrap()
        .contains("nothing to change"));
    let got: Option<String> = redis::cmd("GET").arg("key1").query(&mut conn).unwrap();
    assert_eq!(got.as_deref(), Some("v1"));
    cluster.assert_no_panic();
}

/// `[master] shards` is fixed for the cluster's life: a node whose cluster file was edited
/// to another count refuses to start, naming the count its data was written with, instead
/// of serving every key from the wrong shard (where none is found).
#[test]
fn a_node_refuses_a_cluster_file_whose_shard_count_was_edited() {
    let mut cluster = Cluster::start_sharded(
        1,
        Shape {
            replicas: 1,
            ..shape(1)
        },
    );
    let port = cluster.node(0).resp.port();
    assert_eq!(redis_cli(port, &["SET", "kept", "value"]), "OK");
    cluster.stop_node(0);
    let original = std::fs::read_to_string(&cluster.path).unwrap();
    assert!(original.contains("shards = 16\n"), "{original}");
    std::fs::write(
        &cluster.path,
        original.replace("shards = 16\n", "shards = 8\n"),
    )
    .unwrap();
    cluster.start_node(0);
    assert!(
        !cluster.wait_exit(0),
        "the node started on an edited shard count"
    );
    let log = cluster.log(0);
    assert!(
        log.contains("written with 16 shards") && log.contains("[master] shards = 8"),
        "{log}"
    );
    // Nothing was changed: with the file put back, the node serves the key again.
    std::fs::write(&cluster.path, &original).unwrap();
    cluster.start_node(0);
    cluster.wait_ready(0);
    assert_eq!(redis_cli(port, &["GET", "kept"]), "value");
}
