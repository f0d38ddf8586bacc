//! The initial snapshot: the slot created with an exported snapshot, every configured table
//! COPYed inside it in key order, the copy made durable part by part so that a restart goes
//! on from its position (ARCHITECTURE.md, "Snapshot").

use std::time::{Duration, Instant};

use pgwire_replication::ReplicationClient;
use tokio::sync::{mpsc, oneshot};

use super::{cell_bytes, Source};
use crate::apply::{ApplyCmd, CopyPosition, Held};
use crate::catalog::{quote_ident, quote_literal, ResolvedIndex};
use crate::checkpoint::CopyMark;
use crate::copy::{CopyRows, Range};
use crate::error::{Error, Result};
use crate::status::SnapshotProgress;
use wire::Lsn;

const SNAPSHOT_BATCH: usize = 2_000;

/// Where a snapshot's copy goes on after a restart (from `checkpoint.json`).
#[derive(Debug, Clone)]
pub struct Resume {
    /// The slot's consistent point.
    pub consistent: Lsn,
    /// Durable in every partition up to here.
    pub copied: CopyMark,
    /// A later position some partitions may have made durable (a crash between partitions'
    /// commits).
    pub ahead: Option<CopyMark>,
}

/// A copy under way: where its rows go and how far it is.
struct CopyRun<'a> {
    applier: &'a mpsc::Sender<ApplyCmd>,
    consistent: Lsn,
    total: u64,
    estimate: u64,
    started: Instant,
    last_log: Instant,
    bar: indicatif::ProgressBar,
}

