//! Vector kNN: graph candidates rescored exactly, the exact tier for what the graph lacks,
//! and the fresh layer; exact search under selective filters.
//!
//! The search effort `ef` is the query's, not each partition's: a partition searches its graph
//! with its share of `ef` by size (never below `k` or an eighth of `ef`), so a global query
//! costs about what one graph over all the documents would, and partitions run in parallel
//! while cores are idle. Filters become a bitset over the store's slots; candidates are store
//! ids, so the hot loop neither allocates nor hashes a key.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::filter::Filter;
use crate::shard::{PartitionView, ShardView};
use crate::vector::{self, Scored, TopK, VectorStore};

/// k-nearest neighbours of `values` (of the index's dimension), optionally among documents
/// that pass a geo filter.
#[derive(Clone, Debug, PartialEq)]
pub struct VectorQuery {
    pub values: Vec<f32>,
    pub k: usize,
    /// Search breadth over the whole scope (higher: better recall, slower), shared among the
    /// partitions by size; default [`DEFAULT_EF`] (at least `k`).
    pub ef: Option<usize>,
    /// Scan every vector instead of the graph: recall 1.0.
    pub exact: bool,
    /// Only documents within this radius or box (`Nearest` is not a filter).
    pub filter: Option<GeoQuery>,
    /// Only documents passing this structured filter.
    pub fields_filter: Option<Filter>,
}

/// The search breadth when a query names none.
pub const DEFAULT_EF: usize = 256;

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

/// Vector searches running now, to decide whether partitions may run in parallel.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// The `k` closest documents over every partition in scope, best first (ties by key).
pub fn vector(
    view: &ShardView,
    scope: &Scope,
    query: &VectorQuery,
) -> tantivy::Result<Vec<VectorHit>> {
    let parts: Vec<(&str, &PartitionView, &VectorStore)> = view
        .partitions
        .iter()
        .filter(|((index, region), _)| scope.covers(*index, region))
        .filter_map(|((_, region), p)| Some((region.as_str(), p, p.vectors.as_deref()?)))
        .collect();
    let q_inv = vector::inv_norm(&query.values);
    let ef = query.ef.unwrap_or(DEFAULT_EF).max(query.k);
    let all: usize = parts.iter().map(|(_, _, s)| s.len()).sum::<usize>().max(1);
    let share = |store: &VectorStore| -> usize {
        let by_size = (ef as f64 * store.len() as f64 / all as f64).ceil() as usize;
        by_size.max(ef / 8).max(query.k).min(ef)
    };
    let search = |&(_, p, store): &(&str, &PartitionView, &VectorStore)| {
        partition(p, store, query, q_inv, share(store))
    };

    let running = RUNNING.fetch_add(1, Ordering::Relaxed) + 1;
    let idle_cores = std::thread::available_parallelism().map_or(1, |n| n.get()) > running;
    let answers: Vec<tantivy::Result<Vec<Scored>>> = if idle_cores && parts.len() > 1 {
        use rayon::prelude::*;
        parts.par_iter().map(search).collect()
    } else {
        parts.iter().map(search).collect()
    };
    RUNNING.fetch_sub(1, Ordering::Relaxed);

    let mut top = TopK::new(query.k);
    let mut regions: std::collections::HashMap<std::sync::Arc<str>, &str> =
        std::collections::HashMap::new();
    for (answer, (region, _, _)) in answers.into_iter().zip(&parts) {
        for hit in answer? {
            if top.admits(hit.score) {
                regions.insert(hit.key.clone(), region);
                top.push(hit);
            }
        }
    }
    Ok(top
        .into_sorted()
        .into_iter()
        .map(|h| VectorHit {
            region: regions
                .get(&h.key)
                .map_or_else(String::new, |r| (*r).to_owned()),
            key: h.key.to_string(),
            score: h.score,
        })
        .collect())
}

/// The committed slots passing a query's filters (None: no filter), as a bitset.
struct Slots {
    bits: Vec<u64>,
    count: usize,
}

impl Slots {
    fn new(n: usize) -> Slots {
        Slots {
            bits: vec![0; n.div_ceil(64)],
            count: 0,
        }
    }

    fn set(&mut self, slot: u32) {
        let (w, b) = (slot as usize / 64, slot % 64);
        if let Some(word) = self.bits.get_mut(w) {
            if *word & (1 << b) == 0 {
                *word |= 1 << b;
                self.count += 1;
            }
        }
    }

    fn has(&self, slot: u32) -> bool {
        self.bits
            .get(slot as usize / 64)
            .is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    fn and(mut self, other: &Slots) -> Slots {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a &= b;
        }
        self.count = self.bits.iter().map(|w| w.count_ones() as usize).sum();
        self
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let b = rest.trailing_zeros();
                    rest &= rest - 1;
                    (w * 64) as u32 + b
                })
            })
        })
    }
}

