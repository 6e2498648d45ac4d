//! The search over one key's history: Wing–Gong with Lowe's memoisation and the
//! shortcuts the parent module lists, over the sets and queues it needs.

use super::key::*;
use super::*;
/// The operations of one kind in invoke order, with a cursor at the earliest one not
/// linearized (moved forward lazily, back when an operation is unplaced).
pub(super) struct KindQueue {
    pub(super) ops: Vec<u32>,
    /// Position of each op in `ops`, NIL for ops of other kinds.
    pub(super) position: Vec<u32>,
    pub(super) front: usize,
}

impl KindQueue {
    pub(super) fn new(history: &KeyHistory, is_kind: impl Fn(&Effect) -> bool) -> KindQueue {
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
    pub(super) fn any_unplaced_by(
        &mut self,
        linearized: &OpSet,
        history: &KeyHistory,
        deadline: u64,
    ) -> bool {
        while self.front < self.ops.len() && linearized.contains(self.ops[self.front] as usize) {
            self.front += 1;
        }
        self.ops
            .get(self.front)
            .is_some_and(|&op| history.operations[op as usize].invoke <= deadline)
    }

    pub(super) fn unplaced(&mut self, op: usize) {
        let at = self.position[op];
        if at != NIL {
            self.front = self.front.min(at as usize);
        }
    }
}

pub(super) const NIL: u32 = u32::MAX;
/// Sentinel entry at the front of the event list.
pub(super) const HEAD: u32 = 0;

/// The call and return events of one key's operations as a doubly linked list in time order,
/// from which linearized operations are lifted out and put back (dancing links, in LIFO
/// order).
pub(super) struct Events {
    pub(super) next: Vec<u32>,
    pub(super) prev: Vec<u32>,
    /// Operation of each entry (unused for HEAD).
    pub(super) op: Vec<u32>,
    pub(super) is_return: Vec<bool>,
    /// Return entry of each operation, NIL for indeterminate ones: they never force a
    /// backtrack, and leaving them out lets the search stop once every completed operation
    /// is placed (indeterminate ones can always go last, which is the same as never).
    pub(super) return_of: Vec<u32>,
}

impl Events {
    pub(super) fn new(history: &KeyHistory) -> Events {
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

    pub(super) fn first(&self) -> u32 {
        self.next[HEAD as usize]
    }

    pub(super) fn remove(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = next;
        if next != NIL {
            self.prev[next as usize] = prev;
        }
    }

    pub(super) fn restore(&mut self, entry: u32) {
        let (prev, next) = (self.prev[entry as usize], self.next[entry as usize]);
        self.next[prev as usize] = entry;
        if next != NIL {
            self.prev[next as usize] = entry;
        }
    }

    /// Takes a call entry and its return entry out of the list.
    pub(super) fn lift(&mut self, call: u32) {
        self.remove(call);
        let ret = self.return_of[self.op[call as usize] as usize];
        if ret != NIL {
            self.remove(ret);
        }
    }

    /// Undoes the matching `lift`.
    pub(super) fn unlift(&mut self, call: u32) {
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
pub(super) struct OpSet {
    pub(super) completed: usize,
    pub(super) done: Vec<u64>,
    pub(super) maybe: Vec<u64>,
    /// `done[..full]` are all ones and `done[full]` is not.
    pub(super) full: usize,
    /// `done[used..]` are all zero and `done[used - 1]` is not.
    pub(super) used: usize,
    pub(super) hash: u64,
}

impl OpSet {
    pub(super) fn new(completed: usize, len: usize) -> OpSet {
        OpSet {
            completed,
            done: vec![0; completed.div_ceil(64)],
            maybe: vec![0; (len - completed).div_ceil(64)],
            full: 0,
            used: 0,
            hash: 0,
        }
    }

    pub(super) fn toggle(&mut self, op: usize) {
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

    pub(super) fn contains(&self, op: usize) -> bool {
        if op >= self.completed {
            let bit = op - self.completed;
            return self.maybe[bit / 64] & (1 << (bit % 64)) != 0;
        }
        self.done[op / 64] & (1 << (op % 64)) != 0
    }

    /// An encoding equal for two sets iff the sets are equal: the count of full leading
    /// words, then the words up to the last nonzero one, then the indeterminate words.
    pub(super) fn encode(&self, out: &mut Vec<u64>) {
        out.clear();
        out.push(self.full as u64);
        out.extend_from_slice(&self.done[self.full..self.used.max(self.full)]);
        out.extend_from_slice(&self.maybe);
    }
}

/// Lowe's memo: (set of linearized ops, register value) pairs already reached, each of which
/// led nowhere (reaching a linearization ends the search). Keyed by (set hash, value) with
/// the full set stored and compared, so a hash collision only costs time.
pub(super) struct Memo {
    pub(super) first: HashMap<(u64, ValueId), u32, BuildHasherDefault<MixHasher>>,
    /// Encoded sets, back to back; slot `i` is `sets[starts[i]..starts[i + 1]]`.
    pub(super) sets: Vec<u64>,
    pub(super) starts: Vec<usize>,
    /// Next slot with the same key, NIL at the end of a chain.
    pub(super) chain: Vec<u32>,
    pub(super) scratch: Vec<u64>,
}

impl Memo {
    pub(super) fn new() -> Memo {
        Memo {
            first: HashMap::default(),
            sets: Vec::new(),
            starts: vec![0],
            chain: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Adds the pair; returns false if it was already there.
    pub(super) fn insert(&mut self, set: &OpSet, value: ValueId) -> bool {
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
pub(super) struct Exhausted;

pub(super) enum SearchEnd {
    Linearizable,
    Stuck,
    Exhausted,
}

/// One linearized operation on the search stack.
#[derive(Clone, Copy)]
pub(super) struct Placed {
    pub(super) call: u32,
    /// Register value before it.
    pub(super) before: ValueId,
    /// A Get placed because it matched: never a choice to revisit. If any linearization
    /// extends the current prefix, one extends it with a matching Get that may come next
    /// (moving a Get earlier changes no value and breaks no real-time order, since nothing
    /// unplaced returned before it was invoked).
    pub(super) forced: bool,
}

/// The Wing–Gong–Lowe search over one key's history, placing matching Gets eagerly.
pub(super) struct Search<'a> {
    pub(super) history: KeyHistory<'a>,
    pub(super) events: Events,
    pub(super) reach: Reach,
    pub(super) memo: Memo,
    pub(super) linearized: OpSet,
    pub(super) value: ValueId,
    pub(super) stack: Vec<Placed>,
    /// Completed operations not linearized yet; the search succeeds when none are left.
    pub(super) unplaced: usize,
    /// The deepest stack seen (as ops) and the value after it, for explanations.
    pub(super) best: Vec<u32>,
    pub(super) best_value: ValueId,
    /// `best` and `stack` agree on this many leading entries, so `best` is updated by
    /// copying only what changed.
    pub(super) best_shared: usize,
}

impl<'a> Search<'a> {
    pub(super) fn new(history: KeyHistory<'a>) -> Search<'a> {
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

    pub(super) fn run(&mut self, steps_left: &mut u64) -> SearchEnd {
        match self.search(steps_left) {
            Ok(true) => SearchEnd::Linearizable,
            Ok(false) => SearchEnd::Stuck,
            Err(Exhausted) => SearchEnd::Exhausted,
        }
    }

    /// Depth-first over the writes that may come next; Gets are placed as soon as they match.
    pub(super) fn search(&mut self, steps_left: &mut u64) -> Result<bool, Exhausted> {
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
    pub(super) fn try_write(
        &mut self,
        entry: u32,
        steps_left: &mut u64,
    ) -> Result<bool, Exhausted> {
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
    pub(super) fn place_matching_reads(&mut self, steps_left: &mut u64) -> Result<bool, Exhausted> {
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
    pub(super) fn reachable(&mut self, op: usize) -> bool {
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

    pub(super) fn place(&mut self, call: u32, after: ValueId, forced: bool) {
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
    pub(super) fn undo_choice(&mut self) -> Option<u32> {
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

    pub(super) fn note_depth(&mut self) {
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
    pub(super) fn explain(&mut self, key: &[u8]) -> String {
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

    pub(super) fn why_not_next(&mut self, op: usize) -> String {
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

    pub(super) fn describe(&self, op: usize) -> String {
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

pub(super) fn spend(steps_left: &mut u64) -> Result<(), Exhausted> {
    *steps_left = steps_left.checked_sub(1).ok_or(Exhausted)?;
    Ok(())
}

pub(super) fn show_value(value: Option<&[u8]>) -> String {
    value.map_or_else(|| "missing".to_string(), show_bytes)
}

/// Bytes as an escaped string literal, shortened in the middle when long.
pub(super) fn show_bytes(bytes: &[u8]) -> String {
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

pub(super) const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// One SplitMix64 output for `seed`: a well-mixed 64-bit function of it.
pub(super) fn splitmix64(seed: u64) -> u64 {
    mix64(seed.wrapping_add(GOLDEN_GAMMA))
}

/// SplitMix64's finalizer.
pub(super) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fast unseeded hasher for small integer keys (the memo and append caches); their keys
/// are already well mixed or small, and lookups never depend on iteration order.
#[derive(Default)]
pub(super) struct MixHasher(u64);

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
