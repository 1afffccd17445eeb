//! The canonical snapshot format: the bytes every backend writes and reads.
//!
//! Every snapshot file has the same skeleton (see `docs/format.md` for the
//! full byte diagrams):
//!
//! ```text
//! +--------------------+ 0
//! | magic (4)          |
//! | version u16 LE     |
//! | flags   u16 LE     |
//! | crc32   u32 LE     |  of the 8 bytes above (version 2 on; absent in version 1)
//! +--------------------+ FILE_HEADER_LEN = 12 (FILE_HEADER_LEN_V1 = 8)
//! | meta frame         |  what the file holds (states, codecs, parallelism)
//! | data frames ...    |  records, grouped (key groups, or operator states)
//! | index frame        |  offsets into the data frames
//! +--------------------+ len - FOOTER_LEN
//! | index offset u64   |
//! | crc32 u32          |  of the index offset's 8 bytes
//! | magic (4)          |
//! +--------------------+ len
//! ```
//!
//! Every byte a reader reads is covered: the header by its magic and its
//! CRC32 (checked before the version is believed), every frame by its CRC32,
//! the footer by its magic and the CRC32 of the index offset. A keyed reader
//! checks the header, meta, index and footer of every file it opens, and the
//! frames of the key groups it decodes; so a single-bit flip in anything a
//! restore uses is a [`crate::ErrorKind::Corruption`] error.
//!
//! Structures are encoded by hand ([`coding::Encode`] and
//! [`coding::Decode`]), never derived from Rust type definitions, so the bytes
//! change only when this module's code does (and then with a new version).

pub mod bytes;
pub mod coding;
pub mod frame;
pub mod keyed;
pub mod metadata;
pub(crate) mod metadata_v1;
pub mod operator;

use crate::error::{Error, Result};
use bytes::ByteReader;

/// A version of the file envelope and of the structures inside files.
///
/// The three file kinds (keyed `SKEY`, operator `SOPR`, metadata `SMET`)
/// share the numbering; each kind lists the versions it reads
/// (`*_SUPPORTED_VERSIONS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FormatVersion {
    /// Version 1: an 8-byte header without a checksum; the `_metadata`
    /// payload is the postcard encoding of the metadata (read only).
    V1,
    /// Version 2: a 12-byte header ending in the CRC32 of its first 8 bytes;
    /// the `_metadata` payload is the explicit encoding of [`metadata`].
    V2,
    /// Version 3: as version 2, and every state meta ends with its
    /// time-to-live ([`coding`]); the values of a state with TTL start with
    /// their timestamp ([`crate::state::ttl`]).
    V3,
}

impl FormatVersion {
    /// The version this build writes.
    pub const CURRENT: FormatVersion = FormatVersion::V3;

    /// The number stored in the header.
    pub const fn number(self) -> u16 {
        match self {
            FormatVersion::V1 => 1,
            FormatVersion::V2 => 2,
            FormatVersion::V3 => 3,
        }
    }

    /// The version of a header number, if this build knows it.
    pub const fn from_number(number: u16) -> Option<Self> {
        match number {
            1 => Some(FormatVersion::V1),
            2 => Some(FormatVersion::V2),
            3 => Some(FormatVersion::V3),
            _ => None,
        }
    }

    /// Length of the file header in this version (where the meta frame starts).
    pub const fn header_len(self) -> usize {
        match self {
            FormatVersion::V1 => FILE_HEADER_LEN_V1,
            FormatVersion::V2 | FormatVersion::V3 => FILE_HEADER_LEN,
        }
    }
}

/// Offset of the magic in the file header.
pub const HEADER_MAGIC_OFFSET: usize = 0;
/// Offset of the format version.
pub const HEADER_VERSION_OFFSET: usize = HEADER_MAGIC_OFFSET + 4;
/// Offset of the flags.
pub const HEADER_FLAGS_OFFSET: usize = HEADER_VERSION_OFFSET + 2;
/// Offset of the header CRC32 (of bytes `0..HEADER_CRC_OFFSET`), in every
/// version from 2 on.
pub const HEADER_CRC_OFFSET: usize = HEADER_FLAGS_OFFSET + 2;
/// Length of the file header from version 2 on; the meta frame starts here.
pub const FILE_HEADER_LEN: usize = HEADER_CRC_OFFSET + 4;
/// Length of the version 1 header, which has no CRC32.
pub const FILE_HEADER_LEN_V1: usize = HEADER_CRC_OFFSET;

/// Offset, from the footer's start, of the index offset.
pub const FOOTER_INDEX_OFFSET: usize = 0;
/// Offset, from the footer's start, of the footer CRC32.
pub const FOOTER_CRC_OFFSET: usize = FOOTER_INDEX_OFFSET + 8;
/// Offset, from the footer's start, of the trailing magic.
pub const FOOTER_MAGIC_OFFSET: usize = FOOTER_CRC_OFFSET + 4;
/// Length of the footer.
pub const FOOTER_LEN: usize = FOOTER_MAGIC_OFFSET + 4;

