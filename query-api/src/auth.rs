//! Who may call: API keys compared in constant time against every configured key (no early
//! exit), scopes (read, admin), and a token bucket per key (per client address when the API
//! is open). An authorized caller holds its share of the requests in flight (`admission`)
//! until its handler ends.

use std::net::SocketAddr;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use subtle::ConstantTimeEq;

use crate::admission::Admitted;
use crate::config::Scope;
use crate::scope::Restriction;
use crate::{ApiError, AppState};

/// An authorized caller: who it is (its key, or its address when the API is open) and its
/// share of the requests in flight, held until dropped.
pub(crate) struct Caller {
    pub id: String,
    /// What its key may read (tenant-scoped keys; none for the others).
    pub restriction: Restriction,
    _in_flight: Admitted,
}

/// Checks the caller's key (constant-time against every configured key) and scope, then its
/// rate bucket and its share of the requests in flight. Without configured keys
/// (`auth.open`), callers are told apart by address.
pub(crate) fn authorize(
    s: &AppState,
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    need: Scope,
) -> Result<Caller, ApiError> {
    let cfg = &s.inner.config;
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    let address = peer.map(|p| p.ip().to_string()).unwrap_or_default();
    // A refused key still costs its address a token: guessing keys is rate limited too.
    let refuse = |e: ApiError| take_token(s, &format!("unauthenticated {address}")).and(Err(e));
    let mut restriction = Restriction::default();
    let bucket = if cfg.auth.keys.is_empty() {
        address.clone()
    } else {
        let Some(presented) = presented else {
            return refuse(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "authorization",
                "an API key is required (Authorization: Bearer <key>, or X-API-Key)",
            ));
        };
        let mut found: Option<&crate::config::ApiKey> = None;
        for k in &cfg.auth.keys {
            if bool::from(k.key.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(k);
            }
        }
        match found {
            None => {
                return refuse(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "authorization",
                    "unknown API key",
                ))
            }
            Some(k) if k.scope == Scope::Read && need == Scope::Admin => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "authorization",
                    "this key has read scope; the route needs admin",
                ))
            }
            Some(k) => {
                restriction = k.restriction();
                presented.to_owned()
            }
        }
    };
    take_token(s, &bucket)?;
    let in_flight = s.inner.in_flight.admit(&bucket)?;
    Ok(Caller {
        id: bucket,
        restriction,
        _in_flight: in_flight,
    })
}

/// Buckets kept before full ones are forgotten.
const MAX_BUCKETS: usize = 10_000;

/// Takes a token from `bucket` (the configured rate and burst), or a 429 with `Retry-After`.
fn take_token(s: &AppState, bucket: &str) -> Result<(), ApiError> {
    let (rate, burst) = (
        s.inner.config.limits.rate_per_sec,
        s.inner.config.limits.burst,
    );
    let mut buckets = s.inner.buckets.lock().unwrap();
    let now = Instant::now();
    // A bucket that has refilled is the same as no bucket: forget those when there are many
    // (one per key or address ever seen would otherwise grow without bound).
    if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(bucket) {
        buckets.retain(|_, (tokens, last)| {
            *tokens + now.duration_since(*last).as_secs_f64() * rate < burst
        });
    }
    let (tokens, last) = buckets.entry(bucket.to_owned()).or_insert((burst, now));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn full_buckets_are_forgotten_when_there_are_many_and_spent_ones_kept() {
        let config = Config::parse(
            "[[shard]]\nurl = \"http://127.0.0.1:9\"\n[auth]\nopen = true\n[limits]\nrate_per_sec = 0.01\nburst = 2\n",
        )
        .unwrap();
        let s = AppState::new(config, None).unwrap();
        // A spent bucket: two tokens taken, the third refused (the next comes in 100 s).
        take_token(&s, "spender").unwrap();
        take_token(&s, "spender").unwrap();
        assert!(take_token(&s, "spender").is_err());
        // Many clients last seen 1,000 s ago: their buckets have refilled.
        let long_ago = Instant::now() - std::time::Duration::from_secs(1_000);
        for i in 0..MAX_BUCKETS {
            s.inner
                .buckets
                .lock()
                .unwrap()
                .insert(format!("client {i}"), (1.0, long_ago));
        }
        // A new client's first request forgets them, not the spent one.
        take_token(&s, "newcomer").unwrap();
        let mut kept: Vec<String> = s.inner.buckets.lock().unwrap().keys().cloned().collect();
        kept.sort();
        assert_eq!(kept, ["newcomer", "spender"]);
        assert!(take_token(&s, "spender").is_err());
    }
}
