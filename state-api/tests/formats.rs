//! Pinned encodings: a fixed `_metadata` holding every handle variant, encoded
//! by the current version and compared byte for byte with the file committed
//! under `testdata/formats/v<N>/`; and the files of every earlier version,
//! which must still decode to the same value.
//!
//! When a test here fails because an encoding changed, either the change was
//! a mistake, or it is a new format version: bump the version constant, keep
//! reading the old one, and write the new folder's files with
//! `FLOWSTATE_BLESS=1 cargo test -p state-api --test formats`. Files of a
//! released version are never rewritten.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use state_api::checkpoint::metadata::{
    decode_metadata, encode_metadata, CheckpointMetadata, OperatorState, SnapshotKind,
    SubtaskState, METADATA_FORMAT_VERSION,
};
use state_api::codec::CodecSchema;
use state_api::format::frame::Compression;
use state_api::snapshot::handle::{
    Distribution, IncrementalKeyedStateHandle, IncrementalNativeStateHandle, KeyGroupsStateHandle,
    KeyedStateHandle, NativeFile, OperatorStateHandle, OperatorStatePart,
};
use state_api::snapshot::stream::StreamStateHandle;
use state_api::state::{StateKind, StateMeta};
use state_api::{Error, KeyGroupRange, Result};

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
