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
    decode_metadata, CheckpointMetadata, OperatorState, SnapshotKind, SubtaskState,
    METADATA_FORMAT_VERSION,
};
use state_api::codec::CodecSchema;
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

/// The bytes of `_metadata` holding `metadata`, as this build writes them.
fn encode(metadata: &CheckpointMetadata) -> Result<Vec<u8>> {
    use state_api::checkpoint::metadata::publish_metadata;
    use state_api::checkpoint::storage::LocalStorage;
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let path = publish_metadata(&LocalStorage, dir.path(), dir.path(), metadata)?;
    std::fs::read(&path).map_err(io("reading", &path))
}

#[test]
fn current_metadata_encoding_is_pinned() -> Result<()> {
    let dir = testdata().join(format!("v{METADATA_FORMAT_VERSION}"));
    for (name, kind) in FIXTURES {
        let path = dir.join(name);
        let bytes = encode(&fixed_metadata(kind))?;
        if bless() {
            std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
            std::fs::write(&path, &bytes).map_err(io("writing", &path))?;
        }
        let pinned = std::fs::read(&path).map_err(io("reading", &path))?;
        assert_eq!(decode_metadata(name, &pinned)?, fixed_metadata(kind));
    }
    Ok(())
}
