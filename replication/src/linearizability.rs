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

pub mod model;
pub mod shardmaster;

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

/// Id of an interned byte string (a Put value, an Append suffix or a Get output).
type PieceId = u32;
/// Id of a register value: 0 is "missing key", others index `Values::nodes`.
type ValueId = u32;
const ABSENT: ValueId = 0;

/// How one operation acts on the register, with its bytes interned.
enum Effect {
    Read { expect: Option<PieceId> },
    Put { value: ValueId },
    Append { suffix: PieceId },
    Delete,
}

/// One key's operations that can matter, ordered for the search: completed ones by invoke
/// time, then indeterminate ones (so the leading words of a linearized set fill up with
/// ones, which `OpSet` stores compactly).
struct KeyHistory<'a> {
    /// Index of each local operation in the caller's history (for messages).
    indices: Vec<usize>,
    operations: Vec<&'a Operation>,
    effects: Vec<Effect>,
    /// Operations `0..completed` returned; the rest are indeterminate.
    completed: usize,
    values: Values,
}

impl<'a> KeyHistory<'a> {
    fn new(all: &'a [Operation], indices: &[usize]) -> KeyHistory<'a> {
        let reads = MaximalReads::new(indices.iter().map(|&index| &all[index]));
        let (mut completed, mut indeterminate): (Vec<usize>, Vec<usize>) = indices
            .iter()
            .copied()
            .filter(|&index| may_matter(&all[index], &reads))
            .partition(|&index| matches!(all[index].outcome, Outcome::Returned { .. }));
        completed.sort_by_key(|&index| (all[index].invoke, index));
        indeterminate.sort_by_key(|&index| (all[index].invoke, index));
        let mut history = KeyHistory {
            indices: Vec::new(),
            operations: Vec::new(),
            effects: Vec::new(),
            completed: completed.len(),
            values: Values::new(),
        };
        for index in completed.into_iter().chain(indeterminate) {
            let operation = &all[index];
            let effect = history.values.effect(operation);
            history.indices.push(index);
            history.operations.push(operation);
            history.effects.push(effect);
        }
        history
    }

    fn len(&self) -> usize {
        self.operations.len()
    }

    fn return_time(&self, op: usize) -> Option<u64> {
        match self.operations[op].outcome {
            Outcome::Returned { time, .. } => Some(time),
            Outcome::Indeterminate => None,
        }
    }

    fn is_read(&self, op: usize) -> bool {
        matches!(self.effects[op], Effect::Read { .. })
    }

    /// The register value after operation `op` runs on `value`, or `None` if `op` is a Get
    /// that would have returned something else.
    fn apply(&mut self, value: ValueId, op: usize) -> Option<ValueId> {
        match self.effects[op] {
            Effect::Read { expect } => self.values.holds(value, expect).then_some(value),
            Effect::Put { value } => Some(value),
            Effect::Append { suffix } => Some(self.values.append(value, suffix)),
            Effect::Delete => Some(ABSENT),
        }
    }
}

/// Whether an operation can affect the verdict. An indeterminate Get cannot. Neither can an
/// indeterminate Put whose value starts no Get output, nor an indeterminate Append whose
/// suffix occurs in no Get output: from such a write until the next Put or Delete every
/// value starts with (Put) or contains (Append) its bytes, so no Get can sit in that window,
/// and leaving the write out changes only values in that window. Dropping these is what
/// keeps clients that time out again and again from multiplying the search space.
fn may_matter(operation: &Operation, reads: &MaximalReads) -> bool {
    if matches!(operation.outcome, Outcome::Returned { .. }) {
        return true;
    }
    match &operation.input {
        Input::Get { .. } => false,
        Input::Put { value, .. } => reads.any_starts_with(value),
        Input::Append { value, .. } => reads.any_contains(value),
        Input::Delete { .. } => true,
    }
}

/// The present-value outputs of a key's completed Gets that are not a prefix of another:
/// every prefix or substring of any output is one of some maximal output.
struct MaximalReads<'a> {
    outputs: Vec<&'a [u8]>,
}

