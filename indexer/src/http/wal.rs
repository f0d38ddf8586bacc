//! The server's current WAL position, for the change feed: a feed asked to start beyond it
//! (`since=FFFFFFFF/FFFFFFFF`) would answer 200 and then stay silent until the server's WAL
//! got there, perhaps never; it is refused instead. Postgres is asked at most once a second,
//! however many such requests come.

use std::time::{Duration, Instant};

use wire::Lsn;

use crate::pg::PgConn;

/// Shortest interval between two questions to Postgres.
const EVERY: Duration = Duration::from_secs(1);

pub(crate) struct WalClock {
    conn: PgConn,
    /// The last answer, and when it was asked.
    seen: std::sync::Mutex<Option<(Instant, Lsn)>>,
    /// Held while asking: one question at a time.
    asking: tokio::sync::Mutex<()>,
}

impl WalClock {
    pub(crate) fn new(conn: PgConn) -> WalClock {
        WalClock {
            conn,
            seen: std::sync::Mutex::new(None),
            asking: tokio::sync::Mutex::new(()),
        }
    }

    /// The server's position when `lsn` is beyond it; None when it is not (or when Postgres
    /// cannot say: the feed then opens as asked). Only an answer asked after this call began
    /// can refuse it, so a client's own fresh commit is never refused for a stale answer;
    /// waiting for one takes at most a second and a query, however many wait.
    pub(crate) async fn beyond(&self, lsn: Lsn) -> Option<Lsn> {
        let arrived = Instant::now();
        let decided = |seen: Option<(Instant, Lsn)>| match seen {
            Some((_, current)) if lsn <= current => Some(None),
            Some((at, current)) if at >= arrived => Some(Some(current)),
            _ => None,
        };
        if let Some(answer) = decided(*self.seen.lock().unwrap()) {
            return answer;
        }
        let _asking = self.asking.lock().await;
        let seen = *self.seen.lock().unwrap();
        if let Some(answer) = decided(seen) {
            return answer;
        }
        if let Some((at, _)) = seen {
            tokio::time::sleep_until((at + EVERY).into()).await;
        }
        let asked = Instant::now();
        let current = match self.ask().await {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the server's WAL position");
                return None;
            }
        };
        *self.seen.lock().unwrap() = Some((asked, current));
        (lsn > current).then_some(current)
    }

    async fn ask(&self) -> crate::error::Result<Lsn> {
        let client = self.conn.connect().await?;
        crate::pg::current_wal_lsn(&client).await
    }
}
