//! SCAN and KEYS on real processes: every key comes back across groups, to redis-cli
//! (`--scan`), redis-py (`scan_iter`, `keys`) and the `redis` crate, also while shards move
//! between groups; MATCH patterns; Redis's errors for bad arguments; the unsharded
//! cluster; Redis Cluster mode, where each node scans the slots it masters.
//!
//! Timeouts only catch hangs; every wait is on a condition.

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{python_script, redis_cli, scan_walk, three_groups, wait_for, Cluster};

const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Hang guard for a cluster to settle after moves.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Writes `PREFIX0 .. PREFIX{n-1}` (value: the index) in one pipeline through node `id`.
fn write_keys(cluster: &Cluster, id: u32, prefix: &str, n: usize) -> BTreeSet<String> {
    let mut pipe = redis::pipe();
    let keys: BTreeSet<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    for (i, key) in (0..n).map(|i| (i, format!("{prefix}{i}"))) {
        pipe.cmd("SET").arg(key).arg(i).ignore();
    }
    let _: () = pipe.query(&mut cluster.redis(id, IO_TIMEOUT)).unwrap();
    keys
}

/// The lines of redis-cli's output as a set (the order of SCAN is not part of its contract).
fn key_set(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn error_of(connection: &mut redis::Connection, args: &[&str]) -> String {
    let mut command = redis::cmd(args[0]);
    for arg in &args[1..] {
        command.arg(*arg);
    }
    match command.query::<redis::Value>(connection) {
        Err(e) => e.to_string(),
        Ok(value) => panic!("{args:?} was answered {value:?}"),
    }
}

#[test]
fn scan_and_keys_return_every_key_across_groups_to_every_client() {
    let cluster = Cluster::start_sharded(3, three_groups(false));
    let keys = write_keys(&cluster, 0, "scan:", 600);
    let odd = ["odd*star", "odd?mark", "odd[x]", "odd\\slash"];
    let mut connection = cluster.redis(1, IO_TIMEOUT);
    for key in odd {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("v")
            .query(&mut connection)
            .unwrap();
    }
    let all: BTreeSet<String> = keys.iter().cloned().chain(odd.map(String::from)).collect();

    // redis-cli --scan on every node, with and without a pattern.
    for id in 0..3 {
        let port = cluster.node(id).resp.port();
        assert_eq!(key_set(&redis_cli(port, &["--scan"])), all, "node {id}");
        let tens = key_set(&redis_cli(port, &["--scan", "--pattern", "scan:1?"]));
        let expected: BTreeSet<String> = (10..20).map(|i| format!("scan:{i}")).collect();
        assert_eq!(tens, expected, "node {id}");
    }
    let port = cluster.node(2).resp.port();
    assert_eq!(
        key_set(&redis_cli(port, &["--scan", "--pattern", "odd\\*star"])),
        BTreeSet::from(["odd*star".to_string()])
    );
    assert_eq!(
        key_set(&redis_cli(port, &["--scan", "--pattern", "odd[*?]*"])),
        BTreeSet::from(["odd*star".to_string(), "odd?mark".to_string()])
    );

    // The redis crate: a walk of COUNT 5 returns each key once here (nothing changed), and
    // a walk's cursors are decimal integers the client sends back.
    let walked = scan_walk(&mut connection, "scan:*", 5);
    assert_eq!(walked.len(), keys.len(), "no duplicates when nothing moves");
    assert_eq!(walked.iter().cloned().collect::<BTreeSet<_>>(), keys);
    let (_, first): (String, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(20)
        .query(&mut connection)
        .unwrap();
    assert!(
        first.len() <= 20,
        "COUNT bounds the keys examined: {}",
        first.len()
    );
    let typed: (u64, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("TYPE")
        .arg("hash")
        .query(&mut connection)
        .unwrap();
    assert!(typed.1.is_empty(), "no key is a hash: {typed:?}");

    // KEYS.
    let listed: BTreeSet<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    assert_eq!(listed, all);
    let listed: BTreeSet<String> = redis::cmd("KEYS")
        .arg("scan:[1-2]?")
        .query(&mut connection)
        .unwrap();
    let expected: BTreeSet<String> = (10..30).map(|i| format!("scan:{i}")).collect();
    assert_eq!(listed, expected);

    // redis-py: scan_iter with and without MATCH, keys.
    let out = python_script("scan_py.py", &[&port.to_string(), "scan:", "600", "2"]);
    assert!(out.contains("walk 1: "), "{out}");

    // Bad input: Redis's errors, and the node goes on.
    for (args, error) in [
        (
            &["SCAN"][..],
            "wrong number of arguments for 'scan' command",
        ),
        (&["SCAN", "abc"][..], "invalid cursor"),
        (&["SCAN", "-1"][..], "invalid cursor"),
        (&["SCAN", "0", "COUNT", "0"][..], "syntax error"),
        (&["SCAN", "0", "COUNT", "-3"][..], "syntax error"),
        (
            &["SCAN", "0", "COUNT", "x"][..],
            "value is not an integer or out of range",
        ),
        (&["SCAN", "0", "MATCH"][..], "syntax error"),
        (&["SCAN", "0", "BOGUS", "1"][..], "syntax error"),
        (
            &["KEYS"][..],
            "wrong number of arguments for 'keys' command",
        ),
        (
            &["KEYS", "a", "b"][..],
            "wrong number of arguments for 'keys' command",
        ),
    ] {
        let got = error_of(&mut connection, args);
        assert!(got.contains(error), "{args:?}: {got}");
    }
    // A cursor no node handed out restarts its shard or ends the walk; never an error.
    for cursor in ["1", "18446744073709551615", "281474976710657"] {
        let _: (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .query(&mut connection)
            .unwrap();
    }
    let pong: String = redis::cmd("PING").query(&mut connection).unwrap();
    assert_eq!(pong, "PONG");
    cluster.assert_no_panic();
}

#[test]
fn a_scan_while_shards_move_returns_every_key_present_throughout() {
    let cluster = Cluster::start_sharded(3, three_groups(false));
    let keys = write_keys(&cluster, 0, "stay:", 400);
    // About 2 MiB per shard besides, so a moving shard arrives in several pieces: a walk
    // that read a shard still arriving (or its old owner's copy) would miss keys.
    let mut ballast = cluster.redis(0, IO_TIMEOUT);
    for i in 0..128 {
        let _: () = redis::cmd("SET")
            .arg(format!("ballast:{i}"))
            .arg(vec![b'b'; 256 << 10])
            .query(&mut ballast)
            .unwrap();
    }
    // Walks from three clients run while shards move: redis-py (6 walks, COUNT 7), and the
    // redis crate (COUNT 4) and redis-cli taking turns.
    let port = cluster.node(1).resp.port().to_string();
    let mut python = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/scan_py.py"
        ))
        .args([port.as_str(), "stay:", "400", "6"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed (.ci/run installs it with redis-py in a venv)");
    let walks = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let walker = {
        let (walks, stop, keys) = (walks.clone(), stop.clone(), keys.clone());
        let mut connection = cluster.redis(2, IO_TIMEOUT);
        let cli_port = cluster.node(0).resp.port();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let walked: BTreeSet<String> = scan_walk(&mut connection, "stay:*", 4)
                    .into_iter()
                    .collect();
                assert_eq!(walked, keys, "a walk of the redis crate missed keys");
                let listed = key_set(&redis_cli(cli_port, &["--scan", "--pattern", "stay:*"]));
                assert_eq!(listed, keys, "a walk of redis-cli missed keys");
                walks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Meanwhile shards move round the groups, each move settled before the next, and
    // other keys come and go; until every walker is done, and at least 8 moves.
    let mut churn = cluster.redis(0, IO_TIMEOUT);
    let (mut round, mut moves, mut num) = (0u32, 0u32, 0u64);
    let python = loop {
        let (shard, gid) = ((round * 5) % 16, 100 + round % 3);
        let moved = cluster.admin(&["move", &shard.to_string(), &gid.to_string()]);
        let before = std::mem::replace(&mut num, common::config_num(&moved.unwrap()));
        moves += u32::from(num > before && before > 0);
        let _: () = redis::cmd("SET")
            .arg(format!("churn:{round}"))
            .arg(round)
            .query(&mut churn)
            .unwrap();
        let _: u64 = redis::cmd("DEL")
            .arg(format!("churn:{}", round / 2))
            .query(&mut churn)
            .unwrap();
        cluster.wait_settled(num, SETTLE_TIMEOUT);
        round += 1;
        assert!(!walker.is_finished(), "the walker stopped: a walk failed");
        let walked = walks.load(Ordering::Relaxed) >= 3;
        if moves >= 8 && walked && python.try_wait().unwrap().is_some() {
            break python.wait_with_output().unwrap();
        }
        assert!(round < 500, "the walks did not end");
    };
    stop.store(true, Ordering::Relaxed);
    walker.join().expect("the walks of the crate and redis-cli");
    let stdout = String::from_utf8_lossy(&python.stdout);
    assert!(
        python.status.success() && stdout.ends_with("ok\n"),
        "redis-py's walks: {stdout}{}",
        String::from_utf8_lossy(&python.stderr)
    );
    eprintln!("{moves} moves; walks:\n{stdout}");
    cluster.assert_no_panic();
}

#[test]
fn scan_and_keys_work_on_an_unsharded_cluster() {
    let cluster = Cluster::start(3);
    let keys = write_keys(&cluster, 0, "one:", 300);
    let port = cluster.node(2).resp.port();
    assert_eq!(key_set(&redis_cli(port, &["--scan"])), keys);
    let mut connection = cluster.redis(1, IO_TIMEOUT);
    let walked = scan_walk(&mut connection, "one:2*", 3);
    let expected: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.starts_with("one:2"))
        .cloned()
        .collect();
    assert_eq!(walked.len(), expected.len());
    assert_eq!(walked.into_iter().collect::<BTreeSet<_>>(), expected);
    let listed: BTreeSet<String> = redis::cmd("KEYS").arg("*").query(&mut connection).unwrap();
    assert_eq!(listed, keys);
    python_script("scan_py.py", &[&port.to_string(), "one:", "300", "1"]);
}

#[test]
fn in_cluster_mode_each_node_scans_its_own_slots_and_a_cluster_client_scans_them_all() {
    let cluster = Cluster::start_sharded(3, three_groups(true));
    // Every node masters some slots once each group has a leader, which RedisCluster needs.
    let ports: Vec<u16> = (0..3).map(|id| cluster.node(id).resp.port()).collect();
    wait_for("every node masters slots", SETTLE_TIMEOUT, || {
        // CLUSTER NODES: a node's line lists the slot ranges it masters after 8 fields.
        let nodes = redis_cli(ports[0], &["CLUSTER", "NODES"]);
        ports
            .iter()
            .all(|p| {
                nodes.lines().any(|line| {
                    let fields: Vec<&str> = line.split(' ').collect();
                    fields.len() > 8 && fields[1].starts_with(&format!("127.0.0.1:{p}@"))
                })
            })
            .then_some(())
    });
    let keys: BTreeSet<String> = (0..300).map(|i| format!("rc:{i}")).collect();
    let mut connections: Vec<_> = (0..3).map(|id| cluster.redis(id, IO_TIMEOUT)).collect();
    for key in &keys {
        // Each key through the node that masters its slot (`-c` follows MOVED).
        assert_eq!(redis_cli(ports[0], &["-c", "SET", key, "v"]), "OK");
    }
    // Each node's walk holds the keys of the slots it masters: together every key, each
    // on one node only (nothing moves here).
    let mut union = BTreeSet::new();
    let mut total = 0;
    for (id, connection) in connections.iter_mut().enumerate() {
        let own = scan_walk(connection, "rc:*", 10);
        assert!(!own.is_empty(), "node {id} masters keys of its own");
        total += own.len();
        union.extend(own);
        let listed: Vec<String> = redis::cmd("KEYS").arg("rc:*").query(connection).unwrap();
        assert!(
            listed.len() < keys.len(),
            "KEYS on node {id} lists its own slots"
        );
    }
    assert_eq!(union, keys);
    assert_eq!(total, keys.len(), "no key on two nodes");
    // SCAN and KEYS are in COMMAND, without key positions.
    let info = redis_cli(ports[1], &["COMMAND", "INFO", "scan", "keys"]);
    assert!(info.contains("scan") && info.contains("keys"), "{info}");
    // redis-py's RedisCluster walks every master.
    python_script(
        "scan_py.py",
        &[&ports[2].to_string(), "rc:", "300", "2", "cluster"],
    );
}
