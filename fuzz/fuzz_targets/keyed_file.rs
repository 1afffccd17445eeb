//! Full keyed snapshot files through the whole keyed reader, records and round trip
//! (`flowstate_fuzz::keyed::keyed_file`). Seeds: the golden files and a file of every state kind.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::targets::keyed_file(data));
