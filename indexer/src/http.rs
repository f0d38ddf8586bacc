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
use crate::lsn::Lsn;
use crate::partition;
use crate::shard::ViewCell;
use crate::status::Stats;

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
    match result {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "dump failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "", "internal error")
        }
        Err(e) => {
            tracing::error!(error = %e, "dump task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "", "internal error")
        }
    }
}

/// Largest number of hits one internal search returns.
pub const MAX_HITS: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchRequest {
    index: String,
    #[serde(default)]
    regions: Vec<String>,
    geo: Option<GeoRequest>,
    vector: Option<VectorRequest>,
    #[serde(default = "default_limit")]
    limit: usize,
}

/// Largest `k` of a vector query.
pub const MAX_K: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VectorRequest {
    values: Vec<f32>,
    #[serde(default = "default_limit")]
    k: usize,
    ef: Option<usize>,
    #[serde(default)]
    exact: bool,
}

fn default_limit() -> usize {
    10
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum GeoRequest {
    Within {
        lat: f64,
        lon: f64,
        radius_m: f64,
    },
    Bbox {
        south: f64,
        west: f64,
        north: f64,
        east: f64,
    },
    Nearest {
        lat: f64,
        lon: f64,
        k: usize,
    },
}

/// A request field that fails validation: 422 with the field named.
struct FieldError {
    field: &'static str,
    message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError {
            field,
            message: message.into(),
        }
    }
}

impl IntoResponse for FieldError {
    fn into_response(self) -> Response {
        error(StatusCode::UNPROCESSABLE_ENTITY, self.field, self.message)
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

impl GeoRequest {
    fn validate(self) -> Result<crate::search::GeoQuery, FieldError> {
        use crate::search::GeoQuery;
        Ok(match self {
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
                let b = crate::engine::geo::BBox {
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
}

/// Shard search (internal; the public API is query-api's). Geo only so far.
async fn search(
    State(s): State<HttpState>,
    body: Result<Json<SearchRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "body", e.body_text()),
    };
    let Some(ix) = s.indexes.iter().find(|i| i.name == req.index) else {
        return error(
            StatusCode::NOT_FOUND,
            "index",
            format!("unknown index {:?}", req.index),
        );
    };
    if req.limit == 0 || req.limit > MAX_HITS {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
            format!("limit must be in 1..={MAX_HITS}"),
        );
    }
    enum Query {
        Geo(crate::search::GeoQuery),
        Vector(crate::search::VectorQuery),
    }
    let query = match (req.geo, req.vector) {
        (None, None) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "geo",
                "a geo or vector query is required (text search is not built yet)",
            );
        }
        (Some(geo), None) => {
            if ix.geo.is_none() {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "geo",
                    format!("index {:?} has no geo field", ix.name),
                );
            }
            match geo.validate() {
                Ok(q) => Query::Geo(q),
                Err(e) => return e.into_response(),
            }
        }
        (geo, Some(v)) => {
            let Some(spec) = ix.vector else {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "vector",
                    format!("index {:?} has no vector field", ix.name),
                );
            };
            if v.values.len() != spec.dimension {
                let msg = format!(
                    "the vector has {} dimensions, index {:?} has {}",
                    v.values.len(),
                    ix.name,
                    spec.dimension
                );
                return error(StatusCode::UNPROCESSABLE_ENTITY, "vector.values", msg);
            }
            if v.k == 0 || v.k > MAX_K {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "vector.k",
                    format!("k must be in 1..={MAX_K}"),
                );
            }
            if v.values.iter().any(|x| !x.is_finite()) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "vector.values",
                    "values must be finite numbers",
                );
            }
            if v.ef.is_some_and(|ef| ef == 0 || ef > 10 * MAX_K) {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "vector.ef",
                    format!("ef must be in 1..={}", 10 * MAX_K),
                );
            }
            // A geo part beside a vector filters it: within a radius or a box.
            let filter = match geo {
                None => None,
                Some(g) => {
                    if ix.geo.is_none() {
                        return error(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "geo",
                            format!("index {:?} has no geo field", ix.name),
                        );
                    }
                    match g.validate() {
                        Ok(crate::search::GeoQuery::Nearest { .. }) => {
                            return error(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "geo.nearest",
                                "nearest cannot filter a vector query: use within or bbox",
                            );
                        }
                        Ok(q) => Some(q),
                        Err(e) => return e.into_response(),
                    }
                }
            };
            Query::Vector(crate::search::VectorQuery {
                values: v.values,
                k: v.k.min(req.limit),
                ef: v.ef,
                exact: v.exact,
                filter,
            })
        }
    };
    let Some(view) = s.view.load() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "", "not ready");
    };
    let scope = crate::search::Scope {
        index: ix.ordinal,
        regions: req.regions,
    };
    let limit = req.limit;
    let result = tokio::task::spawn_blocking(move || {
        let hits: Vec<Value> = match &query {
            Query::Geo(q) => crate::search::geo(&view, &scope, q, limit)
                .iter()
                .map(|h| json!({"key": h.key, "region": h.region, "distance_m": h.distance_m}))
                .collect(),
            Query::Vector(q) => crate::search::vector(&view, &scope, q)
                .iter()
                .map(|h| json!({"key": h.key, "region": h.region, "score": h.score}))
                .collect(),
        };
        json!({"applied_lsn": view.applied.to_string(), "hits": hits})
    })
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "search task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "", "internal error")
        }
    }
}
