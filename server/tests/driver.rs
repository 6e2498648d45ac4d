//! The production driver and its front doors, tested with a minimal single-node core (a test
//! fixture, not a product: it replicates nothing). It checks the plumbing every replicated
//! core relies on: persist-before-reply, recovery from the data directory after shutdown,
//! the native protocol, RESP, and the admin endpoints.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use kv_engine::kv::{KvState, Op, Reply};
use kv_replication::effects::{Effects, Persist};
use kv_replication::kvgroup::{Batch, Request};
use kv_replication::node::{Answer, Node};
use kv_replication::types::{NodeId, Time};
use kv_server::auth;
use kv_server::client::{Client, ClientOptions};
use kv_server::config::{self, ClusterConfig, NodeConfig};
use kv_server::node::DriverOptions;
use kv_server::redis::GroupStore;
use kv_server::run::{run_node, NodeOptions, Start};
use kv_server::wire::ClientReply;

/// Applies each request at once and persists it; the reply rides behind the persist.
struct Solo {
    state: KvState,
}

const RECORD: u8 = 7;

impl Node for Solo {
    type Msg = ();
    type Request = Request;
    type Reply = Reply;
    type Event = (u64, Reply);

    fn on_boot(&mut self, _: Time, _: &mut Effects<(), (u64, Reply)>) {}

    fn on_request(
        &mut self,
        _: Time,
        tag: u64,
        request: Request,
        out: &mut Effects<(), (u64, Reply)>,
    ) {
        let reply = request.command.execute(&mut self.state);
        out.persist.push(Persist::Record {
            kind: RECORD,
            payload: kv_engine::codec::encode(&request).unwrap(),
            sync: true,
        });
        out.events.push((tag, reply));
    }

    fn on_message(&mut self, _: Time, _: NodeId, _: (), _: &mut Effects<(), (u64, Reply)>) {}

    fn on_tick(&mut self, _: Time, _: &mut Effects<(), (u64, Reply)>) {}

    fn answer((tag, reply): &(u64, Reply)) -> Option<Answer<Reply>> {
        Some(Answer::Reply {
            tag: *tag,
            reply: reply.clone(),
        })
    }

    fn is_response(_: &()) -> bool {
        false
    }

    fn summarize(_: &()) -> String {
        String::new()
    }

    fn wire_bytes(_: &()) -> usize {
        0
    }

    fn retained_bytes(&self) -> u64 {
        self.state.live_bytes()
    }

    fn status(&self) -> Vec<(&'static str, String)> {
        vec![("keys", self.state.len().to_string())]
    }

    fn is_ready(&self) -> bool {
        true
    }
}

fn recover(start: Start) -> Result<Solo, String> {
    let mut state = KvState::new();
    for record in &start.recovered.records {
        let request: Request =
            kv_engine::codec::decode(&record.payload).map_err(|e| e.to_string())?;
        request.command.execute(&mut state);
    }
    Ok(Solo { state })
}

/// A node's three listening addresses, free loopback ports (see `kv_server::ports`).
fn ports() -> [SocketAddr; 3] {
    let held = kv_server::ports::hold_free_loopback(3);
    let address = |i: usize| held[i].local_addr().unwrap();
    [address(0), address(1), address(2)]
}

fn cluster(dir: &std::path::Path) -> ClusterConfig {
    let [peer, resp, admin] = ports();
    let config = ClusterConfig {
        cluster_id: 99,
        mode: Default::default(),
        view_service: None,
        redis_cluster: false,
        requirepass: None,
        protected_mode: true,
        read_lease: None,
        master: None,
        groups: Vec::new(),
        nodes: vec![NodeConfig {
            id: 0,
            peer,
            resp,
            admin,
            dir: PathBuf::from("n0"),
        }],
        base: dir.to_path_buf(),
    };
    std::fs::create_dir_all(config.data_dir(0)).unwrap();
    config::write_stamp(&config.data_dir(0), 99, 0).unwrap();
    auth::write_secret(&config.secret_path(), &auth::random_secret().unwrap()).unwrap();
    config
}

