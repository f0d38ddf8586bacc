//! query-api: the stateless public REST tier. It authenticates and limits callers, routes each
//! search to the indexer shards owning its regions (in parallel, with a deadline), merges their
//! answers into one global order, and tells the caller how fresh the answer is — waiting, when
//! asked, until its own write (`consistency.min_lsn`) is searchable. Any replica can answer any
//! request: the only state is per-process rate-limit buckets.

pub mod config;
mod openapi;
mod search;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::config::{Config, Scope};

pub use wire::MAX_HITS;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    http: reqwest::Client,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    inflight: tokio::sync::Semaphore,
    prometheus: Option<PrometheusHandle>,
}

impl AppState {
    pub fn new(config: Config, prometheus: Option<PrometheusHandle>) -> AppState {
        let inflight = tokio::sync::Semaphore::new(config.limits.max_concurrent_requests);
        AppState {
            inner: Arc::new(Inner {
                config,
                http: reqwest::Client::builder()
                    .pool_idle_timeout(Duration::from_secs(30))
                    .build()
                    .expect("http client"),
                buckets: Mutex::new(HashMap::new()),
                inflight,
                prometheus,
            }),
        }
    }
}

/// An error answer: status, a stable code, the request field at fault (if any), a message,
/// and optional extra members (e.g. freshness). Internal details are logged, never sent.
#[derive(Debug)]
pub struct ApiError(Box<ErrorBody>);

#[derive(Debug)]
struct ErrorBody {
    status: StatusCode,
    code: &'static str,
    field: String,
    message: String,
    extra: Option<(String, Value)>,
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(
        status: StatusCode,
        code: &'static str,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        ApiError(Box::new(ErrorBody {
            status,
            code,
            field: field.to_owned(),
            message: message.into(),
            extra: None,
            retry_after: None,
        }))
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", field, message)
    }

    fn with(mut self, name: &str, v: Value) -> Self {
        self.0.extra = Some((name.to_owned(), v));
        self
    }

    fn retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = *self.0;
        let mut body = json!({"error": {"code": e.code, "field": e.field, "message": e.message}});
        if let Some((k, v)) = e.extra {
            body[k] = v;
        }
        let mut resp = (e.status, Json(body)).into_response();
        if let Some(s) = e.retry_after {
            resp.headers_mut()
                .insert("retry-after", HeaderValue::from(s));
        }
        resp
    }
}

pub fn router(state: AppState) -> Router {
    let limits = state.inner.config.limits.clone();
    let cors = {
        let origins = &state.inner.config.cors.allow_origins;
        let layer = tower_http::cors::CorsLayer::new()
            .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::AUTHORIZATION,
                axum::http::HeaderName::from_static("x-api-key"),
            ]);
        if origins.iter().any(|o| o == "*") {
            layer.allow_origin(tower_http::cors::Any)
        } else {
            layer.allow_origin(
                origins
                    .iter()
                    .filter_map(|o| o.parse::<HeaderValue>().ok())
                    .collect::<Vec<_>>(),
            )
        }
    };
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/status", get(status))
        .route("/v1/indexes", get(indexes))
        .route(
            "/v1/indexes/{index}/search",
            post(search::search_post).get(search::search_get),
        )
        .route("/v1/indexes/{index}/documents/{id}", get(document))
        .route("/v1/indexes/{index}/changes", get(changes))
        .route("/openapi.json", get(openapi::serve))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "", "no such route")
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(limits.request_timeout_ms),
        ))
        .layer(axum::extract::DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(cors)
        .with_state(state)
}

/// Every request: bounded concurrency (503 when saturated) and metrics by route and status.
async fn guard(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let resp = match s.inner.inflight.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "",
            "too many requests in flight; retry shortly",
        )
        .retry_after(1)
        .into_response(),
    };
    let status = resp.status().as_u16().to_string();
    metrics::counter!("query_api_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("query_api_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// Checks the caller's key (constant-time against every configured key) and scope, then its
/// rate bucket. Without configured keys (`auth.open`), buckets are per client address.
fn authorize(
    s: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    need: Scope,
) -> Result<(), ApiError> {
    let cfg = &s.inner.config;
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let bucket = if cfg.auth.keys.is_empty() {
        peer.map(|p| p.ip().to_string()).unwrap_or_default()
    } else {
        let Some(presented) = presented else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "authorization",
                "an API key is required (Authorization: Bearer <key>, or X-API-Key)",
            ));
        };
        let mut found: Option<Scope> = None;
        for k in &cfg.auth.keys {
            if bool::from(k.key.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(k.scope);
            }
        }
        match found {
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "authorization",
                    "unknown API key",
                ))
            }
            Some(Scope::Read) if need == Scope::Admin => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "authorization",
                    "this key has read scope; the route needs admin",
                ))
            }
            Some(_) => presented.to_owned(),
        }
    };
    let (rate, burst) = (cfg.limits.rate_per_sec, cfg.limits.burst);
    let mut buckets = s.inner.buckets.lock().unwrap();
    let now = Instant::now();
    let (tokens, last) = buckets.entry(bucket).or_insert((burst, now));
    *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
    *last = now;
    if *tokens < 1.0 {
        let wait = ((1.0 - *tokens) / rate).ceil().max(1.0) as u64;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "",
            format!("rate limit of {rate} requests/s exceeded"),
        )
        .retry_after(wait));
    }
    *tokens -= 1.0;
    Ok(())
}

