//! Keyed snapshot files (full and delta) and the records of their frames.

use std::sync::Arc;

use state_api::codec::CodecSchema;
use state_api::format::frame::Compression;
use state_api::format::keyed::{
    describe_keyed_file, parse_records, KeyedSnapshotMeta, KeyedSnapshotReader,
    KeyedSnapshotWriter, Record, RecordBody,
};
use state_api::key_group::KeyGroupRange;
use state_api::snapshot::handle::KeyGroupsStateHandle;
use state_api::snapshot::stream::{
    CheckpointStreamFactory, MemoryCheckpointStreamFactory, StreamBytes, StreamScope,
    StreamStateHandle,
};
use state_api::state::{StateKind, StateMeta};

/// A record with its bytes copied, to compare records of two files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    /// Index into the file's states.
    pub state: u32,
    /// Encoded key.
    pub key: Vec<u8>,
    /// Encoded namespace.
    pub namespace: Vec<u8>,
    /// The body.
    pub body: OwnedBody,
}

/// [`RecordBody`] with its bytes copied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedBody {
    /// A cell's value.
    Cell(Vec<u8>),
    /// A list's elements.
    List(Vec<Vec<u8>>),
    /// A removal (delta files only).
    Delete,
    /// One map entry: user key, user value.
    MapEntry(Vec<u8>, Vec<u8>),
}

impl OwnedRecord {
    /// Copies `r`.
    pub fn of(r: &Record<'_>) -> Self {
        OwnedRecord {
            state: r.state,
            key: r.key.to_vec(),
            namespace: r.namespace.to_vec(),
            body: match &r.body {
                RecordBody::Cell(v) => OwnedBody::Cell(v.to_vec()),
                RecordBody::List(e) => OwnedBody::List(e.iter().map(|e| e.to_vec()).collect()),
                RecordBody::Delete => OwnedBody::Delete,
                RecordBody::MapEntry { key, value } => {
                    OwnedBody::MapEntry(key.to_vec(), value.to_vec())
                }
            },
        }
    }

    /// Borrows it back as a [`Record`], to write it.
    pub fn as_record(&self) -> Record<'_> {
        Record {
            state: self.state,
            key: &self.key,
            namespace: &self.namespace,
            body: match &self.body {
                OwnedBody::Cell(v) => RecordBody::Cell(v),
                OwnedBody::List(e) => RecordBody::List(e.iter().map(Vec::as_slice).collect()),
                OwnedBody::Delete => RecordBody::Delete,
                OwnedBody::MapEntry(key, value) => RecordBody::MapEntry { key, value },
            },
        }
    }
}

/// Stream bytes named `name` holding a copy of `data`.
pub fn in_memory(name: &str, data: &[u8]) -> StreamStateHandle {
    StreamStateHandle::InMemory {
        name: name.into(),
        data: Arc::from(data),
    }
}

fn writer(meta: KeyedSnapshotMeta) -> KeyedSnapshotWriter {
    let out = MemoryCheckpointStreamFactory::new(usize::MAX, "rewritten")
        .create_stream(StreamScope::Exclusive)
        .expect("in-memory streams open");
    KeyedSnapshotWriter::new(out, meta, Compression::None, 1).expect("a writer starts in memory")
}

/// Every record of `key_group`, read through `handle`.
fn records_of(reader: &KeyedSnapshotReader, key_group: u32) -> Vec<OwnedRecord> {
    let mut out = Vec::new();
    reader
        .for_each_record(key_group, |r| {
            out.push(OwnedRecord::of(&r));
            Ok(())
        })
        .expect("a rewritten key group reads back");
    out
}

