use super::*;
use crate::limits::Admitted;
use tokio::io::AsyncWriteExt;

const SECRET: &[u8] = b"the test cluster's secret, 32 bytes or more";

/// Cluster 5's id and secret.
fn key() -> ClusterKey {
    ClusterKey::new(5, SECRET)
}

/// Node 0 of cluster 5, of three nodes.
fn listener() -> (Listener<CoreService<()>>, mpsc::Receiver<Input<()>>) {
    listener_of::<()>()
}

fn listener_of<M>() -> (Listener<CoreService<M>>, mpsc::Receiver<Input<M>>) {
    let (inputs, rx) = mpsc::channel(16);
    let this = Listener {
        key: key(),
        me: 0,
        service: CoreService {
            inputs,
            leader: LeaderHint::default(),
            nodes: 3,
        },
    };
    (this, rx)
}

/// A client socket and the connection the gate admitted for it.
async fn admit(gate: &mut Gate, socket: &TcpListener) -> (TcpStream, Admitted) {
    let (_stop, mut shutdown) = watch::channel(false);
    let (client, admitted) = tokio::join!(
        TcpStream::connect(socket.local_addr().unwrap()),
        gate.accept(socket, &mut shutdown)
    );
    (client.unwrap(), admitted.unwrap())
}

#[test]
fn a_queue_holds_its_byte_bound_and_one_message_of_any_size_when_empty() {
    let queue = QueueBytes::new(100);
    assert!(queue.reserve(150), "one message always fits an empty queue");
    assert!(!queue.reserve(1));
    queue.release(150);
    assert!(queue.reserve(60));
    assert!(queue.reserve(40));
    assert!(!queue.reserve(1), "full at exactly the bound");
    queue.release(40);
    assert!(!queue.reserve(41));
    assert!(queue.reserve(40));
    assert_eq!(queue.queued(), 100);
}

/// Addresses for [`connect_peers`] as node 0 of two, the other node at `peer`.
fn two_nodes(peer: SocketAddr) -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 9)), peer]
}

#[tokio::test]
async fn messages_for_a_peer_that_does_not_read_are_bounded_in_bytes() {
    // Accepts connections (the kernel does) but never reads from them.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_stop, shutdown) = watch::channel(false);
    let peers: Peers<Vec<u8>> =
        connect_peers(key(), 0, &two_nodes(silent.local_addr().unwrap()), shutdown);
    let message = vec![7u8; 1 << 20];
    let frame_bytes = wire::encode(&Frame::<_>::Peer(message.clone()))
        .unwrap()
        .len();
    // Far fewer messages than the count bound, far more bytes than the byte bound; no
    // await between sends, so the outbound task takes none of them meanwhile.
    let offered = 300;
    let queued = (0..offered)
        .filter(|_| peers.send(NodeId(1), message.clone()))
        .count();
    assert_eq!(queued, PEER_QUEUE_BYTES_MAX / frame_bytes);
    assert_eq!(peers.dropped(), (offered - queued) as u64);
    assert_eq!(peers.queued_bytes(NodeId(1)), queued * frame_bytes);
}

#[tokio::test]
async fn a_peer_that_reads_gets_every_message_and_the_queue_empties() {
    // Node 0 sends to node 1, whose listener hands the messages to its core.
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_stop, shutdown) = watch::channel(false);
    let peers: Peers<Vec<u8>> =
        connect_peers(key(), 0, &two_nodes(socket.local_addr().unwrap()), shutdown);
    let (mut node1, mut inputs) = listener_of::<Vec<u8>>();
    node1.me = 1;
    let messages = 300;
    let (_stop_listener, listener_shutdown) = watch::channel(false);
    let serving = tokio::spawn(async move {
        let mut gate = Gate::new("test", 1);
        let (_stop, mut accepting) = watch::channel(false);
        let admitted = gate.accept(&socket, &mut accepting).await.unwrap();
        node1
            .connection(admitted.stream, &admitted.permit, listener_shutdown)
            .await
    });
    // More bytes in all than the bound: each is sent once the queue has room.
    let sending = async {
        for i in 0..messages {
            while peers.queued_bytes(NodeId(1)) > PEER_QUEUE_BYTES_MAX - (2 << 20) {
                tokio::task::yield_now().await;
            }
            assert!(peers.send(NodeId(1), vec![i as u8; 1 << 20]), "message {i}");
        }
    };
    let receiving = async {
        for received in 0..messages {
            match inputs.recv().await.expect("a message") {
                Input::Peer { from, msg } => {
                    assert_eq!(from, NodeId(0));
                    assert_eq!(msg, vec![received as u8; 1 << 20], "in order");
                }
                _ => panic!("not a peer message"),
            }
        }
    };
    tokio::join!(sending, receiving);
    assert_eq!(peers.dropped(), 0);
    assert_eq!(peers.queued_bytes(NodeId(1)), 0);
    serving.abort();
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_does_not_say_who_it_is_is_closed_after_the_hello_timeout() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut gate = Gate::new("test", 1);
    let (_client, admitted) = admit(&mut gate, &socket).await;
    let (this, _inputs) = listener();
    let (_stop, shutdown) = watch::channel(false);
    let started = tokio::time::Instant::now();
    let result = this
        .connection(admitted.stream, &admitted.permit, shutdown)
        .await;
    assert!(
        result.as_ref().is_err_and(|e| e.contains("no Hello")),
        "{result:?}"
    );
    assert!(started.elapsed() >= HELLO_TIMEOUT);
}

