//! Replays every seed (`corpus/TARGET/`) and every input a fuzzer once crashed on
//! (`regressions/TARGET/`) through its target, as the fuzzers run them: no input may panic.

use std::path::Path;

#[test]
fn every_seed_and_regression_input_runs_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in kv_fuzz::TARGETS {
        let mut seeds = 0;
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("directory entry").path();
                let bytes = std::fs::read(&path).expect("read input");
                println!("{}", path.display());
                target(&bytes);
                if kind == "corpus" {
                    seeds += 1;
                }
            }
        }
        assert!(seeds > 0, "target {name} has no seed corpus");
    }
}
