//! A recorded workload for crash tests: closed-loop native clients writing unique tokens
//! (puts and appends) and reading a few keys, every operation recorded with its invoke and
//! return times (unknown outcomes as indeterminate), then reads of every key and the
//! linearizability check of the whole history — so no acknowledged write may be lost,
//! duplicated or reordered, and no read may see a state that never was.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use kv_client::any::AnyClient;
use kv_engine::kv::{Op, Reply};
use kv_replication::linearizability::{
    check, Budget, CheckResult, History, Input, Operation, Outcome, Output,
};
use kv_server::client::{Client, Protocol};

use super::clock;

/// A client the workload can drive: one op at a time, an error when its outcome is unknown.
pub trait Execute: Send + 'static {
    fn execute(
        &mut self,
        op: Op,
    ) -> impl std::future::Future<Output = Result<Reply, String>> + Send;
}

impl<P: Protocol> Execute for Client<P> {
    async fn execute(&mut self, op: Op) -> Result<Reply, String> {
        Client::execute(self, op).await.map_err(|e| e.to_string())
    }
}

/// A client of whatever kind the cluster file names, giving up on an op after the duration.
impl Execute for (AnyClient, std::time::Duration) {
    async fn execute(&mut self, op: Op) -> Result<Reply, String> {
        self.0.execute(op, self.1).await
    }
}

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

    /// Waits until the clients answered `more` operations beyond what they had (panics,
    /// naming `what`, if they have not within `timeout`).
    pub fn wait_progress(&self, more: u64, what: &str, timeout: std::time::Duration) {
        let from = self.answered();
        super::wait_for(what, timeout, || {
            (self.answered() >= from + more).then_some(())
        });
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
        1 => write(key, token, false),
        _ => write(key, token, true),
    }
}

/// A put (or, if `append`, an append) of `token` to `key`, and its model input.
fn write(key: String, token: String, append: bool) -> (Op, Input) {
    let (k, v) = (Bytes::from(key.clone()), Bytes::from(token.clone()));
    let (key, value) = (key.into_bytes(), token.into_bytes());
    if append {
        (
            Op::Append { key: k, value: v },
            Input::Append { key, value },
        )
    } else {
        (Op::Put { key: k, value: v }, Input::Put { key, value })
    }
}

/// Runs each of `clients` as a closed-loop client on `keys` keys, recording every
/// operation in `history`, until [`Load::finish`].
pub fn spawn_clients<C: Execute>(
    rt: &tokio::runtime::Runtime,
    clients: Vec<C>,
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
                            // A client failing at once must still let the runtime stop it.
                            tokio::task::yield_now().await;
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
pub fn final_reads<C: Execute>(
    rt: &tokio::runtime::Runtime,
    client: &mut C,
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
/// On failure it first prints every operation on the key the checker stopped at, in
/// invoke order, so a failure seen once (in CI, say) can be studied from its log.
pub fn assert_linearizable(history: &History) {
    let result = check(history, Budget::DEFAULT);
    let stopped_at = match &result {
        CheckResult::Ok => None,
        CheckResult::Violation { key, .. } | CheckResult::BudgetExhausted { key } => Some(key),
    };
    if let Some(key) = stopped_at {
        let mut operations: Vec<_> = history
            .operations()
            .into_iter()
            .filter(|op| op.input.key() == key.as_slice())
            .collect();
        operations.sort_by_key(|op| op.invoke);
        eprintln!(
            "{} operations on key {:?}, in invoke order:",
            operations.len(),
            String::from_utf8_lossy(key)
        );
        for op in &operations {
            eprintln!("  {op:?}");
        }
    }
    assert_eq!(
        result,
        CheckResult::Ok,
        "history of {} operations: {result}",
        history.len()
    );
}

/// Writes, as the final reader (client 1000) and recorded, a put to `k0` and then an
/// append to it, each acknowledged before the next begins: so a final read of `k0` shows an
/// acknowledged append that began after the write at the start of the value had returned —
/// what [`assert_a_lost_write_would_show`] takes out — however the load's own last writes
/// happened to fall.
pub fn closing_writes<C: Execute>(
    rt: &tokio::runtime::Runtime,
    client: &mut C,
    history: &History,
    epoch: Instant,
) {
    for (n, append) in [(1, false), (2, true)] {
        let (op, input) = write("k0".into(), format!("[1000.{n}]"), append);
        let call = history.invoke(1_000, input, clock(epoch));
        match rt.block_on(client.execute(op)) {
            Ok(Reply::Ok | Reply::Appended(_)) => history.complete(call, Output::Ok, clock(epoch)),
            other => panic!("the healed cluster takes a closing write: {other:?}"),
        }
    }
}

/// Panics unless the checker rejects `history` with one acknowledged append taken out of a
/// final read (client 1000's) that showed it: proof that a lost write in this very history
/// would not have passed [`assert_linearizable`]. The append taken out is one that began
/// after the write at the start of the value had returned, so that no order of the
/// operations explains its absence.
pub fn assert_a_lost_write_would_show(history: &History) {
    let operations = history.operations();
    // Each token's write (tokens are unique): its input's kind and its outcome.
    let writes: std::collections::HashMap<&[u8], &Operation> = operations
        .iter()
        .filter_map(|op| match &op.input {
            Input::Put { value, .. } | Input::Append { value, .. } => Some((&value[..], op)),
            _ => None,
        })
        .collect();
    let returned = |op: &Operation| match op.outcome {
        Outcome::Returned { time, .. } => Some(time),
        Outcome::Indeterminate => None,
    };
    let lost = operations.iter().enumerate().find_map(|(i, read)| {
        let (Input::Get { .. }, Outcome::Returned { time, output }) = (&read.input, &read.outcome)
        else {
            return None;
        };
        let Output::Value(Some(value)) = output else {
            return None;
        };
        let tokens: Vec<&[u8]> = value.split_inclusive(|&b| b == b']').collect();
        let first = returned(writes.get(tokens.first()?)?)?;
        let at = tokens.iter().position(|token| {
            writes.get(token).is_some_and(|op| {
                matches!(op.input, Input::Append { .. })
                    && returned(op).is_some()
                    && op.invoke > first
            })
        })?;
        let without: Vec<u8> = tokens
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != at)
            .flat_map(|(_, token)| token.iter().copied())
            .collect();
        (read.client == 1_000).then_some((i, *time, without))
    });
    let (i, time, without) = lost.expect("a final read shows an acknowledged append");
    let mutated = History::new();
    for (j, mut op) in operations.into_iter().enumerate() {
        if j == i {
            op.outcome = Outcome::Returned {
                time,
                output: Output::Value(Some(without.clone())),
            };
        }
        mutated.record(op);
    }
    assert!(
        !check(&mutated, Budget::DEFAULT).is_ok(),
        "the checker accepts a final read missing an acknowledged append"
    );
}
