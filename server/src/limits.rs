//! File descriptors and connection caps: a node never lets its listeners take the
//! descriptors its storage and its peers need.
//!
//! At start a node raises its soft open-file limit to the hard limit
//! ([`raise_open_files_limit`]) and splits what that allows ([`Budget::for_limit`]):
//! [`FDS_RESERVED`] for storage (WAL segments, snapshots and their directory syncs, the
//! lock and stamp files), the runtime and the listeners; [`FDS_PER_PEER`] for each other
//! node (its inbound connection, ours to it, and a reconnect's overlap); then
//! [`ADMIN_CONNECTIONS_MAX`] for the admin endpoint, and the rest for client connections —
//! a quarter for native clients, the others for RESP, each capped at its listener's own
//! maximum ([`crate::redis::CONNECTIONS_MAX`], [`NATIVE_CONNECTIONS_MAX`]).
//!
//! Each listener admits connections through a [`Gate`]: a connection over its cap is
//! accepted and closed at once, so the client sees its connection refused and the node
//! keeps every descriptor its cap does not hand out. The peer listener also keeps
//! [`Budget::peer_reserve`] slots that only connections saying they are peers may use, so
//! a crowd of native clients cannot lock the cluster's own nodes out. Accept failures
//! (running out of descriptors anyway, say to another process's leak) back off, capped at
//! [`ACCEPT_BACKOFF_MAX`]; they never stop the node.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Descriptors kept for storage, the runtime, standard streams and the listeners.
pub const FDS_RESERVED: u64 = 64;
/// Descriptors kept for each other node of the cluster.
pub const FDS_PER_PEER: u64 = 3;
/// Most concurrent admin (HTTP) connections.
pub const ADMIN_CONNECTIONS_MAX: usize = 16;
/// Most concurrent native-client connections per node, however high the open-file limit.
pub const NATIVE_CONNECTIONS_MAX: usize = 4096;
/// Fewest client connections (RESP and native together) a node starts with; an open-file
/// limit that leaves fewer is refused at start.
pub const CLIENT_CONNECTIONS_MIN: u64 = 16;
/// Longest pause between failed accepts.
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Why the descriptor budget could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// The open-file limit cannot be read or raised.
    #[error("reading the open-file limit: {0}")]
    Io(#[from] std::io::Error),
    /// The open-file limit leaves too few descriptors to run.
    #[error(
        "the open-file limit is {limit}, but a node of a {nodes}-node cluster needs at least \
         {needed}; raise it (ulimit -n, or LimitNOFILE= under systemd)"
    )]
    TooLow {
        /// The limit in effect.
        limit: u64,
        /// Nodes in the cluster.
        nodes: usize,
        /// The least that would do.
        needed: u64,
    },
}

/// How a node's open-file limit is shared out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft open-file limit in effect.
    pub open_files: u64,
    /// Most RESP connections.
    pub resp: usize,
    /// Most native-client (and not yet introduced) connections on the peer listener.
    pub native: usize,
    /// Further slots on the peer listener that only peers may keep.
    pub peer_reserve: usize,
    /// Most admin connections.
    pub admin: usize,
}

impl Budget {
    /// The budget for an open-file limit of `open_files` in a cluster of `nodes`.
    pub fn for_limit(open_files: u64, nodes: usize) -> Result<Budget, LimitError> {
        let peers = nodes.saturating_sub(1) as u64;
        let kept = FDS_RESERVED + FDS_PER_PEER * peers + ADMIN_CONNECTIONS_MAX as u64;
        let needed = kept + CLIENT_CONNECTIONS_MIN;
        if open_files < needed {
            return Err(LimitError::TooLow {
                limit: open_files,
                nodes,
                needed,
            });
        }
        let clients = usize::try_from(open_files - kept).unwrap_or(usize::MAX);
        let native = (clients / 4).clamp(1, NATIVE_CONNECTIONS_MAX);
        let resp = (clients - native).min(crate::redis::CONNECTIONS_MAX);
        Ok(Budget {
            open_files,
            resp,
            native,
            // Two inbound connections per peer: the current one and a reconnect's.
            peer_reserve: 2 * peers as usize,
            admin: ADMIN_CONNECTIONS_MAX,
        })
    }
}

