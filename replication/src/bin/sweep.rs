//! Seed sweeps on the simulator.
//!
//! `sweep [--workload paxos|kv|shardmaster|shardkv|pb] --seeds A..B` runs one random fault schedule
//! per seed and stops at the first failing seed, printing it and the tail of its trace;
//! `--seed N` replays one seed and prints its trace hash. Exits non-zero on failure,
//! including a seed that fails once and passes when replayed (nondeterminism).
//!
//! - `paxos` (the default): a safety phase with faults, then a healed liveness phase in
//!   which every started instance must decide.
//! - `kv`, `shardmaster` (the group sweep, `kv_replication::sim::group_sweep`): concurrent
//!   clerks against a replicated group — the KV group, or the shard master — under
//!   partitions, unreliable links, crashes with torn writes, minority disk wipes and
//!   restored old backups; every history is checked for linearizability and the healed
//!   group must converge.
//! - `shardkv` (`kv_replication::sim::shardkv_sweep`): a sharded cluster — shard masters
//!   and several groups — under random joins, leaves and moves and faults across the
//!   world; it must settle, and every history is checked for linearizability.
//! - `pb` (`kv_replication::sim::pb_sweep`): primary/backup servers and their view service
//!   under the faults that design tolerates (partitions, unreliable nodes, crashes of
//!   servers; never of the view service, a single point of failure); every history is
//!   checked for linearizability and the healed pair must hold the same data.

use std::ops::Range;
use std::process::ExitCode;
use std::time::Instant;

use kv_replication::sim::group_sweep::{Failure, Outcome, Totals};
use kv_replication::sim::{kv_sweep, pb_sweep, shardkv_sweep, shardmaster_sweep, sweep};

/// Trace lines kept for a failure report (override with `KV_SWEEP_TRACE_LINES`).
const TRACE_LINES_ON_FAILURE: usize = 200;

fn trace_lines() -> usize {
    std::env::var("KV_SWEEP_TRACE_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TRACE_LINES_ON_FAILURE)
}

enum Mode {
    Seeds(Range<u64>),
    Seed(u64),
}

#[derive(Clone, Copy)]
enum Workload {
    Paxos,
    Group(Group),
}

/// A workload of the group sweep: its name and how to run one seed.
#[derive(Clone, Copy)]
struct Group {
    name: &'static str,
    run: fn(u64, usize) -> Result<Outcome, Failure>,
}

const GROUPS: [Group; 4] = [
    Group {
        name: "kv",
        run: kv_sweep::run,
    },
    Group {
        name: "shardmaster",
        run: shardmaster_sweep::run,
    },
    Group {
        name: shardkv_sweep::NAME,
        run: shardkv_sweep::run,
    },
    Group {
        name: pb_sweep::NAME,
        run: pb_sweep::run,
    },
];

fn parse_args() -> Result<(Workload, Mode), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut workload = Workload::Paxos;
    if let Some(i) = args.iter().position(|a| a == "--workload") {
        let name = args
            .get(i + 1)
            .cloned()
            .ok_or("--workload wants paxos, kv, shardmaster, shardkv or pb")?;
        workload = match (name.as_str(), GROUPS.iter().find(|g| g.name == name)) {
            ("paxos", _) => Workload::Paxos,
            (_, Some(group)) => Workload::Group(*group),
            (other, None) => {
                return Err(format!(
                    "unknown workload {other}: paxos, kv, shardmaster, shardkv or pb"
                ))
            }
        };
        args.drain(i..i + 2);
    }
    parse_mode(&args).map(|mode| (workload, mode))
}

fn parse_mode(args: &[String]) -> Result<Mode, String> {
    match args {
        [flag, range] if flag == "--seeds" => {
            let (a, b) = range
                .split_once("..")
                .ok_or_else(|| format!("--seeds wants A..B, got {range}"))?;
            let a: u64 = a.parse().map_err(|e| format!("bad seed {a}: {e}"))?;
            let b: u64 = b.parse().map_err(|e| format!("bad seed {b}: {e}"))?;
            Ok(Mode::Seeds(a..b))
        }
        [flag, seed] if flag == "--seed" => {
            let s: u64 = seed.parse().map_err(|e| format!("bad seed {seed}: {e}"))?;
            Ok(Mode::Seed(s))
        }
        _ => Err(
            "usage: sweep [--workload paxos|kv|shardmaster|shardkv|pb] --seeds A..B | --seed N"
                .into(),
        ),
    }
}

