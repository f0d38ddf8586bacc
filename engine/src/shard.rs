//! The shard engine: every partition this indexer holds, the apply logic that turns source
//! transactions into partition writes, group commit, and the atomically swapped read view.
//! Synchronous; the applier thread owns it.
//!
//! Replays are harmless by construction: each change is, for every partition P of its index,
//! "key K is present in P with this document, or absent", and P skips every transaction at
//! or below its own durable checkpoint. A partition's state is therefore a pure function of
//! the ordered changes after its checkpoint, whatever crashed where.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use tantivy::Searcher;

use crate::change::{Cell, Change, ChangeEvent, Op, Transaction};
use crate::document::{map_row, row_key, Document, MapLimits, Mapped, RawRow, Rejection};
use crate::error::Result;
use crate::partition::{CommitItem, Derived, Fields, FreshLayer, Partition};
use crate::schema::ResolvedIndex;
use wire::Lsn;

pub type PartitionId = (usize, String);

/// Fills cells into a row; unchanged TOAST values come from `current` (none: NULL).
fn cells_to_raw(cells: &[Cell], current: Option<&RawRow>) -> RawRow {
    cells
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            Cell::Value(v) => v.clone(),
            Cell::UnchangedToast => current.and_then(|r| r.get(i).cloned().flatten()),
        })
        .collect()
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
}

/// Where the shard reports what readers and operators need to know. The indexer's status
/// implements it (counters, logs, metrics, the change feed's ring).
pub trait Observer: Send + Sync {
    /// A row, or one of its fields, could not be indexed (the rest of it was).
    fn rejected(&self, region: &str, rejection: Rejection);
    /// The change feed restarts at `lsn` (open, snapshot): nothing before it is known.
    fn feed_reset(&self, lsn: Lsn);
    /// `rows` row changes and these feed events became searchable, up to `lsn`.
    fn searchable(&self, lsn: Lsn, rows: usize, events: Vec<ChangeEvent>);
}

/// An observer that keeps nothing (engine tests, tools).
pub struct Unobserved;

