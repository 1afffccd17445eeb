//! `_metadata` files: decode, what a restore does with the handles, round trip
//! (`flowstate_fuzz::metadata::metadata_file`). Seeds hold every handle kind.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::targets::metadata(data));
