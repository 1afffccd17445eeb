//! Reading any checkpoint or savepoint without user types: which snapshots
//! a folder holds ([`list_snapshots`]), what one holds ([`inspect_snapshot`]),
//! and whether every byte of it is intact ([`verify_snapshot`]). The
//! `statectl` commands `list`, `inspect` and `verify` are built on these.
//!
//! They work on the snapshots of every backend, because everything they read
//! is in the canonical formats: the `_metadata`, keyed snapshot files (full
//! files and the delta files of incremental heap chains) and operator
//! snapshot files. Native files (RocksDB's SST files and the like) are
//! checked against the CRC32 their handle records, but their records cannot
//! be counted without the backend that wrote them.
//!
//! Every file goes through the [`Storage`] given, and is read once however
//! many handles reference it (the pieces of an incremental chain, or the
//! key-group slices of one file after a rescale).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::layout::{
    parse_checkpoint_dir_name, METADATA_FILE, SAVEPOINT_DIR_PREFIX, SHARED_DIR, TASK_OWNED_DIR,
};
use super::metadata::{
    load_metadata, CheckpointMetadata, OperatorState, SnapshotKind, SubtaskState,
};
use super::storage::Storage;
use state_api::codec::CodecSchema;
use state_api::error::{Error, Result};
use state_api::format::bytes::ByteReader;
use state_api::format::frame::{decode_frame, FRAME_HEADER_LEN};
use state_api::format::keyed::{parse_records, KeyedSnapshotReader, Record, RecordBody};
use state_api::format::operator::{describe_operator_file, read_operator_bytes};
use state_api::key_group::{check_parallelism, key_group_for_bytes, KeyGroupRange};
use state_api::snapshot::handle::{
    Distribution, KeyGroupsStateHandle, KeyedStateHandle, NativeFile, OperatorStateHandle,
};
use state_api::snapshot::stream::{StreamBytes, StreamStateHandle};
use state_api::state::StateMeta;

/// At most this many problems are listed per file; the rest are counted in
/// one last problem (a file full of misplaced records would otherwise list
/// every record).
pub const MAX_PROBLEMS_PER_FILE: usize = 20;

// ---------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------

/// One problem found by [`verify_snapshot`]: the file (its path as
/// displayed, or the `_metadata` and the stream's name for bytes inlined in
/// it), the byte offset when known, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file.
    pub file: String,
    /// Where in the file, when known: the start of the damaged structure
    /// (a frame, the header, the footer).
    pub offset: Option<u64>,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(offset) => write!(f, "{} at offset {offset}: {}", self.file, self.what),
            None => write!(f, "{}: {}", self.file, self.what),
        }
    }
}

/// What [`verify_snapshot`] checked and every problem it found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// The `_metadata` file verified.
    pub metadata: String,
    /// Files checked: the `_metadata` and every distinct file it references
    /// (streams inlined in the `_metadata` are not files).
    pub files: u64,
    /// Bytes read: the `_metadata` and every file that could be read.
    pub bytes: u64,
    /// Records decoded: keyed records (full and delta) and operator state
    /// elements (broadcast entries).
    pub records: u64,
    /// Native files whose CRC32 was checked.
    pub native_files: u64,
    /// Everything found wrong, in the order the files were checked.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// Whether the snapshot is intact: no problem was found.
    pub fn is_whole(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the checkpoint or savepoint whose `_metadata` is `metadata_path`
/// (the file, or the folder holding it).
///
/// Checks that the metadata decodes (its checksums included); that every
/// file it references exists with the size its handle records; that every
/// canonical keyed file's header, meta, index, frames and footer decode with
/// their CRCs, that every record decodes and its key hashes to the key group
/// it is stored under (raw keyed state, whose records have no key, is not
/// hashed), and that each handle agrees with the file's own index; that
/// operator snapshot files decode, every element frame included, and that
/// each handle's offsets are elements of its file; that every native file's
/// CRC32 is the one its handle records; and that each operator's subtasks
/// and handles agree with its parallelism and max parallelism.
///
/// Every problem is collected: a damaged file never stops the files after
/// it, and a damaged key group never stops the key groups after it. This
/// never panics and never fails; if the metadata itself cannot be loaded the
/// report holds that one problem. `progress` is called with the bytes
/// processed so far, after the metadata and after each file; it ends at the
/// snapshot's size ([`SnapshotListing::bytes`], [`SnapshotSummary::total_bytes`]:
/// the `_metadata` and each distinct file as its handle records it), so
/// that size can be a progress bar's length.
pub fn verify_snapshot(
    storage: &dyn Storage,
    metadata_path: &Path,
    progress: &mut dyn FnMut(u64),
) -> VerifyReport {
    let meta_file = metadata_file(metadata_path);
    let meta_name = meta_file.display().to_string();
    let mut report = VerifyReport {
        metadata: meta_name.clone(),
        ..Default::default()
    };
    let metadata = match load_metadata(storage, &meta_file) {
        Ok(m) => m,
        Err(e) => {
            if let Ok(size) = storage.len(&meta_file) {
                report.files = 1;
                report.bytes = size;
            }
            report.problems.push(problem_from(&meta_name, &e));
            progress(report.bytes);
            return report;
        }
    };
    report.files = 1;
    report.bytes = storage.len(&meta_file).unwrap_or(0);
    progress(report.bytes);

    let Sources { sources, problems } = collect_sources(&metadata, &meta_file);
    report.problems.extend(problems);
    let mut processed = report.bytes;
    for source in sources.values() {
        let mut sink = ProblemSink::new(&source.display);
        let is_file = matches!(source.stream, StreamStateHandle::File { .. });
        if is_file {
            report.files += 1;
        }
        match read_for_verify(storage, source, &mut sink) {
            Some(data) => {
                if is_file {
                    report.bytes += data.len() as u64;
                    processed += data.len() as u64;
                }
                verify_source(source, &data, &mut report, &mut sink);
            }
            None if is_file => processed = processed.saturating_add(source.stream.size()),
            None => {}
        }
        sink.finish(&mut report.problems);
        progress(processed);
    }
    report
}

/// How a stream is used by one handle.
enum Use<'m> {
    /// A piece of canonical keyed state.
    Keyed {
        piece: &'m KeyGroupsStateHandle,
        /// Whether the piece is a delta of an incremental chain.
        delta: bool,
        /// Whether it is raw keyed state (records without keys).
        raw: bool,
    },
    /// An operator state snapshot.
    Operator(&'m OperatorStateHandle),
    /// A native file.
    Native(&'m NativeFile),
}

/// One distinct stream the metadata references, and every use of it.
struct Source<'m> {
    stream: &'m StreamStateHandle,
    display: String,
    /// Every size the handles record for it (more than one is a problem).
    sizes: BTreeSet<u64>,
    uses: Vec<(Use<'m>, String)>,
}

struct Sources<'m> {
    sources: BTreeMap<StreamKey, Source<'m>>,
    /// Problems of the metadata's own consistency.
    problems: Vec<Problem>,
}

/// Every distinct stream of `metadata` with its uses, and what is
/// inconsistent in the metadata itself.
fn collect_sources<'m>(metadata: &'m CheckpointMetadata, meta_file: &Path) -> Sources<'m> {
    let meta_name = meta_file.display().to_string();
    let mut out = Sources {
        sources: BTreeMap::new(),
        problems: Vec::new(),
    };
    let snapshot = format!("{} {}", kind_name(metadata.kind), metadata.checkpoint_id);
    let mut add = |stream: &'m StreamStateHandle, use_: Use<'m>, needed_by: String| {
        let source = out
            .sources
            .entry(stream_key(stream))
            .or_insert_with(|| Source {
                stream,
                display: display_stream(stream, meta_file),
                sizes: BTreeSet::new(),
                uses: Vec::new(),
            });
        source.sizes.insert(stream.size());
        source.uses.push((use_, needed_by));
    };
    let mut problems = Vec::new();
    for op in &metadata.operators {
        let max = op.max_parallelism;
        let problem = |what: String| Problem {
            file: meta_name.clone(),
            offset: None,
            what: format!("operator '{}': {what}", op.operator_id),
        };
        if let Err(e) = check_parallelism(max, op.parallelism) {
            problems.push(problem(e.to_string()));
        }
        if op.subtasks.len() as u64 != u64::from(op.parallelism) {
            problems.push(problem(format!(
                "parallelism {} but {} subtask states",
                op.parallelism,
                op.subtasks.len()
            )));
        }
        for (index, subtask) in op.subtasks.iter().enumerate() {
            let at = |what: &str| {
                format!(
                    "{what} of operator '{}' subtask {index} in {snapshot}",
                    op.operator_id
                )
            };
            let keyed = subtask.keyed.iter().map(|h| (h, false));
            for (handle, raw) in keyed.chain(subtask.raw_keyed.iter().map(|h| (h, true))) {
                let what = if raw {
                    "raw keyed state"
                } else {
                    "keyed state"
                };
                let range = handle.range();
                if handle.max_parallelism() != max || range.check_within(max).is_err() {
                    problems.push(problem(format!(
                        "subtask {index}: {what} {} has max parallelism {} and key groups {}, \
                         the operator has max parallelism {max}",
                        handle.describe(),
                        handle.max_parallelism(),
                        range_text(range)
                    )));
                }
                match handle {
                    KeyedStateHandle::IncrementalNative(native) => {
                        for file in native.files() {
                            let what = format!("native file '{}' of {what}", file.name);
                            add(&file.data, Use::Native(file), at(&what));
                        }
                    }
                    _ => {
                        for (i, piece) in handle.pieces().into_iter().enumerate() {
                            let mut needed_by = at(what);
                            if piece.checkpoint_id != handle.checkpoint_id() {
                                needed_by.push_str(&format!(
                                    " (written for checkpoint {})",
                                    piece.checkpoint_id
                                ));
                            }
                            if piece.max_parallelism != handle.max_parallelism() {
                                problems.push(problem(format!(
                                    "subtask {index}: piece {} has max parallelism {}, \
                                     its chain {}",
                                    piece.data.describe(),
                                    piece.max_parallelism,
                                    handle.max_parallelism()
                                )));
                            }
                            let delta = i > 0;
                            add(&piece.data, Use::Keyed { piece, delta, raw }, needed_by);
                        }
                    }
                }
            }
            let ops = subtask.operator.iter().map(|h| (h, "operator state"));
            let raw_ops = subtask
                .raw_operator
                .iter()
                .map(|h| (h, "raw operator state"));
            for (handle, what) in ops.chain(raw_ops) {
                add(&handle.data, Use::Operator(handle), at(what));
            }
        }
    }
    out.problems = problems;
    out
}

