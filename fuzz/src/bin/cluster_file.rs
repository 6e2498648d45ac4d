//! Fuzz target: [`kv_fuzz::cluster_file`].

fn main() {
    afl::fuzz!(|data: &[u8]| kv_fuzz::cluster_file(data));
}
