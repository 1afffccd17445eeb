//! Native (RocksDB) checkpoint handles, decoded as part of `_metadata`
//! (`flowstate_fuzz::metadata::native_handle`). Seeds hold only native handles.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::targets::native_handle(data));