/// Reads a source's bytes for verification; a missing, unreadable or
/// resized file is a problem and gives `None`.
fn read_for_verify(
    storage: &dyn Storage,
    source: &Source<'_>,
    sink: &mut ProblemSink,
) -> Option<Arc<[u8]>> {
    let needed_by = source
        .uses
        .first()
        .map(|(_, n)| n.as_str())
        .unwrap_or("the snapshot");
    if source.sizes.len() > 1 {
        let sizes: Vec<String> = source.sizes.iter().map(u64::to_string).collect();
        sink.push(Problem {
            file: source.display.clone(),
            offset: None,
            what: format!(
                "the handles referencing this file record different sizes: {}",
                sizes.join(", ")
            ),
        });
    }
    let (path, expected) = match source.stream {
        StreamStateHandle::InMemory { data, .. } => return Some(data.clone()),
        StreamStateHandle::File { path, size } => (path, *size),
    };
    let data = match storage.read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            sink.push(Problem {
                file: source.display.clone(),
                offset: None,
                what: format!("the file is missing; {needed_by} references it"),
            });
            return None;
        }
        Err(e) => {
            sink.push(Problem {
                file: source.display.clone(),
                offset: None,
                what: format!("the file cannot be read ({e}); {needed_by} needs it"),
            });
            return None;
        }
    };
    let actual = data.len() as u64;
    if actual != expected {
        let how = if actual < expected {
            "truncated"
        } else {
            "too long"
        };
        sink.push(Problem {
            file: source.display.clone(),
            offset: Some(actual.min(expected)),
            what: format!(
                "the file is {how}: it has {actual} bytes, {needed_by} records {expected}"
            ),
        });
        return None;
    }
    Some(Arc::from(data))
}

/// Checks a source's bytes for each way it is used.
fn verify_source(
    source: &Source<'_>,
    data: &Arc<[u8]>,
    report: &mut VerifyReport,
    sink: &mut ProblemSink,
) {
    let mut keyed: Vec<(&KeyGroupsStateHandle, bool, bool, &str)> = Vec::new();
    let mut operator: Vec<(&OperatorStateHandle, &str)> = Vec::new();
    let mut native: Vec<(&NativeFile, &str)> = Vec::new();
    for (u, needed_by) in &source.uses {
        let needed_by = needed_by.as_str();
        match u {
            Use::Keyed { piece, delta, raw } => keyed.push((*piece, *delta, *raw, needed_by)),
            Use::Operator(h) => operator.push((*h, needed_by)),
            Use::Native(f) => native.push((*f, needed_by)),
        }
    }
    if !keyed.is_empty() {
        verify_keyed(&source.display, data, &keyed, report, sink);
    }
    if !operator.is_empty() {
        verify_operator(&source.display, data, &operator, report, sink);
    }
    if !native.is_empty() {
        report.native_files += 1;
        let actual = crc32fast::hash(data);
        for (file, needed_by) in native {
            if file.crc32 != actual {
                sink.push(Problem {
                    file: source.display.clone(),
                    offset: None,
                    what: format!(
                        "CRC32 of the bytes is {actual:#010x}, {needed_by} records {:#010x}",
                        file.crc32
                    ),
                });
            }
        }
    }
}

/// Decodes a canonical keyed file whole, then checks each handle against it.
fn verify_keyed(
    display: &str,
    data: &Arc<[u8]>,
    uses: &[(&KeyGroupsStateHandle, bool, bool, &str)],
    report: &mut VerifyReport,
    sink: &mut ProblemSink,
) {
    let reader = match KeyedSnapshotReader::from_bytes(StreamBytes::new(display, data.clone())) {
        Ok(r) => r,
        Err(e) => return sink.error(&e),
    };
    let meta = reader.meta();
    // Raw keyed state has no keys; its records belong to the group they are in.
    let check_keys = uses.iter().any(|(_, _, raw, _)| !raw);
    for key_group in meta.range.iter() {
        let frames = match reader.key_group_frames(key_group) {
            Ok(frames) => frames,
            Err(e) => {
                sink.error(&e);
                continue;
            }
        };
        for (offset, payload) in frames {
            let mut misplaced = Vec::new();
            let mut unlisted = 0u64;
            let mut records = 0u64;
            let parsed = parse_records(display, offset, &payload, meta, |r| {
                records += 1;
                if check_keys {
                    let actual = key_group_for_bytes(r.key, meta.max_parallelism)?;
                    if actual != key_group {
                        if misplaced.len() < MAX_PROBLEMS_PER_FILE {
                            misplaced.push((r.state, key_text(r.key), actual));
                        } else {
                            unlisted += 1;
                        }
                    }
                }
                Ok(())
            });
            report.records += records;
            for (state, key, actual) in misplaced {
                let name = meta
                    .states
                    .get(state as usize)
                    .map_or("?", |s| s.name.as_str());
                sink.push(Problem {
                    file: display.to_string(),
                    offset: Some(offset),
                    what: format!(
                        "a record of state '{name}' with key {key} is stored under key group \
                         {key_group}, but its key belongs to key group {actual}"
                    ),
                });
            }
            sink.suppressed += unlisted;
            if let Err(e) = parsed {
                sink.error(&e);
            }
        }
    }
    for (piece, delta, _, needed_by) in uses {
        if meta.delta != *delta {
            let (is, should) = if meta.delta {
                ("a delta file", "a full snapshot file")
            } else {
                ("a full snapshot file", "a delta file")
            };
            sink.push(Problem {
                file: display.to_string(),
                offset: Some(0),
                what: format!("the file is {is}; {needed_by} uses it as {should}"),
            });
        }
        let in_memory = KeyGroupsStateHandle {
            data: StreamStateHandle::InMemory {
                name: display.to_string(),
                data: data.clone(),
            },
            ..(*piece).clone()
        };
        if let Err(e) = KeyedSnapshotReader::open_for(&in_memory, needed_by) {
            sink.error(&e);
        }
    }
}

/// Decodes an operator snapshot file whole, every element frame included,
/// then checks each handle's states and offsets against it.
fn verify_operator(
    display: &str,
    data: &Arc<[u8]>,
    uses: &[(&OperatorStateHandle, &str)],
    report: &mut VerifyReport,
    sink: &mut ProblemSink,
) {
    let in_memory = StreamStateHandle::InMemory {
        name: display.to_string(),
        data: data.clone(),
    };
    let whole = match describe_operator_file(in_memory, 0) {
        Ok(h) => h,
        Err(e) => return sink.error(&e),
    };
    for part in whole.states.values() {
        for &offset in &part.offsets {
            match decode_frame(display, data, offset) {
                Ok((payload, _)) => {
                    report.records += 1;
                    if part.distribution == Distribution::Broadcast {
                        let base = offset + FRAME_HEADER_LEN as u64;
                        let mut r = ByteReader::new(&payload, display, base);
                        let entry = r
                            .bytes()
                            .and_then(|_| r.bytes())
                            .and_then(|_| r.finish("a broadcast state entry"));
                        if let Err(e) = entry {
                            sink.error(&e);
                        }
                    }
                }
                Err(e) => sink.error(&e),
            }
        }
    }
    for (handle, needed_by) in uses {
        for (name, part) in &handle.states {
            let Some(file_part) = whole.states.get(name) else {
                sink.push(Problem {
                    file: display.to_string(),
                    offset: None,
                    what: format!("{needed_by} names state '{name}', which the file does not hold"),
                });
                continue;
            };
            if file_part.distribution != part.distribution {
                sink.push(Problem {
                    file: display.to_string(),
                    offset: None,
                    what: format!(
                        "{needed_by} says state '{name}' is {}, the file says {}",
                        distribution_name(part.distribution),
                        distribution_name(file_part.distribution)
                    ),
                });
            }
            let known: HashSet<u64> = file_part.offsets.iter().copied().collect();
            for &offset in part.offsets.iter().filter(|o| !known.contains(o)) {
                sink.push(Problem {
                    file: display.to_string(),
                    offset: Some(offset),
                    what: format!(
                        "{needed_by} lists offset {offset} of state '{name}', which is not an \
                         element of the file"
                    ),
                });
            }
        }
    }
}

/// Collects the problems of one file, at most [`MAX_PROBLEMS_PER_FILE`].
struct ProblemSink {
    file: String,
    problems: Vec<Problem>,
    suppressed: u64,
}

impl ProblemSink {
    fn new(file: &str) -> Self {
        ProblemSink {
            file: file.to_string(),
            problems: Vec::new(),
            suppressed: 0,
        }
    }

    fn push(&mut self, problem: Problem) {
        if self.problems.len() < MAX_PROBLEMS_PER_FILE {
            self.problems.push(problem);
        } else {
            self.suppressed += 1;
        }
    }

    fn error(&mut self, e: &Error) {
        let problem = problem_from(&self.file, e);
        self.push(problem);
    }

    fn finish(self, out: &mut Vec<Problem>) {
        out.extend(self.problems);
        if self.suppressed > 0 {
            out.push(Problem {
                file: self.file,
                offset: None,
                what: format!(
                    "{} more problems in this file are not listed",
                    self.suppressed
                ),
            });
        }
    }
}

/// A problem from an error: the file and offset the error names (else
/// `default_file`), and the error's message without them.
fn problem_from(default_file: &str, e: &Error) -> Problem {
    let (file, offset, what) = match e {
        Error::Corrupted {
            file,
            offset,
            reason,
        } => (file.clone(), Some(*offset), reason.clone()),
        Error::ChecksumMismatch {
            file,
            offset,
            expected,
            actual,
        } => (
            file.clone(),
            Some(*offset),
            format!("checksum mismatch: expected {expected:#010x}, computed {actual:#010x}"),
        ),
        Error::Truncated {
            file,
            offset,
            needed,
            available,
        } => (
            file.clone(),
            Some(*offset),
            format!("truncated: needed {needed} bytes, {available} available"),
        ),
        Error::BadMagic {
            file,
            offset,
            expected,
            found,
        } => (
            file.clone(),
            Some(*offset),
            format!("bad magic bytes: expected {expected:02x?}, found {found:02x?}"),
        ),
        Error::UnsupportedVersion { file, .. }
        | Error::StateFileUnreadable { file, .. }
        | Error::MaxParallelismMismatch { file, .. } => (file.clone(), None, e.to_string()),
        _ => (default_file.to_string(), None, e.to_string()),
    };
    Problem { file, offset, what }
}

/// A key for messages: its bytes in hex, the first 16 only.
fn key_text(key: &[u8]) -> String {
    let hex: String = key.iter().take(16).map(|b| format!("{b:02x}")).collect();
    if key.len() > 16 {
        format!("0x{hex}… ({} bytes)", key.len())
    } else {
        format!("0x{hex}")
    }
}

// ---------------------------------------------------------------------------
// inspect
// ---------------------------------------------------------------------------

/// What a checkpoint or savepoint holds, from [`inspect_snapshot`].
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotSummary {
    /// The `_metadata` file.
    pub metadata: String,
    /// The checkpoint (or savepoint) id.
    pub checkpoint_id: u64,
    /// `checkpoint` or `savepoint`.
    pub kind: String,
    /// The format of the managed keyed state: `full`, `incremental`,
    /// `native <backend>` (such as `native rocksdb`), `mixed` when
    /// operators or subtasks differ, `full` when there is only operator
    /// state (always full), `empty` when there is no state at all.
    pub format: String,
    /// When it completed, in milliseconds since the Unix epoch.
    pub timestamp_millis: u64,
    /// Bytes of the `_metadata` and of every distinct file it references
    /// (as the handles record them); `shared_bytes + exclusive_bytes`.
    pub total_bytes: u64,
    /// The `_metadata` and every distinct file it references.
    pub files: u64,
    /// Bytes of the referenced files in a `shared` folder, which other
    /// checkpoints (of an incremental chain) may reference too.
    pub shared_bytes: u64,
    /// Bytes of the `_metadata` and of every other referenced file.
    pub exclusive_bytes: u64,
    /// Every operator, in metadata order.
    pub operators: Vec<OperatorSummary>,
}

