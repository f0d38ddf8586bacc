//! Query engines of a partition: synchronous library code over in-memory structures, free of
//! I/O, HTTP and async (the shard calls them on the blocking pool).

pub mod analyzer;
pub mod fields;
pub mod filter;
pub mod geo;
pub mod graph;
pub mod text;
pub mod vector;
