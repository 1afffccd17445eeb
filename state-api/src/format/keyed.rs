//! The canonical keyed-state snapshot: key-group ordered records with an
//! offset index, so a restore at another parallelism decodes only its key groups.
//!
//! ```text
//! header      magic "SKEY" | version u16 = 2 | flags u16 (bit 0: delta file)
//!             | crc32 of those 8 bytes (version 1: no crc32)
//! meta frame  max_parallelism u32 | range start u32 | range end_exclusive u32
//!             | key codec schema | state count varint | state meta ...
//!             state meta = name str | kind u8 | namespace schema
//!                          | value schema count varint | value schemas ...
//!             schema     = name str | version u32
//! key groups  for each key group of the range, in order: zero or more frames
//!             of records; no frame spans two key groups
//! index frame range start u32 | range length u32 | (length + 1) offsets u64:
//!             offset[i] is where key group start+i begins, offset[length]
//!             where the last one ends
//! footer      index frame offset u64 | crc32 u32 | magic "SKEY"
//!
//! record      state index varint | [op u8, delta files only: 0 put, 1 delete]
//!             | key bytes | namespace bytes | body (none for a delete)
//!   cell      value bytes
//!   list      element count varint | element bytes ...
//!   map       user key bytes | user value bytes      (one record per entry)
//! bytes       = length varint | raw bytes
//! ```

use std::borrow::Cow;

use super::bytes::{put_bytes, put_schema, put_varint, ByteReader};
use super::coding::{Decode, Encode};
use super::frame::{
    decode_frame, encode_frame, prepare_frame, Compression, MAX_FRAME_PAYLOAD, TARGET_FRAME_PAYLOAD,
};
use super::{check_envelope, encode_footer, encode_header, FormatVersion};
use crate::codec::CodecSchema;
use crate::error::{Error, Result};
use crate::key_group::KeyGroupRange;
use crate::snapshot::handle::KeyGroupsStateHandle;
use crate::snapshot::stream::{
    CheckpointOutputStream, LocalFiles, StateFileReader, StreamBytes, StreamStateHandle,
};
use crate::state::ttl::{TtlInstant, TtlMeta};
use crate::state::{StateMeta, StorageShape};

/// Magic bytes of a keyed snapshot file.
pub const KEYED_MAGIC: [u8; 4] = *b"SKEY";
/// The keyed format version this build writes.
pub const KEYED_FORMAT_VERSION: u16 = FormatVersion::CURRENT.number();
/// Keyed format versions this build reads: 1 (no header CRC), 2, and 3 (a
/// state meta ends with its time-to-live). The frames are otherwise the same.
pub const KEYED_SUPPORTED_VERSIONS: &[u16] = &[1, 2, 3];
/// Header flag of a delta file: records are changes (puts and deletes) to
/// apply, in order, on top of the files before it in a chain.
pub const FLAG_DELTA: u16 = 1;

const OP_PUT: u8 = 0;
const OP_DELETE: u8 = 1;

/// What a keyed snapshot holds, as written in its meta frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedSnapshotMeta {
    /// The max parallelism the key groups were computed with.
    pub max_parallelism: u32,
    /// The key groups the file covers.
    pub range: KeyGroupRange,
    /// Schema of the key codec.
    pub key_codec: CodecSchema,
    /// The states, indexed by the records' state index.
    pub states: Vec<StateMeta>,
    /// Whether this is a delta file (header flag [`FLAG_DELTA`]). In a delta
    /// file a cell or list record replaces the (key, namespace) entry, a map
    /// record adds a user entry, and a delete removes the whole entry.
    pub delta: bool,
}

/// The meta frame's payload. The header flag [`FLAG_DELTA`] is not part of
/// it: a decoded meta has `delta: false` until the reader sets it.
impl Encode for KeyedSnapshotMeta {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&self.max_parallelism.to_le_bytes());
        out.extend_from_slice(&self.range.start().to_le_bytes());
        out.extend_from_slice(&self.range.end_exclusive().to_le_bytes());
        put_schema(out, &self.key_codec);
        put_varint(out, self.states.len() as u64);
        for s in &self.states {
            s.encode_into(out)?;
        }
        Ok(())
    }
}

