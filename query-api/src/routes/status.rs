//! Operations: the search page, liveness, readiness, per-shard status, the index list and
//! Prometheus metrics, all from the shards' typed `/status`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::authorize;
use crate::config::Scope;
use crate::{ApiError, AppState};

/// `GET /`: the search page (plain HTML and JS, nothing fetched from elsewhere): search box,
/// region selector, hits with highlighted snippets and distances, a world plot to search near
/// a point, and a freshness badge following the change stream.
pub(crate) async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../../assets/index.html"))
}

/// `GET /land-110m.json`: the page's map, Natural Earth's land outline (public domain) as
/// TopoJSON from the npm package `world-atlas` (assets/ATTRIBUTION.md).
pub(crate) async fn land() -> impl IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("../../assets/land-110m.json"),
    )
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", content_type = "text/plain", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// How long a readiness answer is reused: `/readyz` needs no key, so its fan-out to every
/// shard is made at most this often however often it is asked.
const READY_FOR: std::time::Duration = std::time::Duration::from_millis(500);

/// `GET /readyz`: 200 once every shard is reachable, snapshotted and streaming. Shards are
/// named by their position in the config (their addresses are for `/v1/status`, admin only).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Object), (status = 503, description = "Not ready; per shard why", body = Object)))]
pub(crate) async fn readyz(State(s): State<AppState>) -> Response {
    let cached = s
        .inner
        .readiness
        .lock()
        .unwrap()
        .as_ref()
        .filter(|(at, _)| at.elapsed() < READY_FOR)
        .map(|(_, r)| r.clone());
    let shards = match cached {
        Some(r) => r,
        None => {
            let r: Vec<(bool, bool)> = s
                .shard_statuses()
                .await
                .iter()
                .map(|(_, v)| (v.is_ok(), v.as_ref().is_ok_and(|v| v.ready())))
                .collect();
            *s.inner.readiness.lock().unwrap() = Some((std::time::Instant::now(), r.clone()));
            r
        }
    };
    let ready = shards.iter().all(|(_, ready)| *ready);
    let shards: Vec<Value> = shards
        .iter()
        .enumerate()
        .map(|(i, (reachable, ready))| json!({"shard": i, "reachable": reachable, "ready": ready}))
        .collect();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!({"ready": ready, "shards": shards}))).into_response()
}

/// `GET /v1/status`: per shard and partition, applied LSN, lag, documents, rejected rows and
/// the replication slot's `wal_status` (admin scope).
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses(
        (status = 200, description = "Per shard: reachable, stream, snapshot, slot, lag; per partition: LSN, lag, documents (fresh ones too), rejected rows, vectors in the graph and still pending", body = Object),
        (status = 401, description = "No or unknown API key", body = wire::ErrorResponse),
        (status = 429, description = "Rate limited (see Retry-After)", body = wire::ErrorResponse),
        (status = 403, description = "Key lacks admin scope", body = wire::ErrorResponse),
    ),
    security((), ("api_key" = []), ("bearer" = [])))]
pub(crate) async fn status(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let _caller = authorize(&s, &headers, Some(peer), Scope::Admin)?;
    let statuses = s.shard_statuses().await;
    let indexes = index_summaries(&statuses);
    let shards: Vec<Value> = statuses
        .into_iter()
        .map(|(url, v)| match v {
            Ok(v) => json!({
                "shard": url, "reachable": true, "ready": v.ready(),
                "slot": v.slot,
                "slot_wal_status": v.slot_status.as_ref().and_then(|s| s.wal_status.clone()),
                "stream": v.stream, "snapshot": v.snapshot.state,
                "applied_lsn": v.applied_lsn, "lag_bytes": v.lag_bytes, "lag_ms": v.lag_ms,
                "last_commit_age_ms": v.last_commit_age_ms,
                "rejected_rows": v.rejected_rows,
                "partitions": v.partitions.iter().map(|p| json!({
                    "index": p.index, "region": p.region, "documents": p.documents,
                    "fresh_documents": p.fresh_documents,
                    "applied_lsn": p.applied_lsn, "lag_bytes": p.lag_bytes, "lag_ms": p.lag_ms,
                    "rejected_rows": p.rejected_rows,
                    // Vector search walks the graph for what it holds and scans the rest
                    // exactly: pending 0 means every vector is in the graph.
                    "graph_points": p.graph_points,
                    "vectors_pending_graph": p.vectors_pending_graph,
                    // An idle graph keeps only its compact searchable copy in memory.
                    "graph_insert_structure_loaded": p.graph_insert_structure_loaded,
                    "segments": p.segments,
                })).collect::<Vec<_>>(),
            }),
            Err(e) => {
                tracing::warn!(shard = %url, error = %e, "shard status failed");
                json!({"shard": url, "reachable": false})
            }
        })
        .collect();
    Ok(Json(json!({"indexes": indexes, "shards": shards})))
}

