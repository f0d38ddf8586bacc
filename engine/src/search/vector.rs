//! Vector kNN: graph candidates rescored exactly, the exact tier for what the graph lacks,
//! and the fresh layer; exact search under selective filters.
//!
//! The search breadth `ef` is the query's, not each partition's: every partition is searched
//! first at `max(k, ef / 2n)`, then the partitions holding the provisional top k are searched
//! again with `ef` shared by their part of it; so a global query costs about 1.5 times one
//! graph over all the documents, and partitions run in parallel while cores are idle. Filters become a bitset over the store's slots; candidates are store
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
    /// partitions by size; default [`default_ef`] of the vectors in scope (at least `k`).
    pub ef: Option<usize>,
    /// Scan every vector instead of the graph: recall 1.0.
    pub exact: bool,
    /// Only documents within this radius or box (`Nearest` is not a filter).
    pub filter: Option<GeoQuery>,
    /// Only documents passing this structured filter.
    pub fields_filter: Option<Filter>,
    /// Stops the scans once set (checked every 1,024 vectors); the answer is then partial
    /// and its caller discards it. The graph walk is bounded by `ef` and not checked.
    pub cancel: Option<Cancel>,
}

/// The search breadth when a query names none, for a scope of `vectors` vectors: 256 up to
/// about 40k, then 1.25·√vectors, at most 4096. A bigger graph needs a broader walk for the
/// same recall: at a fixed 256, recall@10 fell from 0.98 at 100k rows to 0.89 at 1M
/// (BENCHMARKS-SCALE.md, seeded copies of the dev set; 1M: 0.96 all regions at 1024, 0.958 in
/// one region of 229k vectors at 512).
pub fn default_ef(vectors: usize) -> usize {
    ((1.25 * (vectors as f64).sqrt()) as usize).clamp(256, 4096)
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

/// Vector searches running now, to decide whether partitions may run in parallel.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// The cores this process may use, asked once (the standard library reads the cgroup's
/// files on every call: 6% of a vector query's CPU in the benchmark's profile).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

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
    let ef = query
        .ef
        .unwrap_or_else(|| default_ef(parts.iter().map(|(_, _, s)| s.len()).sum()))
        .max(query.k);
    let n = parts.len();
    let search = |(i, ef): (usize, usize)| {
        let (_, p, store) = parts[i];
        partition(p, store, query, q_inv, ef)
    };
    let run = |jobs: Vec<(usize, usize)>| -> Vec<tantivy::Result<Searched>> {
        let running = RUNNING.fetch_add(1, Ordering::Relaxed) + 1;
        let idle_cores = cores() > running;
        let out = if idle_cores && jobs.len() > 1 {
            use rayon::prelude::*;
            jobs.into_par_iter().map(search).collect()
        } else {
            jobs.into_iter().map(search).collect()
        };
        RUNNING.fetch_sub(1, Ordering::Relaxed);
        out
    };
    // A first look at every partition at a small breadth, then the query's breadth spent
    // where the provisional top k lies (a query about one region's places finds them all
    // there; sharing `ef` by size would starve that region's graph).
    let first = if n > 1 {
        (ef / n).max(query.k).min(ef)
    } else {
        ef
    };
    let mut answers = run((0..n).map(|i| (i, first)).collect());
    if first < ef {
        let mut provisional: Vec<(f64, usize)> = Vec::new();
        for (i, a) in answers.iter().enumerate() {
            if let Ok(a) = a {
                provisional.extend(a.hits.iter().map(|h| (h.score, i)));
            }
        }
        provisional.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut share = vec![0usize; n];
        for &(_, i) in provisional.iter().take(query.k) {
            share[i] += 1;
        }
        let again: Vec<(usize, usize)> = share
            .iter()
            .enumerate()
            .filter(|&(i, &c)| c > 0 && answers[i].as_ref().is_ok_and(|a| a.graph))
            .map(|(i, &c)| (i, (ef * c).div_ceil(query.k).max(first)))
            // A second look starts the walk over: worth it only when a quarter broader at
            // least (a deep `k`, as hybrid's window of 100, made the first look nearly as
            // broad as the second in most partitions).
            .filter(|&(_, e)| e * 4 > first * 5)
            .collect();
        let redone = run(again.clone());
        for ((i, _), answer) in again.into_iter().zip(redone) {
            answers[i] = answer;
        }
    }

    let mut top = TopK::new(query.k);
    let mut regions: std::collections::HashMap<std::sync::Arc<str>, &str> =
        std::collections::HashMap::new();
    for (answer, (region, _, _)) in answers.into_iter().zip(&parts) {
        for hit in answer?.hits {
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

    /// Sets the slot of `key`'s vector, if it has one.
    fn mark(&mut self, store: &VectorStore, key: &str) {
        if let Some(slot) = store.slot_of(key) {
            self.set(slot);
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

/// The committed slots of a partition passing the query's filters, if it has any.
fn allowed_slots(
    p: &PartitionView,
    store: &VectorStore,
    query: &VectorQuery,
) -> tantivy::Result<Option<Slots>> {
    let geo = query.filter.as_ref().map(|g| {
        let mut slots = Slots::new(store.slot_count());
        visit_geo(p, g, |key| slots.mark(store, key));
        slots
    });
    let fields = match &query.fields_filter {
        Some(filter) => {
            let mut slots = Slots::new(store.slot_count());
            filtered_slots(p, store, filter, |slot| slots.set(slot))?;
            Some(slots)
        }
        None => None,
    };
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

/// A partition's best hits, and whether its graph found them (else the search was exact).
struct Searched {
    hits: Vec<Scored>,
    graph: bool,
}

/// `ef` scaled by a graph's points per live vector (at most three times `ef`); a graph
/// still missing vectors is searched at `ef`.
fn widened(ef: usize, points: usize, live: usize) -> usize {
    if points <= live || live == 0 {
        return ef;
    }
    (ef as u128 * points as u128)
        .div_ceil(live as u128)
        .min(3 * ef as u128) as usize
}

/// One partition's best `query.k` (committed and fresh), searching its graph at `ef`.
fn partition(
    p: &PartitionView,
    store: &VectorStore,
    query: &VectorQuery,
    q_inv: f64,
    ef: usize,
) -> tantivy::Result<Searched> {
    let metric = store.metric();
    let score = |v: &[f32], inv: f64| vector::score(metric, &query.values, q_inv, v, inv);
    let stopped = || query.cancel.as_ref().is_some_and(Cancel::is_cancelled);
    if stopped() {
        return Ok(Searched {
            hits: Vec::new(),
            graph: false,
        });
    }
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
    // A filter passing a share of the live vectors keeps about that share of a beam: the
    // walk is widened by live / passing, so it keeps `ef` passing candidates, unless that
    // walk would cost more than scoring the passing vectors exactly (a walk compares ~40
    // vectors in 8 bits per place in its beam, about eight exact f64 scores' worth).
    let ef = match &allowed {
        Some(a) if a.count > 0 => (ef * store.len()).div_ceil(a.count).max(ef),
        _ => ef,
    };
    let walk_dearer = allowed.as_ref().is_some_and(|a| ef > a.count / 8);
    let mut use_graph = !query.exact && !selective && !walk_dearer && p.graph.is_some();
    if use_graph {
        let graph = p.graph.as_ref().expect("checked");
        // Versions below the watermark are in the graph; the rest are scanned.
        let watermark = graph.graphed();
        // The search visits `ef` nodes anyway: rescoring all of them exactly is cheap and
        // makes up for tombstones and filtered-out documents among them. Tombstones (replaced
        // or deleted versions, up to half the graph before it is rebuilt) take places in the
        // beam that live vectors would have had: the walk is widened by the graph's points
        // per live vector, so it keeps `ef` live candidates.
        let ef = widened(ef, graph.points(), store.len());
        let mut ids = graph.search(&query.values, ef, ef);
        ids.extend(p.recent_vectors.range(watermark..).map(|(_, id)| *id));
        ids.sort_unstable();
        ids.dedup();
        // Every candidate is looked up before any is scored: the lookups do not depend on
        // each other, so their cache misses overlap (a store of 1M 384-d vectors is 1.5 GB),
        // where a lookup then a score, candidate by candidate, waited for each in turn
        // (`engine/examples/rescore`: 2,500 candidates of 1M, 2.4 -> 1.3 ms).
        let found: Vec<(&std::sync::Arc<str>, &[f32], f64)> = ids
            .into_iter()
            .filter_map(|id| {
                let (key, v, inv) = store.by_id(id)?;
                let passes = allowed.as_ref().is_none_or(|a| a.has((id >> 32) as u32))
                    && (fresh_empty || !p.fresh.shadows(key));
                passes.then_some((key, v, inv))
            })
            .collect();
        let kept = found.len();
        for (key, v, inv) in found {
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
                for (n, slot) in slots.iter().enumerate() {
                    if n % 1024 == 1023 && stopped() {
                        break;
                    }
                    if let Some((key, v, inv)) = store.by_slot(slot) {
                        offer(&mut top, key, score(v, inv));
                    }
                }
            }
            None => {
                for hit in store.search(&query.values, query.k, |k| p.fresh.shadows(k), &stopped) {
                    offer(&mut top, &hit.key, hit.score);
                }
            }
        }
    }
    for (n, (key, e)) in p.fresh.docs.iter().enumerate() {
        if n % 1024 == 1023 && stopped() {
            break;
        }
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
    Ok(Searched {
        hits: top.into_sorted(),
        graph: use_graph,
    })
}

#[cfg(test)]
mod tests {
    use super::{default_ef, widened};

    #[test]
    fn the_default_breadth_grows_with_the_vectors_searched() {
        assert_eq!(default_ef(0), 256);
        assert_eq!(default_ef(30_000), 256, "the dev set: as before");
        assert_eq!(default_ef(229_000), 598);
        assert_eq!(default_ef(1_000_000), 1250);
        assert_eq!(default_ef(100_000_000), 4096, "bounded");
    }

    #[test]
    fn the_walk_widens_by_the_graphs_tombstones() {
        assert_eq!(widened(256, 1000, 1000), 256);
        assert_eq!(widened(256, 500, 1000), 256, "a graph still being built");
        assert_eq!(widened(256, 2000, 1000), 512, "half tombstones");
        assert_eq!(widened(256, 1500, 1000), 384);
        assert_eq!(widened(256, 10_000, 1000), 768, "at most three times");
        assert_eq!(widened(256, 10, 0), 256);
    }
}