impl Decode for KeyedSnapshotMeta {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        let max_parallelism = r.u32()?;
        if crate::key_group::check_max_parallelism(max_parallelism).is_err() {
            return Err(r.corrupted(format!(
                "max parallelism {max_parallelism} is out of bounds"
            )));
        }
        let start = r.u32()?;
        let end_exclusive = r.u32()?;
        if end_exclusive < start || end_exclusive > max_parallelism {
            return Err(r.corrupted(format!(
                "key group range {start}..{end_exclusive} does not fit max parallelism {max_parallelism}"
            )));
        }
        let range = if end_exclusive == start {
            KeyGroupRange::EMPTY
        } else {
            KeyGroupRange::new(start, end_exclusive - 1)
        };
        let key_codec = r.schema()?;
        let n = r.count(7)?;
        let mut states: Vec<StateMeta> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.offset();
            let state = StateMeta::decode_from(r)?;
            if states.iter().any(|s| s.name == state.name) {
                return Err(r.corrupted_at(at, format!("state '{}' appears twice", state.name)));
            }
            states.push(state);
        }
        Ok(KeyedSnapshotMeta {
            max_parallelism,
            range,
            key_codec,
            states,
            delta: false,
        })
    }
}

/// A record's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordBody<'a> {
    /// The value of a cell.
    Cell(&'a [u8]),
    /// The elements of a list.
    List(Vec<&'a [u8]>),
    /// The (key, namespace) entry is removed (delta files only).
    Delete,
    /// One map entry.
    MapEntry {
        /// Encoded user key.
        key: &'a [u8],
        /// Encoded user value.
        value: &'a [u8],
    },
}

/// One record of a key group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Index into [`KeyedSnapshotMeta::states`].
    pub state: u32,
    /// Encoded key.
    pub key: &'a [u8],
    /// Encoded namespace.
    pub namespace: &'a [u8],
    /// The body.
    pub body: RecordBody<'a>,
}

/// Writes a keyed snapshot to a checkpoint stream.
///
/// Call [`KeyedSnapshotWriter::start_key_group`] with increasing key groups of
/// the range (groups skipped are empty), write records, then
/// [`KeyedSnapshotWriter::finish`].
pub struct KeyedSnapshotWriter {
    out: Box<dyn CheckpointOutputStream>,
    compression: Compression,
    meta: KeyedSnapshotMeta,
    /// `offsets[i]` = start of key group `range.start() + i`; filled as groups start.
    offsets: Vec<u64>,
    current: Option<u32>,
    payload: Vec<u8>,
    frame: Vec<u8>,
    checkpoint_id: u64,
    /// Per state, the TTL of states whose expired entries are left out
    /// (full files only, see [`KeyedSnapshotWriter::drop_expired`]).
    expiry: Vec<Option<TtlMeta>>,
    now: Option<TtlInstant>,
    /// Entries, list elements and map entries left out as expired.
    dropped: u64,
    list_scratch: Vec<u8>,
}

impl KeyedSnapshotWriter {
    /// Starts a file holding `meta`'s states for its key-group range.
    pub fn new(
        mut out: Box<dyn CheckpointOutputStream>,
        meta: KeyedSnapshotMeta,
        compression: Compression,
        checkpoint_id: u64,
    ) -> Result<Self> {
        let mut buf = Vec::with_capacity(256);
        let flags = if meta.delta { FLAG_DELTA } else { 0 };
        encode_header(&mut buf, &KEYED_MAGIC, flags);
        let m = meta.encode_to_vec()?;
        encode_frame(&mut buf, &m, Compression::None)?;
        out.write_all(&buf)?;
        Ok(KeyedSnapshotWriter {
            out,
            compression,
            offsets: Vec::with_capacity(meta.range.len() + 1),
            meta,
            current: None,
            payload: Vec::with_capacity(TARGET_FRAME_PAYLOAD + 1024),
            frame: Vec::with_capacity(TARGET_FRAME_PAYLOAD + 1024),
            checkpoint_id,
            expiry: Vec::new(),
            now: None,
            dropped: 0,
            list_scratch: Vec::new(),
        })
    }

    /// Leaves out of this file the entries that expired at `now` of every
    /// state with a time-to-live for which `filter(name)` is true: cells
    /// whose value expired, expired list elements (a list with none left is
    /// left out), expired map entries. The values of such states start with
    /// their timestamp ([`crate::state::ttl`]). Ignored for delta files,
    /// whose records are changes to apply as they are.
    pub fn drop_expired(&mut self, now: TtlInstant, filter: impl Fn(&str) -> bool) {
        if self.meta.delta {
            return;
        }
        self.expiry = self
            .meta
            .states
            .iter()
            .map(|s| s.ttl.filter(|_| filter(&s.name)))
            .collect();
        self.now = Some(now);
    }

