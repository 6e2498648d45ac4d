//! The `kv` command-line tool.
fn main() {
    println!("kv");
}
