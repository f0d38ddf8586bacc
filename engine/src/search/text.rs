//! Full-text search: tantivy over committed segments, our exact BM25 over fresh documents,
//! one set of statistics; sort by a filter field, facets.

use std::collections::HashMap;

use super::pruned::PrunedTop;
use super::*;
use crate::document::RawRow;
use crate::fields::{self, add_counts, FacetCollector, FacetCounts, Key, SortCollector};
use crate::filter::Filter;
use crate::geo::haversine_m;
use crate::shard::ShardView;
use crate::statistics::Statistics;
use crate::text::TextQuery;

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
    /// Count every match (an exact `total`); otherwise ranking may skip weak matches and the
    /// total is a lower bound. Facets and field sorts count every match anyway.
    pub count: bool,
    /// Fetch each hit's row (and highlights); false: keys and scores only.
    pub rows: bool,
    /// Stops the scan of committed segments when set (the answer is then to be discarded).
    pub cancel: Option<Cancel>,
}

impl TextSearch {
    /// The first `limit` hits of `query` by score, highlighted; no filter, sort or facets.
    pub fn top(query: TextQuery, limit: usize) -> TextSearch {
        TextSearch {
            query,
            limit,
            offset: 0,
            filter: None,
            fields_filter: None,
            highlight: true,
            sort: None,
            facets: Vec::new(),
            count: true,
            rows: true,
            cancel: None,
        }
    }
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
    /// The configured columns' values (without the vector column: `rows.rs`); empty when
    /// the search asked for keys only.
    pub row: RawRow,
    /// (text field name, snippet HTML) for fields with a match, when asked.
    pub highlights: Vec<(String, String)>,
    pub distance_m: Option<f64>,
}