    /// How many entries, list elements and map entries were left out as
    /// expired ([`KeyedSnapshotWriter::drop_expired`]).
    pub fn dropped_expired(&self) -> u64 {
        self.dropped
    }

    /// The TTL to check the values of `state` against, if any.
    #[inline]
    fn expiry_of(&self, state: u32) -> Option<(TtlMeta, TtlInstant)> {
        match (self.expiry.get(state as usize), self.now) {
            (Some(Some(ttl)), Some(now)) => Some((*ttl, now)),
            _ => None,
        }
    }

    /// The file's meta.
    pub fn meta(&self) -> &KeyedSnapshotMeta {
        &self.meta
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.out.position() + self.frame.len() as u64
    }

    fn flush_payload(&mut self) -> Result<()> {
        if self.payload.is_empty() {
            return Ok(());
        }
        let (header, stored) = prepare_frame(&self.payload, self.compression)?;
        if self.frame.len() + header.len() + stored.len() < TARGET_FRAME_PAYLOAD {
            // Small frames (small key groups) are batched into one write.
            self.frame.extend_from_slice(&header);
            self.frame.extend_from_slice(&stored);
        } else {
            // A large frame goes straight to the stream, without a copy.
            if !self.frame.is_empty() {
                self.out.write_all(&self.frame)?;
                self.frame.clear();
            }
            self.out.write_all(&header)?;
            self.out.write_all(&stored)?;
        }
        self.payload.clear();
        Ok(())
    }

    /// Starts `key_group`; it must be in the range and after the previous one.
    pub fn start_key_group(&mut self, key_group: u32) -> Result<()> {
        let range = self.meta.range;
        let next = self.current.map_or(range.start(), |c| c + 1);
        if !range.contains(key_group) || key_group < next {
            return Err(Error::Corrupted {
                file: "snapshot writer".into(),
                offset: self.position(),
                reason: format!(
                    "key group {key_group} written out of order (next is {next}, range {range})"
                ),
            });
        }
        self.flush_payload()?;
        let pos = self.position();
        while self.offsets.len() <= (key_group - range.start()) as usize {
            self.offsets.push(pos);
        }
        self.current = Some(key_group);
        Ok(())
    }

    fn begin_record(
        &mut self,
        state: u32,
        op: u8,
        key: &[u8],
        namespace: &[u8],
        body_len: usize,
    ) -> Result<()> {
        if self.current.is_none() {
            return Err(Error::Corrupted {
                file: "snapshot writer".into(),
                offset: self.position(),
                reason: "record written before start_key_group".into(),
            });
        }
        if state as usize >= self.meta.states.len() {
            return Err(Error::Corrupted {
                file: "snapshot writer".into(),
                offset: self.position(),
                reason: format!("record of unknown state index {state}"),
            });
        }
        let len = 5 + 10 + key.len() + 10 + namespace.len() + body_len;
        if len > MAX_FRAME_PAYLOAD {
            let name = &self.meta.states[state as usize].name;
            return Err(Error::SizeLimitExceeded {
                what: format!("a record of state '{name}'"),
                size: len as u64,
                limit: MAX_FRAME_PAYLOAD as u64,
            });
        }
        if self.payload.len() + len > MAX_FRAME_PAYLOAD {
            self.flush_payload()?;
        }
        put_varint(&mut self.payload, u64::from(state));
        if self.meta.delta {
            self.payload.push(op);
        }
        put_bytes(&mut self.payload, key);
        put_bytes(&mut self.payload, namespace);
        Ok(())
    }

    fn end_record(&mut self) -> Result<()> {
        if self.payload.len() >= TARGET_FRAME_PAYLOAD {
            self.flush_payload()?;
        }
        Ok(())
    }

    /// Writes the value of a cell (value, reducing or aggregating state).
    pub fn write_cell(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        value: &[u8],
    ) -> Result<()> {
        if let Some((ttl, now)) = self.expiry_of(state) {
            if ttl.bytes_expired_at(value, &now) {
                self.dropped += 1;
                return Ok(());
            }
        }
        self.begin_record(state, OP_PUT, key, namespace, 10 + value.len())?;
        put_bytes(&mut self.payload, value);
        self.end_record()
    }

