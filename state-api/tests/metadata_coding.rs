//! Property tests of the hand-written encodings: every structure of
//! `_metadata` and of the snapshot metas round-trips, and arbitrary or
//! mutated bytes decode to an error (a corruption naming the file), never a
//! panic or an allocation beyond the input.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use state_api::codec::CodecSchema;
use state_api::format::coding::{Decode, Encode};
use state_api::format::frame::{encode_frame, Compression};
use state_api::format::keyed::KeyedSnapshotMeta;
use state_api::format::operator::OperatorStateMeta;
use state_api::snapshot::handle::{
    Distribution, IncrementalKeyedStateHandle, IncrementalNativeStateHandle, KeyGroupsStateHandle,
    KeyedStateHandle, NativeFile, OperatorStateHandle, OperatorStatePart,
};
use state_api::snapshot::metadata::{
    decode_metadata, encode_metadata, CheckpointMetadata, OperatorState, SnapshotKind, SubtaskState,
};
use state_api::snapshot::stream::StreamStateHandle;
use state_api::state::{StateKind, StateMeta, StorageShape};
use state_api::{ErrorKind, KeyGroupRange};

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,10}"
}

fn range() -> impl Strategy<Value = KeyGroupRange> {
    prop_oneof![
        Just(KeyGroupRange::EMPTY),
        (0u32..40_000, 1u32..200).prop_map(|(s, n)| KeyGroupRange::new(s, s + n - 1)),
    ]
}

fn schema() -> impl Strategy<Value = CodecSchema> {
    (text(), any::<u32>()).prop_map(|(n, v)| CodecSchema::new(n, v))
}

fn kind() -> impl Strategy<Value = StateKind> {
    (1u8..=5).prop_map(|t| StateKind::from_tag(t).expect("a known tag"))
}

fn state_meta() -> impl Strategy<Value = StateMeta> {
    (text(), kind(), schema(), schema(), schema()).prop_map(|(name, kind, namespace, a, b)| {
        let values = match kind.shape() {
            StorageShape::Map => vec![a, b],
            _ => vec![a],
        };
        StateMeta {
            name,
            kind,
            namespace,
            values,
            ttl: None,
        }
    })
}

fn stream() -> impl Strategy<Value = StreamStateHandle> {
    prop_oneof![
        (text(), vec(any::<u8>(), 0..40)).prop_map(|(name, data)| StreamStateHandle::InMemory {
            name,
            data: Arc::from(data),
        }),
        (text(), any::<u64>()).prop_map(|(path, size)| StreamStateHandle::File {
            path: PathBuf::from(path),
            size,
        }),
    ]
}

fn key_groups() -> impl Strategy<Value = KeyGroupsStateHandle> {
    (
        any::<u64>(),
        stream(),
        any::<u32>(),
        range(),
        vec(any::<u64>(), 0..6),
    )
        .prop_map(|(checkpoint_id, data, max_parallelism, range, offsets)| {
            KeyGroupsStateHandle {
                checkpoint_id,
                data,
                max_parallelism,
                range,
                offsets,
            }
        })
}

fn native_file() -> impl Strategy<Value = NativeFile> {
    (text(), stream(), any::<u32>()).prop_map(|(name, data, crc32)| NativeFile {
        name,
        data,
        crc32,
    })
}

fn native() -> impl Strategy<Value = IncrementalNativeStateHandle> {
    (
        (any::<u64>(), text(), any::<u32>(), any::<u32>()),
        (range(), range(), schema()),
        vec(state_meta(), 0..3),
        vec(native_file(), 0..3),
        vec(native_file(), 0..3),
    )
        .prop_map(
            |(
                (checkpoint_id, backend, format_version, max_parallelism),
                (range, source_range, key_codec),
                states,
                shared,
                private,
            )| IncrementalNativeStateHandle {
                checkpoint_id,
                backend,
                format_version,
                max_parallelism,
                range,
                source_range,
                key_codec,
                states,
                shared,
                private,
            },
        )
}

fn keyed() -> impl Strategy<Value = KeyedStateHandle> {
    prop_oneof![
        key_groups().prop_map(KeyedStateHandle::KeyGroups),
        (any::<u64>(), range(), key_groups(), vec(key_groups(), 0..3)).prop_map(
            |(checkpoint_id, range, base, deltas)| {
                KeyedStateHandle::IncrementalHeap(IncrementalKeyedStateHandle {
                    checkpoint_id,
                    range,
                    base,
                    deltas,
                })
            }
        ),
        native().prop_map(KeyedStateHandle::IncrementalNative),
    ]
}

