//! One key's history prepared for the search: its operations ordered, their effects with
//! the bytes interned, and the register values they build (see the parent module).

use super::search::{KindQueue, MixHasher};
use super::*;
/// Id of an interned byte string (a Put value, an Append suffix or a Get output).
pub(super) type PieceId = u32;
/// Id of a register value: 0 is "missing key", others index `Values::nodes`.
pub(super) type ValueId = u32;
pub(super) const ABSENT: ValueId = 0;

/// How one operation acts on the register, with its bytes interned.
pub(super) enum Effect {
    Read { expect: Option<PieceId> },
    Put { value: ValueId },
    Append { suffix: PieceId },
    Delete,
}

/// One key's operations that can matter, ordered for the search: completed ones by invoke
/// time, then indeterminate ones (so the leading words of a linearized set fill up with
/// ones, which `OpSet` stores compactly).
pub(super) struct KeyHistory<'a> {
    /// Index of each local operation in the caller's history (for messages).
    pub(super) indices: Vec<usize>,
    pub(super) operations: Vec<&'a Operation>,
    pub(super) effects: Vec<Effect>,
    /// Operations `0..completed` returned; the rest are indeterminate.
    pub(super) completed: usize,
    pub(super) values: Values,
}

impl<'a> KeyHistory<'a> {
    pub(super) fn new(all: &'a [Operation], indices: &[usize]) -> KeyHistory<'a> {
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

    pub(super) fn len(&self) -> usize {
        self.operations.len()
    }

    pub(super) fn return_time(&self, op: usize) -> Option<u64> {
        match self.operations[op].outcome {
            Outcome::Returned { time, .. } => Some(time),
            Outcome::Indeterminate => None,
        }
    }

    pub(super) fn is_read(&self, op: usize) -> bool {
        matches!(self.effects[op], Effect::Read { .. })
    }

    /// The register value after operation `op` runs on `value`, or `None` if `op` is a Get
    /// that would have returned something else.
    pub(super) fn apply(&mut self, value: ValueId, op: usize) -> Option<ValueId> {
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
pub(super) fn may_matter(operation: &Operation, reads: &MaximalReads) -> bool {
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
pub(super) struct MaximalReads<'a> {
    pub(super) outputs: Vec<&'a [u8]>,
}

impl<'a> MaximalReads<'a> {
    pub(super) fn new(operations: impl Iterator<Item = &'a Operation>) -> MaximalReads<'a> {
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

    pub(super) fn any_starts_with(&self, bytes: &[u8]) -> bool {
        self.outputs.iter().any(|output| output.starts_with(bytes))
    }

    pub(super) fn any_contains(&self, bytes: &[u8]) -> bool {
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
pub(super) enum Node {
    Absent,
    Whole(PieceId),
    Appended { base: ValueId, suffix: PieceId },
}

/// Interned strings and register values. Two values with the same shape get the same id;
/// two ids may still hold equal bytes (e.g. "a"+"b" and "ab"), which only costs the memo
/// some sharing. Gets are checked against the actual bytes, so verdicts are exact.
pub(super) struct Values {
    pub(super) pieces: Vec<Rc<[u8]>>,
    pub(super) piece_ids: HashMap<Rc<[u8]>, PieceId, BuildHasherDefault<DefaultHasher>>,
    pub(super) nodes: Vec<Node>,
    /// Length in bytes of each value.
    pub(super) lens: Vec<usize>,
    pub(super) wholes: HashMap<PieceId, ValueId, BuildHasherDefault<MixHasher>>,
    pub(super) appended: HashMap<(ValueId, PieceId), ValueId, BuildHasherDefault<MixHasher>>,
    /// Whether a value's bytes are a prefix of a string, for every (value, string) pair
    /// compared so far, including the values each chain was walked through.
    pub(super) prefix_of: HashMap<(ValueId, PieceId), bool, BuildHasherDefault<MixHasher>>,
    pub(super) walked: Vec<ValueId>,
}

impl Values {
    pub(super) fn new() -> Values {
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

    pub(super) fn effect(&mut self, operation: &Operation) -> Effect {
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

    pub(super) fn piece(&mut self, bytes: &[u8]) -> PieceId {
        if let Some(&id) = self.piece_ids.get(bytes) {
            return id;
        }
        let id = PieceId::try_from(self.pieces.len()).expect("fewer than 2^32 strings");
        let piece: Rc<[u8]> = Rc::from(bytes);
        self.pieces.push(Rc::clone(&piece));
        self.piece_ids.insert(piece, id);
        id
    }

    pub(super) fn push(&mut self, node: Node, len: usize) -> ValueId {
        let id = ValueId::try_from(self.nodes.len()).expect("fewer than 2^32 values");
        self.nodes.push(node);
        self.lens.push(len);
        id
    }

    pub(super) fn whole(&mut self, piece: PieceId) -> ValueId {
        if let Some(&id) = self.wholes.get(&piece) {
            return id;
        }
        let id = self.push(Node::Whole(piece), self.pieces[piece as usize].len());
        self.wholes.insert(piece, id);
        id
    }

    pub(super) fn append(&mut self, base: ValueId, suffix: PieceId) -> ValueId {
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
    pub(super) fn holds(&mut self, value: ValueId, expect: Option<PieceId>) -> bool {
        match expect {
            None => value == ABSENT,
            Some(expect) => {
                self.len(value) == Some(self.pieces[expect as usize].len())
                    && self.is_prefix(value, expect)
            }
        }
    }

    pub(super) fn len(&self, value: ValueId) -> Option<usize> {
        (value != ABSENT).then(|| self.lens[value as usize])
    }

    /// Whether present `value`'s bytes are a prefix of string `piece`. Walks the chain from
    /// its end down to a value already compared, and remembers the answer for every value
    /// on the way, so growing a value by one append costs one comparison.
    pub(super) fn is_prefix(&mut self, value: ValueId, piece: PieceId) -> bool {
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
    pub(super) fn content(&self, value: ValueId) -> Option<Vec<u8>> {
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
pub(super) struct Reach {
    /// For each Get (by op), the ranges of `prefix_writers` holding the Puts, then the
    /// Appends, that write a prefix of its output and were invoked before it returned.
    pub(super) prefix_puts_of: Vec<(u32, u32)>,
    pub(super) prefix_appends_of: Vec<(u32, u32)>,
    pub(super) prefix_writers: Vec<u32>,
    pub(super) appends: KindQueue,
    pub(super) deletes: KindQueue,
}

impl Reach {
    pub(super) fn new(history: &KeyHistory) -> Reach {
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

    pub(super) fn prefix_puts(&self, op: usize) -> &[u32] {
        let (start, end) = self.prefix_puts_of[op];
        &self.prefix_writers[start as usize..end as usize]
    }

    pub(super) fn prefix_appends(&self, op: usize) -> &[u32] {
        let (start, end) = self.prefix_appends_of[op];
        &self.prefix_writers[start as usize..end as usize]
    }
}

/// The writes of one kind grouped by the string they write, for finding those that write a
/// prefix of a given string with one lookup per distinct length.
pub(super) struct WritesByValue {
    pub(super) by_piece: HashMap<PieceId, Vec<u32>, BuildHasherDefault<MixHasher>>,
    pub(super) lens: Vec<usize>,
}

impl WritesByValue {
    pub(super) fn new(
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

    pub(super) fn extend_prefix_writers(
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
