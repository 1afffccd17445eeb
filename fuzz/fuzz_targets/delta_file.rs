//! Delta keyed files (header flag `FLAG_DELTA`): the same reader and checks as
//! `keyed_file`, seeded with delta files whose records include deletes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::targets::delta_file(data));