/// One operator of a snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct OperatorSummary {
    /// The operator's id.
    pub operator_id: String,
    /// Its parallelism when the snapshot was taken.
    pub parallelism: u32,
    /// Its max parallelism.
    pub max_parallelism: u32,
    /// Its subtasks, in index order.
    pub subtasks: Vec<SubtaskSummary>,
    /// Its states over all subtasks: keyed states first, then operator
    /// states, raw keyed and raw operator state, each by name.
    pub states: Vec<StateSummary>,
}

/// One subtask of an operator.
#[derive(Clone, Debug, Serialize)]
pub struct SubtaskSummary {
    /// The subtask's index.
    pub index: u32,
    /// Its keyed state handles: managed, then raw.
    pub keyed: Vec<HandleSummary>,
    /// The names of its operator states (managed, then raw).
    pub operator_states: Vec<String>,
    /// Bytes of the distinct streams (files and inlined streams) its
    /// handles reference.
    pub bytes: u64,
}

/// One keyed state handle.
#[derive(Clone, Debug, Serialize)]
pub struct HandleSummary {
    /// `full`, `incremental`, `native <backend>`; prefixed with `raw ` for
    /// raw keyed state.
    pub kind: String,
    /// The key groups the handle covers, such as `0..=63` (`none` when empty).
    pub key_groups: String,
    /// Its files (for an incremental chain, the base first, then the deltas).
    pub files: Vec<FileSummary>,
    /// Bytes of its files (whole files, even when it covers a slice of one).
    pub bytes: u64,
}

/// One file (or inlined stream) a handle references.
#[derive(Clone, Debug, Serialize)]
pub struct FileSummary {
    /// The file's path, or the name of a stream inlined in the `_metadata`.
    pub path: String,
    /// Its size, as its handle records it.
    pub size: u64,
    /// Whether it lives in a folder named `shared` (the job's shared files,
    /// which several checkpoints of an incremental chain may reference).
    pub shared: bool,
    /// Whether its bytes are inlined in the `_metadata`.
    pub inline: bool,
}

/// One state of an operator, over all its subtasks.
#[derive(Clone, Debug, Serialize)]
pub struct StateSummary {
    /// The state's name.
    pub name: String,
    /// `Value`, `List`, `Map`, `Reducing` or `Aggregating` for keyed state;
    /// `operator list`, `operator union` or `broadcast` for operator state;
    /// `raw keyed` or `raw operator` for raw state.
    pub kind: String,
    /// The key codec (`name v<version>`), for keyed state.
    pub key_codec: Option<String>,
    /// The namespace codec, for keyed state.
    pub namespace_codec: Option<String>,
    /// The value codecs (`name v<version>`): the value, the list element,
    /// or the map's user key and user value; for broadcast state its key
    /// and value.
    pub value_codecs: Vec<String>,
    /// Entries: a cell per (key, namespace), a list per (key, namespace)
    /// whatever its length, a map entry per user key; for an incremental
    /// chain, the entries of the merged result. Operator state counts its
    /// elements (broadcast state its entries), summed over the subtasks.
    /// `None` when a native handle holds the state (its records are only
    /// readable by the backend that wrote them).
    pub entries: Option<u64>,
    /// Bytes of the entries' canonical record encoding: key, namespace and
    /// body with their length prefixes (without the state index); for
    /// operator state, the elements' bytes. `None` as for `entries`.
    pub bytes: Option<u64>,
    /// Entries and bytes per key group holding at least one entry, in key
    /// group order; only when asked for, and only for canonical keyed state.
    pub key_groups: Vec<KeyGroupStat>,
}

/// The entries of one state in one key group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KeyGroupStat {
    /// The key group.
    pub key_group: u32,
    /// Entries in it (counted as in [`StateSummary::entries`]).
    pub entries: u64,
    /// Bytes of those entries (as in [`StateSummary::bytes`]).
    pub bytes: u64,
}

/// What the checkpoint or savepoint whose `_metadata` is `metadata_path`
/// (the file, or the folder holding it) holds: its operators, subtasks,
/// handles and files, and per state its kind, codecs, entries and bytes
/// (per key group too when `per_key_group`).
///
/// Every canonical file is read (each once per incremental chain or file,
/// however many handles slice it) to count the entries; incremental chains
/// are merged key group by key group, so memory holds one key group of a
/// chain at a time. A file that is missing or damaged fails the inspection
/// with its error (run [`verify_snapshot`] for a full report).
pub fn inspect_snapshot(
    storage: &dyn Storage,
    metadata_path: &Path,
    per_key_group: bool,
) -> Result<SnapshotSummary> {
    let meta_file = metadata_file(metadata_path);
    let metadata = load_metadata(storage, &meta_file)?;
    let metadata_size = storage
        .len(&meta_file)
        .map_err(|e| Error::io(format!("reading the size of {}", meta_file.display()), e))?;
    let totals = Totals::of(&metadata, metadata_size);
    let operators = metadata
        .operators
        .iter()
        .map(|op| inspect_operator(storage, &meta_file, op, per_key_group))
        .collect::<Result<Vec<_>>>()?;
    Ok(SnapshotSummary {
        metadata: meta_file.display().to_string(),
        checkpoint_id: metadata.checkpoint_id,
        kind: kind_name(metadata.kind).to_string(),
        format: format_of(&metadata),
        timestamp_millis: metadata.timestamp_millis,
        total_bytes: totals.shared_bytes.saturating_add(totals.exclusive_bytes),
        files: totals.files,
        shared_bytes: totals.shared_bytes,
        exclusive_bytes: totals.exclusive_bytes,
        operators,
    })
}

/// Which kind of state a [`StateSummary`] is, in listing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Keyed,
    Operator,
    RawKeyed,
    RawOperator,
}

/// The running counts of one state.
struct StateAcc {
    name: String,
    kind: String,
    key_codec: Option<String>,
    namespace_codec: Option<String>,
    value_codecs: Vec<String>,
    entries: u64,
    bytes: u64,
    /// A native handle holds (part of) the state: its counts are unknown.
    unknown: bool,
    per_key_group: BTreeMap<u32, (u64, u64)>,
}

impl StateAcc {
    fn add(&mut self, key_group: Option<u32>, entries: u64, bytes: u64) {
        self.entries = self.entries.saturating_add(entries);
        self.bytes = self.bytes.saturating_add(bytes);
        if let Some(kg) = key_group {
            let slot = self.per_key_group.entry(kg).or_default();
            slot.0 = slot.0.saturating_add(entries);
            slot.1 = slot.1.saturating_add(bytes);
        }
    }

    fn into_summary(self, per_key_group: bool) -> StateSummary {
        let known = !self.unknown;
        let key_groups = if per_key_group && known {
            self.per_key_group
                .into_iter()
                .filter(|(_, (entries, _))| *entries > 0)
                .map(|(key_group, (entries, bytes))| KeyGroupStat {
                    key_group,
                    entries,
                    bytes,
                })
                .collect()
        } else {
            Vec::new()
        };
        StateSummary {
            name: self.name,
            kind: self.kind,
            key_codec: self.key_codec,
            namespace_codec: self.namespace_codec,
            value_codecs: self.value_codecs,
            entries: known.then_some(self.entries),
            bytes: known.then_some(self.bytes),
            key_groups,
        }
    }
}

/// The states of one operator, by scope and name.
#[derive(Default)]
struct StateAccs {
    accs: Vec<StateAcc>,
    index: BTreeMap<(Scope, String), usize>,
}

impl StateAccs {
    /// The index of state `name`, registered with `make` if new.
    fn get(&mut self, scope: Scope, name: &str, make: impl FnOnce() -> StateAcc) -> usize {
        if let Some(&i) = self.index.get(&(scope, name.to_string())) {
            return i;
        }
        self.accs.push(make());
        let i = self.accs.len() - 1;
        self.index.insert((scope, name.to_string()), i);
        i
    }

    /// The index of keyed state `meta` (registered from its meta if new).
    fn keyed(&mut self, scope: Scope, meta: &StateMeta, key_codec: &CodecSchema) -> usize {
        self.get(scope, &meta.name, || StateAcc {
            name: meta.name.clone(),
            kind: if scope == Scope::RawKeyed {
                "raw keyed".to_string()
            } else {
                format!("{:?}", meta.kind)
            },
            key_codec: Some(codec_text(key_codec)),
            namespace_codec: Some(codec_text(&meta.namespace)),
            value_codecs: meta.values.iter().map(codec_text).collect(),
            entries: 0,
            bytes: 0,
            unknown: false,
            per_key_group: BTreeMap::new(),
        })
    }

    fn into_summaries(self, per_key_group: bool) -> Vec<StateSummary> {
        let mut accs: Vec<Option<StateAcc>> = self.accs.into_iter().map(Some).collect();
        self.index
            .into_values()
            .filter_map(|i| accs.get_mut(i).and_then(Option::take))
            .map(|acc| acc.into_summary(per_key_group))
            .collect()
    }
}

fn inspect_operator(
    storage: &dyn Storage,
    meta_file: &Path,
    op: &OperatorState,
    per_key_group: bool,
) -> Result<OperatorSummary> {
    let mut states = StateAccs::default();
    let mut subtasks = Vec::with_capacity(op.subtasks.len());
    // Canonical keyed handles grouped by their files, so that every slice of
    // one file (or of one chain) is counted from one read.
    let mut chains: BTreeMap<Vec<StreamKey>, Vec<(Scope, &KeyedStateHandle)>> = BTreeMap::new();
    let mut operator_files: BTreeMap<StreamKey, Vec<(Scope, &OperatorStateHandle)>> =
        BTreeMap::new();
    for (index, subtask) in op.subtasks.iter().enumerate() {
        subtasks.push(summarize_subtask(index as u32, subtask, meta_file));
        let keyed = subtask.keyed.iter().map(|h| (Scope::Keyed, h));
        for (scope, handle) in keyed.chain(subtask.raw_keyed.iter().map(|h| (Scope::RawKeyed, h))) {
            match handle {
                KeyedStateHandle::IncrementalNative(native) => {
                    for meta in &native.states {
                        let i = states.keyed(scope, meta, &native.key_codec);
                        states.accs[i].unknown = true;
                    }
                }
                _ => {
                    let key = handle
                        .pieces()
                        .iter()
                        .map(|p| stream_key(&p.data))
                        .collect();
                    chains.entry(key).or_default().push((scope, handle));
                }
            }
        }
        let ops = subtask.operator.iter().map(|h| (Scope::Operator, h));
        let raw = subtask.raw_operator.iter().map(|h| (Scope::RawOperator, h));
        for (scope, handle) in ops.chain(raw) {
            operator_files
                .entry(stream_key(&handle.data))
                .or_default()
                .push((scope, handle));
        }
    }
    for handles in chains.values() {
        count_keyed(storage, meta_file, handles, &mut states)?;
    }
    for handles in operator_files.values() {
        count_operator(storage, meta_file, handles, &mut states)?;
    }
    Ok(OperatorSummary {
        operator_id: op.operator_id.clone(),
        parallelism: op.parallelism,
        max_parallelism: op.max_parallelism,
        subtasks,
        states: states.into_summaries(per_key_group),
    })
}

