//! `GET /v1/indexes/{index}/documents/{id}`: one document by primary key, from whichever
//! shard holds it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use wire::shard::DocumentResponse;

use crate::auth::authorize;
use crate::config::Scope;
use crate::shards::CallError;
use crate::{ApiError, AppState};

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
pub(crate) async fn document(
    State(s): State<AppState>,
    Path((index, id)): Path<(String, String)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Json<DocumentResponse>, ApiError> {
    let caller = authorize(&s, &headers, Some(peer), Scope::Read)?;
    caller.restriction.check_index(&index)?;
    // A scoped key's regions and filter go with the read: outside them, no such document.
    let scope = caller.restriction.read_scope();
    let calls = (0..s.inner.config.shards.len()).map(|i| s.shard_document(i, &index, &id, &scope));
    let results = futures_util::future::join_all(calls).await;
    let mut unreachable = false;
    for r in results {
        match r {
            Ok(doc) => return Ok(Json(doc)),
            Err(CallError::Rejected { status, error })
                if status == StatusCode::NOT_FOUND && error.error.field == "index" =>
            {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "index",
                    format!("unknown index {index:?}"),
                ))
            }
            Err(CallError::Rejected { .. }) => {}
            Err(e @ CallError::Failed(_)) => {
                tracing::warn!(error = %e, "document lookup failed on a shard");
                unreachable = true;
            }
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
