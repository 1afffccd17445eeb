//! Rewriting a checkpoint or savepoint as a new, self-contained canonical
//! savepoint, optionally at another max parallelism, without user types.
//!
//! A key's group is a function of its stored bytes, so changing the max
//! parallelism only needs the records: every record is re-filed under
//! `key_group_for_bytes(key, new_max)`. Native RocksDB handles are read
//! through a [`NativeRecords`] reader the caller supplies (the backend that
//! wrote them knows their layout); incremental heap chains are merged one
//! key group at a time, as a restore would.
//!
//! Memory stays bounded: a first pass reads the old snapshot one key group
//! at a time and spills each record to one of at most [`SPILL_BUCKETS`]
//! scratch files by its new key group (a bucket is a contiguous run of new
//! key groups); a second pass loads one bucket at a time, orders its records
//! by key group and writes them. With a max parallelism up to 256 a bucket is
//! exactly one key group.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::metadata::{publish_metadata, CheckpointMetadata, OperatorState, SubtaskState};
use super::restore::RestorePlan;
use super::storage::Storage;
use super::stream::{FsCheckpointStreamFactory, DEFAULT_INLINE_THRESHOLD};
use state_api::codec::CodecSchema;
use state_api::error::{Error, Result};
use state_api::format::bytes::{put_bytes, put_varint, ByteReader};
use state_api::format::coding::Decode;
use state_api::format::frame::Compression;
use state_api::format::frame::{decode_frame, FRAME_HEADER_LEN};
use state_api::format::keyed::{
    parse_records, KeyedSnapshotMeta, KeyedSnapshotReader, KeyedSnapshotWriter, Record, RecordBody,
    FLAG_DELTA, KEYED_MAGIC, KEYED_SUPPORTED_VERSIONS,
};
use state_api::format::{FILE_HEADER_LEN, FILE_HEADER_LEN_V1};
use state_api::key_group::{check_max_parallelism, key_group_for_bytes, KeyGroupRange};
use state_api::snapshot::handle::{
    IncrementalNativeStateHandle, KeyGroupsStateHandle, KeyedStateHandle, OperatorStateHandle,
};
use state_api::snapshot::stream::{CheckpointStreamFactory, StreamScope, StreamStateHandle};
use state_api::snapshot::SnapshotKind;
use state_api::state::StateMeta;

/// The most scratch files a rewrite spills to.
pub const SPILL_BUCKETS: u32 = 256;

/// Reads the records of a native handle as canonical records, for the key
/// groups of its `range`: `f(key_group, record)`. Implemented by the backend
/// that writes native handles (`backend-rocksdb`).
pub trait NativeRecords {
    /// Calls `f` for every record of `handle`'s key groups.
    fn for_each_record(
        &self,
        handle: &IncrementalNativeStateHandle,
        f: &mut dyn FnMut(u32, Record<'_>) -> Result<()>,
    ) -> Result<()>;
}

/// How to rewrite.
#[derive(Clone, Debug)]
pub struct RewriteOptions {
    /// The new max parallelism of every keyed operator; `None` keeps each
    /// operator's.
    pub max_parallelism: Option<u32>,
    /// Compression of the new keyed files.
    pub compression: Compression,
    /// An empty folder for the scratch files (removed afterwards).
    pub scratch_dir: PathBuf,
}

/// What a rewrite wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewriteReport {
    /// The new savepoint's folder.
    pub path: PathBuf,
    /// Keyed records written.
    pub records: u64,
    /// Bytes of the largest bucket loaded at once.
    pub largest_bucket: u64,
}