/// Counts the entries of canonical keyed handles that share the same files
/// (the same chain of pieces), reading those files once.
fn count_keyed(
    storage: &dyn Storage,
    meta_file: &Path,
    handles: &[(Scope, &KeyedStateHandle)],
    states: &mut StateAccs,
) -> Result<()> {
    let Some((_, first)) = handles.first() else {
        return Ok(());
    };
    let mut readers = Vec::new();
    for piece in first.pieces() {
        let display = display_stream(&piece.data, meta_file);
        let data = read_stream(storage, &piece.data, &display, &first.needed_by(piece))?;
        readers.push(KeyedSnapshotReader::from_bytes(StreamBytes::new(
            &display, data,
        ))?);
    }
    for (scope, handle) in handles {
        // Per reader: its state indexes to the operator's state accumulators.
        let mappings: Vec<Vec<usize>> = readers
            .iter()
            .map(|r| {
                let meta = r.meta();
                meta.states
                    .iter()
                    .map(|s| states.keyed(*scope, s, &meta.key_codec))
                    .collect()
            })
            .collect();
        let range = handle.range();
        match (readers.as_slice(), mappings.as_slice()) {
            ([reader], [mapping]) if !reader.meta().delta => {
                for key_group in range.iter() {
                    reader.for_each_record(key_group, |r| {
                        if let Some(&i) = mapping.get(r.state as usize) {
                            states.accs[i].add(Some(key_group), 1, record_bytes(&r));
                        }
                        Ok(())
                    })?;
                }
            }
            _ => {
                for key_group in range.iter() {
                    let mut merged: HashMap<(usize, Vec<u8>, Vec<u8>), Merged> = HashMap::new();
                    for (reader, mapping) in readers.iter().zip(&mappings) {
                        reader.for_each_record(key_group, |r| {
                            if let Some(&i) = mapping.get(r.state as usize) {
                                apply(&mut merged, i, &r);
                            }
                            Ok(())
                        })?;
                    }
                    for ((i, _, _), entry) in merged {
                        let (entries, bytes) = entry.counts();
                        states.accs[i].add(Some(key_group), entries, bytes);
                    }
                }
            }
        }
    }
    Ok(())
}

/// One (key, namespace) entry of a merged incremental chain.
enum Merged {
    /// A cell or a list: its record's bytes.
    Single(u64),
    /// A map: each user key's record bytes.
    Map(HashMap<Vec<u8>, u64>),
}

impl Merged {
    fn counts(&self) -> (u64, u64) {
        match self {
            Merged::Single(bytes) => (1, *bytes),
            Merged::Map(entries) => (entries.len() as u64, entries.values().sum()),
        }
    }
}

/// Applies one record of a chain, as a restore does: a delete removes the
/// (key, namespace) entry, a cell or list replaces it, a map record puts one
/// user entry.
fn apply(merged: &mut HashMap<(usize, Vec<u8>, Vec<u8>), Merged>, state: usize, r: &Record<'_>) {
    let key = (state, r.key.to_vec(), r.namespace.to_vec());
    match &r.body {
        RecordBody::Delete => {
            merged.remove(&key);
        }
        RecordBody::Cell(_) | RecordBody::List(_) => {
            merged.insert(key, Merged::Single(record_bytes(r)));
        }
        RecordBody::MapEntry { key: user_key, .. } => {
            let bytes = record_bytes(r);
            let slot = merged
                .entry(key)
                .or_insert_with(|| Merged::Map(HashMap::new()));
            if let Merged::Single(_) = slot {
                *slot = Merged::Map(HashMap::new());
            }
            if let Merged::Map(entries) = slot {
                entries.insert(user_key.to_vec(), bytes);
            }
        }
    }
}

/// Bytes of a record's canonical encoding: key, namespace and body with
/// their length prefixes, without the state index (and op byte). The
/// `bytes` of [`StateSummary`] and [`KeyGroupStat`] are sums of it.
pub fn record_bytes(r: &Record<'_>) -> u64 {
    fn varint_len(v: u64) -> u64 {
        u64::from((64 - v.leading_zeros()).div_ceil(7).max(1))
    }
    fn prefixed(b: &[u8]) -> u64 {
        varint_len(b.len() as u64) + b.len() as u64
    }
    let body = match &r.body {
        RecordBody::Cell(v) => prefixed(v),
        RecordBody::List(elements) => {
            varint_len(elements.len() as u64) + elements.iter().map(|e| prefixed(e)).sum::<u64>()
        }
        RecordBody::MapEntry { key, value } => prefixed(key) + prefixed(value),
        RecordBody::Delete => 0,
    };
    prefixed(r.key) + prefixed(r.namespace) + body
}

/// Counts the elements of operator handles of one file, reading it once.
fn count_operator(
    storage: &dyn Storage,
    meta_file: &Path,
    handles: &[(Scope, &OperatorStateHandle)],
    states: &mut StateAccs,
) -> Result<()> {
    let Some((_, first)) = handles.first() else {
        return Ok(());
    };
    let display = display_stream(&first.data, meta_file);
    let data = read_stream(storage, &first.data, &display, &first.needed_by())?;
    let bytes = StreamBytes::new(&display, data);
    for (scope, handle) in handles {
        for state in read_operator_bytes(&bytes, handle)? {
            let meta = &state.meta;
            let i = states.get(*scope, &meta.name, || StateAcc {
                name: meta.name.clone(),
                kind: if *scope == Scope::RawOperator {
                    "raw operator".to_string()
                } else {
                    distribution_name(meta.distribution).to_string()
                },
                key_codec: None,
                namespace_codec: None,
                value_codecs: meta.schemas.iter().map(codec_text).collect(),
                entries: 0,
                bytes: 0,
                unknown: false,
                per_key_group: BTreeMap::new(),
            });
            let bytes: u64 = state.elements.iter().map(|e| e.len() as u64).sum();
            states.accs[i].add(None, state.elements.len() as u64, bytes);
        }
    }
    Ok(())
}

fn summarize_subtask(index: u32, subtask: &SubtaskState, meta_file: &Path) -> SubtaskSummary {
    let keyed = subtask
        .keyed
        .iter()
        .map(|h| summarize_handle(h, false, meta_file))
        .chain(
            subtask
                .raw_keyed
                .iter()
                .map(|h| summarize_handle(h, true, meta_file)),
        )
        .collect();
    let mut operator_states = Vec::new();
    for handle in subtask.operator.iter().chain(&subtask.raw_operator) {
        for name in handle.states.keys() {
            if !operator_states.contains(name) {
                operator_states.push(name.clone());
            }
        }
    }
    let mut seen = HashSet::new();
    let streams = subtask
        .keyed
        .iter()
        .chain(&subtask.raw_keyed)
        .flat_map(|h| h.streams())
        .chain(
            subtask
                .operator
                .iter()
                .chain(&subtask.raw_operator)
                .map(|h| &h.data),
        );
    let bytes = streams
        .filter(|s| seen.insert(stream_key(s)))
        .fold(0u64, |sum, s| sum.saturating_add(s.size()));
    SubtaskSummary {
        index,
        keyed,
        operator_states,
        bytes,
    }
}

fn summarize_handle(handle: &KeyedStateHandle, raw: bool, meta_file: &Path) -> HandleSummary {
    let kind = match handle {
        KeyedStateHandle::KeyGroups(_) => "full".to_string(),
        KeyedStateHandle::IncrementalHeap(_) => "incremental".to_string(),
        KeyedStateHandle::IncrementalNative(n) => format!("native {}", n.backend),
    };
    let mut seen = HashSet::new();
    let files: Vec<FileSummary> = handle
        .streams()
        .into_iter()
        .filter(|s| seen.insert(stream_key(s)))
        .map(|s| file_summary(s, meta_file))
        .collect();
    HandleSummary {
        kind: if raw { format!("raw {kind}") } else { kind },
        key_groups: range_text(handle.range()),
        bytes: files.iter().fold(0u64, |sum, f| sum.saturating_add(f.size)),
        files,
    }
}

fn file_summary(stream: &StreamStateHandle, meta_file: &Path) -> FileSummary {
    match stream {
        StreamStateHandle::File { path, size } => FileSummary {
            path: path.display().to_string(),
            size: *size,
            shared: is_shared(path),
            inline: false,
        },
        StreamStateHandle::InMemory { data, .. } => FileSummary {
            path: display_stream(stream, meta_file),
            size: data.len() as u64,
            shared: false,
            inline: true,
        },
    }
}

// ---------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------

/// One checkpoint or savepoint found by [`list_snapshots`].
#[derive(Clone, Debug, Serialize)]
pub struct SnapshotListing {
    /// The folder holding the `_metadata`.
    pub path: String,
    /// The checkpoint (or savepoint) id; for a damaged `_metadata`, the id
    /// of a `chk-<N>` folder name.
    pub checkpoint_id: Option<u64>,
    /// `checkpoint` or `savepoint`; for a damaged `_metadata`, guessed from
    /// the folder name (`chk-<N>`, `savepoint-…`), else `unknown`.
    pub kind: String,
    /// As [`SnapshotSummary::format`]; `unknown` for a damaged `_metadata`.
    pub format: String,
    /// When it completed, in milliseconds since the Unix epoch.
    pub timestamp_millis: Option<u64>,
    /// Bytes of the `_metadata` and every distinct file it references (as
    /// recorded); only the `_metadata`'s for a damaged one.
    pub bytes: u64,
    /// The `_metadata` and every distinct file it references.
    pub files: u64,
    /// Who deletes it: `retention` for a checkpoint (the job deletes it once
    /// subsumed), `user` for a savepoint (never deleted by a job).
    pub owner: String,
    /// Why the `_metadata` does not load, when it does not.
    pub error: Option<String>,
}

