//! A deterministic simulator of the coordinator core with crashing and stalling workers.
//!
//! One thread, virtual time, one seed. Simulated workers join on a schedule, ask the
//! [`Coordinator`] for tasks, run them with the real task code ([`crate::task`]) over
//! in-memory input, and commit whole outputs into an in-memory store keyed by task — the
//! same contract as the file and store backends. A worker may crash holding a task (its
//! connection closing, like SIGKILL, or silently, like a lost machine), or stall mid-task
//! without heartbeats (like SIGSTOP) and then finish late. After every step the core's
//! invariants are checked; a reduce reading a map output that was never committed, or a
//! second commit of a task that differs from the first, panics. The job must finish with
//! the same result as a sequential run. Every run yields a trace hash: the same seed must
//! give the same hash.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use crate::app::App;
use crate::coordinator::{
    Assignment, AttemptId, Config, Coordinator, Event, Phase, Progress, WorkerId,
};
use crate::task::{self, Mapper, Partition};
use kv_replication::rng::Rng;

/// How one simulated worker behaves.
#[derive(Clone, Debug, Default)]
pub struct WorkerPlan {
    pub join_at: Duration,
    /// Crash while holding the task after this many finished ones (the lab's "dies after
    /// 10 RPCs").
    pub dies_after: Option<u32>,
    /// Whether the crash closes the connection (SIGKILL) or goes unnoticed until the lease
    /// lapses (a lost machine).
    pub crash_closes_connection: bool,
    /// Stall (no heartbeats, no progress) during task number `.0` (counted from 0) for
    /// `.1`, then finish it late.
    pub stall: Option<(u32, Duration)>,
    /// Task time multiplier (1.0 = the scenario's base task time).
    pub slowness: f64,
}

/// A job and the workers that run it.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Each map task's input: `(document, contents)` pieces.
    pub splits: Vec<Vec<(String, String)>>,
    pub reduces: u32,
    pub lease: Duration,
    pub task_time: Duration,
    pub workers: Vec<WorkerPlan>,
}

/// How a simulated job ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Every committed reduce output, merged and sorted by key.
    pub result: Vec<(String, String)>,
    pub progress: Progress,
    /// Commits of a task that already had one (late or backup runs).
    pub repeated_commits: u32,
    pub finished_at: Duration,
    pub trace_hash: u64,
}

/// Virtual time after which a job that has not finished is a liveness failure.
pub const VIRTUAL_TIME_MAX: Duration = Duration::from_secs(3600);
const ASK_AGAIN: Duration = Duration::from_millis(50);
const EXPIRE_PERIOD: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Expire,
    Join(usize),
    Ask(usize),
    Heartbeat(usize, u64),
    Finish(usize, u64),
}

enum Output {
    Map(Vec<Partition>),
    Reduce(Vec<(String, String)>),
}

struct Running {
    attempt: AttemptId,
    generation: u64,
    output: Output,
    input_bytes: u64,
    stalled: Option<(Duration, Duration)>,
    finish_at: Duration,
}

struct Worker {
    plan: WorkerPlan,
    id: Option<WorkerId>,
    alive: bool,
    started: u32,
    finished: u32,
    running: Option<Running>,
}

struct World<'a> {
    app: &'a dyn App,
    scenario: &'a Scenario,
    core: Coordinator,
    now: Duration,
    queue: BinaryHeap<Reverse<(Duration, u64, Step)>>,
    sequence: u64,
    workers: Vec<Worker>,
    maps_committed: BTreeMap<u32, Vec<Partition>>,
    reduces_committed: BTreeMap<u32, Vec<(String, String)>>,
    repeated_commits: u32,
    trace: u64,
    rng: Rng,
}

/// The result of running `app` over `splits` in one pass, with no faults.
pub fn sequential(app: &dyn App, splits: &[Vec<(String, String)>]) -> Vec<(String, String)> {
    let mut mapper = Mapper::new(app, 1);
    for (document, contents) in splits.iter().flatten() {
        mapper.feed(document, contents);
    }
    task::reduce(app, mapper.finish())
}

