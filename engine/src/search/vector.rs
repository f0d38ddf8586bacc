//! Vector kNN: graph candidates rescored exactly, the exact tier for what the graph lacks,
//! and the fresh layer; exact search under selective filters.

use super::*;
use crate::filter::Filter;
use crate::shard::ShardView;
use crate::vector::{self, Scored, TopK};

/// k-nearest neighbours of `values` (of the index's dimension), optionally among documents
/// that pass a geo filter.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorQuery {
    pub values: Vec<f32>,
    pub k: usize,
    /// Search breadth of the graph (higher: better recall, slower); default `max(256, 8k)`.
    pub ef: Option<usize>,
    /// Scan every vector instead of the graph: recall 1.0.
    pub exact: bool,
    /// Only documents within this radius or box (`Nearest` is not a filter).
    pub filter: Option<GeoQuery>,
    /// Only documents passing this structured filter.
    pub fields_filter: Option<Filter>,
}

/// A filter passing at most this many documents of a partition is searched exactly: cheaper
/// than the graph, and exact (a graph walk would skip most of what it visits).
pub const EXACT_FILTER_MAX: usize = 4_096;

#[derive(Clone, Debug, PartialEq)]
pub struct VectorHit {
    pub key: String,
    pub region: String,
    /// Higher is closer: cosine similarity, dot product, or minus the Euclidean distance.
    pub score: f64,
}

/// The `k` closest documents over every partition in scope, best first (ties by key).
pub fn vector(
    view: &ShardView,
    scope: &Scope,
    query: &VectorQuery,
) -> tantivy::Result<Vec<VectorHit>> {
    let q_inv = vector::inv_norm(&query.values);
    let mut top = TopK::new(query.k);
    let mut regions: std::collections::HashMap<std::sync::Arc<str>, String> =
        std::collections::HashMap::new();
    for ((index, region), p) in &view.partitions {
        if !scope.covers(*index, region) {
            continue;
        }
        let Some(store) = &p.vectors else { continue };
        let metric = store.metric();
        let allowed = allowed_keys(p, query.filter.as_ref(), query.fields_filter.as_ref())?;
        let passes = |key: &str| allowed.as_ref().is_none_or(|a| a.contains(key));
        let mut found: Vec<Scored> = Vec::new();
        let selective = allowed
            .as_ref()
            .is_some_and(|a| a.len() <= EXACT_FILTER_MAX);
        let mut use_graph = !query.exact && !selective && p.graph.is_some();
        if use_graph {
            let graph = p.graph.as_ref().expect("checked");
            // Versions below the watermark are in the graph; the rest are scanned.
            let watermark = graph.graphed();
            let ef = query.ef.unwrap_or((8 * query.k).max(256)).max(query.k);
            let mut seen = std::collections::HashSet::new();
            // The search explores `ef` nodes anyway: rescoring all of them exactly is cheap and
            // makes up for tombstones and filtered-out documents among them.
            let candidates = graph.search(&query.values, ef, ef);
            let pending = p.recent_vectors.range(watermark..).map(|(_, id)| *id);
            for id in candidates.into_iter().chain(pending) {
                let Some((key, v, inv)) = store.by_id(id) else {
                    continue;
                };
                if p.fresh.shadows(key) || !passes(key) || !seen.insert(key.clone()) {
                    continue;
                }
                found.push(Scored {
                    key: key.clone(),
                    score: vector::score(metric, &query.values, q_inv, v, inv),
                });
            }
            // A filter that removed too much of the beam: answer exactly instead.
            if allowed.is_some() && found.len() < query.k {
                let fresh_passing = p
                    .fresh
                    .docs
                    .iter()
                    .filter(|(k, e)| {
                        e.doc.as_ref().is_some_and(|d| d.vector.is_some()) && passes(k)
                    })
                    .count();
                if found.len() + fresh_passing < query.k {
                    found.clear();
                    use_graph = false;
                }
            }
        }
        if !use_graph {
            match &allowed {
                Some(keys) => {
                    for key in keys {
                        if p.fresh.docs.contains_key(key) {
                            continue; // scored below from the fresh layer
                        }
                        if let Some(v) = store.get(key) {
                            found.push(Scored {
                                key: std::sync::Arc::from(key.as_str()),
                                score: vector::score(
                                    metric,
                                    &query.values,
                                    q_inv,
                                    v,
                                    vector::inv_norm(v),
                                ),
                            });
                        }
                    }
                }
                None => found.extend(store.search(&query.values, query.k, |k| p.fresh.shadows(k))),
            }
        }
        for (key, e) in &p.fresh.docs {
            let Some(v) = e.doc.as_ref().and_then(|d| d.vector.as_deref()) else {
                continue;
            };
            if passes(key) {
                found.push(Scored {
                    key: std::sync::Arc::from(key.as_str()),
                    score: vector::score(metric, &query.values, q_inv, v, vector::inv_norm(v)),
                });
            }
        }
        for hit in found {
            if top.admits(hit.score) {
                regions.insert(hit.key.clone(), region.clone());
                top.push(hit);
            }
        }
    }
    Ok(top
        .into_sorted()
        .into_iter()
        .map(|h| VectorHit {
            region: regions.get(&h.key).cloned().unwrap_or_default(),
            key: h.key.to_string(),
            score: h.score,
        })
        .collect())
}