/// Every checkpoint and savepoint under `dir`: `dir` itself when it holds a
/// `_metadata` (or is one), else its sub-folders and their sub-folders that
/// hold one (a checkpoint root holds job folders holding `chk-<N>/`, a job
/// folder holds `chk-<N>/`, a savepoint root holds `savepoint-*/`). The
/// `shared/` and `taskowned/` folders of a job are not searched. Folders of
/// checkpoints in progress (no `_metadata` yet) are not listed.
///
/// Sorted by the parent folder's path, then by id, then by path (so
/// `chk-9` comes before `chk-10`; damaged ones without an id come last in
/// their folder). A damaged `_metadata` is listed with
/// [`SnapshotListing::error`] set and never aborts the listing. `dir` that
/// is not a folder is an [`Error::NotFound`].
pub fn list_snapshots(storage: &dyn Storage, dir: &Path) -> Result<Vec<SnapshotListing>> {
    let not_found = || Error::NotFound {
        what: format!("{}: no such folder", dir.display()),
    };
    if dir.file_name().and_then(|n| n.to_str()) == Some(METADATA_FILE) && storage.exists(dir) {
        let folder = dir.parent().unwrap_or(Path::new("."));
        return Ok(vec![listing(storage, folder)]);
    }
    if !storage.exists(dir) {
        return Err(not_found());
    }
    if storage.exists(&dir.join(METADATA_FILE)) {
        return Ok(vec![listing(storage, dir)]);
    }
    let names = storage.list_dir(dir).map_err(|e| Error::NotFound {
        what: format!("{} is not a folder ({e})", dir.display()),
    })?;
    // In a job folder, `shared/` and `taskowned/` hold state files only (a
    // checkpoint root may have jobs of those names).
    let job_folder = names.iter().any(|n| parse_checkpoint_dir_name(n).is_some());
    let mut out = Vec::new();
    for name in names {
        if name.starts_with(METADATA_FILE) {
            continue;
        }
        let child = dir.join(&name);
        if storage.exists(&child.join(METADATA_FILE)) {
            out.push(listing(storage, &child));
            continue;
        }
        if job_folder && is_skipped(&name) {
            continue;
        }
        // A file, or a folder that cannot be listed, holds no snapshot.
        for grand in storage.list_dir(&child).unwrap_or_default() {
            if is_skipped(&grand) {
                continue;
            }
            let grandchild = child.join(&grand);
            if storage.exists(&grandchild.join(METADATA_FILE)) {
                out.push(listing(storage, &grandchild));
            }
        }
    }
    out.sort_by(|a, b| {
        let parent = |l: &SnapshotListing| {
            Path::new(&l.path)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        };
        (parent(a), a.checkpoint_id.unwrap_or(u64::MAX), &a.path).cmp(&(
            parent(b),
            b.checkpoint_id.unwrap_or(u64::MAX),
            &b.path,
        ))
    });
    Ok(out)
}

/// Names never searched for snapshots: shared and task-owned files, and
/// metadata files themselves.
fn is_skipped(name: &str) -> bool {
    name == SHARED_DIR || name == TASK_OWNED_DIR || name.starts_with(METADATA_FILE)
}

fn listing(storage: &dyn Storage, folder: &Path) -> SnapshotListing {
    let meta_file = folder.join(METADATA_FILE);
    let metadata_size = storage.len(&meta_file).unwrap_or(0);
    let path = folder.display().to_string();
    match load_metadata(storage, &meta_file) {
        Ok(metadata) => {
            let totals = Totals::of(&metadata, metadata_size);
            SnapshotListing {
                path,
                checkpoint_id: Some(metadata.checkpoint_id),
                kind: kind_name(metadata.kind).to_string(),
                format: format_of(&metadata),
                timestamp_millis: Some(metadata.timestamp_millis),
                bytes: totals.shared_bytes.saturating_add(totals.exclusive_bytes),
                files: totals.files,
                owner: owner_of(kind_name(metadata.kind)).to_string(),
                error: None,
            }
        }
        Err(e) => {
            let name = folder.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let checkpoint_id = parse_checkpoint_dir_name(name);
            let kind = if checkpoint_id.is_some() {
                "checkpoint"
            } else if name.starts_with(SAVEPOINT_DIR_PREFIX) {
                "savepoint"
            } else {
                "unknown"
            };
            SnapshotListing {
                path,
                checkpoint_id,
                kind: kind.to_string(),
                format: "unknown".to_string(),
                timestamp_millis: None,
                bytes: metadata_size,
                files: 1,
                owner: owner_of(kind).to_string(),
                error: Some(e.to_string()),
            }
        }
    }
}

fn owner_of(kind: &str) -> &'static str {
    match kind {
        "checkpoint" => "retention",
        "savepoint" => "user",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------
// shared helpers
// ---------------------------------------------------------------------------

/// The `_metadata` file `path` names: itself, or the one in the folder `path`.
fn metadata_file(path: &Path) -> PathBuf {
    if path.file_name().and_then(|n| n.to_str()) == Some(METADATA_FILE) {
        path.to_path_buf()
    } else {
        path.join(METADATA_FILE)
    }
}

/// Identifies a stream: a file by its path, inlined bytes by their name and
/// content (each handle decoded from the metadata has its own copy).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum StreamKey {
    File(PathBuf),
    Inline { name: String, len: usize, crc: u32 },
}

fn stream_key(stream: &StreamStateHandle) -> StreamKey {
    match stream {
        StreamStateHandle::File { path, .. } => StreamKey::File(path.clone()),
        StreamStateHandle::InMemory { name, data } => StreamKey::Inline {
            name: name.clone(),
            len: data.len(),
            crc: crc32fast::hash(data),
        },
    }
}

/// How a stream is named in problems and summaries: a file's path; for
/// bytes inlined in the metadata, the `_metadata` and the stream's name.
fn display_stream(stream: &StreamStateHandle, meta_file: &Path) -> String {
    match stream {
        StreamStateHandle::File { path, .. } => path.display().to_string(),
        StreamStateHandle::InMemory { name, .. } => {
            format!("{} (inline stream '{name}')", meta_file.display())
        }
    }
}

/// Reads a stream's bytes through `storage`; a file must have the size its
/// handle records.
fn read_stream(
    storage: &dyn Storage,
    stream: &StreamStateHandle,
    display: &str,
    needed_by: &str,
) -> Result<Arc<[u8]>> {
    match stream {
        StreamStateHandle::InMemory { data, .. } => Ok(data.clone()),
        StreamStateHandle::File { path, size } => {
            let data = storage
                .read(path)
                .map_err(|source| Error::StateFileUnreadable {
                    file: display.to_string(),
                    needed_by: needed_by.to_string(),
                    source,
                })?;
            state_api::snapshot::stream::check_file_size(display, *size, data.len() as u64)?;
            Ok(Arc::from(data))
        }
    }
}

/// Whether a file lives in a folder named `shared`.
fn is_shared(path: &Path) -> bool {
    path.parent()
        .and_then(Path::file_name)
        .is_some_and(|n| n == SHARED_DIR)
}

/// File counts and bytes of a snapshot, each distinct file once.
struct Totals {
    files: u64,
    shared_bytes: u64,
    exclusive_bytes: u64,
}

impl Totals {
    fn of(metadata: &CheckpointMetadata, metadata_size: u64) -> Self {
        let mut seen = HashSet::new();
        let mut totals = Totals {
            files: 1,
            shared_bytes: 0,
            exclusive_bytes: metadata_size,
        };
        for (path, size) in metadata.file_sizes() {
            if !seen.insert(path.clone()) {
                continue;
            }
            totals.files += 1;
            let slot = if is_shared(&path) {
                &mut totals.shared_bytes
            } else {
                &mut totals.exclusive_bytes
            };
            *slot = slot.saturating_add(size);
        }
        totals
    }
}

/// The format of a snapshot's managed keyed state (see
/// [`SnapshotSummary::format`]).
fn format_of(metadata: &CheckpointMetadata) -> String {
    let mut formats = BTreeSet::new();
    let mut any_state = false;
    for subtask in metadata.operators.iter().flat_map(|o| &o.subtasks) {
        any_state |= !subtask.operator.is_empty()
            || !subtask.raw_keyed.is_empty()
            || !subtask.raw_operator.is_empty();
        for handle in &subtask.keyed {
            formats.insert(match handle {
                KeyedStateHandle::KeyGroups(_) => "full".to_string(),
                KeyedStateHandle::IncrementalHeap(_) => "incremental".to_string(),
                KeyedStateHandle::IncrementalNative(n) => format!("native {}", n.backend),
            });
        }
    }
    let mut formats = formats.into_iter();
    match (formats.next(), formats.next()) {
        (Some(one), None) => one,
        (Some(_), Some(_)) => "mixed".to_string(),
        (None, _) if any_state => "full".to_string(),
        (None, _) => "empty".to_string(),
    }
}

fn kind_name(kind: SnapshotKind) -> &'static str {
    match kind {
        SnapshotKind::Checkpoint => "checkpoint",
        SnapshotKind::Savepoint => "savepoint",
    }
}

fn distribution_name(d: Distribution) -> &'static str {
    match d {
        Distribution::SplitDistribute => "operator list",
        Distribution::Union => "operator union",
        Distribution::Broadcast => "broadcast",
    }
}

fn codec_text(schema: &CodecSchema) -> String {
    format!("{} v{}", schema.name, schema.version)
}

