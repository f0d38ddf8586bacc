//! The indexer's one error type, classified once: `is_retryable` decides whether the stream
//! reconnects with backoff or the process stops with the message.

use crate::lsn::Lsn;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or its match with the database catalog is wrong.
    #[error("config: {0}")]
    Config(String),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("replication: {0}")]
    Replication(#[from] pgwire_replication::PgWireError),
    #[error("pgoutput: {0}")]
    Decode(#[from] crate::pgoutput::DecodeError),
    #[error("index: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The replication slot that the checkpoint depends on is gone or can no longer stream.
    #[error("replication slot {slot:?} {reason}; the index cannot be caught up incrementally (set source.on_slot_loss = \"resnapshot\" to rebuild it from a new snapshot)")]
    SlotLost { slot: String, reason: String },
    /// The stream broke a protocol expectation (e.g. a change outside a transaction).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The stored checkpoint belongs to another slot or database.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The applier stopped; carries the last durable LSN.
    #[error("applier stopped at {0}")]
    ApplierStopped(Lsn),
}

impl Error {
    /// Whether the stream should reconnect and try again (network, server restart) rather
    /// than stop the process.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Postgres(_) | Error::Replication(_) | Error::Io(_) => true,
            Error::Config(_)
            | Error::Decode(_)
            | Error::Index(_)
            | Error::SlotLost { .. }
            | Error::Protocol(_)
            | Error::Checkpoint(_)
            | Error::ApplierStopped(_) => false,
        }
    }
}
