//! Redis Cluster mode on real processes (`redis_cluster = true`): the CLUSTER commands,
//! MOVED / ASK / CROSSSLOT, and unmodified cluster clients — `redis-cli -c`,
//! `redis-benchmark --cluster` and redis-py's `RedisCluster` — including across a SIGKILL
//! of a group leader's node and a shard move.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{redis_cli, wait_for, Cluster, Shape};
use kv_engine::kv::{slot_of, ShardId, Sharding};
use kv_replication::cluster::{ClusterReply, ClusterRequest};
use kv_replication::shardmaster::{self, Config, GroupId};
use kv_replication::types::ClientId;
use kv_server::config::Role;
use kv_server::sharded::{ShardedFrame, ToEndpoint};
use kv_server::wire::{self, ClientReply, Frame};

const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Hang guard for conditions the cluster reaches in well under a second normally.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
const SHARDS: u32 = 16;

fn shape(groups: u32, redis_cluster: bool) -> Shape {
    Shape {
        replicas: 3,
        groups,
        shards: SHARDS,
        redis_cluster,
        mode: kv_server::config::Mode::Paxos,
    }
}

/// One slot range of `CLUSTER SLOTS`: first, last, and its master's RESP port.
type Range = (u16, u16, u16);

fn int(v: &redis::Value) -> i64 {
    match v {
        redis::Value::Int(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

/// A node's `CLUSTER SLOTS`, sorted.
fn cluster_slots(cluster: &Cluster, id: u32) -> Vec<Range> {
    let mut con = cluster.redis(id, IO_TIMEOUT);
    let value: redis::Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).unwrap();
    let redis::Value::Array(ranges) = value else {
        panic!("CLUSTER SLOTS: {value:?}")
    };
    let mut out: Vec<Range> = ranges
        .iter()
        .map(|range| {
            let redis::Value::Array(fields) = range else {
                panic!("{range:?}")
            };
            let redis::Value::Array(master) = &fields[2] else {
                panic!("{range:?}")
            };
            (
                int(&fields[0]) as u16,
                int(&fields[1]) as u16,
                int(&master[1]) as u16,
            )
        })
        .collect();
    out.sort();
    out
}

fn master_port(ranges: &[Range], slot: u16) -> u16 {
    ranges
        .iter()
        .find(|r| r.0 <= slot && slot <= r.1)
        .unwrap_or_else(|| panic!("slot {slot} not in {ranges:?}"))
        .2
}

/// Writes keys into every shard through one node (after ASKING, so it runs them
/// whoever masters them: every group gets a leader), then waits until the live nodes
/// agree on who masters each range, and returns that map.
fn settle(cluster: &Cluster, live: &[u32]) -> Vec<Range> {
    let keys: Vec<String> = (0..64).map(|i| format!("settle-{i}")).collect();
    let mut commands: Vec<Vec<&str>> = Vec::new();
    for key in &keys {
        commands.push(vec!["ASKING"]);
        commands.push(vec!["SET", key, "x"]);
    }
    let commands: Vec<&[&str]> = commands.iter().map(|c| &c[..]).collect();
    for reply in raw(cluster.node(live[0]).resp, &commands) {
        assert_eq!(reply, "+OK");
    }
    wait_for("the nodes agree on CLUSTER SLOTS", SETTLE_TIMEOUT, || {
        let first = cluster_slots(cluster, live[0]);
        live.iter()
            .all(|&id| cluster_slots(cluster, id) == first)
            .then_some(first)
    })
}

/// Reads one reply and returns its first line, or a bulk string's value (enough for
/// errors and simple replies); an array's elements are read and dropped.
fn read_reply(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let line = line.trim_end().to_string();
    if let Some(len) = line.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) {
        let mut value = vec![0u8; len + 2];
        reader.read_exact(&mut value).unwrap();
        return String::from_utf8_lossy(&value[..len]).into_owned();
    }
    if let Some(len) = line.strip_prefix('*').and_then(|n| n.parse::<usize>().ok()) {
        for _ in 0..len {
            read_reply(reader);
        }
    }
    line
}

/// Sends the commands as one pipeline and returns each reply as [`read_reply`] does.
fn raw(addr: SocketAddr, commands: &[&[&str]]) -> Vec<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut out = String::new();
    for args in commands {
        out.push_str(&format!("*{}\r\n", args.len()));
        for a in *args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    }
    stream.write_all(out.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    commands.iter().map(|_| read_reply(&mut reader)).collect()
}

#[test]
fn cluster_commands_describe_the_slots_and_nodes_redirect_to_group_leaders() {
    let cluster = Cluster::start_sharded(3, shape(3, true));
    let ranges = settle(&cluster, &[0, 1, 2]);
    let ports: Vec<u16> = (0..3).map(|id| cluster.node(id).resp.port()).collect();

    // CLUSTER SLOTS covers 0..=16383 exactly, each range mastered by a node of the file.
    let mut next = 0u32;
    for &(first, last, port) in &ranges {
        assert_eq!(u32::from(first), next, "{ranges:?}");
        assert!(first <= last && ports.contains(&port), "{ranges:?}");
        next = u32::from(last) + 1;
    }
    assert_eq!(next, 16384, "{ranges:?}");

    let mut con = cluster.redis(1, IO_TIMEOUT);
    let slot = |key: &str, con: &mut redis::Connection| -> i64 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(con)
            .unwrap()
    };
    assert_eq!(slot("foo", &mut con), 12182);
    assert_eq!(
        slot("{user1000}.following", &mut con),
        slot("{user1000}.followers", &mut con)
    );

    // CLUSTER NODES: one line per node, this one marked `myself` with CLUSTER MYID's id.
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query(&mut con).unwrap();
    let myid: String = redis::cmd("CLUSTER").arg("MYID").query(&mut con).unwrap();
    assert_eq!(nodes.lines().count(), 3, "{nodes}");
    let mine = nodes
        .lines()
        .find(|l| l.contains("myself"))
        .expect("myself");
    assert!(
        mine.starts_with(&format!("{myid} 127.0.0.1:{}@", ports[1])),
        "{nodes}"
    );
    assert_eq!(myid.len(), 40);
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut con).unwrap();
    assert!(info.contains("cluster_state:ok\r\n"), "{info}");
    assert!(info.contains("cluster_slots_assigned:16384\r\n"), "{info}");
    let shards: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SHARDS").query(&mut con).unwrap();
    assert_eq!(shards.len(), ranges.len());

    // Keys of different slots in one command: CROSSSLOT; of one slot (hash tags): run.
    let crossslot = |addr| raw(addr, &[&["MGET", "a", "b"], &["DEL", "a", "b"]]);
    let master = master_port(&ranges, slot_of(b"a"));
    let master_id = ports.iter().position(|&p| p == master).unwrap() as u32;
    for line in crossslot(cluster.node(master_id).resp) {
        assert!(line.starts_with("-CROSSSLOT "), "{line}");
    }
    let tagged = master_port(&ranges, slot_of(b"t"));
    let tagged_id = ports.iter().position(|&p| p == tagged).unwrap() as u32;
    let replies = raw(
        cluster.node(tagged_id).resp,
        &[&["SET", "{t}1", "x"], &["MGET", "{t}1", "{t}2"]],
    );
    assert_eq!(replies, ["+OK", "*2"]);

    // A node that does not master a key's slot answers MOVED to the one that does, and
    // serves it after ASKING.
    let foo_master = master_port(&ranges, 12182);
    let other = (0..3).find(|&id| ports[id as usize] != foo_master).unwrap();
    let replies = raw(
        cluster.node(other).resp,
        &[
            &["GET", "foo"],
            &["ASKING"],
            &["SET", "foo", "asked"],
            &["GET", "foo"],
        ],
    );
    assert_eq!(replies[0], format!("-MOVED 12182 127.0.0.1:{foo_master}"));
    assert_eq!(replies[1..3], ["+OK", "+OK"]);
    assert!(replies[3].starts_with("-MOVED 12182 "), "{replies:?}");

    // COMMAND describes key positions.
    let info: redis::Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("mget")
        .query(&mut con)
        .unwrap();
    let redis::Value::Array(entries) = info else {
        panic!("{info:?}")
    };
    let redis::Value::Array(mget) = &entries[0] else {
        panic!("{entries:?}")
    };
    assert_eq!(
        (int(&mget[3]), int(&mget[4]), int(&mget[5])),
        (1, -1, 1),
        "{mget:?}"
    );

    // redis-cli -c follows MOVED.
    let port = ports[other as usize];
    let set = redis_cli(port, &["-c", "SET", "foo", "from-cli"]);
    assert!(set.ends_with("OK"), "{set}");
    for p in &ports {
        let got = redis_cli(*p, &["-c", "GET", "foo"]);
        assert!(got.ends_with("from-cli"), "{got}");
    }

    // redis-benchmark --cluster: every request answered (it stops at the first error).
    let bench = Command::new("redis-benchmark")
        .args(["--cluster", "-p", &ports[0].to_string()])
        .args(["-t", "set,get", "-n", "3000", "-c", "20", "-q"])
        .output()
        .expect("redis-benchmark is installed");
    let text = String::from_utf8_lossy(&bench.stdout).to_string()
        + &String::from_utf8_lossy(&bench.stderr);
    assert!(bench.status.success(), "redis-benchmark --cluster: {text}");
    assert!(text.contains("SET:") && text.contains("GET:"), "{text}");
    assert!(!text.to_lowercase().contains("error"), "{text}");
    cluster.assert_no_panic();
}

