//! The shard engine: every partition this indexer holds, the apply logic that turns source
//! transactions into partition writes, group commit, and the atomically swapped read view.
//! Synchronous; the applier thread owns it.
//! Long (~800 lines): apply, group commit and the view swap share the shard's state (applied
//! and durable LSNs, uncommitted rows, the commit in flight); large transactions are in
//! `shard/large.rs`, tests in `shard/tests.rs`.
//!
//! Replays are harmless by construction: each change is, for every partition P of its index,
//! "key K is present in P with this document, or absent", and P skips every transaction at
//! or below its own durable checkpoint. A partition's state is therefore a pure function of
//! the ordered changes after its checkpoint, whatever crashed where.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use rayon::prelude::*;
use tantivy::Searcher;

use crate::change::{Cell, Change, ChangeEvent, Op, Transaction};
use crate::document::{map, row_key, Document, MapLimits, Mapped, Rejection, Row};
use crate::error::Result;
use crate::filter::FilterValue;
use crate::partition::{CommitItem, Derived, Fields, FreshLayer, Partition};
use crate::schema::ResolvedIndex;
use wire::Lsn;

pub type PartitionId = (usize, String);

/// Fills cells into a row; unchanged TOAST values come from `current` (none: NULL), the
/// vector's as floats.
fn cells_to_row(cells: &[Cell], current: Option<&Row>, ix: &ResolvedIndex) -> Row {
    let raw = cells
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            Cell::Value(v) => v.clone(),
            Cell::UnchangedToast => current.and_then(|r| r.raw.get(i).cloned().flatten()),
        })
        .collect();
    let vector = match (ix.vector, current) {
        (Some(spec), Some(cur)) if cells.get(spec.column) == Some(&Cell::UnchangedToast) => {
            cur.vector.clone()
        }
        _ => None,
    };
    Row { raw, vector }
}

/// What readers see: per partition, the committed searcher overlaid with the fresh layer;
/// swapped all at once after each applied batch, so no reader sees half of a transaction.
pub struct ShardView {
    /// Everything up to here is searchable.
    pub applied: Lsn,
    /// Everything up to here is durable (and may be confirmed to Postgres).
    pub durable: Lsn,
    pub partitions: BTreeMap<PartitionId, PartitionView>,
}

#[derive(Clone)]
pub struct PartitionView {
    pub searcher: Searcher,
    /// The searcher's per-segment column handles, opened at first use.
    pub columns: Arc<crate::rows::Columns>,
    /// The committed documents `fresh` shadows, found by the first text query on the view.
    pub(crate) shadowed: std::sync::OnceLock<Arc<crate::search::shadow::Shadowed>>,
    pub fields: Fields,
    pub fresh: FreshLayer,
    /// LSN of the partition's last durable commit.
    pub checkpoint: Lsn,
    /// Points of the committed documents (overlay `fresh`).
    pub geo: Option<Arc<crate::geo::GeoIndex>>,
    /// Vectors of the committed documents (overlay `fresh`).
    pub vectors: Option<Arc<crate::vector::VectorStore>>,
    /// Approximate index of `vectors`; versions it may lack are in `recent_vectors`.
    pub graph: Option<Arc<crate::graph::Graph>>,
    pub recent_vectors: imbl::OrdMap<u64, u64>,
}

impl PartitionView {
    /// Documents a reader sees (committed overlaid with fresh); costs a lookup per fresh key.
    pub fn documents(&self) -> Result<u64> {
        crate::partition::visible_docs(&self.searcher, &self.fields, &self.fresh)
    }
}

#[derive(Default)]
pub struct ViewCell(RwLock<Option<Arc<ShardView>>>);

impl ViewCell {
    pub fn load(&self) -> Option<Arc<ShardView>> {
        self.0.read().unwrap().clone()
    }

    fn store(&self, v: Arc<ShardView>) {
        *self.0.write().unwrap() = Some(v);
    }
}

