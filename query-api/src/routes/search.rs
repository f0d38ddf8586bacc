//! `POST|GET /v1/indexes/{index}/search`: validation, read-your-writes waits, fan-out to the
//! shards owning the regions asked for, one global merge (hybrid fused here when several shards
//! answer), freshness, and opaque cursors for the next page.
//!
//! Long (~670 lines with tests): the GET form's parameter parsing lives beside the search it feeds.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Map, Value};
use wire::shard::ShardSearchResponse;
use wire::{
    Freshness, Hit, Lsn, MissingShard, SearchRequest, SearchResponse, ShardFreshness,
    TotalRelation, MAX_HITS, MAX_K, MAX_VECTOR_DIMS,
};

use crate::auth::{authorize, Caller};
use crate::config::Scope;
use crate::cursor::{search_hash, Cursor};
use crate::merge::{compare_hits, fuse, merge_facets, order_of};
use crate::shards::{route, CallError, Target};
use crate::{ApiError, AppState};

/// `POST /v1/indexes/{index}/search`: the full search (see `wire::SearchRequest`).
#[utoipa::path(
    post, path = "/v1/indexes/{index}/search", tag = "search",
    params(("index" = String, Path, description = "Index name")),
    request_body(content = wire::SearchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Hits, freshness, next cursor", body = wire::SearchResponse),
        (status = 400, description = "Malformed body (the field is named)", body = wire::ErrorResponse),
        (status = 401, description = "No or unknown API key", body = wire::ErrorResponse),
        (status = 403, description = "A scoped key asked for a region beyond its own", body = wire::ErrorResponse),
        (status = 404, description = "Unknown index", body = wire::ErrorResponse),
        (status = 409, description = "min_lsn not reached in time, or too stale", body = wire::ErrorResponse),
        (status = 413, description = "Body too large", body = wire::ErrorResponse),
        (status = 422, description = "Invalid value (the field is named)", body = wire::ErrorResponse),
        (status = 429, description = "Rate limited (see Retry-After)", body = wire::ErrorResponse),
        (status = 503, description = "No shard answered, or overloaded", body = wire::ErrorResponse),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn search_post(
    State(s): State<AppState>,
    Path(index): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let caller = authorize(&s, &headers, Some(peer), Scope::Read)?;
    // JSON whatever the Content-Type says (`curl -d` sends form encoding by default).
    let body = body.map_err(|e| {
        ApiError::new(
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            },
            "bad_body",
            "body",
            e.body_text(),
        )
    })?;
    let req: SearchRequest = wire::parse(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_body", &e.field, e.message))?;
    search(&s, &caller, &index, req).await.map(Json)
}

/// The query parameters of `GET …/search` (documentation; parsed by hand to name the field).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct SearchParams {
    /// Full-text query.
    q: Option<String>,
    /// With `lon`: the query point (with `radius`: within it; without: nearest).
    #[param(minimum = -90.0, maximum = 90.0)]
    lat: Option<f64>,
    #[param(minimum = -180.0, maximum = 180.0)]
    lon: Option<f64>,
    /// Metres.
    #[param(minimum = 0.0)]
    radius: Option<f64>,
    /// Comma-separated regions.
    region: Option<String>,
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u64>,
    #[param(minimum = 0, maximum = 9999)]
    offset: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// A filter field, `field` (ascending) or `-field` (descending).
    sort: Option<String>,
    /// Comma-separated filter fields to count values of.
    facets: Option<String>,
    /// Snippets with matches in `<b>` (default true).
    highlight: Option<bool>,
    /// `auto`: words of 5+ characters also match within one edit (9+: two); `off` (default).
    typo: Option<wire::Typo>,
    /// `last`: the last word also matches as a prefix; `none` (default).
    prefix: Option<wire::PrefixMode>,
    /// Wait until this LSN is applied (read your writes).
    min_lsn: Option<String>,
    /// Refuse answers lagging more.
    #[param(minimum = 0)]
    max_staleness_ms: Option<u64>,
}

