//! Seed corpora: small, valid inputs for every target, written by the
//! current encoders, plus the golden files of `testdata/snapshots/` and the
//! pinned encodings of `testdata/formats/`.
//!
//! Everything here is deterministic (fixed ids, names and timestamps), so
//! running the generator again rewrites the same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use checkpoint_store::metadata::{CheckpointMetadata, OperatorState, SubtaskState};
use state_api::codec::CodecSchema;
use state_api::format::bytes::{put_bytes, put_schema, put_str, put_varint};
use state_api::format::frame::{decode_frame, encode_frame, Compression, FRAME_CODEC_OFFSET};
use state_api::format::keyed::{
    describe_keyed_file, KeyedSnapshotMeta, KeyedSnapshotReader, KeyedSnapshotWriter, RecordBody,
};
use state_api::format::operator::{write_operator_snapshot, OperatorStateData, OperatorStateMeta};
use state_api::format::{FILE_HEADER_LEN, FOOTER_LEN};
use state_api::key_group::KeyGroupRange;
use state_api::snapshot::handle::{
    Distribution, IncrementalKeyedStateHandle, IncrementalNativeStateHandle, KeyGroupsStateHandle,
    KeyedStateHandle, NativeFile, OperatorStateHandle,
};
use state_api::snapshot::stream::{
    CheckpointStreamFactory, MemoryCheckpointStreamFactory, StreamScope, StreamStateHandle,
};
use state_api::snapshot::SnapshotKind;

use crate::keyed::{in_memory, record_meta};
use crate::metadata::encode_metadata;

