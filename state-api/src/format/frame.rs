//! Checksummed, optionally compressed frames: the unit every snapshot file is
//! made of.
//!
//! ```text
//! offset  size  field
//! 0       4     stored_len   u32 LE: bytes of payload as stored
//! 4       4     raw_len      u32 LE: bytes of payload after decompression
//! 8       1     codec        0 = none, 1 = zstd
//! 9       4     crc32        CRC32 (IEEE) of bytes 0..9 followed by the stored payload
//! 13      n     payload      stored_len bytes
//! ```

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::bytes::ByteReader;
use crate::error::{Error, Result};

/// Offset of `stored_len` in a frame header.
pub const FRAME_STORED_LEN_OFFSET: usize = 0;
/// Offset of `raw_len`.
pub const FRAME_RAW_LEN_OFFSET: usize = FRAME_STORED_LEN_OFFSET + 4;
/// Offset of the codec byte.
pub const FRAME_CODEC_OFFSET: usize = FRAME_RAW_LEN_OFFSET + 4;
/// Offset of the CRC32.
pub const FRAME_CRC_OFFSET: usize = FRAME_CODEC_OFFSET + 1;
/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = FRAME_CRC_OFFSET + 4;

/// Largest payload of one frame (raw or stored): `i32::MAX` bytes. A record
/// that would not fit is refused at write time.
pub const MAX_FRAME_PAYLOAD: usize = i32::MAX as usize;

/// Payload size at which a writer closes a frame and starts the next one.
pub const TARGET_FRAME_PAYLOAD: usize = 64 * 1024;

/// Payloads below this size are never compressed (not worth a zstd frame).
pub const MIN_COMPRESSIBLE_PAYLOAD: usize = 128;

const CODEC_NONE: u8 = 0;
const CODEC_ZSTD: u8 = 1;

/// Compression of frame payloads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    /// Stored as is.
    #[default]
    None,
    /// zstd at the given level (1 is fast, 3 the zstd default).
    Zstd {
        /// The zstd level.
        level: i32,
    },
}

/// Appends one frame holding `payload` to `out`.
///
/// Compression is used only when it makes the frame smaller.
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8], compression: Compression) -> Result<()> {
    let (header, stored) = prepare_frame(payload, compression)?;
    out.extend_from_slice(&header);
    out.extend_from_slice(&stored);
    Ok(())
}

/// The header of a frame holding `payload`, and the bytes stored after it
/// (the payload itself, or its compressed form when that is smaller). Lets a
/// writer send a large payload on without copying it into a frame buffer.
pub fn prepare_frame(
    payload: &[u8],
    compression: Compression,
) -> Result<([u8; FRAME_HEADER_LEN], Cow<'_, [u8]>)> {
    if payload.len() > MAX_FRAME_PAYLOAD {
        return Err(Error::SizeLimitExceeded {
            what: "a snapshot frame (one record)".into(),
            size: payload.len() as u64,
            limit: MAX_FRAME_PAYLOAD as u64,
        });
    }
    let compressed = match compression {
        Compression::Zstd { level } if payload.len() >= MIN_COMPRESSIBLE_PAYLOAD => {
            let c = zstd::bulk::compress(payload, level)
                .map_err(|e| Error::io("zstd compression of a snapshot frame", e))?;
            (c.len() < payload.len()).then_some(c)
        }
        _ => None,
    };
    let (codec, stored): (u8, Cow<'_, [u8]>) = match compressed {
        Some(c) => (CODEC_ZSTD, Cow::Owned(c)),
        None => (CODEC_NONE, Cow::Borrowed(payload)),
    };
    let mut header = [0u8; FRAME_HEADER_LEN];
    header[FRAME_STORED_LEN_OFFSET..FRAME_RAW_LEN_OFFSET]
        .copy_from_slice(&(stored.len() as u32).to_le_bytes());
    header[FRAME_RAW_LEN_OFFSET..FRAME_CODEC_OFFSET]
        .copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[FRAME_CODEC_OFFSET] = codec;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[..FRAME_CRC_OFFSET]);
    crc.update(&stored);
    header[FRAME_CRC_OFFSET..].copy_from_slice(&crc.finalize().to_le_bytes());
    Ok((header, stored))
}

