//! Fuzz target: [`kv_fuzz::snapshot`].

fn main() {
    afl::fuzz!(|data: &[u8]| kv_fuzz::snapshot(data));
}