fn distribution() -> impl Strategy<Value = Distribution> {
    (1u8..=3).prop_map(|t| Distribution::from_tag(t).expect("a known tag"))
}

fn operator_handle() -> impl Strategy<Value = OperatorStateHandle> {
    (
        any::<u64>(),
        stream(),
        btree_map(text(), (distribution(), vec(any::<u64>(), 0..4)), 0..4),
    )
        .prop_map(|(checkpoint_id, data, states)| OperatorStateHandle {
            checkpoint_id,
            data,
            states: states
                .into_iter()
                .map(|(name, (distribution, offsets))| {
                    (
                        name,
                        OperatorStatePart {
                            distribution,
                            offsets,
                        },
                    )
                })
                .collect(),
        })
}

fn subtask() -> impl Strategy<Value = SubtaskState> {
    (
        vec(keyed(), 0..3),
        vec(operator_handle(), 0..3),
        vec(keyed(), 0..2),
        vec(operator_handle(), 0..2),
    )
        .prop_map(|(keyed, operator, raw_keyed, raw_operator)| SubtaskState {
            keyed,
            operator,
            raw_keyed,
            raw_operator,
        })
}

fn metadata() -> impl Strategy<Value = CheckpointMetadata> {
    let operator = (text(), any::<u32>(), any::<u32>(), vec(subtask(), 0..3)).prop_map(
        |(operator_id, parallelism, max_parallelism, subtasks)| OperatorState {
            operator_id,
            parallelism,
            max_parallelism,
            subtasks,
        },
    );
    let kind = prop_oneof![
        Just(SnapshotKind::Checkpoint),
        Just(SnapshotKind::Savepoint)
    ];
    (any::<u64>(), kind, any::<u64>(), vec(operator, 0..3)).prop_map(
        |(checkpoint_id, kind, timestamp_millis, operators)| CheckpointMetadata {
            checkpoint_id,
            kind,
            timestamp_millis,
            operators,
        },
    )
}

fn keyed_snapshot_meta() -> impl Strategy<Value = KeyedSnapshotMeta> {
    (
        1u32..=32768,
        schema(),
        btree_map(text(), state_meta(), 0..4),
    )
        .prop_flat_map(|(max_parallelism, key_codec, states)| {
            let states: Vec<StateMeta> = states
                .into_iter()
                .map(|(name, s)| StateMeta { name, ..s })
                .collect();
            (0..=max_parallelism, 0..=max_parallelism).prop_map(move |(a, b)| {
                let range = if a == b {
                    KeyGroupRange::EMPTY
                } else {
                    KeyGroupRange::new(a.min(b), a.max(b) - 1)
                };
                KeyedSnapshotMeta {
                    max_parallelism,
                    range,
                    key_codec: key_codec.clone(),
                    states: states.clone(),
                    delta: false,
                }
            })
        })
}

fn operator_state_meta() -> impl Strategy<Value = OperatorStateMeta> {
    (text(), distribution(), schema(), schema()).prop_map(|(name, distribution, a, b)| {
        let schemas = if distribution == Distribution::Broadcast {
            vec![a, b]
        } else {
            vec![a]
        };
        OperatorStateMeta {
            name,
            distribution,
            schemas,
        }
    })
}

/// Checks that `T` round-trips and that the decoder consumes exactly the
/// encoding, also when more bytes follow.
fn round_trip<T: Encode + Decode + PartialEq + std::fmt::Debug>(value: &T) {
    let bytes = value.encode_to_vec().expect("encodes");
    let decoded = T::decode_exact(&bytes, "t", 0, "the value").expect("decodes");
    assert_eq!(&decoded, value);
    let mut longer = bytes.clone();
    longer.push(0);
    let err = T::decode_exact(&longer, "t", 0, "the value").expect_err("a trailing byte");
    assert_eq!(err.kind(), ErrorKind::Corruption);
    // Strict prefixes (up to 64 of them) are errors, never a panic or
    // another value: every encoding is self-delimiting.
    for len in (0..bytes.len()).step_by((bytes.len() / 64).max(1)) {
        assert!(
            T::decode_exact(&bytes[..len], "t", 0, "the value").is_err(),
            "a prefix of {len} bytes decoded"
        );
    }
}

