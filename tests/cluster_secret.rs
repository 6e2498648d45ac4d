//! The cluster secret guards the native port. Against real `kv node` processes: a peer or
//! client that cannot prove it knows the secret — another secret, no proof, a recorded
//! handshake replayed, the node's own proof reflected — is hung up on, and what it sends
//! after (a peer's forwarded write, a client's write) is never applied, while the same
//! messages after a genuine handshake are. And a node refuses to start, in one line naming
//! the file, without a secret or with one that others may read.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{block_on, wait_for, Cluster};
use kv_client::auth::{self, Caller, ClusterKey, Dialing, Nonce, Transcript};
use kv_engine::kv::{Op, Reply};
use kv_replication::kvgroup::{Batch, Request};
use kv_replication::replica::Message;
use kv_replication::types::ClientId;
use kv_server::client::ClientOptions;
use kv_server::wire::{self, Frame};

/// A peer frame of the unsharded cluster's replicas.
type PeerFrame = Frame<Message<Batch>>;

fn write_body(stream: &mut TcpStream, body: &[u8]) {
    // The node may already have hung up: what matters is what it did with the frame.
    let _ = stream.write_all(&(body.len() as u32).to_be_bytes());
    let _ = stream.write_all(body);
}

fn write_frame(stream: &mut TcpStream, frame: &Frame<()>) {
    write_body(stream, &wire::encode(frame).unwrap());
}

fn write_peer(stream: &mut TcpStream, frame: &PeerFrame) {
    write_body(stream, &wire::encode(frame).unwrap());
}

fn read_frame(stream: &mut TcpStream) -> Frame<()> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).expect("a frame's length");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body).expect("a frame's body");
    wire::decode(&body).expect("a frame")
}

/// A put of `key`, at most once as client `client`.
fn put(client: u64, key: &str) -> Request {
    Request {
        client: ClientId(client),
        seq: 1,
        command: Batch::one(Op::Put {
            key: Bytes::from(key.to_string()),
            value: Bytes::from_static(b"written"),
        }),
    }
}

/// What a peer sends the leader to have it propose a client's write: applied if the
/// connection is heard.
fn forwarded_put(client: u64, key: &str) -> PeerFrame {
    Frame::Peer(Message::Forward {
        requests: vec![put(client, key)],
    })
}

/// A connection to node `to` that has sent `hello` and read the node's challenge.
fn challenged(cluster: &Cluster, to: u32, hello: &Frame<()>) -> (TcpStream, Frame<()>) {
    let mut stream = TcpStream::connect(cluster.node(to).peer).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write_frame(&mut stream, hello);
    let challenge = read_frame(&mut stream);
    assert!(
        matches!(challenge, Frame::Challenge { .. }),
        "{challenge:?}"
    );
    (stream, challenge)
}

/// The hello of `caller` to node `to` of `key`'s cluster, with nonce `nonce`.
fn hello(key: &ClusterKey, caller: Caller, to: u32, nonce: Nonce) -> Frame<()> {
    match caller {
        Caller::Peer(node) => Frame::Hello {
            cluster_id: key.cluster_id(),
            node,
            to,
            nonce,
        },
        Caller::Client => Frame::ClientHello {
            cluster_id: key.cluster_id(),
            to,
            nonce,
        },
    }
}

/// The caller's proof under `key` of the exchange `hello`–`challenge`.
fn caller_proof(
    key: &ClusterKey,
    caller: Caller,
    to: u32,
    nonce: Nonce,
    challenge: &Frame<()>,
) -> Frame<()> {
    let Frame::Challenge {
        nonce: listener_nonce,
        ..
    } = challenge
    else {
        panic!("not a challenge: {challenge:?}")
    };
    let transcript = Transcript {
        caller,
        to,
        caller_nonce: nonce,
        listener_nonce: *listener_nonce,
    };
    Frame::Proof {
        proof: transcript.caller_proof(key),
    }
}

/// Asserts the node has closed `stream` (rather than answering, or waiting for more).
fn assert_hung_up(mut stream: TcpStream, what: &str) {
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
            ) => {}
        other => panic!("{what}: the node did not hang up: {other:?}"),
    }
}

fn get(cluster: &Cluster, key: &str) -> Reply {
    let mut client = cluster.client(0, ClientOptions::default());
    block_on(client.execute(Op::Get {
        key: Bytes::from(key.to_string()),
    }))
    .expect("a read")
}

