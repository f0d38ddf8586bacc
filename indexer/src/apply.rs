//! The applier: a dedicated thread that owns the shard engine, buffers transactions into
//! partitions, group-commits them (bounded by rows and time), persists the checkpoint, and
//! only then reports the LSN as durable so the stream may confirm it to Postgres.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::Checkpoint;
use crate::config::ApplyConfig;
use crate::document::RawRow;
use crate::error::Result;
use crate::lsn::Lsn;
use crate::shard::{Shard, Transaction};
use crate::status::Stats;

pub enum ApplyCmd {
    SnapshotRows {
        index: usize,
        rows: Vec<RawRow>,
    },
    /// The snapshot is complete at `lsn`: commit it and mark the checkpoint done.
    SnapshotDone {
        lsn: Lsn,
        done: oneshot::Sender<Result<()>>,
    },
    Tx(Transaction),
}

pub struct Applier {
    pub shard: Shard,
    pub config: ApplyConfig,
    pub checkpoint: Checkpoint,
    pub data_dir: PathBuf,
    pub stats: Arc<Stats>,
}

/// How often the checkpoint file follows the partitions' own commits (it only shortens the
/// replay after a restart; correctness rests on the partitions' commit payloads).
const CHECKPOINT_FILE_INTERVAL: Duration = Duration::from_secs(1);

impl Applier {
    /// Runs on its own thread until the command channel closes or an error occurs.
    pub fn spawn(
        self,
        rx: mpsc::Receiver<ApplyCmd>,
        durable: watch::Sender<Lsn>,
    ) -> std::thread::JoinHandle<Result<()>> {
        std::thread::Builder::new()
            .name("applier".into())
            .spawn(move || self.run(rx, durable))
            .expect("spawn applier thread")
    }

    fn run(mut self, mut rx: mpsc::Receiver<ApplyCmd>, durable: watch::Sender<Lsn>) -> Result<()> {
        let max_delay = Duration::from_millis(self.config.max_batch_delay_ms);
        let mut last_file_write = Instant::now();
        let mut file_lsn = self.checkpoint.lsn()?;
        let mut stash: Option<ApplyCmd> = None;
        loop {
            let cmd = match stash.take() {
                Some(c) => c,
                None => match rx.blocking_recv() {
                    Some(c) => c,
                    None => break,
                },
            };
            match cmd {
                ApplyCmd::SnapshotRows { index, rows } => {
                    self.shard.add_snapshot_rows(index, rows)?
                }
                ApplyCmd::SnapshotDone { lsn, done } => {
                    let result = self.finish_snapshot(lsn);
                    let failed = result.is_err();
                    if !failed {
                        file_lsn = lsn;
                        durable.send_replace(lsn);
                    }
                    let _ = done.send(result);
                    if failed {
                        return Ok(());
                    }
                }
                ApplyCmd::Tx(tx) => {
                    let started = Instant::now();
                    let mut end = self.apply_one(&tx)?;
                    // Group commit: take what is already queued, up to the bounds; never wait
                    // for more when the queue is empty (low latency at low load, large batches
                    // at high load).
                    while self.shard.batch_rows() < self.config.max_batch_rows
                        && started.elapsed() < max_delay
                    {
                        match rx.try_recv() {
                            Ok(ApplyCmd::Tx(next)) => end = self.apply_one(&next)?.max(end),
                            Ok(other) => {
                                stash = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if end > self.shard.applied() {
                        let wrote = self.shard.commit(end)?;
                        if wrote && last_file_write.elapsed() >= CHECKPOINT_FILE_INTERVAL {
                            self.write_checkpoint(end)?;
                            file_lsn = end;
                            last_file_write = Instant::now();
                        }
                        durable.send_replace(end);
                    }
                }
            }
        }
        // Clean stop: leave the checkpoint file at the last durable position.
        let applied = self.shard.applied();
        if applied > file_lsn && self.checkpoint.snapshot_done {
            self.write_checkpoint(applied)?;
        }
        Ok(())
    }

    /// Buffers one transaction; returns the LSN a commit after it stands for.
    fn apply_one(&mut self, tx: &Transaction) -> Result<Lsn> {
        if tx.end_lsn <= self.shard.applied() {
            return Ok(Lsn::ZERO); // already durable (replayed after a reconnect)
        }
        self.shard.apply(tx)?;
        self.stats
            .transactions_applied
            .fetch_add(1, Ordering::Relaxed);
        self.stats
            .rows_applied
            .fetch_add(tx.changes.len() as u64, Ordering::Relaxed);
        metrics::counter!(crate::metrics::TRANSACTIONS_APPLIED).increment(1);
        Ok(tx.end_lsn)
    }

    fn finish_snapshot(&mut self, lsn: Lsn) -> Result<()> {
        self.shard.commit(lsn)?;
        self.checkpoint.snapshot_lsn = lsn.to_string();
        self.checkpoint.snapshot_done = true;
        self.write_checkpoint(lsn)
    }

    fn write_checkpoint(&mut self, lsn: Lsn) -> Result<()> {
        self.checkpoint.lsn = lsn.to_string();
        self.checkpoint.store(&self.data_dir)
    }
}