/// Runs `scenario` with `app` from `seed` (the seed draws task-time jitter); panics with
/// the seed on a broken invariant or if the job does not finish.
pub fn run(seed: u64, app: &dyn App, scenario: &Scenario) -> Outcome {
    let config = Config {
        maps: scenario.splits.len() as u32,
        reduces: scenario.reduces,
        lease: scenario.lease,
        failures_max: 4,
    };
    let mut world = World {
        app,
        scenario,
        core: Coordinator::new(config, Duration::ZERO),
        now: Duration::ZERO,
        queue: BinaryHeap::new(),
        sequence: 0,
        workers: scenario
            .workers
            .iter()
            .map(|plan| Worker {
                plan: plan.clone(),
                id: None,
                alive: true,
                started: 0,
                finished: 0,
                running: None,
            })
            .collect(),
        maps_committed: BTreeMap::new(),
        reduces_committed: BTreeMap::new(),
        repeated_commits: 0,
        trace: 0xcbf2_9ce4_8422_2325,
        rng: Rng::new(seed),
    };
    for (index, plan) in scenario.workers.iter().enumerate() {
        world.schedule(plan.join_at, Step::Join(index));
    }
    world.schedule(EXPIRE_PERIOD, Step::Expire);
    while !world.core.is_done() {
        let Some(Reverse((at, _, step))) = world.queue.pop() else {
            panic!("seed {seed}: nothing left to happen and the job is not done");
        };
        assert!(
            at <= VIRTUAL_TIME_MAX,
            "seed {seed}: job not done after {VIRTUAL_TIME_MAX:?}: {:?}",
            world.core.progress()
        );
        world.now = at;
        world.step(step);
        world.core.check_invariants();
        assert!(world.core.failure().is_none(), "seed {seed}: job failed");
    }
    world.outcome()
}

