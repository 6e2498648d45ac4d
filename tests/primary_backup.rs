//! Primary/backup mode on real processes: a view service (node 0) and three servers, each
//! a `kv node`. The primary is SIGKILLed under load from concurrent clients, and SIGSTOPped
//! long enough for the view service to replace it, then resumed; every client operation is
//! recorded and the history, with reads of every key at the end, must be linearizable —
//! no acknowledged write lost, no stale answer from a replaced primary. The view service
//! is SIGKILLed and restarted (it resumes its persisted view), and `kv admin view` /
//! `kv admin status` / the CLI client / RESP work against every node.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::workload::{assert_linearizable, final_reads, spawn_clients};
use common::{wait_for, Cluster, Shape};
use futures_util::{SinkExt, StreamExt};
use kv_engine::kv::Op;
use kv_replication::kvgroup::Batch;
use kv_replication::linearizability::History;
use kv_replication::pbservice;
use kv_replication::replica::Request;
use kv_server::client::{Client, ClientOptions, PrimaryBackup};
use kv_server::config::Mode;
use kv_server::wire::{self, ClientReply, Frame};

const KEYS: u64 = 4;
/// Hang guard for a view change: the view service needs 5 missed pings (500 ms) to call
/// a server dead, and a new backup a state transfer; this is many times that.
const VIEW_TIMEOUT: Duration = Duration::from_secs(30);
/// Hang guard for clients to make progress.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
const VIEW_SERVICE: u32 = 0;

fn options() -> ClientOptions {
    ClientOptions {
        attempt_timeout: Duration::from_millis(800),
        deadline: Duration::from_secs(30),
    }
}

/// A view service on node 0 and `servers` primary/backup servers after it.
fn start(servers: u32) -> Cluster {
    Cluster::start_sharded(
        servers + 1,
        Shape {
            replicas: servers,
            groups: 0,
            shards: 1,
            redis_cluster: false,
            mode: Mode::PrimaryBackup,
        },
    )
}

fn clients(cluster: &Cluster, count: usize) -> Vec<Client<PrimaryBackup>> {
    // Start each on a server (node 0, the view service, only redirects).
    (0..count)
        .map(|c| cluster.client_of(1 + c % 3, options()))
        .collect()
}

fn wait_settled(cluster: &Cluster, what: &str) -> (u64, u32, u32) {
    wait_for(what, VIEW_TIMEOUT, || cluster.settled_view())
}

#[test]
fn sigkill_of_the_primary_under_load_loses_no_acknowledged_write() {
    let mut cluster = start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let history = History::new();
    let epoch = Instant::now();
    let (_, first_primary, _) = wait_settled(&cluster, "a first view with a backup");
    let load = spawn_clients(&rt, clients(&cluster, 6), KEYS, history.clone(), epoch);
    load.wait_progress(
        200,
        "clients working before the first kill",
        PROGRESS_TIMEOUT,
    );

    // Twice: kill the primary mid-stream; the backup takes over (and the spare becomes
    // backup); the killed server comes back as a new, empty life — a spare.
    let mut primary = first_primary;
    for round in 0..2 {
        let (viewnum, p, backup) = wait_settled(&cluster, "the view settled before a kill");
        assert_eq!(p, primary);
        cluster.kill_node(primary);
        let promoted = wait_for("the backup promoted", VIEW_TIMEOUT, || {
            cluster
                .view()
                .filter(|v| v.viewnum > viewnum && v.primary_node().is_some())
        });
        assert_eq!(
            promoted.primary_node().map(|n| n.0),
            Some(backup),
            "round {round}: the backup, which holds the state, becomes primary: {promoted}"
        );
        load.wait_progress(200, "clients working after the kill", PROGRESS_TIMEOUT);
        cluster.start_node(primary);
        cluster.wait_ready(primary);
        primary = backup;
    }
    load.wait_progress(100, "clients working at the end", PROGRESS_TIMEOUT);
    let acked = load.finish(&rt);
    assert!(acked > 300, "{acked} writes acknowledged");

    let mut reader = cluster.client_of::<PrimaryBackup>(1, options());
    final_reads(&rt, &mut reader, KEYS, &history, epoch);
    assert_linearizable(&history);
    cluster.assert_no_panic();
}

