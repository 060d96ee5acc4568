//! Fuzz target `payload`: see `reign_fuzz::payload` (src/lib.rs) for what it checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| reign_fuzz::payload(data));
