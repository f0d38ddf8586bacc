//! `POST|GET /v1/indexes/{index}/search`: validation, read-your-writes waits, fan-out to the
//! shards owning the regions asked for, one global merge (hybrid fused here when several shards
//! answer), freshness, and opaque cursors for the next page.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use wire::{SearchRequest, MAX_HITS, MAX_K};

use crate::config::Scope;
use crate::{authorize, format_lsn, parse_lsn, route, ApiError, AppState};

/// `POST /v1/indexes/{index}/search`: the full search (see `wire::SearchRequest`).
#[utoipa::path(
    post, path = "/v1/indexes/{index}/search", tag = "search",
    params(("index" = String, Path, description = "Index name")),
    request_body(content = wire::SearchRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Hits, freshness, next cursor", body = wire::SearchResponse),
        (status = 400, description = "Malformed body (the field is named)", body = wire::ErrorResponse),
        (status = 401, description = "No or unknown API key", body = wire::ErrorResponse),
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
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Some(peer), Scope::Read)?;
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
    search(&s, &index, req).await.map(Json)
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
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Some(peer), Scope::Read)?;
    let req = request_of_params(&params)?;
    search(&s, &index, req).await.map(Json)
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
        body.insert("text".into(), json!({"q": q, "highlight": highlight}));
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

/// What a cursor carries: where the next page starts, how fresh the previous one was (the
/// next waits for it: pages never go back in time), and a hash of the search it belongs to.
#[derive(Debug, PartialEq)]
struct Cursor {
    offset: u64,
    min_lsn: u64,
    search: u64,
}

impl Cursor {
    fn encode(&self) -> String {
        let raw = format!("1.{}.{:x}.{:016x}", self.offset, self.min_lsn, self.search);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    fn decode(text: &str) -> Option<Cursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let mut parts = raw.split('.');
        if parts.next()? != "1" {
            return None;
        }
        let c = Cursor {
            offset: parts.next()?.parse().ok()?,
            min_lsn: u64::from_str_radix(parts.next()?, 16).ok()?,
            search: u64::from_str_radix(parts.next()?, 16).ok()?,
        };
        parts.next().is_none().then_some(c)
    }
}

/// Identifies a search apart from its paging and freshness demands.
fn search_hash(req: &SearchRequest) -> u64 {
    let mut r = req.clone();
    r.offset = 0;
    r.limit = 0;
    r.cursor = None;
    r.consistency = None;
    xxhash_rust::xxh3::xxh3_64(serde_json::to_string(&r).unwrap_or_default().as_bytes())
}

/// How merged hits are ordered.
pub(crate) enum Order {
    ScoreDesc,
    DistanceAsc,
    Sort { descending: bool },
}

fn order_of(req: &SearchRequest) -> Order {
    if let Some(sort) = &req.sort {
        return Order::Sort {
            descending: sort.order == wire::SortOrder::Desc,
        };
    }
    if req.text.is_none() && req.vector.is_none() && req.geo.is_some() {
        return Order::DistanceAsc;
    }
    Order::ScoreDesc
}

pub(crate) fn compare_hits(order: &Order, a: &Value, b: &Value) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let num = |v: &Value, k: &str| v[k].as_f64();
    let first = match order {
        Order::ScoreDesc => num(b, "score")
            .unwrap_or(f64::MIN)
            .total_cmp(&num(a, "score").unwrap_or(f64::MIN)),
        Order::DistanceAsc => num(a, "distance_m")
            .unwrap_or(f64::MAX)
            .total_cmp(&num(b, "distance_m").unwrap_or(f64::MAX)),
        Order::Sort { descending } => {
            let (x, y) = (&a["sort_value"], &b["sort_value"]);
            match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                _ => {
                    let o = match (x.as_f64(), y.as_f64()) {
                        (Some(p), Some(q)) => p.total_cmp(&q),
                        _ => x
                            .as_str()
                            .unwrap_or_default()
                            .as_bytes()
                            .cmp(y.as_str().unwrap_or_default().as_bytes()),
                    };
                    if *descending {
                        o.reverse()
                    } else {
                        o
                    }
                }
            }
        }
    };
    first.then_with(|| {
        a["key"]
            .as_str()
            .unwrap_or_default()
            .cmp(b["key"].as_str().unwrap_or_default())
    })
}

