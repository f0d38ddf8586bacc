//! Hybrid search: the text and vector branches fused by reciprocal rank fusion.

use std::collections::HashMap;

use super::*;
use crate::document::RawRow;
use crate::shard::ShardView;

/// Reciprocal rank fusion of a text and a vector ranking.
#[derive(Clone, Copy, Debug)]
pub struct Fusion {
    /// The RRF constant: a hit at rank r (from 1) of a branch adds `weight / (k + r)`.
    pub k: f64,
    pub text_weight: f64,
    pub vector_weight: f64,
    /// How deep each branch is read (at least the page asked for).
    pub window: usize,
}

#[derive(Clone, Debug)]
pub struct HybridHit {
    pub key: String,
    pub region: String,
    pub score: f64,
    /// Rank (from 1) in each branch, when the hit is in its window: for debugging.
    pub text_rank: Option<usize>,
    pub vector_rank: Option<usize>,
    pub text_score: Option<f32>,
    pub vector_score: Option<f64>,
    /// From the text branch (absent for vector-only hits), for the page's hits only.
    pub highlights: Vec<(String, String)>,
    /// The document's row (without the vector column), for the page's hits; None when it
    /// is gone from the view.
    pub row: Option<RawRow>,
}

/// The fused hit of `key`, created empty on first sight.
fn hit_of<'a>(
    fused: &'a mut HashMap<String, HybridHit>,
    key: &str,
    region: &str,
) -> &'a mut HybridHit {
    fused.entry(key.to_owned()).or_insert_with(|| HybridHit {
        key: key.to_owned(),
        region: region.to_owned(),
        score: 0.0,
        text_rank: None,
        vector_rank: None,
        text_score: None,
        vector_score: None,
        highlights: Vec::new(),
        row: None,
    })
}

/// Text and vector branches over the same scope (both honour the text search's geo filter),
/// fused by RRF; ties by key.
pub fn hybrid(
    view: &ShardView,
    scope: &Scope,
    text_search: &TextSearch,
    vector_query: &VectorQuery,
    fusion: &Fusion,
    offset: usize,
    limit: usize,
) -> tantivy::Result<Vec<HybridHit>> {
    let window = fusion.window.max(offset + limit);
    let text_branch = || {
        text(
            view,
            scope,
            &TextSearch {
                query: text_search.query.clone(),
                limit: window,
                offset: 0,
                filter: text_search.filter.clone(),
                fields_filter: text_search.fields_filter.clone(),
                // Keys and scores only: rows and snippets for the page's hits alone, below.
                highlight: false,
                sort: None,
                facets: Vec::new(),
                count: false,
                rows: false,
                cancel: text_search.cancel.clone(),
            },
        )
    };
    let vector_branch = || {
        vector(
            view,
            scope,
            &VectorQuery {
                k: window,
                cancel: text_search.cancel.clone(),
                ..vector_query.clone()
            },
        )
    };
    // The branches side by side when a core is free (rayon runs both on this thread when
    // none is): the answer then takes as long as the longer branch, not their sum.
    let (text_branch, vector_branch) = rayon::join(text_branch, vector_branch);
    let (text_branch, vector_branch) = (text_branch?, vector_branch?);
    let mut fused: HashMap<String, HybridHit> = HashMap::new();
    for (rank, h) in text_branch.hits.into_iter().enumerate() {
        let e = hit_of(&mut fused, &h.key, &h.region);
        e.score += fusion.text_weight / (fusion.k + rank as f64 + 1.0);
        e.text_rank = Some(rank + 1);
        e.text_score = h.score;
    }
    for (rank, h) in vector_branch.into_iter().enumerate() {
        let e = hit_of(&mut fused, &h.key, &h.region);
        e.score += fusion.vector_weight / (fusion.k + rank as f64 + 1.0);
        e.vector_rank = Some(rank + 1);
        e.vector_score = Some(h.score);
    }
    let mut hits: Vec<HybridHit> = fused.into_values().collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
    let mut page: Vec<HybridHit> = hits.into_iter().skip(offset).take(limit).collect();
    // The page's rows, and snippets of the text query in those the text branch found: read
    // for these hits alone (searching the text again for their keys cost a key-set query,
    // its automaton over every segment and the rows twice).
    let mut rows: Vec<(&crate::shard::PartitionView, RawRow)> = Vec::new();
    let mut lit: Vec<usize> = Vec::new();
    for (i, h) in page.iter_mut().enumerate() {
        let Some(p) = view.partitions.get(&(scope.index, h.region.clone())) else {
            continue;
        };
        let Some(row) = row_of(p, &h.key)? else {
            continue;
        };
        h.row = Some(row.clone());
        if text_search.highlight && h.text_rank.is_some() {
            lit.push(i);
            rows.push((p, row));
        }
    }
    if !rows.is_empty() {
        let refs: Vec<(&crate::shard::PartitionView, &RawRow)> =
            rows.iter().map(|(p, r)| (*p, r)).collect();
        let snippets = text::highlight_rows(view, scope, &text_search.query, &refs)?;
        for (i, s) in lit.into_iter().zip(snippets) {
            page[i].highlights = s;
        }
    }
    Ok(page)
}
