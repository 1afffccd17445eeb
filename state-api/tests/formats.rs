//! Pinned encodings: a fixed `_metadata` holding every handle variant, and
//! fixed keyed (full and delta) and operator snapshot files, encoded by the
//! current version and compared byte for byte with the files committed under
//! `testdata/formats/v<N>/`; the files of every earlier version, which must
//! still decode to the same values; and every single-bit flip of them, which
//! must be a corruption.
//!
//! When a test here fails because an encoding changed, either the change was
//! a mistake, or it is a new format version: bump the version constant, keep
//! reading the old one, and write the new folder's files with
//! `FLOWSTATE_BLESS=1 cargo test -p state-api --test formats`. Files of a
//! released version are never rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::codec::CodecSchema;
use state_api::format::bytes::put_bytes;
use state_api::format::frame::Compression;
use state_api::format::keyed::{
    describe_keyed_file, KeyedSnapshotMeta, KeyedSnapshotReader, KeyedSnapshotWriter, RecordBody,
    KEYED_FORMAT_VERSION,
};
use state_api::format::operator::{
    describe_operator_file, read_operator_snapshot, write_operator_snapshot, OperatorStateData,
    OperatorStateMeta, OPERATOR_FORMAT_VERSION,
};
use state_api::snapshot::handle::{
    Distribution, IncrementalKeyedStateHandle, IncrementalNativeStateHandle, KeyGroupsStateHandle,
    KeyedStateHandle, NativeFile, OperatorStateHandle, OperatorStatePart,
};
use state_api::snapshot::metadata::{
    decode_metadata, encode_metadata, CheckpointMetadata, OperatorState, SnapshotKind,
    SubtaskState, METADATA_FORMAT_VERSION,
};
use state_api::snapshot::stream::{
    CheckpointStreamFactory, MemoryCheckpointStreamFactory, StreamScope, StreamStateHandle,
};
use state_api::state::{StateKind, StateMeta};
use state_api::{Error, ErrorKind, KeyGroupRange, Result};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/formats")
}

fn file(path: &str, size: u64) -> StreamStateHandle {
    StreamStateHandle::File {
        path: PathBuf::from(path),
        size,
    }
}

fn inline(name: &str, data: &[u8]) -> StreamStateHandle {
    StreamStateHandle::InMemory {
        name: name.into(),
        data: Arc::from(data),
    }
}

fn key_groups(
    checkpoint_id: u64,
    data: StreamStateHandle,
    range: KeyGroupRange,
    offsets: Vec<u64>,
) -> KeyGroupsStateHandle {
    KeyGroupsStateHandle {
        checkpoint_id,
        data,
        max_parallelism: 8,
        range,
        offsets,
    }
}

fn state(name: &str, kind: StateKind, values: &[(&str, u32)]) -> StateMeta {
    StateMeta {
        name: name.into(),
        kind,
        namespace: CodecSchema::new("postcard:VoidNamespace", 1),
        values: values
            .iter()
            .map(|(n, v)| CodecSchema::new(*n, *v))
            .collect(),
        ttl: None,
    }
}

fn operator_handle(checkpoint_id: u64, data: StreamStateHandle) -> OperatorStateHandle {
    let part = |distribution, offsets: &[u64]| OperatorStatePart {
        distribution,
        offsets: offsets.to_vec(),
    };
    OperatorStateHandle {
        checkpoint_id,
        data,
        states: BTreeMap::from([
            (
                "offsets".to_string(),
                part(Distribution::SplitDistribute, &[12, 30, 48]),
            ),
            ("rules".to_string(), part(Distribution::Broadcast, &[66])),
            ("seen".to_string(), part(Distribution::Union, &[])),
        ]),
    }
}

