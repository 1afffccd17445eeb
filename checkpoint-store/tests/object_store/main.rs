//! The object-store storage: every `Storage` operation on the in-memory
//! store, on local files and (when `FLOWSTATE_S3_URL` names a bucket of a
//! local S3 server, as `scripts/test` arranges) on S3; fault injection above
//! and below object_store's retry layer; calls from inside async runtimes.

#![allow(clippy::unwrap_used)]

#[allow(dead_code)]
mod common;
mod faults;
mod runtime;
mod s3;
mod storage;
