//! The change feed: every applied row change (key, operation, region, LSN), in LSN order,
//! published when its batch becomes searchable, kept in a bounded in-memory ring that readers
//! tail (`/internal/changes/{index}`, server-sent events).
//!
//! A position is `(commit LSN, n)`: the n-th change of the transaction that committed at that
//! LSN. The ring knows it is complete after some position: everything later is in it (until
//! evicted). A reader asking from before that gets `TooOld` and must re-sync (search). After
//! a restart the ring starts at the durable LSN; transactions replayed from there are
//! published again with the same positions, so a reader deduplicates by position.

use std::collections::VecDeque;
use std::sync::Mutex;

pub use engine::change::{ChangeEvent, Op, Position};
use wire::Lsn;

/// Changes kept for readers to catch up from (a large transaction keeps as many for it).
pub const CAPACITY: usize = engine::shard::FEED_EVENTS_KEPT;

/// Asked for changes the ring no longer (or never) held.
#[derive(Debug, PartialEq)]
pub struct TooOld {
    /// Changes after this position are available.
    pub complete_after: Position,
}

struct Ring {
    events: VecDeque<ChangeEvent>,
    complete_after: Position,
}

pub struct ChangeLog {
    ring: Mutex<Ring>,
    /// Bumped on every publish; readers wait on it.
    published: tokio::sync::watch::Sender<u64>,
}

impl Default for ChangeLog {
    fn default() -> ChangeLog {
        ChangeLog {
            ring: Mutex::new(Ring {
                events: VecDeque::new(),
                complete_after: Position(Lsn::ZERO, u32::MAX),
            }),
            published: tokio::sync::watch::channel(0).0,
        }
    }
}

impl ChangeLog {
    /// Starts over: complete after `lsn` (the shard's position at open or re-snapshot).
    pub fn reset(&self, lsn: Lsn) {
        let mut r = self.ring.lock().unwrap();
        r.events.clear();
        r.complete_after = Position(lsn, u32::MAX);
        self.published.send_modify(|v| *v += 1);
    }

    /// Changes up to `through` will not be published (the front of a transaction larger
    /// than the ring): a reader asking from before it must re-sync.
    pub fn gap(&self, through: Position) {
        let mut r = self.ring.lock().unwrap();
        r.events.retain(|e| e.position() > through);
        if through > r.complete_after {
            r.complete_after = through;
        }
    }

    /// Appends a searchable batch (in order); evicts the oldest beyond `CAPACITY`.
    pub fn publish(&self, events: Vec<ChangeEvent>) {
        if events.is_empty() {
            return;
        }
        let mut r = self.ring.lock().unwrap();
        for e in events {
            // A replayed transaction already in the ring is not published twice.
            if r.events
                .back()
                .is_some_and(|last| e.position() <= last.position())
                || e.position() <= r.complete_after
            {
                continue;
            }
            r.events.push_back(e);
        }
        while r.events.len() > CAPACITY {
            if let Some(e) = r.events.pop_front() {
                r.complete_after = e.position();
            }
        }
        drop(r);
        self.published.send_modify(|v| *v += 1);
    }

    /// Up to `max` changes of `index` after `after`, in order.
    pub fn read_after(
        &self,
        after: Position,
        index: usize,
        max: usize,
    ) -> Result<Vec<ChangeEvent>, TooOld> {
        let r = self.ring.lock().unwrap();
        if after < r.complete_after {
            return Err(TooOld {
                complete_after: r.complete_after,
            });
        }
        let start = r.events.partition_point(|e| e.position() <= after);
        Ok(r.events
            .iter()
            .skip(start)
            .filter(|e| e.index == index)
            .take(max)
            .cloned()
            .collect())
    }

    /// The position of the latest change (or where the ring starts).
    pub fn head(&self) -> Position {
        let r = self.ring.lock().unwrap();
        r.events
            .back()
            .map(ChangeEvent::position)
            .unwrap_or(r.complete_after)
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.published.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(lsn: u64, n: u32, key: &str) -> ChangeEvent {
        ChangeEvent {
            lsn: Lsn(lsn),
            n,
            index: 0,
            key: Some(key.into()),
            op: Op::Upsert,
            region: Some("eu".into()),
            filters: None,
        }
    }

    #[test]
    fn readers_resume_after_a_position_and_replays_are_not_repeated() {
        let log = ChangeLog::default();
        log.reset(Lsn(100));
        log.publish(vec![ev(110, 0, "a"), ev(110, 1, "b"), ev(120, 0, "c")]);
        // A replay of the same transactions (after a reconnect) adds nothing.
        log.publish(vec![ev(110, 1, "b"), ev(120, 0, "c")]);
        let keys = |v: Vec<ChangeEvent>| v.into_iter().map(|e| e.key.unwrap()).collect::<Vec<_>>();
        assert_eq!(
            keys(log.read_after(Position(Lsn(100), u32::MAX), 0, 10).unwrap()),
            ["a", "b", "c"]
        );
        assert_eq!(
            keys(log.read_after(Position(Lsn(110), 0), 0, 10).unwrap()),
            ["b", "c"]
        );
        assert_eq!(
            keys(log.read_after("0/6E".parse().unwrap(), 0, 10).unwrap()),
            ["c"]
        );
        assert!(log
            .read_after(Position(Lsn(120), 0), 1, 10)
            .unwrap()
            .is_empty());
        assert_eq!(
            log.read_after(Position(Lsn(90), 0), 0, 10),
            Err(TooOld {
                complete_after: Position(Lsn(100), u32::MAX)
            })
        );
        assert_eq!(log.head(), Position(Lsn(120), 0));
        assert_eq!(Position(Lsn(0x6E), 3).to_string(), "0/6E:3");
        assert!("0/6E:x".parse::<Position>().is_err());
    }

    #[test]
    fn eviction_moves_the_complete_position() {
        let log = ChangeLog::default();
        log.reset(Lsn(1));
        log.publish(
            (0..CAPACITY as u64 + 5)
                .map(|i| ev(10 + i, 0, "k"))
                .collect(),
        );
        let err = log
            .read_after(Position(Lsn(1), u32::MAX), 0, 1)
            .unwrap_err();
        assert_eq!(err.complete_after, Position(Lsn(14), 0));
        assert_eq!(
            log.read_after(Position(Lsn(14), 0), 0, 1).unwrap()[0].lsn,
            Lsn(15)
        );
    }
}
