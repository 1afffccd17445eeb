//! The canonical operator-state snapshot: one frame per list element (per map
//! entry for broadcast state), so that list state can be split element by
//! element when the parallelism changes.
//!
//! ```text
//! header      magic "SOPR" | version u16 = 2 | flags u16 = 0
//!             | crc32 of those 8 bytes (version 1: no crc32)
//! meta frame  state count varint | state ...
//!             state = name str | distribution u8 (1 split, 2 union, 3 broadcast)
//!                     | schema count varint | schemas (element; or key, value)
//! elements    for each state in meta order, one frame per element; a broadcast
//!             entry's payload is key bytes | value bytes (each a varint
//!             length followed by the bytes)
//! index frame for each state in meta order: count varint | offsets u64 ...
//! footer      index frame offset u64 | crc32 u32 | magic "SOPR"
//! ```

use std::collections::{BTreeMap, HashSet};

use super::bytes::{put_str, put_varint, ByteReader};
use super::coding::{decode_seq, put_seq, Decode, Encode, MIN_SCHEMA_LEN};
use super::frame::{decode_frame, encode_frame, Compression};
use super::{check_envelope, encode_footer, encode_header, FormatVersion, FOOTER_LEN};
use crate::codec::CodecSchema;
use crate::error::{Error, Result};
use crate::snapshot::handle::{Distribution, OperatorStateHandle, OperatorStatePart};
use crate::snapshot::stream::{
    CheckpointOutputStream, LocalFiles, StateFileReader, StreamBytes, StreamStateHandle,
};

/// Magic bytes of an operator snapshot file.
pub const OPERATOR_MAGIC: [u8; 4] = *b"SOPR";
/// The operator format version this build writes.
pub const OPERATOR_FORMAT_VERSION: u16 = FormatVersion::CURRENT.number();
/// Operator format versions this build reads: 1 (no header CRC), 2 and 3
/// (the same as 2: version 3 changed keyed state metas only). The frames are
/// the same; only the header differs.
pub const OPERATOR_SUPPORTED_VERSIONS: &[u16] = &[1, 2, 3];

/// One operator state as a snapshot records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorStateMeta {
    /// The state's name.
    pub name: String,
    /// How it is redistributed.
    pub distribution: Distribution,
    /// Codec schemas: `[element]` for lists, `[key, value]` for broadcast state.
    pub schemas: Vec<CodecSchema>,
}

/// One state of the meta frame: `str name | u8 distribution | varint n |
/// schema ...` (one schema for list and union state, key and value for
/// broadcast state).
impl Encode for OperatorStateMeta {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_str(out, &self.name);
        out.push(self.distribution.tag());
        put_seq(out, &self.schemas)
    }
}

impl Decode for OperatorStateMeta {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        let name = r.str()?.to_string();
        let tag = r.u8()?;
        let distribution = Distribution::from_tag(tag)
            .ok_or_else(|| r.corrupted(format!("unknown distribution tag {tag}")))?;
        let schemas: Vec<CodecSchema> = decode_seq(r, MIN_SCHEMA_LEN)?;
        let expected = if distribution == Distribution::Broadcast {
            2
        } else {
            1
        };
        if schemas.len() != expected {
            return Err(r.corrupted(format!(
                "state '{name}' has {} schemas, expected {expected}",
                schemas.len()
            )));
        }
        Ok(OperatorStateMeta {
            name,
            distribution,
            schemas,
        })
    }
}

/// An operator state's encoded elements, ready to write.
#[derive(Clone, Debug)]
pub struct OperatorStateData {
    /// What the state is.
    pub meta: OperatorStateMeta,
    /// Encoded elements (broadcast entries: key bytes | value bytes).
    pub elements: Vec<Vec<u8>>,
}