/// Rewrites the checkpoint or savepoint at `source` as a canonical savepoint
/// in the new folder `target` (which must not exist or be empty). `native`
/// reads native handles; without it a snapshot holding one is refused.
/// `progress` is called with keyed records read so far.
pub fn rewrite_snapshot(
    storage: Arc<dyn Storage>,
    source: &Path,
    target: &Path,
    options: &RewriteOptions,
    native: Option<&dyn NativeRecords>,
    progress: &mut dyn FnMut(u64),
) -> Result<RewriteReport> {
    if let Some(max) = options.max_parallelism {
        check_max_parallelism(max)?;
    }
    let plan = RestorePlan::load(&*storage, source)?;
    if storage.exists(target)
        && !storage
            .list_dir(target)
            .map_err(|e| Error::io(format!("listing {}", target.display()), e))?
            .is_empty()
    {
        return Err(Error::InvalidArgument {
            what: format!(
                "{} exists and is not empty; a rewrite writes a new savepoint folder",
                target.display()
            ),
        });
    }
    storage
        .create_dir_all(target)
        .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
    let id = plan.checkpoint_id();
    let streams = FsCheckpointStreamFactory::new(
        storage.clone(),
        target.to_path_buf(),
        target.to_path_buf(),
        DEFAULT_INLINE_THRESHOLD,
        format!("rewrite of snapshot {id}"),
    )?;
    let mut report = RewriteReport {
        path: target.to_path_buf(),
        ..Default::default()
    };
    let mut read = 0u64;
    let mut copied: HashMap<String, StreamStateHandle> = HashMap::new();
    let mut operators = Vec::new();
    for old in &plan.metadata().operators {
        let max = options.max_parallelism.unwrap_or(old.max_parallelism);
        let parallelism = old.parallelism.clamp(1, max);
        let keyed: Vec<&KeyedStateHandle> = old.subtasks.iter().flat_map(|s| &s.keyed).collect();
        if old.subtasks.iter().any(|s| !s.raw_keyed.is_empty()) {
            return Err(Error::UnsupportedHandle {
                handle: format!("raw keyed state of operator {}", old.operator_id),
                reason: "raw keyed state is opaque bytes per key group and cannot be re-filed by key; rewrite does not carry it".into(),
            });
        }
        let mut subtasks = vec![SubtaskState::default(); parallelism as usize];
        // Operator state: the same bytes in the new folder, dealt as the old
        // subtasks held them (a restore redistributes them anyway).
        for (i, s) in old.subtasks.iter().enumerate() {
            let slot = &mut subtasks[i % parallelism as usize];
            for h in &s.operator {
                slot.operator
                    .push(copy_operator(&*storage, &streams, h, &mut copied)?);
            }
            for h in &s.raw_operator {
                slot.raw_operator
                    .push(copy_operator(&*storage, &streams, h, &mut copied)?);
            }
        }
        if !keyed.is_empty() {
            let written = rewrite_keyed(
                &keyed,
                max,
                parallelism,
                id,
                &streams,
                options,
                native,
                &mut |n| {
                    read += n;
                    progress(read);
                },
            )?;
            report.records += written.records;
            report.largest_bucket = report.largest_bucket.max(written.largest_bucket);
            for (subtask, h) in subtasks.iter_mut().zip(written.handles) {
                subtask.keyed.push(KeyedStateHandle::KeyGroups(h));
            }
        }
        operators.push(OperatorState {
            operator_id: old.operator_id.clone(),
            parallelism,
            max_parallelism: max,
            subtasks,
        });
    }
    let metadata = CheckpointMetadata {
        checkpoint_id: id,
        kind: SnapshotKind::Savepoint,
        timestamp_millis: plan.metadata().timestamp_millis,
        operators,
    };
    storage
        .sync_dir(target)
        .map_err(|e| Error::io(format!("syncing {}", target.display()), e))?;
    publish_metadata(&*storage, target, target, &metadata)?;
    Ok(report)
}

fn copy_operator(
    storage: &dyn Storage,
    streams: &FsCheckpointStreamFactory,
    handle: &OperatorStateHandle,
    copied: &mut HashMap<String, StreamStateHandle>,
) -> Result<OperatorStateHandle> {
    let key = format!("{:?}", handle.data);
    let data = match copied.get(&key) {
        Some(d) => d.clone(),
        None => {
            let bytes = match &handle.data {
                StreamStateHandle::File { path, .. } => storage
                    .read(path)
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?,
                other => other.read_for(&handle.needed_by())?.bytes().to_vec(),
            };
            let mut out = streams.create_stream(StreamScope::Exclusive)?;
            out.write_all(&bytes)?;
            let d = out.close_and_get_handle()?;
            copied.insert(key, d.clone());
            d
        }
    };
    Ok(OperatorStateHandle {
        checkpoint_id: handle.checkpoint_id,
        data,
        states: handle.states.clone(),
    })
}

