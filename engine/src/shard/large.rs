//! Large transactions, applied in parts with bounded memory.
//!
//! A transaction normally enters the fresh layer whole and becomes searchable at once. One
//! of millions of rows cannot: the source hands it over in parts as it arrives, and the
//! shard writes each part straight to the partitions' tantivy writers (which spill segments
//! to disk within their memory budget). Readers keep the previous view until the one commit
//! at the transaction's end swaps everything in, so the transaction stays atomic; a crash
//! before that commit leaves nothing of it, and the stream replays it whole.
//!
//! What stays in memory grows by a few tens of bytes per row, not by the row: where each
//! key touched so far now lives (a 128-bit hash of index and key, its partition, where its
//! row sits in a spill file), the current part, and the change events the feed can hold. The
//! spill file answers the rare lookup of a row the transaction itself wrote earlier (an
//! unchanged TOAST value in a later update of the same row).
//!
//! Progress is made durable as it goes (`persist_large`): the partitions' writers commit
//! what the transaction wrote so far with their previous LSN as payload, and the caller
//! records how many of its changes that covers. Postgres sends the whole transaction again
//! after any restart, in the same order; the changes already durable are then skipped
//! (`begin_large` with that count), so a process restarted every few seconds still gets
//! through a transaction that takes minutes to apply. Re-applying a change that was durable
//! already is harmless (its key is removed wherever it is, then written). The price: after
//! such a restart, readers see the durable part of the transaction until its end (each row
//! at its state before or after it, never an earlier one; the applied LSN stays before it,
//! so read-your-writes holds). Re-sent in the same process (a reconnect), the transaction
//! goes on where it was, invisible as before.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rayon::prelude::*;

use super::{PartitionId, Shard};
use crate::change::{Change, ChangeEvent};
use crate::document::{Document, Row};
use crate::error::Result;
use wire::Lsn;

/// Change events a large transaction keeps for the feed: its last ones. The feed's ring
/// holds no more than this, so older ones would be evicted at publication anyway.
pub const FEED_EVENTS_KEPT: usize = 200_000;

/// Where a key the transaction wrote now is.
#[derive(Clone, Copy)]
struct Touch {
    index: usize,
    /// Its partition (position in `Large::partitions`), none when deleted.
    home: Option<u32>,
    /// Offset of its row in the spill file.
    at: u64,
}

/// A key's state within the current part.
struct Pending {
    /// Partitions that may hold the key from before this part (their copies go).
    before: Vec<PartitionId>,
    /// The key's document after this part, none when deleted.
    after: Option<Arc<Document>>,
}

pub(super) struct Large {
    /// The commit record's LSN (the transaction's end LSN comes with its last part).
    pub final_lsn: Lsn,
    /// Stands for the end LSN in per-partition skip checks: above `final_lsn` and not above
    /// the end LSN, so a partition durable past the transaction skips it, and no other does.
    pub lsn: Lsn,
    touched: HashMap<u128, Touch>,
    partitions: Vec<PartitionId>,
    numbers: HashMap<PartitionId, u32>,
    part: HashMap<(usize, String), Pending>,
    /// Indexes truncated by the transaction: their rows from before it are gone.
    truncated: HashSet<usize>,
    spill_path: PathBuf,
    spill: BufWriter<File>,
    spilled: u64,
    pub events: VecDeque<ChangeEvent>,
    /// Events dropped from the front of `events`.
    pub dropped: u32,
    pub rows: usize,
    pub started: Instant,
    /// Changes of the transaction written to the partitions, counted from its first: the
    /// ones skipped as durable at the start included.
    applied: u64,
    /// Changes of this sending of the transaction received so far.
    seen: u64,
    /// Changes of this sending to skip: the first `skip` are written already.
    skip: u64,
    /// Some of it was committed (`persist_large`): the writers cannot go back to the state
    /// the readers show.
    persisted: bool,
}

/// How far a large transaction is durable: the first `changes` changes of the transaction
/// whose commit record is at `final_lsn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LargeMark {
    pub final_lsn: Lsn,
    pub changes: u64,
}

fn hash(index: usize, key: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(index as u64).to_le_bytes());
    h.update(key.as_bytes());
    h.digest128()
}

