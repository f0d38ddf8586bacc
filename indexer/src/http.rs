//! The shard's internal HTTP endpoint: health, status (freshness, slot, partitions, rejected
//! rows), Prometheus metrics, a wait-for-LSN call, and the per-key dump `verify` compares.
//! Wire shapes are built here from domain types; engine work runs on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::catalog::ResolvedIndex;
use crate::status::Stats;
use engine::partition;
use engine::shard::ViewCell;
use wire::Lsn;

#[derive(Clone)]
pub struct HttpState {
    pub stats: Arc<Stats>,
    pub view: Arc<ViewCell>,
    pub indexes: Arc<Vec<ResolvedIndex>>,
    pub slot: String,
    pub prometheus: Option<PrometheusHandle>,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/status", get(status))
        .route("/metrics", get(metrics_text))
        .route("/internal/wait", get(wait))
        .route("/internal/dump/{index}", get(dump))
        .route("/internal/search", axum::routing::post(search))
        .route("/internal/documents/{index}/{key}", get(document))
        .route("/internal/changes/{index}", get(changes))
        .with_state(state)
}

fn error(status: StatusCode, field: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"field": field, "message": message.into()}})),
    )
        .into_response()
}

fn status_json(s: &HttpState) -> Value {
    let stats = &s.stats;
    let applied = stats.applied();
    let wal_end = stats.server_wal_end().max(applied);
    let lag_bytes = stats.lag_bytes();
    let lag_ms = stats.lag_ms();
    let rejected = stats.rejected_by_partition.lock().unwrap().clone();
    let view = s.view.load();
    let partitions: Vec<Value> = view
        .iter()
        .flat_map(|v| v.partitions.iter())
        .map(|((ix, region), p)| {
            let name = &s.indexes[*ix].name;
            json!({
                "index": name,
                "region": region,
                "documents": p.documents().unwrap_or(0),
                // Written, searchable, not yet in a durable commit (scanned by every query).
                "fresh_documents": p.fresh.docs.len(),
                "checkpoint_lsn": p.checkpoint.to_string(),
                "applied_lsn": applied.to_string(),
                "lag_bytes": lag_bytes,
                "lag_ms": lag_ms,
                "rejected_rows": rejected.get(&(name.clone(), region.clone())).copied().unwrap_or(0),
                "vectors_pending_graph": p.graph.as_ref().map(|g| p.recent_vectors.range(g.graphed()..).count()),
                "graph_points": p.graph.as_ref().map(|g| g.points()),
            })
        })
        .collect();
    let recent: Vec<Value> = stats
        .recent_rejections
        .lock()
        .unwrap()
        .iter()
        .map(|r| json!({"index": r.index, "key": r.key, "field": r.field, "reason": r.reason}))
        .collect();
    let unplaced: u64 = rejected
        .iter()
        .filter(|((_, r), _)| r.is_empty())
        .map(|(_, n)| n)
        .sum();
    json!({
        "slot": s.slot,
        "stream": *stats.stream_state.lock().unwrap(),
        "last_error": *stats.last_error.lock().unwrap(),
        "reconnects": stats.reconnects.load(std::sync::atomic::Ordering::Relaxed),
        "snapshot": *stats.snapshot.lock().unwrap(),
        "applied_lsn": applied.to_string(),
        "server_wal_end": wal_end.to_string(),
        "lag_bytes": lag_bytes,
        "lag_ms": lag_ms,
        "slot_status": *stats.slot.lock().unwrap(),
        "rows_applied": stats.rows_applied.load(std::sync::atomic::Ordering::Relaxed),
        "transactions_applied": stats.transactions_applied.load(std::sync::atomic::Ordering::Relaxed),
        "rejected_rows": stats.rejected_total.load(std::sync::atomic::Ordering::Relaxed),
        "rejected_rows_without_partition": unplaced,
        "recent_rejections": recent,
        "partitions": partitions,
    })
}