/// Runs the node on a background runtime; returns a stopper.
fn start(
    config: ClusterConfig,
) -> (
    tokio::sync::watch::Sender<bool>,
    std::thread::JoinHandle<Result<(), String>>,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(run_node(
            config,
            0,
            recover,
            GroupStore::new,
            stop_rx,
            NodeOptions::default(),
        ))
    });
    (stop_tx, handle)
}

fn resp(addr: SocketAddr, request: &[u8], expect_bytes: usize) -> String {
    let started = std::time::Instant::now();
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            stream.write_all(request).unwrap();
            let mut out = vec![0u8; expect_bytes];
            stream.read_exact(&mut out).unwrap();
            return String::from_utf8_lossy(&out).into_owned();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "RESP port never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn acknowledged_writes_survive_shutdown_and_restart_through_both_front_doors() {
    let dir = tempfile::tempdir().unwrap();
    let config = cluster(dir.path());
    let node = config.nodes[0].clone();
    let key = config.key().unwrap();

    let (stop, handle) = start(config.clone());
    assert_eq!(
        resp(node.resp, b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$2\r\nv1\r\n", 5),
        "+OK\r\n"
    );
    assert_eq!(resp(node.resp, b"APPEND a -x\r\n", 4), ":4\r\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client: Client = Client::new(key.clone(), vec![node.peer], 0, ClientOptions::default());
    assert_eq!(
        rt.block_on(client.execute(Op::Put {
            key: "b".into(),
            value: "native".into()
        }))
        .unwrap(),
        Reply::Ok
    );
    assert!(http_get(node.admin, "/livez").starts_with("HTTP/1.1 200"));
    assert!(http_get(node.admin, "/readyz").starts_with("HTTP/1.1 200"));
    let metrics = http_get(node.admin, "/metrics");
    assert!(metrics.contains("\nkv_keys{node=\"0\"} 2\n"), "{metrics}");
    assert!(http_get(node.admin, "/nope").starts_with("HTTP/1.1 404"));
    stop.send(true).unwrap();
    handle.join().unwrap().unwrap();

    // A second start on the same directory recovers both writes.
    let (stop, handle) = start(config);
    assert_eq!(resp(node.resp, b"GET a\r\n", 10), "$4\r\nv1-x\r\n");
    let mut client: Client = Client::new(key.clone(), vec![node.peer], 0, ClientOptions::default());
    assert_eq!(
        rt.block_on(client.execute(Op::Get { key: "b".into() }))
            .unwrap(),
        Reply::Value(Some("native".into()))
    );
    let status = rt
        .block_on(kv_server::client::status(
            &key,
            0,
            node.peer,
            Duration::from_secs(5),
        ))
        .unwrap();
    assert!(
        status.contains("keys: 2") && status.contains("ready: true"),
        "{status}"
    );
    stop.send(true).unwrap();
    handle.join().unwrap().unwrap();
}

#[test]
fn a_directory_without_its_stamp_starts_in_lost_disk_mode_and_a_foreign_stamp_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = cluster(dir.path());
    let seen = |config: ClusterConfig| -> Result<bool, String> {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(run_node(
            config,
            0,
            move |start: Start| {
                let wiped = start.wiped;
                stop_tx.send(true).unwrap();
                Err::<Solo, String>(format!("wiped={wiped}"))
            },
            GroupStore::new,
            stop_rx,
            NodeOptions::default(),
        ))
        .map(|()| unreachable!("the factory always refuses"))
        .or_else(|e| match e.as_str() {
            "wiped=true" => Ok(true),
            "wiped=false" => Ok(false),
            _ => Err(e),
        })
    };
    assert_eq!(seen(config.clone()), Ok(false));
    let stamp = config.data_dir(0).join(config::STAMP_FILE);
    std::fs::remove_file(&stamp).unwrap();
    assert_eq!(seen(config.clone()), Ok(true));
    config::write_stamp(&config.data_dir(0), 12345, 0).unwrap();
    let err = seen(config).unwrap_err();
    assert!(err.contains("refusing"), "{err}");
}

/// No peers in a one-node test.
struct NoPeers;

impl kv_server::node::PeerSender<()> for NoPeers {
    fn send(&self, _: NodeId, _: ()) -> bool {
        true
    }
}

#[test]
fn no_reply_leaves_before_its_record_is_durable() {
    use kv_engine::fs::{SimFs, Torn};
    use kv_engine::store::{Store, StoreOptions};
    use kv_replication::types::ClientId;
    use kv_server::node::{run_cores, Hosted, Input, LeaderHint};
    use std::sync::{Arc, Mutex};

    for round in 0..20u64 {
        let fs = SimFs::new();
        let dir = std::path::Path::new("/node");
        let (store, _) = Store::open(Arc::new(fs.clone()), dir, StoreOptions::default()).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (inputs_tx, inputs_rx) = tokio::sync::mpsc::channel(1024);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let core = Solo {
            state: KvState::new(),
        };
        let commit = kv_engine::group::GroupCommit::start(store, Default::default());
        let hosted = Hosted {
            core,
            log: commit.stream(0),
            peers: NoPeers,
            inputs: inputs_rx,
            leader: LeaderHint::default(),
            on_ready: None,
        };
        let driver = rt.spawn(run_cores(vec![hosted], stop_rx, DriverOptions::default()));
        let replied: Arc<Mutex<Vec<Request>>> = Arc::default();
        let clients: Vec<_> = (0..16u64)
            .map(|c| {
                let inputs = inputs_tx.clone();
                let replied = replied.clone();
                rt.spawn(async move {
                    for seq in 1.. {
                        let request = Request {
                            client: ClientId(c),
                            seq,
                            command: Batch::one(Op::Put {
                                key: format!("k{c}").into(),
                                value: format!("{seq}").into(),
                            }),
                        };
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        if inputs
                            .send(Input::Client {
                                request: request.clone(),
                                reply: tx,
                            })
                            .await
                            .is_err()
                        {
                            return;
                        }
                        match rx.await {
                            Ok(ClientReply::Done(_)) => replied.lock().unwrap().push(request),
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        // Let the load run; then the disk stops making anything durable (every sync fails)
        // while requests keep arriving; then the power goes. A reply sent before its
        // record's sync succeeded would name a record the crash takes back.
        std::thread::sleep(Duration::from_millis(20 + round * 7));
        fs.fail_next_syncs(u32::MAX);
        std::thread::sleep(Duration::from_millis(30));
        let acknowledged = replied.lock().unwrap().clone();
        fs.crash(Torn::Prefix(round));
        drop(inputs_tx);
        for c in clients {
            c.abort();
        }
        driver.abort();
        drop(rt);
        drop(commit);

        let (_, recovered) =
            Store::open(Arc::new(fs.clone()), dir, StoreOptions::default()).unwrap();
        let on_disk: std::collections::BTreeSet<(u64, u64)> = recovered
            .records
            .iter()
            .map(|r| {
                let request: Request = kv_engine::codec::decode(&r.payload).unwrap();
                (request.client.0, request.seq)
            })
            .collect();
        assert!(!acknowledged.is_empty(), "round {round}: no load ran");
        for request in &acknowledged {
            assert!(
                on_disk.contains(&(request.client.0, request.seq)),
                "round {round}: client {} seq {} was acknowledged but is not on disk",
                request.client.0,
                request.seq
            );
        }
    }
}

/// One driver for several replicas (a sharded node's): a burst that reaches all of them
/// makes their records durable with one fsync, and each reply still waits for its own
/// replica's record (after a crash every acknowledged write of every replica is on disk).
#[test]
fn one_driver_makes_a_burst_of_several_replicas_durable_with_one_fsync() {
    use kv_engine::fs::{SimFs, Torn};
    use kv_engine::group::GroupCommit;
    use kv_engine::shared::{SharedStore, StreamSpec};
    use kv_engine::store::StoreOptions;
    use kv_replication::types::ClientId;
    use kv_server::node::{run_cores, Hosted, Input, LeaderHint};

    const REPLICAS: u64 = 3;
    let fs = SimFs::new();
    let specs: Vec<StreamSpec> = (0..REPLICAS)
        .map(|i| StreamSpec {
            dir: PathBuf::from(format!("/node/group-{i}")),
            new_incarnation: 100 + i,
        })
        .collect();
    let open = |fs: &SimFs| {
        SharedStore::open(
            std::sync::Arc::new(fs.clone()),
            std::path::Path::new("/node/wal"),
            &specs,
            StoreOptions::default(),
        )
        .unwrap()
    };
    let (store, _) = open(&fs);
    let commit = GroupCommit::start(store, Default::default());
    let put = |replica: u64, seq: u64| Request {
        client: ClientId(replica),
        seq,
        command: Batch::one(Op::Put {
            key: format!("k{replica}").into(),
            value: format!("{seq}").into(),
        }),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut senders = Vec::new();
    let mut hosted = Vec::new();
    let mut replies = Vec::new();
    for replica in 0..REPLICAS {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        // Queued before the driver starts: its first burst takes all of them.
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.try_send(Input::Client {
            request: put(replica, 1),
            reply,
        })
        .ok()
        .unwrap();
        replies.push(answer);
        senders.push(tx);
        hosted.push(Hosted {
            core: Solo {
                state: KvState::new(),
            },
            log: commit.stream(replica as usize),
            peers: NoPeers,
            inputs: rx,
            leader: LeaderHint::default(),
            on_ready: None,
        });
    }
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let driver = rt.spawn(run_cores(hosted, stop_rx, DriverOptions::default()));
    rt.block_on(async {
        for answer in replies {
            assert!(matches!(answer.await, Ok(ClientReply::Done(_))));
        }
    });
    let stats = commit.stream(0).group_stats();
    assert_eq!(
        (stats.batches, stats.appends),
        (1, REPLICAS),
        "one fsync for the burst of every replica"
    );

    // More writes to every replica, then the disk stops syncing and the power goes.
    let acknowledged: Vec<(u64, u64)> = rt.block_on(async {
        let mut acknowledged = Vec::new();
        for seq in 2..40u64 {
            if seq == 30 {
                fs.fail_next_syncs(u32::MAX);
            }
            let mut answers = Vec::new();
            for (replica, tx) in senders.iter().enumerate() {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let request = put(replica as u64, seq);
                if tx.send(Input::Client { request, reply }).await.is_ok() {
                    answers.push((replica as u64, answer));
                }
            }
            for (replica, answer) in answers {
                let answer = tokio::time::timeout(Duration::from_secs(10), answer)
                    .await
                    .expect("an answer");
                if let Ok(ClientReply::Done(_)) = answer {
                    acknowledged.push((replica, seq));
                }
            }
        }
        acknowledged
    });
    assert!(acknowledged.len() >= 3 * 20, "{acknowledged:?}");
    assert!(
        !acknowledged.iter().any(|&(_, seq)| seq >= 30),
        "a reply without a durable record"
    );
    fs.crash(Torn::Prefix(3));
    driver.abort();
    drop(rt);
    drop(commit);
    let (_, recovered) = open(&fs);
    for (replica, seq) in acknowledged {
        let on_disk = recovered[replica as usize].records.iter().any(|r| {
            let request: Request = kv_engine::codec::decode(&r.payload).unwrap();
            request.client.0 == replica && request.seq == seq
        });
        assert!(
            on_disk,
            "replica {replica}: seq {seq} was acknowledged but is not on disk"
        );
    }
}

#[test]
fn a_second_node_on_a_live_data_directory_is_refused_before_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = cluster(dir.path());
    let (stop, handle) = start(config.clone());
    let node = config.nodes[0].clone();
    assert_eq!(resp(node.resp, b"SET k v\r\n", 5), "+OK\r\n");
    let (_stop2, second) = start(config.clone());
    let err = second.join().unwrap().unwrap_err();
    assert!(err.contains("in use by another kv process"), "{err}");
    // The live node is unaffected.
    assert_eq!(resp(node.resp, b"GET k\r\n", 7), "$1\r\nv\r\n");
    stop.send(true).unwrap();
    handle.join().unwrap().unwrap();
    // Once it has stopped, the directory can be opened again.
    let (stop, handle) = start(config);
    assert_eq!(resp(node.resp, b"GET k\r\n", 7), "$1\r\nv\r\n");
    stop.send(true).unwrap();
    handle.join().unwrap().unwrap();
}

/// A RESP connection to a node that is starting (its port may not be open yet).
fn resp_connect(addr: SocketAddr) -> TcpStream {
    let started = std::time::Instant::now();
    loop {
        if let Ok(stream) = TcpStream::connect(addr) {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            return stream;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "RESP port never opened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads until the bytes read end with `marker`; returns everything read.
fn read_until(stream: &mut TcpStream, marker: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(marker) {
        let n = stream
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("waiting for {marker:?} after {got:?}: {e}"));
        assert!(
            n > 0,
            "connection closed waiting for {marker:?} after {got:?}"
        );
        got.extend_from_slice(&buf[..n]);
    }
    got
}

#[test]
fn a_frame_that_is_not_a_command_gets_a_protocol_error_and_the_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = cluster(dir.path());
    let node = config.nodes[0].clone();
    let (stop, handle) = start(config);
    // Each frame, and the start of the reply it gets: for a request element that is not
    // a bulk string, Redis's own words.
    for (frame, expected) in [
        (&b":1\r\n"[..], "-ERR Protocol error"),
        (
            b"*2\r\n$3\r\nGET\r\n*1\r\n$1\r\nk\r\n",
            "-ERR Protocol error: expected '$', got '*'\r\n",
        ),
        (
            b"*1\r\n$-1\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n:5\r\n",
            "-ERR Protocol error: expected '$', got ':'\r\n",
        ),
        (
            b"*2\r\n+GET\r\n$1\r\nk\r\n",
            "-ERR Protocol error: expected '$', got '+'\r\n",
        ),
    ] {
        let mut stream = resp_connect(node.resp);
        stream.write_all(frame).unwrap();
        // No shutdown of our side: the node must close the connection itself.
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).unwrap_or_else(|e| {
            panic!(
                "{:?}: connection left open after {:?}: {e}",
                frame.escape_ascii().to_string(),
                String::from_utf8_lossy(&reply)
            )
        });
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with(expected), "{reply:?}");
    }
    // Unknown commands keep the connection.
    let mut stream = resp_connect(node.resp);
    stream.write_all(b"NOSUCH\r\nPING\r\n").unwrap();
    let reply = read_until(&mut stream, b"+PONG\r\n");
    assert!(reply.starts_with(b"-ERR unknown command"), "{reply:?}");
    stop.send(true).unwrap();
    handle.join().unwrap().unwrap();
}

#[test]
fn hello_3_switches_a_connection_to_resp3_replies_and_hello_2_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = cluster(dir.path());
    let node = config.nodes[0].clone();
    let (stop, handle) = start(config);
    let mut stream = resp_connect(node.resp);
    stream.write_all(b"SET k v\r\nHELLO 3\r\nPING\r\n").unwrap();
    let reply = read_until(&mut stream, b"+PONG\r\n");
    let text = String::from_utf8_lossy(&reply);
    let hello = text
        .strip_prefix("+OK\r\n")
        .and_then(|t| t.strip_suffix("+PONG\r\n"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(hello.starts_with("%7\r\n$6\r\nserver\r\n"), "{hello}");
    assert!(hello.contains("$5\r\nproto\r\n:3\r\n"), "{hello}");

    // RESP3 nulls and maps; an other connection is still RESP2.
    stream
        .write_all(b"GET nope\r\nMGET k nope\r\nCONFIG GET maxmemory\r\nPING\r\n")
        .unwrap();
    let reply = read_until(&mut stream, b"+PONG\r\n");
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "_\r\n*2\r\n$1\r\nv\r\n_\r\n%0\r\n+PONG\r\n"
    );
    let mut other = resp_connect(node.resp);
    other.write_all(b"GET nope\r\nPING\r\n").unwrap();
    assert_eq!(read_until(&mut other, b"+PONG\r\n"), b"$-1\r\n+PONG\r\n");
    other.write_all(b"INFO\r\nPING\r\n").unwrap();
    let info = read_until(&mut other, b"+PONG\r\n");
    let info = String::from_utf8_lossy(&info);
    assert!(info.contains("connected_clients:2\r\n"), "{info}");

    // Back to RESP2; an unknown version is refused and changes nothing.
    stream
        .write_all(b"HELLO 2\r\nHELLO 4\r\nGET nope\r\nPING\r\n")
        .unwrap();
    let reply = read_until(&mut stream, b"+PONG\r\n");
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("*14\r\n$6\r\nserver\r\n"), "{text}");
    assert!(text.contains("$5\r\nproto\r\n:2\r\n"), "{text}");
    assert!(
        text.ends_with("$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n-NOPROTO unsupported protocol version\r\n$-1\r\n+PONG\r\n"),
        "{text}"
    );
    stop.send(true).unwrap();
    handle.join().unwrap().unwrap();
}

#[test]
fn clients_of_a_node_whose_disk_fails_get_errors_not_closed_connections() {
    use kv_engine::fs::SimFs;
    use kv_replication::kvgroup::{Batch, Request};
    use kv_replication::types::ClientId;
    use kv_server::wire::{self, Frame};

    let dir = tempfile::tempdir().unwrap();
    let config = cluster(dir.path());
    let node = config.nodes[0].clone();
    let key = config.key().unwrap();
    let fs = SimFs::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let options = NodeOptions {
        fs: std::sync::Arc::new(fs.clone()),
        ..NodeOptions::default()
    };
    let handle = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(run_node(
            config,
            0,
            recover,
            GroupStore::new,
            stop_rx,
            options,
        ))
    });
    let mut redis = resp_connect(node.resp);
    redis.write_all(b"SET a 1\r\n").unwrap();
    assert_eq!(read_until(&mut redis, b"\r\n"), b"+OK\r\n");
    // A native client, introduced, before the disk fails.
    let mut native = TcpStream::connect(node.peer).unwrap();
    native
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let send_frame = |stream: &mut TcpStream, frame: &Frame<()>| {
        let body = wire::encode(frame).unwrap();
        stream
            .write_all(&(body.len() as u32).to_be_bytes())
            .unwrap();
        stream.write_all(&body).unwrap();
    };
    auth::introduce_blocking(&mut native, &key, auth::Caller::Client, 0).unwrap();

    fs.fail_next_syncs(u32::MAX);
    redis.write_all(b"SET b 2\r\n").unwrap();
    let reply = read_until(&mut redis, b"\r\n");
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("-MISCONF "), "{reply}");
    assert!(reply.contains("injected fsync failure"), "{reply}");

    send_frame(
        &mut native,
        &Frame::Request {
            tag: 1,
            request: Request {
                client: ClientId(5),
                seq: 1,
                command: Batch::one(Op::Put {
                    key: "c".into(),
                    value: "3".into(),
                }),
            },
        },
    );
    let mut len = [0u8; 4];
    native.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    native.read_exact(&mut body).unwrap();
    match wire::decode::<(), kv_replication::kvgroup::Request, kv_engine::kv::Reply>(&body).unwrap()
    {
        Frame::Reply {
            tag: 1,
            reply: ClientReply::StorageFailed(why),
            ..
        } => assert!(why.contains("injected fsync failure"), "{why}"),
        other => panic!("expected StorageFailed, got {other:?}"),
    }
    // Then the node stops on its own, saying why.
    let err = handle.join().unwrap().unwrap_err();
    assert!(err.contains("storage failed"), "{err}");
    drop(stop_tx);
}
