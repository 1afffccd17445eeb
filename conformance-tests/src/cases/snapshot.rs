//! Snapshots and restore: empty snapshots, asynchronous isolation, cancellation, rescaling.