struct Written {
    /// One per new subtask, in subtask order.
    handles: Vec<KeyGroupsStateHandle>,
    records: u64,
    largest_bucket: u64,
}

/// The states of every handle, united by name, and each handle's
/// translation of its state indexes.
struct States {
    key_codec: Option<CodecSchema>,
    metas: Vec<StateMeta>,
}

impl States {
    fn index_of(&mut self, meta: &StateMeta) -> Result<u32> {
        if let Some(i) = self.metas.iter().position(|m| m.name == meta.name) {
            let known = &self.metas[i];
            if known.kind != meta.kind || known.values != meta.values {
                return Err(Error::StateKindMismatch {
                    name: meta.name.clone(),
                    registered: format!("{:?} {:?}", known.kind, known.values),
                    requested: format!("{:?} {:?}", meta.kind, meta.values),
                });
            }
            return Ok(i as u32);
        }
        self.metas.push(meta.clone());
        Ok((self.metas.len() - 1) as u32)
    }

    fn key_codec(&mut self, schema: &CodecSchema) -> Result<()> {
        match &self.key_codec {
            Some(k) if k != schema => Err(Error::InvalidArgument {
                what: format!(
                    "handles of one operator disagree on the key codec ({k:?} and {schema:?})"
                ),
            }),
            Some(_) => Ok(()),
            None => {
                self.key_codec = Some(schema.clone());
                Ok(())
            }
        }
    }
}

/// Scratch files, one per bucket of new key groups.
struct Spill {
    dir: PathBuf,
    max: u32,
    buckets: u32,
    writers: Vec<Option<BufWriter<File>>>,
    sizes: Vec<u64>,
    buf: Vec<u8>,
}

