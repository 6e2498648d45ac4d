//! Linearizability against any sequential model: for objects the per-key register of the
//! kv checker does not describe (the shard master's list of configurations).
//!
//! How: the Wing–Gong search with Lowe's memoisation, as in porcupine: walk the call and
//! return events in time order (calls before returns at equal times: intervals are
//! closed); at a call, try to linearize that operation — the model must accept its output
//! in the current state — and restart from the first event; at the return of an operation
//! not yet linearized, undo the last choice and try the next candidate. A (set of
//! linearized operations, model state) pair is explored at most once. The history is
//! linearizable once every operation that returned is linearized: operations of unknown
//! outcome still left over take effect after everything else, or never.
//!
//! The whole history is one object (no splitting by key), so the cost depends on how
//! much the outputs pin the order down. The shard master's replies pin it almost entirely
//! (every change reports the configuration number it made, every Query returns a numbered
//! configuration), so the search rarely backtracks further than an indeterminate write.
//!
//! Invariants: as for the kv checker — no clock (times are the caller's), a step
//! [`Budget`] instead of a timeout, exact verdicts (the memo compares whole states; hashes
//! only pick buckets), deterministic (no iteration over hash maps).
//!
//! Failure model: misuse (an output of the wrong kind for its input, a return before its
//! invoke) panics, as in the kv checker.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;

use super::{Budget, CheckResult, History, Operation, Outcome, Shaped};

/// A sequential specification.
pub trait Model {
    /// What a client asks.
    type Input: Shaped<Self::Output> + Clone + fmt::Debug;
    /// What it is told.
    type Output: Clone + fmt::Debug;
    /// The object's state; equal states must behave alike from then on.
    type State: Clone + Eq + Hash;

    /// The object's name in verdicts (where the kv checker names a key).
    fn name(&self) -> &str;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// The state after `input` runs on `state`, if it could have answered `output` there;
    /// `None` for `output` means the answer is unknown, and then a state must be returned
    /// (an operation may always take effect).
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;

    /// True if `input` never changes the state (an operation of unknown outcome that
    /// changes nothing constrains nothing and is dropped).
    fn is_read(&self, input: &Self::Input) -> bool;

    /// A short description of a state, for verdicts.
    fn describe(&self, state: &Self::State) -> String;
}

/// Checks a recorded history against `model` (operations still in flight count as of
/// unknown outcome).
pub fn check<M: Model>(
    model: &M,
    history: &History<M::Input, M::Output>,
    budget: Budget,
) -> CheckResult {
    check_operations(model, &history.operations(), budget)
}

/// Checks a list of operations against `model`.
pub fn check_operations<M: Model>(
    model: &M,
    operations: &[Operation<M::Input, M::Output>],
    budget: Budget,
) -> CheckResult {
    for (index, operation) in operations.iter().enumerate() {
        operation.validate(index);
    }
    let mut search = Search::new(model, operations);
    let mut steps_left = budget.steps_max;
    match search.run(&mut steps_left) {
        End::Linearizable => CheckResult::Ok,
        End::Exhausted => CheckResult::BudgetExhausted {
            key: model.name().as_bytes().to_vec(),
        },
        End::Stuck => CheckResult::Violation {
            key: model.name().as_bytes().to_vec(),
            explanation: search.explain(),
        },
    }
}

/// A model's operation.
type ModelOperation<M> = Operation<<M as Model>::Input, <M as Model>::Output>;

/// No entry (the end of the list).
const NIL: usize = usize::MAX;
/// The list's head sentinel.
const HEAD: usize = 0;

enum End {
    Linearizable,
    Stuck,
    Exhausted,
}

/// One call or return event; entry 0 is the head.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    call: bool,
}

struct Search<'a, M: Model> {
    model: &'a M,
    /// The operations that can matter, with their index in the caller's list.
    operations: Vec<(usize, &'a ModelOperation<M>)>,
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Each operation's return event, if it returned.
    returns: Vec<Option<usize>>,
    /// Operations that returned and are not linearized yet.
    unplaced_returns: usize,
    linearized: Vec<u64>,
    state: M::State,
    /// The choices made: (call event, state before it).
    stack: Vec<(usize, M::State)>,
    memo: HashSet<(Vec<u64>, M::State)>,
    /// The deepest point reached: (linearized count, state there, operation whose return
    /// blocked it).
    deepest: Option<(usize, M::State, usize)>,
}

