//! Golden bytes of every persisted and replicated format (see `kv_replication::formats`):
//! this build must encode each sample exactly as the checked-in file holds it, and must
//! decode the checked-in file to what the sample means. A change that would strand the
//! data directories (or the decided values) of the version before fails here; a deliberate
//! one raises its tag, rewrites the files (`cargo run -p kv-replication --example
//! write_golden`) and keeps a reader for the old format if old data must still be read.

use std::path::Path;

use kv_replication::formats::{check, samples};

#[test]
fn every_format_encodes_as_its_golden_file_and_the_golden_file_decodes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let samples = samples();
    assert!(samples.len() >= 7, "a sample of every format");
    for sample in samples {
        let path = dir.join(format!("{}.bin", sample.name));
        let golden = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (write it with `cargo run -p kv-replication --example write_golden`)",
                path.display()
            )
        });
        assert!(
            sample.bytes == golden,
            "{}: this build encodes it differently from the golden file ({} vs {} bytes): a \
             format change must raise its tag and the data format",
            sample.name,
            sample.bytes.len(),
            golden.len()
        );
        check(sample.name, &golden).unwrap_or_else(|e| panic!("{}: {e}", sample.name));
    }
}

#[test]
fn damaged_golden_bytes_do_not_decode_as_the_sample() {
    for sample in samples() {
        let mut damaged = sample.bytes.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0x40;
        assert!(
            check(sample.name, &damaged).is_err(),
            "{}: a flipped bit went unnoticed",
            sample.name
        );
    }
}