impl Spill {
    fn new(dir: &Path, max: u32) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let buckets = max.min(SPILL_BUCKETS);
        Ok(Spill {
            dir: dir.to_path_buf(),
            max,
            buckets,
            writers: (0..buckets).map(|_| None).collect(),
            sizes: vec![0; buckets as usize],
            buf: Vec::new(),
        })
    }

    fn bucket_of(&self, key_group: u32) -> u32 {
        (u64::from(key_group) * u64::from(self.buckets) / u64::from(self.max)) as u32
    }

    fn path(&self, bucket: u32) -> PathBuf {
        self.dir.join(format!("bucket-{bucket}"))
    }

    /// Files `record` (of new state `state`) under its new key group.
    fn add(&mut self, state: u32, r: &Record<'_>) -> Result<()> {
        let kg = key_group_for_bytes(r.key, self.max)?;
        let bucket = self.bucket_of(kg);
        self.buf.clear();
        put_varint(&mut self.buf, u64::from(kg));
        put_varint(&mut self.buf, u64::from(state));
        put_bytes(&mut self.buf, r.key);
        put_bytes(&mut self.buf, r.namespace);
        match &r.body {
            RecordBody::Cell(v) => {
                self.buf.push(0);
                put_bytes(&mut self.buf, v);
            }
            RecordBody::List(elements) => {
                self.buf.push(1);
                put_varint(&mut self.buf, elements.len() as u64);
                for e in elements {
                    put_bytes(&mut self.buf, e);
                }
            }
            RecordBody::MapEntry { key, value } => {
                self.buf.push(2);
                put_bytes(&mut self.buf, key);
                put_bytes(&mut self.buf, value);
            }
            RecordBody::Delete => {
                return Err(Error::InvalidArgument {
                    what: "a delete record reached the rewrite's spill (chains are merged first)"
                        .into(),
                })
            }
        }
        let path = self.path(bucket);
        let slot = &mut self.writers[bucket as usize];
        if slot.is_none() {
            let f = File::create(&path)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            *slot = Some(BufWriter::with_capacity(16 << 10, f));
        }
        if let Some(w) = slot {
            w.write_all(&self.buf)
                .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        }
        self.sizes[bucket as usize] += self.buf.len() as u64;
        Ok(())
    }

    fn finish_writes(&mut self) -> Result<()> {
        for (b, w) in self.writers.iter_mut().enumerate() {
            if let Some(mut w) = w.take() {
                w.flush().map_err(|e| {
                    Error::io(
                        format!("writing {}", self.dir.join(format!("bucket-{b}")).display()),
                        e,
                    )
                })?;
            }
        }
        Ok(())
    }

    /// The records of `bucket`, by key group.
    fn load(&self, bucket: u32) -> Result<Vec<u8>> {
        if self.sizes[bucket as usize] == 0 {
            return Ok(Vec::new());
        }
        let path = self.path(bucket);
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        std::fs::remove_file(&path)
            .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        Ok(bytes)
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Calls `f(state, key codec, key group, record)` for every record of
/// `handle` in `key_groups` (all of its key groups when `None`), in key-group
/// order: canonical files as they are, incremental heap chains merged as a
/// restore merges them (the records of the merged result, no deletes),
/// native handles through `native` (refused without it).
pub fn for_each_keyed_record(
    handle: &KeyedStateHandle,
    native: Option<&dyn NativeRecords>,
    key_groups: Option<KeyGroupRange>,
    f: &mut dyn FnMut(&StateMeta, &CodecSchema, u32, Record<'_>) -> Result<()>,
) -> Result<()> {
    let range = match key_groups {
        Some(r) => handle.range().intersection(&r),
        None => handle.range(),
    };
    if range.is_empty() {
        return Ok(());
    }
    if let KeyedStateHandle::IncrementalNative(n) = handle {
        let Some(reader) = native else {
            return Err(Error::UnsupportedHandle {
                handle: handle.describe(),
                reason: format!("a native {} handle needs that backend's reader", n.backend),
            });
        };
        return reader.for_each_record(n, &mut |kg, r| {
            if !range.contains(kg) {
                return Ok(());
            }
            let meta = n
                .states
                .get(r.state as usize)
                .ok_or_else(|| Error::Corrupted {
                    file: handle.describe(),
                    offset: 0,
                    reason: format!("record of unknown state index {}", r.state),
                })?;
            f(meta, &n.key_codec, kg, r)
        });
    }
    let pieces = handle.canonical_pieces()?;
    let readers: Vec<PieceReader> = pieces
        .iter()
        .map(|p| PieceReader::open(p, &handle.needed_by(p)))
        .collect::<Result<_>>()?;
    if let [reader] = readers.as_slice() {
        if !reader.meta().delta {
            let meta = reader.meta();
            for key_group in range.iter() {
                reader.for_each_record(key_group, &mut |r| {
                    let state = state_meta(meta, reader.file_name(), r.state)?;
                    f(state, &meta.key_codec, key_group, r)
                })?;
            }
            return Ok(());
        }
    }
    // A chain: the states of its newest file describe the merged result.
    let Some(last) = readers.last() else {
        return Ok(());
    };
    let metas = &last.meta().states;
    let key_codec = &last.meta().key_codec;
    for key_group in range.iter() {
        let mut merged = Merged::default();
        for reader in &readers {
            reader.for_each_record(key_group, &mut |r| {
                let meta = state_meta(reader.meta(), reader.file_name(), r.state)?;
                let index = metas
                    .iter()
                    .position(|m| m.name == meta.name)
                    .unwrap_or(usize::MAX);
                merged.apply(index as u32, &r);
                Ok(())
            })?;
        }
        merged.emit(&mut |state, r| {
            let meta = metas.get(state as usize).ok_or_else(|| Error::Corrupted {
                file: last.file_name().to_string(),
                offset: 0,
                reason: format!("a chain names state {state}, which its newest file does not hold"),
            })?;
            f(meta, key_codec, key_group, r)
        })?;
    }
    Ok(())
}

/// Reads one canonical piece. A file is read one key group at a time (its
/// header, meta frame and each key group's byte range), so a large file is
/// never held whole; inline bytes are small and read at once.
enum PieceReader {
    Whole(KeyedSnapshotReader),
    Ranged(RangedReader),
}

impl PieceReader {
    fn open(piece: &KeyGroupsStateHandle, needed_by: &str) -> Result<Self> {
        match &piece.data {
            StreamStateHandle::File { path, size } => {
                RangedReader::open(piece, path, *size, needed_by).map(PieceReader::Ranged)
            }
            _ => KeyedSnapshotReader::open_for(piece, needed_by).map(PieceReader::Whole),
        }
    }

    fn meta(&self) -> &KeyedSnapshotMeta {
        match self {
            PieceReader::Whole(r) => r.meta(),
            PieceReader::Ranged(r) => &r.meta,
        }
    }

    fn file_name(&self) -> &str {
        match self {
            PieceReader::Whole(r) => r.file_name(),
            PieceReader::Ranged(r) => &r.name,
        }
    }

    fn for_each_record(
        &self,
        key_group: u32,
        f: &mut dyn FnMut(Record<'_>) -> Result<()>,
    ) -> Result<()> {
        match self {
            PieceReader::Whole(r) => r.for_each_record(key_group, f),
            PieceReader::Ranged(r) => r.for_each_record(key_group, f),
        }
    }
}

fn read_exact_at(mut file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(at))?;
    file.read_exact(buf)
}

struct RangedReader {
    file: File,
    name: String,
    meta: KeyedSnapshotMeta,
    range: KeyGroupRange,
    offsets: Vec<u64>,
}

impl RangedReader {
    fn open(piece: &KeyGroupsStateHandle, path: &Path, size: u64, needed_by: &str) -> Result<Self> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|e| Error::StateFileUnreadable {
            file: name.clone(),
            needed_by: needed_by.to_string(),
            source: e,
        })?;
        let read_at = |at: u64, len: usize| -> Result<Vec<u8>> {
            if at.saturating_add(len as u64) > size {
                return Err(Error::Truncated {
                    file: name.clone(),
                    offset: at,
                    needed: len as u64,
                    available: size.saturating_sub(at),
                });
            }
            let mut buf = vec![0; len];
            read_exact_at(&file, &mut buf, at)
                .map_err(|e| Error::io(format!("reading {name} at {at}"), e))?;
            Ok(buf)
        };
        let corrupted = |offset: u64, reason: String| Error::Corrupted {
            file: name.clone(),
            offset,
            reason,
        };
        let header = read_at(0, FILE_HEADER_LEN)?;
        if header[..4] != KEYED_MAGIC {
            return Err(corrupted(0, "not a keyed snapshot file (bad magic)".into()));
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        let flags = u16::from_le_bytes([header[6], header[7]]);
        let meta_at = if version == 1 {
            FILE_HEADER_LEN_V1
        } else {
            let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
            if crc32fast::hash(&header[..8]) != crc {
                return Err(corrupted(0, "header checksum mismatch".into()));
            }
            if !KEYED_SUPPORTED_VERSIONS.contains(&version) {
                return Err(corrupted(
                    4,
                    format!("unsupported keyed format version {version}"),
                ));
            }
            FILE_HEADER_LEN
        } as u64;
        let frame_header = read_at(meta_at, FRAME_HEADER_LEN)?;
        let stored = u32::from_le_bytes([
            frame_header[0],
            frame_header[1],
            frame_header[2],
            frame_header[3],
        ]);
        let frame = read_at(meta_at, FRAME_HEADER_LEN + stored as usize)?;
        let (payload, _) = decode_frame(&name, &frame, 0)?;
        let mut meta = KeyedSnapshotMeta::decode_exact_version(
            &payload,
            &name,
            meta_at,
            "the keyed snapshot meta",
            version,
        )?;
        meta.delta = flags & FLAG_DELTA != 0;
        if piece.max_parallelism != meta.max_parallelism
            || piece.offsets.len() != piece.range.len() + 1
            || meta.range.intersection(&piece.range) != piece.range
            || piece.offsets.windows(2).any(|w| w[0] > w[1])
            || piece.offsets.last().is_some_and(|&end| end > size)
        {
            return Err(corrupted(
                0,
                format!(
                    "the handle's key groups {} and offsets do not fit the file",
                    piece.range
                ),
            ));
        }
        Ok(RangedReader {
            file,
            name: name.clone(),
            meta,
            range: piece.range,
            offsets: piece.offsets.clone(),
        })
    }

    fn for_each_record(
        &self,
        key_group: u32,
        f: &mut dyn FnMut(Record<'_>) -> Result<()>,
    ) -> Result<()> {
        let Some(i) = self.range.index_of(key_group) else {
            return Ok(());
        };
        let (start, end) = (self.offsets[i], self.offsets[i + 1]);
        if start == end {
            return Ok(());
        }
        let mut buf = vec![0; (end - start) as usize];
        read_exact_at(&self.file, &mut buf, start)
            .map_err(|e| Error::io(format!("reading {} at {start}", self.name), e))?;
        let mut at = 0u64;
        while at < buf.len() as u64 {
            let (payload, next) = decode_frame(&self.name, &buf, at)?;
            parse_records(&self.name, start + at, &payload, &self.meta, &mut *f)?;
            at = next;
        }
        Ok(())
    }
}

fn state_meta<'m>(meta: &'m KeyedSnapshotMeta, file: &str, state: u32) -> Result<&'m StateMeta> {
    meta.states
        .get(state as usize)
        .ok_or_else(|| Error::Corrupted {
            file: file.to_string(),
            offset: 0,
            reason: format!("record of unknown state index {state}"),
        })
}

