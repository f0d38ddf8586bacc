//! Stopping a search nobody waits for: a [`Cancel`] is set by whoever gave up on the answer (the
//! caller went away) or passes its deadline, and the scan checks it. Committed segments are
//! read through [`Cancellable`], a wrapper of the text query whose scorers end their doc
//! set, and whose pruned loop (block-max WAND) raises its threshold past any score, once
//! cancelled; the check costs one atomic load (and a clock read with a deadline) per 1,024
//! documents. A cancelled search returns what it found so far: its caller must discard it
//! ([`Cancel::is_cancelled`] says so).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tantivy::query::{EnableScoring, Explanation, Query, Scorer, Weight};
use tantivy::{DocId, DocSet, Score, SegmentReader, Term, TERMINATED};

/// Documents scanned between two checks.
const EVERY: u32 = 1_024;

/// Set when a search's answer is no longer wanted, or at its deadline. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    cancelled: AtomicBool,
    deadline: Option<Instant>,
}

impl Cancel {
    /// Cancelled by [`Cancel::cancel`] or once `budget` has passed.
    pub fn within(budget: Duration) -> Cancel {
        Cancel(Arc::new(Inner {
            cancelled: AtomicBool::new(false),
            deadline: Instant::now().checked_add(budget),
        }))
    }

    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        if self.0.cancelled.load(Ordering::Relaxed) {
            return true;
        }
        if self.0.deadline.is_some_and(|d| Instant::now() >= d) {
            self.cancel();
            return true;
        }
        false
    }
}

/// The same signal: clones of one `Cancel` are equal, two made apart are not.
impl PartialEq for Cancel {
    fn eq(&self, other: &Cancel) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A query whose scan stops once its [`Cancel`] is set.
#[derive(Debug)]
pub struct Cancellable {
    inner: Box<dyn Query>,
    cancel: Cancel,
}

impl Clone for Cancellable {
    fn clone(&self) -> Cancellable {
        Cancellable {
            inner: self.inner.box_clone(),
            cancel: self.cancel.clone(),
        }
    }
}

impl Cancellable {
    pub fn new(inner: Box<dyn Query>, cancel: Cancel) -> Cancellable {
        Cancellable { inner, cancel }
    }
}

impl Query for Cancellable {
    fn weight(&self, scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(CancellableWeight {
            inner: self.inner.weight(scoring)?,
            cancel: self.cancel.clone(),
        }))
    }

    fn query_terms<'a>(&'a self, visitor: &mut dyn FnMut(&'a Term, bool)) {
        self.inner.query_terms(visitor)
    }
}

struct CancellableWeight {
    inner: Box<dyn Weight>,
    cancel: Cancel,
}

impl Weight for CancellableWeight {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(Box::new(CancellableScorer {
            inner: self.inner.scorer(reader, boost)?,
            cancel: self.cancel.clone(),
            // Checked here too: a doc set stands on its first document before any advance.
            steps: 1,
            stopped: self.cancel.is_cancelled(),
        }))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        self.inner.explain(reader, doc)
    }

    /// The inner weight's own pruned loop (block-max WAND stays), its threshold raised past
    /// any score once cancelled, so every remaining block is skipped.
    fn for_each_pruning(
        &self,
        threshold: Score,
        reader: &SegmentReader,
        callback: &mut dyn FnMut(DocId, Score) -> Score,
    ) -> tantivy::Result<()> {
        if self.cancel.is_cancelled() {
            return Ok(());
        }
        let mut steps = 0u32;
        let cancel = &self.cancel;
        self.inner
            .for_each_pruning(threshold, reader, &mut |doc, score| {
                steps = steps.wrapping_add(1);
                if steps.is_multiple_of(EVERY) && cancel.is_cancelled() {
                    return Score::INFINITY;
                }
                callback(doc, score)
            })
    }
}

struct CancellableScorer {
    inner: Box<dyn Scorer>,
    cancel: Cancel,
    steps: u32,
    stopped: bool,
}

impl CancellableScorer {
    /// Whether to stop here (checked every [`EVERY`] steps, the first included).
    fn stop(&mut self) -> bool {
        if !self.stopped && self.steps.is_multiple_of(EVERY) && self.cancel.is_cancelled() {
            self.stopped = true;
        }
        self.steps = self.steps.wrapping_add(1);
        self.stopped
    }
}

impl DocSet for CancellableScorer {
    fn advance(&mut self) -> DocId {
        if self.stop() {
            return TERMINATED;
        }
        self.inner.advance()
    }

    fn seek(&mut self, target: DocId) -> DocId {
        if self.stop() {
            return TERMINATED;
        }
        self.inner.seek(target)
    }

    fn doc(&self) -> DocId {
        if self.stopped {
            TERMINATED
        } else {
            self.inner.doc()
        }
    }

    fn size_hint(&self) -> u32 {
        self.inner.size_hint()
    }

    fn cost(&self) -> u64 {
        self.inner.cost()
    }
}

impl Scorer for CancellableScorer {
    fn score(&mut self) -> Score {
        self.inner.score()
    }
}

#[cfg(test)]
mod tests {
    use tantivy::collector::{Count, TopDocs};
    use tantivy::query::TermQuery;
    use tantivy::schema::{IndexRecordOption, Schema, TEXT};
    use tantivy::{doc, Index};

    use super::*;

    #[test]
    fn a_cancelled_scan_stops_and_an_uncancelled_one_is_unchanged() {
        let mut schema = Schema::builder();
        let body = schema.add_text_field("body", TEXT);
        let index = Index::create_in_ram(schema.build());
        let mut writer = index.writer_with_num_threads(1, 20_000_000).unwrap();
        for i in 0..5_000 {
            writer
                .add_document(doc!(body => format!("common word{}", i % 7)))
                .unwrap();
        }
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let term = || {
            Box::new(TermQuery::new(
                Term::from_field_text(body, "common"),
                IndexRecordOption::WithFreqs,
            )) as Box<dyn Query>
        };
        let live = Cancellable::new(term(), Cancel::default());
        assert_eq!(searcher.search(&live, &Count).unwrap(), 5_000);
        let top = searcher
            .search(&live, &TopDocs::with_limit(3).order_by_score())
            .unwrap();
        assert_eq!(top.len(), 3);
        // Cancelled (or past its deadline) before the scan: nothing is visited.
        let stopped = Cancel::default();
        stopped.cancel();
        let gone = Cancellable::new(term(), stopped);
        assert_eq!(searcher.search(&gone, &Count).unwrap(), 0);
        let late = Cancellable::new(term(), Cancel::within(Duration::ZERO));
        assert!(searcher
            .search(&late, &TopDocs::with_limit(3).order_by_score())
            .unwrap()
            .is_empty());
        // Cancelled mid-scan: it stops within one check interval.
        let mid = Cancel::default();
        let seen = std::cell::Cell::new(0u32);
        let weight = Cancellable::new(term(), mid.clone())
            .weight(EnableScoring::disabled_from_searcher(&searcher))
            .unwrap();
        weight
            .for_each_no_score(searcher.segment_reader(0), &mut |docs| {
                seen.set(seen.get() + docs.len() as u32);
                if seen.get() >= 100 {
                    mid.cancel();
                }
            })
            .unwrap();
        assert!(seen.get() < 100 + 2 * EVERY, "{}", seen.get());
    }
}
