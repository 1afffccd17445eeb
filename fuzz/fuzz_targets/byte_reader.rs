//! Sequences of `ByteReader` reads chosen by the input: varints, integers, byte
//! strings, strings, schemas, counts (`flowstate_fuzz::byte_reader::byte_reader`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| flowstate_fuzz::targets::byte_reader(data));