/// Counting visible documents looks up every fresh key: engine work, on the blocking pool.
async fn status(State(s): State<HttpState>) -> Response {
    match tokio::task::spawn_blocking(move || status_json(&s)).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "status task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "", "internal error")
        }
    }
}

async fn metrics_text(State(s): State<HttpState>) -> Response {
    match tokio::task::spawn_blocking(move || render_metrics(&s)).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "metrics task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "", "internal error")
        }
    }
}

fn render_metrics(s: &HttpState) -> Response {
    use crate::metrics::*;
    let stats = &s.stats;
    metrics::gauge!(APPLIED_LSN).set(stats.applied().as_u64() as f64);
    metrics::gauge!(SERVER_WAL_END).set(stats.server_wal_end().as_u64() as f64);
    metrics::gauge!(LAG_BYTES).set(stats.lag_bytes() as f64);
    metrics::gauge!(LAG_SECONDS).set(stats.lag_ms() as f64 / 1000.0);
    if let Some(safe) = stats
        .slot
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|s| s.safe_wal_size)
    {
        metrics::gauge!(SLOT_SAFE_WAL_BYTES).set(safe as f64);
    }
    let rejected = stats.rejected_by_partition.lock().unwrap().clone();
    if let Some(view) = s.view.load() {
        for ((ix, region), p) in &view.partitions {
            let name = s.indexes[*ix].name.clone();
            let n = rejected
                .get(&(name.clone(), region.clone()))
                .copied()
                .unwrap_or(0);
            metrics::gauge!(PARTITION_DOCS, "index" => name.clone(), "region" => region.clone())
                .set(p.searcher.num_docs() as f64);
            metrics::gauge!(PARTITION_REJECTED, "index" => name, "region" => region.clone())
                .set(n as f64);
        }
    }
    match &s.prometheus {
        Some(h) => ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            "metrics recorder not installed",
        ),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitParams {
    lsn: String,
    #[serde(default = "default_wait_ms")]
    timeout_ms: u64,
}

fn default_wait_ms() -> u64 {
    5_000
}

/// Waits until the shard has applied `lsn` (200) or the timeout passes (409, with how far it got).
async fn wait(
    State(s): State<HttpState>,
    params: Result<Query<WaitParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(p)) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "lsn",
            "query parameter lsn is required (e.g. ?lsn=0/16B3748)",
        );
    };
    let lsn: Lsn = match p.lsn.parse() {
        Ok(l) => l,
        Err(e) => return error(StatusCode::BAD_REQUEST, "lsn", e.to_string()),
    };
    if p.timeout_ms > 60_000 {
        return error(StatusCode::BAD_REQUEST, "timeout_ms", "at most 60000");
    }
    let applied = s
        .stats
        .wait_applied(lsn, Duration::from_millis(p.timeout_ms))
        .await;
    let body = json!({"requested_lsn": lsn.to_string(), "applied_lsn": applied.to_string(), "reached": applied >= lsn});
    let code = if applied >= lsn {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (code, Json(body)).into_response()
}

/// Every document of an index as key → content hash, per partition, from one consistent view.
async fn dump(State(s): State<HttpState>, Path(index): Path<String>) -> Response {
    let Some(ix) = s
        .indexes
        .iter()
        .find(|i| i.name == index)
        .map(|i| i.ordinal)
    else {
        return error(
            StatusCode::NOT_FOUND,
            "index",
            format!("unknown index {index:?}"),
        );
    };
    let Some(view) = s.view.load() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "", "no view yet");
    };
    let result = tokio::task::spawn_blocking(move || -> crate::Result<Value> {
        let mut partitions = serde_json::Map::new();
        for ((i, region), p) in &view.partitions {
            if *i != ix {
                continue;
            }
            let docs = partition::dump(&p.searcher, &p.fields, &p.fresh, region)?;
            let docs: Vec<Value> = docs
                .into_iter()
                .map(|(k, h)| json!([k, format!("{h:016x}")]))
                .collect();
            partitions.insert(region.clone(), Value::Array(docs));
        }
        Ok(json!({"applied_lsn": view.applied.to_string(), "durable_lsn": view.durable.to_string(), "partitions": partitions}))
    })
    .await;
    json_or_internal_error("dump", result)
}

