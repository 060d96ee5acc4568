//! Fuzz target `node`: see `reign_fuzz::node` (src/lib.rs) for what it checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| reign_fuzz::node(data));
