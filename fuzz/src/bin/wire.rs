//! Fuzz target: [`kv_fuzz::wire`].

fn main() {
    afl::fuzz!(|data: &[u8]| kv_fuzz::wire(data));
}