/// One shard's answer to one request.
struct ShardAnswer {
    shard: usize,
    regions: Vec<String>,
    body: Value,
}

/// Waits for `min_lsn`, fans out to the shards, merges, checks staleness, pages.
async fn search(s: &AppState, index: &str, mut req: SearchRequest) -> Result<Value, ApiError> {
    let cfg = &s.inner.config;
    req.text = req
        .text_part()
        .map_err(|e| ApiError::invalid(&e.field, e.message))?;
    let (limit, mut offset) = (req.limit as u64, req.offset as u64);
    if limit == 0 || limit > MAX_HITS as u64 {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be in 1..={MAX_HITS}"),
        ));
    }

    // Freshness demands, and the previous page's freshness when this one follows a cursor.
    let consistency = req.consistency.take().unwrap_or_default();
    let mut min_lsn = match &consistency.min_lsn {
        None => None,
        Some(text) => Some(parse_lsn(text).ok_or_else(|| {
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
    let hash = search_hash(&req);
    if let Some(text) = req.cursor.take() {
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
        offset = c.offset;
        min_lsn = Some(min_lsn.unwrap_or(0).max(c.min_lsn));
    }
    if offset > MAX_HITS as u64 - limit {
        return Err(ApiError::invalid(
            "offset",
            format!("offset + limit must be at most {MAX_HITS}"),
        ));
    }
    let targets = route(cfg, &req.regions)?;

    // Read-your-writes: every touched shard must have applied the LSN.
    if let Some(lsn) = min_lsn {
        wait_for(s, &targets, lsn, wait_timeout_ms).await?;
    }

    // Fan out; a single shard gets the page as asked, several give their top offset+limit.
    // Several shards' hybrid results are fused here, from each branch's global order.
    let several = targets.len() > 1;
    let hybrid_here = several && req.text.is_some() && req.vector.is_some();
    let (answers, missing) = if hybrid_here {
        let window = req
            .hybrid
            .as_ref()
            .and_then(|h| h.window)
            .unwrap_or(100)
            .max((offset + limit) as usize);
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
            fan_out(s, index, &targets, &text_req, window as u64, 0),
            fan_out(s, index, &targets, &vector_req, window as u64, 0),
        )
        .await;
        let (mut text_answers, mut missing) = t?;
        let (vector_answers, missing_v) = v?;
        for m in missing_v {
            if !missing.contains(&m) {
                missing.push(m);
            }
        }
        // A shard counts only if both its branches answered.
        let answered = |a: &ShardAnswer| {
            !missing
                .iter()
                .any(|m| m["shard"] == cfg.shards[a.shard].url)
        };
        text_answers.retain(answered);
        let vector_answers: Vec<ShardAnswer> =
            vector_answers.into_iter().filter(answered).collect();
        let fused = fuse(&req, window, &text_answers, &vector_answers, offset, limit);
        if let Some(first) = text_answers.first_mut() {
            first.body["hits"] = Value::Array(fused);
        }
        for a in text_answers.iter_mut().skip(1) {
            a.body["hits"] = Value::Array(Vec::new());
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
        .with("missing", Value::Array(missing)));
    }

    // Freshness, per shard and overall.
    let mut shards_fresh = Vec::new();
    let (mut min_applied, mut max_lag_ms) = (u64::MAX, 0u64);
    for a in &answers {
        let v = &a.body;
        let applied = v["applied_lsn"].as_str().and_then(parse_lsn).unwrap_or(0);
        let lag_ms = v["lag_ms"].as_u64().unwrap_or(0);
        min_applied = min_applied.min(applied);
        max_lag_ms = max_lag_ms.max(lag_ms);
        shards_fresh.push(json!({"shard": cfg.shards[a.shard].url, "regions": a.regions,
            "applied_lsn": v["applied_lsn"], "lag_ms": lag_ms, "lag_bytes": v["lag_bytes"].as_u64().unwrap_or(0)}));
    }
    let freshness = json!({"min_applied_lsn": format_lsn(min_applied), "max_lag_ms": max_lag_ms, "shards": shards_fresh});
    if let Some(max) = consistency.max_staleness_ms {
        if max_lag_ms > max {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_stale",
                "consistency.max_staleness_ms",
                format!("the freshest answer available lags {max_lag_ms} ms, over {max} ms"),
            )
            .with("freshness", freshness));
        }
    }

    // Merge: one global order, then the page.
    let order = order_of(&req);
    let mut hits: Vec<Value> = Vec::new();
    let mut total: Option<u64> = None;
    let mut facet_counts: HashMap<String, Vec<(Value, u64)>> = HashMap::new();
    for a in &answers {
        let v = &a.body;
        if let Some(h) = v["hits"].as_array() {
            hits.extend(h.iter().cloned());
        }
        if let Some(t) = v["total"].as_u64() {
            *total.get_or_insert(0) += t;
        }
        if let Some(f) = v["facets"].as_object() {
            for (field, buckets) in f {
                let e = facet_counts.entry(field.clone()).or_default();
                for b in buckets.as_array().into_iter().flatten() {
                    let n = b["count"].as_u64().unwrap_or(0);
                    match e.iter_mut().find(|(val, _)| *val == b["value"]) {
                        Some((_, c)) => *c += n,
                        None => e.push((b["value"].clone(), n)),
                    }
                }
            }
        }
    }
    if several && !hybrid_here {
        hits.sort_by(|a, b| compare_hits(&order, a, b));
        hits = hits
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .collect();
    }
    let mut facets = Map::new();
    for (field, mut counts) in facet_counts {
        counts.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
        });
        let size = req
            .facets
            .iter()
            .find(|f| f.field == field)
            .map_or(10, |f| f.size);
        counts.truncate(size);
        facets.insert(
            field,
            counts
                .into_iter()
                .map(|(value, count)| json!({"value": value, "count": count}))
                .collect(),
        );
    }
    let next = offset + limit;
    let more = hits.len() as u64 == limit
        && next < MAX_HITS as u64
        && total.is_none_or(|t| next < t)
        && hit_cap(&req).is_none_or(|k| next < k);
    let mut out = json!({
        "hits": hits,
        "freshness": freshness,
        "partial": !missing.is_empty(),
    });
    if !missing.is_empty() {
        out["missing"] = Value::Array(missing);
    }
    if let Some(t) = total {
        out["total"] = json!(t);
    }
    if !facets.is_empty() {
        out["facets"] = Value::Object(facets);
    }
    if more {
        out["next_cursor"] = json!(Cursor {
            offset: next,
            min_lsn: min_applied,
            search: hash,
        }
        .encode());
    }
    Ok(out)
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

