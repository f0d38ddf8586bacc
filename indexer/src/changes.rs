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
    /// Every change searchable up to this LSN is in the ring (or was evicted).
    through: Lsn,
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
                through: Lsn::ZERO,
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
        r.through = lsn;
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

    /// Appends a batch searchable up to `lsn` (in order); evicts the oldest beyond
    /// `CAPACITY`.
    pub fn publish(&self, lsn: Lsn, events: Vec<ChangeEvent>) {
        let mut r = self.ring.lock().unwrap();
        r.through = r.through.max(lsn);
        if events.is_empty() {
            return;
        }
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

    /// The keys of `index` changed after `after` (None: a TRUNCATE among those changes, or
    /// the ring no longer reaches back to `after`: any key may have changed), once the ring
    /// holds every change searchable up to `upto` (waiting at most `patience` for it).
    pub async fn keys_changed_after(
        &self,
        after: Lsn,
        upto: Lsn,
        index: usize,
        patience: std::time::Duration,
    ) -> Option<std::collections::HashSet<String>> {
        let mut rx = self.subscribe();
        let deadline = tokio::time::Instant::now() + patience;
        while self.ring.lock().unwrap().through < upto {
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
        let events = self
            .read_after(Position(after, u32::MAX), index, usize::MAX)
            .ok()?;
        events.into_iter().map(|e| e.key).collect()
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
        log.publish(
            Lsn(120),
            vec![ev(110, 0, "a"), ev(110, 1, "b"), ev(120, 0, "c")],
        );
        // A replay of the same transactions (after a reconnect) adds nothing.
        log.publish(Lsn(120), vec![ev(110, 1, "b"), ev(120, 0, "c")]);
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
        // The keys changed after a point, once the ring holds everything up to another.
        let now = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let patience = std::time::Duration::from_millis(50);
        let changed = now.block_on(log.keys_changed_after(Lsn(110), Lsn(120), 0, patience));
        assert_eq!(changed, Some(["c".to_owned()].into()));
        assert_eq!(
            now.block_on(log.keys_changed_after(Lsn(90), Lsn(120), 0, patience)),
            None,
            "before the ring: any key may have changed"
        );
        assert_eq!(
            now.block_on(log.keys_changed_after(Lsn(110), Lsn(130), 0, patience)),
            None,
            "not yet published through 130"
        );
        assert_eq!(Position(Lsn(0x6E), 3).to_string(), "0/6E:3");
        assert!("0/6E:x".parse::<Position>().is_err());
    }

    #[test]
    fn eviction_moves_the_complete_position() {
        let log = ChangeLog::default();
        log.reset(Lsn(1));
        log.publish(
            Lsn(10 + CAPACITY as u64 + 5),
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