/// Per index, over the partitions of every shard that answered: documents, the applied LSN
/// every partition has reached, the largest lag, rejected rows, the graph's completion (when
/// the index has vectors) and the snapshot (`done` once every shard has finished it).
fn index_summaries<E>(statuses: &[(String, Result<wire::shard::ShardStatus, E>)]) -> Vec<Value> {
    #[derive(Default)]
    struct Sum {
        documents: u64,
        fresh: u64,
        applied: Option<wire::Lsn>,
        lag_ms: u64,
        rejected: u64,
        graph: Option<(u64, u64)>,
        snapshot: Option<String>,
        copied: u64,
    }
    let mut by_index: std::collections::BTreeMap<&str, Sum> = Default::default();
    let unreachable = statuses.iter().filter(|(_, v)| v.is_err()).count();
    for (_, v) in statuses {
        let Ok(v) = v else { continue };
        for p in &v.partitions {
            let sum = by_index.entry(&p.index).or_default();
            sum.documents += p.documents;
            sum.fresh += p.fresh_documents;
            sum.applied = Some(sum.applied.map_or(p.applied_lsn, |a| a.min(p.applied_lsn)));
            sum.lag_ms = sum.lag_ms.max(p.lag_ms);
            sum.rejected += p.rejected_rows;
            if let (Some(points), Some(pending)) = (p.graph_points, p.vectors_pending_graph) {
                let (a, b) = sum.graph.unwrap_or_default();
                sum.graph = Some((a + points, b + pending));
            }
            if sum.snapshot.as_deref().is_none_or(|s| s == "done") {
                sum.snapshot = Some(v.snapshot.state.clone());
            }
            sum.copied = sum.copied.max(v.snapshot.rows);
        }
    }
    by_index
        .into_iter()
        .map(|(name, s)| {
            json!({
                "name": name, "documents": s.documents, "fresh_documents": s.fresh,
                "applied_lsn": s.applied, "lag_ms": s.lag_ms, "rejected_rows": s.rejected,
                "graph": s.graph.map(|(points, pending)| json!({
                    "points": points, "vectors_pending": pending, "complete": pending == 0,
                })),
                "snapshot": {"state": s.snapshot, "rows_copied": s.copied},
                "shards_unreachable": unreachable,
            })
        })
        .collect()
}

/// `GET /v1/indexes`: each index with its partitions (shard, region, documents, LSN, lag).
#[utoipa::path(get, path = "/v1/indexes", tag = "operations",
    responses(
        (status = 200, description = "Indexes and their partitions", body = Object),
        (status = 401, description = "No or unknown API key", body = wire::ErrorResponse),
        (status = 429, description = "Rate limited (see Retry-After)", body = wire::ErrorResponse),
    ),
    security((), ("api_key" = []), ("bearer" = [])))]
pub(crate) async fn indexes(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&s, &headers, Some(peer), Scope::Read)?;
    let r = &caller.restriction;
    let mut by_index: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for (url, v) in s.shard_statuses().await {
        let Ok(v) = v else { continue };
        for p in v.partitions {
            // A scoped key sees its indexes and regions only, and no counts when filtered
            // (they would count other tenants' documents).
            let region_ok = r.regions.as_ref().is_none_or(|rs| rs.contains(&p.region));
            if !r.shows_index(&p.index) || !region_ok {
                continue;
            }
            let mut part = json!({"shard": url, "region": p.region, "documents": p.documents,
                                  "applied_lsn": p.applied_lsn, "lag_ms": p.lag_ms});
            if r.filter.is_some() {
                part["documents"] = Value::Null;
            }
            by_index.entry(p.index).or_default().push(part);
        }
    }
    let list: Vec<Value> = by_index
        .into_iter()
        .map(|(name, partitions)| json!({"name": name, "partitions": partitions}))
        .collect();
    Ok(Json(json!({"indexes": list})))
}

/// `GET /metrics`: Prometheus text format (admin scope: it names the shards, and each scrape
/// asks every shard for its status).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus metrics", content_type = "text/plain", body = String),
        (status = 401, description = "No or unknown API key", body = wire::ErrorResponse),
        (status = 403, description = "Key lacks admin scope", body = wire::ErrorResponse),
        (status = 429, description = "Rate limited (see Retry-After)", body = wire::ErrorResponse),
    ),
    security((), ("api_key" = []), ("bearer" = [])))]
pub(crate) async fn metrics_text(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let _caller = authorize(&s, &headers, Some(peer), Scope::Admin)?;
    let Some(h) = &s.inner.prometheus else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "",
            "metrics are off",
        ));
    };
    // Per shard and partition, as of this scrape: reachable, documents, lag, rejects.
    for (url, v) in s.shard_statuses().await {
        metrics::gauge!("query_api_shard_up", "shard" => url.clone())
            .set(f64::from(u8::from(v.is_ok())));
        let Ok(v) = v else { continue };
        for p in v.partitions {
            let labels = [
                ("shard", url.clone()),
                ("index", p.index),
                ("region", p.region),
            ];
            metrics::gauge!("query_api_partition_documents", &labels).set(p.documents as f64);
            metrics::gauge!("query_api_partition_lag_ms", &labels).set(p.lag_ms as f64);
            metrics::gauge!("query_api_partition_lag_bytes", &labels).set(p.lag_bytes as f64);
            metrics::gauge!("query_api_partition_rejected_rows", &labels)
                .set(p.rejected_rows as f64);
        }
    }
    Ok(h.render().into_response())
}
