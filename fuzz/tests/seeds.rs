//! The seed corpus is what `reign_fuzz::seeds` says, and its structured
//! inputs parse back to the values they were written from.
//!
//! `REIGN_FUZZ_WRITE_SEEDS=1 cargo test --manifest-path fuzz/Cargo.toml
//! --test seeds` (with `RUSTFLAGS="--cfg fuzzing"`) rewrites the files.

use std::fmt::Debug;
use std::path::Path;

use arbitrary::{Arbitrary, Unstructured};
use reign_fuzz::unarb::Unarbitrary;
use reign_fuzz::{HandshakeInput, NodeInput};

/// `input`, written as bytes, parses back to itself.
fn parses_back<T>(input: &T)
where
    T: for<'a> Arbitrary<'a> + Unarbitrary + PartialEq + Debug,
{
    let bytes = input.to_input();
    let back = T::arbitrary_take_rest(Unstructured::new(&bytes)).unwrap();
    assert_eq!(&back, input);
}

#[test]
fn structured_seeds_parse_back() {
    let (handshakes, nodes) = reign_fuzz::seeds::structured();
    handshakes.iter().for_each(parses_back);
    nodes.iter().for_each(parses_back);
}

/// Whatever the fuzzer parses writes back to bytes that parse to the same
/// input: the generated writers mirror the derived parsers for every
/// variant and field, not only those the seeds use.
#[test]
fn parsed_inputs_write_back() {
    // Pseudo-random inputs (xorshift64*) of every length up to 2 KiB.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut byte = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
    };
    for len in 0..2048 {
        let data: Vec<u8> = (0..len).map(|_| byte()).collect();
        if let Ok(input) = NodeInput::arbitrary_take_rest(Unstructured::new(&data)) {
            parses_back(&input);
        }
        if let Ok(input) = HandshakeInput::arbitrary_take_rest(Unstructured::new(&data)) {
            parses_back(&input);
        }
    }
}

#[test]
fn corpus_holds_the_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let write = std::env::var_os("REIGN_FUZZ_WRITE_SEEDS").is_some_and(|v| v == "1");
    let mut stale = Vec::new();
    for seed in reign_fuzz::seeds::all() {
        let path = root.join(seed.target).join(&seed.file);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &seed.data).unwrap();
        } else if std::fs::read(&path).ok().as_deref() != Some(&seed.data[..]) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "seed files missing or stale (rewrite them with REIGN_FUZZ_WRITE_SEEDS=1):\n  {}",
        stale.join("\n  ")
    );
}
