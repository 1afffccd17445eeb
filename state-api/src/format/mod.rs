//! The canonical snapshot format: the bytes every backend writes and reads.
//!
//! Every snapshot file has the same skeleton (see `docs/format.md` for the
//! full byte diagrams):
//!
//! ```text
//! +--------------------+ 0
//! | magic (4)          |
//! | version u16 LE     |
//! | flags   u16 LE = 0 |
//! +--------------------+ FILE_HEADER_LEN = 8
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
//! Every byte a reader reads is covered: the header by its magic and by
//! version and flag checks, every frame by its CRC32, the footer by its magic
//! and the CRC32 of the index offset. A keyed reader checks the header, meta,
//! index and footer of every file it opens, and the frames of the key groups
//! it decodes; so a single-bit flip in anything a restore uses is an error.

pub mod bytes;
pub mod frame;
pub mod keyed;
pub mod operator;

use crate::error::{Error, Result};
use bytes::ByteReader;

/// Offset of the magic in the file header.
pub const HEADER_MAGIC_OFFSET: usize = 0;
/// Offset of the format version.
pub const HEADER_VERSION_OFFSET: usize = HEADER_MAGIC_OFFSET + 4;
/// Offset of the flags.
pub const HEADER_FLAGS_OFFSET: usize = HEADER_VERSION_OFFSET + 2;
/// Length of the file header; the meta frame starts here.
pub const FILE_HEADER_LEN: usize = HEADER_FLAGS_OFFSET + 2;

/// Offset, from the footer's start, of the index offset.
pub const FOOTER_INDEX_OFFSET: usize = 0;
/// Offset, from the footer's start, of the footer CRC32.
pub const FOOTER_CRC_OFFSET: usize = FOOTER_INDEX_OFFSET + 8;
/// Offset, from the footer's start, of the trailing magic.
pub const FOOTER_MAGIC_OFFSET: usize = FOOTER_CRC_OFFSET + 4;
/// Length of the footer.
pub const FOOTER_LEN: usize = FOOTER_MAGIC_OFFSET + 4;

/// Writes a file header.
pub(crate) fn encode_header(out: &mut Vec<u8>, magic: &[u8; 4], version: u16, flags: u16) {
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
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
    /// Offset of the index frame.
    pub(crate) index_offset: u64,
    /// The header flags (only bits in the allowed mask).
    pub(crate) flags: u16,
}

/// Checks the header and footer of a file; `allowed_flags` is the mask of
/// header flags this file kind may set.
pub(crate) fn check_envelope(
    file: &str,
    bytes: &[u8],
    magic: &[u8; 4],
    supported: &'static [u16],
    allowed_flags: u16,
) -> Result<Envelope> {
    let len = bytes.len() as u64;
    if bytes.len() < FILE_HEADER_LEN + FOOTER_LEN {
        return Err(Error::Truncated {
            file: file.to_string(),
            offset: 0,
            needed: (FILE_HEADER_LEN + FOOTER_LEN) as u64,
            available: len,
        });
    }
    if &bytes[..4] != magic {
        return Err(Error::BadMagic {
            file: file.to_string(),
            offset: 0,
            expected: magic.to_vec(),
            found: bytes[..4].to_vec(),
        });
    }
    let mut r = ByteReader::new(&bytes[HEADER_VERSION_OFFSET..FILE_HEADER_LEN], file, 4);
    let version = r.u16()?;
    if !supported.contains(&version) {
        return Err(Error::UnsupportedVersion {
            file: file.to_string(),
            version,
            supported,
        });
    }
    let flags = r.u16()?;
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
    if index_offset < FILE_HEADER_LEN as u64 || index_offset >= footer_at as u64 {
        return Err(Error::Corrupted {
            file: file.to_string(),
            offset: footer_at as u64,
            reason: format!("index offset {index_offset} is outside the file's frames"),
        });
    }
    Ok(Envelope {
        index_offset,
        flags,
    })
}
