//! One encode/decode pair per persisted structure.
//!
//! Every structure a file stores is written by a hand-written [`Encode`] and
//! read by the matching [`Decode`], over the little-endian and varint helpers
//! of [`super::bytes`]. The bytes therefore depend only on this code, never on
//! how a Rust type happens to be declared (field names, field order, serde
//! attributes): renaming or reordering a field changes nothing on disk.
//!
//! Rules every implementation follows:
//! * `decode(encode(v)) == v`, and decoding consumes exactly what encoding wrote.
//! * Decoding arbitrary bytes returns an error of kind
//!   [`crate::ErrorKind::Corruption`] naming the file and offset; it never
//!   panics, and a count read from the input never reserves more items than
//!   the remaining bytes could hold.
//! * An encoding never changes within a format version. A new layout is a new
//!   [`super::FormatVersion`]; the decoding of the old one is frozen in its own
//!   module (as `metadata_v1` is) and kept for as long as files of that
//!   version may exist.
//!
//! The shared structures of this module:
//!
//! ```text
//! CodecSchema    str name | u32 version
//! KeyGroupRange  u32 start | u32 end_exclusive       (0, 0 when empty; start < end_exclusive otherwise)
//! StateMeta      str name | u8 kind tag | CodecSchema namespace
//!                | varint n | CodecSchema values ...  (n = 1 for value, list, reducing,
//!                                                      aggregating; 2 for map)
//!                | Ttl                                 (format version 3 on)
//! Ttl            u8 0                                  no time-to-live
//!                | u8 1 | u64 ttl_millis (1..=i64::MAX) | u8 update type
//!                  (1 on create and write, 2 on read and write) | u8 visibility
//!                  (1 never return expired, 2 return expired if not cleaned up)
//!                  | u8 time domain (1 processing time, 2 event time)
//! ```
//!
//! A structure whose layout depends on the format version reads the version
//! from its [`ByteReader`] ([`ByteReader::format_version`]).

use super::bytes::{put_schema, put_str, put_varint, ByteReader};
use super::FormatVersion;
use crate::codec::CodecSchema;
use crate::error::Result;
use crate::key_group::KeyGroupRange;
use crate::state::ttl::{TtlMeta, TtlTimeDomain, TtlUpdateType, TtlVisibility};
use crate::state::{StateKind, StateMeta, StorageShape};

/// A structure with a hand-written, versioned byte encoding.
pub trait Encode {
    /// Appends the encoding of `self` to `out`. Fails only for values the
    /// format cannot represent (a file path that is not UTF-8).
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()>;

    /// The encoding of `self`.
    fn encode_to_vec(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }
}

/// The reading side of [`Encode`].
pub trait Decode: Sized {
    /// Reads one value; on malformed input, an error naming the reader's file
    /// and the offset, never a panic.
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self>;

    /// Reads one value that must span all of `bytes` (which start at offset
    /// `base` of `file`).
    fn decode_exact(bytes: &[u8], file: &str, base: u64, what: &str) -> Result<Self> {
        Self::decode_exact_version(bytes, file, base, what, FormatVersion::CURRENT.number())
    }

    /// [`Decode::decode_exact`] of bytes written by format version `version`.
    fn decode_exact_version(
        bytes: &[u8],
        file: &str,
        base: u64,
        what: &str,
        version: u16,
    ) -> Result<Self> {
        let mut r = ByteReader::new(bytes, file, base).with_format_version(version);
        let value = Self::decode_from(&mut r)?;
        r.finish(what)?;
        Ok(value)
    }
}

/// Appends a sequence: `varint count | item ...`.
pub fn put_seq<T: Encode>(out: &mut Vec<u8>, items: &[T]) -> Result<()> {
    put_varint(out, items.len() as u64);
    for item in items {
        item.encode_into(out)?;
    }
    Ok(())
}

/// Reads a sequence written by [`put_seq`]. `min_item_len` is the fewest
/// bytes one item can take (at least 1), which bounds the count, and so the
/// allocation, by the bytes that remain.
pub fn decode_seq<T: Decode>(r: &mut ByteReader<'_>, min_item_len: usize) -> Result<Vec<T>> {
    let n = r.count(min_item_len)?;
    let mut items = Vec::with_capacity(n);
    for _ in 0..n {
        items.push(T::decode_from(r)?);
    }
    Ok(items)
}

/// Fewest bytes of an encoded [`CodecSchema`]: an empty name and the version.
pub const MIN_SCHEMA_LEN: usize = 1 + 4;