impl Large {
    fn new(final_lsn: Lsn, spill_path: PathBuf, durable: u64) -> Result<Large> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&spill_path)?;
        Ok(Large {
            final_lsn,
            lsn: Lsn(final_lsn.0 + 1),
            touched: HashMap::new(),
            partitions: Vec::new(),
            numbers: HashMap::new(),
            part: HashMap::new(),
            truncated: HashSet::new(),
            spill_path,
            spill: BufWriter::with_capacity(1 << 20, file),
            spilled: 0,
            events: VecDeque::new(),
            // The durable changes' events are gone: the feed is told of a gap.
            dropped: u32::try_from(durable).unwrap_or(u32::MAX),
            rows: 0,
            started: Instant::now(),
            applied: durable,
            seen: 0,
            skip: durable,
            persisted: false,
        })
    }

    fn number(&mut self, id: &PartitionId) -> u32 {
        if let Some(n) = self.numbers.get(id) {
            return *n;
        }
        let n = self.partitions.len() as u32;
        self.partitions.push(id.clone());
        self.numbers.insert(id.clone(), n);
        n
    }

    /// Appends a document's row: its text cells as JSON, then its vector's floats, each
    /// after its length in bytes (a vector's `u32::MAX` when it has none).
    fn spill_row(&mut self, d: &Document) -> Result<u64> {
        let bytes = serde_json::to_vec(&d.raw).expect("row serializes");
        let at = self.spilled;
        self.spill.write_all(&(bytes.len() as u32).to_le_bytes())?;
        self.spill.write_all(&bytes)?;
        self.spilled += 4 + bytes.len() as u64;
        match &d.vector {
            None => self.spill.write_all(&u32::MAX.to_le_bytes())?,
            Some(v) => {
                self.spill.write_all(&(4 * v.len() as u32).to_le_bytes())?;
                for x in v {
                    self.spill.write_all(&x.to_le_bytes())?;
                }
                self.spilled += 4 * v.len() as u64;
            }
        }
        self.spilled += 4;
        Ok(at)
    }

    fn read_row(&mut self, at: u64) -> Result<Row> {
        self.spill.flush()?;
        let file = self.spill.get_ref();
        let read = |at: u64| -> Result<Option<Vec<u8>>> {
            let mut len = [0u8; 4];
            file.read_exact_at(&mut len, at)?;
            let len = u32::from_le_bytes(len);
            if len == u32::MAX {
                return Ok(None);
            }
            let mut bytes = vec![0u8; len as usize];
            file.read_exact_at(&mut bytes, at + 4)?;
            Ok(Some(bytes))
        };
        let text = read(at)?.ok_or_else(|| crate::Error::corrupt("spilled row", "no row"))?;
        let vector = read(at + 4 + text.len() as u64)?;
        Ok(Row {
            raw: serde_json::from_slice(&text)
                .map_err(|e| crate::Error::corrupt("spilled row", e))?,
            vector: vector.map(|b| crate::rows::floats(&b)),
        })
    }

    /// How far it is written: durable once the writers committed.
    fn mark(&self) -> LargeMark {
        LargeMark {
            final_lsn: self.final_lsn,
            changes: self.applied,
        }
    }

    pub fn keep_event(&mut self, e: ChangeEvent) {
        if self.events.len() == FEED_EVENTS_KEPT {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(e);
    }
}

impl Drop for Large {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spill_path);
    }
}

/// What a lookup inside a large transaction found.
pub(super) enum Known {
    /// The transaction wrote the key: its row now (none: deleted).
    Written(Option<Row>),
    /// The transaction did not touch the key: the committed state answers.
    Untouched,
}

impl Shard {
    /// Whether a large transaction is open, and its commit record's LSN.
    pub fn large_open(&self) -> Option<Lsn> {
        self.large.as_ref().map(|l| l.final_lsn)
    }

    /// Starts a large transaction whose commit record is at `final_lsn`, of which the first
    /// `durable` changes are durable already (`persist_large` in an earlier life): they are
    /// skipped. Everything applied before it is committed first (no commit job may be
    /// running), so the partitions' writers hold nothing else and the fresh layers are
    /// empty. Returns the durable LSN.
    pub fn begin_large(&mut self, final_lsn: Lsn, durable: u64) -> Result<Lsn> {
        debug_assert!(self.large.is_none() && self.in_flight.is_none());
        let lsn = self.commit()?;
        let spill = self.data_dir.join("large-transaction.spill");
        self.large = Some(Large::new(final_lsn, spill, durable)?);
        // The end LSN replaces it at the end; numbers below `durable` are the gap's.
        self.event_at = (final_lsn, u32::try_from(durable).unwrap_or(u32::MAX));
        if durable > 0 {
            tracing::info!(final_lsn = %final_lsn, durable_changes = durable, "large transaction: going on where it was made durable");
        } else {
            tracing::info!(final_lsn = %final_lsn, "large transaction: applying it in parts");
        }
        Ok(lsn)
    }