#[allow(clippy::too_many_arguments)]
fn rewrite_keyed(
    handles: &[&KeyedStateHandle],
    max: u32,
    parallelism: u32,
    checkpoint_id: u64,
    streams: &FsCheckpointStreamFactory,
    options: &RewriteOptions,
    native: Option<&dyn NativeRecords>,
    progress: &mut dyn FnMut(u64),
) -> Result<Written> {
    let mut states = States {
        key_codec: None,
        metas: Vec::new(),
    };
    let mut spill = Spill::new(
        &options
            .scratch_dir
            .join(format!("spill-{}", crate::layout::unique_file_name())),
        max,
    )?;
    let mut records = 0u64;
    for handle in handles {
        for_each_keyed_record(handle, native, None, &mut |meta, key_codec, _, r| {
            states.key_codec(key_codec)?;
            let state = states.index_of(meta)?;
            spill.add(state, &r)?;
            records += 1;
            if records.is_multiple_of(4096) {
                progress(4096);
            }
            Ok(())
        })?;
    }
    spill.finish_writes()?;
    let key_codec = states.key_codec.clone().unwrap_or_else(|| CodecSchema {
        name: String::new(),
        version: 0,
    });
    // Second pass: one bucket at a time, each new subtask's key groups in order.
    let mut out = Vec::new();
    let mut largest = 0u64;
    let mut loaded: Option<(u32, BucketIndex, Vec<u8>)> = None;
    for i in 0..parallelism {
        let range = KeyGroupRange::for_operator(max, parallelism, i)?;
        let meta = KeyedSnapshotMeta {
            max_parallelism: max,
            range,
            key_codec: key_codec.clone(),
            states: states.metas.clone(),
            delta: false,
        };
        let mut writer = KeyedSnapshotWriter::new(
            streams.create_stream(StreamScope::Exclusive)?,
            meta,
            options.compression,
            checkpoint_id,
        )?;
        for kg in range.iter() {
            let bucket = spill.bucket_of(kg);
            if loaded.as_ref().map(|l| l.0) != Some(bucket) {
                let bytes = spill.load(bucket)?;
                largest = largest.max(bytes.len() as u64);
                let index = index_bucket(&bytes, &spill.path(bucket))?;
                loaded = Some((bucket, index, bytes));
            }
            writer.start_key_group(kg)?;
            if let Some((_, index, bytes)) = &loaded {
                let name = spill.path(bucket).display().to_string();
                for &(at, len) in index.get(&kg).map(Vec::as_slice).unwrap_or(&[]) {
                    let (state, record) = decode_spilled(&bytes[at..at + len], &name, at)?;
                    writer.write_record(state, &record)?;
                }
            }
        }
        out.push(writer.finish()?);
    }
    Ok(Written {
        handles: out,
        records,
        largest_bucket: largest,
    })
}