use wire::{GeoRequest, HybridRequest, SearchRequest, SortOrder};
pub use wire::{MAX_FACET_SIZE, MAX_HITS, MAX_K};

/// A request field that fails validation: 422 with the field named.
struct FieldError {
    field: std::borrow::Cow<'static, str>,
    message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    fn owned(field: String, message: String) -> FieldError {
        FieldError {
            field: field.into(),
            message,
        }
    }
}

impl IntoResponse for FieldError {
    fn into_response(self) -> Response {
        error(StatusCode::UNPROCESSABLE_ENTITY, &self.field, self.message)
    }
}

fn check_lat(field: &'static str, v: f64) -> Result<f64, FieldError> {
    if v.is_finite() && (-90.0..=90.0).contains(&v) {
        Ok(v)
    } else {
        Err(FieldError::new(
            field,
            "latitude must be a number in [-90, 90]",
        ))
    }
}

fn check_lon(field: &'static str, v: f64) -> Result<f64, FieldError> {
    if v.is_finite() && (-180.0..=180.0).contains(&v) {
        Ok(v)
    } else {
        Err(FieldError::new(
            field,
            "longitude must be a number in [-180, 180]",
        ))
    }
}

/// Checks a geo part's ranges (the types were checked by parsing).
fn validate_geo(g: GeoRequest) -> Result<engine::search::GeoQuery, FieldError> {
    use engine::search::GeoQuery;
    Ok(match g {
        GeoRequest::Within { lat, lon, radius_m } => {
            if !(radius_m.is_finite() && radius_m >= 0.0) {
                return Err(FieldError::new(
                    "geo.within.radius_m",
                    "radius must be a number >= 0 (metres)",
                ));
            }
            GeoQuery::Within {
                lat: check_lat("geo.within.lat", lat)?,
                lon: check_lon("geo.within.lon", lon)?,
                radius_m,
            }
        }
        GeoRequest::Bbox {
            south,
            west,
            north,
            east,
        } => {
            let b = engine::geo::BBox {
                south: check_lat("geo.bbox.south", south)?,
                west: check_lon("geo.bbox.west", west)?,
                north: check_lat("geo.bbox.north", north)?,
                east: check_lon("geo.bbox.east", east)?,
            };
            if b.south > b.north {
                return Err(FieldError::new(
                    "geo.bbox.south",
                    "south must not be north of north",
                ));
            }
            GeoQuery::BBox(b)
        }
        GeoRequest::Nearest { lat, lon, k } => {
            if k == 0 || k > MAX_HITS {
                return Err(FieldError::new(
                    "geo.nearest.k",
                    format!("k must be in 1..={MAX_HITS}"),
                ));
            }
            GeoQuery::Nearest {
                lat: check_lat("geo.nearest.lat", lat)?,
                lon: check_lon("geo.nearest.lon", lon)?,
                k,
            }
        }
    })
}

/// Parses a JSON body; a malformed one is a 400 naming the field at fault by its JSON path
/// (an unknown field included).
fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Box<Response>> {
    wire::parse(bytes).map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, &e.field, e.message)))
}

