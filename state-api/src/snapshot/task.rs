//! The asynchronous part of a snapshot, and its cancellation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// A shared cancellation flag, set when a backend closes while a snapshot runs.
#[derive(Clone, Debug, Default)]
pub struct Cancellation {
    flag: Arc<AtomicBool>,
}

impl Cancellation {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// `Err(Cancelled)` when the flag is set.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.is_cancelled() {
            Err(Error::Cancelled {
                reason: format!("{what}: the backend was closed while the snapshot was running"),
            })
        } else {
            Ok(())
        }
    }
}

/// The cancellation flags of a backend's running snapshots.
#[derive(Clone, Debug, Default)]
pub struct CancellationRegistry {
    running: Arc<Mutex<Vec<Cancellation>>>,
}

impl CancellationRegistry {
    /// A new flag, registered so that [`CancellationRegistry::cancel_all`] sets it.
    pub fn register(&self) -> Cancellation {
        let c = Cancellation::new();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        // Drop flags of finished tasks (only the registry still holds them).
        running.retain(|c| Arc::strong_count(&c.flag) > 1);
        running.push(c.clone());
        c
    }

    /// Cancels every registered snapshot.
    pub fn cancel_all(&self) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for c in running.iter() {
            c.cancel();
        }
    }
}

type Work<T> = Box<dyn FnOnce(&Cancellation) -> Result<T> + Send>;

/// The asynchronous part of a snapshot: runs on any thread while the backend
/// keeps processing. Writes made to the backend after the synchronous part
/// returned this task are never in its result.
#[must_use = "a snapshot task does nothing until run"]
pub struct SnapshotTask<T> {
    work: Work<T>,
    cancellation: Cancellation,
}

impl<T: Send + 'static> SnapshotTask<T> {
    /// A task doing `work`, cancelled through `cancellation`.
    pub fn new(
        cancellation: Cancellation,
        work: impl FnOnce(&Cancellation) -> Result<T> + Send + 'static,
    ) -> Self {
        SnapshotTask {
            work: Box::new(work),
            cancellation,
        }
    }

    /// A task that is already done.
    pub fn ready(value: T) -> Self {
        SnapshotTask::new(Cancellation::new(), move |_| Ok(value))
    }

    /// The task's cancellation flag.
    pub fn cancellation(&self) -> &Cancellation {
        &self.cancellation
    }

    /// Runs the asynchronous part to completion on the calling thread.
    pub fn run(self) -> Result<T> {
        self.cancellation.check("snapshot")?;
        (self.work)(&self.cancellation)
    }

    /// Runs the task on a new thread.
    pub fn spawn(self) -> std::thread::JoinHandle<Result<T>> {
        std::thread::spawn(move || self.run())
    }
}