/// An LSN `X/Y` as a number, for comparisons (parsed by `wire::Lsn`).
pub fn parse_lsn(s: &str) -> Option<u64> {
    s.parse::<wire::Lsn>().ok().map(|l| l.0)
}

fn format_lsn(v: u64) -> String {
    wire::Lsn(v).to_string()
}

/// The shards a request touches, each with the regions asked of it (empty: all it owns).
fn route(cfg: &Config, regions: &[String]) -> Result<Vec<(usize, Vec<String>)>, ApiError> {
    if regions.is_empty() {
        return Ok((0..cfg.shards.len()).map(|i| (i, Vec::new())).collect());
    }
    let catch_all = cfg.shards.iter().position(|s| s.regions.is_empty());
    let mut by_shard: Vec<(usize, Vec<String>)> = Vec::new();
    for r in regions {
        let owner = cfg
            .shards
            .iter()
            .position(|s| s.regions.iter().any(|x| x == r))
            .or(catch_all)
            .ok_or_else(|| ApiError::invalid("regions", format!("no shard serves region {r:?}")))?;
        match by_shard.iter_mut().find(|(i, _)| *i == owner) {
            Some((_, rs)) => rs.push(r.clone()),
            None => by_shard.push((owner, vec![r.clone()])),
        }
    }
    Ok(by_shard)
}

/// Each shard's `/status`, or why it is unreachable.
async fn shard_statuses(s: &AppState) -> Vec<(String, Result<Value, String>)> {
    let cfg = &s.inner.config;
    let calls = cfg.shards.iter().map(|sh| {
        let http = s.inner.http.clone();
        let url = sh.url.clone();
        async move {
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                http.get(format!("{url}/status")).send(),
            )
            .await;
            let v = match r {
                Ok(Ok(resp)) if resp.status().is_success() => {
                    resp.json::<Value>().await.map_err(|e| e.to_string())
                }
                Ok(Ok(resp)) => Err(format!("status {}", resp.status())),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timed out".into()),
            };
            (url, v)
        }
    });
    futures_util::future::join_all(calls).await
}

fn shard_ready(v: &Value) -> bool {
    let snap = v["snapshot"]["state"].as_str().unwrap_or("");
    (snap == "done" || snap == "resumed") && v["stream"] == "streaming"
}

/// `GET /`: the search page (plain HTML and JS, nothing fetched from elsewhere): search box,
/// region selector, hits with highlighted snippets and distances, a world plot to search near
/// a point, and a freshness badge following the change stream.
async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../assets/index.html"))
}

/// `GET /healthz`: the process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", content_type = "text/plain", body = String)))]
async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: 200 once every shard is reachable, snapshotted and streaming.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready", body = Object), (status = 503, description = "Not ready; per shard why", body = Object)))]

async fn readyz(State(s): State<AppState>) -> Response {
    let statuses = shard_statuses(&s).await;
    let shards: Vec<Value> = statuses
        .iter()
        .map(|(url, v)| match v {
            Ok(v) => json!({"shard": url, "reachable": true, "ready": shard_ready(v)}),
            Err(_) => json!({"shard": url, "reachable": false, "ready": false}),
        })
        .collect();
    let ready = statuses
        .iter()
        .all(|(_, v)| v.as_ref().is_ok_and(shard_ready));
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
        (status = 200, description = "Per shard: reachable, slot, lag; per partition: LSN, lag, documents, rejected rows", body = Object),
        (status = 401, description = "No or unknown API key", body = wire::ErrorResponse),
        (status = 429, description = "Rate limited (see Retry-After)", body = wire::ErrorResponse),
        (status = 403, description = "Key lacks admin scope", body = wire::ErrorResponse),
    ),
    security((), ("api_key" = []), ("bearer" = [])))]
