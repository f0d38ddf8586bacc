//! Searches over a shard view: each partition answers from its committed structures with the
//! fresh layer overlaid (fresh documents shadow committed ones with the same key), and the
//! partitions' answers merge into one global order — a true global top-k, not per-partition
//! top-k concatenated. Synchronous: call it on the blocking pool.

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::document::RawRow;
use crate::fields::{self, add_counts, FacetCollector, FacetCounts, Key, SortCollector};
use crate::filter::Filter;
use crate::geo::{haversine_m, BBox};
use crate::shard::ShardView;
use crate::text::{Statistics, TextQuery};
use crate::vector::{self, Scored, TopK};

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
    geo_where(view, scope, query, limit, None).expect("no filter, no index reads")
}

/// `geo`, among documents passing a structured filter.
pub fn geo_where(
    view: &ShardView,
    scope: &Scope,
    query: &GeoQuery,
    limit: usize,
    filter: Option<&Filter>,
) -> tantivy::Result<Vec<GeoHit>> {
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
        let allowed = filter.map(|f| filter_allowed(p, f)).transpose()?;
        let passes = |key: &str| allowed.as_ref().is_none_or(|a| a.contains(key));
        let mut push = |key: &str, distance_m: f64| {
            if !passes(key) {
                return;
            }
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
                        .filter(|(k, _)| !p.fresh.shadows(k) && passes(k))
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
    Ok(hits)
}

/// Keys of a partition whose documents pass a structured filter: committed (unless
/// shadowed) and fresh.
pub fn filter_allowed(
    p: &crate::shard::PartitionView,
    filter: &Filter,
) -> tantivy::Result<std::collections::HashSet<String>> {
    let mut allowed = std::collections::HashSet::new();
    if !p.fresh.truncated {
        let q = filter.to_tantivy(&p.fields.filters);
        let docs = p
            .searcher
            .search(&*q, &tantivy::collector::DocSetCollector)?;
        // Keys by segment: term ordinals first, then one sorted pass over each segment's key
        // dictionary (a lookup per document costs ~20 µs: 0.5 s for 20k documents).
        let mut ords: std::collections::HashMap<u32, Vec<u64>> = Default::default();
        for addr in docs {
            ords.entry(addr.segment_ord)
                .or_default()
                .push(addr.doc_id as u64);
        }
        for (segment_ord, docs) in ords {
            let segment = p.searcher.segment_reader(segment_ord);
            let Some(keys) = segment.fast_fields().str("_key")? else {
                continue;
            };
            let mut term_ords: Vec<u64> = docs
                .iter()
                .filter_map(|&d| keys.term_ords(d as tantivy::DocId).next())
                .collect();
            term_ords.sort_unstable();
            term_ords.dedup();
            keys.dictionary()
                .sorted_ords_to_term_cb(&term_ords, |bytes| {
                    if let Ok(key) = std::str::from_utf8(bytes) {
                        if !p.fresh.docs.contains_key(key) {
                            allowed.insert(key.to_owned());
                        }
                    }
                })?;
        }
    }
    for (key, e) in &p.fresh.docs {
        if e.doc.as_ref().is_some_and(|d| filter.matches(&d.filters)) {
            allowed.insert(key.clone());
        }
    }
    Ok(allowed)
}

/// Keys passing both optional filters (None: no restriction).
fn allowed_keys(
    p: &crate::shard::PartitionView,
    geo: Option<&GeoQuery>,
    fields: Option<&Filter>,
) -> tantivy::Result<Option<std::collections::HashSet<String>>> {
    let g = geo.map(|g| geo_allowed(p, g));
    let f = fields.map(|f| filter_allowed(p, f)).transpose()?;
    Ok(match (g, f) {
        (None, None) => None,
        (Some(a), None) | (None, Some(a)) => Some(a),
        (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
    })
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

/// A full-text query over a scope, optionally among documents within a radius or box.
pub struct TextSearch {
    pub query: TextQuery,
    /// Hits wanted (after `offset`).
    pub limit: usize,
    pub offset: usize,
    /// Only documents passing this geo filter (`Nearest` is not a filter); hits then carry
    /// their distance from its centre.
    pub filter: Option<GeoQuery>,
    /// Only documents passing this structured filter.
    pub fields_filter: Option<Filter>,
    /// Highlighted snippets (HTML, matches in `<b>`) per text field.
    pub highlight: bool,
    /// Order by a filter field instead of by score.
    pub sort: Option<SortBy>,
    /// Value counts over the whole matching set: (filter field position, how many values).
    pub facets: Vec<(usize, usize)>,
}

#[derive(Clone, Copy, Debug)]
pub struct SortBy {
    /// Position in `Fields::filters`.
    pub field: usize,
    pub descending: bool,
}

#[derive(Clone, Debug)]
pub struct TextHit {
    pub key: String,
    pub region: String,
    /// BM25 with per-field boosts; comparable across the partitions of one answer. None
    /// when sorted by a field (segments are then not scored).
    pub score: Option<f32>,
    /// The sort field's value, when sorted by one.
    pub sort_value: Option<Key>,
    /// The configured columns' values (the document store).
    pub row: RawRow,
    /// (text field name, snippet HTML) for fields with a match, when asked.
    pub highlights: Vec<(String, String)>,
    pub distance_m: Option<f64>,
}

/// The answer to a text search: the page of hits and how many documents matched in all.
pub struct TextAnswer {
    pub hits: Vec<TextHit>,
    pub total: u64,
    /// Per requested facet: (value, count), most frequent first.
    pub facets: Vec<Vec<(Key, u64)>>,
}

enum Source {
    Committed(tantivy::DocAddress),
    Fresh(std::sync::Arc<crate::document::Document>),
}

struct Candidate<'a> {
    score: Option<f32>,
    sort_key: Option<Key>,
    key: Option<String>,
    partition: &'a crate::shard::PartitionView,
    region: &'a str,
    source: Source,
}

/// BM25-ranked hits over every partition in scope, with one set of statistics (committed
/// plus fresh) so scores compare across partitions and do not change when a document's
/// commit moves it from the fresh layer to the segments. Ties by key.
pub fn text(view: &ShardView, scope: &Scope, search: &TextSearch) -> tantivy::Result<TextAnswer> {
    use tantivy::collector::Count;
    use tantivy::query::{BooleanQuery, Occur, Query, TermSetQuery};

    let parts: Vec<(&str, &crate::shard::PartitionView)> = view
        .partitions
        .iter()
        .filter(|((index, region), _)| scope.covers(*index, region))
        .map(|((_, region), p)| (region.as_str(), p))
        .collect();
    let allowed: Vec<Option<std::collections::HashSet<String>>> = parts
        .iter()
        .map(|(_, p)| search.filter.as_ref().map(|f| geo_allowed(p, f)))
        .collect();
    let fields_filter = match (parts.first(), &search.fields_filter) {
        (Some((_, p)), Some(f)) => Some(f.to_tantivy(&p.fields.filters)),
        _ => None,
    };

    // Statistics: committed segments of every partition, plus the fresh documents.
    // (term, text field position, token) of every BM25 term of the query.
    let terms: Vec<(tantivy::Term, usize, String)> = match parts.first() {
        None => Vec::new(),
        Some((_, p)) => search
            .query
            .terms()
            .into_iter()
            .filter_map(|term| {
                let field = p.fields.text.iter().position(|t| t.field == term.field())?;
                let text = term.value().as_str()?.to_owned();
                Some((term, field, text))
            })
            .collect(),
    };
    let mut stats = Statistics {
        searchers: parts.iter().map(|(_, p)| &p.searcher).collect(),
        fresh_docs: 0,
        fresh_tokens: HashMap::new(),
        fresh_doc_freq: HashMap::new(),
    };
    for (_, p) in &parts {
        for e in p.fresh.docs.values() {
            let Some(tokens) = e.tokens(&p.fields) else {
                continue;
            };
            stats.fresh_docs += 1;
            for (t, toks) in p.fields.text.iter().zip(tokens) {
                *stats.fresh_tokens.entry(t.field).or_default() += toks.len() as u64;
            }
            for (term, field, text) in &terms {
                if tokens[*field].iter().any(|t| t == text) {
                    *stats.fresh_doc_freq.entry(term.clone()).or_default() += 1;
                }
            }
        }
    }
    let mut query = search.query.clone();
    query.prepare(&stats)?;
    let tq = query.to_tantivy();
    let want = search.offset + search.limit;

    let mut candidates: Vec<Candidate> = Vec::new();
    let mut total = 0u64;
    let mut facet_counts: FacetCounts = vec![HashMap::new(); search.facets.len()];
    let facet_fields = |p: &crate::shard::PartitionView| -> Vec<crate::filter::FilterField> {
        search
            .facets
            .iter()
            .map(|&(f, _)| p.fields.filters[f].clone())
            .collect()
    };
    for ((region, p), allowed) in parts.iter().zip(&allowed) {
        if !p.fresh.truncated {
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, tq.box_clone())];
            if !p.fresh.docs.is_empty() {
                let shadowed = p
                    .fresh
                    .docs
                    .keys()
                    .map(|k| tantivy::Term::from_field_text(p.fields.key, k));
                clauses.push((Occur::MustNot, Box::new(TermSetQuery::new(shadowed))));
            }
            if let Some(keys) = allowed {
                let keys = keys
                    .iter()
                    .map(|k| tantivy::Term::from_field_text(p.fields.key, k));
                clauses.push((Occur::Must, Box::new(TermSetQuery::new(keys))));
            }
            if let Some(f) = &fields_filter {
                clauses.push((Occur::Must, f.box_clone()));
            }
            let q = BooleanQuery::new(clauses);
            let facets = FacetCollector {
                fields: facet_fields(p),
            };
            let (found, count, counts) = match search.sort {
                None => {
                    let (top, count, counts) = p.searcher.search_with_statistics_provider(
                        &q,
                        &(crate::fields::TopByScore { limit: want }, Count, facets),
                        &stats,
                    )?;
                    let found: Vec<(Option<f32>, Option<Key>, tantivy::DocAddress)> = top
                        .into_iter()
                        .map(|(score, addr)| (Some(score), None, addr))
                        .collect();
                    (found, count, counts)
                }
                Some(sort) => {
                    let sorter = SortCollector {
                        field: p.fields.filters[sort.field].clone(),
                        descending: sort.descending,
                        limit: want,
                    };
                    let (top, count, counts) = p.searcher.search(&q, &(sorter, Count, facets))?;
                    let found = top
                        .into_iter()
                        .map(|(key, addr)| (None, key, addr))
                        .collect();
                    (found, count, counts)
                }
            };
            total += count as u64;
            add_counts(&mut facet_counts, counts);
            for (score, sort_key, addr) in found {
                candidates.push(Candidate {
                    score,
                    sort_key,
                    key: Some(committed_key(&p.searcher, addr)?),
                    partition: p,
                    region,
                    source: Source::Committed(addr),
                });
            }
        }
        for (key, e) in &p.fresh.docs {
            let (Some(doc), Some(tokens)) = (&e.doc, e.tokens(&p.fields)) else {
                continue;
            };
            if allowed.as_ref().is_some_and(|a| !a.contains(key))
                || search
                    .fields_filter
                    .as_ref()
                    .is_some_and(|f| !f.matches(&doc.filters))
            {
                continue;
            }
            if let Some(score) = query.score(tokens) {
                total += 1;
                for (counts, &(f, _)) in facet_counts.iter_mut().zip(&search.facets) {
                    if let Some(v) = &doc.filters[f] {
                        *counts.entry(Key::of(v)).or_default() += 1;
                    }
                }
                candidates.push(Candidate {
                    score: Some(score),
                    sort_key: search
                        .sort
                        .and_then(|s| doc.filters[s.field].as_ref().map(Key::of)),
                    key: Some(key.clone()),
                    partition: p,
                    region,
                    source: Source::Fresh(doc.clone()),
                });
            }
        }
    }
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a], &candidates[b]);
        let first = match search.sort {
            Some(s) => fields::compare(&a.sort_key, &b.sort_key, s.descending),
            None => b.score.unwrap_or(0.0).total_cmp(&a.score.unwrap_or(0.0)),
        };
        first.then_with(|| a.key.cmp(&b.key))
    });
    let centre = search.filter.as_ref().map(|f| match f {
        GeoQuery::Within { lat, lon, .. } | GeoQuery::Nearest { lat, lon, .. } => (*lat, *lon),
        GeoQuery::BBox(b) => b.centre(),
    });
    // Snippet generators per text field, weighting terms by the shared statistics (tantivy's
    // own `create` drops terms no committed segment has, so fresh-only words would not be
    // highlighted).
    let mut generators: HashMap<usize, tantivy::snippet::SnippetGenerator> = HashMap::new();
    let mut hits = Vec::new();
    for &i in order.iter().skip(search.offset).take(search.limit) {
        let c = &candidates[i];
        let row = match &c.source {
            Source::Committed(addr) => {
                let doc: tantivy::TantivyDocument = c.partition.searcher.doc(*addr)?;
                crate::partition::decode_source(&doc, &c.partition.fields).unwrap_or_default()
            }
            Source::Fresh(d) => d.raw.clone(),
        };
        let mut highlights = Vec::new();
        if search.highlight {
            for (fi, t) in c.partition.fields.text.iter().enumerate() {
                let Some(text) = row.get(t.column).and_then(|v| v.as_deref()) else {
                    continue;
                };
                let generator = match generators.entry(fi) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let mut weights = std::collections::BTreeMap::new();
                        for (term, f, token) in &terms {
                            if *f == fi {
                                let df =
                                    tantivy::query::Bm25StatisticsProvider::doc_freq(&stats, term)?;
                                weights.insert(token.clone(), 1.0 / (1.0 + df as f32));
                            }
                        }
                        v.insert(tantivy::snippet::SnippetGenerator::new(
                            weights,
                            t.analyzer(),
                            t.field,
                            160,
                        ))
                    }
                };
                let snippet = generator.snippet(text);
                if !snippet.highlighted().is_empty() {
                    highlights.push((t.name.clone(), snippet.to_html()));
                }
            }
        }
        let distance_m = match (centre, c.point()) {
            (Some((lat, lon)), Some((dlat, dlon))) => Some(haversine_m(lat, lon, dlat, dlon)),
            _ => None,
        };
        hits.push(TextHit {
            key: c.key.clone().unwrap_or_default(),
            region: c.region.to_owned(),
            score: c.score,
            sort_value: c.sort_key.clone(),
            row,
            highlights,
            distance_m,
        });
    }
    let facets = facet_counts
        .iter()
        .zip(&search.facets)
        .map(|(counts, &(_, size))| fields::top_values(counts, size))
        .collect();
    Ok(TextAnswer {
        hits,
        total,
        facets,
    })
}

