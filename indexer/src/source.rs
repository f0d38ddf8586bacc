//! The replication source: the consistent initial snapshot (slot created with an exported
//! snapshot, tables COPYed inside it) and the pgoutput stream after it, with reconnects.
//! Decoded changes leave here as whole `Transaction`s for the applier; durable LSNs come
//! back and only then are confirmed to Postgres.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgwire_replication::{ReplicationClient, ReplicationEvent};
use tokio::sync::{mpsc, watch};

use crate::apply::{ApplyCmd, Budget, Held};
use crate::catalog::ResolvedIndex;
use crate::error::{Error, Result};
use crate::pg::PgConn;
use crate::pgoutput::{self, Message, OldTuple, Tuple, TupleValue};
use crate::status::Stats;
use engine::change::{Cell, Change, Transaction};
use wire::Lsn;

/// What the stream hears back from the applier.
pub struct ProgressRx {
    pub searchable: watch::Receiver<Lsn>,
    pub durable: watch::Receiver<Lsn>,
}

mod snapshot;
pub use snapshot::Resume;

pub struct Source {
    pub conn: PgConn,
    pub slot: String,
    pub publication: String,
    pub indexes: Vec<ResolvedIndex>,
    pub stats: Arc<Stats>,
    /// Bytes of changes that may wait for the applier.
    pub budget: Budget,
}

/// A transaction goes to the applier in parts once this much of it has arrived (estimated
/// bytes, or changes), so no transaction is ever held whole: the applier writes a large one
/// straight to its partitions and makes it visible at its end (`engine::shard::large`).
pub const PART_BYTES: usize = 8 << 20;
pub const PART_CHANGES: usize = 20_000;

/// What a column value takes in memory, roughly: its text and a little more.
fn cell_bytes(value: Option<&str>) -> usize {
    32 + value.map_or(0, str::len)
}

/// What a change takes in memory, roughly.
fn change_bytes(change: &Change) -> usize {
    let cells = |cells: &[Cell]| -> usize {
        cells
            .iter()
            .map(|c| match c {
                Cell::Value(v) => cell_bytes(v.as_deref()),
                Cell::UnchangedToast => cell_bytes(None),
            })
            .sum()
    };
    64 + match change {
        Change::Upsert { old_key, new, .. } => {
            cells(new) + old_key.as_deref().map(cells).unwrap_or(0)
        }
        Change::Delete { old, .. } => cells(old),
        Change::Truncate { .. } => 0,
    }
}

impl Source {
    /// Streams changes from the slot until `shutdown`, reconnecting with backoff after
    /// network errors and server restarts. Returns an error only for what retrying cannot
    /// fix (a lost slot, a decoding error, a stopped applier).
    ///
    /// A slot that the poller (`slot_seen`) finds gone or invalidated, in a reading taken
    /// after streaming began, ends the stream with `SlotLost` whatever the connection is
    /// doing: Postgres ends the walsender of a slot it invalidates, and what a reconnect then
    /// hears (or whether it hears anything before a timeout) is no signal to rely on.
    pub async fn stream(
        &self,
        applier: mpsc::Sender<ApplyCmd>,
        progress: ProgressRx,
        shutdown: watch::Receiver<bool>,
        slot_seen: watch::Receiver<Option<crate::slot::SlotSeen>>,
    ) -> Result<()> {
        tokio::select! {
            r = self.stream_until_error(applier, progress, shutdown) => r,
            loss = crate::slot::lost_after(slot_seen, Instant::now()) => {
                self.stats.set_stream_state("slot lost");
                Err(Error::SlotLost { slot: self.slot.clone(), loss })
            }
        }
    }

