//! The indexer's one error type, classified once: `is_retryable` decides whether the stream
//! reconnects with backoff or the process stops with the message.

use wire::Lsn;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file or its match with the database catalog is wrong.
    #[error("config: {0}")]
    Config(String),
    #[error("postgres: {}", chain(.0))]
    Postgres(tokio_postgres::Error),
    #[error("replication: {0}")]
    Replication(pgwire_replication::PgWireError),
    /// TLS to Postgres failed in a way a retry cannot fix: the server's certificate does not
    /// prove what `sslmode` asks, or the server does not speak TLS.
    #[error("TLS: {0}")]
    Tls(String),
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
    /// The disk holding the data directory is full (or the user's quota spent).
    #[error("no space left on the disk holding {} ({}): free space there, or move storage.data_dir (INDEXER_DATA_DIR) to a larger disk, and start again; nothing is lost, a restart replays from the last durable commit ({detail})", dir.display(), space(*available, *total))]
    DiskFull {
        dir: std::path::PathBuf,
        available: Option<u64>,
        total: Option<u64>,
        detail: String,
    },
}

fn space(available: Option<u64>, total: Option<u64>) -> String {
    const MB: u64 = 1 << 20;
    match (available, total) {
        (Some(a), Some(t)) => format!("{} MB available of {} MB", a / MB, t / MB),
        _ => "its free space could not be read".to_owned(),
    }
}

impl Error {
    /// Whether the stream should reconnect and try again (network, server restart) rather
    /// than stop the process.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Postgres(_) | Error::Replication(_) | Error::Io(_) => true,
            Error::Config(_)
            | Error::Tls(_)
            | Error::Decode(_)
            | Error::Engine(_)
            | Error::Sample(_)
            | Error::SlotLost { .. }
            | Error::Protocol(_)
            | Error::Checkpoint(_)
            | Error::Shard(_)
            | Error::ApplierPanicked(_)
            | Error::ApplierStopped(_)
            | Error::DiskFull { .. } => false,
        }
    }

    /// The I/O error at the bottom of this one, if any.
    fn io_cause(&self) -> Option<&std::io::Error> {
        match self {
            Error::Io(e) => Some(e),
            Error::Engine(e) => e.io_cause().map(|(io, _)| io),
            _ => None,
        }
    }

    /// This error, or `DiskFull` naming `data_dir` and its free space when what failed was a
    /// write to a full disk: the error's kind says so (ENOSPC, or EDQUOT: a spent quota), or
    /// a storage error comes with under 1% (at least 1 MB) of the disk left. tantivy loses
    /// the I/O error of a write on its indexing thread ("an index writer was killed"), so
    /// the disk's own state is the witness then, as the catalog is for a slot.
    pub fn on_full_disk(self, data_dir: &std::path::Path) -> Error {
        let (available, total) = (
            fs4::available_space(data_dir).ok(),
            fs4::total_space(data_dir).ok(),
        );
        let said_full = self.io_cause().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        });
        let storage = matches!(self, Error::Engine(_) | Error::Io(_));
        let nearly_full =
            matches!((available, total), (Some(a), Some(t)) if a < (t / 100).max(1 << 20));
        if !(said_full || storage && nearly_full) {
            return self;
        }
        Error::DiskFull {
            dir: data_dir.to_owned(),
            available,
            total,
            detail: self.to_string(),
        }
    }
}

/// The error with its causes: tokio-postgres' own text is only "db error" or "error
/// performing TLS handshake"; what the server or TLS said is in the source.
fn chain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        let text = chain(&e);
        if is_tls_refusal(&text) {
            Error::Tls(text)
        } else {
            Error::Postgres(e)
        }
    }
}

impl From<pgwire_replication::PgWireError> for Error {
    fn from(e: pgwire_replication::PgWireError) -> Error {
        match e {
            pgwire_replication::PgWireError::Tls(detail) if is_tls_refusal(&detail) => {
                Error::Tls(detail)
            }
            other => Error::Replication(other),
        }
    }
}

/// A certificate refused, a server without TLS, or TLS settings that cannot work: what a
/// reconnect would only meet again (a handshake cut by the network is retried).
fn is_tls_refusal(message: &str) -> bool {
    [
        "invalid peer certificate",
        "does not support TLS",
        "TLS config error",
    ]
    .iter()
    .any(|m| message.contains(m))
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
