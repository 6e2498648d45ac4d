//! Real `kv node` processes under hostile or careless clients: resources that are finite
//! (file descriptors, memory) must run out for the client, never for the node. Each test
//! ends by writing through the node: it is alive and its storage works.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::Cluster;
use kv_engine::kv::{Op, Reply};
use kv_server::client::ClientOptions;

/// Hang guard for socket reads and writes; never a measure of speed.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Sends one RESP command and reads its one-line reply.
fn command(stream: &mut TcpStream, args: &[&[u8]]) -> std::io::Result<String> {
    let mut wire = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        wire.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        wire.extend_from_slice(arg);
        wire.extend_from_slice(b"\r\n");
    }
    stream.write_all(&wire)?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).trim_end().to_string())
}

/// Puts through the native client and checks the reply.
fn native_put(cluster: &Cluster, key: &'static str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = cluster.client(0, ClientOptions::default());
    let reply = rt
        .block_on(client.execute(Op::Put {
            key: key.into(),
            value: "v".into(),
        }))
        .expect("native put");
    assert_eq!(reply, Reply::Ok);
}

/// The node's soft and hard open-file limits, from /proc/PID/limits.
fn open_file_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[test]
fn a_node_under_a_low_open_file_limit_refuses_connections_past_its_cap_and_keeps_writing() {
    const SOFT: u64 = 128;
    const HARD: u64 = 256;
    let mut cluster = Cluster::start_with(
        1,
        Box::new(|_, command| {
            // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and
            // exec; the rlimit lives on this closure's stack.
            unsafe {
                command.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: SOFT,
                        rlim_max: HARD,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }),
    );
    let pid = cluster.pid(0);
    assert_eq!(
        open_file_limits(pid),
        (HARD, HARD),
        "the node raises its soft limit to the hard one"
    );
    let cap = kv_server::limits::Budget::for_limit(HARD, 1).unwrap().resp;
    let resp = cluster.node(0).resp;
    let mut writer = connect(resp);
    assert_eq!(command(&mut writer, &[b"PING"]).unwrap(), "+PONG");

    // More idle connections than the limit allows descriptors (and fewer than the listen
    // backlog holds). The node serves the first ones up to its cap and closes the rest as
    // they arrive. Once one near the cap is served, the node has taken all it will.
    let mut idle: Vec<TcpStream> = (0..HARD + 64).map(|_| connect(resp)).collect();
    assert_eq!(command(&mut idle[cap - 2], &[b"PING"]).unwrap(), "+PONG");
    // A connection past the cap is told why, in Redis's words, before it is closed.
    let mut refused = connect(resp);
    let mut told = String::new();
    refused.read_to_string(&mut told).expect("read the refusal");
    assert_eq!(told, "-ERR max number of clients reached\r\n");

    // Writes go on, enough of them that the store writes snapshots (new files, directory
    // syncs): storage still gets its descriptors.
    let value = vec![b'x'; 64 << 10];
    for i in 0..64 {
        let key = format!("fd-{i}");
        let reply = command(&mut writer, &[b"SET", key.as_bytes(), &value]);
        assert!(
            matches!(&reply, Ok(r) if r == "+OK"),
            "write {i}: {reply:?}; node log:\n{}",
            cluster.log(0)
        );
    }
    native_put(&cluster, "fd-native");
    assert!(cluster.is_running(0), "log:\n{}", cluster.log(0));
    let status = cluster.status(0).expect("status");
    let snapshot_index = status
        .lines()
        .find_map(|l| l.strip_prefix("snapshot_index: "))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("snapshot_index");
    assert!(snapshot_index > 0, "no snapshot was written:\n{status}");

    // Exactly the connections within the cap are served; the others were closed.
    let mut served = Vec::new();
    for (i, stream) in idle.iter_mut().enumerate() {
        match command(stream, &[b"PING"]) {
            Ok(reply) if reply == "-ERR max number of clients reached" => {}
            Ok(reply) => {
                assert_eq!(reply, "+PONG");
                served.push(i);
            }
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
                ),
                "connection {i}: {e}"
            ),
        }
    }
    assert_eq!(
        served,
        (0..cap - 1).collect::<Vec<_>>(),
        "the first {cap} connections (the writer's among them) are served, the others closed"
    );

    // Once the idle connections go, new ones are served again.
    idle.clear();
    let started = Instant::now();
    loop {
        let mut stream = connect(resp);
        if command(&mut stream, &[b"PING"]).is_ok() {
            break;
        }
        assert!(
            started.elapsed() < IO_TIMEOUT,
            "new connections still refused"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(cluster.is_running(0));
}

#[test]
fn a_client_that_never_reads_its_pipelined_replies_cannot_grow_the_node() {
    const VALUE_BYTES: usize = 16 << 20;
    const GETS: usize = 100;
    /// Far below the ~1.6 GB the replies would take if the node buffered them.
    const RSS_BYTES_MAX: u64 = 512 << 20;
    let cluster = Cluster::start(1);
    let resp = cluster.node(0).resp;
    let mut writer = connect(resp);
    let big = vec![b'b'; VALUE_BYTES];
    assert_eq!(
        command(&mut writer, &[b"SET", b"big", &big]).unwrap(),
        "+OK"
    );
    drop(big);

    // Pipelined GETs of the large value, none of whose replies are read (yet).
    let mut hostile = connect(resp);
    hostile
        .write_all(&b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(GETS))
        .unwrap();

    // Another client works on, one command at a time, while the node's memory stays
    // bounded: the hostile connection is stopped instead of buffered.
    let mut peak = 0;
    for i in 0..300 {
        let key = format!("k{}", i % 10);
        assert_eq!(
            command(&mut writer, &[b"SET", key.as_bytes(), b"small"]).unwrap(),
            "+OK"
        );
        peak = peak.max(cluster.rss_bytes(0));
        assert!(
            peak < RSS_BYTES_MAX,
            "node RSS {} MiB after {i} commands of the other client",
            peak >> 20
        );
    }

    // Once the client reads, it gets every reply, in order.
    let reply_bytes = format!("${VALUE_BYTES}\r\n").len() + VALUE_BYTES + 2;
    let mut buffer = vec![0u8; 1 << 20];
    let mut read = 0;
    while read < GETS * reply_bytes {
        let n = hostile.read(&mut buffer).expect("read replies");
        assert!(n > 0, "closed after {read} bytes of replies");
        read += n;
    }
    assert_eq!(read, GETS * reply_bytes);
    peak = peak.max(cluster.rss_bytes(0));
    assert!(peak < RSS_BYTES_MAX, "node RSS {} MiB", peak >> 20);
    native_put(&cluster, "after-pipeline");
}

#[test]
fn strangers_on_the_peer_port_cannot_make_the_node_buffer_large_frames() {
    const CONNECTIONS: usize = 20;
    const ANNOUNCED_BYTES: u32 = 65 << 20;
    const SENT_BYTES: usize = 60 << 20;
    /// Far below the 1.2 GB the connections would take if the node buffered them.
    const RSS_BYTES_MAX: u64 = 256 << 20;
    let cluster = Cluster::start(1);
    let peer = cluster.node(0).peer;
    let chunk = vec![0u8; 1 << 20];
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..CONNECTIONS {
        let mut stream = connect(peer);
        let mut send = || -> std::io::Result<()> {
            stream.write_all(&ANNOUNCED_BYTES.to_be_bytes())?;
            for _ in 0..SENT_BYTES / chunk.len() {
                stream.write_all(&chunk)?;
            }
            Ok(())
        };
        if let Err(e) = send() {
            assert!(
                matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                "{e}"
            );
            refused += 1;
        }
        // Keep every connection open: a node that buffered frames would hold them.
        held.push(stream);
    }
    let rss = cluster.rss_bytes(0);
    assert!(
        rss < RSS_BYTES_MAX,
        "node RSS {} MiB with {CONNECTIONS} connections announcing {} MiB frames",
        rss >> 20,
        ANNOUNCED_BYTES >> 20
    );
    assert_eq!(refused, CONNECTIONS, "every stranger's frame is refused");
    native_put(&cluster, "after-strangers");
}