/// One seed file: `seeds/<target>/<name>`.
pub struct Seed {
    /// The target it seeds.
    pub target: &'static str,
    /// File name inside the target's folder.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

fn seed(target: &'static str, name: &str, bytes: Vec<u8>) -> Seed {
    Seed {
        target,
        name: name.to_string(),
        bytes,
    }
}

fn stream() -> Box<dyn state_api::snapshot::stream::CheckpointOutputStream> {
    MemoryCheckpointStreamFactory::new(usize::MAX, "seed")
        .create_stream(StreamScope::Exclusive)
        .expect("in-memory streams open")
}

fn bytes_of(h: &StreamStateHandle) -> Vec<u8> {
    h.read().expect("in-memory bytes").bytes().to_vec()
}

/// A keyed file over key groups 2..=5 of 8 with the states of
/// [`record_meta`]: records of every kind in key groups 2 and 4, key group 3
/// empty, and in a delta file a delete of every state. With zstd, key group
/// 5 holds one compressible value, so that one frame is compressed.
pub fn keyed_file(delta: bool, compression: Compression) -> KeyGroupsStateHandle {
    let meta = KeyedSnapshotMeta {
        max_parallelism: 8,
        range: KeyGroupRange::new(2, 5),
        ..record_meta(delta)
    };
    let mut w = KeyedSnapshotWriter::new(stream(), meta, compression, 1).expect("writer");
    let written: state_api::Result<()> = (|| {
        for kg in [2u32, 4] {
            w.start_key_group(kg)?;
            let key = [b'k', kg as u8];
            w.write_cell(0, &key, b"", b"v1")?;
            let mut elements = Vec::new();
            put_bytes(&mut elements, b"e1");
            put_bytes(&mut elements, b"");
            w.write_list(1, &key, b"n", 2, &elements)?;
            w.write_cell(2, &key, b"", &[9; 3])?;
            w.write_cell(3, &key, b"", b"acc")?;
            w.write_map_entry(4, &key, b"", b"uk", b"uv")?;
            if delta {
                for state in 0..5 {
                    w.write_delete(state, b"gone", b"")?;
                }
            }
        }
        if compression != Compression::None {
            w.start_key_group(5)?;
            w.write_cell(0, b"big", b"", &b"compressible ".repeat(24))?;
        }
        Ok(())
    })();
    written.expect("seed records are valid");
    w.finish().expect("seed file finishes")
}

/// A keyed file of no key group and no state.
fn empty_keyed_file() -> KeyGroupsStateHandle {
    let meta = KeyedSnapshotMeta {
        max_parallelism: 1,
        range: KeyGroupRange::EMPTY,
        states: Vec::new(),
        ..record_meta(false)
    };
    let w = KeyedSnapshotWriter::new(stream(), meta, Compression::None, 1).expect("writer");
    w.finish().expect("seed file finishes")
}

/// An operator file with a state of every distribution (and an empty one).
pub fn operator_file() -> OperatorStateHandle {
    let state =
        |name: &str, distribution, schemas: &[&str], elements: Vec<Vec<u8>>| OperatorStateData {
            meta: OperatorStateMeta {
                name: name.into(),
                distribution,
                schemas: schemas.iter().map(|s| CodecSchema::new(*s, 1)).collect(),
            },
            elements,
        };
    let mut entry = Vec::new();
    put_bytes(&mut entry, b"rule");
    put_bytes(&mut entry, b"on");
    let states = [
        state(
            "split",
            Distribution::SplitDistribute,
            &["e"],
            vec![b"a".to_vec(), b"bb".to_vec(), Vec::new()],
        ),
        state("union", Distribution::Union, &["e"], vec![b"u".to_vec()]),
        state(
            "broadcast",
            Distribution::Broadcast,
            &["k", "v"],
            vec![entry],
        ),
        state("empty", Distribution::SplitDistribute, &["e"], Vec::new()),
    ];
    write_operator_snapshot(stream(), &states, Compression::None, 1, &|| Ok(()))
        .expect("seed operator file")
}

fn no_state_operator_file() -> OperatorStateHandle {
    write_operator_snapshot(stream(), &[], Compression::None, 1, &|| Ok(()))
        .expect("seed operator file")
}

fn file(path: &str, size: u64) -> StreamStateHandle {
    StreamStateHandle::File {
        path: PathBuf::from(path),
        size,
    }
}

/// `h` with its bytes named by a file handle instead.
fn as_file(mut h: KeyGroupsStateHandle, path: &str) -> KeyGroupsStateHandle {
    h.data = file(path, h.data.size());
    h
}

fn native(range: KeyGroupRange, source_range: KeyGroupRange) -> IncrementalNativeStateHandle {
    let sst = |n: u32| NativeFile {
        name: format!("{n:06}.sst"),
        data: file(&format!("shared/{n:032x}"), 4096 + u64::from(n)),
        crc32: 0x1234_5678 ^ n,
    };
    IncrementalNativeStateHandle {
        checkpoint_id: 3,
        backend: "rocksdb".into(),
        format_version: 1,
        max_parallelism: 8,
        range,
        source_range,
        key_codec: CodecSchema::new("key", 1),
        states: record_meta(false).states,
        shared: vec![sst(7), sst(9)],
        private: vec![
            NativeFile {
                name: "MANIFEST-000005".into(),
                data: file("chk-3/0000000000000000000000000000000a", 170),
                crc32: 0xdead_beef,
            },
            NativeFile {
                name: "CURRENT".into(),
                data: in_memory("CURRENT", b"MANIFEST-000005\n"),
                crc32: 0x0bad_cafe,
            },
        ],
    }
}

fn metadata(kind: SnapshotKind, operators: Vec<OperatorState>) -> Vec<u8> {
    encode_metadata(&CheckpointMetadata {
        checkpoint_id: 3,
        kind,
        timestamp_millis: 1_700_000_000_000,
        operators,
    })
}

fn operator_state(id: &str, subtasks: Vec<SubtaskState>) -> OperatorState {
    OperatorState {
        operator_id: id.into(),
        parallelism: subtasks.len() as u32,
        max_parallelism: 8,
        subtasks,
    }
}

/// `_metadata` of a checkpoint holding every handle kind: canonical keyed
/// state in memory and in files, an incremental heap chain, native handles,
/// operator state in memory and in a file, raw keyed and raw operator state.
fn checkpoint_metadata() -> Vec<u8> {
    let keyed = keyed_file(false, Compression::None);
    let delta = keyed_file(true, Compression::None);
    let op = operator_file();
    let op_file = OperatorStateHandle {
        data: file("chk-3/0123456789abcdef0123456789abcdef", op.data.size()),
        ..op.clone()
    };
    let first = SubtaskState {
        keyed: vec![KeyedStateHandle::KeyGroups(keyed.clone())],
        operator: vec![op],
        raw_keyed: vec![KeyedStateHandle::KeyGroups(as_file(
            keyed.clone(),
            "chk-3/raw-keyed",
        ))],
        raw_operator: vec![op_file],
    };
    let second = SubtaskState {
        keyed: vec![KeyedStateHandle::IncrementalHeap(
            IncrementalKeyedStateHandle {
                checkpoint_id: 3,
                range: keyed.range,
                base: as_file(keyed.clone(), "shared/base"),
                deltas: vec![as_file(delta, "shared/delta-1")],
            },
        )],
        ..SubtaskState::default()
    };
    let native = SubtaskState {
        keyed: vec![KeyedStateHandle::IncrementalNative(native(
            KeyGroupRange::all(8),
            KeyGroupRange::all(8),
        ))],
        ..SubtaskState::default()
    };
    metadata(
        SnapshotKind::Checkpoint,
        vec![
            operator_state("heap", vec![first, second]),
            operator_state("rocks", vec![native]),
        ],
    )
}

/// `_metadata` of a savepoint: canonical keyed and operator files only.
fn savepoint_metadata() -> Vec<u8> {
    let keyed = as_file(keyed_file(false, Compression::None), "keyed-0");
    let op = operator_file();
    let subtask = SubtaskState {
        keyed: vec![KeyedStateHandle::KeyGroups(keyed)],
        operator: vec![OperatorStateHandle {
            data: file("operator-0", op.data.size()),
            ..op
        }],
        ..SubtaskState::default()
    };
    metadata(
        SnapshotKind::Savepoint,
        vec![operator_state("heap", vec![subtask])],
    )
}

/// `_metadata` whose keyed state is native handles only: two subtasks, and
/// one handle narrowed by an earlier rescale (range inside source range).
fn native_metadata(rescaled: bool) -> Vec<u8> {
    let (a, b) = (KeyGroupRange::new(0, 3), KeyGroupRange::new(4, 7));
    let subtasks = if rescaled {
        vec![SubtaskState {
            keyed: vec![
                KeyedStateHandle::IncrementalNative(native(KeyGroupRange::new(2, 3), a)),
                KeyedStateHandle::IncrementalNative(native(KeyGroupRange::new(4, 5), b)),
            ],
            ..SubtaskState::default()
        }]
    } else {
        [a, b]
            .into_iter()
            .map(|r| SubtaskState {
                keyed: vec![KeyedStateHandle::IncrementalNative(native(r, r))],
                ..SubtaskState::default()
            })
            .collect()
    };
    metadata(
        SnapshotKind::Checkpoint,
        vec![operator_state("rocks", subtasks)],
    )
}

/// The same metadata file with its frame stored uncompressed, if the
/// writer compressed it: mutations then hit the handles, not zstd's stream.
/// (The footer names the frame's offset, which stays the same.)
fn uncompressed(file: &[u8]) -> Option<Vec<u8>> {
    if file[FILE_HEADER_LEN + FRAME_CODEC_OFFSET] == 0 {
        return None;
    }
    let (payload, end) =
        decode_frame("seed", file, FILE_HEADER_LEN as u64).expect("a seed's frame decodes");
    assert_eq!(
        end as usize,
        file.len() - FOOTER_LEN,
        "one frame between header and footer"
    );
    let mut out = file[..FILE_HEADER_LEN].to_vec();
    encode_frame(&mut out, &payload, Compression::None).expect("small payload");
    out.extend_from_slice(&file[file.len() - FOOTER_LEN..]);
    Some(out)
}

/// A frame seed: the offset as u16 LE, then the bytes.
fn at(offset: u16, bytes: &[u8]) -> Vec<u8> {
    let mut out = offset.to_le_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

fn frame(payload: &[u8], compression: Compression) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, payload, compression).expect("small payload");
    out
}

