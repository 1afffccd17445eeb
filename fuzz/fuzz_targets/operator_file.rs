//! Operator snapshot files: layout, every element, rescale parts, round trip
//! (`flowstate_fuzz::operator::operator_file`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::targets::operator_file(data));
