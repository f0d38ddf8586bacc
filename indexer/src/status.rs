//! Shared, lock-light state that the stream, the applier and the HTTP endpoint all read:
//! WAL positions, lag inputs, snapshot progress, slot health and rejected rows.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use engine::change::ChangeEvent;
use engine::document::Rejection;
use wire::Lsn;

/// Microseconds between the Unix epoch and Postgres' epoch (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
const RECENT_REJECTIONS: usize = 100;
/// The stream state of a live stream.
pub const STREAMING: &str = "streaming";

#[derive(Default)]
pub struct Stats {
    /// Server WAL end from the latest keepalive or data message.
    pub server_wal_end: AtomicU64,
    /// The server's WAL position as the slot poller last read it (every 2 s): the lag's end
    /// while the stream is down and hears nothing.
    pub polled_wal_end: AtomicU64,
    /// When (µs since 2000) the stream stopped streaming; 0 while it streams.
    pub stream_down_since: AtomicI64,
    /// Highest LSN that is both durable and searchable (or has nothing for us).
    pub applied: AtomicU64,
    /// Postgres commit time (µs since 2000) of the oldest received transaction not yet
    /// applied; 0 when none is pending.
    pub oldest_pending_commit: AtomicI64,
    /// End LSN of that transaction: the source forgets it only when it next wakes, so a
    /// reader between its apply and then must not count it as pending.
    pub oldest_pending_lsn: AtomicU64,
    /// Postgres commit time of the last applied transaction.
    pub last_applied_commit: AtomicI64,
    pub rejected_total: AtomicU64,
    pub rows_applied: AtomicU64,
    pub transactions_applied: AtomicU64,
    pub reconnects: AtomicU64,
    pub rejected_by_partition: Mutex<BTreeMap<(String, String), u64>>,
    pub recent_rejections: Mutex<VecDeque<Rejection>>,
    pub snapshot: Mutex<SnapshotProgress>,
    pub slot: Mutex<Option<SlotStatus>>,
    pub stream_state: Mutex<String>,
    pub last_error: Mutex<Option<String>>,
    /// Woken whenever `applied` advances.
    pub applied_changed: tokio::sync::Notify,
    /// Applied row changes, for the change feed.
    pub changes: crate::changes::ChangeLog,
}

pub use wire::shard::{SlotStatus, SnapshotProgress};

impl Stats {
    pub fn applied(&self) -> Lsn {
        Lsn(self.applied.load(Ordering::Acquire))
    }

    pub fn server_wal_end(&self) -> Lsn {
        Lsn(self.server_wal_end.load(Ordering::Acquire))
    }

    pub fn advance_applied(&self, lsn: Lsn) {
        if self.applied.fetch_max(lsn.0, Ordering::AcqRel) < lsn.0 {
            self.applied_changed.notify_waiters();
        }
    }

    /// Forgets the applied position (the index is being rebuilt from a new snapshot).
    pub fn reset_applied(&self) {
        self.applied.store(0, Ordering::Release);
        self.oldest_pending_commit.store(0, Ordering::Release);
        self.last_applied_commit.store(0, Ordering::Release);
    }

