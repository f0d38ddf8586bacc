//! Operations on the shard endpoint: status, Prometheus metrics, wait-for-LSN, one document
//! by key, and the per-key dump `verify` compares with the table.

use super::scope::Scope;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use wire::shard::{
    DocumentRequest, DocumentResponse, DumpResponse, PartitionStatus, RejectionReport, ShardStatus,
    WaitResponse,
};
use wire::Lsn;

use super::{blocking, error, fields_json, params, run_blocking, Answer, HttpState, Params};

fn shard_status(s: &HttpState) -> ShardStatus {
    let stats = &s.stats;
    let applied = stats.applied();
    let lag_bytes = stats.lag_bytes();
    let lag_ms = stats.lag_ms();
    let rejected = stats.rejected_by_partition.lock().unwrap().clone();
    let view = s.view.load();
    let partitions = view
        .iter()
        .flat_map(|v| v.partitions.iter())
        .map(|((ix, region), p)| {
            let index = s.indexes[*ix].name.clone();
            let rejected_rows = rejected
                .get(&(index.clone(), region.clone()))
                .copied()
                .unwrap_or(0);
            PartitionStatus {
                index,
                region: region.clone(),
                documents: p.documents().unwrap_or(0),
                fresh_documents: p.fresh.docs.len() as u64,
                checkpoint_lsn: p.checkpoint,
                applied_lsn: applied,
                lag_bytes,
                lag_ms,
                rejected_rows,
                vectors_pending_graph: p
                    .graph
                    .as_ref()
                    .map(|g| p.recent_vectors.range(g.graphed()..).count() as u64),
                graph_points: p.graph.as_ref().map(|g| g.points() as u64),
                graph_insert_structure_loaded: p.graph.as_ref().map(|g| g.insertable_in_memory()),
                segments: p.searcher.segment_readers().len() as u64,
            }
        })
        .collect();
    let recent_rejections = stats
        .recent_rejections
        .lock()
        .unwrap()
        .iter()
        .map(|r| RejectionReport {
            index: r.index.clone(),
            key: r.key.clone(),
            field: r.field.clone(),
            reason: r.reason.clone(),
        })
        .collect();
    let rejected_rows_without_partition = rejected
        .iter()
        .filter(|((_, r), _)| r.is_empty())
        .map(|(_, n)| n)
        .sum();
    ShardStatus {
        slot: s.slot.clone(),
        stream: stats.stream_state.lock().unwrap().clone(),
        last_error: stats.last_error.lock().unwrap().clone(),
        reconnects: stats.reconnects.load(Ordering::Relaxed),
        snapshot: stats.snapshot.lock().unwrap().clone(),
        applied_lsn: applied,
        server_wal_end: stats.server_wal_end().max(applied),
        lag_bytes,
        lag_ms,
        last_commit_age_ms: stats.last_commit_age_ms(),
        slot_status: stats.slot.lock().unwrap().clone(),
        rows_applied: stats.rows_applied.load(Ordering::Relaxed),
        transactions_applied: stats.transactions_applied.load(Ordering::Relaxed),
        rejected_rows: stats.rejected_total.load(Ordering::Relaxed),
        rejected_rows_without_partition,
        recent_rejections,
        partitions,
    }
}

/// Counting visible documents looks up every fresh key: engine work, on the blocking pool.
pub(super) async fn status(State(s): State<HttpState>) -> Response {
    blocking("status", move || {
        Ok::<_, std::convert::Infallible>(shard_status(&s))
    })
    .await
}

pub(super) async fn metrics_text(State(s): State<HttpState>) -> Response {
    match run_blocking("metrics", move || {
        Ok::<_, std::convert::Infallible>(render_metrics(&s))
    })
    .await
    {
        Ok(r) => r,
        Err(answer) => answer.into_response(),
    }
}

