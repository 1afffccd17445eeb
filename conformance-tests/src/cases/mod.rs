//! The conformance cases, grouped as in CONFORMANCE.md. Every case is a plain
//! function `fn(&S) -> Result<()>` for any [`state_api::StateBackend`] `S`;
//! assertions panic with a message naming what broke, backend errors return
//! `Err`.
//!
//! To add a case: write the function in its module and add its path to
//! [`for_each_case!`](crate::for_each_case); every backend then runs it.

pub mod keyed;
pub mod operator;
pub mod snapshot;

/// Calls `$callback!($backend; module::case, ...)` with every case of the suite.
#[macro_export]
macro_rules! for_each_case {
    ($callback:path, $backend:expr) => {
        $callback! { $backend;
            keyed::value_basic,
        }
    };
}
