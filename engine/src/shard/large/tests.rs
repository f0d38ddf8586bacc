//! A large transaction applied in parts ends exactly as the same transaction applied whole:
//! the same documents in the same partitions, the same geo and vector answers; nothing of it
//! is visible before its end, and an abandoned one leaves nothing; one made durable in part
//! goes on from there after a crash, a reconnect or a stop.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::change::{Cell, Change, Transaction};
use crate::partition;
use crate::search::{self, GeoQuery, Scope, VectorQuery};
use crate::shard::{Shard, ShardView, ViewCell};
use wire::Lsn;

const REGIONS: [&str; 3] = ["eu", "as", "us"];

fn index() -> crate::schema::ResolvedIndex {
    crate::schema::test_index(
        &["id", "region", "body", "lat", "lon", "emb"],
        Some(2),
        Some((3, 4)),
        Some((5, 2)),
    )
}

/// A small deterministic generator (xorshift), so a failure names its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A row; with `toast`, its body, its vector or both are unchanged TOAST values.
fn cells(rng: &mut Rng, id: u64, toast: bool) -> Vec<Cell> {
    let region = REGIONS[rng.below(3) as usize];
    let unchanged = if toast { 1 + rng.below(3) } else { 0 };
    let body = if unchanged & 1 != 0 {
        Cell::UnchangedToast
    } else {
        Cell::Value(Some(format!("word{} word{}", rng.below(5), rng.below(5))))
    };
    // Few distinct vectors, so updates often keep theirs.
    let emb = if unchanged & 2 != 0 {
        Cell::UnchangedToast
    } else {
        Cell::Value(Some(format!("{{{},{}}}", 1 + rng.below(2), rng.below(2))))
    };
    vec![
        Cell::Value(Some(id.to_string())),
        Cell::Value(Some(region.into())),
        body,
        Cell::Value(Some(format!("{}", rng.below(60)))),
        Cell::Value(Some(format!("{}", rng.below(60)))),
        emb,
    ]
}

fn key_cells(id: u64) -> Vec<Cell> {
    let mut c = vec![Cell::Value(None); 6];
    c[0] = Cell::Value(Some(id.to_string()));
    c
}

/// Random changes over 40 keys: upserts (moving between regions), updates with an unchanged
/// TOAST body, primary-key changes, deletes and, rarely, a TRUNCATE.
fn changes(rng: &mut Rng, n: usize) -> Vec<Change> {
    (0..n)
        .map(|_| {
            let id = rng.below(40);
            match rng.below(20) {
                0..=8 => Change::Upsert {
                    index: 0,
                    old_key: None,
                    new: cells(rng, id, false),
                },
                9..=12 => Change::Upsert {
                    index: 0,
                    old_key: None,
                    new: cells(rng, id, true),
                },
                13..=14 => {
                    let (old, toast) = (rng.below(40), rng.below(2) == 0);
                    Change::Upsert {
                        index: 0,
                        old_key: Some(key_cells(old)),
                        new: cells(rng, id, toast),
                    }
                }
                15..=18 => Change::Delete {
                    index: 0,
                    old: key_cells(id),
                },
                _ if rng.below(4) == 0 => Change::Truncate { index: 0 },
                _ => Change::Delete {
                    index: 0,
                    old: key_cells(id),
                },
            }
        })
        .collect()
}

/// Everything a reader sees: documents (key → region, hash), geo and exact vector answers.
type Seen = (BTreeMap<String, (String, u64)>, Vec<String>, Vec<String>);

fn seen(view: &ShardView) -> Seen {
    let mut docs = BTreeMap::new();
    for ((_, region), p) in &view.partitions {
        for (k, h) in partition::dump(&p.searcher, &p.fresh, region).unwrap() {
            assert!(
                docs.insert(k.clone(), (region.clone(), h)).is_none(),
                "{k} twice"
            );
        }
    }
    let scope = Scope::all(0);
    let within = GeoQuery::Within {
        lat: 30.0,
        lon: 30.0,
        radius_m: 2e7,
    };
    let mut geo: Vec<String> = search::geo(view, &scope, &within, 1000)
        .into_iter()
        .map(|h| format!("{}@{}", h.key, h.region))
        .collect();
    geo.sort();
    let q = VectorQuery {
        values: vec![1.0, 0.5],
        k: 1000,
        ef: None,
        exact: true,
        filter: None,
        fields_filter: None,
        cancel: None,
    };
    let mut vectors: Vec<String> = search::vector(view, &scope, &q)
        .unwrap()
        .into_iter()
        .map(|h| format!("{}@{}", h.key, h.region))
        .collect();
    vectors.sort();
    (docs, geo, vectors)
}

