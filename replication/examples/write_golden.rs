//! Rewrites the golden files of every persisted format (`replication/tests/golden/`) from
//! this build's encoding. Run it only after a deliberate format change — which must also
//! raise that format's tag and `kv_server::config::DATA_FORMAT` — and commit the result:
//!
//! ```text
//! cargo run -p kv-replication --example write_golden
//! ```

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    std::fs::create_dir_all(&dir)?;
    for sample in kv_replication::formats::samples() {
        let path = dir.join(format!("{}.bin", sample.name));
        std::fs::write(&path, &sample.bytes)?;
        println!("{} ({} bytes)", path.display(), sample.bytes.len());
    }
    Ok(())
}