/// Waits until every target shard has applied `lsn`, or answers 409 with how far each got.
async fn wait_for(
    s: &AppState,
    targets: &[(usize, Vec<String>)],
    lsn: u64,
    wait_timeout_ms: u64,
) -> Result<(), ApiError> {
    let cfg = &s.inner.config;
    let lsn_text = format_lsn(lsn);
    let waits = targets.iter().map(|(i, _)| {
        let url = format!(
            "{}/internal/wait?lsn={lsn_text}&timeout_ms={wait_timeout_ms}",
            cfg.shards[*i].url
        );
        let http = s.inner.http.clone();
        let shard = cfg.shards[*i].url.clone();
        let deadline = Duration::from_millis(wait_timeout_ms + 2_000);
        async move {
            let r = tokio::time::timeout(deadline, http.get(url).send()).await;
            let (reached, applied) = match r {
                Ok(Ok(resp)) => {
                    let ok = resp.status().is_success();
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    (ok, v["applied_lsn"].clone())
                }
                _ => (false, Value::Null),
            };
            (shard, reached, applied)
        }
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
            "not every shard applied {lsn_text} within {wait_timeout_ms} ms; retry, or raise wait_timeout_ms"
        ),
    )
    .with("freshness", json!({"requested_lsn": lsn_text, "shards": shards})))
}