/// Raises the soft open-file limit to the hard limit (as far as the kernel allows) and
/// returns the soft limit then in effect.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid, exclusive pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let mut raised = limit;
        raised.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads one rlimit through a valid pointer. An unlimited hard
        // limit may exceed what the kernel allows (fs.nr_open): then keep the soft one.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// A count of open connections that readers can see.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    /// Connections open now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    fn enter(&self) -> Entered {
        self.0.fetch_add(1, Ordering::Relaxed);
        Entered(self.clone())
    }
}

/// One connection counted in a [`Counter`] until dropped.
#[derive(Debug)]
struct Entered(Counter);

impl Drop for Entered {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's place under its listener's cap; the place is freed when it is dropped.
#[derive(Debug)]
pub struct Permit {
    _permit: OwnedSemaphorePermit,
    _counted: Entered,
    /// The connection holds one of the peer-only slots: it must introduce itself as a peer.
    pub reserved: bool,
}

/// An admitted connection.
#[derive(Debug)]
pub struct Admitted {
    /// The socket.
    pub stream: TcpStream,
    /// Who connected.
    pub remote: SocketAddr,
    /// Its place under the cap; drop it when the connection ends.
    pub permit: Permit,
}

/// Admits connections from a listener up to a cap (see the module docs).
#[derive(Debug)]
pub struct Gate {
    name: &'static str,
    general: Arc<Semaphore>,
    general_max: usize,
    reserve: Option<Arc<Semaphore>>,
    counter: Counter,
    /// Whether the cap was hit since the last admission (so it is logged once per episode).
    refusing: bool,
    backoff: Duration,
    /// What a connection over the cap is sent before it is closed, if anything.
    refusal: Option<&'static [u8]>,
}

impl Gate {
    /// A gate admitting at most `max` connections at once.
    pub fn new(name: &'static str, max: usize) -> Gate {
        Gate {
            name,
            general: Arc::new(Semaphore::new(max)),
            general_max: max,
            reserve: None,
            counter: Counter::default(),
            refusing: false,
            backoff: ACCEPT_BACKOFF_MIN,
            refusal: None,
        }
    }

    /// Sends `bytes` to each connection over the cap (without waiting: what does not fit
    /// the socket's buffer at once is dropped) before closing it, so its client is told
    /// why (RESP: Redis's `-ERR max number of clients reached`).
    pub fn with_refusal(mut self, bytes: &'static [u8]) -> Gate {
        self.refusal = Some(bytes);
        self
    }

    /// Adds `slots` places for when the general ones are taken; connections that get one
    /// are marked [`Permit::reserved`].
    pub fn with_reserve(mut self, slots: usize) -> Gate {
        self.reserve = (slots > 0).then(|| Arc::new(Semaphore::new(slots)));
        self
    }

    /// The count of connections this gate has open.
    pub fn counter(&self) -> Counter {
        self.counter.clone()
    }

