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

use crate::catalog::ResolvedIndex;
use crate::document::{map_row, row_key, Document, MapLimits, Mapped, RawRow, Rejection};
use crate::error::Result;
use crate::lsn::Lsn;
use crate::partition::{Fields, Partition};
use crate::status::Stats;

/// One column value in a change: pgoutput may say a TOASTed value is unchanged.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Value(Option<String>),
    UnchangedToast,
}

/// A row change, with cells aligned to the index's configured columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// INSERT or UPDATE. `old_key` is set when an UPDATE changed the primary key.
    Upsert {
        index: usize,
        old_key: Option<Vec<Cell>>,
        new: Vec<Cell>,
    },
    /// DELETE; only the key cells need be present.
    Delete {
        index: usize,
        old: Vec<Cell>,
    },
    Truncate {
        index: usize,
    },
}

/// A committed source transaction, restricted to configured tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// The commit's end LSN: the position to confirm once this is durable.
    pub end_lsn: Lsn,
    pub commit_time_micros: i64,
    pub changes: Vec<Change>,
}

pub type PartitionId = (usize, String);

/// What readers see: committed searchers of every partition, swapped all at once after a
/// group commit so no reader sees half of a transaction.
pub struct ShardView {
    pub applied: Lsn,
    pub partitions: BTreeMap<PartitionId, PartitionView>,
}

#[derive(Clone)]
pub struct PartitionView {
    pub searcher: Searcher,
    pub fields: Fields,
    pub checkpoint: Lsn,
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
    stats: Arc<Stats>,
    applied: Lsn,
    batch_rows: usize,
}

impl Shard {
    /// Opens every partition found under `data_dir/partitions/<index>/<region>`.
    pub fn open(
        data_dir: &Path,
        indexes: Vec<ResolvedIndex>,
        limits: MapLimits,
        writer_memory: usize,
        stats: Arc<Stats>,
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
                if entry.file_type()?.is_dir() && crate::config::is_region_name(&region) {
                    let p = Partition::open(&entry.path(), ix, &region, writer_memory)?;
                    partitions.insert((ix.ordinal, region), p);
                }
            }
        }
        let shard = Shard {
            indexes,
            data_dir: data_dir.to_owned(),
            partitions,
            limits,
            writer_memory,
            view,
            stats,
            applied,
            batch_rows: 0,
        };
        shard.publish();
        Ok(shard)
    }

    /// Removes every partition from disk (before a fresh snapshot).
    pub fn wipe(data_dir: &Path) -> Result<()> {
        let dir = data_dir.join("partitions");
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(())
    }

    pub fn indexes(&self) -> &[ResolvedIndex] {
        &self.indexes
    }

    /// Row changes buffered since the last commit.
    pub fn batch_rows(&self) -> usize {
        self.batch_rows
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
        self.stats.record_rejection(region, r);
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
        for change in &tx.changes {
            self.batch_rows += 1;
            match change {
                Change::Upsert {
                    index,
                    old_key,
                    new,
                } => self.apply_upsert(tx.end_lsn, *index, old_key.as_deref(), new)?,
                Change::Delete { index, old } => {
                    let raw = self.cells_to_raw(*index, old, None);
                    match row_key(&self.indexes[*index], &raw) {
                        Some(key) => self.set_everywhere(tx.end_lsn, *index, &key, None)?,
                        None => self.reject(
                            "",
                            self.rejection(*index, "", "primary_key", "delete without key"),
                        ),
                    }
                }
                Change::Truncate { index } => {
                    for p in self.partitions.values_mut() {
                        if p.index == *index && tx.end_lsn > p.checkpoint() {
                            p.truncate()?;
                        }
                    }
                }
            }
        }
        Ok(())
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
        let key_of = |cells: &[Cell]| -> Option<String> {
            let raw: RawRow = cells
                .iter()
                .map(|c| match c {
                    Cell::Value(v) => v.clone(),
                    Cell::UnchangedToast => None,
                })
                .collect();
            row_key(ix, &raw)
        };
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
            let raw = self.cells_to_raw(index, new, current.as_ref());
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
        let raw = self.cells_to_raw(index, new, current.as_ref());
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

    /// Fills cells into a row; unchanged TOAST values come from `current`.
    fn cells_to_raw(&self, _index: usize, cells: &[Cell], current: Option<&RawRow>) -> RawRow {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| match c {
                Cell::Value(v) => v.clone(),
                Cell::UnchangedToast => current.and_then(|r| r.get(i).cloned().flatten()),
            })
            .collect()
    }

    /// The row currently stored for `key` in any partition of `index`, preferring partitions
    /// that are not ahead of the stream (after a crash, another may hold a later state).
    fn current_row(&self, index: usize, key: &str) -> Result<Option<RawRow>> {
        let mut ahead = None;
        for p in self.partitions.values().filter(|p| p.index == index) {
            if let Some(row) = p.get(key)? {
                if p.checkpoint() <= self.applied {
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
        for p in self.partitions.values_mut() {
            if p.index != index || lsn <= p.checkpoint() {
                continue;
            }
            let want = doc.filter(|d| d.region == p.region);
            if want.is_some() || p.contains(key)? {
                p.set(key, want)?;
            }
        }
        Ok(())
    }

    /// Makes everything buffered durable at `lsn`, then visible to readers at once.
    pub fn commit(&mut self, lsn: Lsn) -> Result<bool> {
        let started = Instant::now();
        // Partitions commit in parallel: most of a commit is fsync of new segment files, and
        // those of different partitions overlap well.
        let dirty: Vec<&mut Partition> = self
            .partitions
            .values_mut()
            .filter(|p| p.is_dirty())
            .collect();
        let wrote = !dirty.is_empty();
        if dirty.len() == 1 {
            dirty.into_iter().try_for_each(|p| p.commit(lsn))?;
        } else if wrote {
            std::thread::scope(|scope| {
                let handles: Vec<_> = dirty
                    .into_iter()
                    .map(|p| scope.spawn(move || p.commit(lsn)))
                    .collect();
                handles
                    .into_iter()
                    .try_for_each(|h| h.join().expect("partition commit thread panicked"))
            })?;
        }
        self.applied = self.applied.max(lsn);
        self.publish();
        metrics::counter!(crate::metrics::ROWS_APPLIED).increment(self.batch_rows as u64);
        self.batch_rows = 0;
        if wrote {
            metrics::counter!(crate::metrics::COMMITS).increment(1);
            metrics::histogram!(crate::metrics::COMMIT_SECONDS)
                .record(started.elapsed().as_secs_f64());
        }
        Ok(wrote)
    }

    pub fn applied(&self) -> Lsn {
        self.applied
    }

    fn publish(&self) {
        let partitions = self
            .partitions
            .iter()
            .map(|(id, p)| {
                (
                    id.clone(),
                    PartitionView {
                        searcher: p.searcher(),
                        fields: p.fields().clone(),
                        checkpoint: p.checkpoint(),
                    },
                )
            })
            .collect();
        self.view.store(Arc::new(ShardView {
            applied: self.applied,
            partitions,
        }));
        self.stats.advance_applied(self.applied);
    }
}
