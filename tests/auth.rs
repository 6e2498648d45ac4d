//! RESP authentication and protected mode on real processes, with real clients: a cluster
//! file's `requirepass` makes redis-cli (`-a`), redis-benchmark (`-a`), redis-py
//! (`password=`) and raw RESP authenticate as with Redis, with Redis's replies; without a
//! password, `AUTH <password>` is Redis's configuration error. The admin HTTP endpoint
//! serves only reads. (Protected mode's refusal of clients off loopback is unit-tested in
//! `kv_server::redis::auth`: tests can only connect over loopback, which it admits.)

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, Shape};
use kv_server::config::Mode;
use kv_server::redis::auth::{HELLO_NOAUTH, NOAUTH, NO_PASSWORD, WRONGPASS};

const PASSWORD: &str = "correct horse battery staple";
const IO_TIMEOUT: Duration = Duration::from_secs(30);

fn unsharded(nodes: u32) -> Shape {
    Shape {
        replicas: nodes,
        groups: 0,
        shards: 1,
        redis_cluster: false,
        mode: Mode::Paxos,
    }
}

/// A cluster whose cluster file has `requirepass = PASSWORD`.
fn with_password(nodes: u32, shape: Shape) -> Cluster {
    Cluster::start_edited(nodes, shape, Box::new(|_, _| {}), |config| {
        config.requirepass = Some(PASSWORD.into())
    })
}

/// redis-cli's output (stdout, then stderr), whatever its exit status.
fn cli(port: u16, args: &[&str]) -> String {
    cli_with_input(port, args, "")
}