/// Sends a native GET of `key` on `framed` as a new client, without waiting for the answer.
async fn send_get(
    framed: &mut tokio_util::codec::Framed<
        tokio::net::TcpStream,
        tokio_util::codec::LengthDelimitedCodec,
    >,
    key: &str,
) {
    let request = Frame::<(), _, pbservice::Reply>::Request {
        tag: 1,
        request: pbservice::Request::Kv(Request {
            client: kv_server::client::random_client_id(),
            seq: 1,
            command: Batch::one(Op::Get {
                key: Bytes::from(key.to_string()),
            }),
        }),
    };
    framed.send(wire::encode(&request).unwrap()).await.unwrap();
}

#[test]
fn a_stopped_primary_replaced_meanwhile_never_answers_as_primary_after_it_resumes() {
    let cluster = start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let history = History::new();
    let epoch = Instant::now();
    let (viewnum, old_primary, backup) = wait_settled(&cluster, "a first view with a backup");
    let mut writer = cluster.client_of::<PrimaryBackup>(backup as usize, options());
    rt.block_on(writer.execute(Op::Put {
        key: Bytes::from_static(b"fenced"),
        value: Bytes::from_static(b"old"),
    }))
    .expect("the first write");
    let load = spawn_clients(&rt, clients(&cluster, 6), KEYS, history.clone(), epoch);
    load.wait_progress(200, "clients working before the stop", PROGRESS_TIMEOUT);

    // A native connection to the primary, made (the handshake needs its answers) before
    // it stops.
    let mut stale = rt
        .block_on(kv_server::client::connect(
            &cluster.key(),
            old_primary,
            cluster.node(old_primary).peer,
        ))
        .expect("connect to the primary");
    // Stop the primary (a partition stand-in: it hears nothing and says nothing) until the
    // view service has moved on without it and the new view is settled.
    cluster.signal(old_primary, libc::SIGSTOP);
    let (new_viewnum, new_primary, _) =
        wait_for("a view without the stopped primary", VIEW_TIMEOUT, || {
            cluster
                .settled_view()
                .filter(|&(n, p, b)| n > viewnum && p != old_primary && b != old_primary)
        });
    assert_eq!(new_primary, backup, "the old backup was promoted");
    rt.block_on(writer.execute(Op::Put {
        key: Bytes::from_static(b"fenced"),
        value: Bytes::from_static(b"new"),
    }))
    .expect("a write in the new view");
    load.wait_progress(
        200,
        "clients working while the old primary is stopped",
        PROGRESS_TIMEOUT,
    );
    // A read sent to the stopped primary waits in its socket for it to resume.
    rt.block_on(send_get(&mut stale, "fenced"));

    cluster.signal(old_primary, libc::SIGCONT);
    // It resumes believing it is the primary of view `viewnum`, with requests queued (the
    // read above, and the load's). Whatever it does with them, its answer to the read must
    // not be a value: the backup it must forward to has moved on.
    let answer = rt.block_on(async {
        tokio::time::timeout(VIEW_TIMEOUT, stale.next())
            .await
            .expect("the resumed server answers the queued read (hang guard)")
    });
    let body = answer.expect("an answer frame").expect("a whole frame");
    match wire::decode::<(), pbservice::Request, pbservice::Reply>(&body).expect("decodes") {
        Frame::Reply {
            reply: ClientReply::Unavailable(_),
            leader,
            ..
        } => assert_eq!(
            leader,
            Some(new_primary),
            "it names the primary it learned of"
        ),
        other => panic!("a replaced primary answered a read: {other:?}"),
    }
    let resumed = wait_for(
        "the resumed server learns the new view",
        VIEW_TIMEOUT,
        || {
            cluster
                .status_fields(old_primary)
                .filter(|s| s.u64("viewnum") >= new_viewnum)
        },
    );
    assert_ne!(resumed.get("role"), "primary");
    load.wait_progress(
        200,
        "clients working after the old primary resumed",
        PROGRESS_TIMEOUT,
    );
    let acked = load.finish(&rt);
    assert!(acked > 300, "{acked} writes acknowledged");

    let read = rt.block_on(writer.execute(Op::Get {
        key: Bytes::from_static(b"fenced"),
    }));
    assert_eq!(
        read.expect("a read"),
        kv_engine::kv::Reply::Value(Some(Bytes::from_static(b"new")))
    );
    let mut reader = cluster.client_of::<PrimaryBackup>(1, options());
    final_reads(&rt, &mut reader, KEYS, &history, epoch);
    assert_linearizable(&history);
    cluster.assert_no_panic();
}