impl<'a, M: Model> Search<'a, M> {
    fn new(model: &'a M, all: &'a [Operation<M::Input, M::Output>]) -> Search<'a, M> {
        let operations: Vec<(usize, &ModelOperation<M>)> = all
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                matches!(o.outcome, Outcome::Returned { .. }) || !model.is_read(&o.input)
            })
            .collect();
        let mut order: Vec<(u64, bool, usize)> = Vec::new();
        for (op, (_, operation)) in operations.iter().enumerate() {
            order.push((operation.invoke, false, op));
            if let Outcome::Returned { time, .. } = operation.outcome {
                order.push((time, true, op));
            }
        }
        // Calls (false) sort before returns (true) at equal times.
        order.sort_unstable();
        let mut events = vec![Event { op: 0, call: false }];
        let mut returns = vec![None; operations.len()];
        for (_, is_return, op) in order {
            if is_return {
                returns[op] = Some(events.len());
            }
            events.push(Event {
                op,
                call: !is_return,
            });
        }
        let n = events.len();
        let next = (0..n)
            .map(|i| if i + 1 < n { i + 1 } else { NIL })
            .collect();
        let prev = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let unplaced_returns = returns.iter().filter(|r| r.is_some()).count();
        Search {
            model,
            linearized: vec![0; operations.len().div_ceil(64)],
            operations,
            events,
            next,
            prev,
            returns,
            unplaced_returns,
            state: model.init(),
            stack: Vec::new(),
            memo: HashSet::new(),
            deepest: None,
        }
    }

    fn run(&mut self, steps_left: &mut u64) -> End {
        let mut entry = self.next[HEAD];
        loop {
            if self.unplaced_returns == 0 {
                return End::Linearizable;
            }
            if *steps_left == 0 {
                return End::Exhausted;
            }
            *steps_left -= 1;
            assert_ne!(entry, NIL, "a return is always ahead while one is unplaced");
            let event = self.events[entry];
            if event.call {
                entry = match self.try_place(entry, event.op) {
                    true => self.next[HEAD],
                    false => self.next[entry],
                };
                continue;
            }
            self.note_block(event.op);
            let Some((call, state)) = self.stack.pop() else {
                return End::Stuck;
            };
            let op = self.events[call].op;
            self.state = state;
            self.flip(op);
            self.unlift(call);
            entry = self.next[call];
        }
    }

    /// Tries to linearize `op` (whose call is `entry`) now; true if it was.
    fn try_place(&mut self, entry: usize, op: usize) -> bool {
        let operation = self.operations[op].1;
        let output = match &operation.outcome {
            Outcome::Returned { output, .. } => Some(output),
            Outcome::Indeterminate => None,
        };
        let Some(next) = self.model.step(&self.state, &operation.input, output) else {
            return false;
        };
        self.flip(op);
        if !self.memo.insert((self.linearized.clone(), next.clone())) {
            self.flip(op);
            return false;
        }
        let before = std::mem::replace(&mut self.state, next);
        self.stack.push((entry, before));
        self.lift(entry);
        true
    }

    fn flip(&mut self, op: usize) {
        self.linearized[op / 64] ^= 1 << (op % 64);
    }

    fn lift(&mut self, call: usize) {
        self.unlink(call);
        if let Some(ret) = self.returns[self.events[call].op] {
            self.unlink(ret);
            self.unplaced_returns -= 1;
        }
    }

    fn unlift(&mut self, call: usize) {
        if let Some(ret) = self.returns[self.events[call].op] {
            self.relink(ret);
            self.unplaced_returns += 1;
        }
        self.relink(call);
    }

    fn unlink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, entry: usize) {
        let (prev, next) = (self.prev[entry], self.next[entry]);
        self.next[prev] = entry;
        if next != NIL {
            self.prev[next] = entry;
        }
    }

    fn note_block(&mut self, op: usize) {
        let depth = self.stack.len();
        if self.deepest.as_ref().is_none_or(|(d, _, _)| depth > *d) {
            self.deepest = Some((depth, self.state.clone(), op));
        }
    }

    fn explain(&self) -> String {
        let Some((depth, state, op)) = &self.deepest else {
            return "no operation could be linearized".into();
        };
        let (index, operation) = self.operations[*op];
        let ended = match &operation.outcome {
            Outcome::Returned { time, output } => {
                format!("{output:?} @[{}, {time}]", operation.invoke)
            }
            Outcome::Indeterminate => format!("unknown @[{}, inf)", operation.invoke),
        };
        format!(
            "at best {depth} of {} operations linearize; then operation #{index} (client {}: \
             {:?} -> {ended}) fits nowhere; state there: {}",
            self.operations.len(),
            operation.client,
            operation.input,
            self.model.describe(state)
        )
    }
}

