//! Concurrent client scripts for any simulated harness: a [`Script`] is called whenever its
//! clerk is idle, with the answer to its last call, and says what to do next ([`Action`]);
//! [`Scripts`] runs many of them against a [`Harness`] — a single group ([`super::group`])
//! or a sharded world ([`super::shardkv`]) — in virtual time.

use std::time::Duration;

use std::collections::BTreeMap;

use crate::node::Answer;
use crate::types::{NodeId, Time};

/// What scripts drive: clerks that take one call at a time, and virtual time.
pub trait Harness {
    /// What a script asks a clerk to do.
    type Call;
    /// What the clerk answers.
    type Answer;

    /// The current virtual time.
    fn now(&self) -> Time;
    /// Starts `call` on the idle clerk `clerk`.
    fn start(&mut self, clerk: usize, call: Self::Call);
    /// True if clerk `clerk` has no call in progress.
    fn idle(&self, clerk: usize) -> bool;
    /// The answer to clerk `clerk`'s last call, once it arrived.
    fn answer(&mut self, clerk: usize) -> Option<Self::Answer>;
    /// Runs `duration` of virtual time.
    fn run_for(&mut self, duration: Duration);
    /// The world's seed (failure messages name it).
    fn seed(&self) -> u64;

    /// Runs `ms` milliseconds.
    fn sleep_ms(&mut self, ms: u64) {
        self.run_for(Duration::from_millis(ms));
    }

    /// Runs until every clerk in `clerks` is idle or `limit` passes; true if they are.
    fn wait_idle(&mut self, clerks: &[usize], limit: Duration) -> bool {
        let end = self.now() + limit;
        loop {
            if clerks.iter().all(|&c| self.idle(c)) {
                return true;
            }
            if self.now() >= end {
                return false;
            }
            self.run_for(POLL);
        }
    }

    /// Runs `call` on the idle clerk `clerk` and waits up to `limit` for its answer.
    fn call_within(
        &mut self,
        clerk: usize,
        call: Self::Call,
        limit: Duration,
    ) -> Option<Self::Answer> {
        self.start(clerk, call);
        if self.wait_idle(&[clerk], limit) {
            self.answer(clerk)
        } else {
            None
        }
    }

    /// Runs `call` on the idle clerk `clerk`; panics (with the seed) if no answer within
    /// [`OP_LIMIT`].
    fn must_answer(&mut self, clerk: usize, call: Self::Call) -> Self::Answer
    where
        Self::Call: std::fmt::Debug,
    {
        let what = format!("{call:?}");
        self.call_within(clerk, call, OP_LIMIT).unwrap_or_else(|| {
            panic!(
                "seed {}: clerk {clerk}: {} got no answer within {OP_LIMIT:?}",
                self.seed(),
                preview(&what)
            )
        })
    }
}

/// The lab's patience for one operation in synchronous helpers.
pub const OP_LIMIT: Duration = Duration::from_secs(30);

