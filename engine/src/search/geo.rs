//! Geo searches: radius, box and nearest over the R-tree plus the fresh layer, exact.

use super::*;
use crate::filter::Filter;
use crate::geo::{haversine_m, BBox};
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

/// Hits sorted by distance (then key), at most `limit`.
pub fn geo(view: &ShardView, scope: &Scope, query: &GeoQuery, limit: usize) -> Vec<GeoHit> {
    geo_where(view, scope, query, limit, None)
        .expect("no filter, no index reads")
        .0
}

/// `geo`, among documents passing a structured filter; with how many documents matched in
/// all (every one within a radius or a box; at most `k` for the nearest).
pub fn geo_where<'v>(
    view: &'v ShardView,
    scope: &Scope,
    query: &GeoQuery,
    limit: usize,
    filter: Option<&Filter>,
) -> tantivy::Result<(Vec<GeoHit>, u64)> {
    let (lat, lon) = match query {
        GeoQuery::Within { lat, lon, .. } | GeoQuery::Nearest { lat, lon, .. } => (*lat, *lon),
        GeoQuery::BBox(b) => b.centre(),
    };
    let want = match query {
        GeoQuery::Nearest { k, .. } => (*k).min(limit),
        _ => limit,
    };
    // (distance, key, region) borrowed from the view: only the page's hits become owned.
    let mut found: Vec<(f64, &str, &str)> = Vec::new();
    for ((index, region), p) in &view.partitions {
        if !scope.covers(*index, region) {
            continue;
        }
        let allowed = filter.map(|f| filter_allowed(p, f)).transpose()?;
        let passes = |key: &str| allowed.as_ref().is_none_or(|a| a.contains(key));
        let unshadowed =
            |key: &str| (p.fresh.docs.is_empty() && !p.fresh.truncated) || !p.fresh.shadows(key);
        // Committed points, unless the fresh layer shadows them.
        if let Some(g) = &p.geo {
            let mut take = |k: &'v str, d: f64| {
                if unshadowed(k) && passes(k) {
                    found.push((d, k, region));
                }
            };
            match query {
                GeoQuery::Within { radius_m, .. } => g.within(lat, lon, *radius_m, &mut take),
                GeoQuery::BBox(b) => g.in_bbox(b, (lat, lon), &mut take),
                GeoQuery::Nearest { .. } => {
                    for (k, d) in g
                        .nearest(lat, lon)
                        .filter(|(k, _)| unshadowed(k) && passes(k))
                        .take(want)
                    {
                        found.push((d, k, region));
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
            if keep && passes(key) {
                found.push((d, key, region));
            }
        }
    }
    let by_distance = |a: &(f64, &str, &str), b: &(f64, &str, &str)| {
        a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1))
    };
    let total = found.len() as u64;
    if found.len() > want && want > 0 {
        found.select_nth_unstable_by(want - 1, by_distance);
    }
    found.truncate(want);
    found.sort_by(by_distance);
    let hits = found
        .into_iter()
        .map(|(distance_m, key, region)| GeoHit {
            key: key.to_owned(),
            region: region.to_owned(),
            distance_m,
        })
        .collect();
    Ok((hits, total))
}
