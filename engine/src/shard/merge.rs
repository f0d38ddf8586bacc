//! Merges of quiet partitions' segments (`partition/merge.rs`), driven by the applier when
//! the shard has been idle a while: started here, shown in a view when they end.

use super::{PartitionId, Shard};
use crate::partition::RunningMerge;

impl Shard {
    /// Starts the merges every partition's segments call for, when nothing is being written
    /// (no commit running, nothing uncommitted, no large transaction open); and deletes the
    /// files of segments merged away earlier that no reader holds any more.
    pub fn start_quiet_merges(&mut self) -> Vec<(PartitionId, RunningMerge)> {
        if self.in_flight.is_some() || self.has_uncommitted() || self.large.is_some() {
            return Vec::new();
        }
        let mut started = Vec::new();
        for (id, p) in &mut self.partitions {
            p.collect_garbage();
            match p.start_quiet_merges() {
                Ok(merges) => started.extend(merges.into_iter().map(|m| (id.clone(), m))),
                Err(e) => {
                    tracing::warn!(index = id.0, region = %id.1, error = %e, "segment merge not started")
                }
            }
        }
        started
    }

    /// A merge of `id`'s `segments` ended: readers see the merged segment now, or after the
    /// commit running (`commit_done` tries again).
    pub fn merge_done(
        &mut self,
        id: &PartitionId,
        segments: &[tantivy::index::SegmentId],
        outcome: tantivy::Result<Option<tantivy::SegmentMeta>>,
    ) {
        let Some(p) = self.partitions.get_mut(id) else {
            return;
        };
        if !p.merged(segments, outcome) {
            return;
        }
        if self.in_flight.is_some() {
            self.merges_to_show = true;
        } else if p.show_merged() {
            self.publish(0, Vec::new());
        }
    }

    /// After a commit: shows merges that ended while it ran, in partitions its own reload
    /// did not cover.
    pub(super) fn show_merges(&mut self) {
        if !std::mem::take(&mut self.merges_to_show) {
            return;
        }
        let mut changed = false;
        for p in self.partitions.values_mut() {
            changed |= p.show_merged();
        }
        if changed {
            self.publish(0, Vec::new());
        }
    }
}

#[cfg(test)]
mod tests;
