//! The layout of RocksDB keys, one column family per state:
//!
//! ```text
//! entry key = key-group prefix | varint key length | key | varint namespace length | namespace
//! map key   = entry key | user key
//! ```
//!
//! The key-group prefix is the key group in big-endian, 1 byte when the max
//! parallelism is at most 128, else 2 bytes, so a column family is sorted by
//! key group: a full snapshot reads key groups in order, and a rescale drops
//! the key groups a backend does not own with one range delete. Lengths make
//! the key and the namespace unambiguous, so a map's user key can follow them.

use state_api::format::bytes::{put_varint, ByteReader};
use state_api::state::StateKind;
use state_api::{Error, Result};

/// Bytes of the key-group prefix for a max parallelism.
pub fn prefix_len(max_parallelism: u32) -> usize {
    if max_parallelism <= 128 {
        1
    } else {
        2
    }
}

/// Appends the key-group prefix of `key_group`.
#[inline]
pub fn put_prefix(out: &mut Vec<u8>, key_group: u32, prefix_len: usize) {
    if prefix_len == 1 {
        out.push(key_group as u8);
    } else {
        out.extend_from_slice(&(key_group as u16).to_be_bytes());
    }
}

/// The key-group prefix as bytes.
pub fn prefix(key_group: u32, prefix_len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(2);
    put_prefix(&mut v, key_group, prefix_len);
    v
}

/// Appends an entry key.
#[inline]
pub fn put_entry_key(
    out: &mut Vec<u8>,
    key_group: u32,
    prefix_len: usize,
    key: &[u8],
    namespace: &[u8],
) {
    put_prefix(out, key_group, prefix_len);
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    put_varint(out, namespace.len() as u64);
    out.extend_from_slice(namespace);
}

/// A decoded RocksDB key.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodedKey<'a> {
    /// The key group.
    pub key_group: u32,
    /// The encoded key.
    pub key: &'a [u8],
    /// The encoded namespace.
    pub namespace: &'a [u8],
    /// The user key (map states), empty otherwise.
    pub user_key: &'a [u8],
    /// Length of the entry-key part.
    pub entry_len: usize,
}

/// Decodes a RocksDB key of a state's column family.
pub fn decode<'a>(raw: &'a [u8], prefix_len: usize, db: &'a str) -> Result<DecodedKey<'a>> {
    if raw.len() < prefix_len {
        return Err(corrupt(db, "key shorter than its key-group prefix"));
    }
    let key_group = if prefix_len == 1 {
        u32::from(raw[0])
    } else {
        u32::from(u16::from_be_bytes([raw[0], raw[1]]))
    };
    let mut r = ByteReader::new(&raw[prefix_len..], db, prefix_len as u64);
    let key = r.bytes()?;
    let namespace = r.bytes()?;
    let entry_len = raw.len() - r.remaining();
    Ok(DecodedKey {
        key_group,
        key,
        namespace,
        user_key: &raw[entry_len..],
        entry_len,
    })
}

/// Appends a timer key (see `state_api::timers`): key-group prefix, the
/// 8-byte timestamp, the key, then the namespace.
pub fn put_timer_key(
    out: &mut Vec<u8>,
    key_group: u32,
    prefix_len: usize,
    timestamp: &[u8],
    key: &[u8],
    namespace: &[u8],
) {
    put_prefix(out, key_group, prefix_len);
    put_varint(out, timestamp.len() as u64);
    out.extend_from_slice(timestamp);
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    out.extend_from_slice(namespace);
}

/// Decodes a RocksDB key of a column family of a state of `kind`: a timer
/// key's parts are put in their places (key, namespace, and the timestamp
/// as the user key), and each timer is an entry of its own.
pub fn decode_for<'a>(
    kind: StateKind,
    raw: &'a [u8],
    prefix_len: usize,
    db: &'a str,
) -> Result<DecodedKey<'a>> {
    let d = decode(raw, prefix_len, db)?;
    if kind != StateKind::Timers {
        return Ok(d);
    }
    Ok(DecodedKey {
        key_group: d.key_group,
        key: d.namespace,
        namespace: d.user_key,
        user_key: d.key,
        entry_len: raw.len(),
    })
}

/// The smallest key greater than every key starting with `prefix` (for range
/// deletes and iteration bounds); `None` when no such key exists.
pub fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut s = prefix.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

fn corrupt(db: &str, reason: &str) -> Error {
    Error::Corrupted {
        file: db.to_string(),
        offset: 0,
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        for plen in [1, 2] {
            let mut k = Vec::new();
            put_entry_key(&mut k, 7, plen, b"key", b"ns");
            k.extend_from_slice(b"uk");
            let d = decode(&k, plen, "db").expect("decodes");
            assert_eq!(
                (d.key_group, d.key, d.namespace, d.user_key),
                (7, &b"key"[..], &b"ns"[..], &b"uk"[..])
            );
            let mut a = Vec::new();
            put_entry_key(&mut a, 3, plen, b"zzz", b"");
            let mut b = Vec::new();
            put_entry_key(&mut b, 4, plen, b"a", b"");
            assert!(a < b, "key groups sort first");
        }
        assert_eq!(successor(&[1, 2, 0xff]), Some(vec![1, 3]));
        assert_eq!(successor(&[0xff, 0xff]), None);
        assert!(decode(&[5, 0x80], 1, "db").is_err());
        let mut t = Vec::new();
        put_timer_key(&mut t, 9, 1, &[1; 8], b"key", b"ns");
        let d = decode_for(StateKind::Timers, &t, 1, "db").expect("decodes");
        assert_eq!(
            (d.key_group, d.key, d.namespace, d.user_key),
            (9, &b"key"[..], &b"ns"[..], &[1u8; 8][..])
        );
    }
}
