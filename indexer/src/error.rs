//! The indexer's one error type, classified once: `is_retryable` decides whether the stream
//! reconnects with backoff or the process stops with the message.

use wire::Lsn;

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
    #[error("engine: {0}")]
    Engine(#[from] engine::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The replication slot that the checkpoint depends on is gone or can no longer stream.
    #[error("replication slot {slot:?} {loss}; the index cannot be caught up incrementally (set source.on_slot_loss = \"resnapshot\" to rebuild it from a new snapshot)")]
    SlotLost { slot: String, loss: SlotLoss },
    /// The stream broke a protocol expectation (e.g. a change outside a transaction).
    #[error("protocol: {0}")]
    Protocol(String),
    /// The stored checkpoint belongs to another slot or database, or cannot be read.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// The sample data set (seed) cannot be read.
    #[error("sample data: {0}")]
    Sample(String),
    /// A shard endpoint (of this or another indexer) answered wrongly or not at all.
    #[error("shard endpoint: {0}")]
    Shard(String),
    /// The applier thread panicked.
    #[error("applier panicked: {0}")]
    ApplierPanicked(String),
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
            | Error::Engine(_)
            | Error::Sample(_)
            | Error::SlotLost { .. }
            | Error::Protocol(_)
            | Error::Checkpoint(_)
            | Error::Shard(_)
            | Error::ApplierPanicked(_)
            | Error::ApplierStopped(_) => false,
        }
    }
}

/// How a replication slot was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLoss {
    Missing,
    /// `max_slot_wal_keep_size` was exceeded: the server no longer has the WAL.
    Invalidated,
}

impl std::fmt::Display for SlotLoss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SlotLoss::Missing => "does not exist",
            SlotLoss::Invalidated => "was invalidated (max_slot_wal_keep_size exceeded)",
        })
    }
}
