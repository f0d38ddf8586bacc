//! The indexer shards as query-api sees them: which ones own a request's regions, and a typed
//! client of the shard protocol (`wire::shard`): every call has a deadline, every answer is
//! parsed into its `wire` type. Searches and documents go on the shard's link (`link.rs`),
//! with names and keys inside the JSON body; the other calls are HTTP requests where every
//! name or key travels as a percent-encoded value (`wire::shard::path`), never as URL text.

use std::time::Duration;

use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use wire::link::Call;
use wire::shard::{
    path, DocumentRequest, DocumentResponse, ReadScope, ShardError, ShardSearchRequest,
    ShardSearchResponse, ShardStatus, WaitResponse,
};
use wire::{Lsn, MissingShard, SearchRequest};

use crate::config::Config;
use crate::link::Link;
use crate::{ApiError, AppState};

/// One shard a request touches, with the regions asked of it (empty: all it owns).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Target {
    pub shard: usize,
    pub regions: Vec<String>,
}

/// The shards a request touches: the owners of the regions asked for (a shard listing no
/// regions owns every other one), or every shard when none are asked for.
pub(crate) fn route(cfg: &Config, regions: &[String]) -> Result<Vec<Target>, ApiError> {
    if regions.is_empty() {
        return Ok((0..cfg.shards.len())
            .map(|shard| Target {
                shard,
                regions: Vec::new(),
            })
            .collect());
    }
    let catch_all = cfg.shards.iter().position(|s| s.regions.is_empty());
    let mut targets: Vec<Target> = Vec::new();
    for r in regions {
        let owner = cfg
            .shards
            .iter()
            .position(|s| s.regions.iter().any(|x| x == r))
            .or(catch_all)
            .ok_or_else(|| ApiError::invalid("regions", format!("no shard serves region {r:?}")))?;
        match targets.iter_mut().find(|t| t.shard == owner) {
            Some(t) => t.regions.push(r.clone()),
            None => targets.push(Target {
                shard: owner,
                regions: vec![r.clone()],
            }),
        }
    }
    Ok(targets)
}

/// Why a shard call gave no answer.
#[derive(Debug)]
pub(crate) enum CallError {
    /// The shard refused the request (4xx); its error names the field.
    Rejected {
        status: StatusCode,
        error: ShardError,
    },
    /// Unreachable, timed out, failed (5xx), or answered something that does not parse.
    Failed(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Rejected { status, error } => {
                write!(
                    f,
                    "{status}: {}: {}",
                    error.error.field, error.error.message
                )
            }
            CallError::Failed(why) => f.write_str(why),
        }
    }
}

impl AppState {
    pub(crate) fn shard_url(&self, shard: usize) -> &str {
        &self.inner.config.shards[shard].url
    }

    pub(crate) fn missing(&self, t: &Target) -> MissingShard {
        MissingShard {
            shard: self.shard_url(t.shard).to_owned(),
            regions: t.regions.clone(),
        }
    }

