//! The shard side of the shard link (`wire::link`): `GET /internal/link` upgrades the HTTP
//! connection, then every frame read is a call, answered on the same connection as soon as it
//! is done, in any order. A call is answered by the same code as its HTTP route
//! (`search::answer`, `admin::find_document`). A `Cancel` call stops the search it names
//! (its caller gave up); a connection that ends stops every search still running on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::FramedRead;
use wire::link::Call;
use wire::shard::DocumentRequest;

use super::{admin, error, search, Answer, HttpState};

/// Calls one connection may have in flight; reading further calls waits for a free slot.
const IN_FLIGHT: usize = 1024;

/// `GET /internal/link` with `Upgrade: shard-link/1`: switches protocols and serves the
/// connection's calls.
pub(super) async fn upgrade(State(s): State<HttpState>, req: Request) -> Response {
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes() == wire::link::UPGRADE.as_bytes());
    if !asked {
        return error(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade",
            format!("this path speaks {}", wire::link::UPGRADE),
        );
    }
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(io) => serve(s, TokioIo::new(io)).await,
            Err(e) => tracing::warn!(error = %e, "shard link upgrade failed"),
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, "upgrade"),
            (header::UPGRADE, wire::link::UPGRADE),
        ],
        Body::empty(),
    )
        .into_response()
}

/// Reads calls until the connection ends (or sends a frame that is not one); each call runs in
/// its own task and its answer is queued for the writer, which sends whatever is queued in
/// one write.
async fn serve<Io>(s: HttpState, io: Io)
where
    Io: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let mut calls = FramedRead::new(read, wire::link::codec(wire::link::MAX_CALL));
    let (answers, mut queued) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(async move { wire::link::send_queued(write, &mut queued).await });
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    // The searches in flight, by call id: a `Cancel` call stops one, the connection's end all.
    let running: Arc<Mutex<HashMap<u64, engine::search::Cancel>>> = Arc::default();
    while let Some(Ok(frame)) = calls.next().await {
        let Some((id, code, _)) = wire::link::parse(&frame) else {
            tracing::warn!("shard link: a frame shorter than its header; closing");
            break;
        };
        let call = Call::from_code(code);
        if call == Some(Call::Cancel) {
            if let Some(c) = running.lock().unwrap().get(&id) {
                c.cancel();
            }
            continue;
        }
        // Only searches scan long enough to be worth stopping.
        let cancel = (call == Some(Call::Search)).then(|| {
            let c = engine::search::Cancel::within(search::SEARCH_BUDGET);
            running.lock().unwrap().insert(id, c.clone());
            c
        });
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let (s, answers, running) = (s.clone(), answers.clone(), running.clone());
        tokio::spawn(async move {
            let body = &frame[wire::link::HEADER..];
            let answer = match (call, &cancel) {
                (_, Some(cancel)) => search::answer(&s, body, cancel.clone()).await,
                (Some(Call::Document), None) => {
                    match serde_json::from_slice::<DocumentRequest>(body) {
                        Ok(req) => admin::find_document(&s, req).await,
                        Err(e) => Answer::error(StatusCode::BAD_REQUEST, "body", e.to_string()),
                    }
                }
                _ => Answer::error(
                    StatusCode::BAD_REQUEST,
                    "call",
                    format!("unknown call {code}"),
                ),
            };
            if cancel.is_some() {
                running.lock().unwrap().remove(&id);
            }
            let frame = wire::link::frame(id, answer.status.as_u16(), &answer.body);
            // The connection may be gone: nobody waits for this answer then.
            let _ = answers.send(Bytes::from(frame));
            drop(slot);
        });
    }
    // Nobody reads this connection's answers any more: stop what still runs.
    for c in running.lock().unwrap().values() {
        c.cancel();
    }
    // The writer ends once every call in flight has queued its answer.
    drop(answers);
    if let Ok(Err(e)) = writer.await {
        tracing::debug!(error = %e, "shard link closed while answering");
    }
}
