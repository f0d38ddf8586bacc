//! The change feed of an index as server-sent events (the `changes` ring, tailed).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use wire::shard::{ChangeData, ShardError};

use super::scope::Scope;
use super::{error, params, HttpState, Params};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangesParams {
    index: String,
    since: Option<String>,
    /// A scoped caller's restriction (`wire::shard::ReadScope`): only changes within it.
    scope_regions: Option<String>,
    scope_filter: Option<String>,
}

/// The change feed of one index as server-sent events: `id` is the change's position
/// (`LSN:n`), `event: change`, `data` its key, op, region and LSN. Starts after `since` (or
/// the `Last-Event-ID` header; default: from now). 410 when those changes are no longer
/// kept: re-sync by searching, then follow from the position the 410 names.
pub(super) async fn changes(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
    p: Params<ChangesParams>,
) -> Response {
    use crate::changes::{ChangeEvent, Position};
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let params = match params(p) {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };
    let ix = match s.index(&params.index) {
        Ok(ix) => ix,
        Err(r) => return r.into_response(),
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
    // From beyond the server's WAL the feed would stay silent: say so instead.
    if after.0 > s.stats.applied() {
        if let Some(current) = s.wal.beyond(after.0).await {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "since",
                format!("{} is beyond the server's WAL position {current}", after.0),
            );
        }
    }
    let ordinal = ix.ordinal;
    let scope = wire::shard::ReadScope {
        scope_regions: params.scope_regions,
        scope_filter: params.scope_filter,
    };
    let scope = match Scope::parse(&scope, &s.fields[ordinal]) {
        Ok(scope) => std::sync::Arc::new(scope),
        Err((field, message)) => return error(StatusCode::UNPROCESSABLE_ENTITY, &field, message),
    };
    if let Err(gone) = s.stats.changes.read_after(after, ordinal, 0) {
        let mut body = ShardError::new(
            "since",
            format!(
                "changes after {after} are no longer kept; search to re-sync, then follow from {}",
                gone.complete_after
            ),
        );
        body.complete_after = Some(gone.complete_after.to_string());
        return (StatusCode::GONE, Json(body)).into_response();
    }
    let name = ix.name.clone();
    let stats = s.stats.clone();
    let rx = stats.changes.subscribe();
    let to_event = move |e: &ChangeEvent| -> Result<Event, std::convert::Infallible> {
        Ok(Event::default()
            .id(e.position().to_string())
            .event("change")
            .json_data(ChangeData {
                index: name.clone(),
                key: e.key.clone(),
                op: e.op.as_str().to_owned(),
                region: e.region.clone(),
                lsn: e.lsn,
            })
            .expect("a change serializes"))
    };
    let stream =
        futures_util::stream::unfold((after, rx, stats), move |(mut pos, mut rx, stats)| {
            let to_event = to_event.clone();
            let scope = scope.clone();
            async move {
                loop {
                    match stats.changes.read_after(pos, ordinal, 512) {
                        Ok(events) if !events.is_empty() => {
                            pos = events.last().expect("non-empty").position();
                            let items: Vec<_> = events
                                .iter()
                                .filter(|e| scope.is_open() || scope.allows_event(e))
                                .map(&to_event)
                                .collect();
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
