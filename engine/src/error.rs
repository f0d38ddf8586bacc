//! The engine's one error type. None of these is retryable by reconnecting: the indexer stops
//! with the message (a restart replays from the durable checkpoint).

use std::path::{Path, PathBuf};

use tantivy::directory::error::{LockError, OpenDirectoryError, OpenReadError, OpenWriteError};
use tantivy::TantivyError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("index: {}", describe_index(.0))]
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
    /// The I/O error under this one, if any, and the file it concerned when known: what a
    /// caller needs to tell a full disk (`ErrorKind::StorageFull`) from other failures
    /// without reading message text.
    pub fn io_cause(&self) -> Option<(&std::io::Error, Option<&Path>)> {
        match self {
            Error::Io(e) => Some((e, None)),
            Error::Index(e) => tantivy_io_cause(e),
            _ => None,
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl std::fmt::Display) -> Error {
        Error::Corrupt {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

/// tantivy keeps an I/O error's cause as a field, not as the error's `source`.
fn tantivy_io_cause(e: &TantivyError) -> Option<(&std::io::Error, Option<&Path>)> {
    match e {
        TantivyError::IoError(io) | TantivyError::LockFailure(LockError::IoError(io), _) => {
            Some((io, None))
        }
        TantivyError::OpenWriteError(OpenWriteError::IoError { io_error, filepath })
        | TantivyError::OpenReadError(OpenReadError::IoError { io_error, filepath }) => {
            Some((io_error, Some(filepath)))
        }
        TantivyError::OpenDirectoryError(OpenDirectoryError::IoError {
            io_error,
            directory_path,
        }) => Some((io_error, Some(directory_path))),
        _ => None,
    }
}

/// A tantivy error in a line: an I/O failure as the OS put it, with its file when known
/// (tantivy's own text prints the I/O error's debug structure).
fn describe_index(e: &TantivyError) -> String {
    match tantivy_io_cause(e) {
        Some((io, Some(path))) => format!("{}: {io}", path.display()),
        Some((io, None)) => io.to_string(),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_full_disk_under_tantivy_is_found_and_said_in_one_line() {
        let full = || std::io::Error::from_raw_os_error(28); // ENOSPC
        let e = Error::Index(TantivyError::OpenWriteError(OpenWriteError::IoError {
            io_error: Arc::new(full()),
            filepath: PathBuf::from("abc.idx"),
        }));
        let (io, path) = e.io_cause().expect("an I/O cause");
        assert_eq!(io.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(path, Some(Path::new("abc.idx")));
        let text = e.to_string();
        assert!(
            text.starts_with("index: abc.idx: No space left on device"),
            "{text}"
        );
        assert!(!text.contains("Os {"), "{text}");

        let e = Error::Index(TantivyError::IoError(Arc::new(full())));
        assert_eq!(
            e.io_cause().unwrap().0.kind(),
            std::io::ErrorKind::StorageFull
        );
        let e = Error::Index(TantivyError::IndexAlreadyExists);
        assert!(e.io_cause().is_none());
    }
}
