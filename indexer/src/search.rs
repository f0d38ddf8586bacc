//! Searches over a shard view: each partition answers from its committed structures with the
//! fresh layer overlaid (fresh documents shadow committed ones with the same key), and the
//! partitions' answers merge into one global order — a true global top-k, not per-partition
//! top-k concatenated. Synchronous: call it on the blocking pool.

use std::cmp::Ordering;

use crate::engine::geo::{haversine_m, BBox};
use crate::engine::vector::{self, Scored, TopK};
use crate::shard::ShardView;

/// A geo query; every hit carries its great-circle distance in metres from the query point
/// (from the box's centre for `BBox`).
#[derive(Clone, Debug, PartialEq)]
pub enum GeoQuery {
    Within { lat: f64, lon: f64, radius_m: f64 },
    BBox(BBox),
    Nearest { lat: f64, lon: f64, k: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct GeoHit {
    pub key: String,
    pub region: String,
    pub distance_m: f64,
}

/// Which partitions a query touches.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub index: usize,
    /// Empty: every region of the index.
    pub regions: Vec<String>,
}

impl Scope {
    fn covers(&self, index: usize, region: &str) -> bool {
        index == self.index && (self.regions.is_empty() || self.regions.iter().any(|r| r == region))
    }
}

fn order(a: &GeoHit, b: &GeoHit) -> Ordering {
    a.distance_m
        .total_cmp(&b.distance_m)
        .then_with(|| a.key.cmp(&b.key))
}

/// Hits sorted by distance (then key), at most `limit`.
pub fn geo(view: &ShardView, scope: &Scope, query: &GeoQuery, limit: usize) -> Vec<GeoHit> {
    let mut hits = Vec::new();
    let (lat, lon) = match query {
        GeoQuery::Within { lat, lon, .. } | GeoQuery::Nearest { lat, lon, .. } => (*lat, *lon),
        GeoQuery::BBox(b) => b.centre(),
    };
    let want = match query {
        GeoQuery::Nearest { k, .. } => (*k).min(limit),
        _ => limit,
    };
    for ((index, region), p) in &view.partitions {
        if !scope.covers(*index, region) {
            continue;
        }
        let mut push = |key: &str, distance_m: f64| {
            hits.push(GeoHit {
                key: key.to_owned(),
                region: region.clone(),
                distance_m,
            })
        };
        // Committed points, unless the fresh layer shadows them.
        if let Some(g) = &p.geo {
            match query {
                GeoQuery::Within { radius_m, .. } => g.within(lat, lon, *radius_m, |k, d| {
                    if !p.fresh.shadows(k) {
                        push(k, d)
                    }
                }),
                GeoQuery::BBox(b) => g.in_bbox(b, (lat, lon), |k, d| {
                    if !p.fresh.shadows(k) {
                        push(k, d)
                    }
                }),
                GeoQuery::Nearest { .. } => {
                    for (k, d) in g
                        .nearest(lat, lon)
                        .filter(|(k, _)| !p.fresh.shadows(k))
                        .take(want)
                    {
                        push(k, d);
                    }
                }
            }
        }
        // Fresh documents, scanned exactly.
        for (key, e) in &p.fresh.docs {
            let Some((dlat, dlon)) = e.doc.as_ref().and_then(|d| d.geo) else {
                continue;
            };
            let d = haversine_m(lat, lon, dlat, dlon);
            let keep = match query {
                GeoQuery::Within { radius_m, .. } => d <= *radius_m,
                GeoQuery::BBox(b) => b.contains(dlat, dlon),
                GeoQuery::Nearest { .. } => true,
            };
            if keep {
                push(key, d);
            }
        }
    }
    hits.sort_by(order);
    hits.truncate(want);
    hits
}

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

/// Keys of a partition that pass a geo filter: committed (unless shadowed) and fresh.
fn geo_allowed(
    p: &crate::shard::PartitionView,
    filter: &GeoQuery,
) -> std::collections::HashSet<String> {
    let mut allowed = std::collections::HashSet::new();
    let (lat, lon) = match filter {
        GeoQuery::Within { lat, lon, .. } | GeoQuery::Nearest { lat, lon, .. } => (*lat, *lon),
        GeoQuery::BBox(b) => b.centre(),
    };
    if let Some(g) = &p.geo {
        let mut take = |k: &str, _d: f64| {
            if !p.fresh.shadows(k) {
                allowed.insert(k.to_owned());
            }
        };
        match filter {
            GeoQuery::Within { radius_m, .. } => g.within(lat, lon, *radius_m, &mut take),
            GeoQuery::BBox(b) => g.in_bbox(b, (lat, lon), &mut take),
            GeoQuery::Nearest { .. } => {}
        }
    }
    for (key, e) in &p.fresh.docs {
        let Some((dlat, dlon)) = e.doc.as_ref().and_then(|d| d.geo) else {
            continue;
        };
        let pass = match filter {
            GeoQuery::Within { radius_m, .. } => haversine_m(lat, lon, dlat, dlon) <= *radius_m,
            GeoQuery::BBox(b) => b.contains(dlat, dlon),
            GeoQuery::Nearest { .. } => false,
        };
        if pass {
            allowed.insert(key.clone());
        }
    }
    allowed
}

/// The `k` closest documents over every partition in scope, best first (ties by key).
pub fn vector(view: &ShardView, scope: &Scope, query: &VectorQuery) -> Vec<VectorHit> {
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
        let allowed = query.filter.as_ref().map(|f| geo_allowed(p, f));
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
    top.into_sorted()
        .into_iter()
        .map(|h| VectorHit {
            region: regions.get(&h.key).cloned().unwrap_or_default(),
            key: h.key.to_string(),
            score: h.score,
        })
        .collect()
}
