//! The coordinator's scheduling core: which worker runs which task, sans IO.
//!
//! A plain struct driven by calls that carry `now` (time since the driver started); it
//! reads no clock and does no IO, so the TCP driver ([`crate::server`]) and the simulator
//! ([`crate::sim`]) run the same code. Events worth reporting go into an `out` vector.
//!
//! Model. A job has a map phase then a reduce phase; the reduce phase starts only when
//! every map task is done. Each run of a task is an *attempt*, leased to one worker until
//! `now + lease`; the worker renews the lease with heartbeats while it works. An attempt
//! ends when its worker reports it done or failed, disconnects (a killed process closes its
//! connection), or lets the lease lapse (a stalled or cut-off process); a task with no live
//! attempt left goes back to the pending queue and is issued again (*re-issued*). When a
//! phase has nothing pending, an idle worker gets a *backup* attempt of the longest-running
//! task that has run past twice the phase's mean task time; a task has at most
//! [`ATTEMPTS_LIVE_MAX`] live attempts.
//!
//! The first completion of a task wins, even from an attempt whose lease lapsed (its work
//! is done and committed); later ones change nothing. That is safe because a task's output
//! is committed whole under one name and every run of a task produces the same output.
//!
//! Workers join at any time, including mid-phase. A task that fails
//! [`Config::failures_max`] times fails the job. The core keeps nothing durable: a
//! restarted coordinator starts the job over (committed outputs are simply rewritten).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// At most this many attempts of one task run at once (the first and one backup).
pub const ATTEMPTS_LIVE_MAX: usize = 2;

/// A worker, numbered by the coordinator in the order they join.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WorkerId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    Map,
    Reduce,
}

/// A task: a phase and an index within it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId {
    pub phase: Phase,
    pub index: u32,
}

/// One run of a task; `number` counts the task's attempts from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptId {
    pub task: TaskId,
    pub number: u32,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub maps: u32,
    pub reduces: u32,
    /// How long an attempt lives without a heartbeat.
    pub lease: Duration,
    /// Failed attempts of one task that fail the job.
    pub failures_max: u32,
}

/// What a worker asking for work gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assignment {
    Run(AttemptId),
    /// Nothing to do now; ask again soon.
    Wait,
    /// The job is over (done or failed).
    Exit,
}

/// Why an attempt ended without completing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lost {
    LeaseExpired,
    Disconnected,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Joined(WorkerId),
    Issued {
        attempt: AttemptId,
        worker: WorkerId,
        backup: bool,
    },
    /// An attempt ended without completing; `reissue` if its task has no live attempt left.
    Lost {
        attempt: AttemptId,
        worker: WorkerId,
        why: Lost,
        reissue: bool,
    },
    Completed {
        attempt: AttemptId,
        worker: WorkerId,
    },
    /// A completion of a task already done (a backup or a late worker): ignored.
    Duplicate {
        attempt: AttemptId,
        worker: WorkerId,
    },
    PhaseDone(Phase),
    JobDone,
    JobFailed(String),
}

/// Counts for a progress line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub maps_done: u32,
    pub maps: u32,
    pub reduces_done: u32,
    pub reduces: u32,
    /// Input bytes of the map tasks done.
    pub bytes_done: u64,
    /// Tasks put back to pending after losing their last live attempt.
    pub reissued: u32,
    pub backups: u32,
    pub workers: u32,
    /// When each phase started and ended (`now` values).
    pub map_phase: (Option<Duration>, Option<Duration>),
    pub reduce_phase: (Option<Duration>, Option<Duration>),
}

#[derive(Clone, Debug)]
struct Attempt {
    number: u32,
    worker: WorkerId,
    started: Duration,
    lease_until: Duration,
}

#[derive(Clone, Debug, Default)]
struct Task {
    done: bool,
    failures: u32,
    attempts_started: u32,
    live: Vec<Attempt>,
}

#[derive(Clone, Debug)]
enum State {
    Running(Phase),
    Done,
    Failed(String),
}