impl Source {
    /// Creates the slot with an exported snapshot, copies every configured table inside that
    /// snapshot into the applier, and returns the slot's consistent point once the copy is
    /// durable. Every row is then in the copy or in the stream after that point, exactly once.
    ///
    /// Tables are copied in primary-key order, and the applier makes the copy durable every
    /// second with its position (`CopyMark`). `resume` goes on from such a position after a
    /// restart: the slot (created by an earlier life) still holds every change since its
    /// consistent point, but its exported snapshot is gone, so the rest is copied in a new,
    /// later snapshot. A row is then copied at a later state than the consistent point, and
    /// the stream replays, from that point, changes older than the state copied; each change
    /// carries the row's whole new state (or its deletion), so once the replay reaches the
    /// new snapshot every row is as Postgres has it, and until then a row may show a later
    /// state than the applied LSN, never an earlier one. Key order is what makes this safe:
    /// a row is in the first copy or the second by its key, whatever pages updates moved it
    /// to. (ARCHITECTURE.md, "Snapshot".)
    pub async fn snapshot(
        &self,
        applier: &mpsc::Sender<ApplyCmd>,
        resume: Option<Resume>,
    ) -> Result<Lsn> {
        let started = Instant::now();
        *self.stats.snapshot.lock().unwrap() = SnapshotProgress {
            state: "copying".into(),
            ..Default::default()
        };
        let client = self.conn.connect().await?;
        // The replication session that exported the snapshot must outlive its import.
        let (_repl, consistent, from, ahead) = self.begin_copy(&client, resume).await?;
        let mut estimates = Vec::with_capacity(self.indexes.len());
        for ix in &self.indexes {
            let estimate: i64 = client
                .query_one(
                    "SELECT GREATEST(reltuples, 0)::int8 FROM pg_class WHERE oid = $1::text::regclass",
                    &[&crate::catalog::qualified_table(ix)],
                )
                .await?
                .get(0);
            estimates.push(estimate.max(0) as u64);
        }
        let estimate: u64 = estimates.iter().sum();
        let mut run = CopyRun {
            applier,
            consistent,
            total: from.rows,
            estimate,
            started,
            last_log: Instant::now(),
            bar: crate::progress::rows_bar(estimate),
        };
        for (table, (ix, &table_estimate)) in self.indexes.iter().zip(&estimates).enumerate() {
            if table < from.table {
                continue;
            }
            let after =
                (table == from.table && !from.after.is_empty()).then_some(from.after.as_slice());
            // Rows up to `ahead` may be in a partition already (a crash between partitions'
            // commits of the same position): those replace by key; the rest is added.
            let parts = match &ahead {
                Some(a) if a.table > table => vec![(Range::KeyOrder { after, upto: None }, true)],
                Some(a) if a.table == table && !a.after.is_empty() => vec![
                    (
                        Range::KeyOrder {
                            after,
                            upto: Some(&a.after),
                        },
                        true,
                    ),
                    (
                        Range::KeyOrder {
                            after: Some(&a.after),
                            upto: None,
                        },
                        false,
                    ),
                ],
                _ => vec![(Range::KeyOrder { after, upto: None }, false)],
            };
            let table_started = Instant::now();
            let mut rows_done = 0u64;
            for (range, replace) in parts {
                rows_done += self
                    .copy_range(&client, &mut run, ix, table, range, replace)
                    .await?;
            }
            tracing::info!(index = %ix.name, rows = rows_done, estimate = table_estimate,
                seconds = format!("{:.1}", table_started.elapsed().as_secs_f64()), "table copied");
        }
        let (bar, total) = (run.bar, run.total);
        bar.finish_and_clear();
        {
            // Copied: the applier indexes what is queued and commits it all.
            let mut p = self.stats.snapshot.lock().unwrap();
            p.state = "committing".into();
            p.eta_seconds = None;
            p.index = None;
        }
        tracing::info!(rows = total, "snapshot copied; committing");
        client.batch_execute("COMMIT").await?;
        let (done_tx, done_rx) = oneshot::channel();
        applier
            .send(ApplyCmd::SnapshotDone {
                lsn: consistent,
                copied: CopyPosition {
                    consistent,
                    mark: CopyMark {
                        table: self.indexes.len(),
                        after: Vec::new(),
                        rows: total,
                    },
                    replace: false,
                },
                done: done_tx,
            })
            .await
            .map_err(|_| Error::ApplierStopped(Lsn::ZERO))?;
        done_rx
            .await
            .map_err(|_| Error::ApplierStopped(Lsn::ZERO))??;
        let seconds = started.elapsed().as_secs_f64();
        // This life's rate (a resumed copy counts the rows of earlier lives in `total`).
        let rate = (total - from.rows) as f64 / seconds.max(1e-9);
        *self.stats.snapshot.lock().unwrap() = SnapshotProgress {
            state: "done".into(),
            rows: total,
            rows_per_sec: rate,
            seconds,
            lsn: Some(consistent),
            rows_estimate: Some(estimate),
            eta_seconds: None,
            index: None,
        };
        tracing::info!(rows = total, seconds = format!("{seconds:.2}"), rows_per_sec = format!("{rate:.0}"), lsn = %consistent, "snapshot done");
        Ok(consistent)
    }

    /// Copies one key range of a table into the applier; returns the rows it read.
    async fn copy_range(
        &self,
        client: &tokio_postgres::Client,
        run: &mut CopyRun<'_>,
        ix: &ResolvedIndex,
        table: usize,
        range: Range<'_>,
        replace: bool,
    ) -> Result<u64> {
        let mut copy = CopyRows::start(client, ix, range).await?;
        let mut rows = 0u64;
        while let Some(batch) = copy.next_batch(SNAPSHOT_BATCH).await? {
            rows += batch.len() as u64;
            run.total += batch.len() as u64;
            let last = batch.last().expect("a batch holds a row");
            let after = ix
                .pk
                .iter()
                .map(|&p| last.raw[p].clone().unwrap_or_default())
                .collect();
            let at = CopyPosition {
                consistent: run.consistent,
                mark: CopyMark {
                    table,
                    after,
                    rows: run.total,
                },
                replace,
            };
            metrics::counter!(crate::metrics::SNAPSHOT_ROWS).increment(batch.len() as u64);
            let bytes = batch
                .iter()
                .map(|r| {
                    r.raw
                        .iter()
                        .map(|c| cell_bytes(c.as_deref()))
                        .sum::<usize>()
                        + 4 * r.vector.as_ref().map_or(0, Vec::len)
                })
                .sum();
            let held = Held::take(&self.budget, bytes).await;
            run.applier
                .send(ApplyCmd::SnapshotRows {
                    index: ix.ordinal,
                    rows: batch,
                    held,
                    at,
                })
                .await
                .map_err(|_| Error::ApplierStopped(Lsn::ZERO))?;
            run.bar.set_position(run.total);
            let progress = copying(&ix.name, run.total, run.estimate, run.started);
            if run.last_log.elapsed() >= PROGRESS_LOG_EVERY {
                run.last_log = Instant::now();
                log_progress(&progress);
            }
            *self.stats.snapshot.lock().unwrap() = progress;
        }
        Ok(rows)
    }