/// The first 120 characters of `text` (a long request in a failure message).
pub fn preview(text: &str) -> &str {
    let end = text.char_indices().nth(120).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

/// What a client script does next.
pub enum Action<C> {
    /// Run `op` on the harness clerk `clerk` (which must be idle).
    Run {
        /// The clerk.
        clerk: usize,
        /// The call.
        op: C,
    },
    /// Do nothing for a while.
    Sleep(Duration),
    /// Stop.
    Finish,
}

/// A concurrent client: called whenever it is idle, with the answer to its last call
/// (`None` at the start and after a sleep). It checks answers itself (panicking, with the
/// seed, on a wrong one) and may create clerks through the harness.
pub trait Script<H: Harness> {
    /// The next action.
    fn next(&mut self, harness: &mut H, last: Option<H::Answer>) -> Action<H::Call>;
}

enum ScriptState {
    Start,
    Running(usize),
    Sleeping(Time),
    Finished,
}

/// A set of concurrent client scripts.
pub struct Scripts<H: Harness> {
    entries: Vec<(Box<dyn Script<H>>, ScriptState)>,
    stopping: bool,
}

impl<H: Harness> Default for Scripts<H> {
    fn default() -> Self {
        Scripts::new()
    }
}

/// Most steps one script takes within one harness poll.
const SCRIPT_STEPS_PER_POLL: usize = 64;
/// Granularity of the loop in virtual time.
const POLL: Duration = Duration::from_millis(1);

impl<H: Harness> Scripts<H> {
    /// No scripts.
    pub fn new() -> Scripts<H> {
        Scripts {
            entries: Vec::new(),
            stopping: false,
        }
    }

    /// Adds a script; it starts at the next [`Scripts::drive`].
    pub fn add(&mut self, script: impl Script<H> + 'static) {
        self.entries.push((Box::new(script), ScriptState::Start));
    }

    /// From now on, scripts finish instead of taking their next step (a call in progress
    /// still completes first).
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// True once every script finished.
    pub fn all_finished(&self) -> bool {
        self.entries
            .iter()
            .all(|(_, state)| matches!(state, ScriptState::Finished))
    }

    /// Scripts still running a call (or not finished).
    pub fn unfinished(&self) -> usize {
        self.entries
            .iter()
            .filter(|(_, state)| !matches!(state, ScriptState::Finished))
            .count()
    }

    /// Runs the scripts (and the harness) for up to `duration`, returning early once every
    /// script finished; true if they all did.
    pub fn drive(&mut self, harness: &mut H, duration: Duration) -> bool {
        let end = harness.now() + duration;
        loop {
            self.advance(harness);
            if self.all_finished() {
                return true;
            }
            if harness.now() >= end {
                return false;
            }
            harness.run_for(POLL);
        }
    }

    fn advance(&mut self, harness: &mut H) {
        let stopping = self.stopping;
        for (script, state) in self.entries.iter_mut() {
            for _ in 0..SCRIPT_STEPS_PER_POLL {
                let last = match *state {
                    ScriptState::Finished => break,
                    ScriptState::Running(c) if !harness.idle(c) => break,
                    ScriptState::Running(c) => harness.answer(c),
                    ScriptState::Sleeping(t) if harness.now() < t && !stopping => break,
                    ScriptState::Sleeping(_) | ScriptState::Start => None,
                };
                if stopping {
                    *state = ScriptState::Finished;
                    break;
                }
                *state = match script.next(harness, last) {
                    Action::Run { clerk, op } => {
                        harness.start(clerk, op);
                        ScriptState::Running(clerk)
                    }
                    Action::Sleep(d) => ScriptState::Sleeping(harness.now() + d),
                    Action::Finish => ScriptState::Finished,
                };
            }
        }
    }
}

/// What a node's answer means for the clerk call it answers.
pub enum Routed<V, R> {
    /// The reply arrived.
    Reply {
        /// The call's tag.
        tag: u64,
        /// What the harness keeps for the call (its clerk).
        call: V,
        /// The reply.
        reply: R,
    },
    /// The call failed (the node gave up on it, or its reply was lost): retry.
    Failed {
        /// The call's tag.
        tag: u64,
        /// What the harness keeps for the call (its clerk).
        call: V,
    },
}

/// Routes node `node`'s `answer` to the call it answers, which `calls` keeps by tag until
/// its reply arrives (a failed call's tag stays: a late reply to it still counts): a reply
/// is lost if `reply_lost()` (asked only for a reply to a call in flight: the lab's
/// unreliable node); a halted node panics with `seed`. `None` for an event that answers no
/// call in flight.
pub fn route<V: Copy, R>(
    calls: &mut BTreeMap<u64, V>,
    node: NodeId,
    answer: Option<Answer<R>>,
    reply_lost: impl FnOnce() -> bool,
    seed: u64,
) -> Option<Routed<V, R>> {
    match answer? {
        Answer::Reply { tag, reply } => {
            let call = *calls.get(&tag)?;
            if reply_lost() {
                return Some(Routed::Failed { tag, call });
            }
            calls.remove(&tag);
            Some(Routed::Reply { tag, call, reply })
        }
        Answer::Dropped { tag } => calls.get(&tag).map(|&call| Routed::Failed { tag, call }),
        Answer::Halted { reason } => panic!("seed {seed}: {node} halted: {reason}"),
    }
}
