//! # reign-fuzz: the logic of reign's cargo-fuzz targets
//!
//! Every fuzz target in `fuzz_targets/` is a one-liner calling one function
//! of this library, so the same logic replays on stable Rust without
//! libFuzzer: `tests/replay.rs` runs every file of `corpus/<target>/` and
//! `regressions/<target>/` through [`run_target`].
//!
//! | target | function | what it checks beyond "no panic" |
//! |---|---|---|
//! | `frame_decoder` | [`frame_decoder`] | buffer capacity bound, chunking independence, byte-exact re-encoding, round trips |
//! | `handshake` | [`handshake`] | `Done` only for a hello that checks out, typed errors, nothing after `Done` |
//! | `node` | [`node`] | a whole `Core`: bounded per-peer memory, other links survive, well-formed output, events match state |
//! | `spec_json` | [`spec_json`] | typed errors, JSON round trip, `validate_nodes`/`resolve` agree, a node starts from any spec that resolves |
//! | `payload` | [`payload`] | every registered type and control bodies: typed errors, bounded allocation, round trips |
//!
//! The crate needs `--cfg fuzzing` (cargo fuzz sets it; for `cargo test`
//! set `RUSTFLAGS="--cfg fuzzing"`): the `node` target reaches the frames
//! above TLS through `Core::fuzz_connect_peer`, which only fuzz builds have.

#[cfg(not(fuzzing))]
compile_error!(
    "reign-fuzz needs `--cfg fuzzing`: run it with cargo fuzz, or \
     `RUSTFLAGS=\"--cfg fuzzing\" cargo test --manifest-path fuzz/Cargo.toml`"
);

pub mod alloc_meter;
pub mod certs;
pub mod frame_decoder;
pub mod handshake;
pub mod node;
pub mod payload;
pub mod seeds;
pub mod spec_json;
pub mod unarb;

pub use frame_decoder::frame_decoder;
pub use handshake::{handshake, HandshakeInput};
pub use node::{node, NodeInput};
pub use payload::payload;
pub use spec_json::spec_json;

/// The fuzz targets, by name.
pub const TARGETS: [&str; 5] = ["frame_decoder", "handshake", "node", "spec_json", "payload"];

/// Runs one input through the target called `name`.
///
/// # Panics
/// If `name` is not one of [`TARGETS`], or (the point) if the input breaks
/// one of the target's checks.
pub fn run_target(name: &str, data: &[u8]) {
    match name {
        "frame_decoder" => frame_decoder(data),
        "handshake" => handshake(data),
        "node" => node(data),
        "spec_json" => spec_json(data),
        "payload" => payload(data),
        other => panic!("no fuzz target called {other:?}"),
    }
}

/// A small deterministic generator for choices derived from the input
/// (chunk sizes and the like): xorshift64*.
#[derive(Clone, Debug)]
pub(crate) struct Choices(u64);

impl Choices {
    pub(crate) fn new(seed: u64) -> Choices {
        Choices(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..=max`.
    pub(crate) fn up_to(&mut self, max: usize) -> usize {
        (self.next() % (max as u64 + 1)) as usize
    }
}