    /// The open large transaction is being sent again from its start (a reconnect): what
    /// was written of it is skipped.
    pub fn resend_large(&mut self) {
        let large = self.large.as_mut().expect("a large transaction is open");
        large.seen = 0;
        large.skip = large.applied;
    }

    /// Applies one part of the open large transaction (not visible until `finish_large`);
    /// changes written already (before a restart or a reconnect) are skipped.
    pub fn apply_part(&mut self, changes: &[Change]) -> Result<()> {
        let large = self.large.as_mut().expect("a large transaction is open");
        let lsn = large.lsn;
        let from = (large.skip.saturating_sub(large.seen) as usize).min(changes.len());
        if large.skip > 0
            && large.seen < large.skip
            && large.seen + changes.len() as u64 >= large.skip
        {
            tracing::info!(
                skipped = large.skip,
                "large transaction: its changes written already were received again and skipped; applying the rest"
            );
        }
        large.seen += changes.len() as u64;
        large.applied += (changes.len() - from) as u64;
        self.apply_changes(lsn, &changes[from..])?;
        let rows = std::mem::take(&mut self.batch_rows);
        self.large.as_mut().expect("open").rows += rows;
        self.flush_part()
    }

    /// Makes what the open large transaction wrote so far durable (still invisible to this
    /// process's readers); returns how far that is.
    pub fn persist_large(&mut self) -> Result<Option<LargeMark>> {
        let Some(large) = self.large.as_mut() else {
            return Ok(None);
        };
        large.persisted = true;
        let mark = large.mark();
        self.partitions
            .par_iter_mut()
            .try_for_each(|(_, p)| p.bulk_persist())?;
        Ok(Some(mark))
    }

