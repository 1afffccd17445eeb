//! The conformance suite every state backend passes.
//!
//! Cases are plain `pub fn` over a [`StateBackend`] (in [`cases`]), each
//! returning `Result<()>` and asserting what the contract promises. A backend
//! crate runs all of them, one named `#[test]` per case, with one macro:
//!
//! ```ignore
//! conformance_tests::conformance_suite!(backend_memory::MemoryStateBackend::new());
//! ```
//!
//! The expression is evaluated afresh for every test, so a backend that needs
//! a directory can create a temporary one in it.

pub mod cases;
pub mod crash;
pub mod fixtures;
pub mod harness;
pub mod job;
pub mod lifecycle;
pub mod model;
pub mod rounds;

pub use state_api::StateBackend;

/// Expands into one `#[test]` per conformance case, for the backend built by
/// `$backend` (an expression evaluated once per test).
#[macro_export]
macro_rules! conformance_suite {
    ($backend:expr) => {
        $crate::for_each_case!($crate::__conformance_test, $backend);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_test {
    ($backend:expr; $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let backend = $backend;
                if let Err(e) = $crate::cases::$module::$case(&backend) {
                    panic!("conformance case {} failed: {e} ({e:?})", stringify!($case));
                }
            }
        )*
    };
}
