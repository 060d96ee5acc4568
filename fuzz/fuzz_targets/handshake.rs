//! Fuzz target `handshake`: see `reign_fuzz::handshake` (src/lib.rs) for what it checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| reign_fuzz::handshake(data));
