//! Quiet-time merges: a partition's segments become one with the same documents, shown to
//! readers and kept after a restart; a merge never shows writes persisted ahead of their
//! commit.

use std::sync::Arc;

use crate::shard::tests::{open, tx, upsert, visible};
use crate::shard::{Shard, ViewCell};
use wire::Lsn;

/// Segments of the eu partition the readers see.
fn eu_segments(view: &ViewCell) -> usize {
    let view = view.load().unwrap();
    let eu = view
        .partitions
        .iter()
        .find(|((_, r), _)| r == "eu")
        .unwrap();
    eu.1.searcher.segment_readers().len()
}

/// Three commits to eu, each a segment; the last replaces a document (a delete in an
/// earlier segment).
fn three_segments(shard: &mut Shard) {
    for (lsn, ids) in [(10, [1, 2]), (20, [3, 4]), (30, [5, 1])] {
        let changes = ids
            .into_iter()
            .map(|id| upsert(id, "eu", &format!("body {id} at {lsn}")))
            .collect();
        shard.apply(&tx(lsn, changes)).unwrap();
        shard.make_searchable(Lsn(lsn));
        shard.commit().unwrap();
    }
}

/// Runs merges to their end, reporting each to the shard.
fn finish(
    shard: &mut Shard,
    merges: Vec<(crate::shard::PartitionId, crate::partition::RunningMerge)>,
) {
    for (id, merge) in merges {
        shard.merge_done(&id, &merge.segments, merge.done.wait());
    }
}

#[test]
fn a_quiet_partition_merges_into_one_segment_with_the_same_documents() {
    let dir = tempfile::tempdir().unwrap();
    let view = Arc::new(ViewCell::default());
    let mut shard = open(dir.path(), view.clone(), Lsn::ZERO);
    three_segments(&mut shard);
    assert_eq!(eu_segments(&view), 3);
    let before = visible(&view.load().unwrap());
    assert_eq!(before.len(), 5);

    let merges = shard.start_quiet_merges();
    assert_eq!(merges.len(), 1, "eu's three small segments, one level");
    finish(&mut shard, merges);
    assert_eq!(eu_segments(&view), 1, "readers see the merged segment");
    assert_eq!(visible(&view.load().unwrap()), before);
    assert!(
        shard.start_quiet_merges().is_empty(),
        "nothing left to merge"
    );
    drop(shard);

    let view = Arc::new(ViewCell::default());
    let _shard = open(dir.path(), view.clone(), Lsn(30));
    assert_eq!(eu_segments(&view), 1, "the merge is durable");
    assert_eq!(visible(&view.load().unwrap()), before);
}

#[test]
fn no_merge_starts_while_writes_wait_and_none_shows_a_large_transaction_persisted_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let view = Arc::new(ViewCell::default());
    let mut shard = open(dir.path(), view.clone(), Lsn::ZERO);
    three_segments(&mut shard);
    let before = visible(&view.load().unwrap());

    shard.apply(&tx(40, vec![upsert(6, "eu", "six")])).unwrap();
    shard.make_searchable(Lsn(40));
    assert!(
        shard.start_quiet_merges().is_empty(),
        "uncommitted writes: not quiet"
    );
    shard.commit().unwrap();
    let before = {
        let mut b = before;
        b.extend(visible(&view.load().unwrap()));
        b
    };

    // A merge starts; a large transaction then writes and makes part of itself durable
    // (committed in tantivy, not shown) before the merge ends.
    let merges = shard.start_quiet_merges();
    assert!(!merges.is_empty());
    shard.begin_large(Lsn(50), 0).unwrap();
    shard
        .apply_part(&[upsert(7, "eu", "seven"), upsert(8, "eu", "eight")])
        .unwrap();
    shard.persist_large().unwrap();
    finish(&mut shard, merges);
    assert_eq!(
        visible(&view.load().unwrap()),
        before,
        "the large transaction's rows stay hidden until its end"
    );
    shard.finish_large(Lsn(50)).unwrap();
    let after = visible(&view.load().unwrap());
    assert_eq!(after.len(), before.len() + 2);
}

#[test]
fn a_second_look_while_a_merge_runs_does_not_merge_the_same_segments_again() {
    let dir = tempfile::tempdir().unwrap();
    let view = Arc::new(ViewCell::default());
    let mut shard = open(dir.path(), view.clone(), Lsn::ZERO);
    three_segments(&mut shard);
    let before = visible(&view.load().unwrap());
    let merges = shard.start_quiet_merges();
    assert_eq!(merges.len(), 1);
    assert!(
        shard.start_quiet_merges().is_empty(),
        "its segments are in the running merge"
    );
    finish(&mut shard, merges);
    assert_eq!(eu_segments(&view), 1);
    assert_eq!(visible(&view.load().unwrap()), before);
    assert!(
        shard.start_quiet_merges().is_empty(),
        "nothing left to merge"
    );
}
