//! The checker's own tests: histories it must accept and reject, a brute-force
//! cross-check, and its budget.

use super::search::{mix64, GOLDEN_GAMMA};
use super::*;

const T_INF: Option<u64> = None;

fn get(client: u64, key: &str, output: Option<&str>, invoke: u64, ret: Option<u64>) -> Operation {
    let input = Input::Get {
        key: key.as_bytes().to_vec(),
    };
    let output = Output::Value(output.map(|value| value.as_bytes().to_vec()));
    operation(client, input, output, invoke, ret)
}

fn put(client: u64, key: &str, value: &str, invoke: u64, ret: Option<u64>) -> Operation {
    let input = Input::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    };
    operation(client, input, Output::Ok, invoke, ret)
}

fn append(client: u64, key: &str, value: &str, invoke: u64, ret: Option<u64>) -> Operation {
    let input = Input::Append {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    };
    operation(client, input, Output::Ok, invoke, ret)
}

fn delete(client: u64, key: &str, invoke: u64, ret: Option<u64>) -> Operation {
    let input = Input::Delete {
        key: key.as_bytes().to_vec(),
    };
    operation(client, input, Output::Ok, invoke, ret)
}

fn operation(
    client: u64,
    input: Input,
    output: Output,
    invoke: u64,
    ret: Option<u64>,
) -> Operation {
    let outcome = match ret {
        Some(time) => Outcome::Returned { time, output },
        None => Outcome::Indeterminate,
    };
    Operation {
        client,
        input,
        invoke,
        outcome,
    }
}

fn verdict(operations: &[Operation]) -> CheckResult {
    check_operations(operations, Budget::DEFAULT)
}

fn assert_linearizable(operations: &[Operation]) {
    let result = verdict(operations);
    assert_eq!(result, CheckResult::Ok, "{result}");
}