/// A keyed file, full or delta, through the whole reader: the envelope, meta
/// and index (`from_bytes`), the handle the file describes and every narrowed
/// handle a rescale would give a subtask (`open`), then every record of
/// every key group. A file that reads completely is written again with the
/// writer and must read back to the same meta and records.
pub fn keyed_file(data: &[u8]) {
    let Ok(reader) = KeyedSnapshotReader::from_bytes(StreamBytes::new("fuzz", Arc::from(data)))
    else {
        return;
    };
    let meta = reader.meta().clone();
    let handle = describe_keyed_file(in_memory("fuzz", data), 1)
        .expect("a file that opens describes itself");
    assert_eq!(handle.range, meta.range);
    KeyedSnapshotReader::open(&handle).expect("a file opens through its own handle");
    check_narrowed_handles(&handle);

    let mut rewrite = writer(meta.clone());
    let mut original = Vec::new();
    for kg in meta.range.iter() {
        rewrite
            .start_key_group(kg)
            .expect("key groups are written in order");
        let mut records = Vec::new();
        let mut refused = None;
        let read = reader.for_each_record(kg, |r| {
            if let Err(e) = rewrite.write_record(r.state, &r) {
                refused.get_or_insert(e);
            }
            records.push(OwnedRecord::of(&r));
            Ok(())
        });
        if read.is_err() {
            // A damaged key group: an error is the right answer.
            return;
        }
        if let Some(e) = refused {
            panic!("the writer refuses a record the reader accepted: {e}");
        }
        if !meta.delta {
            assert!(
                records.iter().all(|r| r.body != OwnedBody::Delete),
                "a full file yields no delete"
            );
        }
        original.push((kg, records));
    }
    let rewritten = rewrite.finish().expect("a rewritten file finishes");
    let again = KeyedSnapshotReader::open(&rewritten).expect("a rewritten file opens");
    assert_eq!(again.meta(), &meta, "meta changed in a round trip");
    for (kg, records) in original {
        assert_eq!(
            records_of(&again, kg),
            records,
            "records of key group {kg} changed in a round trip"
        );
    }
}

/// Opens every part of `handle` that a subtask of parallelism 1 to 3 would
/// restore from: each must open, since the whole file did.
fn check_narrowed_handles(handle: &KeyGroupsStateHandle) {
    for p in 1..=3u32.min(handle.max_parallelism) {
        for i in 0..p {
            let range = KeyGroupRange::for_operator(handle.max_parallelism, p, i)
                .expect("parallelism within max parallelism");
            if let Some(part) = handle.intersection(&range) {
                assert_eq!(part.offsets.len(), part.range.len() + 1);
                KeyedSnapshotReader::open(&part)
                    .expect("a narrowed handle of a readable file opens");
            }
        }
    }
}

/// States of every kind, for [`records`]: index `i` is the `i`-th kind.
pub fn record_meta(delta: bool) -> KeyedSnapshotMeta {
    let schema = |name: &str| CodecSchema::new(name, 1);
    let state = |name: &str, kind: StateKind| StateMeta {
        name: name.into(),
        kind,
        namespace: schema("ns"),
        values: match kind {
            StateKind::Map => vec![schema("uk"), schema("uv")],
            _ => vec![schema("v")],
        },
        ttl: None,
    };
    KeyedSnapshotMeta {
        max_parallelism: 128,
        range: KeyGroupRange::new(7, 7),
        key_codec: schema("key"),
        states: vec![
            state("value", StateKind::Value),
            state("list", StateKind::List),
            state("reducing", StateKind::Reducing),
            state("aggregating", StateKind::Aggregating),
            state("map", StateKind::Map),
        ],
        delta,
    }
}

/// The records of one frame payload, without the frame's checksum in the
/// way: byte 0 bit 0 chooses a delta file (records carry an op byte), the
/// rest is parsed against [`record_meta`]. Records that parse are written
/// into a file and must read back the same.
pub fn records(data: &[u8]) {
    let Some((&mode, payload)) = data.split_first() else {
        return;
    };
    let meta = record_meta(mode & 1 == 1);
    let mut records = Vec::new();
    let parsed = parse_records("fuzz", 13, payload, &meta, |r| {
        records.push(OwnedRecord::of(&r));
        Ok(())
    });
    if parsed.is_err() {
        return;
    }
    if !meta.delta {
        assert!(records.iter().all(|r| r.body != OwnedBody::Delete));
    }
    let kg = meta.range.start();
    let mut w = writer(meta.clone());
    w.start_key_group(kg).expect("the only key group");
    for r in &records {
        w.write_record(r.state, &r.as_record())
            .expect("the writer takes every record the parser accepts");
    }
    let handle = w.finish().expect("a rewritten file finishes");
    let again = KeyedSnapshotReader::open(&handle).expect("a rewritten file opens");
    assert_eq!(
        records_of(&again, kg),
        records,
        "records changed in a round trip"
    );
}
