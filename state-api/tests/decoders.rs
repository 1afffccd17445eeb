//! Every decoder gets arbitrary bytes and returns an error, never panics; and
//! every single-bit flip of a snapshot file is detected.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use state_api::codec::CodecSchema;
use state_api::format::frame::Compression;
use state_api::format::keyed::{KeyedSnapshotMeta, KeyedSnapshotReader, KeyedSnapshotWriter};
use state_api::format::operator::{
    read_operator_bytes, write_operator_snapshot, OperatorStateData, OperatorStateMeta,
};
use state_api::snapshot::handle::{
    Distribution, IncrementalKeyedStateHandle, KeyGroupsStateHandle, KeyedStateHandle,
    OperatorStateHandle, OperatorStatePart,
};
use state_api::snapshot::metadata::{
    decode_metadata, encode_metadata, CheckpointMetadata, OperatorState, SnapshotKind, SubtaskState,
};
use state_api::snapshot::rescale::assign_keyed_state;
use state_api::snapshot::stream::{
    CheckpointStreamFactory, MemoryCheckpointStreamFactory, StreamBytes, StreamScope,
    StreamStateHandle,
};
use state_api::state::{StateKind, StateMeta};
use state_api::{ErrorKind, KeyGroupRange, Result};

fn schema(name: &str) -> CodecSchema {
    CodecSchema::new(name, 1)
}

fn meta() -> KeyedSnapshotMeta {
    let state = |name: &str, kind: StateKind, values: Vec<CodecSchema>| StateMeta {
        name: name.into(),
        kind,
        namespace: schema("ns"),
        values,
        ttl: None,
    };
    KeyedSnapshotMeta {
        max_parallelism: 16,
        range: KeyGroupRange::new(4, 9),
        key_codec: schema("key"),
        states: vec![
            state("v", StateKind::Value, vec![schema("v")]),
            state("l", StateKind::List, vec![schema("e")]),
            state("m", StateKind::Map, vec![schema("uk"), schema("uv")]),
        ],
        delta: false,
    }
}

/// A small keyed file with records of every shape in a few key groups.
fn keyed_file(compression: Compression) -> Result<KeyGroupsStateHandle> {
    let streams = MemoryCheckpointStreamFactory::new(1 << 20, "keyed");
    let out = streams.create_stream(StreamScope::Exclusive)?;
    let mut w = KeyedSnapshotWriter::new(out, meta(), compression, 7)?;
    for kg in [4u32, 6, 9] {
        w.start_key_group(kg)?;
        let key = [kg as u8; 3];
        w.write_cell(0, &key, b"", &[1, 2, 3, 4, 5, 6, 7, 8].repeat(20))?;
        let mut elems = Vec::new();
        state_api::format::bytes::put_bytes(&mut elems, b"first");
        state_api::format::bytes::put_bytes(&mut elems, b"second");
        w.write_list(1, &key, b"n", 2, &elems)?;
        w.write_map_entry(2, &key, b"", b"uk", b"uv")?;
    }
    w.finish()
}

fn operator_file() -> Result<OperatorStateHandle> {
    let streams = MemoryCheckpointStreamFactory::new(1 << 20, "operator");
    let out = streams.create_stream(StreamScope::Exclusive)?;
    let states = vec![
        OperatorStateData {
            meta: OperatorStateMeta {
                name: "offsets".into(),
                distribution: Distribution::SplitDistribute,
                schemas: vec![schema("e")],
            },
            elements: vec![b"a".to_vec(), b"bb".to_vec(), vec![]],
        },
        OperatorStateData {
            meta: OperatorStateMeta {
                name: "rules".into(),
                distribution: Distribution::Broadcast,
                schemas: vec![schema("k"), schema("v")],
            },
            elements: vec![vec![1, b'k', 1, b'v']],
        },
    ];
    write_operator_snapshot(out, &states, Compression::None, 3, &|| Ok(()))
}

/// Opens a keyed file and reads every record of every key group.
fn read_all_keyed(handle: &KeyGroupsStateHandle) -> Result<usize> {
    let reader = KeyedSnapshotReader::open(handle)?;
    let mut n = 0;
    for kg in handle.range.iter() {
        reader.for_each_record(kg, |_| {
            n += 1;
            Ok(())
        })?;
    }
    Ok(n)
}

fn with_bytes<H: Clone>(
    handle: &H,
    data: &StreamStateHandle,
    bytes: Vec<u8>,
    set: impl Fn(&mut H, StreamStateHandle),
) -> H {
    let mut h = handle.clone();
    let name = data.describe();
    set(
        &mut h,
        StreamStateHandle::InMemory {
            name,
            data: Arc::from(bytes),
        },
    );
    h
}

fn bytes_of(h: &StreamStateHandle) -> Vec<u8> {
    h.read().expect("in-memory bytes").bytes().to_vec()
}