/// Offset of the first zstd frame of a keyed file's key groups.
fn zstd_frame_offset(h: &KeyGroupsStateHandle) -> u16 {
    let reader = KeyedSnapshotReader::open(h).expect("seed file opens");
    let bytes = reader.stream_bytes().bytes();
    let offset = h
        .range
        .iter()
        .flat_map(|kg| reader.key_group_frames(kg).expect("seed frames decode"))
        .map(|(offset, _)| offset)
        .find(|&o| bytes[o as usize + FRAME_CODEC_OFFSET] == 1)
        .expect("the zstd seed file has a compressed frame");
    u16::try_from(offset).expect("seed files are small")
}

/// A `byte_reader` seed: program length, program, buffer.
fn program(ops: &[u8], buffer: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(ops.len()).expect("short program")];
    out.extend_from_slice(ops);
    out.extend_from_slice(buffer);
    out
}

fn byte_reader_seeds() -> Vec<Seed> {
    // One of each read, over exactly the bytes they need.
    let mut buf = vec![0x7f];
    buf.extend_from_slice(&0xbeefu16.to_le_bytes());
    buf.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    buf.extend_from_slice(&u64::MAX.to_le_bytes());
    put_varint(&mut buf, 300);
    put_bytes(&mut buf, b"abc");
    put_str(&mut buf, "state");
    put_schema(
        &mut buf,
        &CodecSchema::new("postcard:i64#s2ae1af192b331746", 1),
    );
    put_varint(&mut buf, 2);
    buf.extend_from_slice(b"xyz");
    let each = program(&[0, 1, 2, 3, 4, 7, 8, 9, 0x2a, 0x3c, 0x0f], &buf);
    // Varint edge cases: 0, 127, 128, u64::MAX, an overlong zero, then an
    // 11-byte run that must be refused.
    let mut varints = Vec::new();
    for v in [0, 127, 128, u64::MAX] {
        put_varint(&mut varints, v);
    }
    varints.extend_from_slice(&[0x80, 0x00]);
    varints.extend_from_slice(&[0xff; 11]);
    let edges = program(&[4; 6], &varints);
    // Reads past the end, and finish on what is left.
    let short = program(&[3, 2, 1, 0, 0x0f, 0, 0x0f], &[1, 2, 3]);
    vec![
        seed("byte_reader", "each-read.bin", each),
        seed("byte_reader", "varint-edges.bin", edges),
        seed("byte_reader", "short.bin", short),
    ]
}

