//! Real Redis clients against a real 3-node kv cluster: redis-cli, redis-benchmark (from
//! Debian's redis-tools, which `.ci/run` installs), the `redis` Rust crate, and redis-py
//! with its default settings (RESP3; `.ci/run` installs it with pip). Also: garbage and
//! truncated frames on the peer and RESP ports never take a node down.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::{redis_cli, Cluster};
use kv_engine::kv::{Op, Reply};
use kv_server::client::ClientOptions;

#[test]
fn redis_cli_redis_benchmark_and_a_client_library_work_unchanged() {
    let cluster = Cluster::start(3);
    let (p0, p1, p2) = (
        cluster.node(0).resp.port(),
        cluster.node(1).resp.port(),
        cluster.node(2).resp.port(),
    );
    assert_eq!(redis_cli(p0, &["PING"]), "PONG");
    assert_eq!(redis_cli(p0, &["SET", "greeting", "hello"]), "OK");
    // Written through one node, read through the others: routed inside the cluster.
    assert_eq!(redis_cli(p1, &["GET", "greeting"]), "hello");
    assert_eq!(redis_cli(p2, &["APPEND", "greeting", " world"]), "11");
    assert_eq!(redis_cli(p0, &["GET", "greeting"]), "hello world");
    assert_eq!(redis_cli(p1, &["EXISTS", "greeting", "nope"]), "1");
    // redis-cli prints a nil array element as an empty line (trimmed away here).
    assert_eq!(redis_cli(p2, &["MGET", "greeting", "nope"]), "hello world");
    assert_eq!(redis_cli(p0, &["DEL", "greeting"]), "1");
    assert_eq!(redis_cli(p0, &["GET", "greeting"]), "");
    assert_eq!(redis_cli(p0, &["ECHO", "hi"]), "hi");
    let unknown = redis_cli(p0, &["FLUSHALL"]);
    assert!(unknown.contains("unknown command"), "{unknown}");

    let bench = Command::new("redis-benchmark")
        .args([
            "-p",
            &p0.to_string(),
            "-t",
            "set,get",
            "-n",
            "2000",
            "-c",
            "20",
            "-q",
        ])
        .output()
        .expect("redis-benchmark is installed");
    let text = String::from_utf8_lossy(&bench.stdout);
    assert!(bench.status.success(), "redis-benchmark failed: {text}");
    assert!(text.contains("SET:") && text.contains("GET:"), "{text}");

    let client = redis::Client::open(format!("redis://127.0.0.1:{p1}/")).unwrap();
    let mut con = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg("lib")
        .arg("rust")
        .query(&mut con)
        .unwrap();
    let len: i64 = redis::cmd("APPEND")
        .arg("lib")
        .arg("-redis")
        .query(&mut con)
        .unwrap();
    assert_eq!(len, 10);
    let value: Option<String> = redis::cmd("GET").arg("lib").query(&mut con).unwrap();
    assert_eq!(value.as_deref(), Some("rust-redis"));
    let missing: Option<String> = redis::cmd("GET").arg("absent").query(&mut con).unwrap();
    assert_eq!(missing, None);
    let both: Vec<Option<String>> = redis::cmd("MGET")
        .arg("lib")
        .arg("absent")
        .query(&mut con)
        .unwrap();
    assert_eq!(both, vec![Some("rust-redis".to_string()), None]);
    let err = redis::cmd("NOSUCH").query::<String>(&mut con).unwrap_err();
    assert!(err.to_string().contains("unknown command"), "{err}");
}

/// Runs `tests/python/redis_py.py` against `port`; extra arguments go to the script.
fn redis_py(port: u16, extra: &[&str]) -> String {
    let port = port.to_string();
    let mut args = vec![port.as_str()];
    args.extend_from_slice(extra);
    common::python_script("redis_py.py", &args)
}

#[test]
fn redis_py_works_with_its_default_settings_which_speak_resp3() {
    let cluster = Cluster::start(3);
    let out = redis_py(cluster.node(1).resp.port(), &[]);
    assert!(out.contains("protocol 3"), "{out}");
    let out = redis_py(cluster.node(2).resp.port(), &["2"]);
    assert!(out.contains("protocol 2"), "{out}");
}