fn open() -> (tempfile::TempDir, Shard, Arc<ViewCell>) {
    let dir = tempfile::tempdir().unwrap();
    let (shard, view) = Shard::open_unobserved(dir.path(), vec![index()], 1000).unwrap();
    (dir, shard, view)
}

fn apply_whole(shard: &mut Shard, tx: &Transaction) {
    shard.apply(tx).unwrap();
    shard.make_searchable(tx.end_lsn);
    shard.commit().unwrap();
}

/// Applies `tx` as the source hands over a large one: parts of random sizes, then the end.
fn apply_in_parts(shard: &mut Shard, view: &ViewCell, tx: &Transaction, rng: &mut Rng) {
    let before = seen(&view.load().unwrap());
    shard.begin_large(Lsn(tx.end_lsn.0 - 1), 0).unwrap();
    let mut rest = &tx.changes[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(12) as usize).min(rest.len());
        shard.apply_part(&rest[..n]).unwrap();
        rest = &rest[n..];
        assert_eq!(seen(&view.load().unwrap()), before, "a part is not visible");
    }
    shard.finish_large(tx.end_lsn).unwrap();
    assert_eq!(shard.durable(), tx.end_lsn, "durable at its end");
}

#[test]
fn parts_end_as_the_whole_transaction() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let (_a_dir, mut whole, whole_view) = open();
        let (_b_dir, mut parts, parts_view) = open();
        // Some history both have, committed and partly still fresh.
        let first = Transaction::at(100, changes(&mut rng, 30));
        apply_whole(&mut whole, &first);
        apply_whole(&mut parts, &first);
        let second = Transaction::at(200, changes(&mut rng, 10));
        for s in [&mut whole, &mut parts] {
            s.apply(&second).unwrap();
            s.make_searchable(second.end_lsn);
        }
        let big = Transaction::at(300, changes(&mut rng, 80));
        apply_whole(&mut whole, &big);
        apply_in_parts(&mut parts, &parts_view, &big, &mut rng);
        assert_eq!(
            seen(&parts_view.load().unwrap()),
            seen(&whole_view.load().unwrap()),
            "seed {seed}"
        );
        // And the next ordinary transaction applies on top alike.
        let after = Transaction::at(400, changes(&mut rng, 20));
        apply_whole(&mut whole, &after);
        apply_whole(&mut parts, &after);
        assert_eq!(
            seen(&parts_view.load().unwrap()),
            seen(&whole_view.load().unwrap()),
            "seed {seed}, after"
        );
    }
}

#[test]
fn an_abandoned_large_transaction_leaves_nothing_and_applies_again() {
    let mut rng = Rng(7);
    let (_dir, mut shard, view) = open();
    apply_whole(&mut shard, &Transaction::at(100, changes(&mut rng, 30)));
    let before = seen(&view.load().unwrap());
    let big = Transaction::at(300, changes(&mut rng, 60));
    shard.begin_large(Lsn(299), 0).unwrap();
    shard.apply_part(&big.changes[..30]).unwrap();
    shard.abort_large().unwrap();
    assert_eq!(shard.large_open(), None);
    shard.commit().unwrap();
    assert_eq!(seen(&view.load().unwrap()), before, "nothing of it");

    let (_w, mut whole, whole_view) = open();
    apply_whole(&mut whole, &Transaction::at(100, changes(&mut Rng(7), 30)));
    apply_whole(&mut whole, &big);
    apply_in_parts(&mut shard, &view, &big, &mut rng);
    assert_eq!(
        seen(&view.load().unwrap()),
        seen(&whole_view.load().unwrap())
    );
}

