//! Searches over a shard view: each partition answers from its committed structures with the
//! fresh layer overlaid (fresh documents shadow committed ones with the same key), and the
//! partitions' answers merge into one global order — a true global top-k, not per-partition
//! top-k concatenated. Synchronous: call it on the blocking pool.

//!
//! One file per kind: `geo`, `vector`, `text` and `hybrid` (`cancel` stops a scan nobody
//! waits for); here the scope, the structured
//! filter's allowed keys (shared by geo and vector) and a document's row.

mod cancel;
mod geo;
mod hybrid;
pub mod popular;
mod pruned;
pub(crate) mod shadow;
mod text;
mod vector;

pub use cancel::{Cancel, Cancellable};
pub use geo::{geo, geo_where, GeoHit, GeoQuery};
pub use hybrid::{hybrid, Fusion, HybridHit};
pub use text::{text, SortBy, TextAnswer, TextHit, TextSearch};
pub use vector::{default_ef, vector, VectorHit, VectorQuery, EXACT_FILTER_MAX};

use crate::document::RawRow;
use crate::filter::Filter;
use crate::geo::haversine_m;

/// Which partitions a query touches.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    pub index: usize,
    /// Empty: every region of the index.
    pub regions: Vec<String>,
}

impl Scope {
    /// Every region of index `index`.
    pub fn all(index: usize) -> Scope {
        Scope {
            index,
            regions: Vec::new(),
        }
    }

    fn covers(&self, index: usize, region: &str) -> bool {
        index == self.index && (self.regions.is_empty() || self.regions.iter().any(|r| r == region))
    }

    /// The view's partitions in scope, with their regions.
    fn partitions<'v>(
        &self,
        view: &'v crate::shard::ShardView,
    ) -> Vec<(&'v str, &'v crate::shard::PartitionView)> {
        view.partitions
            .iter()
            .filter(|((index, region), _)| self.covers(*index, region))
            .map(|((_, region), p)| (region.as_str(), p))
            .collect()
    }
}

/// Calls `mark(slot)` with the vector-store slot of every committed document of a partition
/// that passes a structured filter, has a vector in `store` (the view's) and is not shadowed
/// by the fresh layer (fresh documents are the caller's to check). Documents go straight
/// from the filter's doc sets to their slots through each segment's slot map
/// (`rows::Columns::doc_slots`), with no key read: a key lookup per passing document made a
/// filtered vector query O(passing documents) in dictionary reads and hash lookups.
pub(crate) fn filtered_slots(
    p: &crate::shard::PartitionView,
    store: &crate::vector::VectorStore,
    filter: &Filter,
    mut mark: impl FnMut(u32),
) -> tantivy::Result<()> {
    if p.fresh.truncated {
        return Ok(());
    }
    let q = filter.to_tantivy(&p.fields.filters);
    let weight = q.weight(tantivy::query::EnableScoring::disabled_from_searcher(
        &p.searcher,
    ))?;
    let shadowed = if p.fresh.docs.is_empty() {
        None
    } else {
        Some(shadow::of_view(p)?)
    };
    for (ord, segment) in p.searcher.segment_readers().iter().enumerate() {
        let slots = p.columns.doc_slots(ord as u32, segment, store)?;
        let shadow = shadowed.as_ref().and_then(|s| s.get(segment.segment_id()));
        // Deleted documents have no slot in the map.
        weight.for_each_no_score(segment, &mut |docs| {
            for &doc in docs {
                let slot = slots[doc as usize];
                if slot != crate::rows::NO_SLOT && shadow.is_none_or(|b| !b.contains(doc)) {
                    mark(slot);
                }
            }
        })?;
    }
    Ok(())
}

/// Keys of a partition whose documents pass a structured filter: committed (unless
/// shadowed) and fresh.
pub fn filter_allowed(
    p: &crate::shard::PartitionView,
    filter: &Filter,
) -> tantivy::Result<std::collections::HashSet<String>> {
    let mut allowed = std::collections::HashSet::new();
    visit_filtered(p, filter, |key| {
        allowed.insert(key.to_owned());
    })?;
    for (key, e) in &p.fresh.docs {
        if e.doc.as_ref().is_some_and(|d| filter.matches(&d.filters)) {
            allowed.insert(key.clone());
        }
    }
    Ok(allowed)
}