async fn status(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Some(peer), Scope::Admin)?;
    let statuses = shard_statuses(&s).await;
    let shards: Vec<Value> = statuses
        .into_iter()
        .map(|(url, v)| match v {
            Ok(v) => json!({
                "shard": url, "reachable": true, "ready": shard_ready(&v),
                "slot": v["slot"], "slot_wal_status": v["slot_status"]["wal_status"],
                "applied_lsn": v["applied_lsn"], "lag_bytes": v["lag_bytes"], "lag_ms": v["lag_ms"],
                "rejected_rows": v["rejected_rows"],
                "partitions": v["partitions"].as_array().map(|ps| ps.iter().map(|p| json!({
                    "index": p["index"], "region": p["region"], "documents": p["documents"],
                    "applied_lsn": p["applied_lsn"], "lag_bytes": p["lag_bytes"], "lag_ms": p["lag_ms"],
                    "rejected_rows": p["rejected_rows"],
                })).collect::<Vec<_>>()),
            }),
            Err(e) => {
                tracing::warn!(shard = %url, error = %e, "shard status failed");
                json!({"shard": url, "reachable": false})
            }
        })
        .collect();
    Ok(Json(json!({"shards": shards})))
}

/// `GET /v1/indexes`: each index with its partitions (shard, region, documents, LSN, lag).
#[utoipa::path(get, path = "/v1/indexes", tag = "operations",
    responses(
        (status = 200, description = "Indexes and their partitions", body = Object),
        (status = 401, description = "No or unknown API key", body = wire::ErrorResponse),
        (status = 429, description = "Rate limited (see Retry-After)", body = wire::ErrorResponse),
    ),
    security((), ("api_key" = []), ("bearer" = [])))]
async fn indexes(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Some(peer), Scope::Read)?;
    let mut by_index: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
    for (url, v) in shard_statuses(&s).await {
        let Ok(v) = v else { continue };
        for p in v["partitions"].as_array().into_iter().flatten() {
            by_index
                .entry(p["index"].as_str().unwrap_or_default().to_owned())
                .or_default()
                .push(
                    json!({"shard": url, "region": p["region"], "documents": p["documents"],
                             "applied_lsn": p["applied_lsn"], "lag_ms": p["lag_ms"]}),
                );
        }
    }
    let list: Vec<Value> = by_index
        .into_iter()
        .map(|(name, partitions)| json!({"name": name, "partitions": partitions}))
        .collect();
    Ok(Json(json!({"indexes": list})))
}

/// `GET /v1/indexes/{index}/documents/{id}`: one document's stored fields by primary key.
#[utoipa::path(get, path = "/v1/indexes/{index}/documents/{id}", tag = "documents",
    params(("index" = String, Path), ("id" = String, Path, description = "Primary key, as text")),
    responses(
        (status = 200, description = "The document: key, region, fields", body = Object),
        (status = 404, description = "No such index or document", body = wire::ErrorResponse),
        (status = 503, description = "A shard did not answer", body = wire::ErrorResponse),
        (status = 401, description = "No or unknown API key", body = wire::ErrorResponse),
        (status = 429, description = "Rate limited (see Retry-After)", body = wire::ErrorResponse),
    ),
    security((), ("api_key" = []), ("bearer" = [])))]
async fn document(
    State(s): State<AppState>,
    Path((index, id)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Some(peer), Scope::Read)?;
    let cfg = &s.inner.config;
    let calls = cfg.shards.iter().map(|sh| {
        let http = s.inner.http.clone();
        let url = format!("{}/internal/documents/{index}/{id}", sh.url);
        async move {
            match tokio::time::timeout(Duration::from_secs(5), http.get(url).send()).await {
                Ok(Ok(resp)) => Some((resp.status(), resp.json::<Value>().await.ok()?)),
                _ => None,
            }
        }
    });
    let results = futures_util::future::join_all(calls).await;
    let mut unreachable = false;
    for r in results {
        match r {
            Some((status, v)) if status.is_success() => return Ok(Json(v)),
            Some((status, v))
                if status == StatusCode::NOT_FOUND && v["error"]["field"] == "index" =>
            {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "index",
                    format!("unknown index {index:?}"),
                ))
            }
            Some(_) => {}
            None => unreachable = true,
        }
    }
    if unreachable {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shards_unavailable",
            "",
            "a shard did not answer: the document may be there",
        ));
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "id",
        format!("no document {id:?} in index {index:?}"),
    ))
}