impl<'a> MaximalReads<'a> {
    fn new(operations: impl Iterator<Item = &'a Operation>) -> MaximalReads<'a> {
        let mut outputs: Vec<&[u8]> = operations
            .filter_map(|operation| match &operation.outcome {
                Outcome::Returned {
                    output: Output::Value(Some(value)),
                    ..
                } => Some(&value[..]),
                _ => None,
            })
            .collect();
        outputs.sort_unstable();
        outputs.dedup();
        // In sorted order the strings extending `s` directly follow `s`.
        let maximal = (0..outputs.len())
            .filter(|&i| i + 1 == outputs.len() || !outputs[i + 1].starts_with(outputs[i]))
            .map(|i| outputs[i])
            .collect();
        MaximalReads { outputs: maximal }
    }

    fn any_starts_with(&self, bytes: &[u8]) -> bool {
        self.outputs.iter().any(|output| output.starts_with(bytes))
    }

    fn any_contains(&self, bytes: &[u8]) -> bool {
        bytes.is_empty()
            || self
                .outputs
                .iter()
                .any(|output| output.windows(bytes.len()).any(|window| window == bytes))
    }
}

/// The shape of a register value: missing, a whole interned string (set by a Put, or an
/// Append to a missing key), or an earlier value with a suffix appended. Appends build a
/// chain instead of copying the value, so each costs O(1) however long the value grows.
enum Node {
    Absent,
    Whole(PieceId),
    Appended { base: ValueId, suffix: PieceId },
}

/// Interned strings and register values. Two values with the same shape get the same id;
/// two ids may still hold equal bytes (e.g. "a"+"b" and "ab"), which only costs the memo
/// some sharing. Gets are checked against the actual bytes, so verdicts are exact.
struct Values {
    pieces: Vec<Rc<[u8]>>,
    piece_ids: HashMap<Rc<[u8]>, PieceId, BuildHasherDefault<DefaultHasher>>,
    nodes: Vec<Node>,
    /// Length in bytes of each value.
    lens: Vec<usize>,
    wholes: HashMap<PieceId, ValueId, BuildHasherDefault<MixHasher>>,
    appended: HashMap<(ValueId, PieceId), ValueId, BuildHasherDefault<MixHasher>>,
    /// Whether a value's bytes are a prefix of a string, for every (value, string) pair
    /// compared so far, including the values each chain was walked through.
    prefix_of: HashMap<(ValueId, PieceId), bool, BuildHasherDefault<MixHasher>>,
    walked: Vec<ValueId>,
}

impl Values {
    fn new() -> Values {
        Values {
            pieces: Vec::new(),
            piece_ids: HashMap::default(),
            nodes: vec![Node::Absent],
            lens: vec![0],
            wholes: HashMap::default(),
            appended: HashMap::default(),
            prefix_of: HashMap::default(),
            walked: Vec::new(),
        }
    }

    fn effect(&mut self, operation: &Operation) -> Effect {
        match (&operation.input, &operation.outcome) {
            (Input::Get { .. }, Outcome::Returned { output, .. }) => {
                let Output::Value(value) = output else {
                    unreachable!("validated: a Get returns a value");
                };
                Effect::Read {
                    expect: value.as_deref().map(|bytes| self.piece(bytes)),
                }
            }
            (Input::Get { .. }, Outcome::Indeterminate) => {
                unreachable!("indeterminate Gets are dropped")
            }
            (Input::Put { value, .. }, _) => {
                let piece = self.piece(value);
                Effect::Put {
                    value: self.whole(piece),
                }
            }
            (Input::Append { value, .. }, _) => Effect::Append {
                suffix: self.piece(value),
            },
            (Input::Delete { .. }, _) => Effect::Delete,
        }
    }

    fn piece(&mut self, bytes: &[u8]) -> PieceId {
        if let Some(&id) = self.piece_ids.get(bytes) {
            return id;
        }
        let id = PieceId::try_from(self.pieces.len()).expect("fewer than 2^32 strings");
        let piece: Rc<[u8]> = Rc::from(bytes);
        self.pieces.push(Rc::clone(&piece));
        self.piece_ids.insert(piece, id);
        id
    }

    fn push(&mut self, node: Node, len: usize) -> ValueId {
        let id = ValueId::try_from(self.nodes.len()).expect("fewer than 2^32 values");
        self.nodes.push(node);
        self.lens.push(len);
        id
    }

    fn whole(&mut self, piece: PieceId) -> ValueId {
        if let Some(&id) = self.wholes.get(&piece) {
            return id;
        }
        let id = self.push(Node::Whole(piece), self.pieces[piece as usize].len());
        self.wholes.insert(piece, id);
        id
    }

    fn append(&mut self, base: ValueId, suffix: PieceId) -> ValueId {
        if base == ABSENT {
            return self.whole(suffix);
        }
        let suffix_len = self.pieces[suffix as usize].len();
        if suffix_len == 0 {
            return base;
        }
        if let Some(&id) = self.appended.get(&(base, suffix)) {
            return id;
        }
        let node = Node::Appended { base, suffix };
        let id = self.push(node, self.lens[base as usize] + suffix_len);
        self.appended.insert((base, suffix), id);
        id
    }

