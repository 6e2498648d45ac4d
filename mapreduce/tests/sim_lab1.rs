//! Lab 1's three MapReduce tests on the simulator, and a seeded sweep of random worker
//! crashes, stalls and joins. `KV_MR_SEED=N` replays one seed of the sweep.

use std::time::Duration;

use kv_mapreduce::app::{self, Distinct};
use kv_mapreduce::sim::{self, lab_splits, random_scenario, Scenario, WorkerPlan};

/// The lab's constants (`mapreduce/test_test.go`).
const N_NUMBER: u32 = 100_000;
const N_MAP: u32 = 100;
const N_REDUCE: u32 = 50;

fn lab_scenario(workers: Vec<WorkerPlan>) -> Scenario {
    Scenario {
        splits: lab_splits(N_NUMBER, N_MAP),
        reduces: N_REDUCE,
        lease: Duration::from_secs(1),
        task_time: Duration::from_millis(20),
        workers,
    }
}

fn reliable(join_at: Duration) -> WorkerPlan {
    WorkerPlan {
        join_at,
        slowness: 1.0,
        ..WorkerPlan::default()
    }
}

/// The lab's `check`: exactly 100,000 lines, line i the i-th integer in string order.
fn check(result: &[(String, String)]) {
    let mut expected: Vec<String> = (0..N_NUMBER).map(|i| i.to_string()).collect();
    expected.sort();
    assert_eq!(result.len(), expected.len());
    for (line, (key, value)) in result.iter().enumerate() {
        assert_eq!(key, &expected[line], "line {line}");
        assert_eq!(value, "");
    }
}

#[test]
fn lab1_test_basic_two_workers() {
    for seed in 0..5 {
        let scenario = lab_scenario(vec![reliable(Duration::ZERO); 2]);
        let outcome = sim::run(seed, &Distinct, &scenario);
        check(&outcome.result);
        assert_eq!(outcome.progress.reissued, 0, "seed {seed}");
    }
}

#[test]
fn lab1_test_one_failure_reissues_the_dead_workers_task() {
    for seed in 0..5 {
        for closes in [true, false] {
            let dies = WorkerPlan {
                dies_after: Some(10),
                crash_closes_connection: closes,
                ..reliable(Duration::ZERO)
            };
            let scenario = lab_scenario(vec![dies, reliable(Duration::ZERO)]);
            let outcome = sim::run(seed, &Distinct, &scenario);
            check(&outcome.result);
            assert!(outcome.progress.reissued >= 1, "seed {seed}");
        }
    }
}

#[test]
fn lab1_test_many_failures_two_new_workers_every_second() {
    for seed in 0..5 {
        // Two workers join every second, each dying after 10 tasks; enough seconds for
        // the job to finish well before the last pair.
        let workers = (0..400u64)
            .map(|i| WorkerPlan {
                dies_after: Some(10),
                crash_closes_connection: i % 4 != 0,
                ..reliable(Duration::from_secs(i / 2))
            })
            .collect();
        let outcome = sim::run(seed, &Distinct, &lab_scenario(workers));
        check(&outcome.result);
        assert!(outcome.progress.reissued >= 1, "seed {seed}");
        assert!(outcome.progress.workers > 2, "seed {seed}");
    }
}

#[test]
fn a_stalled_worker_finishing_late_leaves_the_result_intact() {
    let stalls = WorkerPlan {
        stall: Some((3, Duration::from_secs(2))),
        ..reliable(Duration::ZERO)
    };
    let scenario = lab_scenario(vec![stalls, reliable(Duration::ZERO)]);
    let outcome = sim::run(0, &Distinct, &scenario);
    check(&outcome.result);
    assert!(outcome.progress.reissued >= 1);
    assert!(
        outcome.repeated_commits >= 1,
        "the stalled run committed late"
    );
}

fn sweep_seeds() -> std::ops::Range<u64> {
    match std::env::var("KV_MR_SEED") {
        Ok(seed) => {
            let seed: u64 = seed.parse().expect("KV_MR_SEED is a number");
            seed..seed + 1
        }
        Err(_) => 0..300,
    }
}

#[test]
fn random_crashes_stalls_and_joins_give_the_sequential_result() {
    let (mut reissued, mut backups, mut repeated) = (0, 0, 0);
    for seed in sweep_seeds() {
        let scenario = random_scenario(seed);
        let app = app::APPS[(seed % app::APPS.len() as u64) as usize];
        let outcome = sim::run(seed, app, &scenario);
        assert_eq!(
            outcome.result,
            sim::sequential(app, &scenario.splits),
            "seed {seed} ({})",
            app.name()
        );
        reissued += outcome.progress.reissued;
        backups += outcome.progress.backups;
        repeated += outcome.repeated_commits;
    }
    if sweep_seeds().count() > 1 {
        // The sweep reaches every fault path, not just the happy one.
        assert!(reissued > 0 && backups > 0 && repeated > 0);
    }
}

#[test]
fn a_seed_replays_to_the_same_trace() {
    for seed in [1, 17, 99] {
        let scenario = random_scenario(seed);
        let first = sim::run(seed, &Distinct, &scenario);
        let second = sim::run(seed, &Distinct, &scenario);
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(first.finished_at, second.finished_at, "seed {seed}");
    }
}
