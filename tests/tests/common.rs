//! The shared fixtures live in the harness library (`e2e::fixture`), where the soak uses
//! them too.

pub use e2e::fixture::*;