#[test]
fn valid_files_read_back() -> Result<()> {
    for c in [Compression::None, Compression::Zstd { level: 3 }] {
        let h = keyed_file(c)?;
        assert_eq!(
            read_all_keyed(&h)?,
            9,
            "3 records in each of 3 key groups ({c:?})"
        );
        let reader = KeyedSnapshotReader::open(&h)?;
        let mut seen = Vec::new();
        reader.for_each_record(6, |r| {
            seen.push((r.state, r.key.to_vec()));
            Ok(())
        })?;
        assert_eq!(
            seen,
            vec![(0, vec![6; 3]), (1, vec![6; 3]), (2, vec![6; 3])]
        );
        // A narrowed handle reads only its key groups.
        let part = h.intersection(&KeyGroupRange::new(5, 6)).expect("overlaps");
        assert_eq!(read_all_keyed(&part)?, 3);
    }
    let op = operator_file()?;
    let data = read_operator_bytes(&op.data.read()?, &op)?;
    assert_eq!(
        data[0].elements,
        vec![b"a".to_vec(), b"bb".to_vec(), vec![]]
    );
    assert_eq!(data[1].elements.len(), 1);
    Ok(())
}

#[test]
fn every_bit_flip_of_a_keyed_file_is_detected() -> Result<()> {
    for c in [Compression::None, Compression::Zstd { level: 3 }] {
        let h = keyed_file(c)?;
        let good = bytes_of(&h.data);
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let damaged = with_bytes(&h, &h.data, bad, |h, d| h.data = d);
            let err = read_all_keyed(&damaged).expect_err("a flipped bit must not read back");
            assert_eq!(
                err.kind(),
                ErrorKind::Corruption,
                "bit {bit}: unexpected error kind: {err}"
            );
        }
    }
    Ok(())
}

#[test]
fn every_bit_flip_of_an_operator_file_is_detected() -> Result<()> {
    let h = operator_file()?;
    let good = bytes_of(&h.data);
    for bit in 0..good.len() * 8 {
        let mut bad = good.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let bytes = StreamBytes::new("op", Arc::from(bad));
        let err = read_operator_bytes(&bytes, &h).expect_err("a flipped bit must not read back");
        assert_eq!(err.kind(), ErrorKind::Corruption, "bit {bit}: {err}");
    }
    Ok(())
}

#[test]
fn truncation_and_bad_handles_are_errors() -> Result<()> {
    let h = keyed_file(Compression::None)?;
    let good = bytes_of(&h.data);
    for len in [0, 4, 8, good.len() / 2, good.len() - 1] {
        let cut = with_bytes(&h, &h.data, good[..len].to_vec(), |h, d| h.data = d);
        let err = read_all_keyed(&cut).expect_err("truncated");
        assert_eq!(err.kind(), ErrorKind::Corruption, "length {len}: {err}");
    }
    let mut wrong = h.clone();
    wrong.offsets[1] += 1;
    assert_eq!(
        read_all_keyed(&wrong).expect_err("offsets").kind(),
        ErrorKind::Corruption
    );
    let mut wrong = h.clone();
    wrong.max_parallelism = 32;
    assert_eq!(
        read_all_keyed(&wrong).expect_err("max parallelism").kind(),
        ErrorKind::Corruption
    );
    let op = operator_file()?;
    let mut wrong = op.clone();
    wrong.states.insert(
        "offsets".into(),
        OperatorStatePart {
            distribution: Distribution::SplitDistribute,
            offsets: vec![9],
        },
    );
    let err = read_operator_bytes(&op.data.read()?, &wrong).expect_err("offset inside a frame");
    assert_eq!(err.kind(), ErrorKind::Corruption);
    // A version this build does not read, in an intact header (a file from
    // a newer build), is an incompatible format...
    let mut newer = bytes_of(&op.data);
    newer[4] = 9;
    let crc = crc32fast::hash(&newer[..8]);
    newer[8..12].copy_from_slice(&crc.to_le_bytes());
    let err =
        read_operator_bytes(&StreamBytes::new("v", Arc::from(newer)), &op).expect_err("version");
    assert_eq!(err.kind(), ErrorKind::IncompatibleFormat);
    assert!(
        err.to_string().contains("reads versions [1, 2, 3]"),
        "{err}"
    );
    // ... while the same byte changed in a header whose CRC no longer
    // matches is a corruption.
    let mut damaged = bytes_of(&op.data);
    damaged[4] = 9;
    let err = read_operator_bytes(&StreamBytes::new("v", Arc::from(damaged)), &op)
        .expect_err("damaged version");
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    Ok(())
}

