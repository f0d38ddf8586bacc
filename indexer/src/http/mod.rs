//! The shard's internal HTTP endpoint, spoken with query-api (and `verify`) in the `wire`
//! crate's shard protocol: search (`search.rs`, planned by `plan.rs`), the change feed
//! (`feed.rs`), and health, status, metrics, wait-for-LSN, documents and the per-key dump
//! (`admin.rs`); searches and documents also on the shard link (`link.rs`, one connection
//! carrying many calls). Answers are built here from domain types; searches and document
//! lookups run on the reads pool (`reads.rs`), other engine work on the blocking pool.

mod admin;
mod feed;
mod link;
mod plan;
mod reads;
mod scope;
mod search;
mod wal;

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::value::RawValue;

use crate::catalog::ResolvedIndex;
use crate::status::Stats;
use engine::partition::Fields;
use engine::shard::ViewCell;

#[derive(Clone)]
pub struct HttpState {
    stats: Arc<Stats>,
    view: Arc<ViewCell>,
    indexes: Arc<Vec<ResolvedIndex>>,
    /// Per index (by ordinal): its tantivy fields, built once.
    fields: Arc<Vec<Fields>>,
    slot: String,
    /// What callers must present, when set (`wire::shard::Secret`).
    secret: Option<Arc<wire::shard::Secret>>,
    prometheus: Option<PrometheusHandle>,
    /// The server's WAL position, for feeds asked from beyond it.
    wal: Arc<wal::WalClock>,
    /// Where searches and document lookups run.
    reads: Arc<reads::Reads>,
}

impl HttpState {
    pub fn new(
        stats: Arc<Stats>,
        view: Arc<ViewCell>,
        indexes: Vec<ResolvedIndex>,
        slot: String,
        secret: Option<wire::shard::Secret>,
        prometheus: Option<PrometheusHandle>,
        conn: crate::pg::PgConn,
    ) -> HttpState {
        let fields = indexes.iter().map(|ix| Fields::schema(ix).1).collect();
        HttpState {
            stats,
            view,
            indexes: Arc::new(indexes),
            fields: Arc::new(fields),
            slot,
            secret: secret.map(Arc::new),
            prometheus,
            wal: Arc::new(wal::WalClock::new(conn)),
            reads: Arc::new(reads::Reads::new()),
        }
    }

    /// The current read view and the LSN it answers for: at least the view's own, and at least
    /// what the shard reported applied before the view was taken. The latter can be ahead: an
    /// idle keepalive advances it once everything forwarded is searchable, without a new view
    /// (answers then said less than the `/internal/wait` that preceded them).
    fn view(&self) -> Option<(Arc<engine::shard::ShardView>, wire::Lsn)> {
        let floor = self.stats.applied();
        let view = self.view.load()?;
        let applied = view.applied.max(floor);
        Some((view, applied))
    }

    /// The index of that name, or a 404 naming the field.
    fn index(&self, name: &str) -> Result<&ResolvedIndex, Refusal> {
        self.indexes
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| Refusal {
                status: StatusCode::NOT_FOUND,
                field: "index",
                message: format!("unknown index {name:?}"),
            })
    }
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/status", get(admin::status))
        .route("/metrics", get(admin::metrics_text))
        .route("/internal/wait", get(admin::wait))
        .route("/internal/dump", get(admin::dump))
        .route("/internal/search", post(search::search))
        .route("/internal/document", get(admin::document))
        .route(wire::link::PATH, get(link::upgrade))
        .route("/internal/changes", get(feed::changes))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_secret,
        ))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
}

/// Every route but `/healthz` requires the shard secret, when one is configured: a 401 naming
/// the `authorization` header otherwise.
async fn require_secret(
    axum::extract::State(s): axum::extract::State<HttpState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(secret) = &s.secret {
        let presented = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !secret.admits(presented) {
            return error(
                StatusCode::UNAUTHORIZED,
                "authorization",
                "this shard requires its secret (Authorization: Bearer <shard secret>)",
            );
        }
    }
    next.run(req).await
}

/// A query string of the shard protocol (`wire::shard::path`), or a 400 naming it.
type Params<T> = Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>;