pub struct Shard {
    indexes: Vec<ResolvedIndex>,
    data_dir: PathBuf,
    partitions: BTreeMap<PartitionId, Partition>,
    limits: MapLimits,
    writer_memory: usize,
    view: Arc<ViewCell>,
    observer: Arc<dyn Observer>,
    commit_fault: Option<CommitFault>,
    /// Searchable up to here.
    applied: Lsn,
    /// Durable up to here.
    durable: Lsn,
    batch_rows: usize,
    /// Row changes applied but not yet handed to a commit, and since when.
    uncommitted_rows: usize,
    uncommitted_since: Option<Instant>,
    /// LSN of the commit job running on the committer, if any.
    in_flight: Option<Lsn>,
    /// Changes of the batch being applied, published to the feed once searchable.
    events: Vec<ChangeEvent>,
    /// Position of the next change event: the transaction's commit LSN, and a counter.
    event_at: (Lsn, u32),
    /// A large transaction being applied in parts (`large.rs`).
    large: Option<large::Large>,
    /// A segment merge ended while a commit ran: shown after it (`merge.rs`).
    merges_to_show: bool,
}

/// Where the shard reports what readers and operators need to know. The indexer's status
/// implements it (counters, logs, metrics, the change feed's ring).
pub trait Observer: Send + Sync {
    /// A row, or one of its fields, could not be indexed (the rest of it was).
    fn rejected(&self, region: &str, rejection: Rejection);
    /// The change feed restarts at `lsn` (open, snapshot): nothing before it is known.
    fn feed_reset(&self, lsn: Lsn);
    /// The changes up to `through` (within a large transaction) will not be published: more
    /// than the feed holds.
    fn feed_gap(&self, through: crate::change::Position);
    /// `rows` row changes and these feed events became searchable, up to `lsn`.
    fn searchable(&self, lsn: Lsn, rows: usize, events: Vec<ChangeEvent>);
}

/// An observer that keeps nothing (engine tests, tools).
pub struct Unobserved;

impl Observer for Unobserved {
    fn rejected(&self, _: &str, _: Rejection) {}
    fn feed_reset(&self, _: Lsn) {}
    fn feed_gap(&self, _: crate::change::Position) {}
    fn searchable(&self, _: Lsn, _: usize, _: Vec<ChangeEvent>) {}
}

/// A fault to inject into partition commits, for the tests that prove a failed commit stops
/// the process instead of stalling durability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitFault {
    /// The partition commit panics.
    Panic,
    /// The partition commit returns an I/O error.
    Error,
}

/// A durable commit of several partitions at one LSN, run off the applier thread.
pub struct CommitJob {
    pub lsn: Lsn,
    items: Vec<(PartitionId, CommitItem)>,
    fault: Option<CommitFault>,
}

/// Commits one partition; a panic becomes `Error::CommitFailed`, so the job always answers.
fn commit_item(
    (id, item): (PartitionId, CommitItem),
    lsn: Lsn,
    fault: Option<CommitFault>,
) -> Result<(PartitionId, Derived)> {
    let partition = format!("{}/{}", id.0, id.1);
    let run = std::panic::AssertUnwindSafe(|| {
        match fault {
            Some(CommitFault::Panic) => panic!("injected commit fault"),
            Some(CommitFault::Error) => {
                return Err(std::io::Error::other("injected commit fault").into())
            }
            None => {}
        }
        item.commit(lsn)
    });
    match std::panic::catch_unwind(run) {
        Ok(derived) => Ok((id, derived?)),
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panicked".into());
            Err(crate::Error::CommitFailed { partition, detail })
        }
    }
}

impl CommitJob {
    /// Commits every partition (in parallel: much of a commit is fsync of new segment files,
    /// and those of different partitions overlap well).
    pub fn run(self) -> Result<CommitDone> {
        let started = Instant::now();
        let (lsn, fault) = (self.lsn, self.fault);
        let mut items = self.items;
        let partitions = if items.len() == 1 {
            vec![commit_item(items.pop().expect("one item"), lsn, fault)?]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = items
                    .into_iter()
                    .map(|item| scope.spawn(move || commit_item(item, lsn, fault)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("commit_item catches panics"))
                    .collect::<Result<Vec<_>>>()
            })?
        };
        Ok(CommitDone {
            lsn,
            partitions,
            took: started.elapsed(),
        })
    }
}

/// A finished `CommitJob`.
pub struct CommitDone {
    pub lsn: Lsn,
    /// Each committed partition with its next committed structures.
    partitions: Vec<(PartitionId, Derived)>,
    /// How long the commit took.
    pub took: std::time::Duration,
}

