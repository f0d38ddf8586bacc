//! The committed documents a partition's fresh layer shadows, as one bit set per segment,
//! found once per read view and shared by every text query on it.
//!
//! A text query excludes them from the segments (the fresh layer answers for those keys).
//! Excluding them by a set of the fresh keys made every query build that set, O(fresh
//! documents): after a bulk write, two search threads fell seconds behind. Looking each key
//! up once per view and handing queries the bits keeps a query's share O(segment size / 64).

use std::collections::HashMap;
use std::sync::Arc;

use tantivy::index::SegmentId;
use tantivy::query::{
    BitSetDocSet, ConstScorer, EmptyScorer, EnableScoring, Explanation, Query, Scorer, Weight,
};
use tantivy::schema::IndexRecordOption;
use tantivy::{BitSet, DocId, DocSet, Score, SegmentReader, Term, TERMINATED};

use crate::shard::PartitionView;

/// Per segment, the documents whose keys the fresh layer holds (live or deleted there).
pub struct Shadowed(HashMap<SegmentId, BitSet>);

impl Shadowed {
    /// The shadowed documents of one segment.
    pub fn get(&self, segment: SegmentId) -> Option<&BitSet> {
        self.0.get(&segment)
    }

    /// Looks every fresh key up in every segment of the view's searcher.
    pub fn of(p: &PartitionView) -> tantivy::Result<Shadowed> {
        let mut sets = HashMap::new();
        for segment in p.searcher.segment_readers() {
            let inverted = segment.inverted_index(p.fields.key)?;
            let mut bits = BitSet::with_max_value(segment.max_doc());
            for key in p.fresh.docs.keys() {
                let term = Term::from_field_text(p.fields.key, key);
                let Some(info) = inverted.get_term_info(&term)? else {
                    continue;
                };
                let mut postings =
                    inverted.read_postings_from_terminfo(&info, IndexRecordOption::Basic)?;
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    bits.insert(doc);
                    doc = postings.advance();
                }
            }
            sets.insert(segment.segment_id(), bits);
        }
        Ok(Shadowed(sets))
    }
}

/// The view's shadowed documents, found by the first query that needs them.
pub fn of_view(p: &PartitionView) -> tantivy::Result<Arc<Shadowed>> {
    if let Some(s) = p.shadowed.get() {
        return Ok(s.clone());
    }
    let found = Arc::new(Shadowed::of(p)?);
    Ok(p.shadowed.get_or_init(|| found).clone())
}

/// Matches the shadowed documents (for a `MustNot` clause).
#[derive(Clone)]
pub struct ShadowedQuery(pub Arc<Shadowed>);

impl std::fmt::Debug for ShadowedQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShadowedQuery")
    }
}

impl Query for ShadowedQuery {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(ShadowedWeight(self.0.clone())))
    }
}

struct ShadowedWeight(Arc<Shadowed>);

impl Weight for ShadowedWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(match self.0 .0.get(&reader.segment_id()) {
            Some(bits) if bits.len() > 0 => {
                Box::new(ConstScorer::new(BitSetDocSet::from(bits.clone()), boost))
            }
            _ => Box::new(EmptyScorer),
        })
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let shadowed = self
            .0
             .0
            .get(&reader.segment_id())
            .is_some_and(|b| b.contains(doc));
        if shadowed {
            Ok(Explanation::new("shadowed by the fresh layer", 1.0))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} is not shadowed"
            )))
        }
    }
}