#[tokio::test]
async fn the_slots_kept_for_peers_refuse_clients_and_admit_peers() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut gate = Gate::new("test", 0).with_reserve(2);
    let (this, mut inputs) = listener();

    let (client, admitted) = admit(&mut gate, &socket).await;
    assert!(admitted.permit.reserved);
    let mut client = Framed::new(client, wire::codec());
    let (_stop, shutdown) = watch::channel(false);
    let key = key();
    let (introduced, result) = tokio::join!(
        auth::introduce(&mut client, &key, Caller::Client, 0),
        this.connection(admitted.stream, &admitted.permit, shutdown.clone())
    );
    introduced.unwrap();
    assert_eq!(result, Err("client connection limit reached".to_string()));

    let (peer, admitted) = admit(&mut gate, &socket).await;
    assert!(admitted.permit.reserved);
    let mut peer = Framed::new(peer, wire::codec());
    let calling = async move {
        auth::introduce(&mut peer, &key, Caller::Peer(1), 0)
            .await
            .unwrap();
        peer.send(wire::encode(&Frame::<()>::Peer(())).unwrap())
            .await
            .unwrap();
        // Hung up: the listener's loop ends.
        drop(peer);
    };
    let (_, result) = tokio::join!(
        calling,
        this.connection(admitted.stream, &admitted.permit, shutdown)
    );
    assert_eq!(result, Ok(()));
    assert!(matches!(
        inputs.try_recv(),
        Ok(Input::Peer {
            from: NodeId(1),
            ..
        })
    ));
}

/// A connection whose caller says `hello`, then (given the listener's challenge, if
/// any) sends what `then` makes of it, then a peer message; what the listener made of
/// the connection, and whether the message reached the core.
/// Asserts that a forged connection was closed for `why` and delivered nothing.
fn refused((result, delivered): (Result<(), String>, bool), why: &str) {
    assert!(
        result.as_ref().is_err_and(|e| e.contains(why)),
        "{result:?}"
    );
    assert!(!delivered);
}

async fn forged(
    hello: Frame<()>,
    then: impl FnOnce(Frame<()>) -> Vec<Frame<()>>,
) -> (Result<(), String>, bool) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut gate = Gate::new("test", 1);
    let (client, admitted) = admit(&mut gate, &socket).await;
    let (this, mut inputs) = listener();
    let (_stop, shutdown) = watch::channel(false);
    let mut client = Framed::new(client, wire::codec());
    let calling = async move {
        client.send(wire::encode(&hello).unwrap()).await.unwrap();
        // The listener closes at once a hello it refuses.
        if let Some(Ok(body)) = client.next().await {
            let challenge = wire::decode(&body).unwrap();
            for frame in then(challenge) {
                let _ = client.send(wire::encode(&frame).unwrap()).await;
            }
        }
        let _ = client
            .send(wire::encode(&Frame::<()>::Peer(())).unwrap())
            .await;
    };
    let (_, result) = tokio::join!(
        calling,
        this.connection(admitted.stream, &admitted.permit, shutdown)
    );
    (result, inputs.try_recv().is_ok())
}

/// The hello of node 1 calling node 0 of cluster 5, with nonce `nonce`.
fn hello(nonce: auth::Nonce) -> Frame<()> {
    Frame::Hello {
        cluster_id: 5,
        node: 1,
        to: 0,
        nonce,
    }
}

/// The caller's proof for `challenge` under `key`, as node 1 with nonce `nonce`.
fn proof(key: &ClusterKey, nonce: auth::Nonce, challenge: &Frame<()>) -> Frame<()> {
    let Frame::Challenge {
        nonce: listener_nonce,
        ..
    } = challenge
    else {
        panic!("a challenge: {}", frame_name(challenge))
    };
    let transcript = Transcript {
        caller: Caller::Peer(1),
        to: 0,
        caller_nonce: nonce,
        listener_nonce: *listener_nonce,
    };
    Frame::Proof {
        proof: transcript.caller_proof(key),
    }
}

#[tokio::test]
async fn a_peer_that_proves_it_knows_the_secret_is_heard() {
    let nonce = auth::nonce();
    let (result, delivered) = forged(hello(nonce), |c| vec![proof(&key(), nonce, &c)]).await;
    assert_eq!(result, Ok(()));
    assert!(delivered);
}

