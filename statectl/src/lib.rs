//! `statectl`: the job workflow and the checkpoint tools of this crate family.
//!
//! The library half holds what the `statectl` binary is made of, so that an
//! engine author can read (and reuse) a complete job written against the
//! state API:
//!
//! * [`job`]: the example job (a partitioned source with its offsets in
//!   operator state, a keyed count), with aligned checkpoints through a
//!   coordinator, savepoints, cancellation and restore at any parallelism on
//!   any backend;
//! * [`control`]: the control channel through which `statectl savepoint` and
//!   `statectl cancel` reach a running job;
//! * [`backends`]: the backends by name, as the command line chooses them;
//! * [`cluster`]: the job across processes: a coordinator and one worker
//!   process per subtask, checkpointing to a shared folder or object store;
//! * [`demo`]: the scripted walk through the workflow with real processes;
//! * [`output`]: sizes, times and tables for people, JSON for scripts;
//! * [`records`]: records without user types (RocksDB native handles, JSON
//!   lines for `dump`).

pub mod backends;
pub mod cluster;
pub mod control;
pub mod demo;
pub mod job;
pub mod output;
pub mod records;