/// Per-shard positions of a change stream, as one opaque SSE id: `0=LSN:n;1=LSN:n`.
fn parse_cursor(text: &str, shards: usize) -> Option<Vec<Option<String>>> {
    let mut out = vec![None; shards];
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (i, pos) = part.split_once('=')?;
        let i: usize = i.parse().ok()?;
        let (lsn, _) = pos.split_once(':').unwrap_or((pos, ""));
        parse_lsn(lsn)?;
        *out.get_mut(i)? = Some(pos.to_owned());
    }
    Some(out)
}

fn cursor(positions: &[Option<String>]) -> String {
    positions
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.as_ref().map(|p| format!("{i}={p}")))
        .collect::<Vec<_>>()
        .join(";")
}

/// One server-sent event as the shards send it.
struct ShardEvent {
    shard: usize,
    id: String,
    event: String,
    data: String,
}

/// `GET /v1/indexes/{index}/changes?since_lsn=X/Y`: every applied change (key, op, region,
/// LSN) once it is searchable, as server-sent events, merged from every shard (each shard's
/// changes in LSN order). The event id is a cursor of per-shard positions: reconnecting with
/// it as `Last-Event-ID` resumes every shard exactly where it stopped — no gaps, no repeats.
#[utoipa::path(get, path = "/v1/indexes/{index}/changes", tag = "documents",
    params(("index" = String, Path),
        ("since_lsn" = Option<String>, Query, description = "Start after this LSN (default: now)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "Server-sent events: `change` events with key, op, region, lsn", content_type = "text/event-stream", body = String),
        (status = 404, description = "Unknown index", body = wire::ErrorResponse),
        (status = 410, description = "The position is older than the feed keeps: re-sync", body = wire::ErrorResponse),
        (status = 422, description = "Malformed since_lsn or Last-Event-ID", body = wire::ErrorResponse),
        (status = 401, description = "No or unknown API key", body = wire::ErrorResponse),
        (status = 429, description = "Rate limited (see Retry-After)", body = wire::ErrorResponse),
    ),
    security((), ("api_key" = []), ("bearer" = [])))]