/// Where each record of a loaded bucket is (offset, length), by key group.
type BucketIndex = BTreeMap<u32, Vec<(usize, usize)>>;

/// Indexes a loaded bucket.
fn index_bucket(bytes: &[u8], path: &Path) -> Result<BucketIndex> {
    let name = path.display().to_string();
    let mut index: BTreeMap<u32, Vec<(usize, usize)>> = BTreeMap::new();
    let mut r = ByteReader::new(bytes, &name, 0);
    while !r.is_empty() {
        let start = r.offset() as usize;
        let kg = r.varint()? as u32;
        let _state = r.varint()?;
        r.bytes()?;
        r.bytes()?;
        match r.u8()? {
            0 => {
                r.bytes()?;
            }
            1 => {
                let n = r.count(1)?;
                for _ in 0..n {
                    r.bytes()?;
                }
            }
            2 => {
                r.bytes()?;
                r.bytes()?;
            }
            other => return Err(r.corrupted(format!("unknown spilled body {other}"))),
        }
        index
            .entry(kg)
            .or_default()
            .push((start, r.offset() as usize - start));
    }
    Ok(index)
}

fn decode_spilled<'a>(bytes: &'a [u8], name: &'a str, at: usize) -> Result<(u32, Record<'a>)> {
    let mut r = ByteReader::new(bytes, name, at as u64);
    let _kg = r.varint()?;
    let state = r.varint()? as u32;
    let key = r.bytes()?;
    let namespace = r.bytes()?;
    let body = match r.u8()? {
        0 => RecordBody::Cell(r.bytes()?),
        1 => {
            let n = r.count(1)?;
            let mut elements = Vec::with_capacity(n);
            for _ in 0..n {
                elements.push(r.bytes()?);
            }
            RecordBody::List(elements)
        }
        _ => RecordBody::MapEntry {
            key: r.bytes()?,
            value: r.bytes()?,
        },
    };
    Ok((
        state,
        Record {
            state,
            key,
            namespace,
            body,
        },
    ))
}

