//! What a client may hold at once, so one client cannot starve the others: requests in
//! flight, searches waiting for their `min_lsn`, and open change streams are each counted in a
//! [`Pool`] with a cap over all clients and a smaller one per client (its API key, or its
//! address when the API is open). A long wait or an endless stream holds its own pool's share,
//! not the requests' one: 256 far-future `min_lsn` waits from one key no longer take every
//! request slot, and ten thousand change streams no longer pass uncounted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;

use crate::ApiError;

/// One kind of thing held, capped over all clients and per client.
pub(crate) struct Pool {
    /// What is held, for errors: "requests in flight", "min_lsn waits", "change streams".
    what: &'static str,
    /// The field an error names.
    field: &'static str,
    code: &'static str,
    all: usize,
    per_client: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    total: usize,
    by_client: HashMap<String, usize>,
}

/// A share of a pool, returned when dropped.
pub(crate) struct Admitted {
    pool: Arc<Pool>,
    client: String,
}

impl Pool {
    pub(crate) fn new(
        what: &'static str,
        field: &'static str,
        code: &'static str,
        all: usize,
        per_client: usize,
    ) -> Arc<Pool> {
        Arc::new(Pool {
            what,
            field,
            code,
            all,
            per_client,
            held: Mutex::new(Held::default()),
        })
    }

    /// A share for `client`, or a 429 (its own cap) or 503 (everyone's) naming the pool.
    pub(crate) fn admit(self: &Arc<Pool>, client: &str) -> Result<Admitted, ApiError> {
        let mut held = self.held.lock().unwrap();
        if held.total >= self.all {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                self.code,
                self.field,
                format!(
                    "{} {} are open, the most this server allows; retry shortly",
                    held.total, self.what
                ),
            )
            .retry_after(1));
        }
        let mine = held.by_client.get(client).copied().unwrap_or(0);
        if mine >= self.per_client {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                self.code,
                self.field,
                format!(
                    "this client has {mine} {} open, the most one client may hold; retry when one ends",
                    self.what
                ),
            )
            .retry_after(1));
        }
        held.total += 1;
        *held.by_client.entry(client.to_owned()).or_insert(0) += 1;
        Ok(Admitted {
            pool: self.clone(),
            client: client.to_owned(),
        })
    }

    #[cfg(test)]
    fn total(&self) -> usize {
        self.held.lock().unwrap().total
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut held = self.pool.held.lock().unwrap();
        held.total -= 1;
        if let Some(n) = held.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                held.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_client_and_over_all_and_returns_shares() {
        let pool = Pool::new("change streams", "", "too_many_streams", 3, 2);
        let a1 = pool.admit("a").unwrap();
        let _a2 = pool.admit("a").unwrap();
        let e = pool.admit("a").err().unwrap();
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        let _b1 = pool.admit("b").unwrap();
        let e = pool.admit("c").err().unwrap();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        drop(a1);
        assert_eq!(pool.total(), 2);
        let _c1 = pool.admit("c").unwrap();
        assert_eq!(pool.total(), 3);
    }
}