const GET_PARAMS: &[&str] = &[
    "q",
    "lat",
    "lon",
    "radius",
    "region",
    "limit",
    "offset",
    "cursor",
    "sort",
    "facets",
    "highlight",
    "typo",
    "prefix",
    "min_lsn",
    "max_staleness_ms",
];

/// `GET /v1/indexes/{index}/search?q=…&lat=…&lon=…&radius=…&region=…`: the simple cases.
#[utoipa::path(
    get, path = "/v1/indexes/{index}/search", tag = "search",
    params(("index" = String, Path, description = "Index name"), SearchParams),
    responses(
        (status = 200, description = "Hits, freshness, next cursor", body = wire::SearchResponse),
        (status = 400, description = "Malformed cursor", body = wire::ErrorResponse),
        (status = 401, description = "No or unknown API key", body = wire::ErrorResponse),
        (status = 403, description = "A scoped key asked for a region beyond its own", body = wire::ErrorResponse),
        (status = 404, description = "Unknown index", body = wire::ErrorResponse),
        (status = 409, description = "min_lsn not reached in time, or too stale", body = wire::ErrorResponse),
        (status = 422, description = "Invalid parameter (named)", body = wire::ErrorResponse),
        (status = 429, description = "Rate limited (see Retry-After)", body = wire::ErrorResponse),
        (status = 503, description = "No shard answered, or overloaded", body = wire::ErrorResponse),
    ),
    security((), ("api_key" = []), ("bearer" = []))
)]
pub(crate) async fn search_get(
    State(s): State<AppState>,
    Path(index): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<SearchResponse>, ApiError> {
    let caller = authorize(&s, &headers, Some(peer), Scope::Read)?;
    let req = request_of_params(&params)?;
    search(&s, &caller, &index, req).await.map(Json)
}

fn request_of_params(params: &HashMap<String, String>) -> Result<SearchRequest, ApiError> {
    if let Some(k) = params.keys().find(|k| !GET_PARAMS.contains(&k.as_str())) {
        return Err(ApiError::invalid(
            k,
            format!("unknown parameter (one of {})", GET_PARAMS.join(", ")),
        ));
    }
    let num = |k: &str| -> Result<Option<f64>, ApiError> {
        params
            .get(k)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| ApiError::invalid(k, format!("{v:?} is not a number")))
            })
            .transpose()
    };
    let int = |k: &str| -> Result<Option<u64>, ApiError> {
        params
            .get(k)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    ApiError::invalid(k, format!("{v:?} is not a non-negative integer"))
                })
            })
            .transpose()
    };
    let mut body = Map::new();
    if let Some(q) = params.get("q") {
        let highlight = match params.get("highlight").map(String::as_str) {
            None | Some("true") => true,
            Some("false") => false,
            Some(v) => {
                return Err(ApiError::invalid(
                    "highlight",
                    format!("{v:?} is not true or false"),
                ))
            }
        };
        // Lenient words, as in the body's `text.typo` and `text.prefix`.
        let one_of = |name: &str, allowed: [&str; 2]| match params.get(name) {
            None => Ok(allowed[0].to_owned()),
            Some(v) if allowed.contains(&v.as_str()) => Ok(v.clone()),
            Some(v) => Err(ApiError::invalid(
                name,
                format!("{v:?} is not {} or {}", allowed[0], allowed[1]),
            )),
        };
        let typo = one_of("typo", ["off", "auto"])?;
        let prefix = one_of("prefix", ["none", "last"])?;
        body.insert(
            "text".into(),
            json!({"q": q, "highlight": highlight, "typo": typo, "prefix": prefix}),
        );
    }
    let limit = int("limit")?;
    match (num("lat")?, num("lon")?, num("radius")?) {
        (Some(lat), Some(lon), Some(radius_m)) => {
            body.insert(
                "geo".into(),
                json!({"within": {"lat": lat, "lon": lon, "radius_m": radius_m}}),
            );
        }
        (Some(lat), Some(lon), None) => {
            let k = limit.unwrap_or(10) + int("offset")?.unwrap_or(0);
            body.insert(
                "geo".into(),
                json!({"nearest": {"lat": lat, "lon": lon, "k": k}}),
            );
        }
        (None, None, None) => {}
        (_, _, Some(_)) if params.get("lat").is_none() || params.get("lon").is_none() => {
            return Err(ApiError::invalid("radius", "radius needs lat and lon"))
        }
        _ => {
            return Err(ApiError::invalid(
                "lat",
                "lat and lon go together (radius optional)",
            ))
        }
    }
    if let Some(r) = params.get("region") {
        body.insert(
            "regions".into(),
            r.split(',')
                .filter(|x| !x.is_empty())
                .map(|x| Value::String(x.to_owned()))
                .collect(),
        );
    }
    if let Some(l) = limit {
        body.insert("limit".into(), json!(l));
    }
    if let Some(o) = int("offset")? {
        body.insert("offset".into(), json!(o));
    }
    if let Some(c) = params.get("cursor") {
        body.insert("cursor".into(), json!(c));
    }
    if let Some(sort) = params.get("sort") {
        let (field, order) = match sort.strip_prefix('-') {
            Some(f) => (f, "desc"),
            None => (sort.as_str(), "asc"),
        };
        body.insert("sort".into(), json!({"field": field, "order": order}));
    }
    if let Some(f) = params.get("facets") {
        let list: Vec<Value> = f
            .split(',')
            .filter(|x| !x.is_empty())
            .map(|x| json!({"field": x}))
            .collect();
        body.insert("facets".into(), Value::Array(list));
    }
    let mut consistency = Map::new();
    if let Some(m) = params.get("min_lsn") {
        consistency.insert("min_lsn".into(), json!(m));
    }
    if let Some(m) = int("max_staleness_ms")? {
        consistency.insert("max_staleness_ms".into(), json!(m));
    }
    if !consistency.is_empty() {
        body.insert("consistency".into(), Value::Object(consistency));
    }
    wire::parse_value(Value::Object(body)).map_err(|e| ApiError::invalid(&e.field, e.message))
}