    async fn stream_until_error(
        &self,
        applier: mpsc::Sender<ApplyCmd>,
        mut progress: ProgressRx,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<()> {
        let mut backoff = Duration::from_millis(100);
        let mut forwarded = *progress.durable.borrow();
        loop {
            if *shutdown.borrow() {
                return Ok(());
            }
            self.stats.set_stream_state("connecting");
            let attempt = self
                .session(
                    &applier,
                    &mut progress,
                    &mut shutdown,
                    &mut forwarded,
                    &mut backoff,
                )
                .await;
            match attempt {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() => {
                    let e = crate::slot::classify(&self.conn, &self.slot, e).await;
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(crate::metrics::RECONNECTS).increment(1);
                    self.stats
                        .set_stream_state(format!("reconnecting in {} ms", backoff.as_millis()));
                    *self.stats.last_error.lock().unwrap() = Some(e.to_string());
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "replication stream interrupted; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn session(
        &self,
        applier: &mpsc::Sender<ApplyCmd>,
        progress: &mut ProgressRx,
        shutdown: &mut watch::Receiver<bool>,
        forwarded: &mut Lsn,
        backoff: &mut Duration,
    ) -> Result<()> {
        let ProgressRx {
            searchable,
            durable,
        } = progress;
        let start = *durable.borrow();
        let config = self
            .conn
            .replication(&self.slot, &self.publication)
            .with_start_lsn(pg_lsn(start))
            .with_ack_lsn(pg_lsn(start))
            .with_status_interval(Duration::from_millis(100))
            .with_wakeup_interval(Duration::from_secs(1))
            .with_buffer_size(4096);
        let mut client = ReplicationClient::connect(config).await?;
        client.wait_started().await?;
        *backoff = Duration::from_millis(100);
        self.stats.set_stream_state(crate::status::STREAMING);
        tracing::info!(slot = %self.slot, from = %start, "streaming");

        let mut relations: HashMap<u32, Option<RelationMap>> = HashMap::new();
        let mut open: Option<Transaction> = None;
        // The open transaction: its estimated bytes not yet sent, changes counted so far,
        // whether parts of it went to the applier, whether it is a re-sent one.
        let (mut open_bytes, mut counted, mut parts_sent, mut replay) =
            (0usize, 0usize, false, false);
        // Forwarded transactions not yet searchable: (end LSN, commit time).
        let mut in_flight: VecDeque<(Lsn, i64)> = VecDeque::new();
        let mut durable_now = start;
        let mut searchable_now = (*searchable.borrow()).max(start);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    let _ = client.shutdown().await;
                    return Ok(());
                }
                changed = durable.changed() => {
                    if changed.is_err() {
                        return Err(Error::ApplierStopped(durable_now));
                    }
                    durable_now = *durable.borrow_and_update();
                    client.update_applied_lsn(pg_lsn(durable_now));
                }
                changed = searchable.changed() => {
                    if changed.is_err() {
                        return Err(Error::ApplierStopped(durable_now));
                    }
                    searchable_now = *searchable.borrow_and_update();
                    while in_flight.front().is_some_and(|(l, _)| *l <= searchable_now) {
                        in_flight.pop_front();
                    }
                    self.set_oldest_pending(&in_flight);
                }
                event = client.recv() => {
                    let Some(event) = event? else {
                        return Err(Error::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "replication stream ended")));
                    };
                    match event {
                        ReplicationEvent::KeepAlive { wal_end, .. } => {
                            let wal_end = Lsn(wal_end.as_u64());
                            self.stats.observe_wal_end(wal_end);
                            // Nothing open: the server has sent everything up to wal_end. When all
                            // of it is searchable, so is wal_end (freshness for readers waiting on
                            // unrelated commits); when all of it is durable, the slot may advance
                            // to wal_end, so an idle publication does not retain WAL.
                            if open.is_none() && searchable_now >= *forwarded {
                                self.stats.advance_applied(wal_end);
                            }
                            if open.is_none() && durable_now >= *forwarded && wal_end > durable_now {
                                client.update_applied_lsn(pg_lsn(wal_end));
                            }
                        }
                        ReplicationEvent::Begin { final_lsn, commit_time_micros, .. } => {
                            if open.is_some() {
                                return Err(Error::Protocol("BEGIN inside an open transaction".into()));
                            }
                            let final_lsn = Lsn(final_lsn.as_u64());
                            // Already forwarded (a reconnect re-sends from the durable LSN):
                            // its changes are not kept.
                            replay = final_lsn < *forwarded;
                            (open_bytes, counted, parts_sent) = (0, 0, false);
                            open = Some(Transaction { end_lsn: final_lsn, commit_time_micros, changes: Vec::new() });
                        }
                        ReplicationEvent::XLogData { wal_end, data, .. } => {
                            self.stats.observe_wal_end(Lsn(wal_end.as_u64()));
                            let message = pgoutput::decode(&data)?;
                            self.handle(message, &mut relations, open.as_mut())?;
                            if let Some(tx) = open.as_mut() {
                                if replay {
                                    tx.changes.clear();
                                    continue;
                                }
                                open_bytes += tx.changes[counted..].iter().map(change_bytes).sum::<usize>();
                                counted = tx.changes.len();
                                if open_bytes >= PART_BYTES || counted >= PART_CHANGES {
                                    let changes = std::mem::take(&mut tx.changes);
                                    let held = Held::take(&self.budget, open_bytes).await;
                                    let part = ApplyCmd::TxPart { final_lsn: tx.end_lsn, first: !parts_sent, changes, held };
                                    applier.send(part).await.map_err(|_| Error::ApplierStopped(durable_now))?;
                                    (open_bytes, counted, parts_sent) = (0, 0, true);
                                }
                            }
                        }
                        ReplicationEvent::Commit { end_lsn, commit_time_micros, .. } => {
                            let mut tx = open.take().ok_or_else(|| Error::Protocol("COMMIT without BEGIN".into()))?;
                            let end_lsn = Lsn(end_lsn.as_u64());
                            self.stats.observe_wal_end(end_lsn);
                            if end_lsn <= *forwarded {
                                continue; // re-sent after a reconnect; the applier has it
                            }
                            if replay {
                                return Err(Error::Protocol(format!("transaction ending at {end_lsn} began before the forwarded {forwarded}")));
                            }
                            tx.end_lsn = end_lsn;
                            tx.commit_time_micros = commit_time_micros;
                            *forwarded = end_lsn;
                            in_flight.push_back((end_lsn, commit_time_micros));
                            self.set_oldest_pending(&in_flight);
                            let held = Held::take(&self.budget, open_bytes).await;
                            applier.send(ApplyCmd::Tx { tx, held }).await.map_err(|_| Error::ApplierStopped(durable_now))?;
                        }
                        ReplicationEvent::Message { .. } => {}
                        ReplicationEvent::StoppedAt { .. } => return Ok(()),
                    }
                }
            }
        }
    }

    fn set_oldest_pending(&self, in_flight: &VecDeque<(Lsn, i64)>) {
        let (lsn, t) = in_flight.front().copied().unwrap_or((Lsn::ZERO, 0));
        // The LSN first: a reader that sees the new time sees its LSN (or a later one).
        self.stats
            .oldest_pending_lsn
            .store(lsn.0, Ordering::Release);
        self.stats.oldest_pending_commit.store(t, Ordering::Release);
    }

    fn handle(
        &self,
        message: Message,
        relations: &mut HashMap<u32, Option<RelationMap>>,
        open: Option<&mut Transaction>,
    ) -> Result<()> {
        let relation = |relations: &HashMap<u32, Option<RelationMap>>,
                        id: u32|
         -> Result<Option<RelationMap>> {
            relations.get(&id).cloned().ok_or_else(|| {
                Error::Protocol(format!(
                    "change for relation {id} before its Relation message"
                ))
            })
        };
        match message {
            Message::Relation(rel) => {
                let map = self
                    .indexes
                    .iter()
                    .find(|ix| ix.schema == rel.namespace && ix.table == rel.name)
                    .map(|ix| {
                        let positions: Vec<Option<usize>> = ix
                            .columns
                            .iter()
                            .map(|c| rel.columns.iter().position(|rc| rc.name == *c))
                            .collect();
                        for (c, p) in ix.columns.iter().zip(&positions) {
                            if p.is_none() {
                                let msg = format!("index {:?}: configured column {c:?} is no longer in table {}.{}; its values are treated as NULL", ix.name, ix.schema, ix.table);
                                tracing::error!("{msg}");
                                *self.stats.last_error.lock().unwrap() = Some(msg);
                            }
                        }
                        RelationMap {
                            index: ix.ordinal,
                            positions,
                        }
                    });
                relations.insert(rel.id, map);
            }
            Message::Insert { relation_id, new } => {
                if let Some(map) = relation(relations, relation_id)? {
                    in_tx(open)?.changes.push(Change::Upsert {
                        index: map.index,
                        old_key: None,
                        new: map.cells(&new),
                    });
                }
            }
            Message::Update {
                relation_id,
                old,
                new,
            } => {
                if let Some(map) = relation(relations, relation_id)? {
                    let old_key = old.map(|o| match o {
                        OldTuple::Key(t) | OldTuple::Full(t) => map.cells(&t),
                    });
                    in_tx(open)?.changes.push(Change::Upsert {
                        index: map.index,
                        old_key,
                        new: map.cells(&new),
                    });
                }
            }
            Message::Delete { relation_id, old } => {
                if let Some(map) = relation(relations, relation_id)? {
                    let (OldTuple::Key(t) | OldTuple::Full(t)) = old;
                    in_tx(open)?.changes.push(Change::Delete {
                        index: map.index,
                        old: map.cells(&t),
                    });
                }
            }
            Message::Truncate { relation_ids, .. } => {
                let tx = in_tx(open)?;
                for id in relation_ids {
                    if let Some(map) = relation(relations, id)? {
                        tx.changes.push(Change::Truncate { index: map.index });
                    }
                }
            }
            Message::Begin { .. }
            | Message::Commit { .. }
            | Message::Origin { .. }
            | Message::Type { .. }
            | Message::LogicalMessage { .. } => {}
        }
        Ok(())
    }
}