/// Writes a file header of the current version: magic, version, flags and
/// the CRC32 of those 8 bytes.
pub(crate) fn encode_header(out: &mut Vec<u8>, magic: &[u8; 4], flags: u16) {
    let start = out.len();
    out.extend_from_slice(magic);
    out.extend_from_slice(&FormatVersion::CURRENT.number().to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    let crc = crc32fast::hash(&out[start..start + HEADER_CRC_OFFSET]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Writes a footer pointing at the index frame.
pub(crate) fn encode_footer(out: &mut Vec<u8>, magic: &[u8; 4], index_offset: u64) {
    let offset = index_offset.to_le_bytes();
    out.extend_from_slice(&offset);
    out.extend_from_slice(&crc32fast::hash(&offset).to_le_bytes());
    out.extend_from_slice(magic);
}

/// The checked envelope of a file.
pub(crate) struct Envelope {
    /// The file's format version.
    pub(crate) version: FormatVersion,
    /// Offset of the index frame.
    pub(crate) index_offset: u64,
    /// The header flags (only bits in the allowed mask).
    pub(crate) flags: u16,
}

impl Envelope {
    /// Where the meta frame starts (the end of the header).
    pub(crate) fn meta_offset(&self) -> u64 {
        self.version.header_len() as u64
    }
}

/// Checks the header and footer of a file; `allowed_flags` is the mask of
/// header flags this file kind may set.
///
/// The header is checked in an order that makes any flipped bit in it a
/// corruption, never an unsupported version: the magic first; then, for any
/// version number other than 1, the header CRC32 (every version from 2 on
/// keeps the same 12-byte header), and only then whether this build reads
/// the version. A flip of version 2 gives a number other than 1 (they differ
/// in two bits), so its CRC is checked and fails. A version 1 file has no
/// header CRC; a flip of its version gives a number other than 1, whose
/// "CRC" is then the first bytes of the meta frame, which do not match.
pub(crate) fn check_envelope(
    file: &str,
    bytes: &[u8],
    magic: &[u8; 4],
    supported: &'static [u16],
    allowed_flags: u16,
) -> Result<Envelope> {
    let truncated = |needed: usize| Error::Truncated {
        file: file.to_string(),
        offset: 0,
        needed: needed as u64,
        available: bytes.len() as u64,
    };
    if bytes.len() < FILE_HEADER_LEN_V1 + FOOTER_LEN {
        return Err(truncated(FILE_HEADER_LEN_V1 + FOOTER_LEN));
    }
    if &bytes[..4] != magic {
        return Err(Error::BadMagic {
            file: file.to_string(),
            offset: 0,
            expected: magic.to_vec(),
            found: bytes[..4].to_vec(),
        });
    }
    let mut r = ByteReader::new(
        &bytes[HEADER_VERSION_OFFSET..HEADER_CRC_OFFSET],
        file,
        HEADER_VERSION_OFFSET as u64,
    );
    let number = r.u16()?;
    let flags = r.u16()?;
    if number != FormatVersion::V1.number() {
        if bytes.len() < FILE_HEADER_LEN + FOOTER_LEN {
            return Err(truncated(FILE_HEADER_LEN + FOOTER_LEN));
        }
        let mut r = ByteReader::new(
            &bytes[HEADER_CRC_OFFSET..FILE_HEADER_LEN],
            file,
            HEADER_CRC_OFFSET as u64,
        );
        let expected = r.u32()?;
        let actual = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        if actual != expected {
            return Err(Error::ChecksumMismatch {
                file: file.to_string(),
                offset: HEADER_MAGIC_OFFSET as u64,
                expected,
                actual,
            });
        }
    }
    let version = match FormatVersion::from_number(number) {
        Some(v) if supported.contains(&number) => v,
        _ => {
            return Err(Error::UnsupportedVersion {
                file: file.to_string(),
                version: number,
                supported,
            })
        }
    };
    if flags & !allowed_flags != 0 {
        return Err(Error::Corrupted {
            file: file.to_string(),
            offset: HEADER_FLAGS_OFFSET as u64,
            reason: format!("unknown header flags {flags:#06x}"),
        });
    }
    let footer_at = bytes.len() - FOOTER_LEN;
    let footer = &bytes[footer_at..];
    if &footer[FOOTER_MAGIC_OFFSET..] != magic {
        return Err(Error::BadMagic {
            file: file.to_string(),
            offset: (footer_at + FOOTER_MAGIC_OFFSET) as u64,
            expected: magic.to_vec(),
            found: footer[FOOTER_MAGIC_OFFSET..].to_vec(),
        });
    }
    let mut r = ByteReader::new(footer, file, footer_at as u64);
    let index_offset = r.u64()?;
    let expected = r.u32()?;
    let actual = crc32fast::hash(&footer[..FOOTER_CRC_OFFSET]);
    if actual != expected {
        return Err(Error::ChecksumMismatch {
            file: file.to_string(),
            offset: footer_at as u64,
            expected,
            actual,
        });
    }
    let header_len = version.header_len() as u64;
    if index_offset < header_len || index_offset >= footer_at as u64 {
        return Err(Error::Corrupted {
            file: file.to_string(),
            offset: footer_at as u64,
            reason: format!("index offset {index_offset} is outside the file's frames"),
        });
    }
    Ok(Envelope {
        version,
        index_offset,
        flags,
    })
}
