//! Replays every file of `corpus/<target>/` and `regressions/<target>/`
//! (inputs that once broke a target) through the target's logic, on stable
//! Rust and without libFuzzer. Run with `RUSTFLAGS="--cfg fuzzing"`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = inputs(&root.join("corpus").join(target));
    assert!(!corpus.is_empty(), "corpus/{target}/ has no inputs");
    let regressions = inputs(&root.join("regressions").join(target));
    let mut failures = Vec::new();
    for file in corpus.iter().chain(&regressions) {
        let data = std::fs::read(file).expect("read an input");
        if catch_unwind(AssertUnwindSafe(|| reign_fuzz::run_target(target, &data))).is_err() {
            failures.push(file.display().to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} inputs fail (the panics are above):\n  {}",
        failures.len(),
        corpus.len() + regressions.len(),
        failures.join("\n  ")
    );
    eprintln!(
        "{target}: {} corpus and {} regression inputs replayed",
        corpus.len(),
        regressions.len()
    );
}

#[test]
fn frame_decoder() {
    replay("frame_decoder");
}

#[test]
fn handshake() {
    replay("handshake");
}

#[test]
fn node() {
    replay("node");
}

#[test]
fn spec_json() {
    replay("spec_json");
}

#[test]
fn payload() {
    replay("payload");
}

#[test]
fn every_target_is_replayed() {
    assert_eq!(
        reign_fuzz::TARGETS,
        ["frame_decoder", "handshake", "node", "spec_json", "payload"]
    );
}
