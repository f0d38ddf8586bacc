//! `GET /v1/indexes/{index}/changes`: the shards' change feeds merged into one stream of
//! server-sent events, with cursors of per-shard positions as event ids.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use wire::sse::{SseEvent, SseReader};
use wire::Lsn;

use crate::auth::authorize;
use crate::config::Scope;
use crate::shards::CallError;
use crate::{ApiError, AppState};

/// Per-shard positions of a change stream, as one opaque SSE id: `0=LSN:n;1=LSN:n`.
fn parse_cursor(text: &str, shards: usize) -> Option<Vec<Option<String>>> {
    let mut out = vec![None; shards];
    for part in text.split(';').filter(|p| !p.is_empty()) {
        let (i, pos) = part.split_once('=')?;
        let i: usize = i.parse().ok()?;
        // Re-rendered from its parts: nothing of the client's text reaches a shard as is.
        let position = match pos.split_once(':') {
            Some((lsn, n)) => format!("{}:{}", lsn.parse::<Lsn>().ok()?, n.parse::<u64>().ok()?),
            None => pos.parse::<Lsn>().ok()?.to_string(),
        };
        *out.get_mut(i)? = Some(position);
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
pub(crate) async fn changes(
    State(s): State<AppState>,
    Path(index): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let caller = authorize(&s, &headers, Some(peer), Scope::Read)?;
    caller.restriction.check_index(&index)?;
    let scope = caller.restriction.read_scope();
    // The stream holds a share of the streams' pool for as long as it is open.
    let streaming = s.inner.streams.admit(&caller.id)?;
    let n = s.inner.config.shards.len();
    if let Some(k) = params.keys().find(|k| *k != "since_lsn") {
        return Err(ApiError::invalid(k, "unknown parameter (since_lsn)"));
    }
    let mut positions: Vec<Option<String>> = vec![None; n];
    if let Some(id) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        positions = parse_cursor(id, n)
            .ok_or_else(|| ApiError::invalid("last-event-id", "not a cursor this API gave"))?;
    } else if let Some(lsn) = params.get("since_lsn") {
        let lsn: Lsn = lsn
            .parse()
            .map_err(|_| ApiError::invalid("since_lsn", format!("{lsn:?} is not an LSN")))?;
        positions = vec![Some(lsn.to_string()); n];
    }
    // Open every shard's feed first, so errors (unknown index, too old) are answered plainly.
    let mut bodies = Vec::new();
    for (i, position) in positions.iter().enumerate() {
        match s
            .shard_changes(i, &index, position.as_deref(), &scope)
            .await
        {
            Ok(resp) => bodies.push((i, resp)),
            Err(CallError::Rejected { status, error }) => {
                let code = match status.as_u16() {
                    404 => "not_found",
                    410 => "gone",
                    _ => "invalid",
                };
                // The shard's `since` is this route's `since_lsn` (or Last-Event-ID).
                let field = match error.error.field.as_str() {
                    _ if status == StatusCode::GONE => "since_lsn",
                    "since" => "since_lsn",
                    other => other,
                };
                let mut e = ApiError::new(status, code, field, error.error.message.clone());
                if let Some(c) = error.complete_after {
                    e = e.with("complete_after", c.into());
                }
                return Err(e);
            }
            Err(e @ CallError::Failed(_)) => {
                tracing::warn!(shard = %s.shard_url(i), error = %e, "change feed did not open");
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shards_unavailable",
                    "",
                    "a shard's change feed did not answer",
                ));
            }
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Option<(usize, SseEvent)>>(1024);
    for (i, resp) in bodies {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut bytes = resp.bytes_stream();
            let mut reader = SseReader::default();
            while let Some(Ok(chunk)) = bytes.next().await {
                for ev in reader.push(&chunk) {
                    if ev.id.is_empty() {
                        continue;
                    }
                    if tx.send(Some((i, ev))).await.is_err() {
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
        rx: tokio::sync::mpsc::Receiver<Option<(usize, SseEvent)>>,
        positions: Vec<Option<String>>,
        started: Vec<bool>,
        held: VecDeque<(usize, SseEvent)>,
        ready: bool,
        _streaming: crate::admission::Admitted,
    }
    let merge = Merge {
        rx,
        positions,
        started: vec![false; n],
        held: VecDeque::new(),
        ready: false,
        _streaming: streaming,
    };
    let stream = futures_util::stream::unfold(merge, |mut m| async move {
        loop {
            let (shard, ev) = match (m.ready, m.held.pop_front()) {
                (true, Some(held)) => held,
                (_, held) => {
                    if let Some(h) = held {
                        m.held.push_front(h);
                    }
                    let (shard, ev) = m.rx.recv().await.flatten()?;
                    if ev.event == "start" {
                        m.positions[shard] = Some(ev.id);
                        m.started[shard] = true;
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
                        m.held.push_back((shard, ev));
                        continue;
                    }
                    (shard, ev)
                }
            };
            m.positions[shard] = Some(ev.id.clone());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_cursors_round_trip_and_reject_garbage() {
        let positions = vec![Some("0/16B3748:2".to_owned()), None, Some("1/0".to_owned())];
        let text = cursor(&positions);
        assert_eq!(text, "0=0/16B3748:2;2=1/0");
        assert_eq!(parse_cursor(&text, 3), Some(positions));
        assert_eq!(parse_cursor("0=nope", 1), None);
        assert_eq!(parse_cursor("5=0/1", 2), None);
        assert_eq!(parse_cursor("0=0/0:1&since=zz", 1), None);
    }
}