#[test]
fn without_cluster_mode_the_cluster_commands_are_refused_and_any_node_takes_any_key() {
    let cluster = Cluster::start_sharded(3, shape(2, false));
    let replies = raw(
        cluster.node(0).resp,
        &[
            &["CLUSTER", "SLOTS"],
            &["ASKING"],
            &["MGET", "a", "b"],
            &["SET", "foo", "1"],
        ],
    );
    assert_eq!(
        replies[..2],
        [
            "-ERR This instance has cluster support disabled",
            "-ERR This instance has cluster support disabled"
        ]
    );
    assert_eq!(replies[2..], ["*2", "+OK"]);
}

/// Calls the shard master through the native protocol (any master replica that answers).
fn master_call(cluster: &Cluster, command: shardmaster::Command) -> shardmaster::Reply {
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let client = ClientId(0x7263_0000 ^ u64::from(std::process::id()));
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let masters: Vec<_> = cluster
        .config
        .endpoints()
        .into_iter()
        .filter(|e| e.role == Role::Master)
        .collect();
    wait_for("a shard-master replica answers", SETTLE_TIMEOUT, || {
        masters.iter().find_map(|endpoint| {
            let request = ClusterRequest::Master(shardmaster::Request {
                client,
                seq,
                command: command.clone(),
            });
            let frame: ShardedFrame = Frame::Request {
                tag: 1,
                request: ToEndpoint {
                    to: endpoint.id,
                    request,
                },
            };
            let mut stream = cluster.native_stream(endpoint.node).ok()?;
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let body = wire::encode(&frame).unwrap();
            stream.write_all(&(body.len() as u32).to_be_bytes()).ok()?;
            stream.write_all(&body).ok()?;
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).ok()?;
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
            stream.read_exact(&mut body).ok()?;
            let frame: ShardedFrame = wire::decode(&body).ok()?;
            match frame {
                Frame::Reply {
                    reply: ClientReply::Done(ClusterReply::Master(reply)),
                    ..
                } => Some(reply),
                _ => None,
            }
        })
    })
}

