//! Merging a quiet partition's segments. Every commit adds a segment, and tantivy's own
//! policy merges only once eight of similar size pile up, so a partition keeps several small
//! segments after a burst of writes; every query then pays per segment (term lookups, scorer
//! set-up, key resolution: the text profiles' top costs). When the shard is quiet, merges of
//! similar-sized segments (tantivy's log policy, from two segments, and purging deleted
//! documents) run on tantivy's merge threads; when one ends, the reader shows the merged
//! segment: the same documents as before.
//!
//! The reader is reloaded outside a commit only while no commit happened since it last
//! loaded (`reader_opstamp`): the only change since is then a merge. A reload must never show
//! writes not yet meant to be seen (a large transaction's or a snapshot's parts persisted
//! ahead of their one commit); a commit's own reload shows a merge that ended before it.

use tantivy::index::SegmentId;
use tantivy::indexer::{LogMergePolicy, MergePolicy};
use tantivy::{FutureResult, SegmentMeta};

use super::Partition;
use crate::error::Result;

/// A merge running on tantivy's threads: `done` resolves when the merged segment is
/// committed (None: nothing was left to merge). `Partition::merged` takes the segments and
/// the outcome.
pub struct RunningMerge {
    pub segments: Vec<SegmentId>,
    pub done: FutureResult<Option<SegmentMeta>>,
}

/// Segments of similar size are merged from two on, and a segment with a fifth of its
/// documents deleted (replaced or removed versions, still scanned) is rewritten alone.
fn quiet_policy() -> LogMergePolicy {
    let mut policy = LogMergePolicy::default();
    policy.set_min_num_segments(2);
    policy.set_del_docs_ratio_before_merge(0.2);
    policy
}

impl Partition {
    /// Starts the merges this partition's committed segments call for, unless writes are
    /// on their way (queued, a large transaction's, a snapshot's) or the reader is behind.
    /// Segments in a merge this partition started are left out: tantivy would merge them
    /// again, and only the first merge to end counts (a 1M-row run merged one set of seven
    /// segments four times over, 666 MB each, three of them left on disk).
    pub fn start_quiet_merges(&mut self) -> Result<Vec<RunningMerge>> {
        if self.merges_paused
            || self.bulk_dirty
            || self.bulk.is_some()
            || !self.ops.is_empty()
            || self.truncated_at.is_some()
        {
            return Ok(Vec::new());
        }
        let mut writer = self.writer.lock().unwrap();
        if writer.commit_opstamp() != self.reader_opstamp {
            return Ok(Vec::new());
        }
        let committed: Vec<SegmentMeta> = writer
            .index()
            .searchable_segment_metas()?
            .into_iter()
            .filter(|m| !self.merging.contains(&m.id()))
            .collect();
        let merges: Vec<RunningMerge> = quiet_policy()
            .compute_merge_candidates(&committed)
            .into_iter()
            .map(|candidate| RunningMerge {
                done: writer.merge(&candidate.0),
                segments: candidate.0,
            })
            .collect();
        for m in &merges {
            self.merging.extend(m.segments.iter().copied());
        }
        Ok(merges)
    }

    /// Deletes the files of segments no longer committed that no reader holds (tantivy does
    /// this after every commit and merge, but a merge's old segments are still shown then:
    /// the reader moves to the merged one after it, and without a later commit they would
    /// stay on disk). Runs on tantivy's thread; files still in use are kept for a later pass.
    pub fn collect_garbage(&self) {
        drop(self.writer.lock().unwrap().garbage_collect_files());
    }

    /// A merge of `segments` started by `start_quiet_merges` ended: forgets it, and deletes
    /// what a failed one wrote. Returns whether it merged (its segment is then for the
    /// caller to show: `show_merged`).
    pub fn merged(
        &mut self,
        segments: &[SegmentId],
        outcome: tantivy::Result<Option<SegmentMeta>>,
    ) -> bool {
        for s in segments {
            self.merging.remove(s);
        }
        match outcome {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(e) => {
                // Another merge took a segment first, or the disk is full: the segments stay
                // as they were, every document still there; what the merge wrote goes.
                tracing::debug!(dir = %self.dir.display(), error = %e, "segment merge not done");
                self.collect_garbage();
                false
            }
        }
    }

    /// Reloads the reader if no commit happened since it last loaded (so that what changed
    /// since is merges only). Call only while no commit of this partition runs. Returns
    /// whether the reader was reloaded.
    pub fn show_merged(&mut self) -> bool {
        let current = self.writer.lock().unwrap().commit_opstamp() == self.reader_opstamp;
        if !current || self.bulk.is_some() || self.bulk_dirty {
            return false;
        }
        match self.reader.reload() {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "reader reload after a merge failed");
                false
            }
        }
    }
}
