//! The applier: a dedicated thread that owns the shard engine. It applies transactions in
//! natural batches (whatever is queued, bounded by rows and time) and makes each batch
//! searchable at once. On a timer or size bound it hands what it applied to a committer
//! thread (one commit at a time) and goes on applying; when the commit is durable, that LSN
//! is reported back for confirmation to Postgres.
//!
//! Long (~700 lines): the command loop, the snapshot copy's and large transactions' durable
//! progress, the quiet-time merges it starts and the graph builder thread it feeds all share
//! the applier's state (the shard, the checkpoint, the commit in flight).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::{Checkpoint, CopyMark, LargeMark};
use crate::config::ApplyConfig;
use crate::error::{Error, Result};
use crate::status::Stats;
use engine::change::Transaction;
use engine::document::Row;
use engine::shard::{CommitDone, PartitionId, Shard};
use wire::Lsn;

/// What decoded changes may take while they wait for the applier, in bytes (estimated from
/// their text), beside the `queue_transactions` bound on how many commands wait.
pub const QUEUE_BYTES: usize = 64 << 20;

/// The stream's allowance of waiting bytes: a command holds its share until applied.
pub type Budget = Arc<tokio::sync::Semaphore>;

pub fn budget() -> Budget {
    Arc::new(tokio::sync::Semaphore::new(QUEUE_BYTES >> 10))
}

