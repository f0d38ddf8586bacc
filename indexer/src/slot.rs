//! The replication slot's health, read from Postgres (`pg_replication_slots`), never from
//! error text: whether it is lost, a poller that keeps it in the status every 2 s, and the
//! watch the stream races against.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::{Error, SlotLoss};
use crate::pg::{self, PgConn};
use crate::status::{SlotStatus, Stats};

/// How a slot is lost, from its row (`None`: no slot): dropped, or invalidated
/// (`wal_status = 'lost'`); `None` while it is usable.
pub fn loss(slot: Option<&SlotStatus>) -> Option<SlotLoss> {
    match slot {
        None => Some(SlotLoss::Missing),
        Some(s) if s.wal_status.as_deref() == Some("lost") => Some(SlotLoss::Invalidated),
        Some(_) => None,
    }
}

/// One reading of the slot by the poller: when it was asked, and its row (`None`: no slot).
#[derive(Debug, Clone)]
pub struct SlotSeen {
    pub at: Instant,
    pub slot: Option<SlotStatus>,
}

/// Resolves with how the slot is lost once a reading taken at or after `since` finds it
/// lost; never resolves otherwise (nor when the poller is gone).
pub async fn lost_after(mut seen: watch::Receiver<Option<SlotSeen>>, since: Instant) -> SlotLoss {
    let found = seen
        .wait_for(|s| {
            s.as_ref()
                .is_some_and(|s| s.at >= since && loss(s.slot.as_ref()).is_some())
        })
        .await
        .ok()
        .and_then(|s| s.as_ref().and_then(|s| loss(s.slot.as_ref())));
    match found {
        Some(l) => l,
        None => std::future::pending().await,
    }
}

/// A replication server error is worth retrying unless the slot is gone: the catalog, not
/// the error's text, says which.
pub async fn classify(conn: &PgConn, slot: &str, e: Error) -> Error {
    if !matches!(&e, Error::Replication(r) if r.is_server()) {
        return e;
    }
    let state = match conn.connect().await {
        Ok(client) => pg::slot_status(&client, slot).await,
        Err(_) => return e, // the server itself is away: retry
    };
    match state.map(|s| loss(s.as_ref())) {
        Ok(Some(loss)) => Error::SlotLost {
            slot: slot.to_owned(),
            loss,
        },
        _ => e,
    }
}

/// Keeps the slot's health (`wal_status`, `safe_wal_size`) in the status, and the server's
/// WAL position for the lag while the stream is down, every 2 s; publishes each reading, so
/// the stream stops on a slot that is gone or invalidated whatever its connection says.
pub async fn poll(
    conn: PgConn,
    slot: String,
    stats: Arc<Stats>,
    seen: watch::Sender<Option<SlotSeen>>,
) {
    let mut client = None;
    let mut reported_lost = false;
    loop {
        if client.is_none() {
            client = conn.connect().await.ok();
        }
        if let Some(c) = &client {
            let at = Instant::now();
            match pg::slot_status(c, &slot).await {
                Ok(s) => {
                    let lost = s.is_some() && loss(s.as_ref()).is_some();
                    if lost && !reported_lost {
                        tracing::error!(slot = %slot, "replication slot invalidated: WAL it needed was removed");
                    }
                    reported_lost = lost;
                    *stats.slot.lock().unwrap() = s.clone();
                    seen.send_replace(Some(SlotSeen { at, slot: s }));
                    match pg::wal_end(c).await {
                        Ok(end) => stats.observe_server_wal(end),
                        Err(_) => client = None,
                    }
                }
                Err(_) => client = None,
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