    /// Waits until `applied >= lsn`, up to `timeout`; returns the applied LSN either way.
    pub async fn wait_applied(&self, lsn: Lsn, timeout: std::time::Duration) -> Lsn {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.applied_changed.notified();
            let applied = self.applied();
            if applied >= lsn {
                return applied;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.applied();
            }
        }
    }

    pub fn observe_wal_end(&self, lsn: Lsn) {
        self.server_wal_end.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// The server's WAL position as the poller read it.
    pub fn observe_server_wal(&self, lsn: Lsn) {
        self.polled_wal_end.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// Whether the stream is live (not connecting, reconnecting or stopped).
    pub fn streaming(&self) -> bool {
        self.stream_down_since.load(Ordering::Acquire) == 0
    }

    /// Bytes of WAL the server has beyond what is applied: up to the stream's last word
    /// while it streams; while it is down, up to what the poller last read from the server.
    pub fn lag_bytes(&self) -> u64 {
        let mut end = self.server_wal_end();
        if !self.streaming() {
            end = end.max(Lsn(self.polled_wal_end.load(Ordering::Acquire)));
        }
        self.applied().bytes_until(end)
    }

    /// Milliseconds the index is behind: 0 when caught up, else the age of the oldest
    /// received-but-unapplied transaction (or of the last applied one when Postgres holds
    /// more that we have not received yet). While the stream is down nothing says what the
    /// server holds, so the lag is at least the time since it was last live: an answer
    /// never claims a freshness it cannot know.
    pub fn lag_ms(&self) -> u64 {
        let now = now_pg_micros();
        let down = match self.stream_down_since.load(Ordering::Acquire) {
            0 => 0,
            since => ms_between(since, now),
        };
        let pending = self.oldest_pending_commit.load(Ordering::Acquire);
        let pending_lsn = Lsn(self.oldest_pending_lsn.load(Ordering::Acquire));
        let pending = if pending != 0 && self.applied() >= pending_lsn {
            0
        } else {
            pending
        };
        let reference = if pending != 0 {
            pending
        } else if self.lag_bytes() > 0 {
            self.last_applied_commit.load(Ordering::Acquire)
        } else {
            0
        };
        if reference == 0 {
            return down;
        }
        ms_between(reference, now).max(down)
    }

    /// Milliseconds since the Postgres commit time of the last transaction applied by this
    /// process; `None` before the first.
    pub fn last_commit_age_ms(&self) -> Option<u64> {
        match self.last_applied_commit.load(Ordering::Acquire) {
            0 => None,
            t => Some(ms_between(t, now_pg_micros())),
        }
    }

    pub fn record_rejection(&self, region: &str, r: Rejection) {
        self.rejected_total.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::REJECTED_ROWS, "index" => r.index.clone()).increment(1);
        tracing::warn!(index = %r.index, key = %r.key, field = %r.field, reason = %r.reason, "row not fully indexable");
        *self
            .rejected_by_partition
            .lock()
            .unwrap()
            .entry((r.index.clone(), region.to_owned()))
            .or_default() += 1;
        let mut recent = self.recent_rejections.lock().unwrap();
        if recent.len() == RECENT_REJECTIONS {
            recent.pop_front();
        }
        recent.push_back(r);
    }

    /// The stream's state as `/status` shows it; anything but `streaming` starts (or keeps)
    /// the clock of `stream_down_since`.
    pub fn set_stream_state(&self, s: impl Into<String>) {
        let s = s.into();
        if s == STREAMING {
            self.stream_down_since.store(0, Ordering::Release);
        } else {
            let _ = self.stream_down_since.compare_exchange(
                0,
                now_pg_micros(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        *self.stream_state.lock().unwrap() = s;
    }

    /// The stream's state, one word: `streaming`, `connecting`, `reconnecting`, `slot lost`,
    /// `snapshot` (copying, not streaming yet), `stopped`.
    pub fn stream_word(&self) -> String {
        let state = self.stream_state.lock().unwrap();
        if state.starts_with("reconnecting") {
            "reconnecting".to_owned()
        } else if state.is_empty() {
            "snapshot".to_owned()
        } else {
            state.clone()
        }
    }
}

/// The engine reports here: rejections are counted and logged, searchable changes advance
/// the applied LSN (waking `/internal/wait`) and reach the change feed.
impl engine::shard::Observer for Stats {
    fn rejected(&self, region: &str, rejection: Rejection) {
        self.record_rejection(region, rejection);
    }

    fn feed_reset(&self, lsn: Lsn) {
        self.changes.reset(lsn);
    }

    fn feed_gap(&self, through: engine::change::Position) {
        self.changes.gap(through);
    }

    fn searchable(&self, lsn: Lsn, rows: usize, events: Vec<ChangeEvent>) {
        if rows > 0 {
            metrics::counter!(crate::metrics::ROWS_APPLIED).increment(rows as u64);
        }
        self.advance_applied(lsn);
        self.changes.publish(lsn, events);
    }
}

/// Whole milliseconds from `from` to `to` (µs since 2000), 0 if `to` is earlier.
fn ms_between(from: i64, to: i64) -> u64 {
    ((to - from).max(0) / 1000) as u64
}

pub fn now_pg_micros() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_MICROS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_already_applied_is_no_lag_though_the_source_has_not_forgotten_it() {
        let stats = Stats::default();
        stats.advance_applied(Lsn(100));
        // The source received the transaction ending at 100, committed 5 s ago, and has not
        // yet woken to forget it: it is applied, the index is not behind.
        stats.oldest_pending_lsn.store(100, Ordering::Release);
        stats
            .oldest_pending_commit
            .store(now_pg_micros() - 5_000_000, Ordering::Release);
        assert_eq!(stats.lag_ms(), 0);
        // One ending at 200 is pending: its age is the lag.
        stats.oldest_pending_lsn.store(200, Ordering::Release);
        assert!(stats.lag_ms() >= 5_000, "{}", stats.lag_ms());
    }
}