/// Shard search: text, geo, vector, filters, hybrid (the public API is query-api's).
async fn search(State(s): State<HttpState>, body: axum::body::Bytes) -> Response {
    // The public request (wire::SearchRequest) plus the index it is for.
    let mut body: Value = match parse_body(&body) {
        Ok(v) => v,
        Err(resp) => return *resp,
    };
    let index = match body.as_object_mut().and_then(|o| o.remove("index")) {
        Some(Value::String(name)) => name,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "index",
                "index: a string is required",
            )
        }
    };
    let mut req: SearchRequest = match wire::parse_value(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.field, e.message),
    };
    if req.cursor.is_some() || req.consistency.is_some() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            if req.cursor.is_some() {
                "cursor"
            } else {
                "consistency"
            },
            "cursors and consistency are handled by query-api",
        );
    }
    let Some(ix) = s.indexes.iter().find(|i| i.name == index) else {
        return error(
            StatusCode::NOT_FOUND,
            "index",
            format!("unknown index {index:?}"),
        );
    };
    let text = match req.text_part() {
        Ok(t) => t,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, &e.field, e.message),
    };
    if req.limit == 0 || req.limit > MAX_HITS {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
            format!("limit must be in 1..={MAX_HITS}"),
        );
    }
    if req.offset > MAX_HITS - req.limit {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "offset",
            format!("offset + limit must be at most {MAX_HITS}"),
        );
    }
    let parts = Parts {
        text,
        geo: req.geo,
        vector: req.vector,
        hybrid: req.hybrid,
        filter: req.filter,
        sort: req.sort,
        facets: req.facets,
    };
    let query = match plan(ix, parts, req.limit, req.offset) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let Some(view) = s.view.load() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "", "not ready");
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
        return error(
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
    let ix = ix.clone();
    let (lag_ms, lag_bytes) = (s.stats.lag_ms(), s.stats.lag_bytes());
    let result = tokio::task::spawn_blocking(move || -> tantivy::Result<Value> {
        let row = |region: &str, key: &str| -> tantivy::Result<Value> {
            let Some(p) = view.partitions.get(&(ix.ordinal, region.to_owned())) else {
                return Ok(Value::Null);
            };
            Ok(engine::search::row_of(p, key)?
                .map(|r| fields_json(&ix, &r))
                .unwrap_or(Value::Null))
        };
        let mut total = None;
        let mut facets = None;
        let hits: Vec<Value> = match &query {
            Planned::Geo(q, f) => {
                let hits = engine::search::geo_where(&view, &scope, q, offset + limit, f.as_ref())?;
                hits.iter()
                    .skip(offset)
                    .map(|h| {
                        Ok(
                            json!({"key": h.key, "region": h.region, "distance_m": h.distance_m,
                                  "fields": row(&h.region, &h.key)?}),
                        )
                    })
                    .collect::<tantivy::Result<_>>()?
            }
            Planned::Vector(q) => engine::search::vector(&view, &scope, q)?
                .iter()
                .skip(offset)
                .take(limit)
                .map(|h| {
                    Ok(json!({"key": h.key, "region": h.region, "score": h.score,
                              "fields": row(&h.region, &h.key)?}))
                })
                .collect::<tantivy::Result<_>>()?,
            Planned::Text(q) => {
                let answer = engine::search::text(&view, &scope, q)?;
                total = Some(answer.total);
                if !q.facets.is_empty() {
                    let (_, fields) = partition::Fields::schema(&ix);
                    facets = Some(Value::Object(
                        q.facets
                            .iter()
                            .zip(&answer.facets)
                            .map(|(&(f, _), values)| {
                                let buckets: Vec<Value> = values
                                    .iter()
                                    .map(|(v, n)| json!({"value": v.to_json(), "count": n}))
                                    .collect();
                                (fields.filters[f].name.clone(), Value::Array(buckets))
                            })
                            .collect(),
                    ));
                }
                answer
                    .hits
                    .iter()
                    .map(|h| {
                        let mut hit = json!({"key": h.key, "region": h.region, "score": h.score,
                                             "fields": fields_json(&ix, &h.row)});
                        if q.highlight {
                            hit["highlights"] = highlights_json(&h.highlights);
                        }
                        if let Some(d) = h.distance_m {
                            hit["distance_m"] = json!(d);
                        }
                        if q.sort.is_some() {
                            hit["sort_value"] =
                                h.sort_value.as_ref().map_or(Value::Null, |k| k.to_json());
                        }
                        hit
                    })
                    .collect()
            }
            Planned::Hybrid(t, v, f) => {
                engine::search::hybrid(&view, &scope, t, v, f, offset, limit)?
                    .iter()
                    .map(|h| {
                        let mut hit = json!({"key": h.key, "region": h.region, "score": h.score,
                            "ranks": {"text": h.text_rank, "vector": h.vector_rank},
                            "branch_scores": {"text": h.text_score, "vector": h.vector_score},
                            "fields": row(&h.region, &h.key)?});
                        if t.highlight {
                            hit["highlights"] = highlights_json(&h.highlights);
                        }
                        Ok(hit)
                    })
                    .collect::<tantivy::Result<_>>()?
            }
        };
        let mut body = json!({"applied_lsn": view.applied.to_string(), "lag_ms": lag_ms,
                              "lag_bytes": lag_bytes, "hits": hits});
        if let Some(t) = total {
            body["total"] = json!(t);
        }
        if let Some(f) = facets {
            body["facets"] = f;
        }
        Ok(body)
    })
    .await;
    json_or_internal_error("search", result)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangesParams {
    since: Option<String>,
}

/// The change feed of one index as server-sent events: `id` is the change's position
/// (`LSN:n`), `event: change`, `data` its key, op, region and LSN. Starts after `since` (or
/// the `Last-Event-ID` header; default: from now). 410 when those changes are no longer
/// kept: re-sync by searching, then follow from the position the 410 names.
async fn changes(
    State(s): State<HttpState>,
    Path(index): Path<String>,
    headers: axum::http::HeaderMap,
    params: Result<Query<ChangesParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    use crate::changes::{ChangeEvent, Position};
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let Some(ix) = s.indexes.iter().find(|i| i.name == index) else {
        return error(
            StatusCode::NOT_FOUND,
            "index",
            format!("unknown index {index:?}"),
        );
    };
    let Ok(Query(params)) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "since",
            "unknown query parameter (since)",
        );
    };
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or(params.since);
    let after: Position = match since {
        None => s.stats.changes.head(),
        Some(text) => match text.parse() {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, "since", e),
        },
    };
    let ordinal = ix.ordinal;
    if let Err(gone) = s.stats.changes.read_after(after, ordinal, 0) {
        return (
            StatusCode::GONE,
            Json(json!({
                "error": {"field": "since", "message": format!(
                    "changes after {after} are no longer kept; search to re-sync, then follow from {}",
                    gone.complete_after)},
                "complete_after": gone.complete_after.to_string(),
            })),
        )
            .into_response();
    }
    let name = ix.name.clone();
    let stats = s.stats.clone();
    let rx = stats.changes.subscribe();
    let to_event = move |e: &ChangeEvent| -> Result<Event, std::convert::Infallible> {
        Ok(Event::default()
            .id(e.position().to_string())
            .event("change")
            .data(
                json!({"index": name, "key": e.key, "op": e.op, "region": e.region,
                       "lsn": e.lsn.to_string()})
                .to_string(),
            ))
    };
    let stream =
        futures_util::stream::unfold((after, rx, stats), move |(mut pos, mut rx, stats)| {
            let to_event = to_event.clone();
            async move {
                loop {
                    match stats.changes.read_after(pos, ordinal, 512) {
                        Ok(events) if !events.is_empty() => {
                            pos = events.last().expect("non-empty").position();
                            let items: Vec<_> = events.iter().map(&to_event).collect();
                            return Some((futures_util::stream::iter(items), (pos, rx, stats)));
                        }
                        Ok(_) => {
                            if rx.changed().await.is_err() {
                                return None;
                            }
                        }
                        // Fell behind the ring: end; the client's resume gets the 410.
                        Err(_) => return None,
                    }
                }
            }
        })
        .flatten();
    // First, where the stream starts: a resume point even before any change.
    let start = futures_util::stream::once(async move {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .id(after.to_string())
                .event("start")
                .data("{}"),
        )
    });
    Sse::new(start.chain(stream))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// One document by key, from whichever region holds it: its stored fields and region.