#[test]
fn a_restarted_view_service_resumes_its_view_and_still_fails_over() {
    let mut cluster = start(3);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (viewnum, primary, backup) = wait_settled(&cluster, "a first view with a backup");
    let mut client = cluster.client_of::<PrimaryBackup>(1, options());
    let put = |client: &mut Client<PrimaryBackup>, key: &'static str, value: &'static str| {
        rt.block_on(client.execute(Op::Put {
            key: Bytes::from_static(key.as_bytes()),
            value: Bytes::from_static(value.as_bytes()),
        }))
        .expect("a write")
    };
    put(&mut client, "a", "1");

    // The view service dies; the primary and backup go on serving without it.
    cluster.kill_node(VIEW_SERVICE);
    put(&mut client, "b", "2");
    cluster.start_node(VIEW_SERVICE);
    cluster.wait_ready(VIEW_SERVICE);
    let back = cluster.view().expect("the view service answers");
    assert_eq!(
        (
            back.viewnum,
            back.primary_node().map(|n| n.0),
            back.backup_node().map(|n| n.0)
        ),
        (viewnum, Some(primary), Some(backup)),
        "resumed from its persisted view, not from view 0"
    );
    // It still knows who holds the data: the primary fails, the backup takes over.
    wait_settled(&cluster, "the view acknowledged again");
    cluster.kill_node(primary);
    wait_for("the backup promoted", VIEW_TIMEOUT, || {
        cluster
            .view()
            .filter(|v| v.primary_node().map(|n| n.0) == Some(backup))
    });
    for (key, value) in [("a", "1"), ("b", "2")] {
        let read = rt.block_on(client.execute(Op::Get {
            key: Bytes::from_static(key.as_bytes()),
        }));
        assert_eq!(
            read.expect("a read"),
            kv_engine::kv::Reply::Value(Some(Bytes::from(value)))
        );
    }

    // A view service whose directory lost its stamp refuses to start: it cannot know
    // which servers hold the data.
    cluster.kill_node(VIEW_SERVICE);
    cluster.wipe_node(VIEW_SERVICE);
    cluster.start_node(VIEW_SERVICE);
    assert!(!cluster.wait_exit(VIEW_SERVICE), "a refused start fails");
    assert!(
        cluster
            .log(VIEW_SERVICE)
            .contains("view service and its data directory has no stamp"),
        "{}",
        cluster.log(VIEW_SERVICE)
    );
}