    fn shard_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.limits.shard_timeout_ms)
    }

    /// Sends a call and reads its whole answer within `deadline`: `T` on success (and on the
    /// statuses in `also`), the shard's error on a 4xx.
    async fn call<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        deadline: Duration,
        also: &[StatusCode],
    ) -> Result<T, CallError> {
        let exchange = async {
            let resp = req
                .send()
                .await
                .map_err(|e| CallError::Failed(e.to_string()))?;
            let status = resp.status();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| CallError::Failed(e.to_string()))?;
            answer(status, &bytes, also)
        };
        within(deadline, exchange).await
    }

    /// A call on the shard's link, answered within `deadline` (`call`'s answers).
    async fn link_call<T: DeserializeOwned>(
        &self,
        link: &Link,
        call: Call,
        body: &[u8],
        deadline: Duration,
    ) -> Result<T, CallError> {
        let exchange = async {
            let (status, bytes) = link.call(call, body).await.map_err(CallError::Failed)?;
            answer(status, &bytes, &[])
        };
        within(deadline, exchange).await
    }

    /// One shard's page of a search (`search` carries the page asked of it).
    pub(crate) async fn shard_search(
        &self,
        t: &Target,
        index: &str,
        search: &SearchRequest,
    ) -> Result<ShardSearchResponse, CallError> {
        let mut search = search.clone();
        search.regions = t.regions.clone();
        let body = ShardSearchRequest {
            index,
            search: &search,
        };
        if let Some(link) = &self.inner.links[t.shard] {
            let body = serde_json::to_vec(&body).expect("requests serialize");
            return self
                .link_call(link, Call::Search, &body, self.shard_timeout())
                .await;
        }
        let Some(url) = self.inner.search_urls[t.shard].clone() else {
            return Err(CallError::Failed(format!(
                "shard URL {:?} does not parse",
                self.shard_url(t.shard)
            )));
        };
        let req = self.inner.http.post(url).json(&body);
        self.call(req, self.shard_timeout(), &[]).await
    }

    /// Long-polls until the shard has applied `lsn` or `timeout_ms` passes.
    pub(crate) async fn shard_wait(
        &self,
        shard: usize,
        lsn: Lsn,
        timeout_ms: u64,
    ) -> Result<WaitResponse, CallError> {
        let url = format!("{}{}", self.shard_url(shard), path::wait(lsn, timeout_ms));
        let deadline = Duration::from_millis(timeout_ms + 2_000);
        let req = self.inner.http.get(url);
        self.call(req, deadline, &[StatusCode::CONFLICT]).await
    }

    pub(crate) async fn shard_status(&self, shard: usize) -> Result<ShardStatus, CallError> {
        let url = format!("{}{}", self.shard_url(shard), path::STATUS);
        let req = self.inner.http.get(url);
        self.call(req, Duration::from_secs(2), &[]).await
    }

    /// Every shard's status, or why it did not give one.
    pub(crate) async fn shard_statuses(&self) -> Vec<(String, Result<ShardStatus, CallError>)> {
        let calls = (0..self.inner.config.shards.len())
            .map(|i| async move { (self.shard_url(i).to_owned(), self.shard_status(i).await) });
        futures_util::future::join_all(calls).await
    }

    pub(crate) async fn shard_document(
        &self,
        shard: usize,
        index: &str,
        key: &str,
        scope: &ReadScope,
    ) -> Result<DocumentResponse, CallError> {
        let deadline = Duration::from_secs(5);
        if let Some(link) = &self.inner.links[shard] {
            let body = serde_json::to_vec(&DocumentRequest {
                index: index.to_owned(),
                key: key.to_owned(),
                scope_regions: scope.scope_regions.clone(),
                scope_filter: scope.scope_filter.clone(),
            })
            .expect("requests serialize");
            return self.link_call(link, Call::Document, &body, deadline).await;
        }
        let url = format!(
            "{}{}",
            self.shard_url(shard),
            path::document(index, key, scope)
        );
        let req = self.inner.http.get(url);
        self.call(req, deadline, &[]).await
    }

    /// Opens a shard's change feed after `since`: the streaming response, or why not.
    pub(crate) async fn shard_changes(
        &self,
        shard: usize,
        index: &str,
        since: Option<&str>,
        scope: &ReadScope,
    ) -> Result<reqwest::Response, CallError> {
        let url = format!(
            "{}{}",
            self.shard_url(shard),
            path::changes(index, since, scope)
        );
        let open = async {
            let resp = self
                .inner
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| CallError::Failed(e.to_string()))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp);
            }
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| CallError::Failed(e.to_string()))?;
            Err(refused(status, &bytes))
        };
        within(self.shard_timeout(), open).await
    }
}

/// `call`'s outcome, or a failure once `deadline` has passed.
async fn within<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| Err(CallError::Failed("timed out".into())))
}

/// A shard's answer: `T` on success (and on the statuses in `also`), else as `refused` says.
fn answer<T: DeserializeOwned>(
    status: StatusCode,
    bytes: &[u8],
    also: &[StatusCode],
) -> Result<T, CallError> {
    if status.is_success() || also.contains(&status) {
        serde_json::from_slice(bytes)
            .map_err(|e| CallError::Failed(format!("{status}: bad answer: {e}")))
    } else {
        Err(refused(status, bytes))
    }
}

/// A shard's answer other than success: a 4xx carries its error naming the field; anything
/// else is a failure of the shard.
fn refused(status: StatusCode, bytes: &[u8]) -> CallError {
    if !status.is_client_error() {
        return CallError::Failed(format!("status {status}"));
    }
    match serde_json::from_slice::<ShardError>(bytes) {
        Ok(error) => CallError::Rejected { status, error },
        Err(e) => CallError::Failed(format!("{status}: bad answer: {e}")),
    }
}
