//! Runs the KV-group bench's closed loop (puts) for a given number of operations after
//! warm-up and prints what it did — for measuring the cost of an operation outside
//! criterion, e.g. in CPU instructions, which a shared machine cannot disturb:
//!
//! ```sh
//! cargo build --release -p kv-replication --features sim --example kvgroup_ops
//! for n in 20000 40000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/kvgroup_ops 256 $n 2>&1 | grep Collected
//! done   # (second - first) / 20000 = instructions per operation
//! ```

use std::time::Instant;

use kv_replication::sim::load::{Mix, Run};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: kvgroup_ops CLERKS OPS";
    let clerks: usize = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let ops: u64 = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let mut run = Run::new(clerks, Mix::Puts);
    let (done0, applied0) = (run.done(), run.applied());
    let began = Instant::now();
    run.complete(ops);
    let wall = began.elapsed();
    let done = run.done() - done0;
    println!(
        "{clerks} clerks: {done} puts in {} instances, {:.0} per wall second",
        run.applied() - applied0,
        done as f64 / wall.as_secs_f64()
    );
}