/// Every generated seed. `testdata` is the repository's `testdata/` folder,
/// whose golden snapshot files seed the file targets too.
pub fn generate(testdata: &Path) -> Vec<Seed> {
    let golden = |target, name: &str| {
        let path = testdata.join("snapshots/v1").join(name);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
        seed(target, &format!("golden-v1-{name}"), bytes)
    };
    let keyed = keyed_file(false, Compression::None);
    let keyed_zstd = keyed_file(false, Compression::Zstd { level: 3 });
    let delta = keyed_file(true, Compression::None);
    let delta_zstd = keyed_file(true, Compression::Zstd { level: 3 });
    let mut seeds = vec![
        golden("keyed_file", "keyed.snap"),
        golden("keyed_file", "keyed-zstd.snap"),
        golden("keyed_file", "keyed-corrupt.snap"),
        seed("keyed_file", "every-kind.snap", bytes_of(&keyed.data)),
        seed(
            "keyed_file",
            "every-kind-zstd.snap",
            bytes_of(&keyed_zstd.data),
        ),
        seed(
            "keyed_file",
            "empty.snap",
            bytes_of(&empty_keyed_file().data),
        ),
        seed("delta_file", "delta.snap", bytes_of(&delta.data)),
        seed("delta_file", "delta-zstd.snap", bytes_of(&delta_zstd.data)),
        golden("operator_file", "operator.snap"),
        seed(
            "operator_file",
            "every-distribution.snap",
            bytes_of(&operator_file().data),
        ),
        seed(
            "operator_file",
            "no-state.snap",
            bytes_of(&no_state_operator_file().data),
        ),
        seed("metadata", "checkpoint.meta", checkpoint_metadata()),
        seed("metadata", "savepoint.meta", savepoint_metadata()),
        seed(
            "metadata",
            "empty.meta",
            metadata(SnapshotKind::Checkpoint, Vec::new()),
        ),
        seed("native_handle", "native.meta", native_metadata(false)),
        seed(
            "native_handle",
            "native-rescaled.meta",
            native_metadata(true),
        ),
        seed(
            "frame",
            "plain.bin",
            at(0, &frame(b"hello records", Compression::None)),
        ),
        seed("frame", "empty.bin", at(0, &frame(b"", Compression::None))),
        seed(
            "frame",
            "zstd.bin",
            at(
                0,
                &frame(&b"compressible ".repeat(24), Compression::Zstd { level: 3 }),
            ),
        ),
        seed(
            "frame",
            "keyed-meta.bin",
            at(FILE_HEADER_LEN as u16, &bytes_of(&keyed.data)),
        ),
        seed(
            "frame",
            "keyed-zstd-data.bin",
            at(zstd_frame_offset(&keyed_zstd), &bytes_of(&keyed_zstd.data)),
        ),
    ];
    let compressed: Vec<(&'static str, String, Vec<u8>)> = seeds
        .iter()
        .filter(|s| s.target == "metadata" || s.target == "native_handle")
        .filter_map(|s| {
            let plain = uncompressed(&s.bytes)?;
            Some((s.target, s.name.replace(".meta", "-plain.meta"), plain))
        })
        .collect();
    for (target, name, bytes) in compressed {
        seeds.push(seed(target, &name, bytes));
    }
    // The pinned encodings of every format version: version 1 metadata (read
    // by its frozen decoder) and version 2 files.
    for (target, file) in [
        ("metadata", "v1/metadata-checkpoint.bin"),
        ("metadata", "v1/metadata-savepoint.bin"),
        ("metadata", "v2/metadata-checkpoint.bin"),
        ("keyed_file", "v2/keyed.bin"),
        ("delta_file", "v2/keyed-delta.bin"),
        ("operator_file", "v2/operator.bin"),
    ] {
        let path = testdata.join("formats").join(file);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("golden file {}: {e}", path.display()));
        seeds.push(seed(
            target,
            &format!("golden-{}", file.replace('/', "-")),
            bytes,
        ));
    }
    // Payloads of the data frames of the keyed and delta seeds; the mode
    // byte says whether records carry an op byte.
    for (name, h, mode) in [("full", &keyed, 0u8), ("delta", &delta, 1)] {
        let reader = KeyedSnapshotReader::open(h).expect("seed file opens");
        for kg in h.range.iter() {
            for (i, (_, payload)) in reader
                .key_group_frames(kg)
                .expect("seed frames decode")
                .into_iter()
                .enumerate()
            {
                let mut bytes = vec![mode];
                bytes.extend_from_slice(&payload);
                seeds.push(seed("records", &format!("{name}-kg{kg}-{i}.bin"), bytes));
            }
        }
    }
    seeds.extend(byte_reader_seeds());
    seeds
}