#[tokio::test]
async fn a_peer_with_another_secret_is_refused_and_never_heard() {
    let other = ClusterKey::new(5, b"another cluster's secret, 32 bytes or more");
    let nonce = auth::nonce();
    refused(
        forged(hello(nonce), |c| vec![proof(&other, nonce, &c)]).await,
        "authentication failed",
    );
}

#[tokio::test]
async fn a_peer_that_skips_the_proof_is_refused_and_never_heard() {
    refused(
        forged(hello(auth::nonce()), |_| Vec::new()).await,
        "expected a Proof after the Challenge, got Peer",
    );
}

#[tokio::test]
async fn a_peer_that_reflects_the_listeners_proof_is_refused_and_never_heard() {
    let reflected = forged(hello(auth::nonce()), |challenge| {
        let Frame::Challenge { proof, .. } = challenge else {
            panic!("a challenge")
        };
        vec![Frame::Proof { proof }]
    })
    .await;
    refused(reflected, "authentication failed");
}

#[tokio::test]
async fn a_replayed_handshake_is_refused_and_never_heard() {
    // A genuine exchange, recorded.
    let nonce = auth::nonce();
    let recorded = std::sync::Mutex::new(None);
    let (result, delivered) = forged(hello(nonce), |challenge| {
        let answer = proof(&key(), nonce, &challenge);
        *recorded.lock().unwrap() = Some(answer.clone());
        vec![answer]
    })
    .await;
    assert_eq!((result, delivered), (Ok(()), true));
    // Its hello and proof again, word for word, on a new connection.
    let answer = recorded.into_inner().unwrap().unwrap();
    refused(
        forged(hello(nonce), |_| vec![answer]).await,
        "authentication failed",
    );
}

#[tokio::test]
async fn a_hello_for_another_cluster_or_node_gets_no_challenge() {
    for (hello, why) in [
        (
            Frame::Hello {
                cluster_id: 6,
                node: 1,
                to: 0,
                nonce: auth::nonce(),
            },
            "connection from cluster 6, expected 5",
        ),
        (
            Frame::Hello {
                cluster_id: 5,
                node: 1,
                to: 2,
                nonce: auth::nonce(),
            },
            "connection meant for node 2, this is node 0",
        ),
        (
            Frame::Hello {
                cluster_id: 5,
                node: 3,
                to: 0,
                nonce: auth::nonce(),
            },
            "peer claims node id 3, cluster has 3",
        ),
    ] {
        let (result, delivered) = forged(hello, |c| panic!("challenged: {c:?}")).await;
        assert_eq!(result, Err(why.to_string()));
        assert!(!delivered);
    }
}

#[tokio::test]
async fn a_peer_task_never_sends_to_a_listener_without_the_secret() {
    let impostor = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_stop, shutdown) = watch::channel(false);
    let peers: Peers<Vec<u8>> = connect_peers(
        key(),
        0,
        &two_nodes(impostor.local_addr().unwrap()),
        shutdown,
    );
    assert!(peers.send(NodeId(1), b"a vote".to_vec()));
    let (stream, _) = impostor.accept().await.unwrap();
    let mut framed = Framed::new(stream, wire::codec());
    let body = framed.next().await.unwrap().unwrap();
    let Frame::Hello {
        cluster_id: 5,
        node: 0,
        to: 1,
        nonce,
    } = wire::decode::<(), Request, Reply>(&body).unwrap()
    else {
        panic!("a hello from node 0 to node 1")
    };
    // A challenge proved with another secret.
    let other = ClusterKey::new(5, b"another cluster's secret, 32 bytes or more");
    let transcript = Transcript {
        caller: Caller::Peer(0),
        to: 1,
        caller_nonce: nonce,
        listener_nonce: auth::nonce(),
    };
    let challenge: Frame<()> = Frame::Challenge {
        nonce: transcript.listener_nonce,
        proof: transcript.listener_proof(&other),
    };
    framed
        .send(wire::encode(&challenge).unwrap())
        .await
        .unwrap();
    // The peer task hangs up: no proof, no message.
    assert!(framed.next().await.is_none());
    let queued = wire::encode(&Frame::<_>::Peer(b"a vote".to_vec())).unwrap();
    assert_eq!(peers.queued_bytes(NodeId(1)), queued.len());
}

#[tokio::test]
async fn a_stranger_cannot_announce_a_frame_larger_than_a_hello() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut gate = Gate::new("test", 1);
    let (mut client, admitted) = admit(&mut gate, &socket).await;
    let announced = wire::HELLO_FRAME_BYTES_MAX as u32 + 1;
    client.write_all(&announced.to_be_bytes()).await.unwrap();
    let (this, _inputs) = listener();
    let (_stop, shutdown) = watch::channel(false);
    let result = this
        .connection(admitted.stream, &admitted.permit, shutdown)
        .await;
    assert!(
        result.as_ref().is_err_and(|e| e.contains("bad frame")),
        "{result:?}"
    );
}
