//! Metric names, in one place, with their descriptions. Exported as Prometheus text by the
//! shard endpoint's `/metrics`.

pub const ROWS_APPLIED: &str = "indexer_rows_applied_total";
pub const TRANSACTIONS_APPLIED: &str = "indexer_transactions_applied_total";
pub const COMMITS: &str = "indexer_group_commits_total";
pub const COMMIT_SECONDS: &str = "indexer_group_commit_seconds";
pub const REJECTED_ROWS: &str = "indexer_rejected_rows_total";
pub const SEARCHES_CANCELLED: &str = "indexer_searches_cancelled_total";
pub const RECONNECTS: &str = "indexer_stream_reconnects_total";
pub const SNAPSHOT_ROWS: &str = "indexer_snapshot_rows_total";
pub const APPLIED_LSN: &str = "indexer_applied_lsn";
pub const SERVER_WAL_END: &str = "indexer_server_wal_end_lsn";
pub const LAG_BYTES: &str = "indexer_lag_bytes";
pub const LAG_SECONDS: &str = "indexer_lag_seconds";
pub const STREAMING: &str = "indexer_streaming";
pub const LAST_COMMIT_AGE_SECONDS: &str = "indexer_last_commit_age_seconds";
pub const PARTITION_DOCS: &str = "indexer_partition_documents";
pub const PARTITION_REJECTED: &str = "indexer_partition_rejected_rows";
pub const SLOT_SAFE_WAL_BYTES: &str = "indexer_slot_safe_wal_size_bytes";

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        ROWS_APPLIED,
        "Row changes applied to partitions (stream and snapshot)"
    );
    describe_counter!(TRANSACTIONS_APPLIED, "Source transactions applied");
    describe_counter!(
        SEARCHES_CANCELLED,
        "Searches stopped before their answer: past their time budget, or their caller gone"
    );
    describe_counter!(COMMITS, "Group commits made durable");
    describe_histogram!(COMMIT_SECONDS, Unit::Seconds, "Duration of a group commit");
    describe_counter!(REJECTED_ROWS, "Rows or fields that could not be indexed");
    describe_counter!(RECONNECTS, "Replication stream reconnects");
    describe_counter!(SNAPSHOT_ROWS, "Rows copied by the initial snapshot");
    describe_gauge!(APPLIED_LSN, "LSN made durable and searchable, as a number");
    describe_gauge!(
        SERVER_WAL_END,
        "Server WAL end seen on the stream, as a number"
    );
    describe_gauge!(
        LAG_BYTES,
        Unit::Bytes,
        "WAL bytes between the server and the applied LSN (while the stream is down, the server's position as last polled)"
    );
    describe_gauge!(
        LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest change not yet searchable; while the stream is down, at least the time since it was live"
    );
    describe_gauge!(
        STREAMING,
        "1 while the replication stream is live, 0 while it connects, reconnects or is lost"
    );
    describe_gauge!(
        LAST_COMMIT_AGE_SECONDS,
        Unit::Seconds,
        "Time since the commit time of the last transaction applied"
    );
    describe_gauge!(PARTITION_DOCS, "Documents per partition");
    describe_gauge!(PARTITION_REJECTED, "Rejected rows per partition");
    describe_gauge!(
        SLOT_SAFE_WAL_BYTES,
        Unit::Bytes,
        "WAL the slot can still retain before it is invalidated"
    );
}