/// Writes an operator snapshot holding `states`.
pub fn write_operator_snapshot(
    mut out: Box<dyn CheckpointOutputStream>,
    states: &[OperatorStateData],
    compression: Compression,
    checkpoint_id: u64,
    cancelled: &dyn Fn() -> Result<()>,
) -> Result<OperatorStateHandle> {
    let mut buf = Vec::new();
    encode_header(&mut buf, &OPERATOR_MAGIC, 0);
    let mut meta = Vec::new();
    put_varint(&mut meta, states.len() as u64);
    for s in states {
        s.meta.encode_into(&mut meta)?;
    }
    encode_frame(&mut buf, &meta, Compression::None)?;
    let mut parts = BTreeMap::new();
    let mut index = Vec::new();
    for s in states {
        cancelled()?;
        let mut offsets = Vec::with_capacity(s.elements.len());
        for e in &s.elements {
            offsets.push(out.position() + buf.len() as u64);
            encode_frame(&mut buf, e, compression)?;
            if buf.len() >= super::frame::TARGET_FRAME_PAYLOAD {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        put_varint(&mut index, offsets.len() as u64);
        for o in &offsets {
            index.extend_from_slice(&o.to_le_bytes());
        }
        parts.insert(
            s.meta.name.clone(),
            OperatorStatePart {
                distribution: s.meta.distribution,
                offsets,
            },
        );
    }
    let index_offset = out.position() + buf.len() as u64;
    encode_frame(&mut buf, &index, Compression::None)?;
    encode_footer(&mut buf, &OPERATOR_MAGIC, index_offset);
    out.write_all(&buf)?;
    Ok(OperatorStateHandle {
        checkpoint_id,
        data: out.close_and_get_handle()?,
        states: parts,
    })
}

/// Reads the states a handle covers: their metas and the elements at the
/// handle's offsets (in the handle's order).
pub fn read_operator_snapshot(handle: &OperatorStateHandle) -> Result<Vec<OperatorStateData>> {
    read_operator_snapshot_with(handle, &LocalFiles)
}

/// Like [`read_operator_snapshot`], reading the file through `files`.
pub fn read_operator_snapshot_with(
    handle: &OperatorStateHandle,
    files: &dyn StateFileReader,
) -> Result<Vec<OperatorStateData>> {
    let bytes = handle.data.read_with(files, &handle.needed_by())?;
    read_operator_bytes(&bytes, handle)
}

/// The checked layout of an operator snapshot file.
struct Layout {
    /// Where the meta frame starts.
    meta_at: u64,
    /// The states, in meta order.
    metas: Vec<OperatorStateMeta>,
    /// The element offsets of each state, in meta order.
    offsets: Vec<Vec<u64>>,
}

/// The metas and the element offsets (per state, in meta order) of an
/// operator snapshot file, after checking its envelope and index.
fn read_layout(bytes: &StreamBytes) -> Result<Layout> {
    let file = bytes.name();
    let data = bytes.bytes();
    let envelope = check_envelope(file, data, &OPERATOR_MAGIC, OPERATOR_SUPPORTED_VERSIONS, 0)?;
    let index_offset = envelope.index_offset;
    let meta_at = envelope.meta_offset();
    let (meta_payload, meta_end) = decode_frame(file, data, meta_at)?;
    let mut r = ByteReader::new(&meta_payload, file, meta_at);
    let n = r.count(3)?;
    let mut metas: Vec<OperatorStateMeta> = Vec::with_capacity(n);
    for _ in 0..n {
        let at = r.offset();
        let meta = OperatorStateMeta::decode_from(&mut r)?;
        if metas.iter().any(|m| m.name == meta.name) {
            return Err(r.corrupted_at(at, format!("state '{}' appears twice", meta.name)));
        }
        metas.push(meta);
    }
    r.finish("the operator snapshot meta")?;
    let (index, index_end) = decode_frame(file, data, index_offset)?;
    if index_end != (data.len() - FOOTER_LEN) as u64 {
        return Err(Error::Corrupted {
            file: file.to_string(),
            offset: index_offset,
            reason: "index frame does not end at the footer".into(),
        });
    }
    let mut r = ByteReader::new(&index, file, index_offset);
    let mut offsets = Vec::with_capacity(metas.len());
    let mut prev = None;
    for _ in &metas {
        let count = r.count(8)?;
        let mut state_offsets = Vec::with_capacity(count);
        for _ in 0..count {
            let o = r.u64()?;
            // Elements are written one after the other, between the meta and the index.
            if o < meta_end || o >= index_offset || prev.is_some_and(|p| o <= p) {
                return Err(r.corrupted(format!(
                    "element offset {o} is out of order or outside the elements"
                )));
            }
            prev = Some(o);
            state_offsets.push(o);
        }
        offsets.push(state_offsets);
    }
    r.finish("the operator snapshot index")?;
    if prev.is_none() && meta_end != index_offset {
        return Err(Error::Corrupted {
            file: file.to_string(),
            offset: meta_end,
            reason: "bytes between the meta and the index of a file without elements".into(),
        });
    }
    Ok(Layout {
        meta_at,
        metas,
        offsets,
    })
}

/// Builds the handle of a whole operator snapshot file from its own index.
pub fn describe_operator_file(
    data: StreamStateHandle,
    checkpoint_id: u64,
) -> Result<OperatorStateHandle> {
    let bytes = data.read_for(&format!("checkpoint {checkpoint_id}"))?;
    let Layout { metas, offsets, .. } = read_layout(&bytes)?;
    let states = metas
        .into_iter()
        .zip(offsets)
        .map(|(m, offsets)| {
            (
                m.name,
                OperatorStatePart {
                    distribution: m.distribution,
                    offsets,
                },
            )
        })
        .collect();
    Ok(OperatorStateHandle {
        checkpoint_id,
        data,
        states,
    })
}

/// Like [`read_operator_snapshot`], over bytes already read.
pub fn read_operator_bytes(
    bytes: &StreamBytes,
    handle: &OperatorStateHandle,
) -> Result<Vec<OperatorStateData>> {
    let file = bytes.name();
    let data = bytes.bytes();
    let Layout {
        meta_at,
        metas,
        offsets,
    } = read_layout(bytes)?;
    let known: Vec<HashSet<u64>> = offsets
        .into_iter()
        .map(|o| o.into_iter().collect())
        .collect();
    let mut out = Vec::with_capacity(handle.states.len());
    for (name, part) in &handle.states {
        let Some(i) = metas.iter().position(|m| &m.name == name) else {
            return Err(Error::Corrupted {
                file: file.to_string(),
                offset: meta_at,
                reason: format!("handle names state '{name}', which the file does not hold"),
            });
        };
        if metas[i].distribution != part.distribution {
            return Err(Error::Corrupted {
                file: file.to_string(),
                offset: meta_at,
                reason: format!("handle and file disagree on the distribution of '{name}'"),
            });
        }
        let mut elements = Vec::with_capacity(part.offsets.len());
        for &offset in &part.offsets {
            if !known[i].contains(&offset) {
                return Err(Error::Corrupted {
                    file: file.to_string(),
                    offset,
                    reason: format!(
                        "handle offset {offset} of '{name}' is not an element of the file"
                    ),
                });
            }
            let (payload, _) = decode_frame(file, data, offset)?;
            elements.push(payload.into_owned());
        }
        out.push(OperatorStateData {
            meta: metas[i].clone(),
            elements,
        });
    }
    Ok(out)
}