fn range_text(range: KeyGroupRange) -> String {
    match range.end() {
        Some(end) => format!("{}..={end}", range.start()),
        None => "none".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{CheckpointConfig, CheckpointCoordinator};
    use crate::storage::LocalStorage;
    use crate::{CheckpointStorage, OperatorState, SubtaskState};
    use state_api::format::bytes::put_bytes;
    use state_api::format::frame::Compression;
    use state_api::format::keyed::{KeyedSnapshotMeta, KeyedSnapshotWriter};
    use state_api::format::operator::{
        write_operator_snapshot, OperatorStateData, OperatorStateMeta,
    };
    use state_api::snapshot::handle::{IncrementalKeyedStateHandle, IncrementalNativeStateHandle};
    use state_api::snapshot::stream::{CheckpointStreamFactory, StreamScope};
    use state_api::state::StateKind;

    const MAX_P: u32 = 16;
    /// Keys 0..KEYS are written, each to the subtask owning its key group.
    const KEYS: u32 = 40;

    fn tempdir() -> Result<tempfile::TempDir> {
        tempfile::tempdir().map_err(|e| Error::io("tempdir", e))
    }

    fn schema(name: &str, version: u32) -> CodecSchema {
        CodecSchema::new(name, version)
    }

    fn state_metas() -> Vec<StateMeta> {
        let ns = schema("postcard:()", 1);
        vec![
            StateMeta {
                name: "count".into(),
                kind: StateKind::Value,
                namespace: ns.clone(),
                values: vec![schema("postcard:u64", 1)],
                ttl: None,
            },
            StateMeta {
                name: "events".into(),
                kind: StateKind::List,
                namespace: ns.clone(),
                values: vec![schema("postcard:String", 1)],
                ttl: None,
            },
            StateMeta {
                name: "attrs".into(),
                kind: StateKind::Map,
                namespace: ns,
                values: vec![schema("postcard:u32", 1), schema("postcard:String", 2)],
                ttl: None,
            },
        ]
    }

    fn key(i: u32) -> Vec<u8> {
        format!("key-{i}").into_bytes()
    }

    fn kg_of(key: &[u8]) -> u32 {
        key_group_for_bytes(key, MAX_P).expect("valid max parallelism")
    }

    /// A record to write: key group it is written under, state index, key,
    /// namespace, body.
    #[derive(Clone, Debug)]
    struct Rec {
        kg: u32,
        state: u32,
        key: Vec<u8>,
        ns: Vec<u8>,
        body: Body,
    }

    #[derive(Clone, Debug)]
    enum Body {
        Cell(Vec<u8>),
        List(Vec<Vec<u8>>),
        Map(Vec<u8>, Vec<u8>),
        Delete,
    }

    impl Rec {
        fn new(state: u32, key: Vec<u8>, body: Body) -> Self {
            Rec {
                kg: kg_of(&key),
                state,
                key,
                ns: Vec::new(),
                body,
            }
        }

        /// Bytes of the record as `StateSummary::bytes` counts them (keys,
        /// values and elements are all shorter than 128 bytes here).
        fn bytes(&self) -> u64 {
            let p = |b: &[u8]| 1 + b.len() as u64;
            p(&self.key)
                + p(&self.ns)
                + match &self.body {
                    Body::Cell(v) => p(v),
                    Body::List(es) => 1 + es.iter().map(|e| p(e)).sum::<u64>(),
                    Body::Map(k, v) => p(k) + p(v),
                    Body::Delete => 0,
                }
        }
    }

    /// The records of every key of `range`: a count, a list of `k % 3 + 1`
    /// events, and `k % 2 + 1` map entries.
    fn records(range: KeyGroupRange) -> Vec<Rec> {
        let mut out = Vec::new();
        for k in (0..KEYS).filter(|&k| range.contains(kg_of(&key(k)))) {
            out.push(Rec::new(
                0,
                key(k),
                Body::Cell(u64::from(k).to_le_bytes().to_vec()),
            ));
            let events = (0..=k % 3).map(|e| format!("e{e}").into_bytes()).collect();
            out.push(Rec::new(1, key(k), Body::List(events)));
            for m in 0..=k % 2 {
                out.push(Rec::new(
                    2,
                    key(k),
                    Body::Map(vec![m as u8], format!("v{k}.{m}").into_bytes()),
                ));
            }
        }
        out
    }

    fn write_keyed(
        streams: &dyn CheckpointStreamFactory,
        scope: StreamScope,
        range: KeyGroupRange,
        delta: bool,
        recs: &[Rec],
        checkpoint_id: u64,
    ) -> Result<KeyGroupsStateHandle> {
        let meta = KeyedSnapshotMeta {
            max_parallelism: MAX_P,
            range,
            key_codec: schema("postcard:String", 1),
            states: state_metas(),
            delta,
        };
        let out = streams.create_stream(scope)?;
        let mut w = KeyedSnapshotWriter::new(out, meta, Compression::None, checkpoint_id)?;
        let mut sorted = recs.to_vec();
        sorted.sort_by_key(|r| r.kg);
        let mut current = None;
        for r in &sorted {
            if current != Some(r.kg) {
                w.start_key_group(r.kg)?;
                current = Some(r.kg);
            }
            match &r.body {
                Body::Cell(v) => w.write_cell(r.state, &r.key, &r.ns, v)?,
                Body::Map(k, v) => w.write_map_entry(r.state, &r.key, &r.ns, k, v)?,
                Body::Delete => w.write_delete(r.state, &r.key, &r.ns)?,
                Body::List(es) => {
                    let mut enc = Vec::new();
                    for e in es {
                        put_bytes(&mut enc, e);
                    }
                    w.write_list(r.state, &r.key, &r.ns, es.len(), &enc)?
                }
            }
        }
        w.finish()
    }

    fn write_operator(
        streams: &dyn CheckpointStreamFactory,
        subtask: u32,
        checkpoint_id: u64,
    ) -> Result<OperatorStateHandle> {
        let mut entry = Vec::new();
        put_bytes(&mut entry, b"rule");
        put_bytes(&mut entry, format!("from {subtask}").as_bytes());
        let states = [
            OperatorStateData {
                meta: OperatorStateMeta {
                    name: "offsets".into(),
                    distribution: Distribution::SplitDistribute,
                    schemas: vec![schema("postcard:u64", 1)],
                },
                elements: (0..3u64).map(|i| (i + 10).to_le_bytes().to_vec()).collect(),
            },
            OperatorStateData {
                meta: OperatorStateMeta {
                    name: "rules".into(),
                    distribution: Distribution::Broadcast,
                    schemas: vec![schema("postcard:String", 1), schema("postcard:String", 1)],
                },
                elements: vec![entry],
            },
        ];
        let out = streams.create_stream(StreamScope::Exclusive)?;
        write_operator_snapshot(out, &states, Compression::None, checkpoint_id, &|| Ok(()))
    }

    fn subtask_range(index: u32) -> KeyGroupRange {
        KeyGroupRange::for_operator(MAX_P, 2, index).expect("valid")
    }

    /// Operator `op` at parallelism 2 with full keyed state and operator state.
    fn full_operator(
        streams: &Arc<dyn CheckpointStreamFactory>,
        checkpoint_id: u64,
    ) -> Result<OperatorState> {
        let mut subtasks = Vec::new();
        for i in 0..2 {
            let range = subtask_range(i);
            let keyed = write_keyed(
                &**streams,
                StreamScope::Exclusive,
                range,
                false,
                &records(range),
                checkpoint_id,
            )?;
            subtasks.push(SubtaskState {
                keyed: vec![KeyedStateHandle::KeyGroups(keyed)],
                operator: vec![write_operator(&**streams, i, checkpoint_id)?],
                ..Default::default()
            });
        }
        Ok(OperatorState {
            operator_id: "op".into(),
            parallelism: 2,
            max_parallelism: MAX_P,
            subtasks,
        })
    }

    fn coordinator(root: &Path, inline_threshold: usize) -> Result<CheckpointCoordinator> {
        CheckpointStorage::new(root, "job")?
            .with_inline_threshold(inline_threshold)?
            .coordinator(CheckpointConfig {
                num_retained: 3,
                ..Default::default()
            })
    }

    /// A completed checkpoint of `full_operator`; returns its `_metadata`.
    fn full_checkpoint(c: &mut CheckpointCoordinator) -> Result<PathBuf> {
        let pending = c.begin_checkpoint()?;
        let op = full_operator(&pending.streams, pending.id)?;
        Ok(c.complete_checkpoint(pending.id, vec![op])?.metadata_path)
    }

    fn verify(path: &Path) -> VerifyReport {
        verify_snapshot(&LocalStorage, path, &mut |_| {})
    }

    fn keyed_files(metadata_path: &Path) -> Result<Vec<PathBuf>> {
        let m = load_metadata(&LocalStorage, metadata_path)?;
        let mut out = Vec::new();
        for s in m.operators.iter().flat_map(|o| &o.subtasks) {
            for h in &s.keyed {
                for stream in h.streams() {
                    if let StreamStateHandle::File { path, .. } = stream {
                        out.push(path.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    fn operator_files(metadata_path: &Path) -> Result<Vec<PathBuf>> {
        let m = load_metadata(&LocalStorage, metadata_path)?;
        let mut out = Vec::new();
        for s in m.operators.iter().flat_map(|o| &o.subtasks) {
            for h in &s.operator {
                if let StreamStateHandle::File { path, .. } = &h.data {
                    out.push(path.clone());
                }
            }
        }
        Ok(out)
    }

    fn flip_bit(path: &Path, offset: usize) -> Result<()> {
        let mut bytes = std::fs::read(path).map_err(|e| Error::io("read", e))?;
        bytes[offset] ^= 0x10;
        std::fs::write(path, bytes).map_err(|e| Error::io("write", e))
    }

    fn expected_records() -> u64 {
        // Keyed records of both subtasks, then 4 operator elements per subtask.
        let all = records(KeyGroupRange::all(MAX_P)).len() as u64;
        all + 2 * 4
    }

    #[test]
    fn a_whole_checkpoint_verifies_and_counts_records() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let meta = full_checkpoint(&mut c)?;
        let mut seen = Vec::new();
        let report = verify_snapshot(&LocalStorage, &meta, &mut |b| seen.push(b));
        assert!(report.is_whole(), "{:#?}", report.problems);
        assert_eq!(report.records, expected_records());
        assert_eq!(
            report.files,
            1 + 4,
            "the _metadata, 2 keyed and 2 operator files"
        );
        assert_eq!(report.native_files, 0);
        assert_eq!(report.metadata, meta.display().to_string());
        let on_disk: u64 = std::fs::read_dir(meta.parent().expect("folder"))
            .map_err(|e| Error::io("list", e))?
            .map(|e| e.expect("entry").metadata().expect("metadata").len())
            .sum();
        assert_eq!(
            report.bytes, on_disk,
            "every byte of the checkpoint was read"
        );
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress only grows");
        assert_eq!(seen.last(), Some(&report.bytes));
        let total = inspect_snapshot(&LocalStorage, &meta, false)?.total_bytes;
        assert_eq!(report.bytes, total, "progress ends at the snapshot's size");
        // The folder names the checkpoint as well as its _metadata.
        let by_folder = verify(meta.parent().expect("folder"));
        assert!(by_folder.is_whole());
        assert_eq!(by_folder.records, report.records);
        Ok(())
    }

    #[test]
    fn inline_streams_verify_and_inspect_too() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 1 << 20)?;
        let meta = full_checkpoint(&mut c)?;
        let report = verify(&meta);
        assert!(report.is_whole(), "{:#?}", report.problems);
        assert_eq!(report.files, 1, "everything is inlined in the _metadata");
        assert_eq!(report.records, expected_records());
        let summary = inspect_snapshot(&LocalStorage, &meta, false)?;
        assert_eq!(summary.files, 1);
        let files = &summary.operators[0].subtasks[0].keyed[0].files;
        assert!(files[0].inline && !files[0].shared, "{files:?}");
        assert!(files[0].path.contains("inline stream"), "{}", files[0].path);
        Ok(())
    }

    #[test]
    fn a_flipped_bit_in_a_keyed_file_is_reported_with_its_file() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let meta = full_checkpoint(&mut c)?;
        let files = keyed_files(&meta)?;
        let m = load_metadata(&LocalStorage, &meta)?;
        let KeyedStateHandle::KeyGroups(h) = &m.operators[0].subtasks[0].keyed[0] else {
            panic!("a full handle");
        };
        // A byte inside the first key group's data.
        let at = h.offsets[0] as usize + 20;
        flip_bit(&files[0], at)?;
        let report = verify(&meta);
        assert!(!report.is_whole());
        let name = files[0].display().to_string();
        assert!(
            report.problems.iter().all(|p| p.file == name),
            "{:#?}",
            report.problems
        );
        let p = &report.problems[0];
        assert!(p.offset.is_some_and(|o| o <= at as u64), "{p}");
        assert!(p.what.contains("checksum"), "{p}");
        // The other key groups and files were still read.
        assert!(
            report.records > expected_records() / 2,
            "{}",
            report.records
        );

        // Damage in every other file too: each is reported, none stops the rest.
        flip_bit(&files[1], h.offsets[0] as usize + 20)?;
        flip_bit(&operator_files(&meta)?[0], 30)?;
        let report = verify(&meta);
        let damaged: BTreeSet<&str> = report.problems.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(damaged.len(), 3, "{:#?}", report.problems);
        Ok(())
    }

    #[test]
    fn every_byte_flip_of_a_small_checkpoint_is_reported_never_a_panic() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let meta = full_checkpoint(&mut c)?;
        let mut files = keyed_files(&meta)?;
        files.extend(operator_files(&meta)?);
        files.push(meta.clone());
        for file in files {
            let original = std::fs::read(&file).map_err(|e| Error::io("read", e))?;
            for at in (0..original.len()).step_by(7) {
                flip_bit(&file, at)?;
                let report = verify(&meta);
                assert!(
                    !report.is_whole(),
                    "flip at {at} of {} went unnoticed",
                    file.display()
                );
                std::fs::write(&file, &original).map_err(|e| Error::io("write", e))?;
            }
        }
        assert!(verify(&meta).is_whole());
        Ok(())
    }

    #[test]
    fn truncated_and_missing_files_are_reported() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let meta = full_checkpoint(&mut c)?;
        let files = keyed_files(&meta)?;
        let len = std::fs::metadata(&files[0])
            .map_err(|e| Error::io("stat", e))?
            .len();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&files[0])
            .map_err(|e| Error::io("open", e))?;
        f.set_len(len - 5).map_err(|e| Error::io("truncate", e))?;
        drop(f);
        std::fs::remove_file(&files[1]).map_err(|e| Error::io("remove", e))?;
        let report = verify(&meta);
        assert_eq!(report.problems.len(), 2, "{:#?}", report.problems);
        let truncated = &report.problems[0];
        let missing = &report.problems[1];
        let (truncated, missing) = if truncated.file == files[0].display().to_string() {
            (truncated, missing)
        } else {
            (missing, truncated)
        };
        assert_eq!(truncated.file, files[0].display().to_string());
        assert_eq!(truncated.offset, Some(len - 5));
        assert!(truncated.what.contains("truncated"), "{truncated}");
        assert_eq!(missing.file, files[1].display().to_string());
        assert!(missing.what.contains("missing"), "{missing}");
        assert!(missing.what.contains("checkpoint 1"), "{missing}");
        assert_eq!(report.records, 2 * 4, "the operator files were still read");
        // Inspect fails on the damage, with the file in its message.
        let err = inspect_snapshot(&LocalStorage, &meta, false).expect_err("damaged");
        assert!(err.to_string().contains("/chk-1/"), "{err}");
        Ok(())
    }

    #[test]
    fn a_damaged_metadata_is_one_problem_naming_it() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let meta = full_checkpoint(&mut c)?;
        let len = std::fs::metadata(&meta)
            .map_err(|e| Error::io("stat", e))?
            .len();
        flip_bit(&meta, len as usize / 2)?;
        let mut calls = 0;
        let report = verify_snapshot(&LocalStorage, &meta, &mut |_| calls += 1);
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        let p = &report.problems[0];
        assert_eq!(p.file, meta.display().to_string());
        assert!(p.offset.is_some(), "{p}");
        assert_eq!(report.files, 1);
        assert_eq!(report.bytes, len);
        assert!(calls >= 1);

        std::fs::remove_file(&meta).map_err(|e| Error::io("remove", e))?;
        let report = verify(&meta);
        assert_eq!(report.problems.len(), 1);
        assert!(
            report.problems[0].what.contains("not found"),
            "{:?}",
            report.problems
        );
        assert!(inspect_snapshot(&LocalStorage, &meta, false).is_err());
        Ok(())
    }

    #[test]
    fn a_record_under_the_wrong_key_group_is_reported() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let pending = c.begin_checkpoint()?;
        let range = KeyGroupRange::all(MAX_P);
        let mut recs = records(range);
        let wrong = (recs[0].kg + 1) % MAX_P;
        recs[0].kg = wrong;
        let keyed = write_keyed(
            &*pending.streams,
            StreamScope::Exclusive,
            range,
            false,
            &recs,
            pending.id,
        )?;
        let path = match &keyed.data {
            StreamStateHandle::File { path, .. } => path.display().to_string(),
            other => panic!("expected a file, got {other:?}"),
        };
        let op = OperatorState {
            operator_id: "op".into(),
            parallelism: 1,
            max_parallelism: MAX_P,
            subtasks: vec![SubtaskState {
                keyed: vec![KeyedStateHandle::KeyGroups(keyed)],
                ..Default::default()
            }],
        };
        let meta = c.complete_checkpoint(pending.id, vec![op])?.metadata_path;
        let report = verify(&meta);
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        let p = &report.problems[0];
        assert_eq!(p.file, path);
        assert!(p.offset.is_some());
        assert!(
            p.what.contains(&format!("stored under key group {wrong}"))
                && p.what.contains("'count'"),
            "{p}"
        );
        assert_eq!(
            report.records,
            recs.len() as u64,
            "every record was decoded"
        );
        Ok(())
    }

    #[test]
    fn a_file_full_of_misplaced_records_lists_a_bounded_number_of_problems() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let pending = c.begin_checkpoint()?;
        let range = KeyGroupRange::all(MAX_P);
        let mut recs = records(range);
        // Nearly all in one frame of key group 0, none where it belongs.
        for r in &mut recs {
            r.kg = u32::from(r.kg == 0);
        }
        let keyed = write_keyed(
            &*pending.streams,
            StreamScope::Exclusive,
            range,
            false,
            &recs,
            pending.id,
        )?;
        let op = OperatorState {
            operator_id: "op".into(),
            parallelism: 1,
            max_parallelism: MAX_P,
            subtasks: vec![SubtaskState {
                keyed: vec![KeyedStateHandle::KeyGroups(keyed)],
                ..Default::default()
            }],
        };
        let meta = c.complete_checkpoint(pending.id, vec![op])?.metadata_path;
        let report = verify(&meta);
        assert_eq!(report.problems.len(), MAX_PROBLEMS_PER_FILE + 1);
        let last = report.problems.last().expect("a summary");
        let more = recs.len() - MAX_PROBLEMS_PER_FILE;
        assert_eq!(
            last.what,
            format!("{more} more problems in this file are not listed")
        );
        let first = &report.problems[0];
        assert_eq!(
            first.to_string(),
            format!(
                "{} at offset {}: {}",
                first.file,
                first.offset.expect("an offset"),
                first.what
            )
        );
        assert_eq!(report.records, recs.len() as u64);
        Ok(())
    }

    #[test]
    fn handles_that_disagree_with_the_metadata_are_reported() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let pending = c.begin_checkpoint()?;
        let mut op = full_operator(&pending.streams, pending.id)?;
        // Subtask 1's handle claims offsets its file does not have, and the
        // operator has more subtasks than its parallelism.
        if let KeyedStateHandle::KeyGroups(h) = &mut op.subtasks[1].keyed[0] {
            h.offsets[1] += 1;
        }
        op.subtasks.push(SubtaskState::default());
        let meta = c.complete_checkpoint(pending.id, vec![op])?.metadata_path;
        let report = verify(&meta);
        assert_eq!(report.problems.len(), 2, "{:#?}", report.problems);
        assert!(report.problems[0].file.ends_with("_metadata"));
        assert!(report.problems[0].what.contains("3 subtask states"));
        assert!(
            report.problems[1]
                .what
                .contains("differ from the file's index"),
            "{}",
            report.problems[1]
        );
        Ok(())
    }

    #[test]
    fn inspect_counts_entries_per_state_and_key_group() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let meta = full_checkpoint(&mut c)?;
        let s = inspect_snapshot(&LocalStorage, &meta, true)?;
        assert_eq!(s.checkpoint_id, 1);
        assert_eq!(s.kind, "checkpoint");
        assert_eq!(s.format, "full");
        assert_eq!(s.files, 5);
        assert_eq!(s.shared_bytes, 0);
        assert_eq!(s.total_bytes, s.exclusive_bytes);
        let on_disk: u64 = std::fs::read_dir(meta.parent().expect("folder"))
            .map_err(|e| Error::io("list", e))?
            .map(|e| e.expect("entry").metadata().expect("metadata").len())
            .sum();
        assert_eq!(s.total_bytes, on_disk);
        let op = &s.operators[0];
        assert_eq!((op.parallelism, op.max_parallelism), (2, MAX_P));
        assert_eq!(op.subtasks.len(), 2);
        assert_eq!(op.subtasks[1].keyed[0].key_groups, "8..=15");
        assert_eq!(op.subtasks[1].keyed[0].kind, "full");
        assert_eq!(op.subtasks[0].operator_states, vec!["offsets", "rules"]);
        let names: Vec<&str> = op.states.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["attrs", "count", "events", "offsets", "rules"]);

        // The model: the records written, per state and key group.
        let all = records(KeyGroupRange::all(MAX_P));
        for (i, name) in ["count", "events", "attrs"].into_iter().enumerate() {
            let state = op.states.iter().find(|s| s.name == name).expect("listed");
            let mine: Vec<&Rec> = all.iter().filter(|r| r.state == i as u32).collect();
            assert_eq!(state.entries, Some(mine.len() as u64), "{name}");
            let bytes: u64 = mine.iter().map(|r| r.bytes()).sum();
            assert_eq!(state.bytes, Some(bytes), "{name}");
            let mut per_kg: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
            for r in &mine {
                let slot = per_kg.entry(r.kg).or_default();
                slot.0 += 1;
                slot.1 += r.bytes();
            }
            let expected: Vec<KeyGroupStat> = per_kg
                .into_iter()
                .map(|(key_group, (entries, bytes))| KeyGroupStat {
                    key_group,
                    entries,
                    bytes,
                })
                .collect();
            assert_eq!(state.key_groups, expected, "{name}");
            assert_eq!(state.key_codec.as_deref(), Some("postcard:String v1"));
            assert_eq!(state.namespace_codec.as_deref(), Some("postcard:() v1"));
        }
        let attrs = &op.states[0];
        assert_eq!(attrs.kind, "Map");
        assert_eq!(
            attrs.value_codecs,
            vec!["postcard:u32 v1", "postcard:String v2"]
        );
        let offsets = &op.states[3];
        assert_eq!(offsets.kind, "operator list");
        assert_eq!(offsets.entries, Some(6));
        assert_eq!(offsets.bytes, Some(6 * 8));
        assert_eq!(offsets.key_codec, None);
        assert!(offsets.key_groups.is_empty());
        assert_eq!(op.states[4].kind, "broadcast");
        assert_eq!(op.states[4].entries, Some(2));

        // Without per-key-group stats, the same totals.
        let s = inspect_snapshot(&LocalStorage, meta.parent().expect("folder"), false)?;
        assert!(s.operators[0]
            .states
            .iter()
            .all(|s| s.key_groups.is_empty()));
        assert_eq!(s.operators[0].states[1].entries, Some(KEYS as u64));
        Ok(())
    }

    /// Checkpoint 1: an incremental chain with only its base (in `shared/`).
    /// Checkpoint 2: the same base and a delta that replaces, deletes and
    /// adds. Returns both `_metadata` paths.
    fn incremental_checkpoints(c: &mut CheckpointCoordinator) -> Result<(PathBuf, PathBuf)> {
        let range = KeyGroupRange::all(MAX_P);
        let p1 = c.begin_checkpoint()?;
        let base = write_keyed(
            &*p1.streams,
            StreamScope::Shared,
            range,
            false,
            &records(range),
            p1.id,
        )?;
        let chain = |checkpoint_id, deltas| {
            vec![OperatorState {
                operator_id: "op".into(),
                parallelism: 1,
                max_parallelism: MAX_P,
                subtasks: vec![SubtaskState {
                    keyed: vec![KeyedStateHandle::IncrementalHeap(
                        IncrementalKeyedStateHandle {
                            checkpoint_id,
                            range,
                            base: base.clone(),
                            deltas,
                        },
                    )],
                    ..Default::default()
                }],
            }]
        };
        let first = c.complete_checkpoint(p1.id, chain(p1.id, vec![]))?;
        let p2 = c.begin_checkpoint()?;
        let delta = write_keyed(
            &*p2.streams,
            StreamScope::Shared,
            range,
            true,
            &delta_records(),
            p2.id,
        )?;
        let second = c.complete_checkpoint(p2.id, chain(p2.id, vec![delta]))?;
        Ok((first.metadata_path, second.metadata_path))
    }

    /// Key 0's count is replaced, key 1's count deleted, key 2's map gets a
    /// new user key, key 3's map is deleted and rewritten with one entry,
    /// key 4's list is replaced, key 99 is new.
    fn delta_records() -> Vec<Rec> {
        vec![
            Rec::new(0, key(0), Body::Cell(vec![7; 8])),
            Rec::new(0, key(1), Body::Delete),
            Rec::new(2, key(2), Body::Map(vec![9], b"new".to_vec())),
            Rec::new(2, key(3), Body::Delete),
            Rec::new(2, key(3), Body::Map(vec![5], b"only".to_vec())),
            Rec::new(1, key(4), Body::List(vec![b"x".to_vec()])),
            Rec::new(0, key(99), Body::Cell(vec![1; 8])),
        ]
    }

    /// The merged model: (state, key, map user key) -> record.
    fn merged_model() -> BTreeMap<(u32, Vec<u8>, Vec<u8>), Rec> {
        let mut model = BTreeMap::new();
        let user_key = |r: &Rec| match &r.body {
            Body::Map(k, _) => k.clone(),
            _ => Vec::new(),
        };
        for r in records(KeyGroupRange::all(MAX_P)) {
            model.insert((r.state, r.key.clone(), user_key(&r)), r);
        }
        for r in delta_records() {
            match r.body {
                Body::Delete => model.retain(|(s, k, _), _| !(*s == r.state && *k == r.key)),
                Body::Map(..) => {
                    model.insert((r.state, r.key.clone(), user_key(&r)), r);
                }
                _ => {
                    model.retain(|(s, k, _), _| !(*s == r.state && *k == r.key));
                    model.insert((r.state, r.key.clone(), Vec::new()), r);
                }
            }
        }
        model
    }

    #[test]
    fn inspect_merges_incremental_chains() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let (first, second) = incremental_checkpoints(&mut c)?;
        let s = inspect_snapshot(&LocalStorage, &second, true)?;
        assert_eq!(s.format, "incremental");
        let handle = &s.operators[0].subtasks[0].keyed[0];
        assert_eq!(handle.kind, "incremental");
        assert_eq!(handle.key_groups, "0..=15");
        assert_eq!(handle.files.len(), 2, "base and delta");
        assert!(handle.files.iter().all(|f| f.shared && !f.inline));
        assert_eq!(s.files, 3);
        assert_eq!(s.shared_bytes, handle.bytes);
        assert_eq!(s.total_bytes, s.shared_bytes + s.exclusive_bytes);

        let model = merged_model();
        for (i, name) in ["count", "events", "attrs"].into_iter().enumerate() {
            let state = s.operators[0]
                .states
                .iter()
                .find(|s| s.name == name)
                .expect("listed");
            let mine: Vec<&Rec> = model.values().filter(|r| r.state == i as u32).collect();
            assert_eq!(state.entries, Some(mine.len() as u64), "{name}");
            let bytes: u64 = mine.iter().map(|r| r.bytes()).sum();
            assert_eq!(state.bytes, Some(bytes), "{name}");
            let per_kg_entries: u64 = state.key_groups.iter().map(|k| k.entries).sum();
            assert_eq!(per_kg_entries, mine.len() as u64);
            for stat in &state.key_groups {
                let n = mine.iter().filter(|r| r.kg == stat.key_group).count() as u64;
                assert_eq!(stat.entries, n, "{name} key group {}", stat.key_group);
            }
        }
        // The chain's first checkpoint holds the base alone.
        let s1 = inspect_snapshot(&LocalStorage, &first, false)?;
        let count = s1.operators[0].states.iter().find(|s| s.name == "count");
        assert_eq!(count.and_then(|s| s.entries), Some(KEYS as u64));

        let report = verify(&second);
        assert!(report.is_whole(), "{:#?}", report.problems);
        let base_records = records(KeyGroupRange::all(MAX_P)).len() as u64;
        assert_eq!(report.records, base_records + delta_records().len() as u64);
        Ok(())
    }

    #[test]
    fn native_files_are_checked_by_crc_and_not_counted() -> Result<()> {
        let dir = tempdir()?;
        let mut c = coordinator(dir.path(), 0)?;
        let pending = c.begin_checkpoint()?;
        let native_file = |name: &str, scope: StreamScope, fill: u8| -> Result<NativeFile> {
            let mut out = pending.streams.create_stream(scope)?;
            let bytes = vec![fill; 100];
            out.write_all(&bytes)?;
            Ok(NativeFile {
                name: name.into(),
                data: out.close_and_get_handle()?,
                crc32: crc32fast::hash(&bytes),
            })
        };
        let sst = native_file("000012.sst", StreamScope::Shared, 1)?;
        let manifest = native_file("MANIFEST-000003", StreamScope::Exclusive, 2)?;
        let native = KeyedStateHandle::IncrementalNative(IncrementalNativeStateHandle {
            checkpoint_id: pending.id,
            backend: "rocksdb".into(),
            format_version: 1,
            max_parallelism: MAX_P,
            range: KeyGroupRange::all(MAX_P),
            source_range: KeyGroupRange::all(MAX_P),
            key_codec: schema("postcard:String", 1),
            states: state_metas(),
            shared: vec![sst.clone()],
            private: vec![manifest],
        });
        let native_op = OperatorState {
            operator_id: "native".into(),
            parallelism: 1,
            max_parallelism: MAX_P,
            subtasks: vec![SubtaskState {
                keyed: vec![native],
                ..Default::default()
            }],
        };
        let full_op = full_operator(&pending.streams, pending.id)?;
        let meta = c
            .complete_checkpoint(pending.id, vec![full_op, native_op])?
            .metadata_path;

        let report = verify(&meta);
        assert!(report.is_whole(), "{:#?}", report.problems);
        assert_eq!(report.native_files, 2);
        let s = inspect_snapshot(&LocalStorage, &meta, true)?;
        assert_eq!(s.format, "mixed");
        let native = &s.operators[1];
        assert_eq!(native.subtasks[0].keyed[0].kind, "native rocksdb");
        assert_eq!(native.subtasks[0].keyed[0].files.len(), 2);
        assert!(native.subtasks[0].keyed[0].files[0].shared);
        assert_eq!(native.states.len(), 3);
        for state in &native.states {
            assert_eq!((state.entries, state.bytes), (None, None), "{}", state.name);
            assert!(state.key_groups.is_empty());
            assert!(state.key_codec.is_some());
        }

        let StreamStateHandle::File { path, .. } = &sst.data else {
            panic!("a file");
        };
        flip_bit(path, 50)?;
        let report = verify(&meta);
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        assert_eq!(report.problems[0].file, path.display().to_string());
        assert!(
            report.problems[0].what.contains("CRC32"),
            "{}",
            report.problems[0]
        );
        assert!(
            report.problems[0].what.contains("000012.sst"),
            "{}",
            report.problems[0]
        );
        Ok(())
    }

    #[test]
    fn list_sorts_checkpoints_by_id() -> Result<()> {
        let dir = tempdir()?;
        let root = dir.path().join("checkpoints");
        let mut c = coordinator(&root, 0)?;
        // Retention keeps 8, 9 and 10; 10 sorts after 9, not before 8.
        for _ in 1..=10 {
            let p = c.begin_checkpoint()?;
            c.complete_checkpoint(p.id, Vec::new())?;
        }
        let listed = list_snapshots(&LocalStorage, &root)?;
        let ids: Vec<Option<u64>> = listed.iter().map(|l| l.checkpoint_id).collect();
        assert_eq!(ids, vec![Some(8), Some(9), Some(10)], "{listed:#?}");
        assert!(listed[2].path.ends_with("chk-10"), "{}", listed[2].path);
        for l in &listed {
            assert_eq!(
                (l.kind.as_str(), l.owner.as_str()),
                ("checkpoint", "retention")
            );
            assert_eq!(l.format, "empty");
            assert_eq!(l.files, 1);
            assert!(l.error.is_none());
        }
        Ok(())
    }

    #[test]
    fn list_finds_checkpoints_and_savepoints_and_lists_damaged_ones() -> Result<()> {
        let dir = tempdir()?;
        let root = dir.path().join("checkpoints");
        let savepoints = dir.path().join("savepoints");
        let mut c = coordinator(&root, 0)?;
        let chk1 = full_checkpoint(&mut c)?;
        let chk2 = full_checkpoint(&mut c)?;
        let pending = c.begin_savepoint(&savepoints)?;
        let op = full_operator(&pending.streams, pending.id)?;
        let sp = c.complete_savepoint(pending.id, vec![op])?;
        let len = std::fs::metadata(&chk2)
            .map_err(|e| Error::io("stat", e))?
            .len();
        flip_bit(&chk2, len as usize / 2)?;

        let listed = list_snapshots(&LocalStorage, &root)?;
        assert_eq!(listed.len(), 2, "{listed:#?}");
        let ok = &listed[0];
        assert_eq!(
            ok.path,
            chk1.parent().expect("folder").display().to_string()
        );
        assert_eq!(ok.checkpoint_id, Some(1));
        assert_eq!(
            (ok.kind.as_str(), ok.owner.as_str()),
            ("checkpoint", "retention")
        );
        assert_eq!(ok.format, "full");
        assert_eq!(ok.files, 5);
        assert!(ok.timestamp_millis.is_some() && ok.error.is_none());
        let s = inspect_snapshot(&LocalStorage, &chk1, false)?;
        assert_eq!(ok.bytes, s.total_bytes);
        let damaged = &listed[1];
        assert_eq!(damaged.checkpoint_id, Some(2), "from the folder name");
        assert_eq!(damaged.kind, "checkpoint");
        assert_eq!(damaged.format, "unknown");
        assert!(damaged.error.is_some(), "{damaged:#?}");
        assert_eq!(damaged.bytes, len);

        // The job folder, a checkpoint folder and a _metadata list too.
        assert_eq!(list_snapshots(&LocalStorage, &root.join("job"))?.len(), 2);
        let one = list_snapshots(&LocalStorage, chk1.parent().expect("folder"))?;
        assert_eq!(one.len(), 1);
        assert_eq!(list_snapshots(&LocalStorage, &chk1)?.len(), 1);

        let sps = list_snapshots(&LocalStorage, &savepoints)?;
        assert_eq!(sps.len(), 1, "{sps:#?}");
        assert_eq!(sps[0].path, sp.display().to_string());
        assert_eq!(
            (sps[0].kind.as_str(), sps[0].owner.as_str()),
            ("savepoint", "user")
        );
        assert_eq!(sps[0].checkpoint_id, Some(3));
        assert_eq!(sps[0].format, "full");
        assert!(sps[0].error.is_none());
        // From their common parent: the savepoint; the checkpoints are 3 levels down.
        assert_eq!(list_snapshots(&LocalStorage, dir.path())?.len(), 1);

        // Not a folder.
        let err = list_snapshots(&LocalStorage, &dir.path().join("nothing")).expect_err("missing");
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        let file = keyed_files(&chk1)?;
        let err = list_snapshots(&LocalStorage, &file[0]).expect_err("a file");
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        Ok(())
    }
}
