//! The kv workload of the group sweep ([`super::group_sweep`]): concurrent clerks doing
//! Gets, Puts, Appends and Deletes with unique values, under the sweep's faults; at the
//! end a fresh clerk reads every key and the history is checked per key.
//!
//! Keys come in two kinds so the checker stays fast: *register* keys get Puts, Deletes and
//! Gets with unique values; *log* keys get only Appends (unique suffixes) and Gets, so each
//! Append's reported length pins its place in the final value (see
//! [`KvCluster::pin_appends`]). Some Appends grow into batches of two to four (a pipelining
//! client): a batch retried across crashes and lost replies must still run once, whole.

use std::time::Duration;

use kv_engine::kv::{KvState, Op, Reply};

use super::group_sweep::{self, Workload};
pub use super::group_sweep::{Failure, Outcome};
use super::kv::KvCalls;
use super::kv::{append, get, put, Action, KvCluster, Script, Scripts};
use crate::kvgroup::Batch;
use crate::replica::ReplicaConfig;
use crate::rng::Rng;

const REGISTER_KEYS: [&str; 3] = ["r0", "r1", "r2"];
const LOG_KEYS: [&str; 2] = ["l0", "l1"];
/// Mixed into the seed for this workload's draws (kept from before the sweeps were one,
/// so a seed replays the same schedule as it always did).
const SALT: u64 = 0x4B56_5357_4545_5021;
/// Mixed into a client's seed for its batch draws (its own generator, so the operations
/// it draws are those it drew before there were batches).
const BATCH_SALT: u64 = 0x4241_5443_4845_5321;
/// The chance that an Append grows into a batch.
const BATCH_CHANCE: f64 = 0.3;

/// Runs one seed; `Ok(trace hash)` if every check passed, else the failure report (seed,
/// message, replica states).
pub fn run_seed(seed: u64) -> Result<u64, String> {
    run(seed, 0)
        .map(|o| o.trace_hash)
        .map_err(|f| f.to_string())
}

/// Runs one seed, keeping the last `trace_lines` trace lines for a failure report.
pub fn run(seed: u64, trace_lines: usize) -> Result<Outcome, Failure> {
    run_tuned(seed, trace_lines, |_| {})
}

/// [`run`] with the replicas' configuration adjusted by `tune` (mutation tests).
pub fn run_tuned(
    seed: u64,
    trace_lines: usize,
    tune: impl FnOnce(&mut ReplicaConfig),
) -> Result<Outcome, Failure> {
    group_sweep::run(seed, trace_lines, SALT, Kv, tune)
}

/// The kv workload.
struct Kv;

impl Workload<KvState> for Kv {
    const NAME: &'static str = "kv";

    fn clients(&mut self, c: &mut KvCluster, rng: &mut Rng) -> Scripts {
        let mut scripts = Scripts::new();
        for id in 0..rng.range(2, 8) as usize {
            let servers = group_sweep::client_servers(c.replicas(), rng);
            let clerk = c.clerk(&servers);
            let seed = rng.next_u64();
            scripts.add(RandomClient {
                clerk,
                ops: RandomOps::new(id, Rng::new(seed)),
                batches: Rng::new(seed ^ BATCH_SALT),
            });
        }
        scripts
    }

    fn final_reads(&mut self, c: &mut KvCluster) {
        let reader = c.clerk_all(0);
        for key in REGISTER_KEYS {
            c.get(reader, key);
        }
        for key in LOG_KEYS {
            let value = c.get(reader, key).unwrap_or_default();
            c.pin_appends(key, &value);
        }
    }
}

/// Random key operations with unique values, and pauses: register keys get Gets, Puts and
/// Deletes; log keys get Gets and Appends (so each Append's reported length pins its place
/// in the final value).
pub struct RandomOps {
    id: usize,
    rng: Rng,
    issued: u64,
    pause: bool,
}

impl RandomOps {
    /// Client `id`'s operations, drawn from `rng`.
    pub fn new(id: usize, rng: Rng) -> RandomOps {
        RandomOps {
            id,
            rng,
            issued: 0,
            pause: false,
        }
    }

    /// The next operation on `registers` and `logs`, or `Err(pause)`.
    pub fn next(&mut self, registers: &[&str], logs: &[&str]) -> Result<Op, Duration> {
        if self.pause && self.rng.chance(0.5) {
            self.pause = false;
            return Err(Duration::from_millis(self.rng.below(30)));
        }
        self.pause = true;
        self.issued += 1;
        let unique = format!("{}.{}", self.id, self.issued);
        let roll = self.rng.below(100);
        Ok(if roll < 50 {
            let key = registers[self.rng.below(registers.len() as u64) as usize];
            match roll {
                0..=19 => get(key),
                20..=44 => put(key, &unique),
                _ => Op::Delete {
                    key: bytes::Bytes::copy_from_slice(key.as_bytes()),
                },
            }
        } else {
            let key = logs[self.rng.below(logs.len() as u64) as usize];
            if roll < 70 {
                get(key)
            } else {
                append(key, &format!("<{unique}>"))
            }
        })
    }
}

/// A client issuing random operations with unique values, some Appends in batches.
struct RandomClient {
    clerk: usize,
    ops: RandomOps,
    batches: Rng,
}

impl Script<KvCluster> for RandomClient {
    fn next(&mut self, _c: &mut KvCluster, _last: Option<Reply>) -> Action {
        match self.ops.next(&REGISTER_KEYS, &LOG_KEYS) {
            Ok(op) => Action::Run {
                clerk: self.clerk,
                op: self.maybe_batch(op),
            },
            Err(pause) => Action::Sleep(pause),
        }
    }
}

impl RandomClient {
    /// The request for `op`: alone, or — for some Appends — with one to three more Appends
    /// to random log keys after it, each value the first's with a unique suffix.
    fn maybe_batch(&mut self, op: Op) -> Batch {
        let Op::Append { value, .. } = &op else {
            return op.into();
        };
        if !self.batches.chance(BATCH_CHANCE) {
            return op.into();
        }
        let first = String::from_utf8_lossy(value);
        let stem = first.trim_end_matches('>').to_string();
        let mut ops = vec![op];
        for i in 0..self.batches.range(1, 3) {
            let key = LOG_KEYS[self.batches.below(LOG_KEYS.len() as u64) as usize];
            ops.push(append(key, &format!("{stem}.{i}>")));
        }
        Batch::new(ops).expect("a few small appends form a batch")
    }
}