    /// The next admitted connection; `None` once `shutdown` flips. Connections over the
    /// cap are closed as they arrive.
    pub async fn accept(
        &mut self,
        listener: &TcpListener,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Admitted> {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.changed() => return None,
                accepted = listener.accept() => accepted,
            };
            let (stream, remote) = match accepted {
                Ok(pair) => {
                    self.backoff = ACCEPT_BACKOFF_MIN;
                    pair
                }
                Err(e) => {
                    tracing::warn!(listener = self.name, error = %e, "accept failed; backing off");
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            match self.admit() {
                Some(permit) => {
                    self.refusing = false;
                    return Some(Admitted {
                        stream,
                        remote,
                        permit,
                    });
                }
                None => {
                    if !self.refusing {
                        self.refusing = true;
                        tracing::warn!(
                            listener = self.name,
                            max = self.general_max,
                            %remote,
                            "connection limit reached; closing new connections until some end"
                        );
                    }
                    if let Some(refusal) = self.refusal {
                        let _ = stream.try_write(refusal);
                    }
                    drop(stream);
                }
            }
        }
    }

    fn admit(&self) -> Option<Permit> {
        let (permit, reserved) = match self.general.clone().try_acquire_owned() {
            Ok(permit) => (permit, false),
            Err(_) => (self.reserve.clone()?.try_acquire_owned().ok()?, true),
        };
        Some(Permit {
            _permit: permit,
            _counted: self.counter.enter(),
            reserved,
        })
    }
}

/// First pause after a failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_descriptors_for_storage_peers_and_admin() {
        let budget = Budget::for_limit(1024, 3).unwrap();
        let kept = FDS_RESERVED + 2 * FDS_PER_PEER + ADMIN_CONNECTIONS_MAX as u64;
        let listeners = budget.resp + budget.native + budget.peer_reserve + budget.admin;
        assert!(
            listeners as u64 + FDS_RESERVED <= 1024,
            "{budget:?} leaves storage nothing"
        );
        assert_eq!(budget.resp + budget.native, (1024 - kept) as usize);
        assert!(budget.native >= 1 && budget.resp > budget.native);
        assert_eq!(budget.peer_reserve, 4);
    }

    #[test]
    fn caps_stay_at_each_listeners_maximum_under_a_huge_limit() {
        let budget = Budget::for_limit(1 << 20, 5).unwrap();
        assert_eq!(budget.resp, crate::redis::CONNECTIONS_MAX);
        assert_eq!(budget.native, NATIVE_CONNECTIONS_MAX);
    }

    #[test]
    fn a_limit_too_low_to_run_is_a_clear_error() {
        let err = Budget::for_limit(50, 3).unwrap_err().to_string();
        assert!(err.contains("open-file limit is 50"), "{err}");
        assert!(err.contains("ulimit -n"), "{err}");
        let needed = FDS_RESERVED + 2 * FDS_PER_PEER + ADMIN_CONNECTIONS_MAX as u64;
        assert!(Budget::for_limit(needed + CLIENT_CONNECTIONS_MIN, 3).is_ok());
    }

    #[tokio::test]
    async fn a_gate_closes_connections_over_its_cap_and_admits_again_once_one_ends() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, mut shutdown) = watch::channel(false);
        let mut gate = Gate::new("test", 1).with_reserve(1);
        let _a = TcpStream::connect(addr).await.unwrap();
        let first = gate.accept(&listener, &mut shutdown).await.unwrap();
        assert!(!first.permit.reserved);
        let _b = TcpStream::connect(addr).await.unwrap();
        let second = gate.accept(&listener, &mut shutdown).await.unwrap();
        assert!(second.permit.reserved);
        assert_eq!(gate.counter().get(), 2);

        // Full: a third connection is closed by the gate (its client reads end-of-stream);
        // once the first ends, the next is admitted on a general slot.
        let client = async move {
            use tokio::io::AsyncReadExt;
            let mut third = TcpStream::connect(addr).await.unwrap();
            let mut byte = [0u8; 1];
            assert_eq!(third.read(&mut byte).await.unwrap_or(0), 0);
            drop(first);
            TcpStream::connect(addr).await.unwrap()
        };
        let (admitted, fourth) = tokio::join!(gate.accept(&listener, &mut shutdown), client);
        let admitted = admitted.unwrap();
        assert_eq!(admitted.remote, fourth.local_addr().unwrap());
        assert!(!admitted.permit.reserved);
        drop(admitted);
        drop(second);
        assert_eq!(gate.counter().get(), 0);
    }
}
