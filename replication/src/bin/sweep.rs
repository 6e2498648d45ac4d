//! Seed sweeps on the simulator.
//!
//! `sweep [--workload paxos|kv] --seeds A..B` runs one random fault schedule per seed and
//! stops at the first failing seed, printing it and the tail of its trace; `--seed N`
//! replays one seed and prints its trace hash. Exits non-zero on failure.
//!
//! - `paxos` (the default): a safety phase with faults, then a healed liveness phase in
//!   which every started instance must decide.
//! - `kv`: concurrent clerks against a replicated KV group under partitions, unreliable
//!   links, crashes with torn writes and minority disk wipes; every history is checked for
//!   linearizability and the healed group must converge.

use std::ops::Range;
use std::process::ExitCode;
use std::time::Instant;

use kv_replication::sim::{kv_sweep, shardkv_sweep, sweep};

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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Paxos,
    Kv,
    ShardKv,
}

fn parse_args() -> Result<(Workload, Mode), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut workload = Workload::Paxos;
    if let Some(i) = args.iter().position(|a| a == "--workload") {
        let name = args
            .get(i + 1)
            .cloned()
            .ok_or("--workload wants paxos or kv")?;
        workload = match name.as_str() {
            "paxos" => Workload::Paxos,
            "kv" => Workload::Kv,
            "shardkv" => Workload::ShardKv,
            other => return Err(format!("unknown workload {other}: paxos, kv or shardkv")),
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
        _ => Err("usage: sweep [--workload paxos|kv] --seeds A..B | --seed N".into()),
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

fn kv_replay(seed: u64) -> ExitCode {
    match kv_sweep::run(seed, trace_lines()) {
        Ok(o) => {
            println!(
                "seed {seed}: ok, {} replicas, {} operations, {} crashes, {} wipes, {} restores, trace hash {:016x}",
                o.replicas, o.operations, o.crashes, o.wipes, o.restores, o.trace_hash
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{failure}");
            eprintln!(
                "replay: cargo run -p kv-replication --features sim --release --bin sweep -- --workload kv --seed {seed}"
            );
            ExitCode::FAILURE
        }
    }
}

fn kv_sweep_range(seeds: Range<u64>) -> ExitCode {
    let began = Instant::now();
    let (mut operations, mut crashes, mut wipes, mut restores) = (0, 0, 0, 0);
    for seed in seeds.clone() {
        match kv_sweep::run(seed, 0) {
            Ok(o) => {
                operations += o.operations;
                crashes += o.crashes as u64;
                wipes += o.wipes as u64;
                restores += o.restores as u64;
            }
            Err(_) => return kv_replay(seed),
        }
    }
    println!(
        "kv seeds {}..{}: all ok ({operations} operations, {crashes} crashes, {wipes} wipes, {restores} restores of old backups) in {:.1?}",
        seeds.start,
        seeds.end,
        began.elapsed()
    );
    ExitCode::SUCCESS
}

fn shardkv_replay(seed: u64) -> ExitCode {
    match shardkv_sweep::run(seed, trace_lines()) {
        Ok(o) => {
            println!(
                "seed {seed}: ok, {} groups, {} configurations, {} operations, {} crashes, {} wipes, trace hash {:016x}",
                o.groups, o.configs, o.operations, o.crashes, o.wipes, o.trace_hash
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{failure}");
            eprintln!(
                "replay: cargo run -p kv-replication --features sim --release --bin sweep -- --workload shardkv --seed {seed}"
            );
            ExitCode::FAILURE
        }
    }
}

fn shardkv_sweep_range(seeds: Range<u64>) -> ExitCode {
    let began = Instant::now();
    let (mut operations, mut configs, mut crashes, mut wipes) = (0, 0, 0, 0);
    for seed in seeds.clone() {
        match shardkv_sweep::run(seed, 0) {
            Ok(o) => {
                operations += o.operations;
                configs += o.configs;
                crashes += o.crashes as u64;
                wipes += o.wipes as u64;
            }
            Err(_) => return shardkv_replay(seed),
        }
    }
    println!(
        "shardkv seeds {}..{}: all ok ({operations} operations, {configs} configurations, {crashes} crashes, {wipes} wipes) in {:.1?}",
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
        Ok((Workload::Kv, Mode::Seeds(r))) => kv_sweep_range(r),
        Ok((Workload::Kv, Mode::Seed(s))) => kv_replay(s),
        Ok((Workload::ShardKv, Mode::Seeds(r))) => shardkv_sweep_range(r),
        Ok((Workload::ShardKv, Mode::Seed(s))) => shardkv_replay(s),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