/// A version 1 `_metadata` file around `payload`: 8-byte header, one frame
/// at offset 8, footer.
fn v1_file(payload: &[u8]) -> Vec<u8> {
    let mut bytes = b"SMET\x01\x00\x00\x00".to_vec();
    encode_frame(&mut bytes, payload, Compression::None).expect("small frame");
    let offset = 8u64.to_le_bytes();
    bytes.extend_from_slice(&offset);
    bytes.extend_from_slice(&crc32fast::hash(&offset).to_le_bytes());
    bytes.extend_from_slice(b"SMET");
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn metadata_round_trips(m in metadata()) {
        round_trip(&m);
        for compression in [Compression::None, Compression::Zstd { level: 1 }] {
            let file = encode_metadata(&m, compression).expect("encodes");
            prop_assert_eq!(decode_metadata("_metadata", &file).expect("decodes"), m.clone());
        }
    }

    #[test]
    fn handles_round_trip(k in keyed(), o in operator_handle(), s in stream()) {
        round_trip(&k);
        round_trip(&o);
        round_trip(&s);
    }

    #[test]
    fn shared_structures_round_trip(r in range(), c in schema(), s in state_meta()) {
        round_trip(&r);
        round_trip(&c);
        round_trip(&s);
    }

    #[test]
    fn snapshot_metas_round_trip(k in keyed_snapshot_meta(), o in operator_state_meta()) {
        round_trip(&k);
        round_trip(&o);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_metadata_decoders(bytes in vec(any::<u8>(), 0..600)) {
        if let Err(e) = CheckpointMetadata::decode_exact(&bytes, "fuzz", 0, "metadata") {
            prop_assert_eq!(e.kind(), ErrorKind::Corruption);
            prop_assert!(e.to_string().contains("fuzz"), "{}", e);
        }
        let _ = KeyedStateHandle::decode_exact(&bytes, "fuzz", 0, "handle");
        let _ = OperatorStateHandle::decode_exact(&bytes, "fuzz", 0, "handle");
        let _ = KeyedSnapshotMeta::decode_exact(&bytes, "fuzz", 0, "meta");
        let _ = OperatorStateMeta::decode_exact(&bytes, "fuzz", 0, "meta");
        if let Err(e) = decode_metadata("fuzz", &bytes) {
            prop_assert!(
                matches!(e.kind(), ErrorKind::Corruption | ErrorKind::IncompatibleFormat),
                "{}", e
            );
        }
        // The frozen version 1 decoder, behind a valid envelope.
        if let Err(e) = decode_metadata("fuzz", &v1_file(&bytes)) {
            prop_assert_eq!(e.kind(), ErrorKind::Corruption, "{}", e);
        }
    }

    #[test]
    fn mutated_payloads_are_errors_or_other_values(
        m in metadata(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = m.encode_to_vec().expect("encodes");
        if bytes.is_empty() {
            return Ok(());
        }
        for (i, b) in edits {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        match CheckpointMetadata::decode_exact(&bytes, "mutated", 0, "metadata") {
            // Whatever decodes is a value that round-trips.
            Ok(decoded) => round_trip(&decoded),
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Corruption),
        }
    }
}

/// A count far beyond the input is refused before anything is reserved.
#[test]
fn huge_counts_are_refused_without_allocating() {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&7u64.to_le_bytes());
    bytes.push(1);
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]);
    let err = CheckpointMetadata::decode_exact(&bytes, "huge", 0, "metadata").expect_err("count");
    assert_eq!(err.kind(), ErrorKind::Corruption);
    assert!(
        err.to_string().contains("huge is corrupted at offset 17"),
        "{err}"
    );

    let mut file = Vec::new();
    StreamStateHandle::File {
        path: PathBuf::from("x"),
        size: 1,
    }
    .encode_into(&mut file)
    .expect("encodes");
    let mut handle = 1u64.to_le_bytes().to_vec();
    handle.extend_from_slice(&file);
    handle.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    let err =
        OperatorStateHandle::decode_exact(&handle, "huge", 0, "handle").expect_err("state count");
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
}

/// Names of operator states are written in order; a decoder refuses a repeated
/// or out-of-order name (so that every value has exactly one encoding).
#[test]
fn operator_state_names_must_increase() {
    let part = OperatorStatePart {
        distribution: Distribution::Union,
        offsets: vec![1],
    };
    let h = OperatorStateHandle {
        checkpoint_id: 1,
        data: StreamStateHandle::InMemory {
            name: "m".into(),
            data: Arc::from(&b""[..]),
        },
        states: BTreeMap::from([("a".to_string(), part.clone()), ("b".to_string(), part)]),
    };
    let mut bytes = h.encode_to_vec().expect("encodes");
    let b_at = bytes.iter().rposition(|&c| c == b'b').expect("the name b");
    bytes[b_at] = b'a';
    let err = OperatorStateHandle::decode_exact(&bytes, "f", 0, "handle").expect_err("repeated");
    assert!(
        err.to_string().contains("out of order or repeated"),
        "{err}"
    );
}