/// The answer to a text search: the page of hits and how many documents matched in all.
pub struct TextAnswer {
    pub hits: Vec<TextHit>,
    pub total: u64,
    /// Whether `total` is exact (else a lower bound: see `TextSearch::count`).
    pub total_exact: bool,
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

/// Runs `collector` over one searcher's segments with a weight built for another partition:
/// the same query under the same statistics weighs the same everywhere, and building the
/// weight once per partition was a fifth of a rare-word query's CPU.
fn collect<C: tantivy::collector::Collector>(
    searcher: &tantivy::Searcher,
    weight: &dyn tantivy::query::Weight,
    collector: &C,
) -> tantivy::Result<C::Fruit> {
    let mut fruits = Vec::with_capacity(searcher.segment_readers().len());
    for (ord, reader) in searcher.segment_readers().iter().enumerate() {
        fruits.push(collector.collect_segment(weight, ord as u32, reader)?);
    }
    collector.merge_fruits(fruits)
}

/// BM25-ranked hits over every partition in scope, with one set of statistics (committed
/// plus fresh) so scores compare across partitions and do not change when a document's
/// commit moves it from the fresh layer to the segments. Ties by key.
pub fn text(view: &ShardView, scope: &Scope, search: &TextSearch) -> tantivy::Result<TextAnswer> {
    use tantivy::collector::Count;
    use tantivy::query::{BooleanQuery, EnableScoring, Occur, Query, TermSetQuery};

    let parts = scope.partitions(view);
    let allowed: Vec<Option<std::collections::HashSet<String>>> = parts
        .iter()
        .map(|(_, p)| search.filter.as_ref().map(|f| geo_allowed(p, f)))
        .collect();
    let fields_filter = match (parts.first(), &search.fields_filter) {
        (Some((_, p)), Some(f)) => Some(f.to_tantivy(&p.fields.filters)),
        _ => None,
    };

    let (stats, terms) = statistics(&parts, &search.query);
    let mut query = search.query.clone();
    // Our weights serve the fresh scorer alone (tantivy weighs the segments itself): with no
    // fresh documents in scope they would be computed for nothing (6% of a rare-word query).
    if parts.iter().any(|(_, p)| !p.fresh.docs.is_empty()) {
        query.prepare(&stats)?;
    }
    // Popularity (`ranking.popularity`) adds its bonus to every committed score; the fresh
    // documents' scores gain the same below.
    let popularity = parts.first().and_then(|(_, p)| {
        let r = p.fields.ranking;
        r.popularity.map(|f| (f, r.weight))
    });
    let mut tq = query.to_tantivy();
    if let (Some((f, weight)), Some((_, p))) = (popularity, parts.first()) {
        let field = p.fields.filters[f].clone();
        tq = Box::new(super::popular::Popular::new(tq, field, weight));
    }
    let tq = match &search.cancel {
        Some(c) => Box::new(Cancellable::new(tq, c.clone())),
        None => tq,
    };
    let want = search.offset + search.limit;

    // The lone query's weight, built at its first partition and used in every other.
    let mut shared: Option<Box<dyn tantivy::query::Weight>> = None;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut total = 0u64;
    let mut total_exact = true;
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
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            if !p.fresh.docs.is_empty() {
                let shadowed = super::shadow::of_view(p)?;
                clauses.push((
                    Occur::MustNot,
                    Box::new(super::shadow::ShadowedQuery(shadowed)),
                ));
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
            // A lone query keeps its own form, so block-max WAND can drive it; and its weight
            // is the same in every partition (one query, one set of statistics).
            let lone = clauses.is_empty();
            let combined: Box<dyn Query>;
            let q: &dyn Query = if lone {
                &*tq
            } else {
                clauses.push((Occur::Must, tq.box_clone()));
                combined = Box::new(BooleanQuery::new(clauses));
                &*combined
            };
            if lone && search.sort.is_none() && shared.is_none() {
                let scoring = EnableScoring::enabled_from_statistics_provider(&stats, &p.searcher);
                shared = Some(tq.weight(scoring)?);
            }
            let weight = if lone { shared.as_deref() } else { None };
            let facets = FacetCollector {
                fields: facet_fields(p),
            };
            let (found, count, counts) = match search.sort {
                None if !search.count && search.facets.is_empty() => {
                    let collector = PrunedTop {
                        limit: want,
                        columns: &p.columns,
                    };
                    let top = match weight {
                        Some(w) => collect(&p.searcher, w, &collector)?,
                        None => p
                            .searcher
                            .search_with_statistics_provider(q, &collector, &stats)?,
                    };
                    total_exact &= top.exact;
                    let found: Vec<(Option<f32>, Option<Key>, tantivy::DocAddress)> = top
                        .hits
                        .into_iter()
                        .map(|(score, addr)| (Some(score), None, addr))
                        .collect();
                    (found, top.seen as usize, Vec::new())
                }
                None => {
                    let collector = (crate::fields::TopByScore { limit: want }, Count, facets);
                    let (top, count, counts) = match weight {
                        Some(w) => collect(&p.searcher, w, &collector)?,
                        None => p
                            .searcher
                            .search_with_statistics_provider(q, &collector, &stats)?,
                    };
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
                    let (top, count, counts) = p.searcher.search(q, &(sorter, Count, facets))?;
                    let found = top
                        .into_iter()
                        .map(|(key, addr)| (None, key, addr))
                        .collect();
                    (found, count, counts)
                }
            };
            total += count as u64;
            if !counts.is_empty() {
                add_counts(&mut facet_counts, counts);
            }
            for (score, sort_key, addr) in found {
                candidates.push(Candidate {
                    score,
                    sort_key,
                    // Resolved below, for the candidates that can reach the page.
                    key: None,
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
                let score = match popularity {
                    Some((f, weight)) => {
                        score + super::popular::bonus_of(doc.filters[f].as_ref(), weight)
                    }
                    None => score,
                };
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
    // Order by score (or sort value) first; keys, which break ties, are read only for the
    // candidates that can reach the page: those ranked above its end, and those tied with it.
    let first = |a: &Candidate, b: &Candidate| match search.sort {
        Some(s) => fields::compare(&a.sort_key, &b.sort_key, s.descending),
        None => b.score.unwrap_or(0.0).total_cmp(&a.score.unwrap_or(0.0)),
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| first(&candidates[a], &candidates[b]));
    let end = search.offset + search.limit;
    let reach = match order.get(end.saturating_sub(1)) {
        Some(&edge) if end > 0 => order
            .iter()
            .position(|&i| first(&candidates[i], &candidates[edge]).is_gt())
            .unwrap_or(order.len()),
        _ => order.len(),
    };
    order.truncate(reach);
    resolve_keys(&mut candidates, &order)?;
    order.sort_by(|&a, &b| {
        let (a, b) = (&candidates[a], &candidates[b]);
        first(a, b).then_with(|| a.key.cmp(&b.key))
    });
    let centre = search.filter.as_ref().map(|f| match f {
        GeoQuery::Within { lat, lon, .. } | GeoQuery::Nearest { lat, lon, .. } => (*lat, *lon),
        GeoQuery::BBox(b) => b.centre(),
    });
    let mut highlighter = Highlighter::new(&stats, &terms);
    let mut hits = Vec::new();
    for &i in order.iter().skip(search.offset).take(search.limit) {
        let c = &candidates[i];
        let row = match &c.source {
            _ if !search.rows => RawRow::default(),
            Source::Committed(addr) => crate::rows::row_at(
                &c.partition.searcher,
                &c.partition.columns,
                &c.partition.fields,
                *addr,
            )
            .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))?,
            Source::Fresh(d) => c.partition.fields.answer_row(d),
        };
        let highlights = if search.highlight && search.rows {
            highlighter.highlights(&c.partition.fields, &row)?
        } else {
            Vec::new()
        };
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
        total_exact,
        facets,
    })
}

/// (term, text field position, token) of every BM25 term of a query.
type QueryTerms = Vec<(tantivy::Term, usize, String)>;

/// One set of BM25 statistics over `parts` (committed segments plus fresh documents), and
/// the query's terms.
fn statistics<'a>(
    parts: &[(&str, &'a crate::shard::PartitionView)],
    query: &TextQuery,
) -> (Statistics<'a>, QueryTerms) {
    // Each term once: a word the query repeats ("place 42 OR place 3") would otherwise be
    // counted twice per fresh document, and a document frequency above the document count
    // makes tantivy's idf panic.
    let mut seen = std::collections::HashSet::new();
    let terms: QueryTerms = match parts.first() {
        None => Vec::new(),
        Some((_, p)) => query
            .terms()
            .into_iter()
            .filter(|term| seen.insert(term.clone()))
            .filter_map(|term| {
                let field = p.fields.text.iter().position(|t| t.field == term.field())?;
                let text = term.value().as_str()?.to_owned();
                Some((term, field, text))
            })
            .collect(),
    };
    let mut stats = Statistics::new(parts.iter().map(|(_, p)| &p.searcher).collect());
    for (_, p) in parts {
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
    (stats, terms)
}

/// Highlighted snippets (HTML, matches in `<b>`) of rows' text fields: one snippet generator
/// per text field, weighting terms by the shared statistics (tantivy's own `create` drops
/// terms no committed segment has, so fresh-only words would not be highlighted).
struct Highlighter<'s, 'a> {
    stats: &'s Statistics<'a>,
    terms: &'s QueryTerms,
    generators: HashMap<usize, tantivy::snippet::SnippetGenerator>,
}

impl<'s, 'a> Highlighter<'s, 'a> {
    fn new(stats: &'s Statistics<'a>, terms: &'s QueryTerms) -> Highlighter<'s, 'a> {
        Highlighter {
            stats,
            terms,
            generators: HashMap::new(),
        }
    }

    /// (text field name, snippet) for each text field of `row` with a match.
    fn highlights(
        &mut self,
        fields: &crate::partition::Fields,
        row: &RawRow,
    ) -> tantivy::Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (fi, t) in fields.text.iter().enumerate() {
            let Some(text) = row.get(t.column).and_then(|v| v.as_deref()) else {
                continue;
            };
            let generator = match self.generators.entry(fi) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let mut weights = std::collections::BTreeMap::new();
                    for (term, f, token) in self.terms {
                        if *f == fi {
                            let df =
                                tantivy::query::Bm25StatisticsProvider::doc_freq(self.stats, term)?;
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
                out.push((t.name.clone(), snippet.to_html()));
            }
        }
        Ok(out)
    }
}

/// Snippets of `query` in the given rows of documents in `scope` (with the statistics a
/// search of the scope would use): the page of a hybrid search, highlighted without
/// searching the text again.
pub fn highlight_rows(
    view: &ShardView,
    scope: &Scope,
    query: &TextQuery,
    rows: &[(&crate::shard::PartitionView, &RawRow)],
) -> tantivy::Result<Vec<Vec<(String, String)>>> {
    let parts = scope.partitions(view);
    let (stats, terms) = statistics(&parts, query);
    let mut highlighter = Highlighter::new(&stats, &terms);
    rows.iter()
        .map(|(p, row)| highlighter.highlights(&p.fields, row))
        .collect()
}

/// Reads the keys of the committed candidates at `at`: one sorted pass per segment.
fn resolve_keys<'a>(candidates: &mut [Candidate<'a>], at: &[usize]) -> tantivy::Result<()> {
    // By partition (its searcher): the positions and addresses still without a key.
    type Group<'a> = (
        &'a crate::shard::PartitionView,
        Vec<(usize, tantivy::DocAddress)>,
    );
    let mut groups: Vec<Group<'a>> = Vec::new();
    for &i in at {
        let (c, p) = (&candidates[i], candidates[i].partition);
        let (None, Source::Committed(addr)) = (&c.key, &c.source) else {
            continue;
        };
        match groups.iter_mut().find(|(q, _)| std::ptr::eq(*q, p)) {
            Some((_, g)) => g.push((i, *addr)),
            None => groups.push((p, vec![(i, *addr)])),
        }
    }
    for (partition, group) in groups {
        let addrs: Vec<tantivy::DocAddress> = group.iter().map(|g| g.1).collect();
        let keys = crate::rows::keys_at(&partition.searcher, &partition.columns, &addrs)
            .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))?;
        for ((i, _), key) in group.into_iter().zip(keys) {
            candidates[i].key = Some(key);
        }
    }
    Ok(())
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