/// The coordinator's scheduling state for one job.
#[derive(Clone, Debug)]
pub struct Coordinator {
    config: Config,
    state: State,
    maps: Vec<Task>,
    reduces: Vec<Task>,
    /// Tasks of the running phase with no live attempt, issued lowest index first.
    pending: BTreeSet<u32>,
    workers: BTreeMap<WorkerId, Option<AttemptId>>,
    next_worker: u32,
    /// Sum and count of completed attempt durations in the running phase.
    phase_task_time: (Duration, u32),
    progress: Progress,
}

impl Coordinator {
    pub fn new(config: Config, now: Duration) -> Coordinator {
        assert!(config.maps > 0 && config.reduces > 0, "a job has tasks");
        assert!(config.lease > Duration::ZERO && config.failures_max > 0);
        let progress = Progress {
            maps: config.maps,
            reduces: config.reduces,
            map_phase: (Some(now), None),
            ..Progress::default()
        };
        Coordinator {
            maps: vec![Task::default(); config.maps as usize],
            reduces: vec![Task::default(); config.reduces as usize],
            pending: (0..config.maps).collect(),
            state: State::Running(Phase::Map),
            workers: BTreeMap::new(),
            next_worker: 0,
            phase_task_time: (Duration::ZERO, 0),
            progress,
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn progress(&self) -> Progress {
        let mut progress = self.progress.clone();
        progress.workers = self.workers.len() as u32;
        progress
    }

    /// The running phase, or `None` once the job is over.
    pub fn phase(&self) -> Option<Phase> {
        match self.state {
            State::Running(phase) => Some(phase),
            State::Done | State::Failed(_) => None,
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Why the job failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        match &self.state {
            State::Failed(reason) => Some(reason),
            _ => None,
        }
    }

    /// A new worker joins.
    pub fn join(&mut self, out: &mut Vec<Event>) -> WorkerId {
        let worker = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.workers.insert(worker, None);
        out.push(Event::Joined(worker));
        worker
    }

    /// `worker` is idle and asks for a task.
    pub fn request(&mut self, now: Duration, worker: WorkerId, out: &mut Vec<Event>) -> Assignment {
        self.expire(now, out);
        assert!(
            self.workers.contains_key(&worker),
            "{worker:?} never joined"
        );
        if let Some(held) = self.workers[&worker] {
            // Asking again while holding an attempt means the worker dropped it.
            self.lose(held, worker, Lost::Failed, out);
        }
        let State::Running(phase) = self.state else {
            return Assignment::Exit;
        };
        let attempt = match self.pending.pop_first() {
            Some(index) => Some((index, false)),
            None => self.backup_candidate(now, phase, worker).map(|i| (i, true)),
        };
        let Some((index, backup)) = attempt else {
            return Assignment::Wait;
        };
        let lease_until = now + self.config.lease;
        let task = &mut self.tasks_mut(phase)[index as usize];
        let number = task.attempts_started;
        task.attempts_started += 1;
        task.live.push(Attempt {
            number,
            worker,
            started: now,
            lease_until,
        });
        let attempt = AttemptId {
            task: TaskId { phase, index },
            number,
        };
        self.workers.insert(worker, Some(attempt));
        if backup {
            self.progress.backups += 1;
        }
        out.push(Event::Issued {
            attempt,
            worker,
            backup,
        });
        Assignment::Run(attempt)
    }

    /// `worker` is still working on `attempt`. Returns false if the work is no longer
    /// wanted (its task is done, or the job is over): the worker may drop it.
    pub fn heartbeat(&mut self, now: Duration, worker: WorkerId, attempt: AttemptId) -> bool {
        let lease = self.config.lease;
        if self.phase() != Some(attempt.task.phase) {
            return false;
        }
        let task = self.task_mut(attempt.task);
        if task.done {
            return false;
        }
        if let Some(live) = task.live.iter_mut().find(|a| a.number == attempt.number) {
            debug_assert_eq!(live.worker, worker);
            live.lease_until = now + lease;
        }
        // An attempt whose lease lapsed may still finish first; let it go on.
        true
    }

    /// `worker` finished `attempt` and committed its output; `input_bytes` it read.
    pub fn complete(
        &mut self,
        now: Duration,
        worker: WorkerId,
        attempt: AttemptId,
        input_bytes: u64,
        out: &mut Vec<Event>,
    ) {
        self.release(worker, attempt);
        let phase = attempt.task.phase;
        if self.phase() != Some(phase) || self.task_mut(attempt.task).done {
            self.drop_live(attempt);
            out.push(Event::Duplicate { attempt, worker });
            return;
        }
        let task = self.task_mut(attempt.task);
        task.done = true;
        let started = task.live.iter().find(|a| a.number == attempt.number);
        let took = started.map(|a| now.saturating_sub(a.started));
        // Other live attempts are now redundant; their completions will be duplicates.
        task.live.clear();
        self.pending.remove(&attempt.task.index);
        if let Some(took) = took {
            self.phase_task_time.0 += took;
            self.phase_task_time.1 += 1;
        }
        out.push(Event::Completed { attempt, worker });
        match phase {
            Phase::Map => {
                self.progress.maps_done += 1;
                self.progress.bytes_done += input_bytes;
            }
            Phase::Reduce => self.progress.reduces_done += 1,
        }
        if self.tasks_mut(phase).iter().all(|t| t.done) {
            self.finish_phase(now, phase, out);
        }
    }

    /// `worker` could not run `attempt` (say, its input is unreadable).
    pub fn fail(
        &mut self,
        now: Duration,
        worker: WorkerId,
        attempt: AttemptId,
        reason: &str,
        out: &mut Vec<Event>,
    ) {
        self.release(worker, attempt);
        if self.phase() != Some(attempt.task.phase) || self.task_mut(attempt.task).done {
            self.drop_live(attempt);
            return;
        }
        self.lose(attempt, worker, Lost::Failed, out);
        let failures_max = self.config.failures_max;
        let task = self.task_mut(attempt.task);
        task.failures += 1;
        if task.failures >= failures_max {
            let reason = format!(
                "{:?} task {} failed {} times, last: {reason}",
                attempt.task.phase, attempt.task.index, task.failures
            );
            self.progress_end(now);
            self.state = State::Failed(reason.clone());
            out.push(Event::JobFailed(reason));
        }
    }

    /// `worker`'s connection closed: it is gone, and so is any attempt it held.
    pub fn disconnect(&mut self, now: Duration, worker: WorkerId, out: &mut Vec<Event>) {
        self.expire(now, out);
        if let Some(Some(attempt)) = self.workers.remove(&worker) {
            self.lose(attempt, worker, Lost::Disconnected, out);
        }
    }

    /// Ends every attempt whose lease lapsed by `now`; drivers call it periodically.
    pub fn expire(&mut self, now: Duration, out: &mut Vec<Event>) {
        let Some(phase) = self.phase() else { return };
        let lapsed: Vec<(AttemptId, WorkerId)> = self
            .tasks_mut(phase)
            .iter()
            .enumerate()
            .flat_map(|(index, task)| {
                task.live
                    .iter()
                    .filter(|a| a.lease_until <= now)
                    .map(move |a| {
                        let task = TaskId {
                            phase,
                            index: index as u32,
                        };
                        (
                            AttemptId {
                                task,
                                number: a.number,
                            },
                            a.worker,
                        )
                    })
            })
            .collect();
        for (attempt, worker) in lapsed {
            if self.workers.get(&worker) == Some(&Some(attempt)) {
                self.workers.insert(worker, None);
            }
            self.lose(attempt, worker, Lost::LeaseExpired, out);
        }
    }

    /// Panics if the state breaks an invariant (for tests and the simulator).
    pub fn check_invariants(&self) {
        for (phase, tasks) in [(Phase::Map, &self.maps), (Phase::Reduce, &self.reduces)] {
            for (index, task) in tasks.iter().enumerate() {
                assert!(task.live.len() <= ATTEMPTS_LIVE_MAX, "{phase:?} {index}");
                assert!(!task.done || task.live.is_empty(), "{phase:?} {index}");
                if self.phase() == Some(phase) {
                    let pending = self.pending.contains(&(index as u32));
                    assert_eq!(pending, !task.done && task.live.is_empty(), "{index}");
                }
            }
        }
        if self.phase() == Some(Phase::Reduce) || self.is_done() {
            assert!(self.maps.iter().all(|t| t.done), "reduce before every map");
        }
        if self.phase() == Some(Phase::Map) {
            assert!(self.reduces.iter().all(|t| t.attempts_started == 0));
        }
        let done = |tasks: &[Task]| tasks.iter().filter(|t| t.done).count() as u32;
        assert_eq!(self.progress.maps_done, done(&self.maps));
        assert_eq!(self.progress.reduces_done, done(&self.reduces));
    }

    fn tasks_mut(&mut self, phase: Phase) -> &mut Vec<Task> {
        match phase {
            Phase::Map => &mut self.maps,
            Phase::Reduce => &mut self.reduces,
        }
    }

    fn task_mut(&mut self, task: TaskId) -> &mut Task {
        &mut self.tasks_mut(task.phase)[task.index as usize]
    }

    /// The worker no longer holds `attempt`.
    fn release(&mut self, worker: WorkerId, attempt: AttemptId) {
        if let Some(held) = self.workers.get_mut(&worker) {
            if *held == Some(attempt) {
                *held = None;
            }
        }
    }

    fn drop_live(&mut self, attempt: AttemptId) {
        if self.phase() == Some(attempt.task.phase) {
            self.task_mut(attempt.task)
                .live
                .retain(|a| a.number != attempt.number);
        }
    }

    /// `attempt` ended without completing; its task goes back to pending if it was the
    /// task's last live attempt.
    fn lose(&mut self, attempt: AttemptId, worker: WorkerId, why: Lost, out: &mut Vec<Event>) {
        if self.phase() != Some(attempt.task.phase) {
            return;
        }
        let task = self.task_mut(attempt.task);
        let before = task.live.len();
        task.live.retain(|a| a.number != attempt.number);
        if task.live.len() == before || task.done {
            return;
        }
        let reissue = task.live.is_empty();
        if reissue {
            self.pending.insert(attempt.task.index);
            self.progress.reissued += 1;
        }
        out.push(Event::Lost {
            attempt,
            worker,
            why,
            reissue,
        });
    }

    /// The task a backup attempt should run, if any: of those with a single live attempt
    /// held by another worker and running past twice the phase's mean task time, the one
    /// started first.
    fn backup_candidate(&mut self, now: Duration, phase: Phase, worker: WorkerId) -> Option<u32> {
        let (total, count) = self.phase_task_time;
        if count == 0 {
            return None;
        }
        let slow = (total / count) * 2;
        self.tasks_mut(phase)
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.done && t.live.len() == 1 && t.live[0].worker != worker)
            .filter(|(_, t)| now.saturating_sub(t.live[0].started) > slow)
            .min_by_key(|(_, t)| t.live[0].started)
            .map(|(index, _)| index as u32)
    }

    fn finish_phase(&mut self, now: Duration, phase: Phase, out: &mut Vec<Event>) {
        out.push(Event::PhaseDone(phase));
        self.phase_task_time = (Duration::ZERO, 0);
        for held in self.workers.values_mut() {
            *held = None;
        }
        match phase {
            Phase::Map => {
                self.progress.map_phase.1 = Some(now);
                self.progress.reduce_phase.0 = Some(now);
                self.state = State::Running(Phase::Reduce);
                self.pending = (0..self.config.reduces).collect();
            }
            Phase::Reduce => {
                self.progress.reduce_phase.1 = Some(now);
                self.state = State::Done;
                self.pending.clear();
                out.push(Event::JobDone);
            }
        }
    }

    fn progress_end(&mut self, now: Duration) {
        let end = match self.state {
            State::Running(Phase::Map) => &mut self.progress.map_phase.1,
            State::Running(Phase::Reduce) => &mut self.progress.reduce_phase.1,
            _ => return,
        };
        end.get_or_insert(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn coordinator(maps: u32, reduces: u32) -> Coordinator {
        Coordinator::new(
            Config {
                maps,
                reduces,
                lease: secs(10),
                failures_max: 3,
            },
            Duration::ZERO,
        )
    }

    fn run(assignment: Assignment) -> AttemptId {
        match assignment {
            Assignment::Run(attempt) => attempt,
            other => panic!("expected a task, got {other:?}"),
        }
    }

    #[test]
    fn reduces_start_only_after_every_map_is_done() {
        let mut c = coordinator(2, 1);
        let out = &mut Vec::new();
        let (a, b) = (c.join(out), c.join(out));
        let m0 = run(c.request(secs(0), a, out));
        let m1 = run(c.request(secs(0), b, out));
        c.complete(secs(1), a, m0, 10, out);
        assert_eq!(c.request(secs(1), a, out), Assignment::Wait);
        c.complete(secs(2), b, m1, 10, out);
        let r0 = run(c.request(secs(2), a, out));
        assert_eq!(r0.task.phase, Phase::Reduce);
        c.complete(secs(3), a, r0, 0, out);
        assert!(c.is_done());
        assert_eq!(c.request(secs(3), b, out), Assignment::Exit);
        assert_eq!(c.progress().bytes_done, 20);
        c.check_invariants();
    }

    #[test]
    fn a_lapsed_lease_reissues_and_the_late_completion_still_counts_once() {
        let mut c = coordinator(1, 1);
        let out = &mut Vec::new();
        let (a, b) = (c.join(out), c.join(out));
        let first = run(c.request(secs(0), a, out));
        assert!(c.heartbeat(secs(8), a, first)); // renews to 18 s
        assert_eq!(c.request(secs(17), b, out), Assignment::Wait);
        let second = run(c.request(secs(18), b, out));
        assert_eq!((second.task, second.number), (first.task, 1));
        assert_eq!(c.progress().reissued, 1);
        // The stalled worker wakes and finishes first: accepted; the re-issue is a duplicate.
        c.complete(secs(19), a, first, 5, out);
        c.complete(secs(20), b, second, 5, out);
        assert!(out.contains(&Event::Duplicate {
            attempt: second,
            worker: b
        }));
        assert_eq!(c.progress().maps_done, 1);
        assert_eq!(c.progress().bytes_done, 5);
        c.check_invariants();
    }

    #[test]
    fn a_disconnect_reissues_at_once() {
        let mut c = coordinator(1, 1);
        let out = &mut Vec::new();
        let a = c.join(out);
        let first = run(c.request(secs(0), a, out));
        c.disconnect(secs(1), a, out);
        let b = c.join(out);
        let second = run(c.request(secs(1), b, out));
        assert_eq!(second.task, first.task);
        c.check_invariants();
    }

    #[test]
    fn idle_workers_back_up_the_slowest_task_near_the_end() {
        let mut c = coordinator(3, 1);
        let out = &mut Vec::new();
        let (a, b, d) = (c.join(out), c.join(out), c.join(out));
        let m0 = run(c.request(secs(0), a, out));
        let m1 = run(c.request(secs(0), b, out));
        let m2 = run(c.request(secs(1), d, out));
        c.complete(secs(2), a, m0, 1, out); // mean task time 2 s: slow is past 4 s
        assert_eq!(c.request(secs(4), a, out), Assignment::Wait);
        c.heartbeat(secs(4), b, m1);
        c.heartbeat(secs(4), d, m2);
        let backup = run(c.request(secs(5), a, out));
        assert_eq!((backup.task, backup.number), (m1.task, 1)); // m1 started first
        let another = run(c.request(secs(6), a, out)); // a dropped its backup and asks again
        assert_eq!(another.task, m1.task);
        assert_eq!(c.progress().backups, 2);
        c.check_invariants();
    }

    #[test]
    fn a_task_failing_too_often_fails_the_job() {
        let mut c = coordinator(1, 1);
        let out = &mut Vec::new();
        let a = c.join(out);
        for _ in 0..3 {
            let attempt = run(c.request(secs(0), a, out));
            c.fail(secs(0), a, attempt, "no such file", out);
        }
        assert!(c.failure().unwrap().contains("no such file"));
        assert_eq!(c.request(secs(0), a, out), Assignment::Exit);
    }
}
