//! Fuzz target: [`kv_fuzz::wal`].

fn main() {
    afl::fuzz!(|data: &[u8]| kv_fuzz::wal(data));
}
