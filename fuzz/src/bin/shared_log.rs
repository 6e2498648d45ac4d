//! Fuzz target: [`kv_fuzz::shared_log`].

fn main() {
    afl::fuzz!(|data: &[u8]| kv_fuzz::shared_log(data));
}
