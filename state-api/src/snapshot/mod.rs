//! Snapshots: handles to what they wrote, where they write it, the
//! asynchronous task that writes it, and the coordinator-side assignment of
//! old handles to the subtasks of a new parallelism.

pub mod handle;
pub mod metadata;
pub mod raw;
pub mod rescale;
pub mod stream;
pub mod task;

use serde::{Deserialize, Serialize};

use crate::format::frame::Compression;

/// Whether a snapshot is a checkpoint or a savepoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// Taken by the coordinator, subject to retention; a backend may write it
    /// incrementally.
    #[default]
    Checkpoint,
    /// Triggered by a user: always a full snapshot in the canonical format,
    /// self-contained, never removed by retention.
    Savepoint,
}

/// Options of one snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOptions {
    /// Compression of the snapshot's frames.
    pub compression: Compression,
    /// Checkpoint or savepoint.
    pub kind: SnapshotKind,
}

impl SnapshotOptions {
    /// Options of a savepoint (full, canonical) with this compression.
    pub fn savepoint(compression: Compression) -> Self {
        SnapshotOptions {
            compression,
            kind: SnapshotKind::Savepoint,
        }
    }
}
