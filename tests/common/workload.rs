//! A recorded workload for crash tests: closed-loop native clients writing unique tokens
//! (puts and appends) and reading a few keys, every operation recorded with its invoke and
//! return times (unknown outcomes as indeterminate), then reads of every key and the
//! linearizability check of the whole history — so no acknowledged write may be lost,
//! duplicated or reordered, and no read may see a state that never was.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kv_engine::kv::{Op, Reply};
use kv_replication::linearizability::{check, Budget, CheckResult, History, Input, Output};
use kv_server::client::{Client, Protocol};

use super::clock;

/// Clients running until [`Load::finish`].
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    answered: Arc<AtomicU64>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Writes acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Operations answered so far (reads and writes).
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    /// Stops the clients (each after its current operation) and returns the writes
    /// acknowledged in all.
    pub fn finish(self, rt: &tokio::runtime::Runtime) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for handle in self.handles {
            rt.block_on(handle).expect("a client task");
        }
        self.acked.load(Ordering::Relaxed)
    }
}

/// The op and its model input for operation `n` of client `c` on one of `keys` keys: a
/// read every fifth, a put every fifth, appends otherwise, each write a unique token.
fn operation(c: usize, n: u64, keys: u64) -> (Op, Input) {
    let key = format!("k{}", (c as u64 * 7 + n) % keys);
    let token = format!("[{c}.{n}]");
    match n % 5 {
        0 => (
            Op::Get {
                key: Bytes::from(key.clone()),
            },
            Input::Get {
                key: key.into_bytes(),
            },
        ),
        1 => (
            Op::Put {
                key: Bytes::from(key.clone()),
                value: Bytes::from(token.clone()),
            },
            Input::Put {
                key: key.into_bytes(),
                value: token.into_bytes(),
            },
        ),
        _ => (
            Op::Append {
                key: Bytes::from(key.clone()),
                value: Bytes::from(token.clone()),
            },
            Input::Append {
                key: key.into_bytes(),
                value: token.into_bytes(),
            },
        ),
    }
}

/// Runs each of `clients` as a closed-loop client on `keys` keys, recording every
/// operation in `history`, until [`Load::finish`].
pub fn spawn_clients<P: Protocol>(
    rt: &tokio::runtime::Runtime,
    clients: Vec<Client<P>>,
    keys: u64,
    history: History,
    epoch: Instant,
) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let answered = Arc::new(AtomicU64::new(0));
    let handles = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let (history, stop) = (history.clone(), stop.clone());
            let (acked, answered) = (acked.clone(), answered.clone());
            rt.spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (op, input) = operation(c, n, keys);
                    let call = history.invoke(c as u64, input, clock(epoch));
                    match client.execute(op).await {
                        Ok(Reply::Value(v)) => history.complete(
                            call,
                            Output::Value(v.map(|b| b.to_vec())),
                            clock(epoch),
                        ),
                        Ok(Reply::Ok | Reply::Appended(_)) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                            history.complete(call, Output::Ok, clock(epoch))
                        }
                        Ok(other) => panic!("unexpected reply {other:?}"),
                        Err(_) => {
                            history.give_up(call);
                            continue;
                        }
                    }
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    Load {
        stop,
        acked,
        answered,
        handles,
    }
}

/// Reads keys `k0`.. `k{keys - 1}` once each with `read`, recording every read as a final
/// reader's (client 1000); returns each key with the value read.
pub fn recorded_reads(
    keys: u64,
    history: &History,
    epoch: Instant,
    mut read: impl FnMut(&str) -> Option<Vec<u8>>,
) -> Vec<(String, Option<Vec<u8>>)> {
    (0..keys)
        .map(|k| {
            let key = format!("k{k}");
            let input = Input::Get {
                key: key.clone().into_bytes(),
            };
            let call = history.invoke(1_000, input, clock(epoch));
            let value = read(&key);
            history.complete(call, Output::Value(value.clone()), clock(epoch));
            (key, value)
        })
        .collect()
}

/// Reads every one of `keys` keys once through `client` and records the reads.
pub fn final_reads<P: Protocol>(
    rt: &tokio::runtime::Runtime,
    client: &mut Client<P>,
    keys: u64,
    history: &History,
    epoch: Instant,
) {
    recorded_reads(keys, history, epoch, |key| {
        let get = Op::Get {
            key: Bytes::from(key.to_string()),
        };
        match rt
            .block_on(client.execute(get))
            .expect("the cluster answers the final reads")
        {
            Reply::Value(v) => v.map(|b| b.to_vec()),
            other => panic!("unexpected reply {other:?}"),
        }
    });
}

/// Panics unless `history` is linearizable (a checker that runs out of budget fails too).
pub fn assert_linearizable(history: &History) {
    let result = check(history, Budget::DEFAULT);
    assert_eq!(
        result,
        CheckResult::Ok,
        "history of {} operations: {result}",
        history.len()
    );
}