fn latest_config(cluster: &Cluster) -> std::sync::Arc<Config> {
    match master_call(cluster, shardmaster::Command::Query { num: None }) {
        shardmaster::Reply::Config(config) => config,
        other => panic!("query: {other:?}"),
    }
}

/// The python script's progress: operations done so far.
fn progress(control: &Path) -> u64 {
    std::fs::read_to_string(control.join("progress"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The python script, and its output once it has exited.
struct Script {
    child: std::process::Child,
    output: Option<std::thread::JoinHandle<String>>,
}

impl Script {
    /// What the script printed (its traceback, if it failed), once it has exited.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().unwrap()?;
        let text = self
            .output
            .take()
            .map(|o| o.join().unwrap())
            .unwrap_or_default();
        Some(format!("redis-py exited ({status}):\n{text}"))
    }

    /// Waits until the script has done `more` operations beyond what it had done on
    /// entry; a script that exits meanwhile fails the test with what it printed. One that
    /// stalls fails it with each client's operation in flight, every python thread's
    /// stack, and the end of every node's log.
    fn wait_progress(&mut self, cluster: &Cluster, control: &Path, more: u64, what: &str) {
        let from = progress(control);
        let started = Instant::now();
        while progress(control) < from + more {
            if let Some(text) = self.exited() {
                panic!("{what}: {text}");
            }
            if started.elapsed() > SETTLE_TIMEOUT {
                let pid = self.child.id().to_string();
                let _ = Command::new("kill").args(["-USR1", &pid]).status();
                std::thread::sleep(Duration::from_secs(1));
                let _ = self.child.kill();
                let text = wait_for("the stalled script exits", SETTLE_TIMEOUT, || self.exited());
                let logs: String = (0..cluster.len())
                    .map(|id| format!("\n--- node {id} log ---\n{}", cluster.log(id)))
                    .collect();
                panic!(
                    "{what}: no {more} more operations within {SETTLE_TIMEOUT:?} (at {} of {})\n{text}{logs}",
                    progress(control),
                    from + more
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn redis_py_cluster_client_rides_through_a_leader_kill_and_a_shard_move() {
    let mut cluster = Cluster::start_sharded(3, shape(3, true));
    let ranges = settle(&cluster, &[0, 1, 2]);
    let control = cluster.dir.path().join("python-control");
    std::fs::create_dir(&control).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/redis_cluster_py.py"
    );
    let mut python = Command::new("python3")
        .arg(script)
        .arg(&control)
        .args((0..3).map(|id| cluster.node(id).resp.port().to_string()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed (.ci/run installs it with redis-py in a venv)");
    let output = std::thread::spawn({
        let mut stdout = python.stdout.take().unwrap();
        let mut stderr = python.stderr.take().unwrap();
        move || {
            let mut text = String::new();
            stdout.read_to_string(&mut text).unwrap();
            stderr.read_to_string(&mut text).unwrap();
            text
        }
    });
    let mut python = Script {
        child: python,
        output: Some(output),
    };
    python.wait_progress(&cluster, &control, 500, "redis-py runs");

    // SIGKILL a node that masters some slots (its replicas lead groups), then keep going.
    let ports: Vec<u16> = (0..3).map(|id| cluster.node(id).resp.port()).collect();
    let victim = ports.iter().position(|&p| p == ranges[0].2).unwrap() as u32;
    cluster.kill_node(victim);
    let live: Vec<u32> = (0..3).filter(|&id| id != victim).collect();
    wait_for(
        "the surviving nodes stop naming the killed node as a master",
        SETTLE_TIMEOUT,
        || {
            live.iter()
                .all(|&id| {
                    cluster_slots(&cluster, id)
                        .iter()
                        .all(|r| r.2 != ports[victim as usize])
                })
                .then_some(())
        },
    );
    python.wait_progress(&cluster, &control, 500, "redis-py goes on after the kill");
    cluster.start_node(victim);
    cluster.wait_ready(victim);

    // Move a shard to another group while redis-py runs.
    let sharding = Sharding::Slots { shards: SHARDS };
    let config = latest_config(&cluster);
    let shard = ShardId(sharding.shard_of_slot(slot_of(b"w:1")).0);
    let owner = config.owner(shard).unwrap();
    let to = *config.groups().keys().find(|&&g| g != owner).unwrap();
    let moved = master_call(
        &cluster,
        shardmaster::Command::Move {
            shard,
            group: GroupId(to.0),
        },
    );
    assert!(matches!(moved, shardmaster::Reply::Changed(_)), "{moved:?}");
    wait_for(
        "the move reaches every node's slot map",
        SETTLE_TIMEOUT,
        || {
            let after = latest_config(&cluster);
            (after.owner(shard) == Some(to)).then_some(())
        },
    );
    python.wait_progress(&cluster, &control, 1500, "redis-py goes on after the move");

    std::fs::write(control.join("stop"), b"").unwrap();
    let text = wait_for("redis-py finishes", SETTLE_TIMEOUT, || python.exited());
    assert!(
        text.starts_with("redis-py exited (exit status: 0)") && text.contains("\nok\n"),
        "redis-py RedisCluster failed:\n{text}"
    );
    println!("{text}");
    cluster.assert_no_panic();
}

/// A shard moved to a group whose old owner is down cannot arrive: the node that masters
/// its slots (the new group's leader) answers `-TRYAGAIN` after
/// [`kv_server::sharded::ARRIVAL_WAIT_MAX`] (a cluster client retries), other nodes answer
/// `-MOVED` to it, and once the old owner is back the shard arrives and its key reads back.
#[test]
fn a_shard_that_cannot_arrive_gets_tryagain_until_its_old_owner_is_back() {
    // The shard master and group 100 on nodes 0-2; group 101 alone on node 3.
    let mut cluster = Cluster::start_edited(4, shape(2, true), Box::new(|_, _| {}), |config| {
        for section in [
            &mut config.master.as_mut().unwrap().nodes,
            &mut config.groups[0].nodes,
        ] {
            *section = vec![0, 1, 2];
        }
        config.groups[1].nodes = vec![3];
    });
    settle(&cluster, &[0, 1, 2, 3]);
    let sharding = Sharding::Slots { shards: SHARDS };
    let config = latest_config(&cluster);
    let key = (0..)
        .map(|i| format!("stranded-{i}"))
        .find(|k| config.owner(ShardId(sharding.shard_of(k.as_bytes()).0)) == Some(GroupId(101)))
        .unwrap();
    let slot = slot_of(key.as_bytes());
    let shard = ShardId(sharding.shard_of_slot(slot).0);
    let set = raw(cluster.node(0).resp, &[&["ASKING"], &["SET", &key, "kept"]]);
    assert_eq!(set, ["+OK", "+OK"]);

    cluster.kill_node(3);
    let moved = master_call(
        &cluster,
        shardmaster::Command::Move {
            shard,
            group: GroupId(100),
        },
    );
    assert!(matches!(moved, shardmaster::Reply::Changed(_)), "{moved:?}");
    let ports: Vec<u16> = (0..4).map(|id| cluster.node(id).resp.port()).collect();
    let master = wait_for(
        "the nodes of group 100 agree that one of them masters the moved slot",
        SETTLE_TIMEOUT,
        || {
            let first = master_port(&cluster_slots(&cluster, 0), slot);
            (first != ports[3]
                && (1..3).all(|id| master_port(&cluster_slots(&cluster, id), slot) == first))
            .then_some(first)
        },
    );
    let master_id = ports.iter().position(|&p| p == master).unwrap() as u32;
    let reply = raw(cluster.node(master_id).resp, &[&["GET", &key]]);
    assert!(reply[0].starts_with("-TRYAGAIN "), "{reply:?}");
    let other = (0..3).find(|&id| id != master_id).unwrap();
    let reply = raw(cluster.node(other).resp, &[&["GET", &key]]);
    assert_eq!(reply, [format!("-MOVED {slot} 127.0.0.1:{master}")]);

    cluster.start_node(3);
    cluster.wait_ready(3);
    // The shard arrives; until then each try may still get `-TRYAGAIN`, as a client's would.
    let got = wait_for("the moved shard arrives", SETTLE_TIMEOUT, || {
        let reply = raw(cluster.node(master_id).resp, &[&["GET", &key]]);
        (!reply[0].starts_with("-TRYAGAIN ")).then(|| reply[0].clone())
    });
    assert_eq!(got, "kept");
    cluster.assert_no_panic();
}

/// DBSIZE, INFO keyspace's key count and KEYS on node `id`.
fn node_counts(cluster: &Cluster, id: u32) -> (u64, Option<u64>, Vec<String>) {
    let mut conn = cluster.redis(id, IO_TIMEOUT);
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut conn).unwrap();
    let info_keys = info
        .lines()
        .find_map(|l| l.strip_prefix("db0:keys="))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap());
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    (dbsize, info_keys, keys)
}

/// In Redis Cluster mode a node's DBSIZE and INFO keyspace count the keys of the slots it
/// masters, as its KEYS lists them, so the masters' counts add up to every key once
/// (`redis-cli --cluster info`), with groups on different nodes.
#[test]
fn dbsize_counts_the_keys_of_the_slots_a_node_masters() {
    // The shard master and group 100 on nodes 0-2; group 101 alone on node 3.
    let cluster = Cluster::start_edited(4, shape(2, true), Box::new(|_, _| {}), |config| {
        for section in [
            &mut config.master.as_mut().unwrap().nodes,
            &mut config.groups[0].nodes,
        ] {
            *section = vec![0, 1, 2];
        }
        config.groups[1].nodes = vec![3];
    });
    // 64 keys `settle-*`, then 200 more, each through whichever node (ASKING).
    settle(&cluster, &[0, 1, 2, 3]);
    let keys: Vec<String> = (0..200).map(|i| format!("key-{i}")).collect();
    let mut commands: Vec<Vec<&str>> = Vec::new();
    for key in &keys {
        commands.push(vec!["ASKING"]);
        commands.push(vec!["SET", key, "v"]);
    }
    let commands: Vec<&[&str]> = commands.iter().map(|c| &c[..]).collect();
    assert!(raw(cluster.node(0).resp, &commands)
        .iter()
        .all(|r| r == "+OK"));
    let total = 264;
    let (sum, masters) = wait_for(
        "each node counts its KEYS and the masters together count every key once",
        SETTLE_TIMEOUT,
        || {
            let mut sum = 0;
            let mut masters = 0;
            let mut every = std::collections::BTreeSet::new();
            for id in 0..4 {
                let (dbsize, info_keys, keys) = node_counts(&cluster, id);
                let info_keys = info_keys.unwrap_or(0);
                if dbsize != keys.len() as u64 || info_keys != dbsize {
                    return None;
                }
                sum += dbsize;
                masters += u32::from(dbsize > 0);
                every.extend(keys);
            }
            (every.len() == total && sum == total as u64).then_some((sum, masters))
        },
    );
    assert_eq!(sum, total as u64);
    assert!(masters >= 2, "the keys span groups led on different nodes");
    cluster.assert_no_panic();
}

/// With every group gone from the configuration (which the shard master accepts, though
/// `kv admin leave` refuses it), a command on a key answers Redis Cluster's
/// `-CLUSTERDOWN Hash slot not served` at once instead of waiting out its retries, and
/// DBSIZE counts nothing; once a group joins, the keys written before read back.
#[test]
fn a_key_no_group_owns_gets_clusterdown_at_once_in_both_modes() {
    for redis_cluster in [false, true] {
        let cluster = Cluster::start_sharded(3, shape(1, redis_cluster));
        let addr = cluster.node(0).resp;
        assert_eq!(raw(addr, &[&["ASKING"], &["SET", "key1", "v1"]])[1], "+OK");
        let left = master_call(
            &cluster,
            shardmaster::Command::Leave {
                group: GroupId(100),
            },
        );
        assert!(matches!(left, shardmaster::Reply::Changed(_)), "{left:?}");
        // Far below the 30 s a command keeps retrying: the answer comes first.
        // Each probe reads with a timeout far below the 30 s a command keeps retrying: the
        // answer must come first. Until the group and the node follow the configuration,
        // the keys may still be served (or, in cluster mode, redirected).
        let unserved = "-CLUSTERDOWN Hash slot not served";
        for id in 0..3 {
            wait_for("every slot is reported not served", SETTLE_TIMEOUT, || {
                let mut stream = TcpStream::connect(cluster.node(id).resp).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                stream
                    .write_all(
                        b"*2\r\n$3\r\nGET\r\n$4\r\nkey1\r\n\
                          *3\r\n$3\r\nSET\r\n$4\r\nkey2\r\n$1\r\nx\r\n\
                          *1\r\n$6\r\nDBSIZE\r\n",
                    )
                    .unwrap();
                let mut reader = BufReader::new(stream);
                let replies: Vec<String> = (0..3).map(|_| read_reply(&mut reader)).collect();
                if replies == [unserved, unserved, ":0"] {
                    return Some(());
                }
                // Until the group applies the configuration it still serves the keys;
                // nothing else (no other error) is answered meanwhile.
                let served = |r: &String| {
                    ["v1", "+OK"].contains(&r.as_str())
                        || r.starts_with(':')
                        || r == unserved
                        || (redis_cluster && r.starts_with("-MOVED"))
                };
                assert!(
                    replies.iter().all(served),
                    "node {id}, cluster mode {redis_cluster}: {replies:?}"
                );
                None
            });
        }
        let joined = cluster.admin(&["join", "100"]).unwrap();
        assert!(joined.contains("group 100 joined"), "{joined}");
        wait_for("the key is served again", SETTLE_TIMEOUT, || {
            let replies = raw(addr, &[&["ASKING"], &["GET", "key1"]]);
            (replies[1] == "v1").then_some(())
        });
        cluster.assert_no_panic();
    }
}