async fn changes(
    State(s): State<AppState>,
    Path(index): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    authorize(&s, &headers, Some(peer), Scope::Read)?;
    let n = s.inner.config.shards.len();
    if let Some(k) = params.keys().find(|k| *k != "since_lsn") {
        return Err(ApiError::invalid(k, "unknown parameter (since_lsn)"));
    }
    let mut positions: Vec<Option<String>> = vec![None; n];
    if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        positions = parse_cursor(id, n)
            .ok_or_else(|| ApiError::invalid("last-event-id", "not a cursor this API gave"))?;
    } else if let Some(lsn) = params.get("since_lsn") {
        let v = parse_lsn(lsn)
            .ok_or_else(|| ApiError::invalid("since_lsn", format!("{lsn:?} is not an LSN")))?;
        positions = vec![Some(format_lsn(v)); n];
    }
    // Open every shard's feed first, so errors (unknown index, too old) are answered plainly.
    let mut bodies = Vec::new();
    for (i, sh) in s.inner.config.shards.iter().enumerate() {
        let mut url = format!("{}/internal/changes/{index}", sh.url);
        if let Some(p) = &positions[i] {
            url.push_str(&format!("?since={p}"));
        }
        let resp = tokio::time::timeout(
            Duration::from_millis(s.inner.config.limits.shard_timeout_ms),
            s.inner.http.get(url).send(),
        )
        .await;
        let resp = match resp {
            Ok(Ok(r)) => r,
            _ => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shards_unavailable",
                    "",
                    "a shard's change feed did not answer",
                ))
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let v: Value = resp.json().await.unwrap_or(Value::Null);
            let code = match status.as_u16() {
                404 => "not_found",
                410 => "gone",
                _ => "invalid",
            };
            let mut e = ApiError::new(
                StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                code,
                if status == StatusCode::GONE {
                    "since_lsn"
                } else {
                    v["error"]["field"].as_str().unwrap_or("")
                },
                v["error"]["message"]
                    .as_str()
                    .unwrap_or("change feed error"),
            );
            if let Some(c) = v.get("complete_after") {
                e = e.with("complete_after", c.clone());
            }
            return Err(e);
        }
        bodies.push((i, resp));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Option<ShardEvent>>(1024);
    for (i, resp) in bodies {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut bytes = resp.bytes_stream();
            let mut buf = String::new();
            while let Some(Ok(chunk)) = bytes.next().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let (mut id, mut event, mut data) =
                        (String::new(), String::new(), String::new());
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("id:") {
                            id = v.trim_start().to_owned();
                        } else if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim_start().to_owned();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data = v.trim_start().to_owned();
                        }
                    }
                    if id.is_empty() {
                        continue; // keep-alive comment
                    }
                    let ev = ShardEvent {
                        shard: i,
                        id,
                        event,
                        data,
                    };
                    if tx.send(Some(ev)).await.is_err() {
                        return;
                    }
                }
            }
            // The shard's feed ended: end the client's too (it resumes with its cursor).
            let _ = tx.send(None).await;
        });
    }
    drop(tx);
    // Changes are held back until every shard has said where it starts, so every cursor
    // sent names a position for every shard.
    struct Merge {
        rx: tokio::sync::mpsc::Receiver<Option<ShardEvent>>,
        positions: Vec<Option<String>>,
        started: Vec<bool>,
        held: std::collections::VecDeque<ShardEvent>,
        ready: bool,
    }
    let merge = Merge {
        rx,
        positions,
        started: vec![false; n],
        held: Default::default(),
        ready: false,
    };
    let stream = futures_util::stream::unfold(merge, |mut m| async move {
        loop {
            let ev = match (m.ready, m.held.pop_front()) {
                (true, Some(ev)) => ev,
                (_, held) => {
                    if let Some(h) = held {
                        m.held.push_front(h);
                    }
                    let ev = m.rx.recv().await.flatten()?;
                    if ev.event == "start" {
                        m.positions[ev.shard] = Some(ev.id);
                        m.started[ev.shard] = true;
                        if !m.ready && m.started.iter().all(|s| *s) {
                            m.ready = true;
                            let e = Event::default()
                                .id(cursor(&m.positions))
                                .event("start")
                                .data("{}");
                            return Some((Ok::<_, std::convert::Infallible>(e), m));
                        }
                        continue;
                    }
                    if !m.ready {
                        m.held.push_back(ev);
                        continue;
                    }
                    ev
                }
            };
            m.positions[ev.shard] = Some(ev.id.clone());
            let e = Event::default()
                .id(cursor(&m.positions))
                .event(ev.event)
                .data(ev.data);
            return Some((Ok(e), m));
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus metrics", content_type = "text/plain", body = String)))]
async fn metrics_text(State(s): State<AppState>) -> Response {
    match &s.inner.prometheus {
        Some(h) => {
            // Per shard and partition, as of this scrape: reachable, documents, lag, rejects.
            for (url, v) in shard_statuses(&s).await {
                let up = v.is_ok();
                metrics::gauge!("query_api_shard_up", "shard" => url.clone())
                    .set(f64::from(u8::from(up)));
                let Ok(v) = v else { continue };
                for p in v["partitions"].as_array().into_iter().flatten() {
                    let labels = [
                        ("shard", url.clone()),
                        ("index", p["index"].as_str().unwrap_or_default().to_owned()),
                        (
                            "region",
                            p["region"].as_str().unwrap_or_default().to_owned(),
                        ),
                    ];
                    let num = |k: &str| p[k].as_f64().unwrap_or(0.0);
                    metrics::gauge!("query_api_partition_documents", &labels).set(num("documents"));
                    metrics::gauge!("query_api_partition_lag_ms", &labels).set(num("lag_ms"));
                    metrics::gauge!("query_api_partition_lag_bytes", &labels).set(num("lag_bytes"));
                    metrics::gauge!("query_api_partition_rejected_rows", &labels)
                        .set(num("rejected_rows"));
                }
            }
            h.render().into_response()
        }
        None => (StatusCode::NOT_FOUND, "metrics are off").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_parse_and_print() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(format_lsn(0x1_0000_00FF), "1/FF");
        assert_eq!(parse_lsn("16B3748"), None);
        assert_eq!(parse_lsn("0/XYZ"), None);
        assert_eq!(parse_lsn("/1"), None);
    }

    #[test]
    fn routing_groups_regions_by_shard() {
        let cfg = Config::parse(
            "[[shard]]\nurl = \"http://a\"\nregions = [\"europe\", \"asia\"]\n[[shard]]\nurl = \"http://b\"\nregions = [\"africa\"]\n[auth]\nopen = true\n",
        )
        .unwrap();
        assert_eq!(
            route(&cfg, &["asia".into(), "africa".into(), "europe".into()]).unwrap(),
            vec![
                (0, vec!["asia".to_owned(), "europe".to_owned()]),
                (1, vec!["africa".to_owned()])
            ]
        );
        assert_eq!(route(&cfg, &[]).unwrap().len(), 2);
        let e = route(&cfg, &["oceania".into()]).unwrap_err();
        assert_eq!(e.0.field, "regions");
    }
}
