//! A network of Linux network namespaces for partition tests: every node in a namespace
//! of its own and the test's clients in one more, each pair of them joined by a veth pair
//! of its own, so that the link between any two can be cut — in both directions or in one
//! — while the processes on either side go on running.
//!
//! Why namespaces rather than a fault switch inside the nodes: the nodes run unchanged,
//! and a cut is what a real partition is to them — the kernel's TCP sees its segments
//! vanish, connections stall and time out, and nothing tells the process why. Each
//! namespace has one address (on its loopback device, so it is the same whichever link a
//! packet takes) and a host route to every other namespace's address over the link to
//! it; nothing forwards, so node `i` reaches node `j` only over the `i`–`j` link.
//!
//! A cut is a `pfifo` queue of length 0 on the sending end of a link (`tc`, from
//! iproute2): every packet that end sends, ARP included, is dropped before it reaches the
//! wire, silently, while the other direction still delivers. Both ends make a full cut;
//! one end is one-way loss. (netem's `loss 100%` would do as well but is a kernel module
//! many kernels do not carry; a plain FIFO is built in wherever `tc` works at all.)
//!
//! Everything lives inside namespaces this harness creates, named `kvt-PID-RUN-HOST`;
//! their addresses (10.77.0.0/24) exist nowhere else, so tests running at the same time
//! cannot see each other's. Dropping the [`Net`] deletes its namespaces (after a panic
//! too), and a new one first deletes those of processes that no longer exist.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Configure;

const PREFIX: &str = "kvt-";
/// Hang guard for a datagram over a working link (it arrives in microseconds; a link just
/// healed may first need an ARP exchange).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a datagram over a cut link is given to show up anyway.
const LOSS_WINDOW: Duration = Duration::from_millis(500);

/// Namespaces for `n` nodes and the clients, fully linked.
pub struct Net {
    /// Namespace names: the nodes' (by id), then the clients'.
    names: Vec<String>,
    /// Links whose sending end drops everything, as (from, to).
    dropped: Mutex<BTreeSet<(usize, usize)>>,
}

impl Net {
    /// Creates the namespaces, their addresses and a link between every two of them.
    pub fn new(n: u32) -> Net {
        static RUNS: AtomicU32 = AtomicU32::new(0);
        sweep();
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let names: Vec<String> = (0..=n as usize)
            .map(|h| format!("{PREFIX}{pid}-{run}-{}", label(h, n as usize)))
            .collect();
        let net = Net {
            names,
            dropped: Mutex::new(BTreeSet::new()),
        };
        let hosts = net.names.len();
        for (h, name) in net.names.iter().enumerate() {
            ip(&["netns", "add", name]);
            ip(&["-n", name, "link", "set", "lo", "up"]);
            let address = format!("{}/32", address(h));
            ip(&["-n", name, "addr", "add", &address, "dev", "lo"]);
        }
        for a in 0..hosts {
            for b in a + 1..hosts {
                let (to_b, to_a) = (net.device(b), net.device(a));
                let (na, nb) = (&net.names[a], &net.names[b]);
                ip(&[
                    "-n", na, "link", "add", &to_b, "type", "veth", "peer", "name", &to_a, "netns",
                    nb,
                ]);
                for (from, to, dev) in [(a, b, &to_b), (b, a, &to_a)] {
                    let name = &net.names[from];
                    ip(&["-n", name, "link", "set", dev, "up"]);
                    let (dst, src) = (format!("{}/32", address(to)), address(from).to_string());
                    ip(&["-n", name, "route", "add", &dst, "dev", dev, "src", &src]);
                }
            }
        }
        net
    }

    /// The nodes' addresses, by id.
    pub fn hosts(&self) -> Vec<IpAddr> {
        (0..self.nodes()).map(|h| IpAddr::V4(address(h))).collect()
    }

    fn nodes(&self) -> usize {
        self.names.len() - 1
    }

    /// Starts every node process in its own namespace (for [`super::Cluster::start_hosted`]).
    pub fn configure(&self) -> Configure {
        let paths: Vec<CString> = (0..self.nodes())
            .map(|h| CString::new(self.path(h)).expect("a path without NUL"))
            .collect();
        Box::new(move |id, command: &mut Command| {
            let path = paths[id as usize].clone();
            // SAFETY: between fork and exec the closure only makes system calls (open,
            // setns, close) on memory allocated before the fork.
            unsafe {
                command.pre_exec(move || enter_path(&path));
            }
        })
    }

    /// Moves the calling thread into the clients' namespace: every socket it opens from now
    /// on (and every thread or process it starts, a tokio runtime's workers, `kv admin`)
    /// reaches the nodes over the clients' links. Call it before starting the cluster.
    pub fn enter_clients(&self) {
        let path = CString::new(self.path(self.nodes())).expect("a path without NUL");
        enter_path(&path).expect("enter the clients' namespace");
    }

    /// Node `from`'s packets to node `to` are dropped from now on (the other way still
    /// delivers).
    pub fn drop_from(&self, from: u32, to: u32) {
        let (from, to) = (from as usize, to as usize);
        if self.dropped.lock().unwrap().insert((from, to)) {
            let (name, dev) = (&self.names[from], self.device(to));
            tc(&[
                "-n", name, "qdisc", "replace", "dev", &dev, "root", "pfifo", "limit", "0",
            ]);
        }
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&self, a: u32, b: u32) {
        self.drop_from(a, b);
        self.drop_from(b, a);
    }