async fn document(
    State(s): State<HttpState>,
    Path((index, key)): Path<(String, String)>,
) -> Response {
    let Some(ix) = s.indexes.iter().find(|i| i.name == index).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "index",
            format!("unknown index {index:?}"),
        );
    };
    let Some(view) = s.view.load() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "", "not ready");
    };
    let result = tokio::task::spawn_blocking(move || -> tantivy::Result<Option<Value>> {
        for ((i, region), p) in &view.partitions {
            if *i != ix.ordinal {
                continue;
            }
            if let Some(row) = engine::search::row_of(p, &key)? {
                return Ok(Some(json!({"key": key, "region": region,
                                      "fields": fields_json(&ix, &row),
                                      "applied_lsn": view.applied.to_string()})));
            }
        }
        Ok(None)
    })
    .await;
    match result {
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "key", "no such document"),
        other => json_or_internal_error("document lookup", other.map(|r| r.map(Option::unwrap))),
    }
}

/// The answer of engine work run on the blocking pool: its JSON, or a logged failure
/// answered as a bare 500 (no internal detail in bodies).
fn json_or_internal_error<E: std::fmt::Display>(
    what: &str,
    result: Result<Result<Value, E>, tokio::task::JoinError>,
) -> Response {
    match result {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "{what} failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "", "internal error")
        }
        Err(e) => {
            tracing::error!(error = %e, "{what} task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "", "internal error")
        }
    }
}