impl World<'_> {
    fn schedule(&mut self, at: Duration, step: Step) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence, step)));
    }

    fn record(&mut self, events: &[Event]) {
        for event in events {
            let text = format!("{:?} {event:?}", self.now);
            for byte in text.bytes() {
                self.trace = (self.trace ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    fn step(&mut self, step: Step) {
        let mut out = Vec::new();
        match step {
            Step::Expire => {
                self.core.expire(self.now, &mut out);
                self.schedule(self.now + EXPIRE_PERIOD, Step::Expire);
            }
            Step::Join(w) => {
                self.workers[w].id = Some(self.core.join(&mut out));
                self.schedule(self.now, Step::Ask(w));
            }
            Step::Ask(w) => self.ask(w, &mut out),
            Step::Heartbeat(w, generation) => self.heartbeat(w, generation),
            Step::Finish(w, generation) => self.finish(w, generation, &mut out),
        }
        self.record(&out);
    }

    fn ask(&mut self, w: usize, out: &mut Vec<Event>) {
        let worker = &self.workers[w];
        let (Some(id), true) = (worker.id, worker.alive) else {
            return;
        };
        match self.core.request(self.now, id, out) {
            Assignment::Wait => self.schedule(self.now + ASK_AGAIN, Step::Ask(w)),
            Assignment::Exit => {
                self.workers[w].alive = false;
                self.core.disconnect(self.now, id, out);
            }
            Assignment::Run(attempt) => {
                let worker = &mut self.workers[w];
                if worker.plan.dies_after == Some(worker.finished) {
                    worker.alive = false;
                    if worker.plan.crash_closes_connection {
                        self.core.disconnect(self.now, id, out);
                    }
                    return;
                }
                self.start(w, attempt);
            }
        }
    }

    fn start(&mut self, w: usize, attempt: AttemptId) {
        let (output, input_bytes) = self.compute(attempt);
        let jitter = 0.5 + self.rng.unit();
        let worker = &mut self.workers[w];
        let took = self
            .scenario
            .task_time
            .mul_f64(worker.plan.slowness * jitter);
        let stalled = match worker.plan.stall {
            Some((ordinal, length)) if ordinal == worker.started => {
                let from = self.now + took / 2;
                Some((from, from + length))
            }
            _ => None,
        };
        let finish_at = self.now + took + stalled.map_or(Duration::ZERO, |(a, b)| b - a);
        worker.started += 1;
        self.sequence += 1;
        let generation = self.sequence;
        worker.running = Some(Running {
            attempt,
            generation,
            output,
            input_bytes,
            stalled,
            finish_at,
        });
        let heartbeat = self.scenario.lease / 4;
        self.schedule(self.now + heartbeat, Step::Heartbeat(w, generation));
        self.schedule(finish_at, Step::Finish(w, generation));
    }

    /// What the task's run will commit, computed from what is committed now.
    fn compute(&self, attempt: AttemptId) -> (Output, u64) {
        let index = attempt.task.index;
        match attempt.task.phase {
            Phase::Map => {
                let split = &self.scenario.splits[index as usize];
                let mut mapper = Mapper::new(self.app, self.scenario.reduces);
                let mut bytes = 0;
                for (document, contents) in split {
                    mapper.feed(document, contents);
                    bytes += contents.len() as u64;
                }
                (Output::Map(mapper.finish()), bytes)
            }
            Phase::Reduce => {
                let inputs = (0..self.scenario.splits.len() as u32).map(|map| {
                    let Some(partitions) = self.maps_committed.get(&map) else {
                        panic!("reduce {index} ran before map {map} was committed");
                    };
                    partitions[index as usize].clone()
                });
                (Output::Reduce(task::reduce(self.app, inputs)), 0)
            }
        }
    }

    fn current(&self, w: usize, generation: u64) -> Option<&Running> {
        let worker = &self.workers[w];
        let running = worker.running.as_ref()?;
        (worker.alive && running.generation == generation).then_some(running)
    }

    fn heartbeat(&mut self, w: usize, generation: u64) {
        let Some(running) = self.current(w, generation) else {
            return;
        };
        let in_stall = running
            .stalled
            .is_some_and(|(from, to)| self.now >= from && self.now < to);
        let (attempt, finish_at) = (running.attempt, running.finish_at);
        if !in_stall {
            let id = self.workers[w].id.expect("joined");
            self.core.heartbeat(self.now, id, attempt);
        }
        let next = self.now + self.scenario.lease / 4;
        if next < finish_at {
            self.schedule(next, Step::Heartbeat(w, generation));
        }
    }

    fn finish(&mut self, w: usize, generation: u64, out: &mut Vec<Event>) {
        if self.current(w, generation).is_none() {
            return;
        }
        let running = self.workers[w].running.take().expect("running");
        let index = running.attempt.task.index;
        let repeated = match running.output {
            Output::Map(partitions) => commit(&mut self.maps_committed, index, partitions),
            Output::Reduce(pairs) => commit(&mut self.reduces_committed, index, pairs),
        };
        self.repeated_commits += u32::from(repeated);
        let id = self.workers[w].id.expect("joined");
        self.core
            .complete(self.now, id, running.attempt, running.input_bytes, out);
        self.workers[w].finished += 1;
        self.schedule(self.now, Step::Ask(w));
    }

    fn outcome(self) -> Outcome {
        let reduces = self.scenario.reduces;
        assert_eq!(self.reduces_committed.len() as u32, reduces);
        let mut result: Vec<(String, String)> =
            self.reduces_committed.into_values().flatten().collect();
        result.sort_by(|a, b| a.0.cmp(&b.0));
        Outcome {
            result,
            progress: self.core.progress(),
            repeated_commits: self.repeated_commits,
            finished_at: self.now,
            trace_hash: self.trace,
        }
    }
}

/// Commits a task's output whole, replacing an earlier commit, which must be identical
/// (tasks are deterministic). Returns whether there was one.
fn commit<T: PartialEq + std::fmt::Debug>(
    store: &mut BTreeMap<u32, T>,
    index: u32,
    output: T,
) -> bool {
    match store.insert(index, output) {
        Some(earlier) => {
            assert!(
                store[&index] == earlier,
                "task {index} committed different outputs"
            );
            true
        }
        None => false,
    }
}

/// The lab's input: the integers `0..count`, one per line, cut into `maps` splits on line
/// boundaries (one document, `824-mrinput.txt`).
pub fn lab_splits(count: u32, maps: u32) -> Vec<Vec<(String, String)>> {
    let per_split = count.div_ceil(maps);
    (0..maps)
        .map(|m| {
            let lines: String = (m * per_split..((m + 1) * per_split).min(count))
                .map(|i| format!("{i}\n"))
                .collect();
            vec![("824-mrinput.txt".to_owned(), lines)]
        })
        .collect()
}

/// A random scenario from `seed`: random sizes, apps' input of random words, workers that
/// join throughout, some crashing (noticed or not), some stalling longer or shorter than
/// the lease, at different speeds; then one reliable worker, so the job can finish.
pub fn random_scenario(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed ^ 0x005e_ed0f_5ce0);
    let maps = 1 + rng.below(30) as u32;
    let reduces = 1 + rng.below(10) as u32;
    let vocabulary: Vec<String> = (0..200).map(|i| format!("w{}x", i * 7919 % 1000)).collect();
    let splits = (0..maps)
        .map(|m| {
            (0..1 + rng.below(3))
                .map(|d| {
                    let words: Vec<&str> = (0..rng.below(300))
                        .map(|_| vocabulary[rng.below(200) as usize].as_str())
                        .collect();
                    (format!("doc-{}", (u64::from(m) + d) % 7), words.join(" "))
                })
                .collect()
        })
        .collect();
    let lease = Duration::from_secs(1);
    let mut workers: Vec<WorkerPlan> = (0..1 + rng.below(8))
        .map(|_| WorkerPlan {
            join_at: Duration::from_millis(rng.below(20_000)),
            dies_after: rng.chance(0.4).then(|| rng.below(6) as u32),
            crash_closes_connection: rng.chance(0.5),
            stall: rng.chance(0.4).then(|| {
                let ordinal = rng.below(4) as u32;
                (ordinal, lease.mul_f64(0.2 + 4.0 * rng.unit()))
            }),
            slowness: 0.5 + 3.0 * rng.unit(),
        })
        .collect();
    workers.push(WorkerPlan {
        join_at: Duration::from_secs(60),
        slowness: 1.0,
        ..WorkerPlan::default()
    });
    Scenario {
        splits,
        reduces,
        lease,
        task_time: Duration::from_millis(100),
        workers,
    }
}