    /// Cuts every link between a node in `side` and a node outside it.
    pub fn isolate(&self, side: &[u32]) {
        for a in side {
            for b in (0..self.nodes() as u32).filter(|b| !side.contains(b)) {
                self.cut(*a, b);
            }
        }
    }

    /// Jepsen's "majorities ring": node `i` keeps only its links to `i - 1` and `i + 1`
    /// (mod n), so each sees a majority of three, and no two see the same one.
    pub fn ring(&self) {
        let n = self.nodes() as u32;
        assert!(n >= 5, "a majorities ring needs at least 5 nodes");
        for a in 0..n {
            for b in a + 1..n {
                if (b - a) != 1 && (b - a) != n - 1 {
                    self.cut(a, b);
                }
            }
        }
    }

    /// Every link works again.
    pub fn heal(&self) {
        let dropped = std::mem::take(&mut *self.dropped.lock().unwrap());
        for (from, to) in dropped {
            let (name, dev) = (&self.names[from], self.device(to));
            tc(&["-n", name, "qdisc", "del", "dev", &dev, "root"]);
        }
    }

    /// Checks every link between nodes, each way, against what was cut: a datagram sent
    /// over a cut direction must not arrive, one over any other must. Panics naming the
    /// first link that is not as expected — a nemesis that does not cut would make the
    /// tests that use it meaningless.
    pub fn verify(&self) {
        let dropped = self.dropped.lock().unwrap().clone();
        let pairs: Vec<(usize, usize)> = (0..self.nodes())
            .flat_map(|a| (0..self.nodes()).map(move |b| (a, b)))
            .filter(|(a, b)| a != b)
            .collect();
        let probes: Vec<_> = pairs
            .iter()
            .map(|&(from, to)| {
                let (sender, receiver) = (self.path(from), self.path(to));
                let cut = dropped.contains(&(from, to));
                std::thread::spawn(move || delivers(&sender, &receiver, from, to, cut))
            })
            .collect();
        for ((from, to), probe) in pairs.into_iter().zip(probes) {
            let delivered = probe.join().expect("a probe thread");
            let cut = dropped.contains(&(from, to));
            assert_eq!(
                delivered,
                !cut,
                "node {from} -> node {to}: delivered {delivered}, but the link is {}",
                if cut { "cut" } else { "up" }
            );
        }
    }

    /// The name of a namespace's end of its link to `to`.
    fn device(&self, to: usize) -> String {
        format!("to{}", label(to, self.nodes()))
    }

    fn path(&self, host: usize) -> String {
        format!("/run/netns/{}", self.names[host])
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

/// A host's label: its node id, or `c` for the clients.
fn label(host: usize, nodes: usize) -> String {
    if host == nodes {
        "c".to_string()
    } else {
        host.to_string()
    }
}

/// Host `h`'s address (the clients' is the last host's).
fn address(h: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 1 + h as u8)
}

/// Whether a datagram from the namespace at `sender` reaches `to`'s address in the one at
/// `receiver`. Waits [`LOSS_WINDOW`] for one over a link believed `cut`, and up to
/// [`DELIVERY_TIMEOUT`] otherwise.
fn delivers(sender: &str, receiver: &str, from: usize, to: usize, cut: bool) -> bool {
    let receiver = CString::new(receiver).expect("a path without NUL");
    let sender = CString::new(sender).expect("a path without NUL");
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let listen = std::thread::spawn(move || {
        enter_path(&receiver).expect("enter the receiver's namespace");
        let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(address(to)), 0)).expect("bind");
        bound_tx
            .send(socket.local_addr().expect("address"))
            .unwrap();
        let wait = if cut { LOSS_WINDOW } else { DELIVERY_TIMEOUT };
        socket.set_read_timeout(Some(wait)).expect("timeout");
        let mut buf = [0u8; 16];
        socket.recv_from(&mut buf).is_ok()
    });
    let target = bound_rx.recv().expect("the receiver bound");
    enter_path(&sender).expect("enter the sender's namespace");
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(address(from)), 0)).expect("bind");
    // Send until the receiver is done (a few datagrams may wait on ARP, or be dropped).
    let started = Instant::now();
    while !listen.is_finished() && started.elapsed() < DELIVERY_TIMEOUT * 2 {
        let _ = socket.send_to(b"probe", target);
        std::thread::sleep(Duration::from_millis(20));
    }
    listen.join().expect("the receiver")
}

/// Moves the calling thread (or, before exec, the process) into the network namespace
/// mounted at `path`.
fn enter_path(path: &CString) -> std::io::Result<()> {
    // SAFETY: open, setns and close on a NUL-terminated path and the descriptor just
    // opened; nothing else is touched.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let entered = libc::setns(fd, libc::CLONE_NEWNET);
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if entered != 0 {
            return Err(error);
        }
    }
    Ok(())
}

/// Deletes the namespaces of earlier test processes that are gone (killed before they
/// could clean up).
fn sweep() {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("iproute2's `ip` is installed (.ci/run installs it)");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn tc(args: &[&str]) {
    run("tc", args);
}

/// Runs an iproute2 command; panics with its error output if it fails.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program} (iproute2; .ci/run installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
