//! Fuzz target: [`kv_fuzz::records`].

fn main() {
    afl::fuzz!(|data: &[u8]| kv_fuzz::records(data));
}