#[cfg(test)]
mod tests {
    //! The generic search on a tiny model: a counter with `Add(n) -> new value` and
    //! `Read -> value`.

    use super::*;

    #[derive(Clone, Debug, PartialEq, Eq)]
    enum In {
        Add(u64),
        Read,
    }

    impl Shaped<u64> for In {
        fn fits(&self, _output: &u64) -> bool {
            true
        }
    }

    struct Counter;

    impl Model for Counter {
        type Input = In;
        type Output = u64;
        type State = u64;

        fn name(&self) -> &str {
            "counter"
        }

        fn init(&self) -> u64 {
            0
        }

        fn step(&self, state: &u64, input: &In, output: Option<&u64>) -> Option<u64> {
            let (next, answer) = match input {
                In::Add(n) => (state + n, state + n),
                In::Read => (*state, *state),
            };
            output.is_none_or(|o| *o == answer).then_some(next)
        }

        fn is_read(&self, input: &In) -> bool {
            *input == In::Read
        }

        fn describe(&self, state: &u64) -> String {
            state.to_string()
        }
    }

    fn op(client: u64, input: In, invoke: u64, ret: Option<(u64, u64)>) -> Operation<In, u64> {
        Operation {
            client,
            input,
            invoke,
            outcome: match ret {
                Some((time, output)) => Outcome::Returned { time, output },
                None => Outcome::Indeterminate,
            },
        }
    }

    fn verdict(ops: &[Operation<In, u64>]) -> CheckResult {
        check_operations(&Counter, ops, Budget::DEFAULT)
    }

    #[test]
    fn concurrent_adds_may_linearize_in_either_order() {
        let ops = [
            op(1, In::Add(1), 0, Some((10, 3))),
            op(2, In::Add(2), 0, Some((10, 2))),
            op(3, In::Read, 11, Some((12, 3))),
        ];
        assert_eq!(verdict(&ops), CheckResult::Ok);
    }

    #[test]
    fn a_read_concurrent_with_an_add_may_precede_it_which_takes_backtracking() {
        // The search tries the add first (earlier in the list), finds the read cannot
        // follow it, and must undo that choice.
        let ops = [
            op(1, In::Add(1), 0, Some((10, 1))),
            op(2, In::Read, 0, Some((10, 0))),
        ];
        assert_eq!(verdict(&ops), CheckResult::Ok);
    }

    #[test]
    fn a_read_after_a_completed_add_must_see_it() {
        let ops = [
            op(1, In::Add(1), 0, Some((10, 1))),
            op(2, In::Read, 11, Some((12, 0))),
        ];
        let result = verdict(&ops);
        assert!(
            matches!(&result, CheckResult::Violation { explanation, .. }
                if explanation.contains("#1")),
            "{result}"
        );
    }

    #[test]
    fn real_time_order_is_respected() {
        // Add(2) answered 2 and returned before Add(1) began: Add(1) must answer 3.
        let ops = [
            op(1, In::Add(2), 0, Some((5, 2))),
            op(2, In::Add(1), 6, Some((9, 1))),
        ];
        assert!(!verdict(&ops).is_ok());
    }

    #[test]
    fn an_indeterminate_add_may_take_effect_or_not() {
        let took = [
            op(1, In::Add(5), 0, None),
            op(2, In::Read, 10, Some((11, 5))),
        ];
        assert_eq!(verdict(&took), CheckResult::Ok);
        let not = [
            op(1, In::Add(5), 0, None),
            op(2, In::Read, 10, Some((11, 0))),
        ];
        assert_eq!(verdict(&not), CheckResult::Ok);
        let other = [
            op(1, In::Add(5), 0, None),
            op(2, In::Read, 10, Some((11, 4))),
        ];
        assert!(!verdict(&other).is_ok());
    }

    #[test]
    fn the_budget_bounds_the_search() {
        // Every subset of the indeterminate adds is a state to rule out.
        let mut ops: Vec<_> = (0..12).map(|i| op(i, In::Add(1 << i), 0, None)).collect();
        ops.push(op(99, In::Read, 10, Some((11, 1 << 20))));
        assert!(matches!(
            check_operations(&Counter, &ops, Budget::steps(1000)),
            CheckResult::BudgetExhausted { .. }
        ));
    }
}
