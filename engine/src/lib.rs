//! The search engine of a shard: partitions of (index, region) with their text (tantivy),
//! geo (R-tree) and vector (HNSW graph + exact store) structures, the apply logic that turns
//! source transactions into partition writes, group commit, the atomically swapped read view,
//! and searches over it.
//!
//! Synchronous library code: no async runtime, HTTP or Postgres. The indexer's applier thread
//! owns a [`shard::Shard`]; its HTTP handlers search a [`shard::ShardView`] on a blocking pool.
//! Files are this crate's business only as a storage engine's: each partition's tantivy
//! directory and its vector graph's dump.

pub mod analyzer;
pub mod change;
pub mod document;
pub mod error;
pub mod fields;
pub mod filter;
pub mod frozen_graph;
pub mod gate;
pub mod geo;
pub mod graph;
pub mod kernels;
pub mod mapped;
pub mod partition;
pub mod rows;
pub mod schema;
pub mod search;
pub mod shard;
pub mod statistics;
pub mod text;
pub mod vector;

pub use error::{Error, Result};
pub use wire::Lsn;