/// Decodes the frame at `offset` of `file_bytes`; returns its payload and the
/// offset just past the frame.
pub fn decode_frame<'a>(
    file: &str,
    file_bytes: &'a [u8],
    offset: u64,
) -> Result<(Cow<'a, [u8]>, u64)> {
    let at = usize::try_from(offset).unwrap_or(usize::MAX);
    let available = file_bytes.len().saturating_sub(at) as u64;
    if available < FRAME_HEADER_LEN as u64 {
        return Err(Error::Truncated {
            file: file.to_string(),
            offset,
            needed: FRAME_HEADER_LEN as u64,
            available,
        });
    }
    let header = &file_bytes[at..at + FRAME_HEADER_LEN];
    let mut r = ByteReader::new(header, file, offset);
    let stored_len = r.u32()? as usize;
    let raw_len = r.u32()? as usize;
    let codec = r.u8()?;
    let expected = r.u32()?;
    let payload_at = at + FRAME_HEADER_LEN;
    let payload_available = file_bytes.len() - payload_at;
    if stored_len > payload_available {
        return Err(Error::Truncated {
            file: file.to_string(),
            offset,
            needed: (FRAME_HEADER_LEN + stored_len) as u64,
            available,
        });
    }
    let stored = &file_bytes[payload_at..payload_at + stored_len];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[..FRAME_CRC_OFFSET]);
    crc.update(stored);
    let actual = crc.finalize();
    if actual != expected {
        return Err(Error::ChecksumMismatch {
            file: file.to_string(),
            offset,
            expected,
            actual,
        });
    }
    let corrupted = |reason: String| Error::Corrupted {
        file: file.to_string(),
        offset,
        reason,
    };
    let payload = match codec {
        CODEC_NONE => {
            if raw_len != stored_len {
                return Err(corrupted(format!(
                    "uncompressed frame with raw length {raw_len} != stored length {stored_len}"
                )));
            }
            Cow::Borrowed(stored)
        }
        CODEC_ZSTD => {
            if raw_len > MAX_FRAME_PAYLOAD {
                return Err(corrupted(format!(
                    "raw length {raw_len} exceeds the frame limit"
                )));
            }
            let raw = decompress(stored, raw_len)
                .map_err(|e| corrupted(format!("zstd payload does not decompress: {e}")))?;
            if raw.len() != raw_len {
                return Err(corrupted(format!(
                    "zstd payload decompressed to {} bytes, header says {raw_len}",
                    raw.len()
                )));
            }
            Cow::Owned(raw)
        }
        other => return Err(corrupted(format!("unknown frame codec {other}"))),
    };
    Ok((payload, (payload_at + stored_len) as u64))
}

/// A frame whose raw length is at most this many times its stored length
/// (or at most [`BULK_DECOMPRESS_FLOOR`]) is decompressed into a buffer
/// allocated up front; a larger claim grows its buffer with the output.
const BULK_DECOMPRESS_RATIO: usize = 64;
/// See [`BULK_DECOMPRESS_RATIO`].
const BULK_DECOMPRESS_FLOOR: usize = 1 << 20;

/// Decompresses a zstd payload of `raw_len` bytes. The buffer is allocated
/// up front only when `raw_len` is plausible for `stored`'s size: a damaged
/// header claiming gigabytes for a few bytes gets memory only as the
/// decompressor actually produces output (at most `raw_len + 1` bytes).
fn decompress(stored: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    if raw_len
        <= stored
            .len()
            .saturating_mul(BULK_DECOMPRESS_RATIO)
            .max(BULK_DECOMPRESS_FLOOR)
    {
        return zstd::bulk::decompress(stored, raw_len);
    }
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::with_buffer(stored)?
        .take(raw_len as u64 + 1)
        .read_to_end(&mut raw)?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Regression (found by fuzzing): a 58-byte zstd frame whose header
    /// claimed a raw length of `i32::MAX` reserved 2 GiB before failing.
    /// Highly compressible payloads above the bulk ratio still decode.
    #[test]
    fn huge_raw_length_claims_allocate_only_what_decompresses() {
        let payload = vec![7u8; 4 << 20];
        let mut out = Vec::new();
        encode_frame(&mut out, &payload, Compression::Zstd { level: 3 }).expect("encode");
        assert!(
            payload.len() > (out.len() - FRAME_HEADER_LEN) * BULK_DECOMPRESS_RATIO,
            "the payload takes the streaming path"
        );
        let (p, _) = decode_frame("f", &out, 0).expect("decode");
        assert_eq!(&*p, &payload[..]);

        let small = vec![1u8; 100];
        let mut frame = Vec::new();
        encode_frame(&mut frame, &small, Compression::Zstd { level: 3 }).expect("encode");
        frame[FRAME_RAW_LEN_OFFSET..FRAME_CODEC_OFFSET]
            .copy_from_slice(&(i32::MAX as u32).to_le_bytes());
        let crc = {
            let mut h = crc32fast::Hasher::new();
            h.update(&frame[..FRAME_CRC_OFFSET]);
            h.update(&frame[FRAME_HEADER_LEN..]);
            h.finalize()
        };
        frame[FRAME_CRC_OFFSET..FRAME_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        let e = decode_frame("f", &frame, 0).expect_err("the claim is false");
        assert_eq!(e.kind(), crate::ErrorKind::Corruption, "{e}");
    }

    #[test]
    fn round_trip_plain_and_zstd() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        for c in [Compression::None, Compression::Zstd { level: 1 }] {
            let mut out = vec![0xAA];
            encode_frame(&mut out, &payload, c).expect("encode");
            let (p, end) = decode_frame("f", &out, 1).expect("decode");
            assert_eq!(&*p, &payload[..]);
            assert_eq!(end as usize, out.len());
            if c != Compression::None {
                assert!(
                    out.len() < payload.len() / 2,
                    "zstd shrinks repetitive data"
                );
            }
        }
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 31 % 251) as u8).collect();
        for c in [Compression::None, Compression::Zstd { level: 3 }] {
            let mut out = Vec::new();
            encode_frame(&mut out, &payload, c).expect("encode");
            for bit in 0..out.len() * 8 {
                let mut damaged = out.clone();
                damaged[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    decode_frame("f", &damaged, 0).is_err(),
                    "flip of bit {bit} went unnoticed ({c:?})"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), off in 0u64..300) {
            let _ = decode_frame("f", &bytes, off);
        }
    }
}
