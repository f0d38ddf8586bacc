//! The engine's one error type. None of these is retryable by reconnecting: the indexer stops
//! with the message (a restart replays from the durable checkpoint).

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A partition on disk was built for another configuration of its index.
    #[error("partition {} was built for another configuration of index {index:?}; remove the data directory to rebuild it", dir.display())]
    SchemaChanged { dir: PathBuf, index: String },
    /// Stored data does not read back as the engine wrote it.
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: String, detail: String },
    /// A partition commit failed in a way that left no error value (it panicked).
    #[error("commit of partition {partition} failed: {detail}")]
    CommitFailed { partition: String, detail: String },
}

impl Error {
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}