/// Sends `req` (as the page `limit`/`offset`) to every target shard in parallel, each with a
/// deadline. A shard's 4xx is the caller's error (it names the field); a shard that fails or
/// times out is missing.
async fn fan_out(
    s: &AppState,
    index: &str,
    targets: &[(usize, Vec<String>)],
    req: &SearchRequest,
    limit: u64,
    offset: u64,
) -> Result<(Vec<ShardAnswer>, Vec<Value>), ApiError> {
    let cfg = &s.inner.config;
    let mut base = serde_json::to_value(req).unwrap_or_default();
    base["index"] = json!(index);
    base["limit"] = json!(limit);
    base["offset"] = json!(offset);
    let calls = targets.iter().map(|(i, rs)| {
        let mut b = base.clone();
        b["regions"] = json!(rs);
        let url = format!("{}/internal/search", cfg.shards[*i].url);
        let http = s.inner.http.clone();
        let deadline = Duration::from_millis(cfg.limits.shard_timeout_ms);
        let (shard, regions) = (*i, rs.clone());
        async move {
            let r = tokio::time::timeout(deadline, http.post(url).json(&b).send()).await;
            let out = match r {
                Ok(Ok(resp)) => {
                    let status = resp.status();
                    match resp.json::<Value>().await {
                        Ok(v) => Ok((status, v)),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".to_owned()),
            };
            (shard, regions, out)
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut answers = Vec::new();
    let mut missing = Vec::new();
    for (shard, regions, out) in results {
        let url = &cfg.shards[shard].url;
        match out {
            Ok((status, body)) if status.is_success() => answers.push(ShardAnswer {
                shard,
                regions,
                body,
            }),
            Ok((status, v)) if status.is_client_error() => {
                // The shard validated the request: its answer names the field.
                let err = &v["error"];
                let status =
                    StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_REQUEST);
                return Err(ApiError::new(
                    status,
                    match status {
                        StatusCode::NOT_FOUND => "not_found",
                        StatusCode::BAD_REQUEST => "bad_body",
                        _ => "invalid",
                    },
                    err["field"].as_str().unwrap_or(""),
                    err["message"].as_str().unwrap_or("invalid request"),
                ));
            }
            Ok((status, _)) => {
                tracing::warn!(shard = %url, %status, "shard search failed");
                missing.push(json!({"shard": url, "regions": regions}));
            }
            Err(e) => {
                tracing::warn!(shard = %url, error = %e, "shard unreachable");
                missing.push(json!({"shard": url, "regions": regions}));
            }
        }
    }
    Ok((answers, missing))
}

/// Reciprocal rank fusion over several shards: each branch is put in its global order first
/// (text by BM25, vector by similarity), then fused exactly as one shard fuses its own.
fn fuse(
    req: &SearchRequest,
    window: usize,
    text: &[ShardAnswer],
    vector: &[ShardAnswer],
    offset: u64,
    limit: u64,
) -> Vec<Value> {
    let h = req.hybrid.clone().unwrap_or(wire::HybridRequest {
        method: wire::FusionMethod::Rrf,
        k: 60.0,
        weights: wire::Weights::default(),
        window: None,
    });
    let branch = |answers: &[ShardAnswer]| {
        let mut hits: Vec<Value> = answers
            .iter()
            .flat_map(|a| a.body["hits"].as_array().cloned().unwrap_or_default())
            .collect();
        hits.sort_by(|a, b| compare_hits(&Order::ScoreDesc, a, b));
        hits.truncate(window);
        hits
    };
    let mut fused: Vec<(String, Value)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for (name, hits, weight) in [
        ("text", branch(text), h.weights.text),
        ("vector", branch(vector), h.weights.vector),
    ] {
        for (rank, hit) in hits.into_iter().enumerate() {
            let key = hit["key"].as_str().unwrap_or_default().to_owned();
            let i = *at.entry(key.clone()).or_insert_with(|| {
                fused.push((
                    key,
                    json!({"key": hit["key"], "region": hit["region"], "score": 0.0,
                           "ranks": {"text": null, "vector": null},
                           "branch_scores": {"text": null, "vector": null},
                           "fields": hit["fields"]}),
                ));
                fused.len() - 1
            });
            let f = &mut fused[i].1;
            let score = f["score"].as_f64().unwrap_or(0.0) + weight / (h.k + rank as f64 + 1.0);
            f["score"] = json!(score);
            f["ranks"][name] = json!(rank + 1);
            f["branch_scores"][name] = hit["score"].clone();
            if let Some(hl) = hit.get("highlights") {
                f["highlights"] = hl.clone();
            }
        }
    }
    let mut hits: Vec<Value> = fused.into_iter().map(|(_, v)| v).collect();
    hits.sort_by(|a, b| compare_hits(&Order::ScoreDesc, a, b));
    hits.into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            offset: 20,
            min_lsn: 0x16B3748,
            search: 0xdead_beef,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(Cursor::decode(""), None);
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("2.1.1.1");
        assert_eq!(Cursor::decode(&forged), None);
    }

    #[test]
    fn the_search_hash_ignores_paging_and_freshness() {
        let a: SearchRequest = wire::parse(br#"{"q": "x", "limit": 5}"#).unwrap();
        let b: SearchRequest = wire::parse(
            br#"{"q": "x", "limit": 9, "offset": 3, "consistency": {"min_lsn": "0/1"}}"#,
        )
        .unwrap();
        let c: SearchRequest = wire::parse(br#"{"q": "y"}"#).unwrap();
        assert_eq!(search_hash(&a), search_hash(&b));
        assert_ne!(search_hash(&a), search_hash(&c));
    }

    #[test]
    fn get_parameters_become_a_request() {
        let p: HashMap<String, String> = [
            ("q", "paris"),
            ("region", "europe,asia"),
            ("sort", "-population"),
            ("facets", "country"),
            ("highlight", "false"),
            ("limit", "5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let r = request_of_params(&p).unwrap();
        assert_eq!(r.regions, ["europe", "asia"]);
        assert!(!r.text.as_ref().unwrap().highlight);
        assert_eq!(r.sort.as_ref().unwrap().order, wire::SortOrder::Desc);
        assert_eq!(r.facets[0].field, "country");
        assert_eq!(r.limit, 5);
        let bad: HashMap<String, String> = [("lat".to_owned(), "x".to_owned())].into();
        assert_eq!(request_of_params(&bad).unwrap_err().0.field, "lat");
        let unknown: HashMap<String, String> = [("qq".to_owned(), "x".to_owned())].into();
        assert_eq!(request_of_params(&unknown).unwrap_err().0.field, "qq");
    }

    #[test]
    fn merged_hits_follow_the_request_order() {
        let hits = [
            json!({"key": "b", "score": 2.0, "distance_m": 5.0, "sort_value": null}),
            json!({"key": "a", "score": 2.0, "distance_m": 9.0, "sort_value": 3}),
            json!({"key": "c", "score": 7.0, "distance_m": 1.0, "sort_value": 1}),
        ];
        let sorted = |o: Order| {
            let mut v = hits.to_vec();
            v.sort_by(|x, y| compare_hits(&o, x, y));
            v.iter()
                .map(|h| h["key"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(sorted(Order::ScoreDesc), ["c", "a", "b"]);
        assert_eq!(sorted(Order::DistanceAsc), ["c", "b", "a"]);
        assert_eq!(sorted(Order::Sort { descending: true }), ["a", "c", "b"]);
        assert_eq!(sorted(Order::Sort { descending: false }), ["c", "a", "b"]);
    }
}
