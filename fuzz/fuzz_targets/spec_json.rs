//! Fuzz target `spec_json`: see `reign_fuzz::spec_json` (src/lib.rs) for what it checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| reign_fuzz::spec_json(data));
