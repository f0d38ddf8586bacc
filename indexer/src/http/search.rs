//! `POST /internal/search`: a `wire::shard::ShardSearchRequest` in, planned (`plan.rs`), run
//! on the blocking pool over one read view, answered as a `wire::shard::ShardSearchResponse`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use engine::search::Cancel;
use serde_json::value::RawValue;
use serde_json::Value;
use std::time::Duration;
use wire::shard::ShardSearchResponse;
use wire::{BranchRanks, BranchScores, FacetBucket, Hit, TotalRelation};

use super::plan::{plan, Parts, Planned};
use super::{fields_json, Answer, HttpState};

/// A text score as the JSON number it always was: the shortest decimal that reads back as
/// the same f32 (widening the f32 itself would print float noise digits).
fn text_score(score: f32) -> f64 {
    score.to_string().parse().unwrap_or(f64::from(score))
}

fn hit(key: &str, region: &str, fields: Box<RawValue>) -> Hit {
    Hit {
        key: key.to_owned(),
        region: region.to_owned(),
        score: None,
        distance_m: None,
        fields,
        highlights: None,
        sort_value: None,
        ranks: None,
        branch_scores: None,
    }
}

fn highlights(h: &[(String, String)]) -> Option<BTreeMap<String, String>> {
    Some(h.iter().cloned().collect())
}

/// How long a search may scan before it stops itself: query-api gives up on a shard after
/// its `shard_timeout_ms` (5 s by default) and no one reads a later answer.
pub(super) const SEARCH_BUDGET: Duration = Duration::from_secs(10);

/// `POST /internal/search`.
pub(super) async fn search(State(s): State<HttpState>, body: axum::body::Bytes) -> Response {
    answer(&s, &body, Cancel::within(SEARCH_BUDGET))
        .await
        .into_response()
}