/// Checks that the seeds reach what they are meant to: delete records in the
/// delta seeds, every handle kind in the metadata seeds.
pub fn check_coverage(seeds: &[Seed]) {
    let of = |target: &'static str| seeds.iter().filter(move |s| s.target == target);
    let mut deletes = 0;
    for s in of("delta_file") {
        let h = describe_keyed_file(in_memory(&s.name, &s.bytes), 1).expect("delta seed opens");
        let reader = KeyedSnapshotReader::open(&h).expect("delta seed opens");
        assert!(reader.meta().delta, "{} is a delta file", s.name);
        for kg in h.range.iter() {
            reader
                .for_each_record(kg, |r| {
                    deletes += usize::from(r.body == RecordBody::Delete);
                    Ok(())
                })
                .expect("delta seed records parse");
        }
    }
    assert!(deletes > 0, "the delta seeds hold delete records");

    let mut kinds = BTreeMap::new();
    for s in of("metadata").chain(of("native_handle")) {
        let m = state_api::snapshot::metadata::decode_metadata(&s.name, &s.bytes)
            .expect("metadata seed decodes");
        for sub in m.operators.iter().flat_map(|o| &o.subtasks) {
            for h in sub.keyed.iter().chain(&sub.raw_keyed) {
                let kind = match h {
                    KeyedStateHandle::KeyGroups(_) => "KeyGroups",
                    KeyedStateHandle::IncrementalHeap(_) => "IncrementalHeap",
                    KeyedStateHandle::IncrementalNative(_) => "IncrementalNative",
                };
                *kinds.entry(kind).or_insert(0) += 1;
                for stream in h.streams() {
                    let kind = match stream {
                        StreamStateHandle::InMemory { .. } => "InMemory stream",
                        _ => "File stream",
                    };
                    *kinds.entry(kind).or_insert(0) += 1;
                }
            }
        }
    }
    for kind in [
        "KeyGroups",
        "IncrementalHeap",
        "IncrementalNative",
        "InMemory stream",
        "File stream",
    ] {
        assert!(
            kinds.contains_key(kind),
            "no metadata seed holds a {kind} handle"
        );
    }
}