/// redis-cli reading commands, one per line, from `input` (all on one connection).
fn cli_with_input(port: u16, args: &[&str], input: &str) -> String {
    let mut child = Command::new("redis-cli")
        .args(["--no-auth-warning", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli is installed (Debian package redis-tools)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write redis-cli's input");
    let out = child.wait_with_output().expect("redis-cli runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
    .trim_end()
    .to_string()
}

/// A raw RESP connection that sends one command at a time and reads one one-line reply.
struct Raw {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Raw { stream, reader }
    }

    /// Sends a command, returns its reply's first line without `\r\n`.
    fn call(&mut self, args: &[&str]) -> String {
        let mut frame = format!("*{}\r\n", args.len());
        for arg in args {
            frame.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.stream.write_all(frame.as_bytes()).expect("send");
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reply");
        line.trim_end().to_string()
    }
}

fn error(text: &str) -> String {
    format!("-{text}")
}

#[test]
fn with_a_password_only_auth_hello_ping_and_quit_run_before_authenticating() {
    let cluster = with_password(1, unsharded(1));
    let mut raw = Raw::connect(cluster.node(0).resp);
    assert_eq!(raw.call(&["GET", "k"]), error(NOAUTH));
    assert_eq!(raw.call(&["SET", "k", "v"]), error(NOAUTH));
    assert_eq!(raw.call(&["INFO"]), error(NOAUTH));
    assert_eq!(raw.call(&["PING"]), "+PONG");
    // As in Redis, unknown commands and wrong arities are refused before authentication.
    assert!(raw.call(&["NOSUCH"]).starts_with("-ERR unknown command"));
    assert_eq!(raw.call(&["HELLO", "3"]), error(HELLO_NOAUTH));
    assert_eq!(raw.call(&["AUTH", "wrong"]), error(WRONGPASS));
    assert_eq!(raw.call(&["AUTH", "admin", PASSWORD]), error(WRONGPASS));
    assert_eq!(
        raw.call(&["HELLO", "2", "AUTH", "default", "nope"]),
        error(WRONGPASS)
    );
    assert_eq!(raw.call(&["GET", "k"]), error(NOAUTH));
    assert_eq!(raw.call(&["AUTH", PASSWORD]), "+OK");
    assert_eq!(raw.call(&["SET", "k", "v"]), "+OK");
    // A failed AUTH afterwards leaves the connection authenticated, as in Redis.
    assert_eq!(raw.call(&["AUTH", "wrong"]), error(WRONGPASS));
    assert_eq!(raw.call(&["GET", "k"]), "$1");

    let mut other = Raw::connect(cluster.node(0).resp);
    assert_eq!(other.call(&["AUTH", "default", PASSWORD]), "+OK");
    assert_eq!(other.call(&["EXISTS", "k"]), ":1");
    let mut quitter = Raw::connect(cluster.node(0).resp);
    assert_eq!(quitter.call(&["QUIT"]), "+OK");
}

#[test]
fn redis_cli_and_redis_benchmark_authenticate_with_their_password_options() {
    let cluster = with_password(1, unsharded(1));
    let port = cluster.node(0).resp.port();
    assert_eq!(cli(port, &["-a", PASSWORD, "SET", "greeting", "hi"]), "OK");
    assert_eq!(cli(port, &["-a", PASSWORD, "GET", "greeting"]), "hi");
    assert_eq!(cli(port, &["GET", "greeting"]), NOAUTH);
    assert_eq!(cli(port, &["SET", "greeting", "x"]), NOAUTH);
    assert_eq!(cli(port, &["PING"]), "PONG");
    let wrong = cli(port, &["-a", "wrong", "GET", "greeting"]);
    assert!(wrong.contains(WRONGPASS), "{wrong}");
    let session = cli_with_input(
        port,
        &[],
        &format!("GET greeting\nAUTH default \"{PASSWORD}\"\nGET greeting\n"),
    );
    // (redis-cli prints a blank line after an error reply.)
    assert_eq!(session.replace("\n\n", "\n"), format!("{NOAUTH}\nOK\nhi"));
    let hello = cli_with_input(
        port,
        &[],
        &format!("HELLO 3 AUTH default \"{PASSWORD}\"\nGET greeting\n"),
    );
    assert!(
        hello.contains("proto 3") && hello.ends_with("\nhi"),
        "{hello}"
    );

    let bench = |password: Option<&str>| {
        let mut command = Command::new("redis-benchmark");
        command.args(["-p", &port.to_string(), "-t", "set,get", "-n", "2000", "-q"]);
        if let Some(password) = password {
            command.args(["-a", password]);
        }
        let out = command.output().expect("redis-benchmark is installed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = bench(Some(PASSWORD));
    assert!(ok, "redis-benchmark -a failed: {text}");
    assert!(text.contains("SET:") && text.contains("GET:"), "{text}");
    assert!(!text.contains("NOAUTH") && !text.contains("rror"), "{text}");
    let (_, text) = bench(None);
    assert!(text.contains("NOAUTH"), "without -a: {text}");
}

#[test]
fn redis_py_authenticates_with_its_password_option_in_resp2_and_resp3() {
    let cluster = with_password(1, unsharded(1));
    let port = cluster.node(0).resp.port().to_string();
    common::python_script("auth_py.py", &[&port, PASSWORD]);
}

#[test]
fn in_redis_cluster_mode_clients_authenticate_too() {
    let shape = Shape {
        replicas: 1,
        groups: 2,
        shards: 16,
        redis_cluster: true,
        mode: Mode::Paxos,
    };
    let cluster = with_password(2, shape);
    let port = cluster.node(0).resp.port();
    assert_eq!(cli(port, &["CLUSTER", "SLOTS"]), NOAUTH);
    assert_eq!(cli(port, &["-c", "GET", "k"]), NOAUTH);
    // Keys on both groups, so some are redirected to the other node: redis-cli
    // authenticates there too.
    for key in ["a", "b", "c", "d", "e", "f"] {
        assert_eq!(cli(port, &["-c", "-a", PASSWORD, "SET", key, key]), "OK");
        assert_eq!(cli(port, &["-c", "-a", PASSWORD, "GET", key]), key);
    }
}

#[test]
fn without_a_password_auth_of_a_password_is_a_configuration_error_and_loopback_is_served() {
    let cluster = Cluster::start(1);
    let mut raw = Raw::connect(cluster.node(0).resp);
    assert_eq!(raw.call(&["SET", "k", "v"]), "+OK");
    assert_eq!(raw.call(&["AUTH", "x"]), error(NO_PASSWORD));
    assert_eq!(raw.call(&["AUTH", "default", "anything"]), "+OK");
    assert_eq!(raw.call(&["AUTH", "someone", "x"]), error(WRONGPASS));
    assert_eq!(raw.call(&["GET", "k"]), "$1");
    let port = cluster.node(0).resp.port();
    assert_eq!(cli(port, &["AUTH", "x"]), NO_PASSWORD);
    assert_eq!(cli(port, &["GET", "k"]), "v");
}

/// Sends one HTTP request to the admin endpoint and returns the status line and body.
fn http(addr: SocketAddr, method: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to admin");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: kv\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or("").to_string();
    (status, body.to_string())
}

#[test]
fn the_admin_endpoint_serves_only_reads_and_refuses_every_other_method() {
    let cluster = Cluster::start(1);
    let admin = cluster.node(0).admin;
    let applied = || {
        let status = cluster.status_fields(0).expect("status");
        status.get("applied_index").to_string()
    };
    let before = applied();
    for path in ["/livez", "/readyz", "/metrics", "/join", "/admin", "/"] {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let (status, _) = http(admin, method, path);
            assert_eq!(status, "HTTP/1.1 405 Method Not Allowed", "{method} {path}");
        }
    }
    for (path, code) in [
        ("/livez", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        ("/join", 404),
    ] {
        let (status, _) = http(admin, "GET", path);
        assert!(
            status.starts_with(&format!("HTTP/1.1 {code} ")),
            "GET {path}: {status}"
        );
    }
    assert_eq!(applied(), before);
}