/// Visits the key of every committed document of a partition that passes a structured filter
/// and that the fresh layer does not shadow (fresh documents are the caller's to check).
pub(crate) fn visit_filtered(
    p: &crate::shard::PartitionView,
    filter: &Filter,
    mut visit: impl FnMut(&str),
) -> tantivy::Result<()> {
    if p.fresh.truncated {
        return Ok(());
    }
    let q = filter.to_tantivy(&p.fields.filters);
    let docs = p
        .searcher
        .search(&*q, &tantivy::collector::DocSetCollector)?;
    // Keys by segment: term ordinals first, then one sorted pass over each segment's key
    // dictionary (a lookup per document costs ~20 µs: 0.5 s for 20k documents).
    let mut by_segment: std::collections::HashMap<u32, Vec<u64>> = Default::default();
    for addr in docs {
        by_segment
            .entry(addr.segment_ord)
            .or_default()
            .push(addr.doc_id as u64);
    }
    for (segment_ord, docs) in by_segment {
        let segment = p.searcher.segment_reader(segment_ord);
        let Some(keys) = p.columns.keys(segment_ord, segment)? else {
            continue;
        };
        // Each key once, though several documents may carry it.
        let mut ords: Vec<u64> = docs
            .iter()
            .filter_map(|&d| keys.term_ords(d as tantivy::DocId).next())
            .collect();
        ords.sort_unstable();
        ords.dedup();
        let wanted = ords.into_iter().map(|o| (o, ())).collect();
        crate::rows::in_ordinal_order(keys, wanted, |(), bytes| {
            if let Ok(key) = std::str::from_utf8(bytes) {
                if !p.fresh.shadows(key) {
                    visit(key);
                }
            }
        })?;
    }
    Ok(())
}

/// Keys of a partition that pass a geo filter: committed (unless shadowed) and fresh.
pub(crate) fn geo_allowed(
    p: &crate::shard::PartitionView,
    filter: &GeoQuery,
) -> std::collections::HashSet<String> {
    let mut allowed = std::collections::HashSet::new();
    visit_geo(p, filter, |k| {
        allowed.insert(k.to_owned());
    });
    for (key, e) in &p.fresh.docs {
        if e.doc.as_ref().is_some_and(|d| geo_passes(filter, d.geo)) {
            allowed.insert(key.clone());
        }
    }
    allowed
}

/// Visits the key of every committed document of a partition that passes a geo filter and
/// that the fresh layer does not shadow (`Nearest` is not a filter: none pass).
pub(crate) fn visit_geo(
    p: &crate::shard::PartitionView,
    filter: &GeoQuery,
    mut visit: impl FnMut(&str),
) {
    let Some(g) = &p.geo else { return };
    let mut take = |k: &str, _d: f64| {
        if !p.fresh.shadows(k) {
            visit(k);
        }
    };
    match filter {
        GeoQuery::Within {
            lat, lon, radius_m, ..
        } => g.within(*lat, *lon, *radius_m, &mut take),
        GeoQuery::BBox(b) => g.in_bbox(b, b.centre(), &mut take),
        GeoQuery::Nearest { .. } => {}
    }
}

/// Whether a point passes a geo filter (`Nearest` is not a filter: none pass).
pub(crate) fn geo_passes(filter: &GeoQuery, point: Option<(f64, f64)>) -> bool {
    let Some((dlat, dlon)) = point else {
        return false;
    };
    match filter {
        GeoQuery::Within { lat, lon, radius_m } => haversine_m(*lat, *lon, dlat, dlon) <= *radius_m,
        GeoQuery::BBox(b) => b.contains(dlat, dlon),
        GeoQuery::Nearest { .. } => false,
    }
}

/// The row of `key` in a partition as readers see it: the fresh layer, else committed (the
/// vector column's text only when it is a stored field: see `rows.rs`).
pub fn row_of(p: &crate::shard::PartitionView, key: &str) -> tantivy::Result<Option<RawRow>> {
    cells_of(p, key, None)
}

/// [`row_of`], with only the cells `wanted` marks (by column; all: None) read from a
/// committed document (a fresh one's row is whole in memory).
pub fn cells_of(
    p: &crate::shard::PartitionView,
    key: &str,
    wanted: Option<&[bool]>,
) -> tantivy::Result<Option<RawRow>> {
    if let Some(e) = p.fresh.docs.get(key) {
        return Ok(e.doc.as_ref().map(|d| p.fields.answer_row(d)));
    }
    if p.fresh.truncated {
        return Ok(None);
    }
    crate::rows::row_of_key(&p.searcher, &p.columns, &p.fields, key, wanted)
        .map_err(|e| tantivy::TantivyError::InternalError(e.to_string()))
}