/// A metadata value holding every handle variant, every stream variant,
/// every state kind and distribution, an empty key-group range, empty
/// subtasks and non-ASCII text.
pub fn fixed_metadata(kind: SnapshotKind) -> CheckpointMetadata {
    let full = KeyedStateHandle::KeyGroups(key_groups(
        3,
        file("chk-3/00000000000000a1", 1234),
        KeyGroupRange::new(0, 3),
        vec![20, 20, 120, 700, 1200],
    ));
    let chain = KeyedStateHandle::IncrementalHeap(IncrementalKeyedStateHandle {
        checkpoint_id: 3,
        range: KeyGroupRange::new(4, 7),
        base: key_groups(
            1,
            file("shared/00000000000000b2", 4096),
            KeyGroupRange::new(4, 7),
            vec![20, 900, 1800, 2700, 4000],
        ),
        deltas: vec![
            key_groups(
                2,
                inline("checkpoint 2 (inline)", b"SKEY delta bytes"),
                KeyGroupRange::new(4, 7),
                vec![20, 20, 21, 22, 23],
            ),
            key_groups(
                3,
                file("shared/00000000000000c3", 512),
                KeyGroupRange::new(5, 6),
                vec![40, 300, 480],
            ),
        ],
    });
    let native = KeyedStateHandle::IncrementalNative(IncrementalNativeStateHandle {
        checkpoint_id: 3,
        backend: "rocksdb".into(),
        format_version: 1,
        max_parallelism: 8,
        range: KeyGroupRange::new(0, 1),
        source_range: KeyGroupRange::new(0, 3),
        key_codec: CodecSchema::new("postcard:u64", 2),
        states: vec![
            state("value", StateKind::Value, &[("postcard:i64", 1)]),
            state("list", StateKind::List, &[("postcard:String", 1)]),
            state("sum", StateKind::Reducing, &[("postcard:u64", 1)]),
            state("avg", StateKind::Aggregating, &[("postcard:(u64,u64)", 3)]),
            state(
                "windows",
                StateKind::Map,
                &[("postcard:u32", 1), ("postcard:String", 1)],
            ),
        ],
        shared: vec![NativeFile {
            name: "000012.sst".into(),
            data: file("shared/00000000000000d4", 65536),
            crc32: 0xdead_beef,
        }],
        private: vec![
            NativeFile {
                name: "MANIFEST-000005".into(),
                data: inline("checkpoint 3 (inline)", &[0, 1, 2, 0xff]),
                crc32: 7,
            },
            NativeFile {
                name: "CURRENT".into(),
                data: inline("checkpoint 3 (inline)", b"MANIFEST-000005\n"),
                crc32: 0,
            },
        ],
    });
    let raw_keyed = KeyedStateHandle::KeyGroups(key_groups(
        3,
        inline("raw keyed", &[9; 24]),
        KeyGroupRange::EMPTY,
        vec![20],
    ));
    CheckpointMetadata {
        checkpoint_id: 3,
        kind,
        timestamp_millis: 1_700_000_000_123,
        operators: vec![
            OperatorState {
                operator_id: "source→map ✓".into(),
                parallelism: 2,
                max_parallelism: 8,
                subtasks: vec![
                    SubtaskState {
                        keyed: vec![full, chain],
                        operator: vec![operator_handle(3, inline("op (inline)", b"SOPR"))],
                        raw_keyed: vec![raw_keyed],
                        raw_operator: vec![operator_handle(3, file("chk-3/00000000000000e5", 99))],
                    },
                    SubtaskState {
                        keyed: vec![native],
                        ..Default::default()
                    },
                ],
            },
            OperatorState {
                operator_id: "sink".into(),
                parallelism: 1,
                max_parallelism: 32768,
                subtasks: vec![SubtaskState::default()],
            },
            OperatorState {
                operator_id: String::new(),
                parallelism: 0,
                max_parallelism: 1,
                subtasks: Vec::new(),
            },
        ],
    }
}

const FIXTURES: [(&str, SnapshotKind); 2] = [
    ("metadata-checkpoint.bin", SnapshotKind::Checkpoint),
    ("metadata-savepoint.bin", SnapshotKind::Savepoint),
];