    /// Whether a Get that returned `expect` can have read `value`.
    fn holds(&mut self, value: ValueId, expect: Option<PieceId>) -> bool {
        match expect {
            None => value == ABSENT,
            Some(expect) => {
                self.len(value) == Some(self.pieces[expect as usize].len())
                    && self.is_prefix(value, expect)
            }
        }
    }

    fn len(&self, value: ValueId) -> Option<usize> {
        (value != ABSENT).then(|| self.lens[value as usize])
    }

    /// Whether present `value`'s bytes are a prefix of string `piece`. Walks the chain from
    /// its end down to a value already compared, and remembers the answer for every value
    /// on the way, so growing a value by one append costs one comparison.
    fn is_prefix(&mut self, value: ValueId, piece: PieceId) -> bool {
        let bytes = Rc::clone(&self.pieces[piece as usize]);
        self.walked.clear();
        let mut at = value;
        let answer = loop {
            let end = self.lens[at as usize];
            if end > bytes.len() {
                break false;
            }
            if let Some(&known) = self.prefix_of.get(&(at, piece)) {
                break known;
            }
            self.walked.push(at);
            match self.nodes[at as usize] {
                Node::Absent => unreachable!("only present values are compared"),
                Node::Whole(whole) => break bytes.starts_with(&self.pieces[whole as usize]),
                Node::Appended { base, suffix } => {
                    let suffix = &self.pieces[suffix as usize];
                    if **suffix != bytes[end - suffix.len()..end] {
                        break false;
                    }
                    at = base;
                }
            }
        };
        for &walked in &self.walked {
            self.prefix_of.insert((walked, piece), answer);
        }
        answer
    }

    /// The bytes of a value, for messages.
    fn content(&self, value: ValueId) -> Option<Vec<u8>> {
        let mut reversed: Vec<&[u8]> = Vec::new();
        let mut at = value;
        loop {
            match self.nodes[at as usize] {
                Node::Absent => return None,
                Node::Whole(piece) => {
                    reversed.push(&self.pieces[piece as usize]);
                    break;
                }
                Node::Appended { base, suffix } => {
                    reversed.push(&self.pieces[suffix as usize]);
                    at = base;
                }
            }
        }
        Some(reversed.into_iter().rev().flatten().copied().collect())
    }
}

/// What a Get still needs in order to read what it returned, given the current value: it
/// must be that value already, or be made from it by writes not placed yet and invoked
/// before the Get returned (any later write is after the Get in real time). The last such
/// Put or Delete before the Get, if any, sets the base, and Appends extend it:
/// - to read "missing", an unplaced Delete;
/// - to read bytes, an unplaced Put of a prefix of them; or an unplaced Append of a prefix of
///   them with "missing" as the base (now, or after an unplaced Delete); or an unplaced
///   Append with the current value as the base, if it is a proper prefix of them.
///
/// A configuration where some unplaced Get fails this is dead: catching it as soon as the
/// Get is near, rather than when it returns, saves exploring every order of the writes in
/// between.
struct Reach {
    /// For each Get (by op), the ranges of `prefix_writers` holding the Puts, then the
    /// Appends, that write a prefix of its output and were invoked before it returned.
    prefix_puts_of: Vec<(u32, u32)>,
    prefix_appends_of: Vec<(u32, u32)>,
    prefix_writers: Vec<u32>,
    appends: KindQueue,
    deletes: KindQueue,
}

impl Reach {
    fn new(history: &KeyHistory) -> Reach {
        let puts = WritesByValue::new(history, |effect, values| match *effect {
            Effect::Put { value } => match values.nodes[value as usize] {
                Node::Whole(piece) => Some(piece),
                _ => unreachable!("a Put value is whole"),
            },
            _ => None,
        });
        let appends = WritesByValue::new(history, |effect, _| match *effect {
            Effect::Append { suffix } => Some(suffix),
            _ => None,
        });
        let mut reach = Reach {
            prefix_puts_of: vec![(0, 0); history.len()],
            prefix_appends_of: vec![(0, 0); history.len()],
            prefix_writers: Vec::new(),
            appends: KindQueue::new(history, |effect| matches!(effect, Effect::Append { .. })),
            deletes: KindQueue::new(history, |effect| matches!(effect, Effect::Delete)),
        };
        for op in 0..history.len() {
            let Effect::Read {
                expect: Some(expect),
            } = history.effects[op]
            else {
                continue;
            };
            let deadline = history.return_time(op).expect("Gets kept are completed");
            let bytes = &history.values.pieces[expect as usize];
            let start = reach.prefix_writers.len() as u32;
            puts.extend_prefix_writers(history, bytes, deadline, &mut reach.prefix_writers);
            let middle = reach.prefix_writers.len() as u32;
            appends.extend_prefix_writers(history, bytes, deadline, &mut reach.prefix_writers);
            reach.prefix_puts_of[op] = (start, middle);
            reach.prefix_appends_of[op] = (middle, reach.prefix_writers.len() as u32);
        }
        reach
    }

