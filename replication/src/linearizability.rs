//! A linearizability checker for key-value client histories, and (in [`model`]) for
//! histories of any object with a sequential model, such as the shard master
//! ([`shardmaster`]). [`History`] records either: by default kv [`Input`]s and [`Output`]s,
//! or a model's own types.
//!
//! Purpose: simulation runs and end-to-end tests record what every client asked and what it
//! was told, with the time it asked and the time it was answered, and then ask this module
//! whether some single sequential order of the operations explains every answer while
//! respecting real time (an operation that returned before another was invoked comes first).
//! Checking final values alone misses stale reads and reordered writes; this does not.
//!
//! How: the history is split by key — operations on different keys commute, so the history is
//! linearizable iff each key's sub-history is (P-compositionality, Horn & Kroening 2015).
//! Each key's sub-history is searched with the Wing–Gong algorithm plus Lowe's memoisation,
//! as in porcupine (github.com/anishathalye/porcupine): walk the call/return events in time
//! order, try to linearize each operation whose call has been seen, backtrack when a return
//! is reached whose operation has not been linearized, and never revisit a (set of
//! linearized operations, register value) pair already known to lead nowhere. The model per
//! key is a register `Option<Vec<u8>>`: Get returns it, Put sets it, Append appends to it
//! (a missing key counts as empty), Delete removes it. On top of porcupine's search (each
//! shortcut is sound by the argument at its definition):
//! - a Get that may come next and matches the current value is placed at once, never as a
//!   choice to revisit (see `Placed::forced`), so only the order of writes is searched;
//! - a configuration is abandoned as soon as some Get near the front can no longer read what
//!   it returned with the writes left (see `Reach`), not only when that Get returns;
//! - indeterminate writes whose bytes no Get ever returned are dropped up front (see
//!   `may_matter`), so clients that time out often do not multiply the search;
//! - an Append extends a value by reference (see `Node`), so it costs O(1) however long
//!   the value has grown.
//!
//! Cost: a few thousand steps per thousand operations when keys see little contention;
//! hot keys with many concurrent writers cost more, and proving a violation costs most,
//! because every live configuration before the violation must be ruled out. Ten
//! always-busy clients on one key with thousands of operations can exhaust
//! [`Budget::DEFAULT`].
//!
//! Invariants and semantics:
//! - The checker never reads a clock: times are caller-supplied `u64`s (virtual nanoseconds
//!   in the simulator, a counter or `Instant`-derived nanoseconds in real tests). Intervals
//!   are closed: an operation returning at `t` and one invoked at the same `t` are treated
//!   as concurrent, so callers wanting them ordered must use a strictly increasing clock.
//! - An operation whose outcome is unknown (the client gave up, or crashed) is
//!   [`Outcome::Indeterminate`]: it may take effect at any time after its invoke, or never.
//!   An indeterminate Get constrains nothing and is dropped.
//! - The search is bounded by a [`Budget`] of search steps, not wall-clock time, so a check
//!   gives the same answer on every machine. Callers treat [`CheckResult::BudgetExhausted`]
//!   as a failure.
//! - Verdicts are exact: a Get is matched against the value's actual bytes, and the memo
//!   compares full (set, value id) keys, where equal ids always mean equal bytes; hashes
//!   only pick buckets, so a collision can cost time, never a wrong verdict.
//! - Deterministic: keys are checked in `BTreeMap` order, hashers are unseeded and only
//!   used for lookups, and nothing depends on a hash map's iteration order.
//!
//! Failure model: misuse by the caller (a Get completed with [`Output::Ok`], a write
//! completed with a value, a return before its invoke) is a broken invariant and panics.
//!
//! ```
//! use kv_replication::linearizability::{check, Budget, CheckResult, History, Input, Output};
//!
//! let history = History::new();
//! let put = history.invoke(1, Input::Put { key: b"k".to_vec(), value: b"v".to_vec() }, 0);
//! history.complete(put, Output::Ok, 10);
//! let get = history.invoke(2, Input::Get { key: b"k".to_vec() }, 20);
//! history.complete(get, Output::Value(Some(b"v".to_vec())), 30);
//! assert_eq!(check(&history, Budget::DEFAULT), CheckResult::Ok);
//! ```

