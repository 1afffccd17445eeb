//! The one public error type of the state layer.
//!
//! [`Error`] carries a detailed, structured variant (which file, which offset,
//! which state, which key group); [`Error::kind`] maps it to a coarse
//! [`ErrorKind`] that a caller can act on without matching every variant.

use std::fmt;
use std::io;

use crate::codec::{CodecError, CodecSchema};
use crate::key_group::KeyGroupRange;

/// Result alias used throughout the state layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a caller can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed something invalid (a bad parallelism, a key outside
    /// this backend's key groups, a handle of another backend). Fix the call.
    InvalidArgument,
    /// Persisted bytes are damaged (checksum mismatch, truncation, bad magic).
    /// Restore from another snapshot.
    Corruption,
    /// Persisted bytes are intact but written in a format version this build
    /// does not read.
    IncompatibleFormat,
    /// A state, codec or parallelism does not match what was registered or
    /// snapshotted (another kind, an incompatible codec, another max parallelism).
    IncompatibleState,
    /// An I/O operation failed.
    Io,
    /// The operation was cancelled, typically because the backend closed while an
    /// asynchronous snapshot was running.
    Cancelled,
    /// A value, a snapshot or a frame exceeds a configured or format size limit.
    StateSizeExceeded,
    /// The backend was closed, or refuses work after an earlier failure.
    Closed,
    /// A user-provided codec or function failed.
    User,
}

