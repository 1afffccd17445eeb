//! `_metadata` files and the snapshot handles decoded from them.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use checkpoint_store::metadata::{decode_metadata, publish_metadata, CheckpointMetadata};
use checkpoint_store::storage::{Storage, StorageFile};
use state_api::key_group::KeyGroupRange;
use state_api::snapshot::handle::KeyedStateHandle;
use state_api::snapshot::rescale::{assign_keyed_state, assign_operator_state};

/// A `_metadata` file through `decode_metadata`, then through what a restore
/// does with it before reading any state file: file lists and sizes, rescale
/// assignment of every operator's keyed and operator handles to 1 to 3
/// subtasks, sizes and descriptions of every handle. Metadata that decodes
/// is published again and must decode to the same value.
pub fn metadata_file(data: &[u8]) {
    let Ok(metadata) = decode_metadata("fuzz", data) else {
        return;
    };
    use_like_a_restore(&metadata);
    let again =
        decode_metadata("again", &encode_metadata(&metadata)).expect("published metadata decodes");
    assert_eq!(again, metadata, "metadata changed in a round trip");
}

/// Native checkpoint handles (`IncrementalNative`), which only exist inside
/// `_metadata`: the same checks as [`metadata_file`] (seeded with metadata
/// holding native handles), plus what a native handle promises: no canonical
/// pieces, one stream per file, and intersections inside its range.
pub fn native_handle(data: &[u8]) {
    metadata_file(data);
    let Ok(metadata) = decode_metadata("fuzz", data) else {
        return;
    };
    for op in &metadata.operators {
        for h in op
            .subtasks
            .iter()
            .flat_map(|s| s.keyed.iter().chain(&s.raw_keyed))
        {
            let KeyedStateHandle::IncrementalNative(n) = h else {
                continue;
            };
            assert!(h.pieces().is_empty());
            assert!(
                h.canonical_pieces().is_err(),
                "a native handle is not canonical"
            );
            assert_eq!(h.streams().len(), n.shared.len() + n.private.len());
            for range in subtask_ranges(n.max_parallelism) {
                if let Some(KeyedStateHandle::IncrementalNative(part)) = h.intersection(&range) {
                    assert_eq!(part.range, n.range.intersection(&range));
                    assert!(!part.range.is_empty());
                    assert_eq!(part.files().count(), n.files().count());
                }
            }
        }
    }
}

/// Key-group ranges of every subtask at parallelism 1 to 3 (none for an
/// invalid max parallelism).
fn subtask_ranges(max_parallelism: u32) -> Vec<KeyGroupRange> {
    (1..=3u32)
        .flat_map(|p| (0..p).map(move |i| KeyGroupRange::for_operator(max_parallelism, p, i)))
        .filter_map(Result::ok)
        .collect()
}

fn use_keyed_handle(h: &KeyedStateHandle) {
    let _ = (h.checkpoint_id(), h.range(), h.max_parallelism());
    let _ = (h.describe(), h.total_size(), h.state_size());
    let _ = (h.pieces(), h.canonical_pieces(), h.streams());
}

fn use_like_a_restore(metadata: &CheckpointMetadata) {
    let _ = metadata.files();
    let _ = metadata.file_sizes();
    for op in &metadata.operators {
        assert!(metadata.operator(&op.operator_id).is_some());
        let keyed: Vec<KeyedStateHandle> = op
            .subtasks
            .iter()
            .flat_map(|s| s.keyed.iter().chain(&s.raw_keyed))
            .cloned()
            .collect();
        keyed.iter().for_each(use_keyed_handle);
        for p in 1..=3 {
            if let Ok(assigned) = assign_keyed_state(&keyed, op.max_parallelism, p) {
                assigned.iter().flatten().for_each(use_keyed_handle);
            }
        }
        for raw in [false, true] {
            let operator: Vec<_> = op
                .subtasks
                .iter()
                .flat_map(|s| if raw { &s.raw_operator } else { &s.operator })
                .cloned()
                .collect();
            for p in 1..=3 {
                let _ = assign_operator_state(&operator, p);
            }
        }
    }
}

/// Encodes `metadata` with the public writer, `publish_metadata`, into
/// memory. Paths must come back exactly as decoded, so the base folder is
/// one no decoded (UTF-8) path can start with: nothing is made relative.
pub fn encode_metadata(metadata: &CheckpointMetadata) -> Vec<u8> {
    let storage = MemoryStorage::default();
    let dir = Path::new("chk");
    let base = Path::new(OsStr::from_bytes(b"\xff-not-utf-8"));
    let path = publish_metadata(&storage, dir, base, metadata).expect("metadata publishes");
    storage.read(&path).expect("just published")
}

/// Just enough of a file system in memory for `publish_metadata`.
#[derive(Clone, Default)]
struct MemoryStorage {
    files: Arc<Mutex<HashMap<PathBuf, Vec<u8>>>>,
}

impl MemoryStorage {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Vec<u8>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

struct MemoryFile {
    path: PathBuf,
    storage: MemoryStorage,
}

impl StorageFile for MemoryFile {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.storage
            .files()
            .entry(self.path.clone())
            .or_default()
            .extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl Storage for MemoryStorage {
    fn create(&self, path: &Path) -> io::Result<Box<dyn StorageFile>> {
        self.files().insert(path.to_path_buf(), Vec::new());
        Ok(Box::new(MemoryFile {
            path: path.to_path_buf(),
            storage: self.clone(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.files()
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn io::Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.read(path)?)))
    }

    fn publish(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut files = self.files();
        if files.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                path.display().to_string(),
            ));
        }
        files.insert(path.to_path_buf(), bytes.to_vec());
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.files().remove(path);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.files().retain(|p, _| !p.starts_with(path));
        Ok(())
    }

    fn create_dir_all(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = self
            .files()
            .keys()
            .filter(|p| p.parent() == Some(path))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        self.files().contains_key(path)
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        self.read(path).map(|b| b.len() as u64)
    }
}