/// Waits for `min_lsn`, fans out to the shards, merges, checks staleness, pages.
async fn search(
    s: &AppState,
    caller: &Caller,
    index: &str,
    mut req: SearchRequest,
) -> Result<SearchResponse, ApiError> {
    let cfg = &s.inner.config;
    let client = caller.id.as_str();
    // A scoped key's restriction first, so the cursor's search hash covers it too.
    caller.restriction.check_index(index)?;
    caller.restriction.apply(&mut req)?;
    req.text = req
        .text_part()
        .map_err(|e| ApiError::invalid(&e.field, e.message))?;
    if let Some(v) = req
        .vector
        .as_ref()
        .filter(|v| v.values.len() > MAX_VECTOR_DIMS)
    {
        return Err(ApiError::invalid(
            "vector.values",
            format!("{} values; a query vector has at most {MAX_VECTOR_DIMS} (and as many as the index's dimension)", v.values.len()),
        ));
    }

    // Freshness demands, and the previous page's freshness when this one follows a cursor.
    let consistency = req.consistency.take().unwrap_or_default();
    let mut min_lsn = match &consistency.min_lsn {
        None => None,
        Some(text) => Some(text.parse::<Lsn>().map_err(|_| {
            ApiError::invalid(
                "consistency.min_lsn",
                format!("{text:?} is not an LSN (X/Y, hexadecimal), e.g. \"0/16B3748\""),
            )
        })?),
    };
    let wait_timeout_ms = consistency
        .wait_timeout_ms
        .unwrap_or(cfg.limits.default_wait_timeout_ms);
    if wait_timeout_ms > cfg.limits.max_wait_timeout_ms {
        return Err(ApiError::invalid(
            "consistency.wait_timeout_ms",
            format!("at most {}", cfg.limits.max_wait_timeout_ms),
        ));
    }
    let (limit, mut offset) = (req.limit, req.offset);
    if let Some(text) = req.cursor.take() {
        let hash = search_hash(&req);
        let c = Cursor::decode(&text).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_cursor",
                "cursor",
                "not a cursor of this API: pass next_cursor from a previous answer unchanged",
            )
        })?;
        if c.search != hash {
            return Err(ApiError::invalid(
                "cursor",
                "this cursor belongs to a different search (only limit, offset-free paging and consistency may change)",
            ));
        }
        if offset != 0 {
            return Err(ApiError::invalid(
                "offset",
                "give cursor or offset, not both",
            ));
        }
        offset = usize::try_from(c.offset).unwrap_or(usize::MAX);
        min_lsn = Some(min_lsn.unwrap_or(Lsn::ZERO).max(Lsn(c.min_lsn)));
    }
    SearchRequest::check_page(limit, offset).map_err(|e| ApiError::invalid(&e.field, e.message))?;
    let targets = route(cfg, &req.regions)?;

    // Read-your-writes: every touched shard must have applied the LSN. The wait holds a
    // share of the waits' pool, so waits cannot take every request slot.
    if let Some(lsn) = min_lsn {
        let _waiting = s.inner.waits.admit(client)?;
        wait_for(s, &targets, lsn, wait_timeout_ms).await?;
    }

    // Fan out; a single shard gets the page as asked, several give their top offset+limit.
    // Several shards' hybrid results are fused here, from each branch's global order.
    let several = targets.len() > 1;
    let hybrid_here = several && req.text.is_some() && req.vector.is_some();
    let (mut answers, missing) = if hybrid_here {
        let window = req
            .hybrid
            .as_ref()
            .and_then(|h| h.window)
            .unwrap_or(100)
            .max(offset + limit);
        if window > MAX_K {
            return Err(ApiError::invalid(
                "hybrid.window",
                format!("each branch is read {window} deep (window, or offset + limit): at most {MAX_K}"),
            ));
        }
        let mut text_req = req.clone();
        text_req.vector = None;
        text_req.hybrid = None;
        let mut vector_req = req.clone();
        vector_req.text = None;
        vector_req.hybrid = None;
        if let Some(v) = vector_req.vector.as_mut() {
            v.k = window;
        }
        let (t, v) = futures_util::future::join(
            fan_out(s, index, &targets, &text_req, window, 0),
            fan_out(s, index, &targets, &vector_req, window, 0),
        )
        .await;
        let (mut text_answers, mut missing) = t?;
        let (vector_answers, missing_v) = v?;
        for m in missing_v {
            if !missing.iter().any(|x| x.shard == m.shard) {
                missing.push(m);
            }
        }
        // A shard counts only if both its branches answered.
        let answered = |a: &Answer| {
            !missing
                .iter()
                .any(|m| m.shard == s.shard_url(a.target.shard))
        };
        text_answers.retain(answered);
        let vector_hits: Vec<Hit> = vector_answers
            .into_iter()
            .filter(answered)
            .flat_map(|a| a.body.hits)
            .collect();
        let text_hits: Vec<Hit> = text_answers
            .iter_mut()
            .flat_map(|a| std::mem::take(&mut a.body.hits))
            .collect();
        let fused = fuse(&req, window, text_hits, vector_hits, offset, limit);
        if let Some(first) = text_answers.first_mut() {
            first.body.hits = fused;
        }
        (text_answers, missing)
    } else if several {
        fan_out(s, index, &targets, &req, offset + limit, 0).await?
    } else {
        fan_out(s, index, &targets, &req, limit, offset).await?
    };
    if answers.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shards_unavailable",
            "",
            "no shard serving these regions answered",
        )
        .with("missing", json!(missing)));
    }

    // Freshness, per shard and overall.
    let shards: Vec<ShardFreshness> = answers
        .iter()
        .map(|a| ShardFreshness {
            shard: s.shard_url(a.target.shard).to_owned(),
            regions: a.target.regions.clone(),
            applied_lsn: a.body.applied_lsn.to_string(),
            lag_ms: a.body.lag_ms,
            lag_bytes: a.body.lag_bytes,
            stream: a.body.stream.clone(),
            last_commit_age_ms: a.body.last_commit_age_ms,
        })
        .collect();
    let min_applied = answers
        .iter()
        .map(|a| a.body.applied_lsn)
        .min()
        .unwrap_or(Lsn::ZERO);
    let max_lag_ms = answers.iter().map(|a| a.body.lag_ms).max().unwrap_or(0);
    let freshness = Freshness {
        min_applied_lsn: min_applied.to_string(),
        max_lag_ms,
        shards,
    };
    if let Some(max) = consistency.max_staleness_ms {
        if max_lag_ms > max {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_stale",
                "consistency.max_staleness_ms",
                format!("the freshest answer available lags {max_lag_ms} ms, over {max} ms"),
            )
            .with("freshness", json!(freshness)));
        }
    }

    // Merge: one global order, then the page.
    let total = answers
        .iter()
        .filter_map(|a| a.body.total)
        .reduce(|a, b| a + b);
    // A sum is exact only when every shard counted every match (a shard answering without a
    // relation predates it and counted).
    let total_relation = total.map(|_| {
        answers
            .iter()
            .filter(|a| a.body.total.is_some())
            .map(|a| a.body.total_relation.unwrap_or(TotalRelation::Eq))
            .fold(TotalRelation::Eq, TotalRelation::and)
    });
    let facets = merge_facets(&req, answers.iter().filter_map(|a| a.body.facets.as_ref()));
    let mut hits: Vec<Hit> = answers
        .iter_mut()
        .flat_map(|a| std::mem::take(&mut a.body.hits))
        .collect();
    if several && !hybrid_here {
        let order = order_of(&req);
        hits.sort_by(|a, b| compare_hits(&order, a, b));
        hits = hits.into_iter().skip(offset).take(limit).collect();
    }
    let next = (offset + limit) as u64;
    let more = hits.len() == limit
        && next < MAX_HITS as u64
        && (total_relation != Some(TotalRelation::Eq) || total.is_none_or(|t| next < t))
        && hit_cap(&req).is_none_or(|k| next < k);
    let next_cursor = more.then(|| {
        Cursor {
            offset: next,
            min_lsn: min_applied.0,
            // Hashed only here and for a cursor given (a vector query's hash formats every
            // value); the fields paging changes are not hashed, so it is the request's.
            search: search_hash(&req),
        }
        .encode()
    });
    Ok(SearchResponse {
        hits,
        total,
        total_relation,
        facets,
        freshness,
        partial: !missing.is_empty(),
        missing: (!missing.is_empty()).then_some(missing),
        next_cursor,
    })
}

