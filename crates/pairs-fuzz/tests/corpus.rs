//! Replays the committed fuzz corpus (and every crash input kept as a regression) through each
//! target on stable Rust: the fuzzers' findings stay fixed without a nightly toolchain.

use std::path::Path;

#[test]
fn every_corpus_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut ran = 0;
    for (name, target) in pairs_fuzz::TARGETS {
        for dir in ["corpus", "regressions"] {
            let dir = root.join(dir).join(name);
            let Ok(files) = std::fs::read_dir(&dir) else {
                continue;
            };
            for file in files {
                let path = file.expect("corpus entry").path();
                let data = std::fs::read(&path).expect("corpus file");
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name}: {} panics", path.display());
                ran += 1;
            }
        }
    }
    eprintln!("{ran} corpus inputs replayed");
}

#[test]
fn every_target_has_a_fuzz_binary_and_survives_trivial_inputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/fuzz_targets");
    for (name, target) in pairs_fuzz::TARGETS {
        assert!(
            root.join(format!("{name}.rs")).exists(),
            "no fuzz/fuzz_targets/{name}.rs"
        );
        for data in [&b""[..], &[0], &[0xff; 64], &[1; 300]] {
            target(data);
        }
    }
}
