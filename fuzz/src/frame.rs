//! Frames, at arbitrary offsets of arbitrary bytes.

use state_api::format::frame::{
    decode_frame, encode_frame, Compression, FRAME_CODEC_OFFSET, FRAME_HEADER_LEN,
};

/// Frame codec byte of an uncompressed frame (`docs/format.md`, 4).
const CODEC_NONE: u8 = 0;

/// `decode_frame` at the offset in bytes 0..2 (u16 LE) of the file in the
/// rest, and at offsets past its end. A frame that decodes lies inside the
/// file; an uncompressed one is exactly what `encode_frame` writes for its
/// payload; any payload encodes again, plain and with zstd, and decodes back.
pub fn frame(data: &[u8]) {
    let [a, b, file @ ..] = data else {
        return;
    };
    let offset = u64::from(u16::from_le_bytes([*a, *b]));
    for past_the_end in [file.len() as u64, u64::MAX - 3, u64::MAX] {
        assert!(decode_frame("fuzz", file, past_the_end).is_err());
    }
    let Ok((payload, end)) = decode_frame("fuzz", file, offset) else {
        return;
    };
    assert!(end <= file.len() as u64, "a frame ends inside the file");
    assert!(end >= offset + FRAME_HEADER_LEN as u64);
    let (at, end) = (offset as usize, end as usize);
    if file[at + FRAME_CODEC_OFFSET] == CODEC_NONE {
        let mut plain = Vec::new();
        encode_frame(&mut plain, &payload, Compression::None).expect("payload fits a frame");
        assert_eq!(
            plain,
            &file[at..end],
            "an uncompressed frame re-encodes byte for byte"
        );
    }
    for compression in [Compression::None, Compression::Zstd { level: 1 }] {
        let mut out = vec![0xa5; 3];
        encode_frame(&mut out, &payload, compression).expect("payload fits a frame");
        let (again, end) = decode_frame("again", &out, 3).expect("an encoded frame decodes");
        assert_eq!(
            again, payload,
            "payload changed in a round trip ({compression:?})"
        );
        assert_eq!(end, out.len() as u64);
    }
}