/// A `_metadata` whose keyed handle lists its key-group offsets out of order
/// (bytes a buggy writer could produce; found by the `metadata` fuzz target)
/// made `state_size` panic on a subtraction overflow, and sizes adding up
/// past `u64::MAX` could overflow `total_size` and `state_size` the same
/// way. Sizes now saturate; the damage is a `Corruption` once the file is
/// opened and its index compared with the handle.
#[test]
fn handle_sizes_of_damaged_metadata_do_not_overflow() -> Result<()> {
    let good = keyed_file(Compression::None)?;
    let mut backwards = good.clone();
    backwards.offsets.reverse();
    let mut spread = good.clone();
    *spread.offsets.last_mut().expect("offsets") = u64::MAX;
    let huge_file = |path: &str| KeyGroupsStateHandle {
        data: StreamStateHandle::File {
            path: path.into(),
            size: u64::MAX - 1,
        },
        ..spread.clone()
    };
    let metadata = CheckpointMetadata {
        checkpoint_id: 7,
        kind: SnapshotKind::Checkpoint,
        timestamp_millis: 0,
        operators: vec![OperatorState {
            operator_id: "op".into(),
            parallelism: 1,
            max_parallelism: 16,
            subtasks: vec![SubtaskState {
                keyed: vec![
                    KeyedStateHandle::KeyGroups(backwards),
                    KeyedStateHandle::IncrementalHeap(IncrementalKeyedStateHandle {
                        checkpoint_id: 7,
                        range: good.range,
                        base: huge_file("shared/base"),
                        deltas: vec![huge_file("shared/delta")],
                    }),
                ],
                ..SubtaskState::default()
            }],
        }],
    };
    // Through `_metadata` bytes, as a restore gets them.
    let bytes = encode_metadata(&metadata, Compression::Zstd { level: 3 })?;
    let loaded = decode_metadata("_metadata", &bytes)?;
    let keyed = &loaded.operators[0].subtasks[0].keyed;
    assert_eq!(keyed[0].state_size(), 0, "offsets out of order");
    assert_eq!(keyed[1].state_size(), u64::MAX, "saturates");
    assert_eq!(keyed[1].total_size(), u64::MAX, "saturates");
    for p in 1..=3 {
        let assigned = assign_keyed_state(keyed, 16, p)?;
        assert_eq!(assigned.len(), p as usize);
        // Sizing the parts, as the heap backend does to choose its next
        // base, must not panic either.
        let sizes: Vec<u64> = assigned
            .iter()
            .flatten()
            .map(|h| h.state_size().max(h.total_size()))
            .collect();
        assert!(!sizes.is_empty(), "every subtask overlaps key groups 4..=9");
    }
    let KeyedStateHandle::KeyGroups(damaged) = &keyed[0] else {
        panic!("decoded as written: {:?}", keyed[0]);
    };
    let err = KeyedSnapshotReader::open(damaged)
        .err()
        .expect("offsets disagree with the file");
    assert_eq!(err.kind(), ErrorKind::Corruption, "{err}");
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_the_keyed_reader(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(reader) = KeyedSnapshotReader::from_bytes(StreamBytes::new("fuzz", Arc::from(bytes))) {
            for kg in reader.meta().range.iter() {
                let _ = reader.for_each_record(kg, |_| Ok(()));
            }
        }
    }

    #[test]
    fn mutated_keyed_files_never_panic(edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let h = keyed_file(Compression::Zstd { level: 1 }).expect("file");
        let mut bytes = bytes_of(&h.data);
        for (i, b) in edits {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        let damaged = with_bytes(&h, &h.data, bytes, |h, d| h.data = d);
        let _ = read_all_keyed(&damaged);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_operator_reader(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        offsets in proptest::collection::vec(0u64..600, 0..4),
    ) {
        let mut states = BTreeMap::new();
        states.insert("offsets".to_string(), OperatorStatePart { distribution: Distribution::SplitDistribute, offsets });
        let handle = OperatorStateHandle {
            checkpoint_id: 1,
            data: StreamStateHandle::InMemory { name: "fuzz".into(), data: Arc::from(bytes.clone()) },
            states,
        };
        let _ = read_operator_bytes(&StreamBytes::new("fuzz", Arc::from(bytes)), &handle);
    }
}

/// Regression (found by the `metadata` fuzz target): version 1 metadata was
/// decoded without the checks of the current decoder, so a value state with
/// two value schemas was accepted, and publishing that metadata again wrote
/// a file that no longer read. Version 1 metadata is now held to every rule
/// of the current format.
#[test]
fn version_1_metadata_is_held_to_the_current_rules() {
    use state_api::format::frame::{FRAME_CRC_OFFSET, FRAME_HEADER_LEN};
    // The fuzzer's input, with the CRC of its one frame (right after the
    // 8-byte version 1 header) recomputed as its harness does.
    let mut bytes =
        include_bytes!("../../fuzz/seeds/metadata/crash-v1-state-meta-value-count.meta").to_vec();
    let frame = 8;
    let stored = u32::from_le_bytes(bytes[frame..frame + 4].try_into().expect("4 bytes")) as usize;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[frame..frame + FRAME_CRC_OFFSET]);
    crc.update(&bytes[frame + FRAME_HEADER_LEN..frame + FRAME_HEADER_LEN + stored]);
    let crc = crc.finalize().to_le_bytes();
    bytes[frame + FRAME_CRC_OFFSET..frame + FRAME_HEADER_LEN].copy_from_slice(&crc);
    let e = decode_metadata("v1", &bytes).expect_err("a value state with two value schemas");
    assert_eq!(e.kind(), ErrorKind::Corruption, "{e}");
    assert!(e.to_string().contains("value schemas"), "{e}");
}