/// A command's share of the budget, returned when it is dropped (once applied).
pub struct Held(#[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>);

impl Held {
    /// Waits until `bytes` (at most the whole budget) may wait for the applier.
    pub async fn take(budget: &Budget, bytes: usize) -> Held {
        let kib = bytes.div_ceil(1024).clamp(1, QUEUE_BYTES >> 10) as u32;
        Held(budget.clone().acquire_many_owned(kib).await.ok())
    }

    /// No share (tests, tools).
    pub fn none() -> Held {
        Held(None)
    }
}

pub enum ApplyCmd {
    SnapshotRows {
        index: usize,
        rows: Vec<Row>,
        held: Held,
        /// Where the copy is once these rows are in.
        at: CopyPosition,
    },
    /// The snapshot is complete at `lsn`: commit it and mark the checkpoint done.
    SnapshotDone {
        lsn: Lsn,
        /// The copy's position at its end (every table done), made durable before the commit
        /// that shows it, which rebuilds every partition's structures: a restart during that
        /// commit need not copy anything again.
        copied: CopyPosition,
        done: oneshot::Sender<Result<()>>,
    },
    /// A whole transaction; for a large one, its last part (`TxPart` came before).
    Tx { tx: Transaction, held: Held },
    /// A part of a large transaction, sent as it arrives (its end comes as `Tx`); `first`
    /// starts it over (re-sent after a reconnect).
    TxPart {
        final_lsn: Lsn,
        first: bool,
        changes: Vec<engine::change::Change>,
        held: Held,
    },
}

/// Where the snapshot's copy stands after a batch of rows.
#[derive(Debug, Clone)]
pub struct CopyPosition {
    /// The slot's consistent point: the stream starts there once the copy is done.
    pub consistent: Lsn,
    pub mark: CopyMark,
    /// The rows may be in a partition already (a copy resumed after a crash in which some
    /// partitions had made later rows durable than the mark): replace by key, not add.
    pub replace: bool,
}

/// How often the snapshot's copy is made durable with its position, so that a restart goes
/// on from there (a commit of every partition's writer; the rows stay invisible until the
/// copy is done): every second, or a tenth of the time this life has copied if longer (a
/// crash loses at most that share of a long copy, which then makes fewer, larger segments).
const SNAPSHOT_PERSIST_EVERY: Duration = Duration::from_secs(1);

/// How often a large transaction's progress is made durable (its writes so far committed,
/// invisible, and the count of its changes they cover recorded), so that a restart skips
/// them when Postgres sends the transaction again: as the snapshot's copy.
const LARGE_PERSIST_EVERY: Duration = SNAPSHOT_PERSIST_EVERY;

/// Changes of a large transaction applied between two looks at that clock.
const LARGE_PIECE: usize = 1_000;

pub struct Applier {
    pub shard: Shard,
    pub config: ApplyConfig,
    pub checkpoint: Checkpoint,
    pub data_dir: PathBuf,
    pub stats: Arc<Stats>,
}

/// Where the applier reports progress: searchable LSNs (freshness) and durable LSNs
/// (confirmation to Postgres).
pub struct Progress {
    pub searchable: watch::Sender<Lsn>,
    pub durable: watch::Sender<Lsn>,
}

enum Event {
    Cmd(Option<ApplyCmd>),
    Done(Result<CommitDone>),
    /// A commit or a quiet-time merge may be due.
    Tick,
    /// A merge of a partition's segments ended.
    Merged(
        PartitionId,
        Vec<tantivy::index::SegmentId>,
        tantivy::Result<Option<tantivy::SegmentMeta>>,
    ),
}

/// After this long without a write, partitions merge their small segments (`Shard::
/// start_quiet_merges`): queries then look at fewer segments.
const QUIET_MERGE_AFTER: Duration = Duration::from_secs(3);

/// After a merge is shown, the next look (more merges, and the files of merged-away segments
/// deleted) waits this long: readers of the last view have let go of them by then.
const AFTER_MERGE_SHOWN: Duration = Duration::from_secs(1);

struct FileState {
    last_write: Instant,
    /// LSN written in the checkpoint file.
    lsn: Lsn,
}

/// How often the checkpoint file follows the partitions' own commits (it only shortens the
/// replay after a restart; correctness rests on the partitions' commit payloads).
const CHECKPOINT_FILE_INTERVAL: Duration = Duration::from_secs(1);

impl Applier {
    /// Runs on its own thread until the command channel closes or an error occurs.
    pub fn spawn(
        self,
        rx: mpsc::Receiver<ApplyCmd>,
        progress: Progress,
    ) -> std::thread::JoinHandle<Result<()>> {
        std::thread::Builder::new()
            .name("applier".into())
            .spawn(move || self.run(rx, progress))
            .expect("spawn applier thread")
    }

    fn run(mut self, mut rx: mpsc::Receiver<ApplyCmd>, progress: Progress) -> Result<()> {
        // Only for waiting on several channels with a timeout; engine work never runs on it.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(Error::Io)?;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<CommitDone>>();
        let max_delay = Duration::from_millis(self.config.max_batch_delay_ms);
        let commit_interval = Duration::from_millis(self.config.commit_interval_ms);
        let mut files = FileState {
            last_write: Instant::now(),
            lsn: self.checkpoint.lsn,
        };
        let mut stash: Option<ApplyCmd> = None;
        // Quiet-time segment merges: running ones, when the next look is due, and whether
        // it has been taken since the last write or shown merge.
        let mut merges = futures_util::stream::FuturesUnordered::new();
        let mut quiet_look_at = Instant::now() + QUIET_MERGE_AFTER;
        let mut merges_started = false;
        // A life's first position is made durable sooner: lives may be short (crash loops).
        let copy_started = Instant::now();
        let mut copy_persisted = copy_started - SNAPSHOT_PERSIST_EVERY / 2;
        // The copy's position not yet made durable (kept for a clean stop).
        let mut copy_at: Option<CopyPosition> = None;
        // When the open large transaction's progress was last made durable.
        let mut large_persisted = Instant::now();
        // Graph inserts are slow: a builder thread takes committed vectors in order, while the
        // exact scanner covers what it has not inserted yet.
        let (graph_tx, graph_rx) = std::sync::mpsc::channel::<engine::graph::GraphJob>();
        // Set at a clean stop: skip queued inserts, dump what the graphs have, exit.
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let builder_stopping = stopping.clone();
        let unload_after = match self.config.graph_idle_unload_secs {
            0 => None,
            s => Some(Duration::from_secs(s)),
        };
        let builder = std::thread::Builder::new()
            .name("graph-builder".into())
            .spawn(move || {
                // Background work: on a small machine it must not take CPU from the apply path
                // (measured: commit-to-searchable p99 14 ms -> 430 ms when it competes), so it
                // runs at idle priority, and inserts on a pool of idle-priority threads, one
                // per core: they take whatever CPU nothing else wants.
                lower_to_idle();
                let pool = rayon::ThreadPoolBuilder::new()
                    .thread_name(|i| format!("graph-insert-{i}"))
                    .start_handler(|_| lower_to_idle())
                    .build()
                    .expect("graph insert threads");
                // Dumps make restarts cheap; they are written between inserts, when enough
                // changed, and once more when the applier stops.
                let mut latest: std::collections::HashMap<PathBuf, Arc<engine::graph::Graph>> =
                    std::collections::HashMap::new();
                let dump = |dir: &std::path::Path, g: &engine::graph::Graph| {
                    let started = Instant::now();
                    match g.dump(dir) {
                        Ok(()) => tracing::debug!(
                            dir = %dir.display(),
                            points = g.points(),
                            ms = started.elapsed().as_millis() as u64,
                            "vector graph dumped"
                        ),
                        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "vector graph dump failed"),
                    }
                };
                // Searches walk a copy of each graph that the builder renews after its
                // inserts (`Graph::freeze`); the one-second tick renews copies left behind.
                loop {
                    match graph_rx.recv_timeout(Duration::from_secs(1)) {
                        Ok(_) if builder_stopping.load(Ordering::Acquire) => {}
                        Ok(job) => {
                            let (dir, graph) = (job.dir.clone(), job.graph.clone());
                            pool.install(|| job.run(&builder_stopping));
                            graph.freeze_if_due();
                            if graph.wants_dump() {
                                dump(&dir, &graph);
                            }
                            latest.insert(dir, graph);
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            // An idle graph is dumped if its dump lacks points, then its
                            // insert structure is dropped: searches walk the copy.
                            for (dir, g) in &latest {
                                g.freeze_if_due();
                                let idle = unload_after.is_some_and(|a| g.wants_idle_dump(a));
                                if g.wants_dump() || idle {
                                    dump(dir, g);
                                }
                                if unload_after.is_some_and(|a| g.unload_if_idle(a)) {
                                    // The points were allocated on the insert threads.
                                    pool.broadcast(|_| crate::memory::release_freed());
                                    crate::memory::release_freed();
                                    tracing::info!(
                                        dir = %dir.display(),
                                        points = g.points(),
                                        "vector graph idle: its insert structure was dropped from memory"
                                    );
                                }
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            for (dir, g) in &latest {
                                if g.has_undumped() {
                                    dump(dir, g);
                                }
                            }
                            break;
                        }
                    }
                }
            })
            .expect("spawn graph builder");
        let feed_graphs = |shard: &mut Shard| {
            for job in shard.take_graph_jobs() {
                let _ = graph_tx.send(job);
            }
        };
        // A copy resumed after a restart: its partitions' vectors go to the graph builder once
        // it is done (no graph of a partial copy is built or dumped).
        if self.checkpoint.snapshot_done {
            feed_graphs(&mut self.shard);
        }
        loop {
            let event = match stash.take() {
                Some(c) => Event::Cmd(Some(c)),
                None => {
                    let mut wait = match (
                        self.shard.commit_in_flight(),
                        self.shard.uncommitted_since(),
                    ) {
                        (false, Some(since)) => commit_interval.saturating_sub(since.elapsed()),
                        _ => Duration::from_secs(3600),
                    };
                    if !merges_started && self.checkpoint.snapshot_done {
                        wait = wait.min(quiet_look_at.saturating_duration_since(Instant::now()));
                    }
                    // Bound memory: while a commit runs, stop taking work once twice the
                    // commit size waits behind it.
                    let accept = !(self.shard.commit_in_flight()
                        && self.shard.uncommitted_rows() >= 2 * self.config.max_uncommitted_rows);
                    timer.block_on(async {
                        tokio::select! {
                            biased;
                            done = done_rx.recv() => Event::Done(done.expect("applier holds a sender")),
                            cmd = rx.recv(), if accept => Event::Cmd(cmd),
                            Some((id, segments, outcome)) = futures_util::StreamExt::next(&mut merges),
                                if !merges.is_empty() => Event::Merged(id, segments, outcome),
                            _ = tokio::time::sleep(wait) => Event::Tick,
                        }
                    })
                }
            };
            if matches!(event, Event::Cmd(_) | Event::Done(_)) {
                quiet_look_at = Instant::now() + QUIET_MERGE_AFTER;
                merges_started = false;
            }
            match event {
                Event::Done(done) => {
                    // A failed commit stops the applier, and with it the process: the restart
                    // replays from the durable checkpoint.
                    let done = done.inspect_err(
                        |e| tracing::error!(error = %e, "partition commit failed; stopping"),
                    )?;
                    metrics::counter!(crate::metrics::COMMITS).increment(1);
                    metrics::histogram!(crate::metrics::COMMIT_SECONDS)
                        .record(done.took.as_secs_f64());
                    let lsn = done.lsn;
                    self.shard.commit_done(done)?;
                    feed_graphs(&mut self.shard);
                    self.after_durable(lsn, &progress)?;
                }
                Event::Tick => {
                    self.dispatch_commit(&done_tx, &progress, &mut files);
                    let quiet = Instant::now() >= quiet_look_at;
                    if !merges_started && quiet && self.checkpoint.snapshot_done {
                        merges_started = true;
                        for (id, merge) in self.shard.start_quiet_merges() {
                            merges.push(async move { (id, merge.segments, merge.done.await) });
                        }
                    }
                }
                Event::Merged(id, segments, outcome) => {
                    // A merge done may make another worth it (a larger level), and leaves the
                    // segments it replaced to delete: look again shortly.
                    if matches!(outcome, Ok(Some(_))) {
                        merges_started = false;
                        quiet_look_at = Instant::now() + AFTER_MERGE_SHOWN;
                    }
                    self.shard.merge_done(&id, &segments, outcome);
                }
                Event::Cmd(None) => break,
                Event::Cmd(Some(ApplyCmd::SnapshotRows {
                    index,
                    rows,
                    held,
                    at,
                })) => {
                    self.shard.add_snapshot_rows(index, rows, at.replace)?;
                    drop(held);
                    let every = SNAPSHOT_PERSIST_EVERY.max(copy_started.elapsed() / 10);
                    if copy_persisted.elapsed() >= every {
                        self.persist_copy(at)?;
                        copy_persisted = Instant::now();
                        copy_at = None;
                    } else {
                        copy_at = Some(at);
                    }
                }
                Event::Cmd(Some(ApplyCmd::SnapshotDone { lsn, copied, done })) => {
                    copy_at = None;
                    let result = self
                        .persist_copy(copied)
                        .and_then(|()| self.finish_snapshot(lsn));
                    feed_graphs(&mut self.shard);
                    let failed = result.is_err();
                    if !failed {
                        files.lsn = lsn;
                        self.stats.advance_applied(lsn);
                        progress.searchable.send_replace(lsn);
                        progress.durable.send_replace(lsn);
                    }
                    let _ = done.send(result);
                    if failed {
                        return Ok(());
                    }
                }
                Event::Cmd(Some(ApplyCmd::TxPart {
                    final_lsn,
                    first,
                    changes,
                    held,
                })) => {
                    if final_lsn < self.shard.applied() {
                        continue; // re-sent after a reconnect: applied already
                    }
                    if first && self.shard.large_open() == Some(final_lsn) {
                        // Sent again (a reconnect): it goes on where it was.
                        self.shard.resend_large();
                    } else if self.shard.large_open() != Some(final_lsn) {
                        self.abort_large()?;
                        self.await_running_commit(&timer, &mut done_rx, &progress)?;
                        // Part of it may be durable from an earlier life: skipped.
                        let durable_changes = self
                            .checkpoint
                            .large
                            .filter(|m| m.final_lsn == final_lsn)
                            .map_or(0, |m| m.changes);
                        let durable = self.shard.begin_large(final_lsn, durable_changes)?;
                        progress.durable.send_replace(durable);
                        feed_graphs(&mut self.shard);
                        // A life's first progress is made durable sooner: lives may be short.
                        large_persisted = Instant::now() - LARGE_PERSIST_EVERY / 2;
                    }
                    // In pieces, so that progress is made durable on time however large
                    // the parts the source cuts.
                    for piece in changes.chunks(LARGE_PIECE) {
                        self.shard.apply_part(piece)?;
                        if large_persisted.elapsed() >= LARGE_PERSIST_EVERY {
                            self.persist_large()?;
                            large_persisted = Instant::now();
                        }
                    }
                    self.stats
                        .rows_applied
                        .fetch_add(changes.len() as u64, Ordering::Relaxed);
                    drop(held);
                }
                Event::Cmd(Some(ApplyCmd::Tx { tx, held }))
                    if self.shard.large_open().is_some() =>
                {
                    // The last part of a large transaction: it becomes searchable and durable
                    // at once.
                    self.shard.apply_part(&tx.changes)?;
                    drop(held);
                    self.shard.finish_large(tx.end_lsn)?;
                    self.count_applied(tx.changes.len());
                    self.stats
                        .last_applied_commit
                        .store(tx.commit_time_micros, Ordering::Release);
                    self.stats.advance_applied(tx.end_lsn);
                    progress.searchable.send_replace(tx.end_lsn);
                    feed_graphs(&mut self.shard);
                    self.write_checkpoint(tx.end_lsn)?;
                    files.lsn = tx.end_lsn;
                    files.last_write = Instant::now();
                    self.after_durable(tx.end_lsn, &progress)?;
                }
                Event::Cmd(Some(ApplyCmd::Tx { tx, held })) => {
                    let started = Instant::now();
                    let mut end = self.apply_one(&tx)?;
                    drop(held);
                    let mut last_commit_time = tx.commit_time_micros;
                    // Natural batching: take what is already queued, up to the bounds; never
                    // wait for more when the queue is empty.
                    while self.shard.batch_rows() < self.config.max_batch_rows
                        && started.elapsed() < max_delay
                    {
                        match rx.try_recv() {
                            Ok(ApplyCmd::Tx { tx: next, held }) => {
                                end = self.apply_one(&next)?.max(end);
                                drop(held);
                                last_commit_time = next.commit_time_micros;
                            }
                            Ok(other) => {
                                stash = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if end > self.shard.applied() {
                        self.shard.make_searchable(end);
                        self.stats
                            .last_applied_commit
                            .store(last_commit_time, Ordering::Release);
                        self.stats.advance_applied(end);
                        progress.searchable.send_replace(end);
                        if !self.shard.has_uncommitted() {
                            progress.durable.send_replace(self.shard.durable());
                        }
                    }
                    let due = self
                        .shard
                        .uncommitted_since()
                        .is_some_and(|t| t.elapsed() >= commit_interval);
                    if due || self.shard.uncommitted_rows() >= self.config.max_uncommitted_rows {
                        self.dispatch_commit(&done_tx, &progress, &mut files);
                    }
                }
            }
        }
        // Clean stop: let a running commit finish, make the rest durable, leave the
        // checkpoint file there. A large transaction not yet whole is dropped (it is sent
        // again after the restart), what was made durable of it kept.
        self.abort_large()?;
        self.await_running_commit(&timer, &mut done_rx, &progress)?;
        if let Some(at) = copy_at.filter(|_| !self.checkpoint.snapshot_done) {
            // Stopped during the snapshot: the next start goes on from here.
            self.persist_copy(at)?;
        }
        if self.checkpoint.snapshot_done {
            let lsn = self.shard.commit()?;
            progress.durable.send_replace(lsn);
            if lsn > files.lsn {
                self.write_checkpoint(lsn)?;
            }
        }
        // Let the graph builder dump what it has (a restart then reloads instead of
        // rebuilding).
        stopping.store(true, Ordering::Release);
        drop(graph_tx);
        if builder.join().is_err() {
            tracing::warn!("graph builder panicked");
        }
        Ok(())
    }

    /// Starts a commit of everything applied so far on a committer thread, unless one runs.
    fn dispatch_commit(
        &mut self,
        done_tx: &mpsc::UnboundedSender<Result<CommitDone>>,
        progress: &Progress,
        files: &mut FileState,
    ) {
        match self.shard.take_commit_job() {
            Some(job) => {
                let done_tx = done_tx.clone();
                // The checkpoint file is written by the committer after the commit, not here:
                // its fsyncs wait for the journal with the commit's own, and would stall the
                // apply path for as long (measured: the p99 of commit-to-searchable).
                let file = (self.checkpoint.snapshot_done
                    && files.last_write.elapsed() >= CHECKPOINT_FILE_INTERVAL)
                    .then(|| {
                        files.last_write = Instant::now();
                        files.lsn = job.lsn;
                        self.checkpoint.lsn = job.lsn;
                        (self.checkpoint.clone(), self.data_dir.clone())
                    });
                std::thread::Builder::new()
                    .name("committer".into())
                    .spawn(move || {
                        let result = job.run().map_err(Error::from).and_then(|done| {
                            if let Some((cp, dir)) = file {
                                cp.store(&dir)?;
                            }
                            Ok(done)
                        });
                        let _ = done_tx.send(result);
                    })
                    .expect("spawn committer thread");
            }
            None if !self.shard.has_uncommitted() => {
                progress.durable.send_replace(self.shard.durable());
            }
            None => {}
        }
    }

    /// Waits for the commit job on the committer, if one runs, and takes its result.
    fn await_running_commit(
        &mut self,
        timer: &tokio::runtime::Runtime,
        done_rx: &mut mpsc::UnboundedReceiver<Result<CommitDone>>,
        progress: &Progress,
    ) -> Result<()> {
        if self.shard.commit_in_flight() {
            if let Some(done) = timer.block_on(done_rx.recv()) {
                let done = done?;
                let lsn = done.lsn;
                self.shard.commit_done(done)?;
                self.after_durable(lsn, progress)?;
            }
        }
        Ok(())
    }

    /// A commit is durable (and its checkpoint file, when due, written by the committer).
    fn after_durable(&mut self, lsn: Lsn, progress: &Progress) -> Result<()> {
        progress.durable.send_replace(lsn);
        Ok(())
    }

    /// Buffers one transaction; returns the LSN it brings the shard to.
    fn apply_one(&mut self, tx: &Transaction) -> Result<Lsn> {
        if tx.end_lsn <= self.shard.applied() {
            return Ok(Lsn::ZERO); // already applied (re-sent after a reconnect)
        }
        self.shard.apply(tx)?;
        self.count_applied(tx.changes.len());
        Ok(tx.end_lsn)
    }

    /// Counts one applied transaction (for a large one, its last part's) `rows`.
    fn count_applied(&self, rows: usize) {
        self.stats
            .transactions_applied
            .fetch_add(1, Ordering::Relaxed);
        self.stats
            .rows_applied
            .fetch_add(rows as u64, Ordering::Relaxed);
        metrics::counter!(crate::metrics::TRANSACTIONS_APPLIED).increment(1);
    }

    fn finish_snapshot(&mut self, lsn: Lsn) -> Result<()> {
        self.shard.commit_snapshot(lsn)?;
        self.checkpoint.snapshot_lsn = lsn;
        self.checkpoint.snapshot_done = true;
        self.checkpoint.copied = None;
        self.checkpoint.copying = None;
        self.write_checkpoint(lsn)
    }

    /// Makes the copy durable up to `at` in every partition, recording the position before
    /// (as `copying`: partitions may hold rows up to it) and after (as `copied`). A crash in
    /// between leaves some partitions ahead of `copied`; a resumed copy replaces the rows up
    /// to `copying` by key and adds the rest.
    fn persist_copy(&mut self, at: CopyPosition) -> Result<()> {
        let started = Instant::now();
        self.checkpoint.snapshot_lsn = at.consistent;
        self.checkpoint.copying = Some(at.mark.clone());
        self.checkpoint.store(&self.data_dir)?;
        self.shard.persist_snapshot_rows()?;
        self.checkpoint.copied = Some(at.mark);
        self.checkpoint.copying = None;
        self.checkpoint.store(&self.data_dir)?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            rows = self.checkpoint.copied.as_ref().map_or(0, |m| m.rows),
            "snapshot copy made durable"
        );
        Ok(())
    }

    fn write_checkpoint(&mut self, lsn: Lsn) -> Result<()> {
        self.checkpoint.lsn = lsn;
        // A large transaction's progress, once the transaction is applied whole.
        if self.checkpoint.large.is_some_and(|m| m.final_lsn < lsn) {
            self.checkpoint.large = None;
        }
        self.checkpoint.store(&self.data_dir)
    }

    /// Makes the open large transaction's writes so far durable, then records how many of
    /// its changes they cover.
    fn persist_large(&mut self) -> Result<()> {
        let started = Instant::now();
        if let Some(mark) = self.shard.persist_large()? {
            self.record_large(mark)?;
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                changes = mark.changes,
                "large transaction's progress made durable"
            );
        }
        Ok(())
    }

    /// Drops the open large transaction, keeping the record of what is durable of it.
    fn abort_large(&mut self) -> Result<()> {
        match self.shard.abort_large()? {
            Some(mark) => self.record_large(mark),
            None => Ok(()),
        }
    }

    fn record_large(&mut self, mark: engine::shard::LargeMark) -> Result<()> {
        self.checkpoint.large = Some(LargeMark {
            final_lsn: mark.final_lsn,
            changes: mark.changes,
        });
        self.checkpoint.store(&self.data_dir)
    }
}

/// Puts the calling thread at idle priority (`SCHED_IDLE`): it runs only when a core has
/// nothing else to do.
fn lower_to_idle() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let id = thread_priority::thread_native_id();
        if let Err(e) =
            thread_priority::set_thread_priority_and_policy(id, ThreadPriority::Min, idle)
        {
            tracing::warn!(error = ?e, "could not lower a graph builder thread's priority");
        }
    }
}