/// Applies `changes` from the start in parts of random sizes (a sending of the transaction).
fn send(shard: &mut Shard, changes: &[Change], rng: &mut Rng) {
    let mut rest = changes;
    while !rest.is_empty() {
        let n = (1 + rng.below(12) as usize).min(rest.len());
        shard.apply_part(&rest[..n]).unwrap();
        rest = &rest[n..];
    }
}

/// The same history in a shard of its own, with `big` applied whole: what every way of
/// applying `big` must end as.
fn expected(history: &Transaction, big: &Transaction) -> Seen {
    let (_dir, mut whole, view) = open();
    apply_whole(&mut whole, history);
    apply_whole(&mut whole, big);
    seen(&view.load().unwrap())
}

/// Part of a large transaction made durable, then a crash (the shard dropped, its writers'
/// later writes lost) at a random point: the reopened shard, sent the whole transaction
/// again, skips what was durable and ends as the transaction applied whole.
#[test]
fn a_large_transaction_goes_on_where_a_crash_left_it() {
    for seed in 1..=30u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let history = Transaction::at(100, changes(&mut rng, 30));
        let big = Transaction::at(300, changes(&mut rng, 80));
        let dir = tempfile::tempdir().unwrap();
        let mark = {
            let (mut shard, view) =
                Shard::open_unobserved(dir.path(), vec![index()], 1000).unwrap();
            apply_whole(&mut shard, &history);
            let before = seen(&view.load().unwrap());
            shard.begin_large(Lsn(299), 0).unwrap();
            let cut = 1 + rng.below(79) as usize;
            send(&mut shard, &big.changes[..cut], &mut rng);
            let mark = shard.persist_large().unwrap().expect("open");
            assert_eq!((mark.final_lsn, mark.changes), (Lsn(299), cut as u64));
            assert_eq!(seen(&view.load().unwrap()), before, "durable, not shown");
            // More written after the mark, lost in the crash.
            let more = (cut + rng.below(10) as usize).min(80);
            send(&mut shard, &big.changes[cut..more], &mut rng);
            mark
        };
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![index()], 1000).unwrap();
        shard.begin_large(mark.final_lsn, mark.changes).unwrap();
        send(&mut shard, &big.changes, &mut rng);
        shard.finish_large(big.end_lsn).unwrap();
        assert_eq!(
            seen(&view.load().unwrap()),
            expected(&history, &big),
            "seed {seed}"
        );
    }
}

/// Sent again in the same process (a reconnect), a large transaction goes on where it was,
/// still invisible until its end; stopped part-way with some of it durable, it shows what
/// it wrote, and a later sending goes on from there.
#[test]
fn a_large_transaction_sent_again_or_stopped_goes_on() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
        let history = Transaction::at(100, changes(&mut rng, 30));
        let big = Transaction::at(300, changes(&mut rng, 80));
        let (_dir, mut shard, view) = open();
        apply_whole(&mut shard, &history);
        let before = seen(&view.load().unwrap());
        shard.begin_large(Lsn(299), 0).unwrap();
        let cut = 1 + rng.below(79) as usize;
        send(&mut shard, &big.changes[..cut], &mut rng);
        if rng.below(2) == 0 {
            shard.persist_large().unwrap();
        }
        shard.resend_large();
        send(&mut shard, &big.changes[..cut], &mut rng);
        assert_eq!(
            seen(&view.load().unwrap()),
            before,
            "seed {seed}: not shown"
        );
        let expected = expected(&history, &big);
        if rng.below(2) == 0 {
            send(&mut shard, &big.changes[cut..], &mut rng);
            shard.finish_large(big.end_lsn).unwrap();
        } else {
            shard.persist_large().unwrap();
            let mark = shard.abort_large().unwrap().expect("durable in part");
            assert_eq!(mark.changes, cut as u64);
            assert_eq!(shard.durable(), Lsn(100), "seed {seed}");
            shard.begin_large(mark.final_lsn, mark.changes).unwrap();
            send(&mut shard, &big.changes, &mut rng);
            shard.finish_large(big.end_lsn).unwrap();
        }
        assert_eq!(seen(&view.load().unwrap()), expected, "seed {seed}");
    }
}