fn render_metrics(s: &HttpState) -> Response {
    use crate::metrics::*;
    let stats = &s.stats;
    metrics::gauge!(APPLIED_LSN).set(stats.applied().as_u64() as f64);
    metrics::gauge!(SERVER_WAL_END).set(stats.server_wal_end().as_u64() as f64);
    metrics::gauge!(LAG_BYTES).set(stats.lag_bytes() as f64);
    metrics::gauge!(LAG_SECONDS).set(stats.lag_ms() as f64 / 1000.0);
    metrics::gauge!(STREAMING).set(if stats.streaming() { 1.0 } else { 0.0 });
    if let Some(age) = stats.last_commit_age_ms() {
        metrics::gauge!(LAST_COMMIT_AGE_SECONDS).set(age as f64 / 1000.0);
    }
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
pub(super) struct WaitParams {
    lsn: String,
    #[serde(default = "default_wait_ms")]
    timeout_ms: u64,
}

fn default_wait_ms() -> u64 {
    5_000
}

/// Waits until the shard has applied `lsn` (200) or the timeout passes (409, with how far it got).
pub(super) async fn wait(
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
    let reached = applied >= lsn;
    let code = if reached {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    let body = WaitResponse {
        requested_lsn: lsn,
        applied_lsn: applied,
        reached,
    };
    (code, Json(body)).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DumpParams {
    index: String,
    /// Also list the keys changed after this LSN (`DumpResponse::changed`).
    changed_after: Option<wire::Lsn>,
}

/// Every document of an index as key → content hash, per partition, from one consistent
/// view; with `changed_after`, the keys changed since (what a live table may already show
/// differently, or not yet: `verify` compares the others).
pub(super) async fn dump(State(s): State<HttpState>, p: Params<DumpParams>) -> Response {
    let (index, changed_after) = match params(p) {
        Ok(p) => (p.index, p.changed_after),
        Err(r) => return r.into_response(),
    };
    let ix = match s.index(&index) {
        Ok(ix) => ix.ordinal,
        Err(r) => return r.into_response(),
    };
    let Some(view) = s.view.load() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "", "no view yet");
    };
    let applied = view.applied;
    let answer = run_blocking("dump", move || -> engine::Result<DumpResponse> {
        let mut partitions = BTreeMap::new();
        for ((i, region), p) in &view.partitions {
            if *i != ix {
                continue;
            }
            let docs = engine::partition::dump(&p.searcher, &p.fresh, region)?;
            let docs = docs
                .into_iter()
                .map(|(k, h)| (k, format!("{h:016x}")))
                .collect();
            partitions.insert(region.clone(), docs);
        }
        Ok(DumpResponse {
            applied_lsn: view.applied,
            durable_lsn: view.durable,
            partitions,
            changed: None,
        })
    })
    .await;
    let mut dump = match answer {
        Ok(d) => d,
        Err(a) => return a.into_response(),
    };
    if let Some(after) = changed_after {
        // Read after the view: the feed then holds every change the dump shows (it is
        // published just after the view moves; waited for, briefly, if not yet).
        let changed = s
            .stats
            .changes
            .keys_changed_after(after, applied, ix, std::time::Duration::from_secs(2))
            .await;
        dump.changed = changed.map(|keys| keys.into_iter().collect());
    }
    Json(dump).into_response()
}

/// `GET /internal/document?index=…&key=…`.
pub(super) async fn document(State(s): State<HttpState>, p: Params<DocumentRequest>) -> Response {
    match params(p) {
        Ok(req) => find_document(&s, req).await.into_response(),
        Err(r) => r.into_response(),
    }
}

/// One document by key, from whichever region holds it: its stored fields and region.
pub(super) async fn find_document(s: &HttpState, req: DocumentRequest) -> Answer {
    let ix = match s.index(&req.index) {
        Ok(ix) => ix.clone(),
        Err(r) => return r.into(),
    };
    let scope = match Scope::parse(&req.scope(), &s.fields[ix.ordinal]) {
        Ok(scope) => scope,
        Err((field, message)) => {
            return Answer::error(StatusCode::UNPROCESSABLE_ENTITY, &field, message)
        }
    };
    let key = req.key;
    let Some((view, applied_lsn)) = s.view() else {
        return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "", "not ready");
    };
    let found = s
        .reads
        .run("document lookup", move || {
            for ((i, region), p) in &view.partitions {
                if *i != ix.ordinal || !scope.allows_region(region) {
                    continue;
                }
                // Outside a scoped caller's filter, the document is not found.
                if let Some(row) =
                    engine::search::row_of(p, &key)?.filter(|r| scope.allows_row(&ix, r))
                {
                    return Ok(Some(DocumentResponse {
                        key,
                        region: region.clone(),
                        fields: fields_json(&ix, &row),
                        applied_lsn,
                    }));
                }
            }
            Ok::<_, tantivy::TantivyError>(None)
        })
        .await;
    match found {
        Ok(Some(doc)) => Answer::json(&doc),
        Ok(None) => Answer::error(StatusCode::NOT_FOUND, "key", "no such document"),
        Err(answer) => answer,
    }
}