fn params<T>(p: Params<T>) -> Result<T, Refusal> {
    p.map(|q| q.0).map_err(|e| Refusal {
        status: StatusCode::BAD_REQUEST,
        field: "query",
        message: e.body_text(),
    })
}

/// A refused request: its status, the field at fault and why.
struct Refusal {
    status: StatusCode,
    field: &'static str,
    message: String,
}

impl From<Refusal> for Answer {
    fn from(r: Refusal) -> Answer {
        Answer::error(r.status, r.field, r.message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        Answer::from(self).into_response()
    }
}

/// An answer of the shard protocol, whichever transport carries it (an HTTP response or a
/// frame on the shard link): a status and a JSON body.
pub(crate) struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: serde::Serialize>(value: &T) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: serde_json::to_vec(value).expect("answers serialize"),
        }
    }

    /// An error answer (`wire::shard::ShardError`): the field at fault and a message.
    fn error(status: StatusCode, field: &str, message: impl Into<String>) -> Answer {
        Answer {
            status,
            body: serde_json::to_vec(&wire::shard::ShardError::new(field, message))
                .expect("errors serialize"),
        }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let json = [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )];
        (self.status, json, self.body).into_response()
    }
}

/// An error answer as an HTTP response.
fn error(status: StatusCode, field: &str, message: impl Into<String>) -> Response {
    Answer::error(status, field, message).into_response()
}

/// A bare 500: no internal detail in bodies (the cause is logged).
fn internal() -> Answer {
    Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "", "internal error")
}

/// Runs engine work on the blocking pool; a failure is logged and becomes a bare 500 (no
/// internal detail in bodies).
pub(super) async fn run_blocking<T, E, F>(what: &'static str, work: F) -> Result<T, Answer>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "{what} failed");
            Err(internal())
        }
        Err(e) => {
            tracing::error!(error = %e, "{what} task failed");
            Err(internal())
        }
    }
}

/// `run_blocking`, answered as JSON.
async fn blocking<T, E, F>(what: &'static str, work: F) -> Response
where
    T: serde::Serialize + Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    match run_blocking(what, work).await {
        Ok(v) => Json(v).into_response(),
        Err(answer) => answer.into_response(),
    }
}

/// The configured stored columns of a row, by name: integers, numbers and booleans as JSON
/// numbers and booleans, dates and times as RFC 3339 strings, the rest as Postgres text.
/// Written straight to JSON (no `Value` map per hit), names in sorted order.
fn fields_json(ix: &ResolvedIndex, row: &[Option<String>]) -> Box<RawValue> {
    serde_json::value::to_raw_value(&StoredFields { ix, row }).expect("fields serialize")
}

struct StoredFields<'a> {
    ix: &'a ResolvedIndex,
    row: &'a [Option<String>],
}

impl serde::Serialize for StoredFields<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use engine::filter::{format_time, FilterValue};
        use serde::ser::SerializeMap;
        let ix = self.ix;
        let mut columns: Vec<(&str, usize)> =
            ix.stored.iter().map(|&c| (ix.column_name(c), c)).collect();
        columns.sort_unstable();
        let mut m = s.serialize_map(Some(columns.len()))?;
        for (name, c) in columns {
            let text = self.row.get(c).and_then(Option::as_deref);
            let kind = ix.value_kinds.get(c).copied().flatten();
            match (text, kind) {
                (None, _) => m.serialize_entry(name, &())?,
                (Some(t), Some(k)) => match k.parse(t) {
                    Ok(FilterValue::Int(i)) => m.serialize_entry(name, &i)?,
                    Ok(FilterValue::Float(x)) => m.serialize_entry(name, &x)?,
                    Ok(FilterValue::Bool(b)) => m.serialize_entry(name, &b)?,
                    Ok(FilterValue::Time(us)) => m.serialize_entry(name, &format_time(us))?,
                    Ok(FilterValue::Text(_)) | Err(_) => m.serialize_entry(name, t)?,
                },
                (Some(t), None) => m.serialize_entry(name, t)?,
            }
        }
        m.end()
    }
}
