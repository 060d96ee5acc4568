//! Fuzz target `frame_decoder`: see `reign_fuzz::frame_decoder` (src/lib.rs) for what it checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| reign_fuzz::frame_decoder(data));
