//! Top-k by score without counting every match: the collector hands tantivy a threshold, so
//! block-max WAND (unions and intersections of terms) skips blocks of documents that cannot
//! enter. Ties at the threshold still enter and are broken by key (a segment's key ordinals
//! follow the keys' byte order), as `fields::TopByScore` breaks them, so every page depth
//! agrees with the counting path. How many matches it saw is a lower bound of the total,
//! exact when the top never filled (nothing could be skipped).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::StrColumn;
use tantivy::query::Weight;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

/// The best `limit` documents of each segment by score (ties by key), counting what it saw.
pub struct PrunedTop<'a> {
    pub limit: usize,
    /// The searcher's key columns, shared by its queries.
    pub columns: &'a crate::rows::Columns,
}

/// The segments' best documents, and how many matches were seen.
#[derive(Debug, Default)]
pub struct Pruned {
    pub hits: Vec<(Score, DocAddress)>,
    /// Matches seen: every match when `exact`, otherwise a lower bound.
    pub seen: u64,
    pub exact: bool,
}

/// A kept document; the heap's top is the worst (lowest score, then highest key ordinal).
#[derive(Clone, Copy)]
struct Kept {
    score: Score,
    ord: u64,
    doc: DocId,
}

impl PartialEq for Kept {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Kept {}
impl PartialOrd for Kept {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Kept {
    /// Greater is worse: lower score, then higher ordinal.
    fn cmp(&self, o: &Self) -> Ordering {
        o.score
            .total_cmp(&self.score)
            .then(self.ord.cmp(&o.ord))
            .then(self.doc.cmp(&o.doc))
    }
}

pub struct PrunedSegment {
    /// The segment's `_key` column, opened at the first match (None inside: no column).
    keys: Option<Option<StrColumn>>,
    segment: SegmentOrdinal,
    limit: usize,
    heap: BinaryHeap<Kept>,
    seen: u64,
    filled: bool,
}

impl PrunedSegment {
    /// Offers a match; returns the threshold a later match must exceed to matter. `open`
    /// opens the key column when the segment's first match needs it.
    fn offer(
        &mut self,
        doc: DocId,
        score: Score,
        open: impl FnOnce() -> Option<StrColumn>,
    ) -> Score {
        self.seen += 1;
        let ord = self
            .keys
            .get_or_insert_with(open)
            .as_ref()
            .and_then(|k| k.term_ords(doc).next())
            .unwrap_or(u64::MAX);
        let kept = Kept { score, ord, doc };
        if self.heap.len() < self.limit {
            self.heap.push(kept);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            // Replaced in place: one sift down instead of a pop and a push (the heap's moves
            // were 5-8 % of a top-100 text query's CPU).
            if kept < *worst {
                *worst = kept;
            }
        }
        self.threshold()
    }

    /// Below the worst kept score once the top is full (equal scores may still win on key).
    fn threshold(&mut self) -> Score {
        match self.heap.peek() {
            Some(worst) if self.heap.len() >= self.limit => {
                self.filled = true;
                worst.score.next_down()
            }
            _ => Score::MIN,
        }
    }
}

impl PrunedTop<'_> {
    /// An empty top for segment `ord` (`keys`: its key column, if already taken).
    fn segment(&self, ord: SegmentOrdinal, keys: Option<Option<StrColumn>>) -> PrunedSegment {
        let limit = self.limit.max(1);
        PrunedSegment {
            keys,
            segment: ord,
            limit,
            heap: BinaryHeap::with_capacity(limit + 1),
            seen: 0,
            filled: false,
        }
    }
}

impl Collector for PrunedTop<'_> {
    type Fruit = Pruned;
    type Child = PrunedSegment;

    fn for_segment(
        &self,
        ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<PrunedSegment> {
        let keys = self.columns.keys(ord, segment)?.cloned();
        Ok(self.segment(ord, Some(keys)))
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn collect_segment(
        &self,
        weight: &dyn Weight,
        segment_ord: u32,
        reader: &SegmentReader,
    ) -> tantivy::Result<Pruned> {
        // The key column is taken at the segment's first match, not before: most segments
        // have none for a rare word, and opening it was 4% of such a query's CPU (it stays
        // open for the searcher's later queries).
        let mut child = self.segment(segment_ord, None);
        let alive = reader.alive_bitset();
        let mut failed = None;
        let mut open = || match self.columns.keys(segment_ord, reader) {
            Ok(column) => column.cloned(),
            Err(e) => {
                failed = Some(e);
                None
            }
        };
        weight.for_each_pruning(Score::MIN, reader, &mut |doc, score| {
            if alive.is_some_and(|a| a.is_deleted(doc)) {
                return child.threshold();
            }
            child.offer(doc, score, &mut open)
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(child.harvest())
    }

    fn merge_fruits(&self, fruits: Vec<Pruned>) -> tantivy::Result<Pruned> {
        let mut all = Pruned {
            exact: true,
            ..Pruned::default()
        };
        for f in fruits {
            all.hits.extend(f.hits);
            all.seen += f.seen;
            all.exact &= f.exact;
        }
        Ok(all)
    }
}

impl SegmentCollector for PrunedSegment {
    type Fruit = Pruned;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.offer(doc, score, || None);
    }

    fn harvest(self) -> Pruned {
        let segment = self.segment;
        Pruned {
            hits: self
                .heap
                .into_iter()
                .map(|k| (k.score, DocAddress::new(segment, k.doc)))
                .collect(),
            seen: self.seen,
            exact: !self.filled,
        }
    }
}
