//! Geo searches: radius, box and nearest over the R-tree plus the fresh layer, exact.

use std::cmp::Ordering;

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
