//! Checksum repair, so that mutations reach the parsers behind the CRCs.
//!
//! Almost every byte of a snapshot file is under a CRC32, so almost every
//! mutation the fuzzer makes is refused at the first frame check and the
//! parsers behind it see only what the seeds hold. The file targets
//! therefore run each input twice: as it is, and with every CRC recomputed.
//! The second run still goes through the public decoders, with bytes a
//! buggy or malicious writer could produce.

use state_api::format::frame::{FRAME_CRC_OFFSET, FRAME_HEADER_LEN, FRAME_STORED_LEN_OFFSET};
use state_api::format::{
    FormatVersion, FILE_HEADER_LEN, FILE_HEADER_LEN_V1, FOOTER_CRC_OFFSET, FOOTER_INDEX_OFFSET,
    FOOTER_LEN, HEADER_CRC_OFFSET, HEADER_VERSION_OFFSET,
};

fn le_u32(bytes: &[u8]) -> usize {
    let mut a = [0u8; 4];
    a.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(a) as usize
}

/// Where the header ends: 8 bytes in version 1, 12 (the last 4 its CRC) in
/// any other version, as readers decide it.
fn header_len(file: &[u8]) -> usize {
    match file.get(HEADER_VERSION_OFFSET..HEADER_VERSION_OFFSET + 2) {
        Some(v) if u16::from_le_bytes([v[0], v[1]]) == FormatVersion::V1.number() => {
            FILE_HEADER_LEN_V1
        }
        _ => FILE_HEADER_LEN,
    }
}

/// `file` with the header's CRC (from version 2 on), the CRC of every frame
/// from the end of the header up to the footer (frames follow each other
/// without gaps), and the footer's CRC, recomputed; `None` if they were all
/// right already.
pub fn repaired(file: &[u8]) -> Option<Vec<u8>> {
    let footer_at = file.len().checked_sub(FOOTER_LEN)?;
    let header_len = header_len(file);
    if footer_at < header_len {
        return None;
    }
    let mut out = file.to_vec();
    if header_len > HEADER_CRC_OFFSET {
        let crc = crc32fast::hash(&out[..HEADER_CRC_OFFSET]);
        out[HEADER_CRC_OFFSET..header_len].copy_from_slice(&crc.to_le_bytes());
    }
    let mut at = header_len;
    while at + FRAME_HEADER_LEN <= footer_at {
        let stored_len = le_u32(&out[at + FRAME_STORED_LEN_OFFSET..]);
        let Some(end) = (at + FRAME_HEADER_LEN)
            .checked_add(stored_len)
            .filter(|&end| end <= footer_at)
        else {
            break;
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out[at..at + FRAME_CRC_OFFSET]);
        crc.update(&out[at + FRAME_HEADER_LEN..end]);
        out[at + FRAME_CRC_OFFSET..at + FRAME_HEADER_LEN]
            .copy_from_slice(&crc.finalize().to_le_bytes());
        at = end;
    }
    let footer = footer_at + FOOTER_INDEX_OFFSET;
    let crc = crc32fast::hash(&out[footer..footer_at + FOOTER_CRC_OFFSET]);
    out[footer_at + FOOTER_CRC_OFFSET..footer_at + FOOTER_CRC_OFFSET + 4]
        .copy_from_slice(&crc.to_le_bytes());
    (out != file).then_some(out)
}

/// Runs `check` on `data`, then on `data` with its checksums repaired.
pub fn as_is_and_repaired(data: &[u8], check: fn(&[u8])) {
    check(data);
    if let Some(repaired) = repaired(data) {
        check(&repaired);
    }
}
