//! Schema evolution through savepoints between backends: state written by
//! the heap backend with release 1's types restores on RocksDB with release
//! 2's (RocksDB migrates eagerly, in one batch, when the state is
//! registered), and RocksDB's savepoint of it restores on the heap backend
//! as is.

use backend_memory::MemoryStateBackend;
use backend_rocksdb::RocksDbStateBackend;
use conformance_tests::cases::evolution::{read_v2, write_v1};
use conformance_tests::cases::ttl::savepoint;
use state_api::{Error, Result};

#[test]
fn heap_savepoint_migrates_on_rocksdb_and_back() -> Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
    let rocks = RocksDbStateBackend::new(&dir.path().join("work"), &dir.path().join("cp"), "job")?;
    let heap = MemoryStateBackend::new();
    let old = write_v1(&heap, 50)?;
    let mut migrated = read_v2(&rocks, old, 50)?;
    let new = savepoint(&rocks, &mut migrated, 2)?;
    read_v2(&heap, new, 50)?;
    // And the other way: RocksDB writes release 1, the heap migrates.
    let old = write_v1(&rocks, 50)?;
    read_v2(&heap, old, 50)?;
    Ok(())
}