#[test]
fn only_connections_that_prove_they_know_the_secret_are_heard() {
    let cluster = Cluster::start(3);
    let key = cluster.key();
    let other = ClusterKey::new(
        key.cluster_id(),
        b"a guess at the secret, as long as the real one",
    );
    let mut forged_keys = Vec::new();
    let mut client_id = 0x5ec0_0000u64;
    let mut next_client = || {
        client_id += 1;
        client_id
    };

    for node in 0..3u32 {
        let peer = Caller::Peer((node + 1) % 3);

        // Another secret: as a peer forwarding a write, and as a client writing.
        for caller in [peer, Caller::Client] {
            let nonce = auth::nonce();
            let (mut stream, challenge) =
                challenged(&cluster, node, &hello(&other, caller, node, nonce));
            write_frame(
                &mut stream,
                &caller_proof(&other, caller, node, nonce, &challenge),
            );
            let forged = format!("forged-other-secret-{node}-{caller:?}");
            match caller {
                Caller::Peer(_) => write_peer(&mut stream, &forwarded_put(next_client(), &forged)),
                Caller::Client => write_frame(
                    &mut stream,
                    &Frame::<()>::Request {
                        tag: 1,
                        request: put(next_client(), &forged),
                    },
                ),
            }
            assert_hung_up(stream, &forged);
            forged_keys.push(forged);
        }

        // No proof at all: the hello, then the message.
        let (mut stream, _) = challenged(&cluster, node, &hello(&other, peer, node, auth::nonce()));
        let forged = format!("forged-no-proof-{node}");
        write_peer(&mut stream, &forwarded_put(next_client(), &forged));
        assert_hung_up(stream, &forged);
        forged_keys.push(forged);

        // The node's own proof, reflected back as the caller's.
        let (mut stream, challenge) =
            challenged(&cluster, node, &hello(&other, peer, node, auth::nonce()));
        let Frame::Challenge { proof, .. } = challenge else {
            unreachable!()
        };
        write_frame(&mut stream, &Frame::<()>::Proof { proof });
        let forged = format!("forged-reflected-{node}");
        write_peer(&mut stream, &forwarded_put(next_client(), &forged));
        assert_hung_up(stream, &forged);
        forged_keys.push(forged);

        // A genuine handshake, recorded (as an eavesdropper would), then replayed word for
        // word on a new connection.
        let dialing = Dialing::new(&key, peer, node);
        let recorded_hello: Frame<()> = dialing.hello();
        let (genuine, challenge) = challenged(&cluster, node, &recorded_hello);
        let recorded_proof = dialing
            .answer(challenge)
            .expect("the node proves it knows the secret");
        drop(genuine);
        let (mut stream, _) = challenged(&cluster, node, &recorded_hello);
        write_frame(&mut stream, &recorded_proof);
        let forged = format!("forged-replayed-{node}");
        write_peer(&mut stream, &forwarded_put(next_client(), &forged));
        assert_hung_up(stream, &forged);
        forged_keys.push(forged);
    }

    // Every forged connection is closed. Now the same messages after genuine handshakes: a
    // peer's forwarded write (to every node; the leader proposes it) and a client's.
    let mut peers: Vec<TcpStream> = (0..3u32)
        .map(|node| {
            let mut stream = TcpStream::connect(cluster.node(node).peer).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            auth::introduce_blocking(&mut stream, &key, Caller::Peer((node + 1) % 3), node)
                .expect("a genuine peer handshake");
            stream
        })
        .collect();
    let peer_write = forwarded_put(next_client(), "genuine-peer");
    for stream in &mut peers {
        write_peer(stream, &peer_write);
    }
    let mut client = cluster.client(0, ClientOptions::default());
    assert_eq!(
        block_on(client.execute(Op::Put {
            key: Bytes::from_static(b"genuine-client"),
            value: Bytes::from_static(b"written"),
        }))
        .expect("a genuine client's write"),
        Reply::Ok
    );
    wait_for(
        "the genuine peer's forwarded write applied",
        Duration::from_secs(30),
        || {
            (get(&cluster, "genuine-peer") == Reply::Value(Some(Bytes::from_static(b"written"))))
                .then_some(())
        },
    );
    for forged in &forged_keys {
        assert_eq!(
            get(&cluster, forged),
            Reply::Value(None),
            "{forged} was applied"
        );
    }
    cluster.assert_no_panic();
}