/// A (state, key, namespace) entry.
type Entry = (u32, Vec<u8>, Vec<u8>);

/// One key group of an incremental chain, merged as a restore merges it.
#[derive(Default)]
struct Merged {
    /// (state, key, namespace) → cell value or list elements.
    single: BTreeMap<Entry, Single>,
    /// (state, key, namespace) → user key → user value.
    maps: BTreeMap<Entry, BTreeMap<Vec<u8>, Vec<u8>>>,
}

enum Single {
    Cell(Vec<u8>),
    List(Vec<Vec<u8>>),
}

impl Merged {
    fn apply(&mut self, state: u32, r: &Record<'_>) {
        let key = (state, r.key.to_vec(), r.namespace.to_vec());
        match &r.body {
            RecordBody::Delete => {
                self.single.remove(&key);
                self.maps.remove(&key);
            }
            RecordBody::Cell(v) => {
                self.single.insert(key, Single::Cell(v.to_vec()));
            }
            RecordBody::List(elements) => {
                self.single.insert(
                    key,
                    Single::List(elements.iter().map(|e| e.to_vec()).collect()),
                );
            }
            RecordBody::MapEntry { key: k, value } => {
                self.maps
                    .entry(key)
                    .or_default()
                    .insert(k.to_vec(), value.to_vec());
            }
        }
    }

    fn emit(self, f: &mut dyn FnMut(u32, Record<'_>) -> Result<()>) -> Result<()> {
        for ((state, key, namespace), value) in self.single {
            let elements: Vec<&[u8]>;
            let body = match &value {
                Single::Cell(v) => RecordBody::Cell(v),
                Single::List(list) => {
                    elements = list.iter().map(Vec::as_slice).collect();
                    RecordBody::List(elements)
                }
            };
            f(
                state,
                Record {
                    state,
                    key: &key,
                    namespace: &namespace,
                    body,
                },
            )?;
        }
        for ((state, key, namespace), entries) in self.maps {
            for (k, v) in &entries {
                f(
                    state,
                    Record {
                        state,
                        key: &key,
                        namespace: &namespace,
                        body: RecordBody::MapEntry { key: k, value: v },
                    },
                )?;
            }
        }
        Ok(())
    }
}
