//! End-to-end tests: real Postgres (started by the harness), the real indexer binary, the
//! real replication stream. One test binary with modules, to save link time.

mod api;
mod cdc;
mod common;
mod compose;
mod crash_loops;
mod demo;
mod doors;
mod geo;
mod large_tx;
mod link;
mod merges;
mod readme;
mod resilience;
mod scoped;
mod shards;
mod soak;
mod text;
mod tls;
mod vector;
mod verify_cmd;