fn assert_violation(operations: &[Operation], expected_key: &str) -> String {
    match verdict(operations) {
        CheckResult::Violation { key, explanation } => {
            assert_eq!(key, expected_key.as_bytes(), "{explanation}");
            explanation
        }
        other => panic!("expected a violation on {expected_key:?}, got {other:?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    assert_linearizable(&[]);
    assert!(check(&History::new(), Budget::steps(0)).is_ok());
}

#[test]
fn sequential_history_is_linearizable() {
    assert_linearizable(&[
        get(1, "x", None, 0, Some(1)),
        put(1, "x", "a", 2, Some(3)),
        get(2, "x", Some("a"), 4, Some(5)),
        append(2, "x", "b", 6, Some(7)),
        get(1, "x", Some("ab"), 8, Some(9)),
        delete(1, "x", 10, Some(11)),
        get(2, "x", None, 12, Some(13)),
        append(2, "x", "c", 14, Some(15)),
        get(1, "x", Some("c"), 16, Some(17)),
        put(1, "x", "", 18, Some(19)),
        get(1, "x", Some(""), 20, Some(21)),
    ]);
}

#[test]
fn empty_value_is_distinct_from_missing_key() {
    let history = [put(1, "x", "", 0, Some(1)), get(1, "x", None, 2, Some(3))];
    assert_violation(&history, "x");
}

#[test]
fn concurrent_puts_are_accepted_in_either_order() {
    for (first, second) in [("1", "2"), ("2", "1")] {
        assert_linearizable(&[
            put(1, "x", "1", 0, Some(10)),
            put(2, "x", "2", 5, Some(15)),
            get(3, "x", Some(first), 3, Some(12)),
            get(3, "x", Some(second), 20, Some(30)),
        ]);
    }
}

#[test]
fn concurrent_appends_are_accepted_in_either_order() {
    for order in ["ab", "ba"] {
        assert_linearizable(&[
            append(1, "x", "a", 0, Some(10)),
            append(2, "x", "b", 0, Some(10)),
            get(3, "x", Some(order), 11, Some(12)),
        ]);
    }
}

#[test]
fn read_concurrent_with_write_may_see_old_or_new_value() {
    for seen in [None, Some("1")] {
        assert_linearizable(&[
            put(1, "x", "1", 0, Some(10)),
            get(2, "x", seen, 5, Some(15)),
        ]);
    }
}

#[test]
fn touching_intervals_count_as_concurrent() {
    assert_linearizable(&[
        put(1, "x", "1", 0, Some(10)),
        get(2, "x", None, 10, Some(20)),
    ]);
    assert_violation(
        &[
            put(1, "x", "1", 0, Some(10)),
            get(2, "x", None, 11, Some(20)),
        ],
        "x",
    );
}

#[test]
fn stale_read_after_completed_write_is_rejected() {
    let history = [
        put(1, "x", "0", 0, Some(10)),
        put(1, "x", "1", 20, Some(30)),
        get(2, "x", Some("0"), 40, Some(50)),
    ];
    assert_violation(&history, "x");
}

#[test]
fn read_of_value_before_its_write_was_invoked_is_rejected() {
    let history = [
        get(2, "x", Some("1"), 0, Some(10)),
        put(1, "x", "1", 20, Some(30)),
    ];
    assert_violation(&history, "x");
}

#[test]
fn reads_observing_writes_in_contradictory_orders_are_rejected() {
    let history = [
        put(1, "x", "1", 0, Some(100)),
        put(2, "x", "2", 0, Some(100)),
        get(3, "x", Some("1"), 10, Some(20)),
        get(4, "x", Some("2"), 10, Some(20)),
        get(3, "x", Some("2"), 30, Some(40)),
        get(4, "x", Some("1"), 30, Some(40)),
    ];
    assert_violation(&history, "x");
}

#[test]
fn lost_append_is_rejected() {
    let history = [
        append(1, "x", "a", 0, Some(10)),
        append(2, "x", "b", 20, Some(30)),
        get(3, "x", Some("b"), 40, Some(50)),
    ];
    assert_violation(&history, "x");
}

#[test]
fn duplicated_append_is_rejected() {
    let history = [
        append(1, "x", "a", 0, Some(10)),
        get(2, "x", Some("aa"), 20, Some(30)),
    ];
    assert_violation(&history, "x");
}

#[test]
fn read_of_deleted_value_after_delete_completed_is_rejected() {
    let history = [
        put(1, "x", "1", 0, Some(10)),
        delete(1, "x", 20, Some(30)),
        get(2, "x", Some("1"), 40, Some(50)),
    ];
    assert_violation(&history, "x");
}

#[test]
fn indeterminate_write_whose_effect_shows_up_is_accepted() {
    assert_linearizable(&[
        put(1, "x", "1", 0, T_INF),
        get(2, "x", None, 10, Some(20)),
        get(2, "x", Some("1"), 1_000, Some(1_010)),
        get(2, "x", Some("1"), 2_000, Some(2_010)),
    ]);
}

#[test]
fn indeterminate_write_whose_effect_never_shows_up_is_accepted() {
    assert_linearizable(&[
        append(1, "x", "a", 0, T_INF),
        append(2, "x", "b", 5, Some(15)),
        get(2, "x", Some("b"), 20, Some(30)),
        get(3, "x", Some("b"), 1_000, Some(1_010)),
    ]);
}

#[test]
fn indeterminate_write_visible_before_its_invoke_is_rejected() {
    let history = [
        get(2, "x", Some("1"), 0, Some(10)),
        put(1, "x", "1", 20, T_INF),
    ];
    assert_violation(&history, "x");
}

#[test]
fn indeterminate_write_that_appears_then_vanishes_is_rejected() {
    let history = [
        put(1, "x", "1", 0, T_INF),
        get(2, "x", Some("1"), 10, Some(20)),
        get(2, "x", None, 30, Some(40)),
    ];
    assert_violation(&history, "x");
}

#[test]
fn indeterminate_append_takes_effect_at_most_once() {
    let history = [
        append(1, "x", "a", 0, T_INF),
        get(2, "x", Some("a"), 10, Some(20)),
        get(2, "x", Some("aa"), 30, Some(40)),
    ];
    assert_violation(&history, "x");
}

#[test]
fn indeterminate_get_constrains_nothing() {
    assert_linearizable(&[
        get(1, "x", Some("garbage"), 0, T_INF),
        put(2, "x", "1", 10, Some(20)),
        get(2, "x", Some("1"), 30, Some(40)),
    ]);
}

#[test]
fn keys_are_checked_independently_and_the_failing_key_is_named() {
    let history = [
        put(1, "a", "1", 0, Some(10)),
        put(2, "b", "1", 0, Some(10)),
        get(1, "a", Some("1"), 20, Some(30)),
        get(2, "b", None, 20, Some(30)),
    ];
    assert_violation(&history, "b");
    // The same reads would be fine if each key's write were concurrent with its read.
    assert_linearizable(&[
        put(1, "a", "1", 0, Some(25)),
        put(2, "b", "1", 0, Some(25)),
        get(1, "a", Some("1"), 20, Some(30)),
        get(2, "b", None, 20, Some(30)),
    ]);
}

#[test]
fn violation_explanation_names_key_prefix_and_unplaceable_read() {
    let history = [
        put(1, "x", "0", 0, Some(10)),
        put(1, "x", "1", 20, Some(30)),
        get(2, "x", Some("0"), 40, Some(50)),
    ];
    let explanation = assert_violation(&history, "x");
    assert!(explanation.contains("key \"x\""), "{explanation}");
    assert!(explanation.contains("prefix found has 2"), "{explanation}");
    assert!(
        explanation.contains("value after it: \"1\""),
        "{explanation}"
    );
    assert!(
        explanation
            .contains("#2 client 2 get -> \"0\" @[40, 50]: it read \"0\" but the value was \"1\""),
        "{explanation}"
    );
}

#[test]
fn long_values_are_shortened_in_explanations() {
    let long = "v".repeat(1_000);
    let history = [
        put(1, "x", &long, 0, Some(10)),
        get(2, "x", None, 20, Some(30)),
    ];
    let explanation = assert_violation(&history, "x");
    assert!(explanation.contains("(1000 bytes)"), "{explanation}");
    assert!(explanation.len() < 1_000, "{explanation}");
}

#[test]
fn history_recorder_records_completions_and_leaves_the_rest_indeterminate() {
    let history = History::new();
    let key = || b"k".to_vec();
    let put = history.invoke(
        1,
        Input::Put {
            key: key(),
            value: b"1".to_vec(),
        },
        0,
    );
    let lost = history.invoke(
        2,
        Input::Append {
            key: key(),
            value: b"2".to_vec(),
        },
        1,
    );
    history.give_up(lost);
    let _crashed = history.invoke(3, Input::Delete { key: key() }, 2);
    history.complete(put, Output::Ok, 5);
    history.record(get(4, "k", Some("12"), 10, Some(20)));
    assert_eq!(history.len(), 4);
    let operations = history.operations();
    assert_eq!(
        operations[0].outcome,
        Outcome::Returned {
            time: 5,
            output: Output::Ok
        }
    );
    assert_eq!(operations[1].outcome, Outcome::Indeterminate);
    assert_eq!(operations[2].outcome, Outcome::Indeterminate);
    assert_eq!(check(&history, Budget::DEFAULT), CheckResult::Ok);
}

#[test]
#[should_panic(expected = "cannot have output")]
fn completing_a_get_with_ok_panics() {
    let history = History::new();
    let get = history.invoke(1, Input::Get { key: b"k".to_vec() }, 0);
    history.complete(get, Output::Ok, 1);
}

#[test]
#[should_panic(expected = "before its invoke")]
fn returning_before_invoke_panics() {
    let _ = verdict(&[put(1, "x", "1", 10, Some(5))]);
}

#[test]
fn history_can_be_recorded_from_several_threads() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // A mutex-protected map is linearizable; a shared counter serves as the clock.
    let history = History::new();
    let store = Arc::new(Mutex::new(BTreeMap::<Vec<u8>, Vec<u8>>::new()));
    let clock = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4u64)
        .map(|client| {
            let (history, store, clock) = (history.clone(), Arc::clone(&store), Arc::clone(&clock));
            std::thread::spawn(move || {
                for i in 0..200u64 {
                    let key = vec![b'k', (i % 3) as u8];
                    let value = format!("{client}.{i};").into_bytes();
                    if i % 2 == 0 {
                        let input = Input::Append {
                            key: key.clone(),
                            value: value.clone(),
                        };
                        let invocation =
                            history.invoke(client, input, clock.fetch_add(1, Ordering::SeqCst));
                        store
                            .lock()
                            .unwrap()
                            .entry(key)
                            .or_default()
                            .extend_from_slice(&value);
                        history.complete(
                            invocation,
                            Output::Ok,
                            clock.fetch_add(1, Ordering::SeqCst),
                        );
                    } else {
                        let input = Input::Get { key: key.clone() };
                        let invocation =
                            history.invoke(client, input, clock.fetch_add(1, Ordering::SeqCst));
                        let seen = store.lock().unwrap().get(&key).cloned();
                        history.complete(
                            invocation,
                            Output::Value(seen),
                            clock.fetch_add(1, Ordering::SeqCst),
                        );
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("recording thread panicked");
    }
    assert_eq!(history.len(), 800);
    let result = check(&history, Budget::DEFAULT);
    assert_eq!(result, CheckResult::Ok, "{result}");
}

#[test]
fn huge_adversarial_history_with_tiny_budget_exhausts_the_budget() {
    // 40 concurrent appends: every order gives a different value, so the memo cannot
    // prune, and the final read matches none of them.
    let mut history: Vec<Operation> = (0..40)
        .map(|client| append(client, "x", &format!("{client},"), 0, Some(100)))
        .collect();
    history.push(get(99, "x", Some("impossible"), 200, Some(210)));
    history.push(put(98, "a", "fine", 0, Some(1)));
    let result = check_operations(&history, Budget::steps(10_000));
    assert_eq!(result, CheckResult::BudgetExhausted { key: b"x".to_vec() });
    assert!(result.to_string().contains("budget exhausted on key \"x\""));
}

/// Deterministic PRNG for the randomized tests.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

struct Shape {
    clients: u64,
    ops_per_client: u64,
    keys: u64,
    indeterminate_percent: u64,
    /// Values are drawn from this many one-letter strings, or are unique if 0.
    value_pool: u64,
}

/// Simulates a linearizable store: each op gets a linearization point inside its
/// interval, ops take effect in that order, and outputs come from the resulting states.
/// Some ops are indeterminate: they take effect at a point possibly after the client gave
/// up, or not at all.
fn linearizable_history(seed: u64, shape: &Shape) -> Vec<Operation> {
    let mut rng = SplitMix(seed);
    // (linearization point or None if it never takes effect, op)
    let mut planned: Vec<(Option<u64>, Operation)> = Vec::new();
    for client in 0..shape.clients {
        let mut now = rng.below(10);
        for i in 0..shape.ops_per_client {
            let key = format!("k{}", rng.below(shape.keys)).into_bytes();
            let value = match shape.value_pool {
                0 => format!("{client}.{i};").into_bytes(),
                pool => vec![b'a' + rng.below(pool) as u8],
            };
            let input = match rng.below(10) {
                0..=3 => Input::Get { key },
                4..=5 => Input::Put { key, value },
                6..=8 => Input::Append { key, value },
                _ => Input::Delete { key },
            };
            let invoke = now + rng.below(5);
            let point = invoke + rng.below(20);
            let ret = point + rng.below(20);
            now = ret + rng.below(3);
            let indeterminate = rng.percent(shape.indeterminate_percent);
            let (point, outcome) = if !indeterminate {
                let output = if input.is_get() {
                    Output::Value(None)
                } else {
                    Output::Ok
                };
                (Some(point), Outcome::Returned { time: ret, output })
            } else if rng.percent(50) {
                (Some(invoke + rng.below(200)), Outcome::Indeterminate)
            } else {
                (None, Outcome::Indeterminate)
            };
            planned.push((
                point,
                Operation {
                    client,
                    input,
                    invoke,
                    outcome,
                },
            ));
        }
    }
    apply_in_point_order(&mut planned);
    planned
        .into_iter()
        .map(|(_, operation)| operation)
        .collect()
}

/// Fills in Get outputs by running the ops against a map in linearization-point order
/// (ties in generation order, which keeps each client's own ops in program order).
fn apply_in_point_order(planned: &mut [(Option<u64>, Operation)]) {
    let mut order: Vec<usize> = (0..planned.len())
        .filter(|&i| planned[i].0.is_some())
        .collect();
    order.sort_by_key(|&i| (planned[i].0, i));
    let mut store: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for i in order {
        let operation = &mut planned[i].1;
        match &operation.input {
            Input::Get { key } => {
                if let Outcome::Returned { output, .. } = &mut operation.outcome {
                    *output = Output::Value(store.get(key).cloned());
                }
            }
            Input::Put { key, value } => {
                store.insert(key.clone(), value.clone());
            }
            Input::Append { key, value } => store
                .entry(key.clone())
                .or_default()
                .extend_from_slice(value),
            Input::Delete { key } => {
                store.remove(key);
            }
        }
    }
}

const RANDOM_SHAPE: Shape = Shape {
    clients: 6,
    ops_per_client: 40,
    keys: 3,
    indeterminate_percent: 5,
    value_pool: 0,
};
const RANDOM_SEEDS: u64 = 150;

#[test]
fn randomized_linearizable_register_histories_are_accepted() {
    for seed in 0..RANDOM_SEEDS {
        let history = linearizable_history(seed, &RANDOM_SHAPE);
        let result = verdict(&history);
        assert_eq!(result, CheckResult::Ok, "seed {seed}: {result}");
    }
}

#[test]
fn randomized_histories_with_a_read_of_a_never_written_value_are_rejected() {
    let mut rejected = 0;
    for seed in 0..RANDOM_SEEDS {
        let mut history = linearizable_history(seed, &RANDOM_SHAPE);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| {
                history[i].input.is_get() && matches!(history[i].outcome, Outcome::Returned { .. })
            })
            .collect();
        let victim = reads[SplitMix(seed ^ 0xDEAD).below(reads.len() as u64) as usize];
        if let Outcome::Returned { output, .. } = &mut history[victim].outcome {
            *output = Output::Value(Some(b"never written".to_vec()));
        }
        match verdict(&history) {
            CheckResult::Violation { key, .. } => {
                assert_eq!(key, history[victim].input.key(), "seed {seed}");
                rejected += 1;
            }
            other => panic!("seed {seed}: corrupted read accepted or unchecked: {other:?}"),
        }
    }
    assert_eq!(rejected, RANDOM_SEEDS);
}

#[test]
fn ten_thousand_ops_from_ten_clients_over_twenty_keys_check_within_default_budget() {
    let shape = Shape {
        clients: 10,
        ops_per_client: 1_000,
        keys: 20,
        indeterminate_percent: 1,
        value_pool: 0,
    };
    let history = linearizable_history(7, &shape);
    assert_eq!(history.len(), 10_000);
    let mut steps_left = Budget::DEFAULT.steps_max;
    let result = check_counting(&history, &mut steps_left);
    assert_eq!(result, CheckResult::Ok, "{result}");
    let steps = Budget::DEFAULT.steps_max - steps_left;
    // Near-linear search: a few steps per event, far below the default budget.
    assert!(steps < 1_000_000, "took {steps} steps");
}

#[test]
fn hot_key_randomized_histories_are_accepted() {
    // Eight clients always busy on one key, some timing out: the contended case.
    let shape = Shape {
        clients: 8,
        ops_per_client: 60,
        keys: 1,
        indeterminate_percent: 5,
        value_pool: 0,
    };
    for seed in 0..20 {
        let history = linearizable_history(seed, &shape);
        let result = verdict(&history);
        assert_eq!(result, CheckResult::Ok, "seed {seed}: {result}");
    }
}

#[test]
fn unobserved_indeterminate_writes_cost_the_search_nothing() {
    // 300 timed-out writes all concurrent with everything: without pruning, every subset
    // of them would be a separate configuration.
    let mut history: Vec<Operation> = (0..300)
        .map(|i| match i % 3 {
            0 => put(i, "x", &format!("lost{i}"), 1, T_INF),
            _ => append(i, "x", &format!("lost{i}"), 1, T_INF),
        })
        .collect();
    for i in 0..100 {
        let time = 10 + 10 * i;
        history.push(append(1_000, "x", "v", time, Some(time + 5)));
        let seen = "v".repeat(i as usize + 1);
        history.push(get(1_001, "x", Some(&seen), time + 6, Some(time + 9)));
    }
    let mut steps_left = 10_000;
    assert_eq!(check_counting(&history, &mut steps_left), CheckResult::Ok);
}

/// The reference: tries every subset of indeterminate writes and every order of the
/// chosen operations.
fn brute_force_linearizable(operations: &[Operation]) -> bool {
    let indeterminate = |i: &usize| operations[*i].outcome == Outcome::Indeterminate;
    let relevant: Vec<usize> = (0..operations.len())
        .filter(|i| !(operations[*i].input.is_get() && indeterminate(i)))
        .collect();
    let optional: Vec<usize> = relevant.iter().copied().filter(indeterminate).collect();
    (0..1u32 << optional.len()).any(|mask| {
        let chosen: Vec<usize> = relevant
            .iter()
            .copied()
            .filter(|i| match optional.iter().position(|o| o == i) {
                Some(bit) => mask & (1 << bit) != 0,
                None => true,
            })
            .collect();
        some_order_works(operations, &chosen, &BTreeMap::new())
    })
}

fn some_order_works(
    operations: &[Operation],
    remaining: &[usize],
    store: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> bool {
    if remaining.is_empty() {
        return true;
    }
    remaining.iter().enumerate().any(|(k, &op)| {
        let invoke = operations[op].invoke;
        let must_come_first = remaining.iter().any(|&other| {
            matches!(operations[other].outcome, Outcome::Returned { time, .. } if time < invoke)
        });
        let mut store = store.clone();
        if must_come_first || !apply_to_map(&operations[op], &mut store) {
            return false;
        }
        let mut rest = remaining.to_vec();
        rest.remove(k);
        some_order_works(operations, &rest, &store)
    })
}

/// Runs an operation on a map; false if it is a Get whose output disagrees.
fn apply_to_map(operation: &Operation, store: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> bool {
    match &operation.input {
        Input::Get { key } => match &operation.outcome {
            Outcome::Returned { output, .. } => *output == Output::Value(store.get(key).cloned()),
            Outcome::Indeterminate => true,
        },
        Input::Put { key, value } => {
            store.insert(key.clone(), value.clone());
            true
        }
        Input::Append { key, value } => {
            store
                .entry(key.clone())
                .or_default()
                .extend_from_slice(value);
            true
        }
        Input::Delete { key } => {
            store.remove(key);
            true
        }
    }
}

#[test]
fn small_random_histories_agree_with_brute_force_enumeration() {
    // Repeated one-letter values and corrupted reads give both verdicts, and exercise
    // every pruning rule where values are not unique.
    const OUTPUTS: [Option<&str>; 7] = [
        None,
        Some(""),
        Some("a"),
        Some("b"),
        Some("ab"),
        Some("ba"),
        Some("aa"),
    ];
    let shape = Shape {
        clients: 3,
        ops_per_client: 3,
        keys: 1,
        indeterminate_percent: 20,
        value_pool: 2,
    };
    let (mut accepted, mut rejected) = (0, 0);
    for seed in 0..1_500 {
        let mut history = linearizable_history(seed, &shape);
        let mut rng = SplitMix(seed ^ 0x5EED);
        for operation in &mut history {
            let Outcome::Returned { output, .. } = &mut operation.outcome else {
                continue;
            };
            if matches!(output, Output::Value(_)) && rng.percent(25) {
                let corrupt = OUTPUTS[rng.below(OUTPUTS.len() as u64) as usize];
                *output = Output::Value(corrupt.map(|value| value.as_bytes().to_vec()));
            }
        }
        let expected = brute_force_linearizable(&history);
        let result = verdict(&history);
        match (&result, expected) {
            (CheckResult::Ok, true) => accepted += 1,
            (CheckResult::Violation { .. }, false) => rejected += 1,
            _ => panic!("seed {seed}: checker: {result}; brute force: {expected}; {history:?}"),
        }
    }
    assert!(
        accepted >= 300 && rejected >= 300,
        "accepted {accepted}, rejected {rejected}"
    );
}