/// The key of a committed document, from the `_key` fast field.
fn committed_key(
    searcher: &tantivy::Searcher,
    addr: tantivy::DocAddress,
) -> tantivy::Result<String> {
    let segment = searcher.segment_reader(addr.segment_ord);
    let mut key = String::new();
    if let Some(keys) = segment.fast_fields().str("_key")? {
        if let Some(ord) = keys.term_ords(addr.doc_id).next() {
            keys.ord_to_str(ord, &mut key)?;
        }
    }
    Ok(key)
}

impl Candidate<'_> {
    /// The document's point, for distances: from the fresh document, or from the committed
    /// R-tree (which holds every committed document the fresh layer does not shadow).
    fn point(&self) -> Option<(f64, f64)> {
        match &self.source {
            Source::Fresh(d) => d.geo,
            Source::Committed(_) => {
                let key = self.key.as_deref()?;
                self.partition.geo.as_ref()?.get(key)
            }
        }
    }
}

/// The row of `key` in a partition as readers see it: the fresh layer, else committed.
pub fn row_of(p: &crate::shard::PartitionView, key: &str) -> tantivy::Result<Option<RawRow>> {
    if let Some(e) = p.fresh.docs.get(key) {
        return Ok(e.doc.as_ref().map(|d| d.raw.clone()));
    }
    if p.fresh.truncated {
        return Ok(None);
    }
    crate::partition::lookup(&p.searcher, &p.fields, key)
        .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))
}

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
    /// From the text branch (absent for vector-only hits).
    pub highlights: Vec<(String, String)>,
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
    let text_branch = text(
        view,
        scope,
        &TextSearch {
            query: text_search.query.clone(),
            limit: window,
            offset: 0,
            filter: text_search.filter.clone(),
            fields_filter: text_search.fields_filter.clone(),
            highlight: text_search.highlight,
            sort: None,
            facets: Vec::new(),
        },
    )?;
    let vector_branch = vector(
        view,
        scope,
        &VectorQuery {
            k: window,
            ..vector_query.clone()
        },
    )?;
    let mut fused: HashMap<String, HybridHit> = HashMap::new();
    for (rank, h) in text_branch.hits.into_iter().enumerate() {
        let e = hit_of(&mut fused, &h.key, &h.region);
        e.score += fusion.text_weight / (fusion.k + rank as f64 + 1.0);
        e.text_rank = Some(rank + 1);
        e.text_score = h.score;
        e.highlights = h.highlights;
    }
    for (rank, h) in vector_branch.into_iter().enumerate() {
        let e = hit_of(&mut fused, &h.key, &h.region);
        e.score += fusion.vector_weight / (fusion.k + rank as f64 + 1.0);
        e.vector_rank = Some(rank + 1);
        e.vector_score = Some(h.score);
    }
    let mut hits: Vec<HybridHit> = fused.into_values().collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key)));
    Ok(hits.into_iter().skip(offset).take(limit).collect())
}
