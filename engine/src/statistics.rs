//! BM25 statistics for one query over several partitions: their committed segments plus
//! their fresh documents, summed once and remembered.

use std::collections::HashMap;

use tantivy::query::Bm25StatisticsProvider;
use tantivy::schema::Field;
use tantivy::Term;

/// BM25 statistics over several committed searchers plus fresh documents: one set of
/// statistics for every partition a query touches, so scores compare across partitions.
/// Like tantivy's own, document counts include deleted (and shadowed) documents.
///
/// Each figure is computed once per query and remembered: tantivy asks again for every
/// partition it searches (each weight over every segment of every partition, so the cost
/// grew with the square of the partitions: 13% of a rare-word query's CPU).
pub struct Statistics<'a> {
    pub searchers: Vec<&'a tantivy::Searcher>,
    pub fresh_docs: u64,
    pub fresh_tokens: HashMap<Field, u64>,
    pub fresh_doc_freq: HashMap<Term, u64>,
    memo: std::sync::Mutex<Memo>,
}

#[derive(Default)]
struct Memo {
    docs: Option<u64>,
    tokens: HashMap<Field, u64>,
    doc_freq: HashMap<Term, u64>,
}

impl<'a> Statistics<'a> {
    /// Committed statistics of `searchers`, no fresh documents yet.
    pub fn new(searchers: Vec<&'a tantivy::Searcher>) -> Statistics<'a> {
        Statistics {
            searchers,
            fresh_docs: 0,
            fresh_tokens: HashMap::new(),
            fresh_doc_freq: HashMap::new(),
            memo: Default::default(),
        }
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        // The memo holds only finished sums: one poisoned by a panic elsewhere is still right.
        self.memo.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Bm25StatisticsProvider for Statistics<'_> {
    fn total_num_tokens(&self, field: Field) -> tantivy::Result<u64> {
        if let Some(n) = self.memo().tokens.get(&field) {
            return Ok(*n);
        }
        let mut n = self.fresh_tokens.get(&field).copied().unwrap_or(0);
        for s in &self.searchers {
            n += s.total_num_tokens(field)?;
        }
        self.memo().tokens.insert(field, n);
        Ok(n)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        if let Some(n) = self.memo().docs {
            return Ok(n);
        }
        let mut n = self.fresh_docs;
        for s in &self.searchers {
            n += Bm25StatisticsProvider::total_num_docs(*s)?;
        }
        // An empty corpus would divide by zero in the average field length.
        let n = n.max(1);
        self.memo().docs = Some(n);
        Ok(n)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        if let Some(n) = self.memo().doc_freq.get(term) {
            return Ok(*n);
        }
        let mut n = self.fresh_doc_freq.get(term).copied().unwrap_or(0);
        for s in &self.searchers {
            n += s.doc_freq(term)?;
        }
        self.memo().doc_freq.insert(term.clone(), n);
        Ok(n)
    }
}