/// One shard's answer to a search.
struct Answer {
    target: Target,
    body: ShardSearchResponse,
}

/// Sends `req` (as the page `limit`/`offset`) to every target shard in parallel, each with a
/// deadline. A shard's 4xx is the caller's error (it names the field); a shard that fails or
/// times out is missing.
async fn fan_out(
    s: &AppState,
    index: &str,
    targets: &[Target],
    req: &SearchRequest,
    limit: usize,
    offset: usize,
) -> Result<(Vec<Answer>, Vec<MissingShard>), ApiError> {
    let mut page = req.clone();
    page.limit = limit;
    page.offset = offset;
    let calls = targets.iter().map(|t| {
        let page = &page;
        async move { (t, s.shard_search(t, index, page).await) }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut answers = Vec::new();
    let mut missing = Vec::new();
    for (target, out) in results {
        match out {
            Ok(body) => answers.push(Answer {
                target: target.clone(),
                body,
            }),
            // The shard validated the request: its answer names the field.
            Err(CallError::Rejected { status, error }) => {
                return Err(ApiError::new(
                    status,
                    match status {
                        StatusCode::NOT_FOUND => "not_found",
                        StatusCode::BAD_REQUEST => "bad_body",
                        _ => "invalid",
                    },
                    &error.error.field,
                    error.error.message,
                ));
            }
            Err(e @ CallError::Failed(_)) => {
                tracing::warn!(shard = %s.shard_url(target.shard), error = %e, "shard search failed");
                missing.push(s.missing(target));
            }
        }
    }
    Ok((answers, missing))
}

/// Waits until every target shard has applied `lsn`, or answers 409 with how far each got.
async fn wait_for(
    s: &AppState,
    targets: &[Target],
    lsn: Lsn,
    wait_timeout_ms: u64,
) -> Result<(), ApiError> {
    let waits = targets.iter().map(|t| async move {
        let answer = s.shard_wait(t.shard, lsn, wait_timeout_ms).await;
        let (reached, applied) = match answer {
            Ok(w) => (w.reached, Some(w.applied_lsn.to_string())),
            Err(_) => (false, None),
        };
        (s.shard_url(t.shard).to_owned(), reached, applied)
    });
    let results = futures_util::future::join_all(waits).await;
    if results.iter().all(|(_, reached, _)| *reached) {
        return Ok(());
    }
    let shards: Vec<Value> = results
        .iter()
        .map(|(shard, reached, applied)| {
            json!({"shard": shard, "applied_lsn": applied, "reached": reached})
        })
        .collect();
    Err(ApiError::new(
        StatusCode::CONFLICT,
        "min_lsn_not_reached",
        "consistency.min_lsn",
        format!(
            "not every shard applied {lsn} within {wait_timeout_ms} ms; retry, or raise wait_timeout_ms"
        ),
    )
    .with("freshness", json!({"requested_lsn": lsn.to_string(), "shards": shards})))
}

/// How many hits a search has at most by its own terms: a lone vector query's or nearest
/// query's `k`.
fn hit_cap(req: &SearchRequest) -> Option<u64> {
    match (&req.vector, &req.text, &req.geo) {
        (Some(v), None, _) => Some(v.k as u64),
        (None, None, Some(wire::GeoRequest::Nearest { k, .. })) => Some(*k as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_parameters_become_a_request() {
        let p: HashMap<String, String> = [
            ("q", "paris"),
            ("region", "europe,asia"),
            ("sort", "-population"),
            ("facets", "country"),
            ("highlight", "false"),
            ("typo", "auto"),
            ("prefix", "last"),
            ("limit", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let r = request_of_params(&p).unwrap();
        assert_eq!(r.regions, ["europe", "asia"]);
        assert!(!r.text.as_ref().unwrap().highlight);
        assert_eq!(r.text.as_ref().unwrap().typo, wire::Typo::Auto);
        assert_eq!(r.text.as_ref().unwrap().prefix, wire::PrefixMode::Last);
        let typo: HashMap<String, String> = [("q", "x"), ("typo", "always")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(request_of_params(&typo).unwrap_err().field(), "typo");
        assert_eq!(r.sort.as_ref().unwrap().order, wire::SortOrder::Desc);
        assert_eq!(r.facets[0].field, "country");
        assert_eq!(r.limit, 5);
        let bad: HashMap<String, String> = [("lat".to_owned(), "x".to_owned())].into();
        assert_eq!(request_of_params(&bad).unwrap_err().field(), "lat");
        let unknown: HashMap<String, String> = [("qq".to_owned(), "x".to_owned())].into();
        assert_eq!(request_of_params(&unknown).unwrap_err().field(), "qq");
    }
}
