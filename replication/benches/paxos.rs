//! Bench (in progress).
fn main() {}