    /// The large transaction ends at `end_lsn`: its partitions commit, readers get all of it
    /// in one view swap, and it is durable.
    pub fn finish_large(&mut self, end_lsn: Lsn) -> Result<()> {
        self.flush_part()?;
        let mut large = self.large.take().expect("a large transaction is open");
        let dirty: Vec<PartitionId> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.bulk_dirty())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &dirty {
            let p = self.partitions.get_mut(id).expect("listed above");
            p.bulk_commit(end_lsn)?;
        }
        self.applied = self.applied.max(end_lsn);
        self.durable = self.durable.max(end_lsn);
        tracing::info!(
            rows = large.rows,
            partitions = dirty.len(),
            seconds = format!("{:.1}", large.started.elapsed().as_secs_f64()),
            end_lsn = %end_lsn,
            "large transaction applied"
        );
        let mut events = Vec::from(std::mem::take(&mut large.events));
        for e in &mut events {
            e.lsn = end_lsn;
        }
        if large.dropped > 0 {
            self.observer
                .feed_gap(crate::change::Position(end_lsn, large.dropped - 1));
        }
        let rows = large.rows;
        self.publish(rows, events);
        Ok(())
    }

    /// Drops the open large transaction (the stream will send it again). When none of it
    /// was made durable, every partition's writer goes back to its last commit. Otherwise
    /// the writers cannot go back to what readers show: everything written so far is made
    /// durable and shown (as a restart would), the partitions' LSNs unchanged, and the
    /// returned mark says how much of the transaction that is.
    pub fn abort_large(&mut self) -> Result<Option<LargeMark>> {
        let Some(large) = self.large.take() else {
            return Ok(None);
        };
        if !large.persisted {
            tracing::info!("large transaction abandoned; it will be applied again when re-sent");
            for p in self.partitions.values_mut() {
                p.bulk_abort()?;
            }
            return Ok(None);
        }
        for p in self.partitions.values_mut() {
            let lsn = p.checkpoint();
            p.bulk_commit(lsn)?;
        }
        let mark = large.mark();
        tracing::info!(
            final_lsn = %mark.final_lsn,
            durable_changes = mark.changes,
            "large transaction stopped part-way; its durable part is shown until it is sent again"
        );
        let rows = large.rows;
        self.publish(rows, Vec::new());
        Ok(Some(mark))
    }

    /// Inside a large transaction: the row the transaction left under `key`, if it wrote it.
    pub(super) fn large_row(&mut self, index: usize, key: &str) -> Result<Known> {
        let Some(large) = self.large.as_mut() else {
            return Ok(Known::Untouched);
        };
        if let Some(p) = large.part.get(&(index, key.to_owned())) {
            return Ok(Known::Written(p.after.as_ref().map(|d| Row {
                raw: d.raw.clone(),
                vector: d.vector.clone(),
            })));
        }
        match large.touched.get(&hash(index, key)).copied() {
            Some(Touch { home: None, .. }) => Ok(Known::Written(None)),
            Some(t) => Ok(Known::Written(Some(large.read_row(t.at)?))),
            None if large.truncated.contains(&index) => Ok(Known::Written(None)),
            None => Ok(Known::Untouched),
        }
    }

    /// Inside a large transaction: makes `key` hold `doc` (or be absent) as of the end of
    /// the current part.
    pub(super) fn large_set(&mut self, index: usize, key: &str, doc: Option<Document>) {
        let large = self.large.as_mut().expect("open");
        let lsn = large.lsn;
        let slot = (index, key.to_owned());
        if !large.part.contains_key(&slot) {
            // First write of the key in this part: where may it be now?
            let before = match large.touched.get(&hash(index, key)) {
                Some(t) => t
                    .home
                    .map(|n| large.partitions[n as usize].clone())
                    .into_iter()
                    .collect(),
                None if large.truncated.contains(&index) => Vec::new(),
                None => self
                    .partitions
                    .iter()
                    .filter(|(_, p)| p.index == index && lsn > p.checkpoint())
                    // On a read error assume present: deleting an absent key is harmless.
                    .filter(|(_, p)| p.contains(key).unwrap_or(true))
                    .map(|(id, _)| id.clone())
                    .collect(),
            };
            large.part.insert(
                slot.clone(),
                Pending {
                    before,
                    after: None,
                },
            );
        }
        large.part.get_mut(&slot).expect("inserted above").after = doc.map(Arc::new);
    }

    /// Inside a large transaction: TRUNCATE of `index`.
    pub(super) fn large_truncate(&mut self, index: usize) -> Result<()> {
        self.flush_part()?;
        let lsn = self.large.as_ref().expect("open").lsn;
        for p in self.partitions.values_mut() {
            if p.index == index && lsn > p.checkpoint() {
                p.bulk_truncate()?;
            }
        }
        let large = self.large.as_mut().expect("open");
        large.touched.retain(|_, t| t.index != index);
        large.truncated.insert(index);
        Ok(())
    }

    /// Writes the current part to the partitions' writers.
    fn flush_part(&mut self) -> Result<()> {
        let Some(large) = self.large.as_mut() else {
            return Ok(());
        };
        let lsn = large.lsn;
        let mut removed: BTreeMap<PartitionId, Vec<String>> = BTreeMap::new();
        let mut added: BTreeMap<PartitionId, Vec<Arc<Document>>> = BTreeMap::new();
        let mut homes: BTreeSet<PartitionId> = BTreeSet::new();
        for ((index, key), pending) in std::mem::take(&mut large.part) {
            let home = pending.after.as_ref().map(|d| (index, d.region.clone()));
            let at = match &pending.after {
                Some(d) => large.spill_row(d)?,
                None => u64::MAX,
            };
            let number = home.as_ref().map(|id| large.number(id));
            large.touched.insert(
                hash(index, &key),
                Touch {
                    index,
                    home: number,
                    at,
                },
            );
            for id in pending.before {
                removed.entry(id).or_default().push(key.clone());
            }
            if let (Some(id), Some(doc)) = (home, pending.after) {
                homes.insert(id.clone());
                added.entry(id).or_default().push(doc);
            }
        }
        for id in &homes {
            self.partition(id.0, &id.1)?;
        }
        let ids: BTreeSet<PartitionId> = removed.keys().chain(added.keys()).cloned().collect();
        for id in ids {
            let p = self.partitions.get_mut(&id).expect("partition exists");
            if lsn <= p.checkpoint() {
                continue; // durable past this transaction (a replay after a crash)
            }
            let gone = removed.remove(&id).unwrap_or_default();
            let new = added.remove(&id).unwrap_or_default();
            p.bulk_write(&gone, &new)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