    fn prefix_puts(&self, op: usize) -> &[u32] {
        let (start, end) = self.prefix_puts_of[op];
        &self.prefix_writers[start as usize..end as usize]
    }

    fn prefix_appends(&self, op: usize) -> &[u32] {
        let (start, end) = self.prefix_appends_of[op];
        &self.prefix_writers[start as usize..end as usize]
    }
}

/// The writes of one kind grouped by the string they write, for finding those that write a
/// prefix of a given string with one lookup per distinct length.
struct WritesByValue {
    by_piece: HashMap<PieceId, Vec<u32>, BuildHasherDefault<MixHasher>>,
    lens: Vec<usize>,
}

impl WritesByValue {
    fn new(
        history: &KeyHistory,
        written: impl Fn(&Effect, &Values) -> Option<PieceId>,
    ) -> WritesByValue {
        let mut by_piece: HashMap<PieceId, Vec<u32>, BuildHasherDefault<MixHasher>> =
            HashMap::default();
        let mut lens = Vec::new();
        for (op, effect) in history.effects.iter().enumerate() {
            if let Some(piece) = written(effect, &history.values) {
                by_piece.entry(piece).or_default().push(op as u32);
                lens.push(history.values.pieces[piece as usize].len());
            }
        }
        lens.sort_unstable();
        lens.dedup();
        WritesByValue { by_piece, lens }
    }

    fn extend_prefix_writers(
        &self,
        history: &KeyHistory,
        bytes: &[u8],
        deadline: u64,
        out: &mut Vec<u32>,
    ) {
        for &len in self.lens.iter().take_while(|&&len| len <= bytes.len()) {
            let Some(piece) = history.values.piece_ids.get(&bytes[..len]) else {
                continue;
            };
            let writes = self
                .by_piece
                .get(piece)
                .map_or(&[][..], |writes| &writes[..]);
            let invoked_in_time =
                |&&write: &&u32| history.operations[write as usize].invoke <= deadline;
            out.extend(writes.iter().filter(invoked_in_time));
        }
    }
}

/// The operations of one kind in invoke order, with a cursor at the earliest one not
/// linearized (moved forward lazily, back when an operation is unplaced).
struct KindQueue {
    ops: Vec<u32>,
    /// Position of each op in `ops`, NIL for ops of other kinds.
    position: Vec<u32>,
    front: usize,
}

impl KindQueue {
    fn new(history: &KeyHistory, is_kind: impl Fn(&Effect) -> bool) -> KindQueue {
        let mut ops: Vec<u32> = (0..history.len() as u32)
            .filter(|&op| is_kind(&history.effects[op as usize]))
            .collect();
        ops.sort_by_key(|&op| (history.operations[op as usize].invoke, op));
        let mut position = vec![NIL; history.len()];
        for (at, &op) in (0..).zip(&ops) {
            position[op as usize] = at;
        }
        KindQueue {
            ops,
            position,
            front: 0,
        }
    }

    /// Whether some op of this kind is not linearized and was invoked by `deadline`.
    fn any_unplaced_by(&mut self, linearized: &OpSet, history: &KeyHistory, deadline: u64) -> bool {
        while self.front < self.ops.len() && linearized.contains(self.ops[self.front] as usize) {
            self.front += 1;
        }
        self.ops
            .get(self.front)
            .is_some_and(|&op| history.operations[op as usize].invoke <= deadline)
    }