/// An error of the state layer, with a detailed cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The max parallelism is outside `1..=32768`.
    #[error("max parallelism {value} is out of bounds (1..={max})")]
    InvalidMaxParallelism {
        /// The rejected value.
        value: u32,
        /// The upper bound.
        max: u32,
    },
    /// A parallelism is zero or larger than the max parallelism.
    #[error("parallelism {parallelism} is invalid for max parallelism {max_parallelism}")]
    InvalidParallelism {
        /// The rejected parallelism.
        parallelism: u32,
        /// The max parallelism it was checked against.
        max_parallelism: u32,
    },
    /// An operator index is not below the parallelism.
    #[error("operator index {index} is out of bounds for parallelism {parallelism}")]
    InvalidOperatorIndex {
        /// The rejected index.
        index: u32,
        /// The parallelism.
        parallelism: u32,
    },
    /// A key group range does not fit the max parallelism.
    #[error("key group range {range} is invalid for max parallelism {max_parallelism}")]
    InvalidKeyGroupRange {
        /// The rejected range.
        range: KeyGroupRange,
        /// The max parallelism.
        max_parallelism: u32,
    },
    /// An argument is invalid (a job id, a threshold, a path).
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// What is wrong.
        what: String,
    },
    /// A checkpoint or savepoint does not exist (or was never completed).
    #[error("not found: {what}")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The current key belongs to a key group this backend does not own.
    #[error("key group {key_group} of the current key is not in this backend's range {range}")]
    KeyGroupOutOfRange {
        /// The key's group.
        key_group: u32,
        /// The backend's range.
        range: KeyGroupRange,
    },
    /// State was accessed before any key was set.
    #[error("no current key is set; call set_current_key first")]
    NoCurrentKey,
    /// A state handle was used with a backend that did not create it.
    #[error("state handle '{name}' does not belong to this backend")]
    ForeignHandle {
        /// The state's name.
        name: String,
    },
    /// A state name is registered again with another kind or other types.
    #[error("state '{name}' is registered as {registered}, not as {requested}")]
    StateKindMismatch {
        /// The state's name.
        name: String,
        /// What it is registered (or was snapshotted) as.
        registered: String,
        /// What the caller asked for.
        requested: String,
    },
    /// A codec is incompatible with the one the state was registered or
    /// snapshotted with.
    #[error("state '{state}': {role} codec {current} cannot read data written with {written}")]
    IncompatibleCodec {
        /// The state's name (or `<key>` for the backend's key codec).
        state: String,
        /// Which codec: key, namespace, value, user key, element...
        role: &'static str,
        /// The schema the data was written with.
        written: CodecSchema,
        /// The schema of the codec given now.
        current: CodecSchema,
    },
    /// A restore asked for a max parallelism other than the snapshot's.
    #[error("snapshot {file} was taken with max parallelism {snapshot}, the backend has {backend}; max parallelism never changes across restores")]
    MaxParallelismMismatch {
        /// The snapshot file.
        file: String,
        /// The snapshot's max parallelism.
        snapshot: u32,
        /// The restoring backend's max parallelism.
        backend: u32,
    },
    /// A checksum did not match: the bytes are damaged.
    #[error("checksum mismatch in {file} at offset {offset}: expected {expected:#010x}, computed {actual:#010x}")]
    ChecksumMismatch {
        /// The file (or in-memory stream) name.
        file: String,
        /// Offset of the damaged frame.
        offset: u64,
        /// The stored checksum.
        expected: u32,
        /// The checksum of the bytes read.
        actual: u32,
    },
    /// The file ends before a structure it announces.
    #[error(
        "{file} is truncated at offset {offset}: needed {needed} bytes, {available} available"
    )]
    Truncated {
        /// The file.
        file: String,
        /// Where the structure starts.
        offset: u64,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The file does not start (or end) with the expected magic bytes.
    #[error("{file} has bad magic bytes at offset {offset}: expected {expected:02x?}, found {found:02x?}")]
    BadMagic {
        /// The file.
        file: String,
        /// Offset of the magic.
        offset: u64,
        /// The expected magic.
        expected: Vec<u8>,
        /// What was found.
        found: Vec<u8>,
    },
    /// The file declares a format version this build does not read.
    #[error("{file} has format version {version}; this build reads versions {supported:?}")]
    UnsupportedVersion {
        /// The file.
        file: String,
        /// The declared version.
        version: u16,
        /// Versions this build reads.
        supported: &'static [u16],
    },
    /// A snapshot handle in a format this backend cannot restore (a native
    /// handle of another backend kind, or a native layout version it does not
    /// read).
    #[error("{handle} cannot be restored here: {reason}")]
    UnsupportedHandle {
        /// The handle's first file.
        handle: String,
        /// Why.
        reason: String,
    },
    /// A structure inside a file is malformed (checksums passed, contents do not
    /// make sense).
    #[error("{file} is corrupted at offset {offset}: {reason}")]
    Corrupted {
        /// The file.
        file: String,
        /// Offset of the malformed structure.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A codec failed to encode or decode a value.
    #[error("state '{state}': {role} codec failed: {message}")]
    Codec {
        /// The state's name.
        state: String,
        /// Which codec.
        role: &'static str,
        /// The codec's message.
        message: String,
    },
    /// A value or a snapshot is larger than a limit.
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    SizeLimitExceeded {
        /// What was too large.
        what: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// An asynchronous operation was cancelled.
    #[error("cancelled: {reason}")]
    Cancelled {
        /// Why.
        reason: String,
    },
    /// A checkpoint completed after a newer one had completed: it was
    /// subsumed (aborted) when the newer one completed, and its late
    /// completion is refused.
    #[error("checkpoint {checkpoint_id} was subsumed by completed checkpoint {latest}; its completion is refused")]
    CheckpointSubsumed {
        /// The refused checkpoint.
        checkpoint_id: u64,
        /// The newest completed checkpoint.
        latest: u64,
    },
    /// Another coordinator of the job published this checkpoint first: its
    /// `_metadata` exists and stays; this completion is refused. Kind
    /// [`ErrorKind::Cancelled`]: the engine aborts its checkpoint, as for a
    /// subsumed one (two coordinators of one job must not keep running).
    #[error("checkpoint {checkpoint_id}: {metadata} already exists: another coordinator published this checkpoint; this completion is refused")]
    CheckpointConflict {
        /// The refused checkpoint.
        checkpoint_id: u64,
        /// The `_metadata` that exists (a path or URL).
        metadata: String,
    },
    /// The backend is closed.
    #[error("the backend is closed")]
    Closed,
    /// A file a snapshot handle references cannot be read: most often it
    /// was deleted or never written. Names the checkpoint that needs it.
    #[error("cannot read {file}, which {needed_by} needs: {source}")]
    StateFileUnreadable {
        /// The file.
        file: String,
        /// What needs it: `checkpoint N`, and for a piece that an earlier
        /// checkpoint wrote (an incremental chain), which one.
        needed_by: String,
        /// The I/O error (`NotFound` for a missing file).
        #[source]
        source: io::Error,
    },
    /// The backend refuses all work because an earlier write failed and may
    /// have left its state incomplete. Dispose of it and restore from the last
    /// completed checkpoint.
    #[error("the backend refuses work after an earlier failure (restore it from the last completed checkpoint); first failure: {first}")]
    Poisoned {
        /// The error that poisoned the backend.
        first: String,
    },
    /// An embedded storage engine (RocksDB) reported a failure. The backend
    /// classifies the engine's status into `kind`.
    #[error("{engine} {instance}: {operation} failed: {status}")]
    Engine {
        /// The engine, e.g. `RocksDB`.
        engine: &'static str,
        /// The engine instance (its folder).
        instance: String,
        /// What the backend asked the engine to do.
        operation: String,
        /// The engine's status text, as it reported it.
        status: String,
        /// What the caller can do about it.
        kind: ErrorKind,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A user function (given to apply-to-all-keys, a checkpointed function...)
    /// failed.
    #[error("{0}")]
    User(String),
}

impl Error {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidMaxParallelism { .. }
            | Error::InvalidParallelism { .. }
            | Error::InvalidOperatorIndex { .. }
            | Error::InvalidKeyGroupRange { .. }
            | Error::InvalidArgument { .. }
            | Error::NotFound { .. }
            | Error::KeyGroupOutOfRange { .. }
            | Error::NoCurrentKey
            | Error::ForeignHandle { .. } => ErrorKind::InvalidArgument,
            Error::StateKindMismatch { .. }
            | Error::IncompatibleCodec { .. }
            | Error::MaxParallelismMismatch { .. } => ErrorKind::IncompatibleState,
            Error::ChecksumMismatch { .. }
            | Error::Truncated { .. }
            | Error::BadMagic { .. }
            | Error::Corrupted { .. } => ErrorKind::Corruption,
            Error::UnsupportedVersion { .. } | Error::UnsupportedHandle { .. } => {
                ErrorKind::IncompatibleFormat
            }
            Error::Codec { .. } | Error::User(_) => ErrorKind::User,
            Error::SizeLimitExceeded { .. } => ErrorKind::StateSizeExceeded,
            Error::Cancelled { .. }
            | Error::CheckpointSubsumed { .. }
            | Error::CheckpointConflict { .. } => ErrorKind::Cancelled,
            Error::Closed | Error::Poisoned { .. } => ErrorKind::Closed,
            Error::Io { .. } | Error::StateFileUnreadable { .. } => ErrorKind::Io,
            Error::Engine { kind, .. } => *kind,
        }
    }

    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An error raised by user code.
    pub fn user(message: impl fmt::Display) -> Self {
        Error::User(message.to_string())
    }
}

/// Wraps a codec failure with the state's name and the codec's role.
pub fn codec_error(state: &str, role: &'static str, e: CodecError) -> Error {
    Error::Codec {
        state: state.to_string(),
        role,
        message: e.0,
    }
}