fn send_and_read(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

#[test]
fn garbage_and_truncated_frames_never_take_a_node_down() {
    let mut cluster = Cluster::start(3);
    let peer = cluster.node(0).peer;
    let resp = cluster.node(0).resp;

    // Peer port: random bytes, an oversized length prefix, a truncated frame, a frame of
    // valid length holding garbage.
    let mut seed = 7u64;
    for round in 0..20 {
        let junk: Vec<u8> = (0..(round * 37 + 5))
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect();
        send_and_read(peer, &junk);
    }
    send_and_read(peer, &[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
    send_and_read(peer, &[0, 0, 0, 100, 1, 2, 3]);
    send_and_read(peer, &[0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef]);

    // RESP port: a RESP client gets an error reply for a malformed frame.
    let reply = send_and_read(resp, b"*1\r\n$abc\r\n");
    assert!(
        String::from_utf8_lossy(&reply).starts_with("-ERR Protocol error"),
        "{reply:?}"
    );
    let reply = send_and_read(resp, b"$99999999999999\r\n");
    assert!(
        String::from_utf8_lossy(&reply).starts_with("-ERR"),
        "{reply:?}"
    );
    send_and_read(resp, b"*3\r\n$3\r\nSET\r\n$1\r\nk"); // truncated, then closed
    send_and_read(resp, &[0u8; 300]);

    // The node is still up, and every client still gets answers.
    assert!(
        cluster.is_running(0),
        "node 0 died; log:\n{}",
        cluster.log(0)
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut client = cluster.client(0, ClientOptions::default());
    let reply = rt
        .block_on(client.execute(Op::Put {
            key: "after".into(),
            value: "garbage".into(),
        }))
        .unwrap();
    assert_eq!(reply, Reply::Ok);
    assert_eq!(redis_cli(resp.port(), &["GET", "after"]), "garbage");
    cluster.wait_ready_all();
}

#[test]
fn client_subcommands_answer_what_they_set_and_refuse_what_kv_does_not_do() {
    let cluster = Cluster::start(1);
    let mut con = cluster.redis(0, Duration::from_secs(30));
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name, None);
    let ok: String = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("reporter")
        .query(&mut con)
        .unwrap();
    assert_eq!(ok, "OK");
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name.as_deref(), Some("reporter"));
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut con).unwrap();
    assert!(id > 0, "{id}");
    let spaced = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("a b")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(
        spaced.to_string().contains("cannot contain spaces"),
        "{spaced}"
    );
    // A subcommand kv does not run is refused, never acknowledged without effect.
    let tracking = redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .query::<String>(&mut con)
        .unwrap_err();
    assert!(
        tracking
            .to_string()
            .contains("unknown subcommand 'TRACKING'"),
        "{tracking}"
    );
    // HELLO's SETNAME names the connection too.
    let _: redis::Value = redis::cmd("HELLO")
        .arg("2")
        .arg("SETNAME")
        .arg("greeter")
        .query(&mut con)
        .unwrap();
    let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
    assert_eq!(name.as_deref(), Some("greeter"));
    // The connection still works after the refusals.
    assert_eq!(redis_cli(cluster.node(0).resp.port(), &["PING"]), "PONG");
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

/// kv has no transactions. A client that pipelines one (MULTI, its commands and EXEC sent
/// together, as redis-py's default `pipeline()` does) must not have its writes applied while
/// it is told the transaction failed: everything up to EXEC is discarded.
#[test]
fn a_pipelined_transaction_is_refused_whole_and_applies_nothing() {
    let cluster = Cluster::start(1);
    let addr = cluster.node(0).resp;
    let command = |args: &[&str]| {
        let mut frame = format!("*{}\r\n", args.len());
        for arg in args {
            frame.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        frame
    };
    let pipeline: String = [
        command(&["MULTI"]),
        command(&["SET", "account", "100"]),
        command(&["APPEND", "account", "0"]),
        command(&["EXEC"]),
        command(&["GET", "account"]),
        command(&["MULTI"]),
        command(&["SET", "account", "1"]),
        command(&["DISCARD"]),
        command(&["SET", "after", "yes"]),
        command(&["EXEC"]),
    ]
    .concat();
    let replies = String::from_utf8(send_and_read(addr, pipeline.as_bytes())).unwrap();
    let lines: Vec<&str> = replies.split("\r\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 10, "{replies}");
    assert!(
        lines[0].starts_with("-ERR MULTI is not supported"),
        "{replies}"
    );
    assert!(lines[1].starts_with("-ERR command discarded"), "{replies}");
    assert!(lines[2].starts_with("-ERR command discarded"), "{replies}");
    assert_eq!(
        lines[3],
        "-EXECABORT Transaction discarded because MULTI is not supported."
    );
    assert_eq!(lines[4], "$-1", "{replies}");
    assert!(
        lines[5].starts_with("-ERR MULTI is not supported"),
        "{replies}"
    );
    assert!(lines[6].starts_with("-ERR command discarded"), "{replies}");
    assert_eq!(lines[7], "+OK");
    assert_eq!(lines[8], "+OK");
    assert_eq!(lines[9], "-ERR EXEC without MULTI");
    let port = addr.port();
    assert_eq!(redis_cli(port, &["GET", "account"]), "");
    assert_eq!(redis_cli(port, &["GET", "after"]), "yes");
}