#[test]
fn admin_view_status_the_cli_and_resp_work_against_every_node() {
    let cluster = start(3);
    let (viewnum, primary, backup) = wait_settled(&cluster, "a first view with a backup");
    let idle = (1..=3).find(|&n| n != primary && n != backup).unwrap();

    // The CLI client, whichever node it starts on.
    assert_eq!(cluster.kv(&["put", "greeting", "hello"]).unwrap(), "OK\n");
    assert_eq!(
        cluster.kv(&["append", "greeting", ", world"]).unwrap(),
        "12\n"
    );
    assert_eq!(cluster.kv(&["get", "greeting"]).unwrap(), "hello, world\n");
    assert_eq!(cluster.kv(&["put", "gone", "x"]).unwrap(), "OK\n");
    assert_eq!(cluster.kv(&["del", "gone"]).unwrap(), "1\n");
    assert!(cluster.kv(&["get", "gone"]).unwrap_err().contains("(nil)"));

    // RESP on every node, the view service and the backup included: forwarded to the
    // primary.
    for id in 0..4 {
        let mut redis = cluster.redis(id, Duration::from_secs(30));
        let key = format!("resp-{id}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(id)
            .query(&mut redis)
            .unwrap();
        for reader in 0..4 {
            let mut other = cluster.redis(reader, Duration::from_secs(30));
            let value: String = redis::cmd("GET").arg(&key).query(&mut other).unwrap();
            assert_eq!(
                value,
                id.to_string(),
                "SET on node {id}, GET on node {reader}"
            );
        }
    }

    let shown = cluster.admin(&["view"]).unwrap();
    assert_eq!(
        shown,
        format!("viewnum: {viewnum}\nprimary: node {primary}\nbackup: node {backup}\n")
    );
    let json: serde_json::Value =
        serde_json::from_str(&cluster.admin(&["view", "--json"]).unwrap()).unwrap();
    assert_eq!(json["viewnum"], viewnum);
    assert_eq!(json["primary"], primary);
    assert_eq!(json["backup"], backup);

    // Status: the view service, one primary and one backup holding the same keys and
    // bytes, one idle spare.
    let status = cluster.admin(&["status", "--json"]).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let field = |node: u32, name: &str| -> serde_json::Value {
        let value = &status["nodes"][node as usize]["replicas"][0][name];
        assert!(!value.is_null(), "node {node} has no {name}: {status}");
        value.clone()
    };
    // Values are typed: roles strings, flags booleans, counts numbers.
    assert_eq!(field(VIEW_SERVICE, "role"), "view-service");
    assert_eq!(field(VIEW_SERVICE, "acked"), true);
    assert_eq!(field(VIEW_SERVICE, "stuck"), false);
    assert_eq!(field(primary, "role"), "primary");
    assert_eq!(field(backup, "role"), "backup");
    assert_eq!(field(idle, "role"), "idle");
    for node in 0..4 {
        assert_eq!(field(node, "viewnum"), viewnum, "node {node}");
    }
    // greeting and the four resp-N keys.
    for node in [primary, backup] {
        assert_eq!(field(node, "keys"), 5, "node {node}");
    }
    assert!(field(primary, "bytes").is_u64());
    assert_eq!(field(primary, "bytes"), field(backup, "bytes"));
    assert_eq!(field(idle, "keys"), 0);
    let text = cluster.admin(&["status"]).unwrap();
    assert!(text.contains("role: primary\n"), "{text}");

    // Commands of the other modes are refused with one clear line.
    let err = cluster.admin(&["query"]).unwrap_err();
    assert!(
        err.starts_with("error: ") && err.contains("no shard master"),
        "{err}"
    );
}

#[test]
fn dbsize_and_info_keyspace_on_every_node_count_the_keys_keys_lists() {
    let cluster = start(3);
    wait_settled(&cluster, "a first view with a backup");
    let mut writer = cluster.redis(1, Duration::from_secs(30));
    for k in 0..7 {
        let _: () = redis::cmd("SET")
            .arg(format!("key-{k}"))
            .arg(k)
            .query(&mut writer)
            .unwrap();
    }
    // Every node answers for the cluster, as GET and KEYS do: the view service and the
    // idle spare hold no keys of their own, the backup only a copy.
    for id in 0..4 {
        let mut redis = cluster.redis(id, Duration::from_secs(30));
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut redis).unwrap();
        assert_eq!(keys.len(), 7, "KEYS on node {id}: {keys:?}");
        let size: u64 = redis::cmd("DBSIZE").query(&mut redis).unwrap();
        assert_eq!(size, 7, "DBSIZE on node {id}");
        let info: String = redis::cmd("INFO")
            .arg("keyspace")
            .query(&mut redis)
            .unwrap();
        assert!(
            info.contains("db0:keys=7,"),
            "INFO keyspace on node {id}: {info}"
        );
    }
}
