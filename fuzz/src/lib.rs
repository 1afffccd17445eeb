//! Checks behind the fuzz targets, one per decoder of persisted bytes.
//!
//! Each check takes arbitrary bytes, runs a public decode entry point of
//! `state-api` and asserts what it can:
//!
//! * decoding returns `Ok` or `Err`, never panics (libFuzzer reports a panic,
//!   an overflow, an out-of-memory allocation or a sanitizer report as a crash);
//! * what decodes also survives what a restore does next (opening narrowed
//!   handles, rescale assignment, sizes);
//! * what decodes, encoded again with the public encoders, decodes to the
//!   same value.
//!
//! The targets in `fuzz_targets/` are one line each, so the same checks run
//! on stable over the committed seeds (`cargo run --bin seeds`).

#![forbid(unsafe_code)]

pub mod byte_reader;
pub mod frame;
pub mod keyed;
pub mod metadata;
pub mod operator;
pub mod seeds;

/// A fuzz target: its name (the binary and the seed folder) and its check.
pub struct Target {
    /// Name of the binary in `fuzz_targets/` and of `seeds/<name>/`.
    pub name: &'static str,
    /// Runs one input.
    pub check: fn(&[u8]),
}

/// Every target, in the order `scripts/fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "keyed_file",
        check: keyed::keyed_file,
    },
    Target {
        name: "delta_file",
        check: keyed::keyed_file,
    },
    Target {
        name: "records",
        check: keyed::records,
    },
    Target {
        name: "operator_file",
        check: operator::operator_file,
    },
    Target {
        name: "metadata",
        check: metadata::metadata_file,
    },
    Target {
        name: "native_handle",
        check: metadata::native_handle,
    },
    Target {
        name: "frame",
        check: frame::frame,
    },
    Target {
        name: "byte_reader",
        check: byte_reader::byte_reader,
    },
];