impl Shard {
    /// Opens every partition found under `data_dir/partitions/<index>/<region>`.
    pub fn open(
        data_dir: &Path,
        indexes: Vec<ResolvedIndex>,
        limits: MapLimits,
        writer_memory: usize,
        observer: Arc<dyn Observer>,
        view: Arc<ViewCell>,
        applied: Lsn,
    ) -> Result<Shard> {
        let mut found = Vec::new();
        for ix in &indexes {
            let dir = data_dir.join("partitions").join(&ix.name);
            if !dir.exists() {
                continue;
            }
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let region = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type()?.is_dir() && crate::schema::is_region_name(&region) {
                    found.push((entry.path(), ix, region));
                }
            }
        }
        // Each partition rebuilds its geo index and vector store and reloads its graph on
        // opening (O(its documents)); nothing else runs yet, so they open side by side.
        let partitions = found
            .into_par_iter()
            .map(|(path, ix, region)| {
                let p = Partition::open(&path, ix, &region, writer_memory)?;
                Ok(((ix.ordinal, region), p))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        let mut shard = Shard {
            indexes,
            data_dir: data_dir.to_owned(),
            partitions,
            limits,
            writer_memory,
            view,
            observer,
            commit_fault: None,
            applied,
            durable: applied,
            batch_rows: 0,
            uncommitted_rows: 0,
            uncommitted_since: None,
            in_flight: None,
            events: Vec::new(),
            event_at: (applied, 0),
            large: None,
            merges_to_show: false,
        };
        shard.observer.feed_reset(applied);
        shard.publish(0, Vec::new());
        Ok(shard)
    }

    /// A shard on `dir` from the start, unobserved, with default limits (texts up to
    /// `max_text_bytes`, every region owned, 16 MB writers): for tests, tools and benchmarks.
    pub fn open_unobserved(
        dir: &Path,
        indexes: Vec<ResolvedIndex>,
        max_text_bytes: usize,
    ) -> Result<(Shard, Arc<ViewCell>)> {
        let view = Arc::new(ViewCell::default());
        let limits = MapLimits {
            max_text_bytes,
            owned_regions: vec![],
        };
        let shard = Shard::open(
            dir,
            indexes,
            limits,
            16 << 20,
            Arc::new(Unobserved),
            view.clone(),
            Lsn::ZERO,
        )?;
        Ok((shard, view))
    }

    /// Removes every partition from disk (before a fresh snapshot).
    pub fn wipe(data_dir: &Path) -> Result<()> {
        let dir = data_dir.join("partitions");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    /// Makes every later partition commit fail this way (tests of the failure path).
    pub fn inject_commit_fault(&mut self, fault: Option<CommitFault>) {
        self.commit_fault = fault;
    }

    pub fn indexes(&self) -> &[ResolvedIndex] {
        &self.indexes
    }

    /// Row changes applied since the batch began (see `make_searchable`).
    pub fn batch_rows(&self) -> usize {
        self.batch_rows
    }

    /// Row changes searchable but not yet durable.
    pub fn uncommitted_rows(&self) -> usize {
        self.uncommitted_rows
    }

    /// When the oldest change not yet durable was made searchable.
    pub fn uncommitted_since(&self) -> Option<Instant> {
        self.uncommitted_since
    }

    /// Whether anything applied is not durable yet (queued, or in a running commit).
    pub fn has_uncommitted(&self) -> bool {
        self.in_flight.is_some() || self.partitions.values().any(Partition::has_queued_writes)
    }

    pub fn commit_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    fn partition(&mut self, index: usize, region: &str) -> Result<&mut Partition> {
        let id = (index, region.to_owned());
        if !self.partitions.contains_key(&id) {
            let ix = &self.indexes[index];
            let dir = self.data_dir.join("partitions").join(&ix.name).join(region);
            let p = Partition::open(&dir, ix, region, self.writer_memory)?;
            tracing::info!(index = %ix.name, region, "created partition");
            self.partitions.insert(id.clone(), p);
        }
        Ok(self.partitions.get_mut(&id).expect("just inserted"))
    }

    fn reject(&self, region: &str, r: Rejection) {
        self.observer.rejected(region, r);
    }

    /// Snapshot rows into fresh partitions: no lookups, no deletes — unless `replace`, for a
    /// copy resumed after a crash, whose first rows a partition may hold already: then each
    /// row replaces its key's document in its partition.
    pub fn add_snapshot_rows(&mut self, index: usize, rows: Vec<Row>, replace: bool) -> Result<()> {
        for row in rows {
            self.batch_rows += 1;
            match map(&self.indexes[index], row, &self.limits) {
                Mapped::Doc(doc, rejections) => {
                    for r in rejections {
                        self.reject(&doc.region, r);
                    }
                    let region = doc.region.clone();
                    let partition = self.partition(index, &region)?;
                    partition.pause_merges(true);
                    if replace {
                        partition.replace_new(&doc)?;
                    } else {
                        partition.add_new(&doc)?;
                    }
                }
                Mapped::Skip(Some(r)) => self.reject("", r),
                Mapped::Skip(None) => {}
            }
        }
        Ok(())
    }

    /// Buffers one source transaction into the partitions it touches (not yet visible).
    pub fn apply(&mut self, tx: &Transaction) -> Result<()> {
        debug_assert!(self.large.is_none(), "a large transaction is open");
        self.event_at = (tx.end_lsn, 0);
        self.apply_changes(tx.end_lsn, &tx.changes)
    }

    /// Applies row changes of the transaction ending at `lsn`.
    fn apply_changes(&mut self, lsn: Lsn, changes: &[Change]) -> Result<()> {
        for change in changes {
            self.batch_rows += 1;
            match change {
                Change::Upsert {
                    index,
                    old_key,
                    new,
                } => self.apply_upsert(lsn, *index, old_key.as_deref(), new)?,
                Change::Delete { index, old } => {
                    let ix = &self.indexes[*index];
                    match row_key(ix, &cells_to_row(old, None, ix).raw) {
                        Some(key) => self.set_everywhere(lsn, *index, &key, None)?,
                        None => self.reject(
                            "",
                            self.rejection(*index, "", "primary_key", "delete without key"),
                        ),
                    }
                }
                Change::Truncate { index } => {
                    self.event(*index, None, Op::Truncate, None, None);
                    if self.large.is_some() {
                        self.large_truncate(*index)?;
                        continue;
                    }
                    for p in self.partitions.values_mut() {
                        if p.index == *index && lsn > p.checkpoint() {
                            p.truncate(lsn);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn event(
        &mut self,
        index: usize,
        key: Option<&str>,
        op: Op,
        region: Option<&str>,
        filters: Option<&[Option<FilterValue>]>,
    ) {
        let (lsn, n) = self.event_at;
        let event = ChangeEvent {
            lsn,
            n,
            index,
            key: key.map(str::to_owned),
            op,
            region: region.map(str::to_owned),
            filters: filters.filter(|f| !f.is_empty()).map(Arc::from),
        };
        match &mut self.large {
            Some(large) => large.keep_event(event),
            None => self.events.push(event),
        }
        self.event_at.1 += 1;
    }

    fn rejection(&self, index: usize, key: &str, field: &str, reason: &str) -> Rejection {
        Rejection {
            index: self.indexes[index].name.clone(),
            key: key.to_owned(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        }
    }

    fn apply_upsert(
        &mut self,
        lsn: Lsn,
        index: usize,
        old_key: Option<&[Cell]>,
        new: &[Cell],
    ) -> Result<()> {
        let ix = &self.indexes[index];
        let key_of = |cells: &[Cell]| row_key(ix, &cells_to_row(cells, None, ix).raw);
        let Some(key) = key_of(new) else {
            self.reject(
                "",
                self.rejection(index, "", "primary_key", "row without primary key"),
            );
            return Ok(());
        };
        let old = old_key.and_then(key_of).filter(|k| *k != key);
        if let Some(old) = &old {
            // Primary key changed: the old key's document goes away everywhere.
            let current = if new.contains(&Cell::UnchangedToast) {
                self.current_row(index, old)?
            } else {
                None
            };
            self.set_everywhere(lsn, index, old, None)?;
            let row = cells_to_row(new, current.as_ref(), &self.indexes[index]);
            return self.upsert_row(lsn, index, &key, row);
        }
        let current = if new.contains(&Cell::UnchangedToast) {
            let c = self.current_row(index, &key)?;
            if c.is_none() {
                let col = new
                    .iter()
                    .position(|c| *c == Cell::UnchangedToast)
                    .unwrap_or(0);
                let field = self.indexes[index].column_name(col).to_owned();
                self.reject(
                    "",
                    self.rejection(
                        index,
                        &key,
                        &field,
                        "unchanged TOAST value but no stored row to take it from",
                    ),
                );
            }
            c
        } else {
            None
        };
        let row = cells_to_row(new, current.as_ref(), &self.indexes[index]);
        self.upsert_row(lsn, index, &key, row)
    }

    fn upsert_row(&mut self, lsn: Lsn, index: usize, key: &str, row: Row) -> Result<()> {
        match map(&self.indexes[index], row, &self.limits) {
            Mapped::Doc(doc, rejections) => {
                for r in rejections {
                    self.reject(&doc.region, r);
                }
                self.set_everywhere(lsn, index, key, Some(&doc))
            }
            Mapped::Skip(rejection) => {
                if let Some(r) = rejection {
                    self.reject("", r);
                }
                self.set_everywhere(lsn, index, key, None)
            }
        }
    }

    /// The row currently stored for `key` in any partition of `index`, preferring partitions
    /// that are not ahead of the stream (after a crash, another may hold a later state).
    fn current_row(&mut self, index: usize, key: &str) -> Result<Option<Row>> {
        if let large::Known::Written(row) = self.large_row(index, key)? {
            return Ok(row);
        }
        let mut ahead = None;
        for p in self.partitions.values().filter(|p| p.index == index) {
            if let Some(row) = p.get(key)? {
                if p.checkpoint() <= self.durable {
                    return Ok(Some(row));
                }
                ahead.get_or_insert(row);
            }
        }
        Ok(ahead)
    }

    /// Makes `key` present with `doc` in `doc`'s partition and absent in every other
    /// partition of `index`, in each partition not already durable past `lsn`.
    fn set_everywhere(
        &mut self,
        lsn: Lsn,
        index: usize,
        key: &str,
        doc: Option<&Document>,
    ) -> Result<()> {
        if let Some(d) = doc {
            self.partition(index, &d.region)?;
            self.event(
                index,
                Some(key),
                Op::Upsert,
                Some(&d.region),
                Some(&d.filters),
            );
        }
        if self.large.is_some() {
            if doc.is_none() {
                self.event(index, Some(key), Op::Delete, None, None);
            }
            self.large_set(index, key, doc.cloned());
            return Ok(());
        }
        // A delete's event says where the document was and what its filter values were.
        let mut deleted: Option<(String, Vec<Option<FilterValue>>)> = None;
        for p in self.partitions.values_mut() {
            if p.index != index || lsn <= p.checkpoint() {
                continue;
            }
            let want = doc.filter(|d| d.region == p.region);
            // A delete reads the document it finds once: its presence and its pre-image.
            let present = if want.is_some() {
                true
            } else if doc.is_none() && deleted.is_none() {
                match p.get(key)? {
                    Some(row) => {
                        let filters =
                            match crate::document::map(&self.indexes[index], row, &self.limits) {
                                Mapped::Doc(d, _) => d.filters,
                                Mapped::Skip(_) => Vec::new(),
                            };
                        deleted = Some((p.region.clone(), filters));
                        true
                    }
                    None => false,
                }
            } else {
                p.contains(key)?
            };
            if present {
                p.set(key, want, lsn);
            }
        }
        if doc.is_none() {
            match &deleted {
                Some((region, filters)) => {
                    let filters = (!filters.is_empty() || self.indexes[index].filters.is_empty())
                        .then_some(filters.as_slice());
                    self.event(index, Some(key), Op::Delete, Some(region), filters);
                }
                None => self.event(index, Some(key), Op::Delete, None, None),
            }
        }
        Ok(())
    }

    /// Makes everything applied so far searchable at `lsn`: readers get the new fresh layers
    /// of all partitions in one view swap. Not durable yet.
    pub fn make_searchable(&mut self, lsn: Lsn) {
        let rows = self.batch_rows;
        if self.batch_rows > 0 {
            self.uncommitted_rows += self.batch_rows;
            self.uncommitted_since.get_or_insert_with(Instant::now);
        }
        self.batch_rows = 0;
        self.applied = self.applied.max(lsn);
        if !self.has_uncommitted() {
            // Nothing to write (e.g. a transaction on columns or rows we do not keep).
            self.durable = self.applied;
        }
        let events = std::mem::take(&mut self.events);
        self.publish(rows, events);
    }

    /// Hands everything applied so far to a commit job at the applied LSN, unless one is
    /// already running or nothing waits. The caller runs the job and reports `commit_done`.
    pub fn take_commit_job(&mut self) -> Option<CommitJob> {
        if self.in_flight.is_some() {
            return None;
        }
        let lsn = self.applied;
        let items: Vec<(PartitionId, CommitItem)> = self
            .partitions
            .iter_mut()
            .filter(|(_, p)| p.has_queued_writes())
            .map(|(id, p)| (id.clone(), p.take_commit()))
            .collect();
        self.uncommitted_rows = 0;
        self.uncommitted_since = None;
        if items.is_empty() {
            self.durable = lsn;
            return None;
        }
        self.in_flight = Some(lsn);
        Some(CommitJob {
            lsn,
            items,
            fault: self.commit_fault,
        })
    }

    /// A commit job finished: its partitions are durable at its LSN; readers get the
    /// reloaded searchers with the fresh entries the commit covers dropped, in one swap.
    pub fn commit_done(&mut self, done: CommitDone) -> Result<()> {
        debug_assert_eq!(self.in_flight, Some(done.lsn));
        for (id, derived) in done.partitions {
            if let Some(p) = self.partitions.get_mut(&id) {
                p.committed(done.lsn, derived);
            }
        }
        self.in_flight = None;
        self.durable = self.durable.max(done.lsn);
        self.publish(0, Vec::new());
        self.show_merges();
        Ok(())
    }

    /// Makes everything applied so far durable, on this thread; returns the durable LSN.
    pub fn commit(&mut self) -> Result<Lsn> {
        debug_assert!(self.in_flight.is_none(), "a commit job is still running");
        if let Some(job) = self.take_commit_job() {
            let done = job.run()?;
            self.commit_done(done)?;
        }
        self.publish(0, Vec::new());
        Ok(self.durable)
    }

    /// Makes the snapshot rows added so far durable in every partition, without showing
    /// them: readers and the derived structures (geo, vectors, graph) stay as they were until
    /// `commit_snapshot`. A restart finds them committed (with no LSN) and rebuilds from them.
    pub fn persist_snapshot_rows(&mut self) -> Result<()> {
        self.partitions
            .par_iter_mut()
            .try_for_each(|(_, p)| p.persist_bulk())
    }

    /// Snapshot rows become searchable and durable in one go when the copy is complete.
    pub fn commit_snapshot(&mut self, lsn: Lsn) -> Result<Lsn> {
        for p in self.partitions.values_mut() {
            p.pause_merges(false);
        }
        self.make_searchable(lsn);
        let durable = self.commit()?;
        // The feed starts at the snapshot's consistent point: what came before is the copy.
        self.observer.feed_reset(lsn);
        Ok(durable)
    }

    pub fn durable(&self) -> Lsn {
        self.durable
    }

    pub fn applied(&self) -> Lsn {
        self.applied
    }

    /// Vectors committed since the last call, per partition, for the graph builder.
    pub fn take_graph_jobs(&mut self) -> Vec<crate::graph::GraphJob> {
        self.partitions
            .values_mut()
            .filter_map(Partition::take_graph_job)
            .collect()
    }

    /// Swaps the readers' view, then tells the observer what became searchable.
    fn publish(&mut self, rows: usize, events: Vec<ChangeEvent>) {
        for p in self.partitions.values_mut() {
            p.trim_graphed();
        }
        let before = self.view.load();
        let partitions = self
            .partitions
            .iter()
            .map(|(id, p)| {
                let searcher = p.searcher();
                let vectors = p.vectors();
                // Column handles stay valid while the searcher is the same generation (and
                // their slot maps while the vector store is the same); key tables while the
                // segment is there.
                let previous = before
                    .as_ref()
                    .and_then(|v| v.partitions.get(id))
                    .map(|v| v.columns.clone());
                let columns = previous
                    .clone()
                    .filter(|c| c.fits(&searcher, vectors.as_ref()))
                    .unwrap_or_else(|| {
                        Arc::new(crate::rows::Columns::new(
                            &searcher,
                            vectors.as_ref(),
                            previous.as_deref(),
                        ))
                    });
                (
                    id.clone(),
                    PartitionView {
                        searcher,
                        columns,
                        shadowed: Default::default(),
                        fields: p.fields().clone(),
                        fresh: p.fresh(),
                        checkpoint: p.checkpoint(),
                        geo: p.geo(),
                        vectors,
                        graph: p.graph(),
                        recent_vectors: p.recent_vectors(),
                    },
                )
            })
            .collect();
        self.view.store(Arc::new(ShardView {
            applied: self.applied,
            durable: self.durable,
            partitions,
        }));
        self.observer.searchable(self.applied, rows, events);
    }
}

mod large;
pub use large::{LargeMark, FEED_EVENTS_KEPT};
mod merge;

#[cfg(test)]
mod ranking_tests;
#[cfg(test)]
pub(crate) mod tests;
