//! Sweep (in progress).
fn main() {}
