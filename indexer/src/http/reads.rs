//! The reads pool: searches and document lookups run on a few threads of their own, as many
//! as twice the cores, taking queued reads in turn.
//!
//! On tokio's blocking pool every read had a thread of its own: 32 concurrent searches were
//! 32 threads sharing two cores, each woken and switched to (scheduler and futex work was a
//! tenth of a rare-word search's CPU). Here a busy thread takes the next read without
//! sleeping. Twice the cores, so that a couple of long scans (each stops at its budget, or
//! when its caller goes away) leave threads for the short ones.

use std::panic::AssertUnwindSafe;

use super::{internal, Answer};

pub(super) struct Reads {
    pool: rayon::ThreadPool,
}

impl Reads {
    pub(super) fn new() -> Reads {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2 * cores)
            .thread_name(|_| "indexer-search".into())
            .build()
            .expect("the reads pool's threads");
        Reads { pool }
    }

    /// Runs `work` on the pool; a failure or a panic is logged and becomes a bare 500 (no
    /// internal detail in bodies).
    pub(super) async fn run<T, E, F>(&self, what: &'static str, work: F) -> Result<T, Answer>
    where
        T: Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: FnOnce() -> Result<T, E> + Send + 'static,
    {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.pool.spawn(move || {
            // Nobody may wait any more (the caller went away): the answer is then dropped.
            let _ = done.send(std::panic::catch_unwind(AssertUnwindSafe(work)));
        });
        match answer.await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => {
                tracing::error!(error = %e, "{what} failed");
                Err(internal())
            }
            Ok(Err(_)) | Err(_) => {
                tracing::error!("{what} panicked");
                Err(internal())
            }
        }
    }
}