/// Shard search: text, geo, vector, filters, hybrid (the public API is query-api's), from a
/// `wire::shard::ShardSearchRequest` body.
/// `cancel` stops the scan (its budget passed, or the caller went away): the answer is then a
/// 503 saying so, never a partial page.
pub(super) async fn answer(s: &HttpState, body: &[u8], cancel: Cancel) -> Answer {
    let (index, mut req) = match wire::shard::parse_shard_search(body) {
        Ok(r) => r,
        Err(e) => return Answer::error(StatusCode::BAD_REQUEST, &e.field, e.message),
    };
    if req.cursor.is_some() || req.consistency.is_some() {
        return Answer::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            if req.cursor.is_some() {
                "cursor"
            } else {
                "consistency"
            },
            "cursors and consistency are handled by query-api",
        );
    }
    let ix = match s.index(&index) {
        Ok(ix) => ix.clone(),
        Err(r) => return r.into(),
    };
    let text = match req.text_part() {
        Ok(t) => t,
        Err(e) => return Answer::error(StatusCode::UNPROCESSABLE_ENTITY, &e.field, e.message),
    };
    if let Err(e) = wire::SearchRequest::check_page(req.limit, req.offset) {
        return Answer::error(StatusCode::UNPROCESSABLE_ENTITY, &e.field, e.message);
    }
    let parts = Parts {
        text,
        geo: req.geo,
        vector: req.vector,
        hybrid: req.hybrid,
        filter: req.filter,
        sort: req.sort,
        facets: req.facets,
        count: req.track_total_hits,
    };
    let fields = &s.fields[ix.ordinal];
    let mut query = match plan(&ix, fields, parts, req.limit, req.offset) {
        Ok(q) => q,
        Err(e) => return Answer::error(StatusCode::UNPROCESSABLE_ENTITY, &e.field, e.message),
    };
    let Some((view, applied_lsn)) = s.view() else {
        return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "", "not ready");
    };
    if let Some(r) = req
        .regions
        .iter()
        .find(|r| !view.partitions.contains_key(&(ix.ordinal, (*r).clone())))
    {
        let mut known: Vec<&str> = view
            .partitions
            .keys()
            .filter(|(i, _)| *i == ix.ordinal)
            .map(|(_, r)| r.as_str())
            .collect();
        known.sort_unstable();
        return Answer::error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "regions",
            format!(
                "unknown region {r:?} for index {:?} (regions with documents: {})",
                ix.name,
                known.join(", ")
            ),
        );
    }
    let scope = engine::search::Scope {
        index: ix.ordinal,
        regions: req.regions,
    };
    let (limit, offset) = (req.limit, req.offset);
    let facet_names: Vec<String> = fields.filters.iter().map(|f| f.name.clone()).collect();
    let (lag_ms, lag_bytes) = (s.stats.lag_ms(), s.stats.lag_bytes());
    let (stream, last_commit_age_ms) = (s.stats.stream_word(), s.stats.last_commit_age_ms());
    match &mut query {
        Planned::Text(t) | Planned::Hybrid(t, ..) => t.cancel = Some(cancel.clone()),
        Planned::Vector(v) => v.cancel = Some(cancel.clone()),
        Planned::Geo(..) => {}
    }
    let cancelled = cancel.clone();
    let answer = s
        .reads
        .run("search", move || -> tantivy::Result<ShardSearchResponse> {
            // An answer shows the stored fields alone: only their cells are read.
            let mut stored = vec![false; ix.columns.len()];
            for &c in &ix.stored {
                stored[c] = true;
            }
            let row = |region: &str, key: &str| -> tantivy::Result<Box<RawValue>> {
                let Some(p) = view.partitions.get(&(ix.ordinal, region.to_owned())) else {
                    return Ok(RawValue::NULL.to_owned());
                };
                Ok(engine::search::cells_of(p, key, Some(&stored))?
                    .map(|r| fields_json(&ix, &r))
                    .unwrap_or_else(|| RawValue::NULL.to_owned()))
            };
            let mut total = None;
            let mut total_relation = None;
            let mut facets = None;
            let hits: Vec<Hit> = match &query {
                Planned::Geo(q, f) => {
                    let (hits, matched) =
                        engine::search::geo_where(&view, &scope, q, offset + limit, f.as_ref())?;
                    // Within a radius or a box every match is found: the total is exact.
                    if !matches!(q, engine::search::GeoQuery::Nearest { .. }) {
                        total = Some(matched);
                        total_relation = Some(TotalRelation::Eq);
                    }
                    hits.iter()
                        .skip(offset)
                        .map(|h| {
                            Ok(Hit {
                                distance_m: Some(h.distance_m),
                                ..hit(&h.key, &h.region, row(&h.region, &h.key)?)
                            })
                        })
                        .collect::<tantivy::Result<_>>()?
                }
                Planned::Vector(q) => engine::search::vector(&view, &scope, q)?
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .map(|h| {
                        Ok(Hit {
                            score: Some(h.score),
                            ..hit(&h.key, &h.region, row(&h.region, &h.key)?)
                        })
                    })
                    .collect::<tantivy::Result<_>>()?,
                Planned::Text(q) => {
                    let answer = engine::search::text(&view, &scope, q)?;
                    total = Some(answer.total);
                    total_relation = Some(if answer.total_exact {
                        TotalRelation::Eq
                    } else {
                        TotalRelation::Gte
                    });
                    if !q.facets.is_empty() {
                        facets = Some(
                            q.facets
                                .iter()
                                .zip(&answer.facets)
                                .map(|(&(f, _), values)| {
                                    let buckets = values
                                        .iter()
                                        .map(|(v, n)| FacetBucket {
                                            value: v.to_json(),
                                            count: *n,
                                        })
                                        .collect();
                                    (facet_names[f].clone(), buckets)
                                })
                                .collect(),
                        );
                    }
                    answer
                        .hits
                        .iter()
                        .map(|h| Hit {
                            score: h.score.map(text_score),
                            distance_m: h.distance_m,
                            highlights: q.highlight.then(|| highlights(&h.highlights)).flatten(),
                            sort_value: q.sort.is_some().then(|| {
                                h.sort_value.as_ref().map_or(Value::Null, |k| k.to_json())
                            }),
                            ..hit(&h.key, &h.region, fields_json(&ix, &h.row))
                        })
                        .collect()
                }
                Planned::Hybrid(t, v, f) => {
                    engine::search::hybrid(&view, &scope, t, v, f, offset, limit)?
                        .iter()
                        .map(|h| {
                            Ok(Hit {
                                score: Some(h.score),
                                ranks: Some(BranchRanks {
                                    text: h.text_rank,
                                    vector: h.vector_rank,
                                }),
                                branch_scores: Some(BranchScores {
                                    text: h.text_score.map(text_score),
                                    vector: h.vector_score,
                                }),
                                highlights: t
                                    .highlight
                                    .then(|| highlights(&h.highlights))
                                    .flatten(),
                                ..hit(
                                    &h.key,
                                    &h.region,
                                    h.row.as_ref().map_or_else(
                                        || RawValue::NULL.to_owned(),
                                        |r| fields_json(&ix, r),
                                    ),
                                )
                            })
                        })
                        .collect::<tantivy::Result<_>>()?
                }
            };
            Ok(ShardSearchResponse {
                applied_lsn,
                lag_ms,
                lag_bytes,
                stream,
                last_commit_age_ms,
                hits,
                total,
                total_relation,
                facets,
            })
        })
        .await;
    if cancelled.is_cancelled() {
        metrics::counter!(crate::metrics::SEARCHES_CANCELLED).increment(1);
        return Answer::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "the search was stopped: its time budget passed or its caller went away",
        );
    }
    match answer {
        Ok(a) => Answer::json(&a),
        Err(a) => a,
    }
}
