//! Golden vectors pinning the key -> key group assignment, which is part of
//! the persisted format: a change here would scatter restored state over the
//! wrong key groups. `testdata/key_groups_v1.txt` was written by format
//! version 1 and must never change; set `WRITE_GOLDEN=1` only to create a new
//! versioned file.

use std::fmt::Write as _;

use serde::Serialize;
use state_api::codec::{Codec, PostcardCodec};
use state_api::key_group::key_group_for_bytes;

fn line<K: Serialize + serde::de::DeserializeOwned + 'static>(
    out: &mut String,
    ty: &str,
    key: K,
    shown: &str,
) {
    let mut bytes = Vec::new();
    PostcardCodec::<K>::new()
        .encode(&key, &mut bytes)
        .expect("encode");
    for max_p in [128u32, 32768] {
        let kg = key_group_for_bytes(&bytes, max_p).expect("valid max parallelism");
        writeln!(out, "{ty}\t{shown}\t{max_p}\t{kg}").expect("write to string");
    }
}

fn vectors() -> String {
    let mut out = String::from(
        "# type\tkey\tmax_parallelism\tkey_group (postcard key codec, murmur3 + fmix)\n",
    );
    for k in [0i64, 1, -1, 42, 1_000_000, i64::MIN, i64::MAX] {
        line(&mut out, "i64", k, &k.to_string());
    }
    for k in [0u64, 7, u64::MAX] {
        line(&mut out, "u64", k, &k.to_string());
    }
    for k in [0u32, 123_456] {
        line(&mut out, "u32", k, &k.to_string());
    }
    for k in [
        "",
        "a",
        "apple",
        "user-12345",
        "ключ",
        "The quick brown fox jumps over the lazy dog",
    ] {
        line(&mut out, "String", k.to_string(), &format!("{k:?}"));
    }
    line(
        &mut out,
        "(u32,String)",
        (7u32, "x".to_string()),
        "(7, \"x\")",
    );
    line(&mut out, "Vec<u8>", vec![1u8, 2, 3], "[1, 2, 3]");
    out
}

#[test]
fn key_group_assignment_matches_golden_vectors() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/key_groups_v1.txt");
    let actual = vectors();
    if std::env::var_os("WRITE_GOLDEN").is_some() && !std::path::Path::new(path).exists() {
        std::fs::write(path, &actual).expect("write golden file");
    }
    let golden = std::fs::read_to_string(path).expect("testdata/key_groups_v1.txt is committed");
    for (i, (want, got)) in golden.lines().zip(actual.lines()).enumerate() {
        assert_eq!(
            got,
            want,
            "golden line {} differs: the key group assignment drifted",
            i + 1
        );
    }
    assert_eq!(
        golden.lines().count(),
        actual.lines().count(),
        "golden vector count"
    );
}
