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
//! The file targets run each input as it is and again with its checksums
//! repaired ([`checksums`]), so that mutations reach the parsers behind the
//! CRCs. The targets in `fuzz_targets/` are one line each over [`targets`],
//! so the same checks run on stable over the committed seeds
//! (`cargo run --bin seeds`).

#![forbid(unsafe_code)]

pub mod byte_reader;
pub mod checksums;
pub mod frame;
pub mod keyed;
pub mod metadata;
pub mod operator;
pub mod seeds;

/// What each fuzz target runs on one input.
pub mod targets {
    use crate::checksums::as_is_and_repaired;
    use crate::{byte_reader, frame, keyed, metadata, operator};

    /// Full keyed files: [`keyed::keyed_file`].
    pub fn keyed_file(data: &[u8]) {
        as_is_and_repaired(data, keyed::keyed_file);
    }

    /// Delta keyed files: the same reader and checks, seeded with delta files.
    pub fn delta_file(data: &[u8]) {
        as_is_and_repaired(data, keyed::keyed_file);
    }

    /// Record payloads: [`keyed::records`].
    pub fn records(data: &[u8]) {
        keyed::records(data);
    }

    /// Operator files: [`operator::operator_file`].
    pub fn operator_file(data: &[u8]) {
        as_is_and_repaired(data, operator::operator_file);
    }

    /// `_metadata` files: [`metadata::metadata_file`].
    pub fn metadata(data: &[u8]) {
        as_is_and_repaired(data, metadata::metadata_file);
    }

    /// Native checkpoint handles inside `_metadata`: [`metadata::native_handle`].
    pub fn native_handle(data: &[u8]) {
        as_is_and_repaired(data, metadata::native_handle);
    }

    /// Frames: [`frame::frame`].
    pub fn frame(data: &[u8]) {
        frame::frame(data);
    }

    /// `ByteReader` reads: [`byte_reader::byte_reader`].
    pub fn byte_reader(data: &[u8]) {
        byte_reader::byte_reader(data);
    }
}

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
        check: targets::keyed_file,
    },
    Target {
        name: "delta_file",
        check: targets::delta_file,
    },
    Target {
        name: "records",
        check: targets::records,
    },
    Target {
        name: "operator_file",
        check: targets::operator_file,
    },
    Target {
        name: "metadata",
        check: targets::metadata,
    },
    Target {
        name: "native_handle",
        check: targets::native_handle,
    },
    Target {
        name: "frame",
        check: targets::frame,
    },
    Target {
        name: "byte_reader",
        check: targets::byte_reader,
    },
];