/// Walks the keys passing one filter, calling the visitor with each.
type KeyWalk<'a> = dyn FnMut(&mut dyn FnMut(&str)) -> tantivy::Result<()> + 'a;

/// The committed slots of a partition passing the query's filters, if it has any.
fn allowed_slots(
    p: &PartitionView,
    store: &VectorStore,
    query: &VectorQuery,
) -> tantivy::Result<Option<Slots>> {
    let mark = |visit: &mut KeyWalk| {
        let mut slots = Slots::new(store.slot_count());
        visit(&mut |key: &str| {
            if let Some(slot) = store.slot_of(key) {
                slots.set(slot);
            }
        })?;
        Ok::<_, tantivy::TantivyError>(slots)
    };
    let geo = query
        .filter
        .as_ref()
        .map(|g| {
            mark(&mut |f| {
                visit_geo(p, g, f);
                Ok(())
            })
        })
        .transpose()?;
    let fields = query
        .fields_filter
        .as_ref()
        .map(|filter| mark(&mut |f| visit_filtered(p, filter, f)))
        .transpose()?;
    Ok(match (geo, fields) {
        (None, None) => None,
        (Some(a), None) | (None, Some(a)) => Some(a),
        (Some(a), Some(b)) => Some(a.and(&b)),
    })
}

/// Whether a fresh document passes the query's filters.
fn fresh_passes(query: &VectorQuery, doc: &crate::document::Document) -> bool {
    query.filter.as_ref().is_none_or(|g| geo_passes(g, doc.geo))
        && query
            .fields_filter
            .as_ref()
            .is_none_or(|f| f.matches(&doc.filters))
}

/// One partition's best `query.k` (committed and fresh), searching its graph at `ef`.
fn partition(
    p: &PartitionView,
    store: &VectorStore,
    query: &VectorQuery,
    q_inv: f64,
    ef: usize,
) -> tantivy::Result<Vec<Scored>> {
    let metric = store.metric();
    let score = |v: &[f32], inv: f64| vector::score(metric, &query.values, q_inv, v, inv);
    let allowed = allowed_slots(p, store, query)?;
    let mut top = TopK::new(query.k);
    let offer = |top: &mut TopK, key: &std::sync::Arc<str>, s: f64| {
        if top.admits(s) {
            top.push(Scored {
                key: key.clone(),
                score: s,
            });
        }
    };
    let fresh_empty = p.fresh.docs.is_empty() && !p.fresh.truncated;
    let selective = allowed
        .as_ref()
        .is_some_and(|a| a.count <= EXACT_FILTER_MAX);
    let mut use_graph = !query.exact && !selective && p.graph.is_some();
    if use_graph {
        let graph = p.graph.as_ref().expect("checked");
        // Versions below the watermark are in the graph; the rest are scanned.
        let watermark = graph.graphed();
        // The search visits `ef` nodes anyway: rescoring all of them exactly is cheap and
        // makes up for tombstones and filtered-out documents among them.
        let mut ids = graph.search(&query.values, ef, ef);
        ids.extend(p.recent_vectors.range(watermark..).map(|(_, id)| *id));
        ids.sort_unstable();
        ids.dedup();
        let mut kept = 0;
        for id in ids {
            let Some((key, v, inv)) = store.by_id(id) else {
                continue;
            };
            if allowed.as_ref().is_some_and(|a| !a.has((id >> 32) as u32))
                || (!fresh_empty && p.fresh.shadows(key))
            {
                continue;
            }
            kept += 1;
            offer(&mut top, key, score(v, inv));
        }
        // A filter that removed too much of the beam: answer exactly instead.
        if allowed.is_some() && kept < query.k {
            let fresh_passing = p
                .fresh
                .docs
                .values()
                .filter(|e| {
                    e.doc
                        .as_ref()
                        .is_some_and(|d| d.vector.is_some() && fresh_passes(query, d))
                })
                .count();
            if kept + fresh_passing < query.k {
                top = TopK::new(query.k);
                use_graph = false;
            }
        }
    }
    if !use_graph {
        match &allowed {
            Some(slots) => {
                for slot in slots.iter() {
                    if let Some((key, v, inv)) = store.by_slot(slot) {
                        offer(&mut top, key, score(v, inv));
                    }
                }
            }
            None => {
                for hit in store.search(&query.values, query.k, |k| p.fresh.shadows(k)) {
                    offer(&mut top, &hit.key, hit.score);
                }
            }
        }
    }
    for (key, e) in &p.fresh.docs {
        let Some(doc) = &e.doc else { continue };
        let Some(v) = doc.vector.as_deref() else {
            continue;
        };
        if fresh_passes(query, doc) {
            offer(
                &mut top,
                &std::sync::Arc::from(key.as_str()),
                score(v, vector::inv_norm(v)),
            );
        }
    }
    Ok(top.into_sorted())
}