fn report(failure: &sweep::Failure) {
    eprintln!("FAILED seed {}: {}", failure.seed, failure.message);
    eprintln!("--- last {} trace lines ---", failure.trace.len());
    for line in &failure.trace {
        eprintln!("{line}");
    }
    eprintln!(
        "replay: cargo run -p kv-replication --features sim --release --bin sweep -- --seed {}",
        failure.seed
    );
}

fn replay(seed: u64) -> ExitCode {
    match sweep::run(seed, trace_lines()) {
        Ok(o) => {
            println!(
                "seed {seed}: ok, {} peers, {} instances, {} crashes, {} messages, trace hash {:016x}",
                o.peers, o.started, o.crashes, o.messages, o.trace_hash
            );
            ExitCode::SUCCESS
        }
        Err(f) => {
            report(&f);
            ExitCode::FAILURE
        }
    }
}

fn sweep_range(seeds: Range<u64>) -> ExitCode {
    let began = Instant::now();
    let (mut instances, mut crashes, mut messages) = (0, 0, 0);
    for seed in seeds.clone() {
        match sweep::run(seed, 0) {
            Ok(o) => {
                instances += o.started;
                crashes += o.crashes as u64;
                messages += o.messages;
            }
            Err(_) => {
                // Run it again with tracing on to show what happened.
                let failure = match sweep::run(seed, trace_lines()) {
                    Err(f) => f,
                    Ok(_) => sweep::Failure {
                        seed,
                        message: "failed once, passed on replay: nondeterminism".into(),
                        trace: vec![],
                    },
                };
                report(&failure);
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "seeds {}..{}: all ok ({instances} instances, {crashes} crashes, {messages} messages) in {:.1?}",
        seeds.start,
        seeds.end,
        began.elapsed()
    );
    ExitCode::SUCCESS
}

fn group_report(group: Group, failure: &Failure) {
    eprintln!("{failure}");
    eprintln!(
        "replay: cargo run -p kv-replication --features sim --release --bin sweep -- --workload {} --seed {}",
        group.name, failure.seed
    );
}

fn group_replay(group: Group, seed: u64) -> ExitCode {
    match (group.run)(seed, trace_lines()) {
        Ok(o) => {
            println!(
                "{} seed {seed}: ok, {} replicas, {} operations, {} crashes, {} wipes, {} restores, trace hash {:016x}",
                group.name, o.replicas, o.operations, o.crashes, o.wipes, o.restores, o.trace_hash
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            group_report(group, &failure);
            ExitCode::FAILURE
        }
    }
}

fn group_sweep_range(group: Group, seeds: Range<u64>) -> ExitCode {
    let began = Instant::now();
    let mut totals = Totals::default();
    for seed in seeds.clone() {
        match (group.run)(seed, 0) {
            Ok(o) => totals.add(&o),
            Err(first) => {
                // Run it again with tracing on to show what happened.
                let failure = (group.run)(seed, trace_lines()).err().unwrap_or(Failure {
                    message: format!(
                        "failed once, passed on replay: nondeterminism (first: {})",
                        first.message
                    ),
                    trace: vec![],
                    ..first
                });
                group_report(group, &failure);
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{} seeds {}..{}: all ok ({totals}) in {:.1?}",
        group.name,
        seeds.start,
        seeds.end,
        began.elapsed()
    );
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // Failures are reported with their seed and trace below; skip the default backtrace.
    std::panic::set_hook(Box::new(|_| {}));
    match parse_args() {
        Ok((Workload::Paxos, Mode::Seeds(r))) => sweep_range(r),
        Ok((Workload::Paxos, Mode::Seed(s))) => replay(s),
        Ok((Workload::Group(g), Mode::Seeds(r))) => group_sweep_range(g, r),
        Ok((Workload::Group(g), Mode::Seed(s))) => group_replay(g, s),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