fn in_tx(open: Option<&mut Transaction>) -> Result<&mut Transaction> {
    open.ok_or_else(|| Error::Protocol("row change outside a transaction".into()))
}

/// Where each configured column sits in a relation's tuples.
#[derive(Clone, Debug)]
struct RelationMap {
    index: usize,
    positions: Vec<Option<usize>>,
}

impl RelationMap {
    fn cells(&self, tuple: &Tuple) -> Vec<Cell> {
        self.positions
            .iter()
            .map(|p| match p.and_then(|p| tuple.0.get(p)) {
                None | Some(TupleValue::Null) => Cell::Value(None),
                Some(TupleValue::UnchangedToast) => Cell::UnchangedToast,
                Some(TupleValue::Text(b)) | Some(TupleValue::Binary(b)) => {
                    Cell::Value(Some(String::from_utf8_lossy(b).into_owned()))
                }
            })
            .collect()
    }
}

fn pg_lsn(l: Lsn) -> pgwire_replication::Lsn {
    pgwire_replication::Lsn::from_u64(l.0)
}

#[cfg(test)]
mod tests {
    use super::snapshot::copying;
    use super::*;

    #[test]
    fn copy_progress_says_how_much_is_left() {
        let started = Instant::now() - Duration::from_secs(10);
        let p = copying("places", 25_000, 100_000, started);
        assert_eq!(
            (p.state.as_str(), p.index.as_deref()),
            ("copying", Some("places"))
        );
        assert_eq!(p.rows_estimate, Some(100_000));
        // 2,500 rows/s for 75,000 more rows: 30 s.
        let (rate, eta) = (p.rows_per_sec, p.eta_seconds.unwrap());
        assert!((rate - 2_500.0).abs() < 10.0, "{rate}");
        assert!((eta - 30.0).abs() < 0.2, "{eta}");
        // Past the estimate: nothing left, not a negative time.
        assert_eq!(
            copying("places", 120_000, 100_000, started).eta_seconds,
            Some(0.0)
        );
        // No statistics: no estimate, no time left.
        let unknown = copying("places", 5, 0, started);
        assert_eq!((unknown.rows_estimate, unknown.eta_seconds), (None, None));
    }
}