use std::collections::hash_map::{DefaultHasher, Entry as MapEntry};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

mod key;
pub mod model;
mod search;
pub mod shardmaster;

use key::KeyHistory;
use search::{show_bytes, Search, SearchEnd};

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    Get { key: Vec<u8> },
    Put { key: Vec<u8>, value: Vec<u8> },
    Append { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

impl Input {
    /// The key the operation touches.
    pub fn key(&self) -> &[u8] {
        match self {
            Input::Get { key }
            | Input::Put { key, .. }
            | Input::Append { key, .. }
            | Input::Delete { key } => key,
        }
    }

    fn is_get(&self) -> bool {
        matches!(self, Input::Get { .. })
    }
}

/// What a client was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// The answer to a Get: the value, or `None` for a missing key.
    Value(Option<Vec<u8>>),
    /// The answer to a Put, Append or Delete.
    Ok,
}

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome<O = Output> {
    /// The client got `output` at `time`.
    Returned { time: u64, output: O },
    /// Unknown: it may take effect at any time after its invoke, or never (return time is
    /// +infinity).
    Indeterminate,
}

/// One client operation: a kv operation by default, or any model's input and output
/// (see [`model`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I = Input, O = Output> {
    pub client: u64,
    pub input: I,
    /// Time the client sent it.
    pub invoke: u64,
    pub outcome: Outcome<O>,
}

/// Inputs that know which outputs they can have, so that misuse is caught when it is
/// recorded (a Get completed with [`Output::Ok`], say).
pub trait Shaped<O> {
    /// True if an operation of this input may answer `output`.
    fn fits(&self, output: &O) -> bool;
}

impl Shaped<Output> for Input {
    fn fits(&self, output: &Output) -> bool {
        self.is_get() == matches!(output, Output::Value(_))
    }
}

impl<I: Shaped<O> + fmt::Debug, O: fmt::Debug> Operation<I, O> {
    /// Asserts the caller-supplied invariants: the output kind matches the input kind and
    /// the return is not before the invoke.
    fn validate(&self, index: usize) {
        let Outcome::Returned { time, output } = &self.outcome else {
            return;
        };
        assert!(
            *time >= self.invoke,
            "operation #{index} returns at {time}, before its invoke at {}",
            self.invoke
        );
        assert!(
            self.input.fits(output),
            "operation #{index}: {:?} cannot have output {output:?}",
            self.input
        );
    }
}

/// A recorder of client operations, shareable across threads: clones share one history.
#[derive(Debug)]
pub struct History<I = Input, O = Output> {
    operations: Arc<Mutex<Vec<Operation<I, O>>>>,
}

impl<I, O> Clone for History<I, O> {
    fn clone(&self) -> Self {
        History {
            operations: Arc::clone(&self.operations),
        }
    }
}