    fn unplaced(&mut self, op: usize) {
        let at = self.position[op];
        if at != NIL {
            self.front = self.front.min(at as usize);
        }
    }
}

const NIL: u32 = u32::MAX;
/// Sentinel entry at the front of the event list.
const HEAD: u32 = 0;

/// The call and return events of one key's operations as a doubly linked list in time order,
/// from which linearized operations are lifted out and put back (dancing links, in LIFO
/// order).
struct Events {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Operation of each entry (unused for HEAD).
    op: Vec<u32>,
    is_return: Vec<bool>,
    /// Return entry of each operation, NIL for indeterminate ones: they never force a
    /// backtrack, and leaving them out lets the search stop once every completed operation
    /// is placed (indeterminate ones can always go last, which is the same as never).
    return_of: Vec<u32>,
}

impl Events {
    fn new(history: &KeyHistory) -> Events {
        // (time, call before return, op): touching intervals count as concurrent.
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * history.len());
        for (op, operation) in history.operations.iter().enumerate() {
            let op32 = u32::try_from(op).expect("fewer than 2^32 operations per key");
            events.push((operation.invoke, false, op32));
            if let Some(time) = history.return_time(op) {
                events.push((time, true, op32));
            }
        }
        events.sort_unstable();
        let count = u32::try_from(events.len() + 1).expect("fewer than 2^32 events");
        let mut list = Events {
            next: (1..=count)
                .map(|e| if e == count { NIL } else { e })
                .collect(),
            prev: (0..count).map(|e| e.wrapping_sub(1)).collect(),
            op: vec![NIL],
            is_return: vec![false],
            return_of: vec![NIL; history.len()],
        };
        for (entry, &(_, is_return, op)) in (1..).zip(&events) {
            list.op.push(op);
            list.is_return.push(is_return);
            if is_return {
                list.return_of[op as usize] = entry;
            }
        }
        list
    }

    fn first(&self) -> u32 {
        self.next[HEAD as usize]
    }

    fn remove(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = next;
        if next != NIL {
            self.prev[next as usize] = prev;
        }
    }

    fn restore(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = entry;
        if next != NIL {
            self.prev[next as usize] = entry;
        }
    }

    /// Takes a call entry and its return entry out of the list.
    fn lift(&mut self, call: u32) {
        self.remove(call);
        let ret = self.return_of[self.op[call as usize] as usize];
        if ret != NIL {
            self.remove(ret);
        }
    }

    /// Undoes the matching `lift`.
    fn unlift(&mut self, call: u32) {
        let ret = self.return_of[self.op[call as usize] as usize];
        if ret != NIL {
            self.restore(ret);
        }
        self.restore(call);
    }
}

/// The set of linearized operations: a bitset over completed ops (ordered by invoke, so its
/// leading words fill up with ones as the search advances), one over indeterminate ops, and
/// an incrementally kept Zobrist hash of both.
struct OpSet {
    completed: usize,
    done: Vec<u64>,
    maybe: Vec<u64>,
    /// `done[..full]` are all ones and `done[full]` is not.
    full: usize,
    /// `done[used..]` are all zero and `done[used - 1]` is not.
    used: usize,
    hash: u64,
}

impl OpSet {
    fn new(completed: usize, len: usize) -> OpSet {
        OpSet {
            completed,
            done: vec![0; completed.div_ceil(64)],
            maybe: vec![0; (len - completed).div_ceil(64)],
            full: 0,
            used: 0,
            hash: 0,
        }
    }

    fn toggle(&mut self, op: usize) {
        self.hash ^= splitmix64(op as u64);
        if op >= self.completed {
            let bit = op - self.completed;
            self.maybe[bit / 64] ^= 1 << (bit % 64);
            return;
        }
        let word = op / 64;
        self.done[word] ^= 1 << (op % 64);
        if self.done[word] & (1 << (op % 64)) != 0 {
            self.used = self.used.max(word + 1);
            while self.full < self.done.len() && self.done[self.full] == u64::MAX {
                self.full += 1;
            }
        } else {
            self.full = self.full.min(word);
            while self.used > 0 && self.done[self.used - 1] == 0 {
                self.used -= 1;
            }
        }
    }

    fn contains(&self, op: usize) -> bool {
        if op >= self.completed {
            let bit = op - self.completed;
            return self.maybe[bit / 64] & (1 << (bit % 64)) != 0;
        }
        self.done[op / 64] & (1 << (op % 64)) != 0
    }

    /// An encoding equal for two sets iff the sets are equal: the count of full leading
    /// words, then the words up to the last nonzero one, then the indeterminate words.
    fn encode(&self, out: &mut Vec<u64>) {
        out.clear();
        out.push(self.full as u64);
        out.extend_from_slice(&self.done[self.full..self.used.max(self.full)]);
        out.extend_from_slice(&self.maybe);
    }
}

/// Lowe's memo: (set of linearized ops, register value) pairs already reached, each of which
/// led nowhere (reaching a linearization ends the search). Keyed by (set hash, value) with
/// the full set stored and compared, so a hash collision only costs time.
struct Memo {
    first: HashMap<(u64, ValueId), u32, BuildHasherDefault<MixHasher>>,
    /// Encoded sets, back to back; slot `i` is `sets[starts[i]..starts[i + 1]]`.
    sets: Vec<u64>,
    starts: Vec<usize>,
    /// Next slot with the same key, NIL at the end of a chain.
    chain: Vec<u32>,
    scratch: Vec<u64>,
}