fn kv(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kv"))
        .args(args)
        .output()
        .expect("run kv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_writes_a_private_secret_and_nodes_refuse_a_missing_or_readable_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, stderr) = kv(&["init", "--dir", d]);
    assert!(ok, "{stderr}");
    let secret = dir.path().join(auth::SECRET_FILE);
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&secret).unwrap();
    assert_eq!(text.trim().len(), 2 * auth::SECRET_RANDOM_BYTES, "{text}");
    let cluster = dir.path().join("cluster.toml");
    let cluster = cluster.to_str().unwrap();

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    for args in [
        &["node", "--cluster", cluster, "--id", "0"][..],
        &["get", "k", "--cluster", cluster][..],
    ] {
        let (ok, stderr) = kv(args);
        assert!(!ok, "{args:?}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].contains(auth::SECRET_FILE), "{stderr}");
        assert!(
            lines[0].contains("0644") && lines[0].contains("chmod 600"),
            "{stderr}"
        );
    }

    std::fs::remove_file(&secret).unwrap();
    let (ok, stderr) = kv(&["node", "--cluster", cluster, "--id", "0"]);
    assert!(!ok);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(auth::SECRET_FILE) && lines[0].contains("no cluster secret"),
        "{stderr}"
    );
}

/// A cluster made before secrets has no `cluster.secret`, and its nodes refuse to start
/// without one: `kv secret` creates it (the owner's alone), refuses to replace it, and the
/// restarted nodes serve what they held.
#[test]
fn kv_secret_gives_a_cluster_made_without_one_its_secret() {
    let mut cluster = Cluster::start(3);
    let mut client = cluster.client(0, ClientOptions::default());
    assert_eq!(
        block_on(client.execute(Op::Put {
            key: Bytes::from_static(b"before"),
            value: Bytes::from_static(b"written"),
        }))
        .expect("a write"),
        Reply::Ok
    );
    drop(client);
    for id in 0..cluster.len() {
        cluster.stop_node(id);
    }
    let secret = cluster.config.secret_path();
    let old = std::fs::read_to_string(&secret).unwrap();
    std::fs::remove_file(&secret).unwrap();
    let path = cluster.path.to_str().unwrap().to_string();

    let (ok, stderr) = kv(&["secret", "--cluster", &path]);
    assert!(ok, "{stderr}");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let new = std::fs::read_to_string(&secret).unwrap();
    assert_eq!(new.trim().len(), 2 * auth::SECRET_RANDOM_BYTES, "{new}");
    assert_ne!(new, old);

    let (ok, stderr) = kv(&["secret", "--cluster", &path]);
    assert!(!ok, "a second `kv secret` replaced the secret");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(auth::SECRET_FILE) && lines[0].contains("already there"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), new);

    for id in 0..cluster.len() {
        cluster.start_node(id);
    }
    cluster.wait_ready_all();
    assert_eq!(
        get(&cluster, "before"),
        Reply::Value(Some(Bytes::from_static(b"written")))
    );
    cluster.assert_no_panic();
}

/// A native client whose secret is not the cluster's is told so when it gives up — the
/// node did not prove it knows the client's secret — not merely that no node answered.
#[test]
fn a_client_with_a_wrong_secret_is_told_why_no_node_answered() {
    for cluster in [
        Cluster::start(1),
        Cluster::start_sharded(
            1,
            common::Shape {
                replicas: 1,
                groups: 1,
                shards: 4,
                redis_cluster: false,
                mode: kv_server::config::Mode::Paxos,
            },
        ),
    ] {
        let elsewhere = tempfile::tempdir().unwrap();
        let file = elsewhere.path().join("cluster.toml");
        std::fs::copy(&cluster.path, &file).unwrap();
        auth::write_secret(
            &elsewhere.path().join("cluster.secret"),
            "not the cluster's secret, though long enough to be one",
        )
        .unwrap();
        let (ok, stderr) = kv(&[
            "get",
            "k",
            "--timeout",
            "2",
            "--cluster",
            file.to_str().unwrap(),
        ]);
        assert!(!ok);
        assert!(
            stderr.contains("did not prove it knows the secret"),
            "{stderr}"
        );
        // The node logs the caller that left without proving itself, with its address.
        wait_for(
            "the refused handshake in the node's log",
            Duration::from_secs(30),
            || {
                cluster
                    .log(0)
                    .contains("closed connection remote=127.0.0.1:")
                    .then_some(())
            },
        );
        assert!(
            cluster
                .log(0)
                .contains("the caller left after the Challenge without a Proof"),
            "{}",
            cluster.log(0)
        );
    }
}
