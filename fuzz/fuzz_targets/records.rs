//! Record payloads of full and delta files, parsed without a frame around them
//! (`flowstate_fuzz::keyed::records`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::targets::records(data));
