//! The `ByteReader` primitives every decoder is built from.

use state_api::format::bytes::{put_bytes, put_schema, put_str, put_varint, ByteReader};

/// The reads [`byte_reader`] chooses from, one per program byte.
#[derive(Clone, Copy, Debug)]
enum Op {
    U8,
    U16,
    U32,
    U64,
    Varint,
    Bytes,
    Str,
    Schema,
    /// `count(min_item_size)`.
    Count(usize),
    /// `take(n)`.
    Take(usize),
    Finish,
}

impl Op {
    fn of(byte: u8) -> Op {
        let arg = usize::from(byte >> 4);
        match byte & 0x0f {
            0 => Op::U8,
            1 => Op::U16,
            2 => Op::U32,
            3 => Op::U64,
            4..=6 => Op::Varint,
            7 => Op::Bytes,
            8 => Op::Str,
            9 => Op::Schema,
            10 | 11 => Op::Count(arg),
            12 | 13 => Op::Take(arg),
            _ => Op::Finish,
        }
    }
}

/// Decodes `bytes` with a fresh reader and checks that it reads back `expected`
/// and nothing more.
fn reads_back<T: PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    read: impl FnOnce(&mut ByteReader<'_>) -> state_api::Result<T>,
    expected: T,
) {
    let mut r = ByteReader::new(bytes, "again", 0);
    assert_eq!(read(&mut r).expect("an encoded value decodes"), expected);
    assert!(r.is_empty(), "the encoding is read whole");
}

/// A sequence of reads chosen by the input. Byte 0 is the program length
/// `n`; the next `n` bytes are the program (one [`Op`] each), the rest is the
/// buffer read. After each read: the offset moved by exactly what was read, a
/// fixed-width read fails only (and without consuming) when too few bytes
/// remain, and every value read encodes with `put_*` and decodes back.
pub fn byte_reader(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (program, buf) = rest.split_at(usize::from(n).min(rest.len()));
    let base = u64::from(n) * 4099;
    let mut r = ByteReader::new(buf, "fuzz", base);
    for &byte in program {
        let op = Op::of(byte);
        let remaining = r.remaining();
        let at = buf.len() - remaining;
        assert_eq!(r.offset(), base + at as u64);
        assert_eq!(r.is_empty(), remaining == 0);
        let fixed = |width: usize, ok: bool, r: &ByteReader<'_>| {
            assert_eq!(ok, remaining >= width, "{op:?} with {remaining} bytes left");
            let used = if ok { width } else { 0 };
            assert_eq!(
                r.remaining(),
                remaining - used,
                "{op:?} consumed what it read"
            );
        };
        match op {
            Op::U8 => {
                let v = r.u8();
                fixed(1, v.is_ok(), &r);
                if let Ok(v) = v {
                    assert_eq!(v, buf[at]);
                }
            }
            Op::U16 => {
                let v = r.u16();
                fixed(2, v.is_ok(), &r);
                if let Ok(v) = v {
                    assert_eq!(v.to_le_bytes(), buf[at..at + 2]);
                }
            }
            Op::U32 => {
                let v = r.u32();
                fixed(4, v.is_ok(), &r);
                if let Ok(v) = v {
                    assert_eq!(v.to_le_bytes(), buf[at..at + 4]);
                }
            }
            Op::U64 => {
                let v = r.u64();
                fixed(8, v.is_ok(), &r);
                if let Ok(v) = v {
                    assert_eq!(v.to_le_bytes(), buf[at..at + 8]);
                }
            }
            Op::Take(n) => {
                let v = r.take(n);
                fixed(n, v.is_ok(), &r);
                if let Ok(v) = v {
                    assert_eq!(v, &buf[at..at + n]);
                }
            }
            Op::Varint => {
                let Ok(v) = r.varint() else {
                    continue;
                };
                let read = &buf[at..buf.len() - r.remaining()];
                let mut canonical = Vec::new();
                put_varint(&mut canonical, v);
                reads_back(&canonical, |r| r.varint(), v);
                assert!(canonical.len() <= read.len() && read.len() <= 10);
                // Without redundant high zero groups, the bytes are the
                // writer's own.
                if read.len() == 1 || read[read.len() - 1] != 0 {
                    assert_eq!(canonical, read, "varint {v} re-encodes byte for byte");
                }
            }
            Op::Bytes => {
                if let Ok(v) = r.bytes() {
                    let mut out = Vec::new();
                    put_bytes(&mut out, v);
                    reads_back(&out, |r| r.bytes().map(<[u8]>::to_vec), v.to_vec());
                }
            }
            Op::Str => {
                if let Ok(v) = r.str() {
                    let mut out = Vec::new();
                    put_str(&mut out, v);
                    reads_back(&out, |r| r.str().map(str::to_string), v.to_string());
                }
            }
            Op::Schema => {
                if let Ok(v) = r.schema() {
                    let mut out = Vec::new();
                    put_schema(&mut out, &v);
                    reads_back(&out, |r| r.schema(), v);
                }
            }
            Op::Count(min_item_size) => {
                if let Ok(count) = r.count(min_item_size) {
                    assert!(count * min_item_size.max(1) <= r.remaining());
                }
            }
            Op::Finish => {
                assert_eq!(r.finish("fuzz").is_ok(), remaining == 0);
                assert_eq!(r.remaining(), remaining);
            }
        }
    }
}
