//! Snapshots: handles to what they wrote, where they write it, the
//! asynchronous task that writes it, and the coordinator-side assignment of
//! old handles to the subtasks of a new parallelism.

pub mod handle;
pub mod rescale;
pub mod stream;
pub mod task;

use serde::{Deserialize, Serialize};

use crate::format::frame::Compression;

/// Options of one snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOptions {
    /// Compression of the snapshot's frames.
    pub compression: Compression,
}