/// The configured stored columns of a row, by name: integers, numbers and booleans as JSON
/// numbers and booleans, dates and times as RFC 3339 strings, the rest as Postgres text.
fn fields_json(ix: &ResolvedIndex, row: &[Option<String>]) -> Value {
    use engine::filter::{format_time, FilterValue};
    let mut m = serde_json::Map::new();
    for &c in &ix.stored {
        let text = row.get(c).cloned().flatten();
        let kind = ix.value_kinds.get(c).copied().flatten();
        let value = match (text, kind) {
            (None, _) => Value::Null,
            (Some(t), Some(k)) => match k.parse(&t) {
                Ok(FilterValue::Int(i)) => json!(i),
                Ok(FilterValue::Float(x)) => json!(x),
                Ok(FilterValue::Bool(b)) => json!(b),
                Ok(FilterValue::Time(us)) => json!(format_time(us)),
                Ok(FilterValue::Text(_)) | Err(_) => Value::String(t),
            },
            (Some(t), None) => Value::String(t),
        };
        m.insert(ix.column_name(c).to_owned(), value);
    }
    Value::Object(m)
}

fn highlights_json(h: &[(String, String)]) -> Value {
    Value::Object(
        h.iter()
            .map(|(f, html)| (f.clone(), Value::String(html.clone())))
            .collect(),
    )
}

/// What a search request asks the engines for.
enum Planned {
    Geo(engine::search::GeoQuery, Option<engine::filter::Filter>),
    Vector(engine::search::VectorQuery),
    Text(engine::search::TextSearch),
    Hybrid(
        engine::search::TextSearch,
        engine::search::VectorQuery,
        engine::search::Fusion,
    ),
}

/// A geo part beside a text or vector query filters it: within a radius or a box.
fn geo_filter(
    ix: &ResolvedIndex,
    geo: Option<GeoRequest>,
    what: &str,
) -> Result<Option<engine::search::GeoQuery>, FieldError> {
    let Some(g) = geo else { return Ok(None) };
    if ix.geo.is_none() {
        return Err(FieldError::new(
            "geo",
            format!("index {:?} has no geo field", ix.name),
        ));
    }
    match validate_geo(g)? {
        engine::search::GeoQuery::Nearest { .. } => Err(FieldError::new(
            "geo.nearest",
            format!("nearest cannot filter a {what} query: use within or bbox"),
        )),
        q => Ok(Some(q)),
    }
}

