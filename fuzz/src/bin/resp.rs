//! Fuzz target: [`kv_fuzz::resp`].

fn main() {
    afl::fuzz!(|data: &[u8]| kv_fuzz::resp(data));
}
