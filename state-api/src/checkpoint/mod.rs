//! Checkpoint storage on a file system: the directory layout, file streams
//! with small-state inlining, the versioned `_metadata`, atomic publishing,
//! and the coordinator (retention, shared files, cancellation policies,
//! savepoints). Used by every backend that writes files.

pub mod coordinator;
pub mod layout;
pub mod metadata;
pub mod storage;
pub mod stream;

pub use coordinator::{
    dispose_savepoint, CancellationPolicy, CheckpointConfig, CheckpointCoordinator,
    CompletedCheckpoint, JobStatus, PendingCheckpoint, RestoreMode,
};
pub use layout::JobLayout;
pub use metadata::{load_metadata, CheckpointMetadata, OperatorState, SnapshotKind, SubtaskState};
pub use storage::{FaultyStorage, LocalStorage, Storage};