impl Observer for Unobserved {
    fn rejected(&self, _: &str, _: Rejection) {}
    fn feed_reset(&self, _: Lsn) {}
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
        let mut partitions = BTreeMap::new();
        for ix in &indexes {
            let dir = data_dir.join("partitions").join(&ix.name);
            if !dir.exists() {
                continue;
            }
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let region = entry.file_name().to_string_lossy().into_owned();
                if entry.file_type()?.is_dir() && crate::schema::is_region_name(&region) {
                    let p = Partition::open(&entry.path(), ix, &region, writer_memory)?;
                    partitions.insert((ix.ordinal, region), p);
                }
            }
        }
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

    /// Snapshot rows into fresh partitions: no lookups, no deletes.
    pub fn add_snapshot_rows(&mut self, index: usize, rows: Vec<RawRow>) -> Result<()> {
        for raw in rows {
            self.batch_rows += 1;
            match map_row(&self.indexes[index], raw, &self.limits) {
                Mapped::Doc(doc, rejections) => {
                    for r in rejections {
                        self.reject(&doc.region, r);
                    }
                    let region = doc.region.clone();
                    self.partition(index, &region)?.add_new(&doc)?;
                }
                Mapped::Skip(Some(r)) => self.reject("", r),
                Mapped::Skip(None) => {}
            }
        }
        Ok(())
    }

    /// Buffers one source transaction into the partitions it touches (not yet visible).
    pub fn apply(&mut self, tx: &Transaction) -> Result<()> {
        self.event_at = (tx.end_lsn, 0);
        for change in &tx.changes {
            self.batch_rows += 1;
            match change {
                Change::Upsert {
                    index,
                    old_key,
                    new,
                } => self.apply_upsert(tx.end_lsn, *index, old_key.as_deref(), new)?,
                Change::Delete { index, old } => {
                    let raw = cells_to_raw(old, None);
                    match row_key(&self.indexes[*index], &raw) {
                        Some(key) => self.set_everywhere(tx.end_lsn, *index, &key, None)?,
                        None => self.reject(
                            "",
                            self.rejection(*index, "", "primary_key", "delete without key"),
                        ),
                    }
                }
                Change::Truncate { index } => {
                    self.event(*index, None, Op::Truncate, None);
                    for p in self.partitions.values_mut() {
                        if p.index == *index && tx.end_lsn > p.checkpoint() {
                            p.truncate(tx.end_lsn);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn event(&mut self, index: usize, key: Option<&str>, op: Op, region: Option<&str>) {
        let (lsn, n) = self.event_at;
        self.events.push(ChangeEvent {
            lsn,
            n,
            index,
            key: key.map(str::to_owned),
            op,
            region: region.map(str::to_owned),
        });
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
        let key_of = |cells: &[Cell]| row_key(ix, &cells_to_raw(cells, None));
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
            let raw = cells_to_raw(new, current.as_ref());
            return self.upsert_raw(lsn, index, &key, raw);
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
        let raw = cells_to_raw(new, current.as_ref());
        self.upsert_raw(lsn, index, &key, raw)
    }

    fn upsert_raw(&mut self, lsn: Lsn, index: usize, key: &str, raw: RawRow) -> Result<()> {
        match map_row(&self.indexes[index], raw, &self.limits) {
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
    fn current_row(&self, index: usize, key: &str) -> Result<Option<RawRow>> {
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
        }
        match doc {
            Some(d) => self.event(index, Some(key), Op::Upsert, Some(&d.region.clone())),
            None => self.event(index, Some(key), Op::Delete, None),
        }
        for p in self.partitions.values_mut() {
            if p.index != index || lsn <= p.checkpoint() {
                continue;
            }
            let want = doc.filter(|d| d.region == p.region);
            if want.is_some() || p.contains(key)? {
                p.set(key, want, lsn);
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

    /// Snapshot rows are committed in one go when the copy is complete.
    pub fn commit_snapshot(&mut self, lsn: Lsn) -> Result<Lsn> {
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
        let partitions = self
            .partitions
            .iter()
            .map(|(id, p)| {
                (
                    id.clone(),
                    PartitionView {
                        searcher: p.searcher(),
                        fields: p.fields().clone(),
                        fresh: p.fresh(),
                        checkpoint: p.checkpoint(),
                        geo: p.geo(),
                        vectors: p.vectors(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition;

    fn index() -> ResolvedIndex {
        crate::schema::test_index(
            &["id", "region", "body", "lat", "lon"],
            Some(2),
            Some((3, 4)),
            None,
        )
    }

    fn upsert(id: u32, region: &str, body: &str) -> Change {
        let cells = [
            Some(id.to_string()),
            Some(region.into()),
            Some(body.into()),
            Some("1".into()),
            Some("2".into()),
        ];
        Change::Upsert {
            index: 0,
            old_key: None,
            new: cells.into_iter().map(Cell::Value).collect(),
        }
    }

    fn tx(lsn: u64, changes: Vec<Change>) -> Transaction {
        Transaction::at(lsn, changes)
    }

    /// key → (region, hash) of everything a reader sees.
    fn visible(view: &ShardView) -> BTreeMap<String, (String, u64)> {
        let mut out = BTreeMap::new();
        for ((_, region), p) in &view.partitions {
            for (k, h) in partition::dump(&p.searcher, &p.fields, &p.fresh, region).unwrap() {
                assert!(
                    out.insert(k.clone(), (region.clone(), h)).is_none(),
                    "key {k} visible twice"
                );
            }
        }
        out
    }

    fn open(dir: &Path, view: Arc<ViewCell>, applied: Lsn) -> Shard {
        let limits = MapLimits {
            max_text_bytes: 1000,
            owned_regions: vec![],
        };
        Shard::open(
            dir,
            vec![index()],
            limits,
            16 << 20,
            Arc::new(Unobserved),
            view,
            applied,
        )
        .unwrap()
    }

    #[test]
    fn writes_are_searchable_before_durable_and_unchanged_by_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let view = Arc::new(ViewCell::default());
        let mut shard = open(dir.path(), view.clone(), Lsn::ZERO);
        shard
            .apply(&tx(
                10,
                vec![
                    upsert(1, "eu", "a"),
                    upsert(2, "eu", "b"),
                    upsert(3, "as", "c"),
                ],
            ))
            .unwrap();
        shard.make_searchable(Lsn(10));
        let before = visible(&view.load().unwrap());
        assert_eq!(before.len(), 3);
        assert_eq!(
            view.load().unwrap().durable,
            Lsn::ZERO,
            "nothing durable yet"
        );

        // A commit job runs while more is applied: a move of key 1 and a delete of key 2.
        let job = shard.take_commit_job().unwrap();
        let old = delete_of("2", 5);
        shard
            .apply(&tx(20, vec![upsert(1, "as", "moved"), old]))
            .unwrap();
        shard.make_searchable(Lsn(20));
        let during = visible(&view.load().unwrap());
        shard.commit_done(job.run().unwrap()).unwrap();
        let after = visible(&view.load().unwrap());
        assert_eq!(
            during, after,
            "a finished commit changes nothing a reader sees"
        );
        assert_eq!(after.keys().cloned().collect::<Vec<_>>(), ["1", "3"]);
        assert_eq!(after["1"].0, "as");
        assert_eq!(view.load().unwrap().durable, Lsn(10));
        assert!(
            shard.has_uncommitted(),
            "the second transaction is not durable yet"
        );

        assert_eq!(shard.commit().unwrap(), Lsn(20));
        assert_eq!(visible(&view.load().unwrap()), after);
        let docs: u64 = view
            .load()
            .unwrap()
            .partitions
            .values()
            .map(|p| p.documents().unwrap())
            .sum();
        assert_eq!(docs, 2);
        drop(shard);

        // Reopened, the partitions hold exactly what was durable; replaying an already
        // durable transaction changes nothing.
        let view = Arc::new(ViewCell::default());
        let mut shard = open(dir.path(), view.clone(), Lsn(20));
        assert_eq!(visible(&view.load().unwrap()), after);
        shard
            .apply(&tx(10, vec![upsert(1, "eu", "a"), upsert(2, "eu", "b")]))
            .unwrap();
        shard.make_searchable(Lsn(20));
        shard.commit().unwrap();
        assert_eq!(visible(&view.load().unwrap()), after);
    }

    #[test]
    fn truncate_hides_committed_documents_until_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let view = Arc::new(ViewCell::default());
        let mut shard = open(dir.path(), view.clone(), Lsn::ZERO);
        shard
            .apply(&tx(10, vec![upsert(1, "eu", "a"), upsert(2, "as", "b")]))
            .unwrap();
        shard.make_searchable(Lsn(10));
        shard.commit().unwrap();
        shard
            .apply(&tx(
                20,
                vec![Change::Truncate { index: 0 }, upsert(3, "eu", "c")],
            ))
            .unwrap();
        shard.make_searchable(Lsn(20));
        let seen = visible(&view.load().unwrap());
        assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), ["3"]);
        shard.commit().unwrap();
        assert_eq!(visible(&view.load().unwrap()), seen);
    }
}

#[cfg(test)]
mod vector_store_tests {
    use super::*;

    #[test]
    fn snapshot_vectors_reach_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let ix = crate::schema::test_index(&["id", "region", "emb"], None, None, Some((2, 2)));
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![ix], 100).unwrap();
        shard
            .add_snapshot_rows(
                0,
                vec![vec![
                    Some("1".into()),
                    Some("eu".into()),
                    Some("{1,0}".into()),
                ]],
            )
            .unwrap();
        shard.commit_snapshot(Lsn(5)).unwrap();
        let v = view.load().unwrap();
        let p = v.partitions.values().next().unwrap();
        assert_eq!(p.vectors.as_ref().unwrap().len(), 1);
    }
}

#[cfg(test)]
mod engine_answers {
    use super::*;
    use crate::search::{self, GeoQuery, Scope, VectorQuery};

    fn index() -> ResolvedIndex {
        crate::schema::test_index(
            &["id", "region", "lat", "lon", "emb"],
            None,
            Some((2, 3)),
            Some((4, 2)),
        )
    }

    fn row(id: u32, region: &str, lat: f64, emb: &str) -> Change {
        let cells = [
            Some(id.to_string()),
            Some(region.into()),
            Some(lat.to_string()),
            Some("0".into()),
            Some(emb.into()),
        ];
        Change::Upsert {
            index: 0,
            old_key: None,
            new: cells.into_iter().map(Cell::Value).collect(),
        }
    }

    fn answers(view: &ShardView) -> (Vec<String>, Vec<String>) {
        let scope = Scope {
            index: 0,
            regions: vec![],
        };
        let geo = search::geo(
            view,
            &scope,
            &GeoQuery::Within {
                lat: 0.0,
                lon: 0.0,
                radius_m: 2e7,
            },
            100,
        );
        let q = VectorQuery {
            values: vec![1.0, 0.0],
            k: 100,
            ef: None,
            exact: false,
            filter: None,
            fields_filter: None,
        };
        let vec = search::vector(view, &scope, &q).unwrap();
        let mut g: Vec<String> = geo
            .into_iter()
            .map(|h| format!("{}@{}", h.key, h.region))
            .collect();
        let mut v: Vec<String> = vec
            .into_iter()
            .map(|h| format!("{}@{}", h.key, h.region))
            .collect();
        g.sort();
        v.sort();
        (g, v)
    }

    #[test]
    fn truncate_moves_and_deletes_reach_every_engine_before_and_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![index()], 100).unwrap();
        let tx = Transaction::at;
        shard
            .apply(&tx(
                10,
                vec![
                    row(1, "eu", 1.0, "{1,0}"),
                    row(2, "eu", 2.0, "{0,1}"),
                    row(3, "as", 3.0, "{1,1}"),
                ],
            ))
            .unwrap();
        shard.make_searchable(Lsn(10));
        shard.commit().unwrap();
        for job in shard.take_graph_jobs() {
            job.run(&std::sync::atomic::AtomicBool::new(false));
        }
        let all = (
            vec!["1@eu".to_owned(), "2@eu".into(), "3@as".into()],
            vec!["1@eu".to_owned(), "2@eu".into(), "3@as".into()],
        );
        assert_eq!(answers(&view.load().unwrap()), all);

        // A move and a delete, searchable before they are durable, equal after.
        let delete = delete_of("2", 5);
        shard
            .apply(&tx(20, vec![row(1, "as", 1.0, "{1,0}"), delete]))
            .unwrap();
        shard.make_searchable(Lsn(20));
        let moved = (
            vec!["1@as".to_owned(), "3@as".into()],
            vec!["1@as".to_owned(), "3@as".into()],
        );
        assert_eq!(answers(&view.load().unwrap()), moved);
        shard.commit().unwrap();
        assert_eq!(
            answers(&view.load().unwrap()),
            moved,
            "before the graph has the new version"
        );
        for job in shard.take_graph_jobs() {
            job.run(&std::sync::atomic::AtomicBool::new(false));
        }
        assert_eq!(answers(&view.load().unwrap()), moved, "after");

        // TRUNCATE then one row: only that row, before and after the commit that rebuilds.
        shard
            .apply(&tx(
                30,
                vec![Change::Truncate { index: 0 }, row(4, "eu", 4.0, "{2,0}")],
            ))
            .unwrap();
        shard.make_searchable(Lsn(30));
        let only = (vec!["4@eu".to_owned()], vec!["4@eu".to_owned()]);
        assert_eq!(answers(&view.load().unwrap()), only);
        shard.commit().unwrap();
        assert_eq!(answers(&view.load().unwrap()), only);
        for job in shard.take_graph_jobs() {
            job.run(&std::sync::atomic::AtomicBool::new(false));
        }
        assert_eq!(answers(&view.load().unwrap()), only);
    }
}

/// A DELETE of `key` as pgoutput sends it: the key cell, the others empty.
#[cfg(test)]
fn delete_of(key: &str, columns: usize) -> Change {
    let mut old = vec![Cell::Value(None); columns];
    old[0] = Cell::Value(Some(key.into()));
    Change::Delete { index: 0, old }
}

#[cfg(test)]
mod text_answers {
    use super::*;
    use crate::search::{self, Scope, TextSearch};
    use crate::text::{Operator, TextQuery};

    fn index() -> ResolvedIndex {
        let mut ix =
            crate::schema::test_index(&["id", "region", "name", "body"], Some(3), None, None);
        ix.text.insert(
            0,
            crate::schema::TextSpec {
                column: 2,
                boost: 2.0,
                language: None,
            },
        );
        ix
    }

    fn row(id: u32, region: &str, name: &str, body: &str) -> Change {
        let cells = [
            Some(id.to_string()),
            Some(region.into()),
            Some(name.into()),
            Some(body.into()),
        ];
        Change::Upsert {
            index: 0,
            old_key: None,
            new: cells.into_iter().map(Cell::Value).collect(),
        }
    }

    /// (key@region, score) best first.
    fn find(view: &ShardView, q: &str, op: Operator) -> Vec<(String, f32)> {
        let (_, fields) = crate::partition::Fields::schema(&index());
        let search = TextSearch {
            query: TextQuery::parse(q, op, &fields.text).unwrap(),
            limit: 100,
            offset: 0,
            filter: None,
            fields_filter: None,
            highlight: true,
            sort: None,
            facets: vec![],
        };
        let scope = Scope {
            index: 0,
            regions: vec![],
        };
        search::text(view, &scope, &search)
            .unwrap()
            .hits
            .into_iter()
            .map(|h| (format!("{}@{}", h.key, h.region), h.score.unwrap()))
            .collect()
    }

    fn keys(hits: &[(String, f32)]) -> Vec<&str> {
        hits.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn fresh_and_committed_documents_rank_alike_and_shadow_correctly() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![index()], 10_000).unwrap();
        let tx = Transaction::at;
        shard
            .apply(&tx(
                10,
                vec![
                    row(1, "eu", "Paris", "Capital of France, on the Seine."),
                    row(
                        2,
                        "na",
                        "Paris",
                        "A city in Texas named after Paris, France.",
                    ),
                    row(
                        3,
                        "eu",
                        "Lyon",
                        "A city in France on the Rhône; not far from Paris.",
                    ),
                    row(4, "as", "東京", "Tokyo, Japan. Also known as 東京都."),
                    row(5, "eu", "Zürich", "Largest city of Switzerland."),
                ],
            ))
            .unwrap();
        shard.make_searchable(Lsn(10));
        let v = view.load().unwrap();
        let fresh = find(&v, "paris", Operator::And);
        // The name boost puts the two Parises first (Texas's also says Paris in its body).
        assert_eq!(keys(&fresh)[..2], ["2@na", "1@eu"]);
        assert_eq!(keys(&fresh)[2], "3@eu");

        shard.commit().unwrap();
        let v = view.load().unwrap();
        let committed = find(&v, "paris", Operator::And);
        assert_eq!(keys(&committed), keys(&fresh));
        for ((_, a), (_, b)) in fresh.iter().zip(&committed) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs(),
                "fresh {a} vs committed {b}"
            );
        }

        // Query forms.
        assert_eq!(
            keys(&find(&v, "\"capital of france\"", Operator::And)),
            ["1@eu"]
        );
        assert_eq!(
            keys(&find(&v, "\"france capital\"", Operator::And)),
            Vec::<&str>::new()
        );
        assert_eq!(
            keys(&find(&v, "paris -texas", Operator::And)),
            ["1@eu", "3@eu"]
        );
        assert_eq!(keys(&find(&v, "name:paris texas", Operator::And)), ["2@na"]);
        assert_eq!(keys(&find(&v, "zurich", Operator::And)), ["5@eu"], "folded");
        assert_eq!(keys(&find(&v, "zur*", Operator::And)), ["5@eu"]);
        assert_eq!(keys(&find(&v, "swizerland~1", Operator::And)), ["5@eu"]);
        assert!(find(&v, "swizterlnd~1", Operator::And).is_empty());
        assert_eq!(
            keys(&find(&v, "京都", Operator::And)),
            ["4@as"],
            "CJK bigram"
        );
        let mut either = keys(&find(&v, "texas OR tokyo", Operator::And))
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        either.sort();
        assert_eq!(either, ["2@na", "4@as"]);
        assert_eq!(find(&v, "texas tokyo", Operator::And).len(), 0);
        assert_eq!(find(&v, "texas tokyo", Operator::Or).len(), 2);

        // An update that drops the word hides the committed version at once; a delete too.
        shard
            .apply(&tx(
                20,
                vec![
                    row(1, "eu", "Paname", "Capital of France."),
                    delete_of("3", 4),
                ],
            ))
            .unwrap();
        shard.make_searchable(Lsn(20));
        let v = view.load().unwrap();
        assert_eq!(keys(&find(&v, "paris", Operator::And)), ["2@na"]);
        assert_eq!(keys(&find(&v, "paname", Operator::And)), ["1@eu"]);
        shard.commit().unwrap();
        let v = view.load().unwrap();
        assert_eq!(keys(&find(&v, "paris", Operator::And)), ["2@na"]);

        // Snippets mark the matched words.
        let (_, fields) = crate::partition::Fields::schema(&index());
        let search = TextSearch {
            query: TextQuery::parse("texas", Operator::And, &fields.text).unwrap(),
            limit: 10,
            offset: 0,
            filter: None,
            fields_filter: None,
            highlight: true,
            sort: None,
            facets: vec![],
        };
        let scope = Scope {
            index: 0,
            regions: vec![],
        };
        let answer = search::text(&v, &scope, &search).unwrap();
        assert_eq!(answer.total, 1);
        assert_eq!(answer.hits[0].highlights.len(), 1);
        assert!(answer.hits[0].highlights[0].1.contains("<b>Texas</b>"));
    }
}
