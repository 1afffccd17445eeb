//! Byte-level encoding shared by every persisted structure: little-endian
//! integers, LEB128 varints, length-prefixed byte strings, and a bounds-checked
//! reader whose errors name the file and the absolute offset.

use crate::codec::CodecSchema;
use crate::error::{Error, Result};

/// Appends `v` as an unsigned LEB128 varint (1 to 10 bytes).
#[inline]
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a varint length followed by the bytes.
#[inline]
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Appends a length-prefixed UTF-8 string.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

/// Appends a codec schema: its name as a string, its version as `u32`.
pub fn put_schema(out: &mut Vec<u8>, schema: &CodecSchema) {
    put_str(out, &schema.name);
    out.extend_from_slice(&schema.version.to_le_bytes());
}

/// A bounds-checked reader over a byte slice that is part of a named file.
pub struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
    base: u64,
    format_version: u16,
}

impl<'a> ByteReader<'a> {
    /// Reads `buf`, which starts at absolute offset `base` of `file`, as
    /// written by the current format version.
    pub fn new(buf: &'a [u8], file: &'a str, base: u64) -> Self {
        ByteReader {
            buf,
            pos: 0,
            file,
            base,
            format_version: super::FormatVersion::CURRENT.number(),
        }
    }

    /// The same reader for bytes written by format version `version` (the
    /// file header's), for structures whose layout depends on it.
    pub fn with_format_version(mut self, version: u16) -> Self {
        self.format_version = version;
        self
    }

    /// The format version the bytes were written by.
    pub fn format_version(&self) -> u16 {
        self.format_version
    }

    /// Absolute offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A corruption error at the current offset.
    pub fn corrupted(&self, reason: impl Into<String>) -> Error {
        Error::Corrupted {
            file: self.file.to_string(),
            offset: self.offset(),
            reason: reason.into(),
        }
    }

    /// A corruption error at absolute offset `offset` of this reader's file.
    pub fn corrupted_at(&self, offset: u64, reason: impl Into<String>) -> Error {
        Error::Corrupted {
            file: self.file.to_string(),
            offset,
            reason: reason.into(),
        }
    }

    /// Takes the next `n` bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.corrupted(format!(
                "structure needs {n} bytes, only {} remain",
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads one byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Reads a little-endian `u16`.
    pub fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    /// Reads a little-endian `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads a little-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Reads an unsigned LEB128 varint of at most 10 bytes.
    #[inline]
    pub fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(self.corrupted("varint overflows 64 bits"));
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.corrupted("varint longer than 10 bytes"))
    }

    /// Reads a varint that must fit `usize` and not exceed the remaining bytes
    /// times `min_item_size` (so a corrupted count cannot trigger a huge allocation).
    /// The error names the offset of the count.
    pub fn count(&mut self, min_item_size: usize) -> Result<usize> {
        let at = self.offset();
        let n = self.varint()?;
        let max = (self.remaining() / min_item_size.max(1)) as u64;
        if n > max {
            return Err(self.corrupted_at(
                at,
                format!(
                    "count {n} exceeds what {} remaining bytes can hold",
                    self.remaining()
                ),
            ));
        }
        Ok(n as usize)
    }

    /// Reads a length-prefixed byte string.
    #[inline]
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.varint()?;
        if n > self.remaining() as u64 {
            return Err(self.corrupted(format!(
                "byte string of {n} bytes, only {} remain",
                self.remaining()
            )));
        }
        self.take(n as usize)
    }

    /// Reads a length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str> {
        let at = self.offset();
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|e| Error::Corrupted {
            file: self.file.to_string(),
            offset: at,
            reason: format!("invalid UTF-8 string: {e}"),
        })
    }

    /// Reads a codec schema.
    pub fn schema(&mut self) -> Result<CodecSchema> {
        let name = self.str()?.to_string();
        let version = self.u32()?;
        Ok(CodecSchema { name, version })
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self, what: &str) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self.corrupted(format!(
                "{} unexpected bytes after {what}",
                self.remaining()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = ByteReader::new(&out, "t", 0);
            prop_assert_eq!(r.varint().ok(), Some(v));
            prop_assert!(r.is_empty());
        }

        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = ByteReader::new(&bytes, "t", 0);
            let _ = r.varint();
            let _ = r.bytes();
            let _ = r.str();
            let _ = r.schema();
            let _ = r.count(1);
            let _ = r.u64();
        }
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let bytes = [0xffu8; 11];
        let mut r = ByteReader::new(&bytes, "f", 100);
        let err = r.varint().expect_err("too long");
        assert!(
            err.to_string().contains("f is corrupted at offset"),
            "{err}"
        );
    }
}