    /// Writes a list; `encoded_elements` is `count` length-prefixed elements
    /// (as [`put_bytes`] writes them).
    pub fn write_list(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        count: usize,
        encoded_elements: &[u8],
    ) -> Result<()> {
        if let Some((ttl, now)) = self.expiry_of(state) {
            let mut kept = std::mem::take(&mut self.list_scratch);
            kept.clear();
            let mut r = ByteReader::new(encoded_elements, "list record", 0);
            let mut live = 0;
            for _ in 0..count {
                let element = r.bytes()?;
                if ttl.bytes_expired_at(element, &now) {
                    self.dropped += 1;
                } else {
                    put_bytes(&mut kept, element);
                    live += 1;
                }
            }
            let result = if live == count {
                self.write_list_unfiltered(state, key, namespace, count, encoded_elements)
            } else if live == 0 {
                Ok(())
            } else {
                self.write_list_unfiltered(state, key, namespace, live, &kept)
            };
            self.list_scratch = kept;
            return result;
        }
        self.write_list_unfiltered(state, key, namespace, count, encoded_elements)
    }

    fn write_list_unfiltered(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        count: usize,
        encoded_elements: &[u8],
    ) -> Result<()> {
        self.begin_record(state, OP_PUT, key, namespace, 10 + encoded_elements.len())?;
        put_varint(&mut self.payload, count as u64);
        self.payload.extend_from_slice(encoded_elements);
        self.end_record()
    }

    /// Writes one map entry.
    pub fn write_map_entry(
        &mut self,
        state: u32,
        key: &[u8],
        namespace: &[u8],
        user_key: &[u8],
        user_value: &[u8],
    ) -> Result<()> {
        if let Some((ttl, now)) = self.expiry_of(state) {
            if ttl.bytes_expired_at(user_value, &now) {
                self.dropped += 1;
                return Ok(());
            }
        }
        self.begin_record(
            state,
            OP_PUT,
            key,
            namespace,
            20 + user_key.len() + user_value.len(),
        )?;
        put_bytes(&mut self.payload, user_key);
        put_bytes(&mut self.payload, user_value);
        self.end_record()
    }

    /// Writes the removal of the (key, namespace) entry; only in delta files.
    pub fn write_delete(&mut self, state: u32, key: &[u8], namespace: &[u8]) -> Result<()> {
        if !self.meta.delta {
            return Err(Error::Corrupted {
                file: "snapshot writer".into(),
                offset: self.position(),
                reason: "a delete written to a full snapshot".into(),
            });
        }
        self.begin_record(state, OP_DELETE, key, namespace, 0)?;
        self.end_record()
    }

    /// Writes a record read from another snapshot, under state index `state`.
    pub fn write_record(&mut self, state: u32, record: &Record<'_>) -> Result<()> {
        match &record.body {
            RecordBody::Delete => self.write_delete(state, record.key, record.namespace),
            RecordBody::Cell(v) => self.write_cell(state, record.key, record.namespace, v),
            RecordBody::MapEntry { key, value } => {
                self.write_map_entry(state, record.key, record.namespace, key, value)
            }
            RecordBody::List(elements) => {
                let mut enc = Vec::with_capacity(elements.iter().map(|e| e.len() + 2).sum());
                for e in elements {
                    put_bytes(&mut enc, e);
                }
                self.write_list(state, record.key, record.namespace, elements.len(), &enc)
            }
        }
    }

    /// Ends the last key group, writes the index and footer, closes the stream.
    pub fn finish(mut self) -> Result<KeyGroupsStateHandle> {
        self.flush_payload()?;
        let range = self.meta.range;
        let index_offset = self.position();
        while self.offsets.len() <= range.len() {
            self.offsets.push(index_offset);
        }
        let mut index = Vec::with_capacity(8 + 8 * self.offsets.len());
        index.extend_from_slice(&range.start().to_le_bytes());
        index.extend_from_slice(&(range.len() as u32).to_le_bytes());
        for o in &self.offsets {
            index.extend_from_slice(&o.to_le_bytes());
        }
        encode_frame(&mut self.frame, &index, Compression::None)?;
        encode_footer(&mut self.frame, &KEYED_MAGIC, index_offset);
        self.out.write_all(&self.frame)?;
        let data = self.out.close_and_get_handle()?;
        Ok(KeyGroupsStateHandle {
            checkpoint_id: self.checkpoint_id,
            data,
            max_parallelism: self.meta.max_parallelism,
            range,
            offsets: self.offsets,
        })
    }
}

