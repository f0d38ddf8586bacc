//! query-api: the stateless public REST tier. It authenticates and limits callers, routes each
//! search to the indexer shards owning its regions (in parallel, with a deadline), merges their
//! answers into one global order, and tells the caller how fresh the answer is — waiting, when
//! asked, until its own write (`consistency.min_lsn`) is searchable. Any replica can answer any
//! request: the only state is per-process rate-limit buckets.
//!
//! `lib.rs` holds the state and the router; `auth` the keys and rate buckets; `admission`
//! what each client may hold at once (requests, waits, streams); `shards` the
//! routing by region and the typed shard client, `link` the connection searches and
//! documents travel on; `merge` the global order; `cursor` the
//! opaque cursors; `routes/` one file per public resource; `error` the error answer.

mod admission;
mod auth;
pub mod config;
mod cursor;
mod error;
mod link;
mod merge;
mod openapi;
mod routes;
mod scope;
mod shards;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
pub use crate::error::ApiError;
use crate::routes::{changes, documents, search, status};

pub use wire::MAX_HITS;

/// Per shard, in config order: reachable, ready.
type Readiness = Vec<(bool, bool)>;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    http: reqwest::Client,
    /// Each shard's search URL, parsed once (parsing it per request was 2% of the CPU of a
    /// text load); None when the configured URL does not parse.
    search_urls: Vec<Option<reqwest::Url>>,
    /// Each shard's link (`wire::link`): searches and documents.
    links: Vec<Option<link::Link>>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    inflight: tokio::sync::Semaphore,
    /// Requests in flight per client; searches waiting for `min_lsn`; open change streams.
    in_flight: Arc<admission::Pool>,
    waits: Arc<admission::Pool>,
    streams: Arc<admission::Pool>,
    /// The last readiness answer and when it was taken.
    readiness: Mutex<Option<(Instant, Readiness)>>,
    prometheus: Option<PrometheusHandle>,
}

impl AppState {
    /// The state for `config`; an error when its shard TLS settings cannot be used.
    pub fn new(config: Config, prometheus: Option<PrometheusHandle>) -> Result<AppState, String> {
        let l = &config.limits;
        let inflight = tokio::sync::Semaphore::new(l.max_concurrent_requests);
        let in_flight = admission::Pool::new(
            "requests in flight",
            "",
            "too_many_requests_in_flight",
            l.max_concurrent_requests,
            l.max_concurrent_per_client,
        );
        let waits = admission::Pool::new(
            "searches waiting for their min_lsn",
            "consistency.min_lsn",
            "too_many_waits",
            l.max_waits,
            l.max_waits_per_client,
        );
        let streams = admission::Pool::new(
            "change streams",
            "",
            "too_many_streams",
            l.max_streams,
            l.max_streams_per_client,
        );
        let search_urls: Vec<Option<reqwest::Url>> = config
            .shards
            .iter()
            .map(|s| reqwest::Url::parse(&format!("{}{}", s.url, wire::shard::path::SEARCH)).ok())
            .collect();
        // The shard secret goes with every call: a default header, and the link's upgrade.
        let authorization = config.shard_secret.as_ref().map(|s| {
            let mut v =
                HeaderValue::try_from(s.header_value()).expect("a secret is printable ASCII");
            v.set_sensitive(true);
            v
        });
        let shard_tls = config.shard_tls()?;
        let connector = shard_tls
            .clone()
            .map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)));
        let links = search_urls
            .iter()
            .map(|u| {
                u.as_ref()
                    .and_then(|u| link::Link::new(u, authorization.clone(), connector.clone()))
            })
            .collect();
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(v) = authorization {
            headers.insert(axum::http::header::AUTHORIZATION, v);
        }
        let mut http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(30))
            .default_headers(headers);
        if let Some(tls) = shard_tls {
            http = http.tls_backend_preconfigured(tls);
        }
        let http = http
            .build()
            .map_err(|e| format!("shard http client: {e}"))?;
        Ok(AppState {
            inner: Arc::new(Inner {
                config,
                search_urls,
                links,
                http,
                buckets: Mutex::new(HashMap::new()),
                inflight,
                in_flight,
                waits,
                streams,
                readiness: Mutex::new(None),
                prometheus,
            }),
        })
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
        .route("/", get(status::page))
        .route("/land-110m.json", get(status::land))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(status::metrics_text))
        .route("/v1/status", get(status::status))
        .route("/v1/indexes", get(status::indexes))
        .route(
            "/v1/indexes/{index}/search",
            post(search::search_post).get(search::search_get),
        )
        .route(
            "/v1/indexes/{index}/documents/{id}",
            get(documents::document),
        )
        .route("/v1/indexes/{index}/changes", get(changes::changes))
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
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(state)
}

/// Every error answer is the JSON error shape, whoever made it: answers of axum's own
/// extractors and routing (a path that is not UTF-8, a 405) and of the timeout layer come as
/// plain text or empty, and are rewritten here with their message.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let (code, field) = match status {
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method"),
        StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => ("timeout", ""),
        StatusCode::PAYLOAD_TOO_LARGE => ("bad_body", "body"),
        StatusCode::NOT_FOUND => ("not_found", ""),
        _ if text.starts_with("Invalid URL") => ("bad_path", "path"),
        _ if text.starts_with("Failed to deserialize query string") => ("bad_query", "query"),
        s if s.is_server_error() => ("internal", ""),
        _ => ("bad_request", ""),
    };
    let message = match (text.is_empty() || status.is_server_error(), status) {
        (false, _) => text,
        (true, StatusCode::METHOD_NOT_ALLOWED) => "this route does not take that method".to_owned(),
        (true, StatusCode::GATEWAY_TIMEOUT) => {
            "the request took longer than its deadline".to_owned()
        }
        (true, s) => s.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    ApiError::new(status, code, field, message).into_response()
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