/// Validates a request's parts and decides how to answer it: text alone (geo filters it),
/// vector alone (likewise), text and vector fused by RRF, or geo alone.
/// The query parts of a search request.
struct Parts {
    text: Option<wire::TextRequest>,
    geo: Option<GeoRequest>,
    vector: Option<wire::VectorRequest>,
    hybrid: Option<HybridRequest>,
    filter: Option<Value>,
    sort: Option<wire::SortRequest>,
    facets: Vec<wire::FacetRequest>,
}

/// The position of a filter field named in `sort` or `facets`.
fn filter_field(
    fields: &partition::Fields,
    name: &str,
    at: &'static str,
) -> Result<usize, FieldError> {
    fields
        .filters
        .iter()
        .position(|f| f.name == name)
        .ok_or_else(|| {
            let known: Vec<&str> = fields.filters.iter().map(|f| f.name.as_str()).collect();
            FieldError::new(
                at,
                format!(
                    "{name:?} is not a filter field (filter fields: {})",
                    known.join(", ")
                ),
            )
        })
}

fn plan(
    ix: &ResolvedIndex,
    parts: Parts,
    limit: usize,
    offset: usize,
) -> Result<Planned, FieldError> {
    let Parts {
        text,
        geo,
        vector,
        hybrid,
        filter,
        sort,
        facets,
    } = parts;
    let (_, fields) = partition::Fields::schema(ix);
    let sort = match sort {
        None => None,
        Some(s) => Some(engine::search::SortBy {
            field: filter_field(&fields, &s.field, "sort.field")?,
            descending: s.order == SortOrder::Desc,
        }),
    };
    if facets.len() > 16 {
        return Err(FieldError::new("facets", "at most 16 facets"));
    }
    let mut facet_list = Vec::new();
    for f in &facets {
        if f.size == 0 || f.size > MAX_FACET_SIZE {
            return Err(FieldError::new(
                "facets.size",
                format!("size must be in 1..={MAX_FACET_SIZE}"),
            ));
        }
        facet_list.push((filter_field(&fields, &f.field, "facets.field")?, f.size));
    }
    let ranked_elsewhere = |what: &str| -> Result<(), FieldError> {
        if sort.is_some() {
            return Err(FieldError::owned(
                "sort".into(),
                format!("sort applies to text or filter searches, not {what}"),
            ));
        }
        if !facet_list.is_empty() {
            return Err(FieldError::owned(
                "facets".into(),
                format!("facets apply to text or filter searches, not {what}"),
            ));
        }
        Ok(())
    };
    let fields_filter = match &filter {
        None => None,
        Some(v) => Some(
            engine::filter::Filter::parse(v, &fields.filters, "filter")
                .map_err(|e| FieldError::owned(e.path, e.message))?,
        ),
    };
    if hybrid.is_some() && (text.is_none() || vector.is_none()) {
        return Err(FieldError::new(
            "hybrid",
            "hybrid fuses a text and a vector query: give both",
        ));
    }
    let text = match text {
        None => None,
        Some(t) => {
            if fields.text.is_empty() {
                return Err(FieldError::new(
                    "text",
                    format!("index {:?} has no text fields", ix.name),
                ));
            }
            let query = engine::text::TextQuery::parse(&t.q, t.operator, &fields.text)
                .map_err(|e| FieldError::new("text.q", e.0))?;
            Some((query, t.highlight))
        }
    };
    let vector = match vector {
        None => None,
        Some(v) => {
            let Some(spec) = ix.vector else {
                return Err(FieldError::new(
                    "vector",
                    format!("index {:?} has no vector field", ix.name),
                ));
            };
            if v.values.len() != spec.dimension {
                return Err(FieldError::new(
                    "vector.values",
                    format!(
                        "the vector has {} dimensions, index {:?} has {}",
                        v.values.len(),
                        ix.name,
                        spec.dimension
                    ),
                ));
            }
            if v.k == 0 || v.k > MAX_K {
                return Err(FieldError::new(
                    "vector.k",
                    format!("k must be in 1..={MAX_K}"),
                ));
            }
            if v.values.iter().any(|x| !x.is_finite()) {
                return Err(FieldError::new(
                    "vector.values",
                    "values must be finite numbers",
                ));
            }
            if v.ef.is_some_and(|ef| ef == 0 || ef > 10 * MAX_K) {
                return Err(FieldError::new(
                    "vector.ef",
                    format!("ef must be in 1..={}", 10 * MAX_K),
                ));
            }
            Some(v)
        }
    };
    Ok(match (text, vector) {
        (None, None) => match geo {
            // A filter alone browses the matching documents (score 1, by key).
            None if fields_filter.is_some() => Planned::Text(engine::search::TextSearch {
                query: engine::text::TextQuery::all(&fields.text),
                limit,
                offset,
                filter: None,
                fields_filter,
                highlight: false,
                sort,
                facets: facet_list,
            }),
            None => {
                return Err(FieldError::new(
                    "text",
                    "a text, geo, vector or filter query is required",
                ))
            }
            Some(g) => {
                if ix.geo.is_none() {
                    return Err(FieldError::new(
                        "geo",
                        format!("index {:?} has no geo field", ix.name),
                    ));
                }
                ranked_elsewhere("geo searches (sorted by distance)")?;
                Planned::Geo(validate_geo(g)?, fields_filter)
            }
        },
        (None, Some(v)) => {
            ranked_elsewhere("vector searches")?;
            Planned::Vector(engine::search::VectorQuery {
                k: v.k.min(offset + limit),
                values: v.values,
                ef: v.ef,
                exact: v.exact,
                filter: geo_filter(ix, geo, "vector")?,
                fields_filter,
            })
        }
        (Some((query, highlight)), None) => Planned::Text(engine::search::TextSearch {
            query,
            limit,
            offset,
            filter: geo_filter(ix, geo, "text")?,
            fields_filter,
            highlight,
            sort,
            facets: facet_list,
        }),
        (Some((query, highlight)), Some(v)) => {
            ranked_elsewhere("hybrid searches")?;
            let h = hybrid.unwrap_or(HybridRequest {
                method: wire::FusionMethod::Rrf,
                k: 60.0,
                weights: wire::Weights::default(),
                window: None,
            });
            if !(h.k.is_finite() && h.k >= 0.0) {
                return Err(FieldError::new("hybrid.k", "k must be a number >= 0"));
            }
            for (field, w) in [
                ("hybrid.weights.text", h.weights.text),
                ("hybrid.weights.vector", h.weights.vector),
            ] {
                if !(w.is_finite() && w >= 0.0) {
                    return Err(FieldError::new(field, "weights must be numbers >= 0"));
                }
            }
            let window = h.window.unwrap_or(100);
            if window == 0 || window > MAX_K {
                return Err(FieldError::new(
                    "hybrid.window",
                    format!("window must be in 1..={MAX_K}"),
                ));
            }
            let filter = geo_filter(ix, geo, "hybrid")?;
            Planned::Hybrid(
                engine::search::TextSearch {
                    query,
                    limit,
                    offset,
                    filter: filter.clone(),
                    fields_filter: fields_filter.clone(),
                    highlight,
                    sort: None,
                    facets: Vec::new(),
                },
                engine::search::VectorQuery {
                    k: v.k,
                    values: v.values,
                    ef: v.ef,
                    exact: v.exact,
                    filter,
                    fields_filter,
                },
                engine::search::Fusion {
                    k: h.k,
                    text_weight: h.weights.text,
                    vector_weight: h.weights.vector,
                    window,
                },
            )
        }
    })
}