/// Reads a keyed snapshot file, checking its envelope, meta and index.
pub struct KeyedSnapshotReader {
    bytes: StreamBytes,
    meta: KeyedSnapshotMeta,
    /// Offsets of every key group of `meta.range`, plus the end.
    offsets: Vec<u64>,
}

impl KeyedSnapshotReader {
    /// Opens the file a handle names and checks that the handle's offsets agree
    /// with the file's own index. Errors name the checkpoint the handle was
    /// written for; see [`KeyedSnapshotReader::open_for`].
    pub fn open(handle: &KeyGroupsStateHandle) -> Result<Self> {
        Self::open_for(handle, &handle.needed_by())
    }

    /// Like [`KeyedSnapshotReader::open`], with errors that say `needed_by`
    /// needs the file (see [`crate::snapshot::handle::KeyedStateHandle::needed_by`]).
    pub fn open_for(handle: &KeyGroupsStateHandle, needed_by: &str) -> Result<Self> {
        Self::open_with(handle, &LocalFiles, needed_by)
    }

    /// Like [`KeyedSnapshotReader::open_for`], reading the file through `files`.
    pub fn open_with(
        handle: &KeyGroupsStateHandle,
        files: &dyn StateFileReader,
        needed_by: &str,
    ) -> Result<Self> {
        let reader = Self::from_bytes(handle.data.read_with(files, needed_by)?)?;
        let name = reader.bytes.name().to_string();
        let corrupted = |reason: String| Error::Corrupted {
            file: name.clone(),
            offset: 0,
            reason,
        };
        if handle.max_parallelism != reader.meta.max_parallelism {
            return Err(corrupted(format!(
                "handle says max parallelism {}, file says {}",
                handle.max_parallelism, reader.meta.max_parallelism
            )));
        }
        if handle.offsets.len() != handle.range.len() + 1 {
            return Err(corrupted(format!(
                "handle has {} offsets for {} key groups",
                handle.offsets.len(),
                handle.range.len()
            )));
        }
        if !handle.range.is_empty() {
            let inside = reader.meta.range.intersection(&handle.range) == handle.range;
            let (true, Some(i)) = (inside, reader.meta.range.index_of(handle.range.start())) else {
                return Err(corrupted(format!(
                    "handle range {} is not inside the file's range {}",
                    handle.range, reader.meta.range
                )));
            };
            let file_offsets = reader.offsets.get(i..i + handle.offsets.len());
            if file_offsets != Some(&handle.offsets[..]) {
                return Err(corrupted(format!(
                    "handle offsets for {} differ from the file's index",
                    handle.range
                )));
            }
        }
        Ok(reader)
    }

    /// Opens a self-describing snapshot file from its bytes.
    pub fn from_bytes(bytes: StreamBytes) -> Result<Self> {
        let file = bytes.name().to_string();
        let data = bytes.bytes();
        let envelope = check_envelope(
            &file,
            data,
            &KEYED_MAGIC,
            KEYED_SUPPORTED_VERSIONS,
            FLAG_DELTA,
        )?;
        let index_offset = envelope.index_offset;
        let meta_at = envelope.meta_offset();
        let (meta_payload, meta_end) = decode_frame(&file, data, meta_at)?;
        let mut meta = KeyedSnapshotMeta::decode_exact_version(
            &meta_payload,
            &file,
            meta_at,
            "the keyed snapshot meta",
            envelope.version.number(),
        )?;
        meta.delta = envelope.flags & FLAG_DELTA != 0;
        let (index, index_end) = decode_frame(&file, data, index_offset)?;
        let footer_at = (data.len() - super::FOOTER_LEN) as u64;
        if index_end != footer_at {
            return Err(Error::Corrupted {
                file,
                offset: index_offset,
                reason: format!("index frame ends at {index_end}, footer starts at {footer_at}"),
            });
        }
        let mut r = ByteReader::new(&index, &file, index_offset);
        let start = r.u32()?;
        let len = r.u32()? as usize;
        if start != meta.range.start() && !meta.range.is_empty() || len != meta.range.len() {
            return Err(r.corrupted(format!(
                "index covers {len} key groups from {start}, meta says {}",
                meta.range
            )));
        }
        if r.remaining() != 8 * (len + 1) {
            return Err(r.corrupted("index length does not match its key group count"));
        }
        let mut offsets = Vec::with_capacity(len + 1);
        let mut prev = meta_end;
        for _ in 0..=len {
            let o = r.u64()?;
            if o < prev || o > index_offset {
                return Err(r.corrupted(format!("key group offset {o} is out of order")));
            }
            prev = o;
            offsets.push(o);
        }
        if offsets.first() != Some(&meta_end) || offsets.last() != Some(&index_offset) {
            return Err(r.corrupted("key group offsets do not span the data section"));
        }
        Ok(KeyedSnapshotReader {
            bytes,
            meta,
            offsets,
        })
    }