impl Encode for CodecSchema {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_schema(out, self);
        Ok(())
    }
}

impl Decode for CodecSchema {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        r.schema()
    }
}

impl Encode for KeyGroupRange {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        out.extend_from_slice(&self.start().to_le_bytes());
        out.extend_from_slice(&self.end_exclusive().to_le_bytes());
        Ok(())
    }
}

impl Decode for KeyGroupRange {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        let at = r.offset();
        let start = r.u32()?;
        let end_exclusive = r.u32()?;
        if start == 0 && end_exclusive == 0 {
            Ok(KeyGroupRange::EMPTY)
        } else if start < end_exclusive {
            Ok(KeyGroupRange::new(start, end_exclusive - 1))
        } else {
            Err(r.corrupted_at(
                at,
                format!("key group range {start}..{end_exclusive} is not a range"),
            ))
        }
    }
}

impl Encode for StateMeta {
    fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        put_str(out, &self.name);
        out.push(self.kind.tag());
        put_schema(out, &self.namespace);
        put_seq(out, &self.values)?;
        match &self.ttl {
            None => out.push(TTL_NONE),
            Some(ttl) => {
                out.push(TTL_SOME);
                out.extend_from_slice(&ttl.ttl_millis.to_le_bytes());
                out.push(match ttl.update_type {
                    TtlUpdateType::OnCreateAndWrite => 1,
                    TtlUpdateType::OnReadAndWrite => 2,
                });
                out.push(match ttl.visibility {
                    TtlVisibility::NeverReturnExpired => 1,
                    TtlVisibility::ReturnExpiredIfNotCleanedUp => 2,
                });
                out.push(match ttl.time_domain {
                    TtlTimeDomain::ProcessingTime => 1,
                    TtlTimeDomain::EventTime => 2,
                });
            }
        }
        Ok(())
    }
}

const TTL_NONE: u8 = 0;
const TTL_SOME: u8 = 1;

/// The TTL section of a state meta (format version 3 on).
fn decode_ttl(r: &mut ByteReader<'_>) -> Result<Option<TtlMeta>> {
    match r.u8()? {
        TTL_NONE => Ok(None),
        TTL_SOME => {
            let ttl_millis = r.u64()?;
            if ttl_millis == 0 || ttl_millis > i64::MAX as u64 {
                return Err(r.corrupted(format!("time-to-live of {ttl_millis} ms")));
            }
            let update_type = match r.u8()? {
                1 => TtlUpdateType::OnCreateAndWrite,
                2 => TtlUpdateType::OnReadAndWrite,
                t => return Err(r.corrupted(format!("unknown TTL update type {t}"))),
            };
            let visibility = match r.u8()? {
                1 => TtlVisibility::NeverReturnExpired,
                2 => TtlVisibility::ReturnExpiredIfNotCleanedUp,
                t => return Err(r.corrupted(format!("unknown TTL visibility {t}"))),
            };
            let time_domain = match r.u8()? {
                1 => TtlTimeDomain::ProcessingTime,
                2 => TtlTimeDomain::EventTime,
                t => return Err(r.corrupted(format!("unknown TTL time domain {t}"))),
            };
            Ok(Some(TtlMeta {
                ttl_millis,
                update_type,
                visibility,
                time_domain,
            }))
        }
        t => Err(r.corrupted(format!("unknown TTL tag {t}"))),
    }
}

impl Decode for StateMeta {
    fn decode_from(r: &mut ByteReader<'_>) -> Result<Self> {
        let name = r.str()?.to_string();
        let tag = r.u8()?;
        let kind = StateKind::from_tag(tag)
            .ok_or_else(|| r.corrupted(format!("unknown state kind tag {tag}")))?;
        let namespace = r.schema()?;
        let values: Vec<CodecSchema> = decode_seq(r, MIN_SCHEMA_LEN)?;
        let expected = match kind.shape() {
            StorageShape::Cell | StorageShape::List => 1,
            StorageShape::Map => 2,
        };
        if values.len() != expected {
            return Err(r.corrupted(format!(
                "state '{name}' ({kind}) has {} value schemas, expected {expected}",
                values.len()
            )));
        }
        let ttl = if r.format_version() >= FormatVersion::V3.number() {
            decode_ttl(r)?
        } else {
            None
        };
        Ok(StateMeta {
            name,
            kind,
            namespace,
            values,
            ttl,
        })
    }
}
