//! The production driver and its front doors, tested with a minimal single-node core (a test
//! fixture, not a product: it replicates nothing). It checks the plumbing every replicated
//! core relies on: persist-before-reply, recovery from the data directory after shutdown,
//! the native protocol, RESP, and the admin endpoints.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use kv_engine::kv::{KvState, Op, Reply};
use kv_replication::effects::{Effects, Persist};
use kv_replication::kvgroup::Request;
use kv_replication::types::{NodeId, Time};
use kv_server::client::{Client, ClientOptions};
use kv_server::config::{self, ClusterConfig, NodeConfig};
use kv_server::node::{Core, DriverOptions};
use kv_server::run::{run_node, Start};
use kv_server::wire::ClientReply;

/// Applies each request at once and persists it; the reply rides behind the persist.
struct Solo {
    state: KvState,
}

const RECORD: u8 = 7;

impl Core for Solo {
    type Msg = ();
    type Event = (u64, Reply);

    fn on_request(
        &mut self,
        _: Time,
        tag: u64,
        request: Request,
        out: &mut Effects<(), (u64, Reply)>,
    ) {
        let reply = self.state.execute(&request.command);
        out.persist.push(Persist::Record {
            kind: RECORD,
            payload: kv_engine::codec::encode(&request).unwrap(),
            sync: true,
        });
        out.events.push((tag, reply));
    }

    fn on_message(&mut self, _: Time, _: NodeId, _: (), _: &mut Effects<(), (u64, Reply)>) {}

    fn on_tick(&mut self, _: Time, _: &mut Effects<(), (u64, Reply)>) {}

    fn reply_of((tag, reply): (u64, Reply)) -> Option<(u64, ClientReply)> {
        Some((tag, ClientReply::Done(reply)))
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
        state.execute(&request.command);
    }
    Ok(Solo { state })
}

fn port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn cluster(dir: &std::path::Path) -> ClusterConfig {
    let config = ClusterConfig {
        cluster_id: 99,
        nodes: vec![NodeConfig {
            id: 0,
            peer: port(),
            resp: port(),
            admin: port(),
            dir: PathBuf::from("n0"),
        }],
        base: dir.to_path_buf(),
    };
    std::fs::create_dir_all(config.data_dir(0)).unwrap();
    config::write_stamp(&config.data_dir(0), 99, 0).unwrap();
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
            stop_rx,
            DriverOptions::default(),
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

    let (stop, handle) = start(config.clone());
    assert_eq!(
        resp(node.resp, b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$2\r\nv1\r\n", 5),
        "+OK\r\n"
    );
    assert_eq!(resp(node.resp, b"APPEND a -x\r\n", 4), ":4\r\n");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = Client::new(vec![node.peer], 0, ClientOptions::default());
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
    assert!(metrics.contains("kv_keys 2"), "{metrics}");
    assert!(http_get(node.admin, "/nope").starts_with("HTTP/1.1 404"));
    stop.send(true).unwrap();
    handle.join().unwrap().unwrap();

    // A second start on the same directory recovers both writes.
    let (stop, handle) = start(config);
    assert_eq!(resp(node.resp, b"GET a\r\n", 10), "$4\r\nv1-x\r\n");
    let mut client = Client::new(vec![node.peer], 0, ClientOptions::default());
    assert_eq!(
        rt.block_on(client.execute(Op::Get { key: "b".into() }))
            .unwrap(),
        Reply::Value(Some("native".into()))
    );
    let status = rt
        .block_on(kv_server::client::status(node.peer, Duration::from_secs(5)))
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
            stop_rx,
            DriverOptions::default(),
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
    use kv_server::node::{run_core, Input};
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
        let driver = rt.spawn(run_core(
            core,
            store,
            NoPeers,
            inputs_rx,
            stop_rx,
            DriverOptions::default(),
            None,
        ));
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
                            command: Op::Put {
                                key: format!("k{c}").into(),
                                value: format!("{seq}").into(),
                            },
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