impl<I, O> Default for History<I, O> {
    fn default() -> Self {
        History {
            operations: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

/// An invoked operation that has not completed yet; give it back to [`History::complete`].
/// Dropping it (or passing it to [`History::give_up`]) leaves the operation indeterminate.
#[derive(Debug)]
#[must_use = "complete the operation, or give_up on it explicitly"]
pub struct Invocation {
    index: usize,
}

impl<I: Shaped<O> + Clone + fmt::Debug, O: Clone + fmt::Debug> History<I, O> {
    pub fn new() -> History<I, O> {
        History::default()
    }

    /// Records that `client` sent `input` at `time`; the operation is indeterminate until
    /// completed.
    pub fn invoke(&self, client: u64, input: I, time: u64) -> Invocation {
        let mut operations = self.lock();
        operations.push(Operation {
            client,
            input,
            invoke: time,
            outcome: Outcome::Indeterminate,
        });
        Invocation {
            index: operations.len() - 1,
        }
    }

    /// Records that the invoked operation returned `output` at `time`.
    pub fn complete(&self, invocation: Invocation, output: O, time: u64) {
        let mut operations = self.lock();
        let operation = &mut operations[invocation.index];
        operation.outcome = Outcome::Returned { time, output };
        operation.validate(invocation.index);
    }

    /// Records that the client stopped waiting: the operation stays indeterminate.
    pub fn give_up(&self, invocation: Invocation) {
        let _ = invocation;
    }

    /// Records a whole operation at once (e.g. rebuilt from a log after the fact).
    pub fn record(&self, operation: Operation<I, O>) {
        let mut operations = self.lock();
        operation.validate(operations.len());
        operations.push(operation);
    }

    /// A snapshot of the operations, in recording order.
    pub fn operations(&self) -> Vec<Operation<I, O>> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Operation<I, O>>> {
        // Every update is a single push or assignment, so a panic elsewhere while the lock
        // was held cannot have left the vector half-updated.
        self.operations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bound on checker work, in search steps (one step examines one call or return event).
/// Deterministic, unlike a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub steps_max: u64,
}

impl Budget {
    /// Far more than histories of tens of thousands of operations over tens of keys need
    /// (those take tens of thousands of steps); at most several seconds of search in a
    /// release build.
    pub const DEFAULT: Budget = Budget {
        steps_max: 10_000_000,
    };

    pub fn steps(steps_max: u64) -> Budget {
        Budget { steps_max }
    }
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Some sequential order explains every answer.
    Ok,
    /// The operations on `key` have no linearization; `explanation` says where it breaks.
    Violation { key: Vec<u8>, explanation: String },
    /// The budget ran out while checking `key`; treat as a failure.
    BudgetExhausted { key: Vec<u8> },
}

impl CheckResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, CheckResult::Ok)
    }
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckResult::Ok => write!(f, "history is linearizable"),
            CheckResult::Violation { explanation, .. } => {
                write!(f, "history is not linearizable: {explanation}")
            }
            CheckResult::BudgetExhausted { key } => write!(
                f,
                "linearizability checker budget exhausted on key {}",
                show_bytes(key)
            ),
        }
    }
}

/// Checks a recorded history (a snapshot of it: operations still in flight count as
/// indeterminate).
pub fn check(history: &History, budget: Budget) -> CheckResult {
    check_operations(&history.operations(), budget)
}

/// Checks a list of operations. Keys are checked in byte order; the first failing key is
/// reported. The budget is shared by all keys.
pub fn check_operations(operations: &[Operation], budget: Budget) -> CheckResult {
    let mut steps_left = budget.steps_max;
    check_counting(operations, &mut steps_left)
}

fn check_counting(operations: &[Operation], steps_left: &mut u64) -> CheckResult {
    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, operation) in operations.iter().enumerate() {
        operation.validate(index);
        by_key.entry(operation.input.key()).or_default().push(index);
    }
    for (key, indices) in by_key {
        let result = check_key(key, operations, &indices, steps_left);
        if !result.is_ok() {
            return result;
        }
    }
    CheckResult::Ok
}

fn check_key(
    key: &[u8],
    operations: &[Operation],
    indices: &[usize],
    steps_left: &mut u64,
) -> CheckResult {
    let mut search = Search::new(KeyHistory::new(operations, indices));
    match search.run(steps_left) {
        SearchEnd::Linearizable => CheckResult::Ok,
        SearchEnd::Exhausted => CheckResult::BudgetExhausted { key: key.to_vec() },
        SearchEnd::Stuck => CheckResult::Violation {
            key: key.to_vec(),
            explanation: search.explain(key),
        },
    }
}

#[cfg(test)]
mod tests;
