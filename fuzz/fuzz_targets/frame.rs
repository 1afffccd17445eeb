//! Frames at arbitrary offsets, plain and zstd (`flowstate_fuzz::frame::frame`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::targets::frame(data));