fn bless() -> bool {
    std::env::var_os("FLOWSTATE_BLESS").is_some()
}

fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let context = format!("{what} {}", path.display());
    move |e| Error::io(context, e)
}

/// Every `v<N>` folder under `testdata/formats`, oldest first.
fn version_dirs() -> Result<Vec<(u16, PathBuf)>> {
    let root = testdata();
    let mut dirs = Vec::new();
    for entry in std::fs::read_dir(&root).map_err(io("listing", &root))? {
        let entry = entry.map_err(io("listing", &root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(v) = name.strip_prefix('v').and_then(|v| v.parse::<u16>().ok()) {
            dirs.push((v, entry.path()));
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// Compares `bytes`, the current encoding of `what`, with the committed file
/// `path`; with `FLOWSTATE_BLESS=1`, writes the file first.
fn check_pinned(path: &Path, bytes: &[u8], what: &str) -> Result<()> {
    if bless() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        std::fs::write(path, bytes).map_err(io("writing", path))?;
    }
    let pinned = std::fs::read(path).map_err(io(
        "reading (write it with FLOWSTATE_BLESS=1 for a new format version)",
        path,
    ))?;
    if pinned != bytes {
        let at = pinned
            .iter()
            .zip(bytes)
            .position(|(a, b)| a != b)
            .unwrap_or(pinned.len().min(bytes.len()));
        panic!(
            "the encoding of {what} changed without a format version bump (first difference at \
             byte {at}; {} bytes pinned in {}, {} bytes now). If the change is deliberate, bump \
             the format version, keep reading the old one, and bless the new version's folder \
             with FLOWSTATE_BLESS=1; never rewrite a released version's files.",
            pinned.len(),
            path.display(),
            bytes.len()
        );
    }
    Ok(())
}

#[test]
fn current_metadata_encoding_is_pinned() -> Result<()> {
    let dir = testdata().join(format!("v{METADATA_FORMAT_VERSION}"));
    for (name, kind) in FIXTURES {
        let metadata = fixed_metadata(kind);
        let bytes = encode_metadata(&metadata, Compression::None)?;
        check_pinned(&dir.join(name), &bytes, &format!("_metadata ({kind:?})"))?;
        assert_eq!(decode_metadata(name, &bytes)?, metadata);
        // Compression changes the frame, never the value.
        let zstd = encode_metadata(&metadata, Compression::Zstd { level: 3 })?;
        assert!(zstd.len() < bytes.len(), "the fixture compresses");
        assert_eq!(decode_metadata(name, &zstd)?, metadata);
    }
    Ok(())
}

/// Files of every version, the current one included, decode to the fixed value.
#[test]
fn metadata_of_every_version_still_decodes() -> Result<()> {
    let dirs = version_dirs()?;
    assert!(
        dirs.iter().any(|(v, _)| *v == 1),
        "the version 1 files are committed"
    );
    for (version, dir) in dirs {
        for (name, kind) in FIXTURES {
            let path = dir.join(name);
            if version >= 2 || path.exists() {
                let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
                assert_eq!(
                    u16::from_le_bytes([bytes[4], bytes[5]]),
                    version,
                    "{} holds version {version}",
                    path.display()
                );
                let decoded = decode_metadata(&path.display().to_string(), &bytes)?;
                assert_eq!(decoded, fixed_metadata(kind), "{}", path.display());
            }
        }
    }
    Ok(())
}

/// Every single-bit flip of `bytes` makes `decode` fail with a corruption.
fn every_flip_is_a_corruption<T>(bytes: &[u8], what: &str, decode: impl Fn(&[u8]) -> Result<T>) {
    for bit in 0..bytes.len() * 8 {
        let mut bad = bytes.to_vec();
        bad[bit / 8] ^= 1 << (bit % 8);
        match decode(&bad) {
            Ok(_) => panic!("{what}: the flip of bit {bit} went unnoticed"),
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::Corruption,
                "{what}: bit {bit} (byte {}): {e}",
                bit / 8
            ),
        }
    }
}

#[test]
fn every_bit_flip_of_a_metadata_file_is_a_corruption() -> Result<()> {
    let metadata = fixed_metadata(SnapshotKind::Checkpoint);
    for compression in [Compression::None, Compression::Zstd { level: 3 }] {
        let bytes = encode_metadata(&metadata, compression)?;
        every_flip_is_a_corruption(&bytes, &format!("_metadata ({compression:?})"), |b| {
            decode_metadata("_metadata", b)
        });
    }
    // Version 1 files have no header CRC, yet a flipped version bit still
    // reads as a corruption: any version but 1 must carry a header CRC, and
    // the bytes where it would be are the start of the metadata frame.
    let v1 = testdata().join("v1").join(FIXTURES[0].0);
    let bytes = std::fs::read(&v1).map_err(io("reading", &v1))?;
    every_flip_is_a_corruption(&bytes, "version 1 _metadata", |b| {
        decode_metadata("_metadata", b)
    });
    Ok(())
}

/// A header whose version this build does not read is an incompatible
/// format only if the header is intact.
#[test]
fn an_intact_header_of_a_newer_version_is_incompatible() -> Result<()> {
    let mut bytes = encode_metadata(&fixed_metadata(SnapshotKind::Savepoint), Compression::None)?;
    bytes[4] = 4;
    let crc = crc32fast::hash(&bytes[..8]);
    bytes[8..12].copy_from_slice(&crc.to_le_bytes());
    let err = decode_metadata("_metadata", &bytes).expect_err("version 4");
    assert_eq!(err.kind(), ErrorKind::IncompatibleFormat, "{err}");
    assert!(err.to_string().contains("version 4"), "{err}");
    Ok(())
}

fn schema(name: &str) -> CodecSchema {
    CodecSchema::new(name, 1)
}

fn keyed_meta(delta: bool) -> KeyedSnapshotMeta {
    KeyedSnapshotMeta {
        max_parallelism: 8,
        range: KeyGroupRange::new(2, 5),
        key_codec: schema("postcard:String"),
        states: vec![
            state("value", StateKind::Value, &[("postcard:i64", 1)]),
            state("list", StateKind::List, &[("postcard:String", 1)]),
            state("sum", StateKind::Reducing, &[("postcard:u64", 1)]),
            state("avg", StateKind::Aggregating, &[("postcard:(u64,u64)", 2)]),
            state(
                "windows",
                StateKind::Map,
                &[("postcard:u32", 1), ("postcard:String", 1)],
            ),
        ],
        delta,
    }
}

/// A record as the fixture writes and a reader returns it: key group, state
/// index, key, namespace, body (`None` for a delete, one element for a
/// cell, two for a map entry, any number for a list, tagged).
type OwnedRecord = (u32, u32, Vec<u8>, Vec<u8>, &'static str, Vec<Vec<u8>>);

fn keyed_records(delta: bool) -> Vec<OwnedRecord> {
    let b = |s: &str| s.as_bytes().to_vec();
    let mut records = vec![
        (2, 0, b("a"), b(""), "cell", vec![vec![0x0e]]),
        (2, 1, b("a"), b("n1"), "list", vec![b("x"), b("yy")]),
        (2, 4, b("b"), b(""), "map", vec![b("k"), b("v")]),
        (4, 2, b("c"), b(""), "cell", vec![vec![1, 2, 3]]),
        (4, 3, b("c"), b(""), "cell", vec![vec![]]),
        (5, 4, b("d"), b("w"), "map", vec![b("k1"), vec![0; 40]]),
        (5, 4, b("d"), b("w"), "map", vec![b("k2"), b("")]),
    ];
    if delta {
        records.insert(0, (2, 0, b("z"), b(""), "delete", Vec::new()));
        records.insert(6, (5, 4, b("d"), b("w"), "delete", Vec::new()));
    }
    records
}

fn write_keyed(delta: bool) -> Result<Vec<u8>> {
    let streams = MemoryCheckpointStreamFactory::new(1 << 20, "keyed fixture");
    let out = streams.create_stream(StreamScope::Exclusive)?;
    let mut w = KeyedSnapshotWriter::new(out, keyed_meta(delta), Compression::None, 3)?;
    let mut current = None;
    for (kg, state, key, ns, kind, body) in keyed_records(delta) {
        if current != Some(kg) {
            w.start_key_group(kg)?;
            current = Some(kg);
        }
        match kind {
            "delete" => w.write_delete(state, &key, &ns)?,
            "cell" => w.write_cell(state, &key, &ns, &body[0])?,
            "map" => w.write_map_entry(state, &key, &ns, &body[0], &body[1])?,
            _ => {
                let mut elements = Vec::new();
                for e in &body {
                    put_bytes(&mut elements, e);
                }
                w.write_list(state, &key, &ns, body.len(), &elements)?;
            }
        }
    }
    let handle = w.finish()?;
    Ok(handle.data.read()?.bytes().to_vec())
}

fn read_keyed(name: &str, bytes: &[u8]) -> Result<(KeyedSnapshotMeta, Vec<OwnedRecord>)> {
    let handle = describe_keyed_file(inline(name, bytes), 3)?;
    let reader = KeyedSnapshotReader::open(&handle)?;
    let mut records = Vec::new();
    for kg in handle.range.iter() {
        reader.for_each_record(kg, |r| {
            let (kind, body) = match r.body {
                RecordBody::Delete => ("delete", Vec::new()),
                RecordBody::Cell(v) => ("cell", vec![v.to_vec()]),
                RecordBody::MapEntry { key, value } => ("map", vec![key.to_vec(), value.to_vec()]),
                RecordBody::List(l) => ("list", l.iter().map(|e| e.to_vec()).collect()),
            };
            records.push((
                kg,
                r.state,
                r.key.to_vec(),
                r.namespace.to_vec(),
                kind,
                body,
            ));
            Ok(())
        })?;
    }
    Ok((reader.meta().clone(), records))
}

fn operator_states() -> Vec<OperatorStateData> {
    let meta = |name: &str, distribution, schemas: &[&str]| OperatorStateMeta {
        name: name.into(),
        distribution,
        schemas: schemas.iter().map(|s| schema(s)).collect(),
    };
    let mut entry = Vec::new();
    put_bytes(&mut entry, b"rule1");
    put_bytes(&mut entry, &[1]);
    vec![
        OperatorStateData {
            meta: meta(
                "offsets",
                Distribution::SplitDistribute,
                &["postcard:(u32,u64)"],
            ),
            elements: vec![vec![0, 10], vec![1, 20], vec![2, 30]],
        },
        OperatorStateData {
            meta: meta("seen", Distribution::Union, &["postcard:String"]),
            elements: vec![b"x".to_vec(), Vec::new()],
        },
        OperatorStateData {
            meta: meta(
                "rules",
                Distribution::Broadcast,
                &["postcard:String", "postcard:u32"],
            ),
            elements: vec![entry],
        },
    ]
}

fn write_operator() -> Result<Vec<u8>> {
    let streams = MemoryCheckpointStreamFactory::new(1 << 20, "operator fixture");
    let out = streams.create_stream(StreamScope::Exclusive)?;
    let handle =
        write_operator_snapshot(out, &operator_states(), Compression::None, 3, &|| Ok(()))?;
    Ok(handle.data.read()?.bytes().to_vec())
}

fn read_operator(name: &str, bytes: &[u8]) -> Result<Vec<(OperatorStateMeta, Vec<Vec<u8>>)>> {
    let handle = describe_operator_file(inline(name, bytes), 3)?;
    let mut states: Vec<_> = read_operator_snapshot(&handle)?
        .into_iter()
        .map(|d| (d.meta, d.elements))
        .collect();
    states.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(states)
}

fn expected_operator() -> Vec<(OperatorStateMeta, Vec<Vec<u8>>)> {
    let mut states: Vec<_> = operator_states()
        .into_iter()
        .map(|d| (d.meta, d.elements))
        .collect();
    states.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    states
}

const KEYED_FIXTURES: [(&str, bool); 2] = [("keyed.bin", false), ("keyed-delta.bin", true)];

#[test]
fn current_snapshot_file_encodings_are_pinned() -> Result<()> {
    let dir = testdata().join(format!("v{KEYED_FORMAT_VERSION}"));
    for (name, delta) in KEYED_FIXTURES {
        let bytes = write_keyed(delta)?;
        check_pinned(&dir.join(name), &bytes, &format!("a keyed file ({name})"))?;
    }
    let dir = testdata().join(format!("v{OPERATOR_FORMAT_VERSION}"));
    check_pinned(
        &dir.join("operator.bin"),
        &write_operator()?,
        "an operator file",
    )?;
    Ok(())
}

/// Version 3 added a state's time-to-live to its meta: a keyed file with a
/// state of each TTL setting is pinned, and reads back every setting.
#[test]
fn ttl_state_metas_are_pinned() -> Result<()> {
    use state_api::state::ttl::{TtlMeta, TtlTimeDomain, TtlUpdateType, TtlVisibility};
    let mut meta = keyed_meta(false);
    meta.states[0].ttl = Some(TtlMeta {
        ttl_millis: 60_000,
        update_type: TtlUpdateType::OnCreateAndWrite,
        visibility: TtlVisibility::NeverReturnExpired,
        time_domain: TtlTimeDomain::ProcessingTime,
    });
    meta.states[1].ttl = Some(TtlMeta {
        ttl_millis: i64::MAX as u64,
        update_type: TtlUpdateType::OnReadAndWrite,
        visibility: TtlVisibility::ReturnExpiredIfNotCleanedUp,
        time_domain: TtlTimeDomain::EventTime,
    });
    let streams = MemoryCheckpointStreamFactory::new(1 << 20, "ttl fixture");
    let mut w = KeyedSnapshotWriter::new(
        streams.create_stream(StreamScope::Exclusive)?,
        meta.clone(),
        Compression::None,
        7,
    )?;
    w.start_key_group(2)?;
    let mut value = 1_000i64.to_le_bytes().to_vec();
    value.push(42);
    w.write_cell(0, b"k", b"", &value)?;
    let handle = w.finish()?;
    let bytes = handle.data.read()?.bytes().to_vec();
    let dir = testdata().join("v3");
    check_pinned(
        &dir.join("keyed-ttl.bin"),
        &bytes,
        "a keyed file with TTL states",
    )?;
    let (read, records) = read_keyed("keyed-ttl.bin", &bytes)?;
    assert_eq!(read, meta);
    assert_eq!(records.len(), 1);
    Ok(())
}

/// The keyed and operator files of every version folder that has them read
/// back exactly the fixture's records, and every flipped bit of them is a
/// corruption.
#[test]
fn snapshot_files_of_every_version_still_read() -> Result<()> {
    let mut seen = 0;
    for (_, dir) in version_dirs()? {
        for (name, delta) in KEYED_FIXTURES {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
            let (meta, records) = read_keyed(name, &bytes)?;
            assert_eq!(meta, keyed_meta(delta), "{}", path.display());
            assert_eq!(records, keyed_records(delta), "{}", path.display());
            every_flip_is_a_corruption(&bytes, name, |b| read_keyed(name, b));
            seen += 1;
        }
        let path = dir.join("operator.bin");
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(io("reading", &path))?;
            assert_eq!(read_operator("operator.bin", &bytes)?, expected_operator());
            every_flip_is_a_corruption(&bytes, "operator.bin", |b| {
                read_operator("operator.bin", b)
            });
            seen += 1;
        }
    }
    assert!(seen >= 3, "the current version's files are committed");
    Ok(())
}
