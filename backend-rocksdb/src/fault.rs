//! Failure injection for tests, at the points where the backend writes into
//! RocksDB, restores into it or captures a checkpoint from it.
//!
//! The points are only armed with the cargo feature `fault-injection` (this
//! crate's own tests enable it); without it [`Faults`] is empty and every
//! check compiles to nothing. An injected failure is reported exactly like a
//! RocksDB `IO error` status at that point, so the backend's handling of it is
//! the handling of a real one.

use std::fmt;

#[cfg(feature = "fault-injection")]
use std::sync::{Arc, Mutex};

use state_api::{Error, Result};

/// A place where the backend calls RocksDB and a test can make the call fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailPoint {
    /// Writing the write buffer's batch into the live instance.
    BufferWrite,
    /// A list append merged straight into the live instance.
    Merge,
    /// A range delete in the live instance (clearing a map).
    DeleteRange,
    /// Creating a column family (registering a new state).
    CreateColumnFamily,
    /// Rewriting a state's values for a schema migration at registration.
    Migrate,
    /// Deleting expired entries and trimming lists (`cleanup_expired`).
    TtlCleanup,
    /// Adding, deleting or firing a timer.
    TimerWrite,
    /// The synchronous part of an incremental checkpoint: switching the live
    /// memtables out for flushing.
    CheckpointFlush,
    /// The asynchronous part of an incremental checkpoint: waiting for the
    /// flush and linking the live files into the capture folder.
    CheckpointCapture,
    /// Writing restored records (canonical handles) at restore.
    RestoreWrite,
    /// Dropping key groups outside the backend's range at restore.
    RestoreClip,
    /// Ingesting the key groups of another native handle at restore.
    RestoreIngest,
}

/// The armed failure points of the instances opened with one set of options
/// (clones share them).
#[derive(Clone, Default)]
pub struct Faults {
    /// Armed points: the point and how many passes still succeed.
    #[cfg(feature = "fault-injection")]
    armed: Arc<Mutex<Vec<(FailPoint, u64)>>>,
}

impl Faults {
    /// Arms `point`: after `skip` more successful passes, the next pass fails,
    /// once.
    #[cfg(feature = "fault-injection")]
    pub fn fail_after(&self, point: FailPoint, skip: u64) {
        self.lock().push((point, skip));
    }

    /// Whether `point` is still armed (its failure has not fired yet).
    #[cfg(feature = "fault-injection")]
    pub fn is_armed(&self, point: FailPoint) -> bool {
        self.lock().iter().any(|(p, _)| *p == point)
    }

    #[cfg(feature = "fault-injection")]
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(FailPoint, u64)>> {
        self.armed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails if `point` is armed and due; `db` and `what` name the instance
    /// and the operation, as for a RocksDB error.
    #[inline(always)]
    pub(crate) fn check(&self, point: FailPoint, db: &str, what: &str) -> Result<()> {
        #[cfg(feature = "fault-injection")]
        {
            let mut armed = self.lock();
            if let Some(at) = armed.iter().position(|(p, _)| *p == point) {
                if armed[at].1 == 0 {
                    armed.remove(at);
                    return Err(injected(point, db, what));
                }
                armed[at].1 -= 1;
            }
        }
        let _ = (point, db, what);
        Ok(())
    }
}

/// The error an injected failure reports: what RocksDB reports for a failed
/// write to its files.
#[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
fn injected(point: FailPoint, db: &str, what: &str) -> Error {
    crate::db::engine_error(
        db,
        what,
        &rocksdb::ErrorKind::IOError,
        format!("IO error: injected failure at {point:?}"),
    )
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Faults");
        #[cfg(feature = "fault-injection")]
        d.field("armed", &*self.lock());
        d.finish()
    }
}