impl Memo {
    fn new() -> Memo {
        Memo {
            first: HashMap::default(),
            sets: Vec::new(),
            starts: vec![0],
            chain: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Adds the pair; returns false if it was already there.
    fn insert(&mut self, set: &OpSet, value: ValueId) -> bool {
        set.encode(&mut self.scratch);
        let slot = u32::try_from(self.chain.len()).expect("fewer than 2^32 memo entries");
        let chain_next = match self.first.entry((set.hash, value)) {
            MapEntry::Vacant(vacant) => {
                vacant.insert(slot);
                NIL
            }
            MapEntry::Occupied(mut occupied) => {
                let mut at = *occupied.get();
                while at != NIL {
                    let stored = &self.sets[self.starts[at as usize]..self.starts[at as usize + 1]];
                    if stored == self.scratch {
                        return false;
                    }
                    at = self.chain[at as usize];
                }
                occupied.insert(slot)
            }
        };
        self.chain.push(chain_next);
        self.sets.extend_from_slice(&self.scratch);
        self.starts.push(self.sets.len());
        true
    }
}

/// The search ran out of budget.
struct Exhausted;

enum SearchEnd {
    Linearizable,
    Stuck,
    Exhausted,
}

/// One linearized operation on the search stack.
#[derive(Clone, Copy)]
struct Placed {
    call: u32,
    /// Register value before it.
    before: ValueId,
    /// A Get placed because it matched: never a choice to revisit. If any linearization
    /// extends the current prefix, one extends it with a matching Get that may come next
    /// (moving a Get earlier changes no value and breaks no real-time order, since nothing
    /// unplaced returned before it was invoked).
    forced: bool,
}

/// The Wing–Gong–Lowe search over one key's history, placing matching Gets eagerly.
struct Search<'a> {
    history: KeyHistory<'a>,
    events: Events,
    reach: Reach,
    memo: Memo,
    linearized: OpSet,
    value: ValueId,
    stack: Vec<Placed>,
    /// Completed operations not linearized yet; the search succeeds when none are left.
    unplaced: usize,
    /// The deepest stack seen (as ops) and the value after it, for explanations.
    best: Vec<u32>,
    best_value: ValueId,
    /// `best` and `stack` agree on this many leading entries, so `best` is updated by
    /// copying only what changed.
    best_shared: usize,
}

impl<'a> Search<'a> {
    fn new(history: KeyHistory<'a>) -> Search<'a> {
        let events = Events::new(&history);
        let reach = Reach::new(&history);
        let linearized = OpSet::new(history.completed, history.len());
        Search {
            unplaced: history.completed,
            history,
            events,
            reach,
            memo: Memo::new(),
            linearized,
            value: ABSENT,
            stack: Vec::new(),
            best: Vec::new(),
            best_value: ABSENT,
            best_shared: 0,
        }
    }

    fn run(&mut self, steps_left: &mut u64) -> SearchEnd {
        match self.search(steps_left) {
            Ok(true) => SearchEnd::Linearizable,
            Ok(false) => SearchEnd::Stuck,
            Err(Exhausted) => SearchEnd::Exhausted,
        }
    }

    /// Depth-first over the writes that may come next; Gets are placed as soon as they match.
    fn search(&mut self, steps_left: &mut u64) -> Result<bool, Exhausted> {
        if !self.place_matching_reads(steps_left)? {
            return Ok(false);
        }
        let mut entry = self.events.first();
        while self.unplaced > 0 {
            spend(steps_left)?;
            // A completed op is unplaced, so its return entry is still ahead of `entry`.
            assert_ne!(entry, NIL, "event list ended before a return entry");
            let op = self.events.op[entry as usize] as usize;
            if self.events.is_return[entry as usize] {
                // `op` had to be linearized by now: revisit the latest choice.
                let Some(call) = self.undo_choice() else {
                    return Ok(false);
                };
                entry = self.events.next[call as usize];
            } else if self.history.is_read(op) {
                // Matching Gets were all placed already, so this one cannot come next.
                entry = self.events.next[entry as usize];
            } else if self.try_write(entry, steps_left)? {
                entry = self.events.first();
            } else {
                entry = self.events.next[entry as usize];
            }
        }
        Ok(true)
    }

    /// Places the write at `entry` and then every Get that matches; keeps them if that
    /// reaches a (set, value) pair not seen before.
    fn try_write(&mut self, entry: u32, steps_left: &mut u64) -> Result<bool, Exhausted> {
        let op = self.events.op[entry as usize] as usize;
        let after = self
            .history
            .apply(self.value, op)
            .expect("a write always applies");
        self.place(entry, after, false);
        // Memoise dead configurations too, so no other path pays to find them dead again.
        let alive = self.place_matching_reads(steps_left)?;
        if self.memo.insert(&self.linearized, self.value) && alive {
            return Ok(true);
        }
        self.undo_choice();
        Ok(false)
    }

    /// Places every Get that may come next and reads the current value; returns false if
    /// some other Get that may come next can no longer read what it returned (see
    /// [`Reach`]).
    fn place_matching_reads(&mut self, steps_left: &mut u64) -> Result<bool, Exhausted> {
        let mut alive = true;
        let mut entry = self.events.first();
        while entry != NIL && !self.events.is_return[entry as usize] {
            spend(steps_left)?;
            let op = self.events.op[entry as usize] as usize;
            if !self.history.is_read(op) {
                entry = self.events.next[entry as usize];
            } else if self.history.apply(self.value, op).is_some() {
                // Continue from the predecessor: lifting may also remove this op's return,
                // which can be the very next entry.
                let prev = self.events.prev[entry as usize];
                self.place(entry, self.value, true);
                entry = self.events.next[prev as usize];
            } else {
                alive = alive && self.reachable(op);
                entry = self.events.next[entry as usize];
            }
        }
        Ok(alive)
    }

    /// The necessary condition of [`Reach`] for Get `op`, which does not read the current
    /// value.
    fn reachable(&mut self, op: usize) -> bool {
        let Effect::Read { expect } = self.history.effects[op] else {
            unreachable!("only Gets are checked");
        };
        let deadline = self
            .history
            .return_time(op)
            .expect("Gets kept are completed");
        let (history, linearized, reach) = (&self.history, &self.linearized, &mut self.reach);
        let Some(expect) = expect else {
            return reach.deletes.any_unplaced_by(linearized, history, deadline);
        };
        let unplaced = |writes: &[u32]| writes.iter().any(|&op| !linearized.contains(op as usize));
        if unplaced(reach.prefix_puts(op)) {
            return true;
        }
        let value = self.value;
        if unplaced(reach.prefix_appends(op))
            && (value == ABSENT || reach.deletes.any_unplaced_by(linearized, history, deadline))
        {
            return true;
        }
        if value == ABSENT || !reach.appends.any_unplaced_by(linearized, history, deadline) {
            return false;
        }
        let values = &mut self.history.values;
        values.len(value) < Some(values.pieces[expect as usize].len())
            && values.is_prefix(value, expect)
    }

    fn place(&mut self, call: u32, after: ValueId, forced: bool) {
        let op = self.events.op[call as usize] as usize;
        self.stack.push(Placed {
            call,
            before: self.value,
            forced,
        });
        self.value = after;
        self.linearized.toggle(op);
        self.events.lift(call);
        if op < self.history.completed {
            self.unplaced -= 1;
        }
        self.note_depth();
    }

    /// Pops the latest choice and the Gets placed after it; returns its call entry, or None
    /// if no choice is left.
    fn undo_choice(&mut self) -> Option<u32> {
        while let Some(placed) = self.stack.pop() {
            let op = self.events.op[placed.call as usize] as usize;
            self.value = placed.before;
            self.linearized.toggle(op);
            self.events.unlift(placed.call);
            self.reach.appends.unplaced(op);
            self.reach.deletes.unplaced(op);
            if op < self.history.completed {
                self.unplaced += 1;
            }
            self.best_shared = self.best_shared.min(self.stack.len());
            if !placed.forced {
                return Some(placed.call);
            }
        }
        None
    }

    fn note_depth(&mut self) {
        if self.stack.len() <= self.best.len() {
            return;
        }
        self.best.truncate(self.best_shared);
        let ops = &self.events.op;
        let changed = self.stack[self.best_shared..].iter();
        self.best
            .extend(changed.map(|placed| ops[placed.call as usize]));
        self.best_shared = self.best.len();
        self.best_value = self.value;
    }

    /// Describes the failure: the longest linearizable prefix found, the value after it, and
    /// the operations none of which can come next.
    fn explain(&mut self, key: &[u8]) -> String {
        const PREFIX_SHOWN_MAX: usize = 5;
        const CANDIDATES_SHOWN_MAX: usize = 8;
        let mut placed = vec![false; self.history.len()];
        for &op in &self.best {
            placed[op as usize] = true;
        }
        let mut text = format!(
            "key {}: {} operations, longest linearizable prefix found has {}",
            show_bytes(key),
            self.history.len(),
            self.best.len()
        );
        let shown_from = self.best.len().saturating_sub(PREFIX_SHOWN_MAX);
        if !self.best.is_empty() {
            text.push_str(if shown_from > 0 { ", ending:" } else { ":" });
        }
        for &op in &self.best[shown_from..] {
            text.push_str(&format!("\n  {}", self.describe(op as usize)));
        }
        let value = self.history.values.content(self.best_value);
        text.push_str(&format!(
            "\nvalue after it: {}",
            show_value(value.as_deref())
        ));
        // The earliest return among unplaced completed ops bounds what could come next.
        let deadline = (0..self.history.completed)
            .filter(|&op| !placed[op])
            .filter_map(|op| self.history.return_time(op).map(|time| (time, op)))
            .min();
        let Some((deadline_time, deadline_op)) = deadline else {
            return text;
        };
        let mut candidates: Vec<usize> = (0..self.history.len())
            .filter(|&op| !placed[op] && self.history.operations[op].invoke <= deadline_time)
            .collect();
        candidates.sort_by_key(|&op| (self.history.operations[op].invoke, op));
        text.push_str(&format!(
            "\nnone of these can come next (#{} must be placed by t={deadline_time}):",
            self.history.indices[deadline_op]
        ));
        for &op in candidates.iter().take(CANDIDATES_SHOWN_MAX) {
            let reason = self.why_not_next(op);
            text.push_str(&format!("\n  {}: {reason}", self.describe(op)));
        }
        if candidates.len() > CANDIDATES_SHOWN_MAX {
            let more = candidates.len() - CANDIDATES_SHOWN_MAX;
            text.push_str(&format!("\n  ... and {more} more"));
        }
        text
    }

    fn why_not_next(&mut self, op: usize) -> String {
        let before = self.best_value;
        if self.history.apply(before, op).is_some() {
            return "it fits, but no linearization continues from there".to_string();
        }
        let Effect::Read { expect } = self.history.effects[op] else {
            unreachable!("only a Get can fail to apply");
        };
        let values = &self.history.values;
        let read = expect.map(|piece| &values.pieces[piece as usize][..]);
        format!(
            "it read {} but the value was {}",
            show_value(read),
            show_value(values.content(before).as_deref())
        )
    }

    fn describe(&self, op: usize) -> String {
        let operation = self.history.operations[op];
        let (action, argument) = match &operation.input {
            Input::Get { .. } => ("get", None),
            Input::Put { value, .. } => ("put", Some(value)),
            Input::Append { value, .. } => ("append", Some(value)),
            Input::Delete { .. } => ("delete", None),
        };
        let argument = argument.map_or(String::new(), |value| format!(" {}", show_bytes(value)));
        let result = match &operation.outcome {
            Outcome::Returned {
                time,
                output: Output::Value(value),
            } => format!(
                "-> {} @[{}, {time}]",
                show_value(value.as_deref()),
                operation.invoke
            ),
            Outcome::Returned { time, .. } => format!("-> ok @[{}, {time}]", operation.invoke),
            Outcome::Indeterminate => format!("-> unknown @[{}, inf)", operation.invoke),
        };
        format!(
            "#{} client {} {action}{argument} {result}",
            self.history.indices[op], operation.client
        )
    }
}

fn spend(steps_left: &mut u64) -> Result<(), Exhausted> {
    *steps_left = steps_left.checked_sub(1).ok_or(Exhausted)?;
    Ok(())
}

fn show_value(value: Option<&[u8]>) -> String {
    value.map_or_else(|| "missing".to_string(), show_bytes)
}

/// Bytes as an escaped string literal, shortened in the middle when long.
fn show_bytes(bytes: &[u8]) -> String {
    const SHOWN_MAX: usize = 48;
    const HEAD_SHOWN: usize = 24;
    const TAIL_SHOWN: usize = 16;
    if bytes.len() <= SHOWN_MAX {
        return format!("\"{}\"", bytes.escape_ascii());
    }
    format!(
        "\"{}\"...({} bytes)...\"{}\"",
        bytes[..HEAD_SHOWN].escape_ascii(),
        bytes.len(),
        bytes[bytes.len() - TAIL_SHOWN..].escape_ascii()
    )
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// One SplitMix64 output for `seed`: a well-mixed 64-bit function of it.
fn splitmix64(seed: u64) -> u64 {
    mix64(seed.wrapping_add(GOLDEN_GAMMA))
}

/// SplitMix64's finalizer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fast unseeded hasher for small integer keys (the memo and append caches); their keys
/// are already well mixed or small, and lookups never depend on iteration order.
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        splitmix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(GOLDEN_GAMMA);
    }
}

#[cfg(test)]
mod tests;