    /// Opens the copy's transaction on `client`: in the snapshot exported by a new slot
    /// (returned with the replication session, which must outlive the import), or, to go on
    /// from `resume`, in a snapshot of its own. Returns the slot's consistent point and where
    /// the copy starts.
    async fn begin_copy(
        &self,
        client: &tokio_postgres::Client,
        resume: Option<Resume>,
    ) -> Result<(Option<ReplicationClient>, Lsn, CopyMark, Option<CopyMark>)> {
        Ok(match resume {
            None => {
                let mut repl = ReplicationClient::connect_gated(
                    self.conn.replication(&self.slot, &self.publication),
                )
                .await?;
                let rows = repl
                    .simple_query(&format!(
                        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                        quote_ident(&self.slot)
                    ))
                    .await?;
                let text = |i: usize| -> Result<String> {
                    rows.first()
                        .and_then(|r| r.get(i).cloned().flatten())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .ok_or_else(|| {
                            Error::Protocol("CREATE_REPLICATION_SLOT returned no row".into())
                        })
                };
                let consistent: Lsn = text(1)?
                    .parse()
                    .map_err(|e| Error::Protocol(format!("{e}")))?;
                let snapshot_name = text(2)?;
                tracing::info!(slot = %self.slot, lsn = %consistent, snapshot = %snapshot_name, "created replication slot");
                client
                    .batch_execute(&format!(
                        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                        quote_literal(&snapshot_name)
                    ))
                    .await?;
                (Some(repl), consistent, CopyMark::default(), None)
            }
            Some(Resume {
                consistent,
                copied,
                ahead,
            }) => {
                client
                    .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                tracing::info!(slot = %self.slot, lsn = %consistent, table = copied.table,
                    after = ?copied.after, rows = copied.rows, "resuming the snapshot's copy");
                (None, consistent, copied, ahead)
            }
        })
    }
}

/// How often the log says how far the copy is.
const PROGRESS_LOG_EVERY: Duration = Duration::from_secs(5);

/// Progress while copying: rows so far of `estimate` (0: unknown), the rate, the time left.
pub(super) fn copying(index: &str, rows: u64, estimate: u64, started: Instant) -> SnapshotProgress {
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let rate = rows as f64 / seconds;
    SnapshotProgress {
        state: "copying".into(),
        rows,
        rows_per_sec: rate,
        seconds,
        lsn: None,
        rows_estimate: (estimate > 0).then_some(estimate),
        eta_seconds: (estimate > 0 && rate > 0.0)
            .then(|| estimate.saturating_sub(rows) as f64 / rate),
        index: Some(index.to_owned()),
    }
}

fn log_progress(p: &SnapshotProgress) {
    let of = match p.rows_estimate {
        Some(e) => format!("{:.0}%", (p.rows as f64 / e as f64 * 100.0).min(100.0)),
        None => "?".into(),
    };
    let eta = p.eta_seconds.map_or("?".into(), |s| format!("{s:.0} s"));
    tracing::info!(index = p.index.as_deref().unwrap_or(""), rows = p.rows, rows_per_sec = format!("{:.0}", p.rows_per_sec), of_estimate = %of, eta = %eta, "snapshot progress");
}
