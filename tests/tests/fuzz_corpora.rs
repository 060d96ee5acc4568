//! The fuzz corpora, replayed: `fuzz/` is its own cargo workspace (cargo
//! fuzz wants it so), which `cargo test --workspace` does not see. This test
//! runs its tests as a subprocess — every file of `fuzz/corpus/<target>/`
//! and `fuzz/regressions/<target>/` through the targets' logic, on stable
//! Rust, with `--cfg fuzzing` for the plaintext peer hook of the core.
//! The build goes to `target/fuzz-replay`, apart from the main build.

use std::path::Path;
use std::process::Command;

#[test]
fn fuzz_corpora_replay() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the repository");
    let output = Command::new(env!("CARGO"))
        .arg("test")
        .arg("--manifest-path")
        .arg(repo.join("fuzz").join("Cargo.toml"))
        .env("RUSTFLAGS", "--cfg fuzzing")
        // Would take precedence over RUSTFLAGS if cargo passed it down.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", repo.join("target").join("fuzz-replay"))
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "replaying the fuzz corpora failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("test result: ok"),
        "no fuzz tests ran:\n{stdout}\n{stderr}"
    );
}