    /// The file's meta.
    pub fn meta(&self) -> &KeyedSnapshotMeta {
        &self.meta
    }

    /// The file's bytes.
    pub fn stream_bytes(&self) -> &StreamBytes {
        &self.bytes
    }

    /// The name of the file, for errors.
    pub fn file_name(&self) -> &str {
        self.bytes.name()
    }

    /// The decoded frame payloads of `key_group`, with each frame's offset.
    /// A key group outside the file's range has none.
    pub fn key_group_frames(&self, key_group: u32) -> Result<Vec<(u64, Cow<'_, [u8]>)>> {
        let Some(i) = self.meta.range.index_of(key_group) else {
            return Ok(Vec::new());
        };
        let (mut at, end) = (self.offsets[i], self.offsets[i + 1]);
        let mut frames = Vec::new();
        while at < end {
            let (payload, next) = decode_frame(self.bytes.name(), self.bytes.bytes(), at)?;
            if next > end {
                return Err(Error::Corrupted {
                    file: self.file_name().to_string(),
                    offset: at,
                    reason: format!(
                        "frame of key group {key_group} crosses into the next key group"
                    ),
                });
            }
            frames.push((at, payload));
            at = next;
        }
        Ok(frames)
    }

    /// Calls `f` for every record of `key_group`, in file order.
    pub fn for_each_record(
        &self,
        key_group: u32,
        mut f: impl FnMut(Record<'_>) -> Result<()>,
    ) -> Result<()> {
        for (offset, payload) in self.key_group_frames(key_group)? {
            parse_records(self.file_name(), offset, &payload, &self.meta, &mut f)?;
        }
        Ok(())
    }
}

/// Parses the records of one frame payload (at `offset` of `file`).
pub fn parse_records(
    file: &str,
    offset: u64,
    payload: &[u8],
    file_meta: &KeyedSnapshotMeta,
    mut f: impl FnMut(Record<'_>) -> Result<()>,
) -> Result<()> {
    let mut r = ByteReader::new(payload, file, offset);
    while !r.is_empty() {
        let state = r.varint()?;
        let meta = file_meta
            .states
            .get(state as usize)
            .ok_or_else(|| r.corrupted(format!("record of unknown state index {state}")))?;
        let op = if file_meta.delta { r.u8()? } else { OP_PUT };
        let key = r.bytes()?;
        let namespace = r.bytes()?;
        let body = match (op, meta.kind.shape()) {
            (OP_DELETE, _) => RecordBody::Delete,
            (OP_PUT, shape) => match shape {
                StorageShape::Cell => RecordBody::Cell(r.bytes()?),
                StorageShape::List => {
                    let n = r.count(1)?;
                    let mut elements = Vec::with_capacity(n);
                    for _ in 0..n {
                        elements.push(r.bytes()?);
                    }
                    RecordBody::List(elements)
                }
                StorageShape::Map => RecordBody::MapEntry {
                    key: r.bytes()?,
                    value: r.bytes()?,
                },
            },
            (other, _) => return Err(r.corrupted(format!("unknown record op {other}"))),
        };
        f(Record {
            state: state as u32,
            key,
            namespace,
            body,
        })?;
    }
    Ok(())
}

/// Builds the handle of a whole keyed snapshot file from the file's own index
/// (for self-contained snapshots such as savepoints and golden files).
pub fn describe_keyed_file(
    data: StreamStateHandle,
    checkpoint_id: u64,
) -> Result<KeyGroupsStateHandle> {
    let reader =
        KeyedSnapshotReader::from_bytes(data.read_for(&format!("checkpoint {checkpoint_id}"))?)?;
    Ok(KeyGroupsStateHandle {
        checkpoint_id,
        max_parallelism: reader.meta.max_parallelism,
        range: reader.meta.range,
        offsets: reader.offsets,
        data,
    })
}
