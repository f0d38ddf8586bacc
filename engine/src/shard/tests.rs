//! Tests of the shard: apply, group commit and the read view; what every engine answers
//! before and after commits, moves, deletes and TRUNCATE. Long (~750 lines; the ranking's tests are in `ranking_tests.rs`): one module per
//! engine's answers, sharing the shard fixtures at the top.

use super::*;
use crate::partition;

/// The keys of (key, score) hits, best first.
pub(crate) fn keys(hits: &[(String, f32)]) -> Vec<&str> {
    hits.iter().map(|(k, _)| k.as_str()).collect()
}

fn index() -> ResolvedIndex {
    crate::schema::test_index(
        &["id", "region", "body", "lat", "lon"],
        Some(2),
        Some((3, 4)),
        None,
    )
}

pub(crate) fn upsert(id: u32, region: &str, body: &str) -> Change {
    let cells = [
        Some(id.to_string()),
        Some(region.into()),
        Some(body.into()),
        Some("1".into()),
        Some("2".into()),
    ];
    Change::Upsert {
        index: 0,
        old_key: None,
        new: cells.into_iter().map(Cell::Value).collect(),
    }
}

pub(crate) fn tx(lsn: u64, changes: Vec<Change>) -> Transaction {
    Transaction::at(lsn, changes)
}

/// key → (region, hash) of everything a reader sees.
pub(crate) fn visible(view: &ShardView) -> BTreeMap<String, (String, u64)> {
    let mut out = BTreeMap::new();
    for ((_, region), p) in &view.partitions {
        for (k, h) in partition::dump(&p.searcher, &p.fresh, region).unwrap() {
            assert!(
                out.insert(k.clone(), (region.clone(), h)).is_none(),
                "key {k} visible twice"
            );
        }
    }
    out
}

pub(crate) fn open(dir: &Path, view: Arc<ViewCell>, applied: Lsn) -> Shard {
    let limits = MapLimits {
        max_text_bytes: 1000,
        owned_regions: vec![],
    };
    Shard::open(
        dir,
        vec![index()],
        limits,
        16 << 20,
        Arc::new(Unobserved),
        view,
        applied,
    )
    .unwrap()
}

#[test]
fn writes_are_searchable_before_durable_and_unchanged_by_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let view = Arc::new(ViewCell::default());
    let mut shard = open(dir.path(), view.clone(), Lsn::ZERO);
    shard
        .apply(&tx(
            10,
            vec![
                upsert(1, "eu", "a"),
                upsert(2, "eu", "b"),
                upsert(3, "as", "c"),
            ],
        ))
        .unwrap();
    shard.make_searchable(Lsn(10));
    let before = visible(&view.load().unwrap());
    assert_eq!(before.len(), 3);
    assert_eq!(
        view.load().unwrap().durable,
        Lsn::ZERO,
        "nothing durable yet"
    );

    // A commit job runs while more is applied: a move of key 1 and a delete of key 2.
    let job = shard.take_commit_job().unwrap();
    let old = delete_of("2", 5);
    shard
        .apply(&tx(20, vec![upsert(1, "as", "moved"), old]))
        .unwrap();
    shard.make_searchable(Lsn(20));
    let during = visible(&view.load().unwrap());
    shard.commit_done(job.run().unwrap()).unwrap();
    let after = visible(&view.load().unwrap());
    assert_eq!(
        during, after,
        "a finished commit changes nothing a reader sees"
    );
    assert_eq!(after.keys().cloned().collect::<Vec<_>>(), ["1", "3"]);
    assert_eq!(after["1"].0, "as");
    assert_eq!(view.load().unwrap().durable, Lsn(10));
    assert!(
        shard.has_uncommitted(),
        "the second transaction is not durable yet"
    );

    assert_eq!(shard.commit().unwrap(), Lsn(20));
    assert_eq!(visible(&view.load().unwrap()), after);
    let docs: u64 = view
        .load()
        .unwrap()
        .partitions
        .values()
        .map(|p| p.documents().unwrap())
        .sum();
    assert_eq!(docs, 2);
    drop(shard);

    // Reopened, the partitions hold exactly what was durable; replaying an already
    // durable transaction changes nothing.
    let view = Arc::new(ViewCell::default());
    let mut shard = open(dir.path(), view.clone(), Lsn(20));
    assert_eq!(visible(&view.load().unwrap()), after);
    shard
        .apply(&tx(10, vec![upsert(1, "eu", "a"), upsert(2, "eu", "b")]))
        .unwrap();
    shard.make_searchable(Lsn(20));
    shard.commit().unwrap();
    assert_eq!(visible(&view.load().unwrap()), after);
}

#[test]
fn truncate_hides_committed_documents_until_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let view = Arc::new(ViewCell::default());
    let mut shard = open(dir.path(), view.clone(), Lsn::ZERO);
    shard
        .apply(&tx(10, vec![upsert(1, "eu", "a"), upsert(2, "as", "b")]))
        .unwrap();
    shard.make_searchable(Lsn(10));
    shard.commit().unwrap();
    shard
        .apply(&tx(
            20,
            vec![Change::Truncate { index: 0 }, upsert(3, "eu", "c")],
        ))
        .unwrap();
    shard.make_searchable(Lsn(20));
    let seen = visible(&view.load().unwrap());
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), ["3"]);
    shard.commit().unwrap();
    assert_eq!(visible(&view.load().unwrap()), seen);
}

/// A snapshot row of `index()` in region eu.
fn snapshot_row(id: u32, body: &str) -> Row {
    let raw = [&id.to_string(), "eu", body, "1", "2"];
    Row {
        raw: raw.into_iter().map(|c| Some(c.to_owned())).collect(),
        vector: None,
    }
}

#[test]
fn a_snapshot_copy_made_durable_part_way_goes_on_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let view = Arc::new(ViewCell::default());
        let mut shard = open(dir.path(), view.clone(), Lsn::ZERO);
        let first = vec![snapshot_row(1, "one"), snapshot_row(2, "two")];
        shard.add_snapshot_rows(0, first, false).unwrap();
        shard.persist_snapshot_rows().unwrap();
        // Durable, not shown: the copy is not done.
        assert!(view.load().is_none_or(|v| visible(&v).is_empty()));
        shard
            .add_snapshot_rows(0, vec![snapshot_row(3, "three")], false)
            .unwrap();
        // Dropped here without a commit: what a crash before the next mark leaves.
    }
    let view = Arc::new(ViewCell::default());
    let mut shard = open(dir.path(), view.clone(), Lsn::ZERO);
    // The resumed copy starts at or before what the partition holds (row 2, changed since in
    // a later snapshot): each row replaces its key's document.
    let rest = vec![
        snapshot_row(2, "deux"),
        snapshot_row(3, "three"),
        snapshot_row(4, "four"),
    ];
    shard.add_snapshot_rows(0, rest, true).unwrap();
    shard.commit_snapshot(Lsn(9)).unwrap();

    let reference_dir = tempfile::tempdir().unwrap();
    let reference_view = Arc::new(ViewCell::default());
    let mut reference = open(reference_dir.path(), reference_view.clone(), Lsn::ZERO);
    let whole = [(1, "one"), (2, "deux"), (3, "three"), (4, "four")];
    let whole = whole
        .into_iter()
        .map(|(id, b)| snapshot_row(id, b))
        .collect();
    reference.add_snapshot_rows(0, whole, false).unwrap();
    reference.commit_snapshot(Lsn(9)).unwrap();
    // Each key once (`visible` checks), with the content of a copy made in one go.
    let got = visible(&view.load().unwrap());
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(got, visible(&reference_view.load().unwrap()));
}

mod vector_store_tests {
    use super::visible;
    use crate::document::Row;
    use crate::shard::*;

    #[test]
    fn snapshot_vectors_reach_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let ix = crate::schema::test_index(&["id", "region", "emb"], None, None, Some((2, 2)));
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![ix], 100).unwrap();
        shard
            .add_snapshot_rows(
                0,
                vec![
                    Row {
                        raw: vec![Some("1".into()), Some("eu".into()), Some("{1,0}".into())],
                        vector: None,
                    },
                    // As a binary snapshot reads it: the vector as floats.
                    Row {
                        raw: vec![Some("2".into()), Some("eu".into()), None],
                        vector: Some(vec![0.0, 1.0]),
                    },
                ],
                false,
            )
            .unwrap();
        shard.commit_snapshot(Lsn(5)).unwrap();
        let v = view.load().unwrap();
        let p = v.partitions.values().next().unwrap();
        let store = p.vectors.as_ref().unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.get("1"), Some(&[1.0, 0.0][..]));
        assert_eq!(store.get("2"), Some(&[0.0, 1.0][..]));
    }

    /// An update whose vector is an unchanged TOAST value keeps the vector it had, whether
    /// that version is fresh or committed, across a region move; and the document equals
    /// the full row mapped afresh.
    #[test]
    fn an_unchanged_toast_vector_keeps_its_value() {
        let dir = tempfile::tempdir().unwrap();
        let ix = crate::schema::test_index(
            &["id", "region", "body", "emb"],
            Some(2),
            None,
            Some((3, 2)),
        );
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![ix.clone()], 100).unwrap();
        let change = |region: &str, body: &str, emb: Option<&str>| Change::Upsert {
            index: 0,
            old_key: None,
            new: vec![
                Cell::Value(Some("1".into())),
                Cell::Value(Some(region.into())),
                Cell::Value(Some(body.into())),
                emb.map_or(Cell::UnchangedToast, |e| Cell::Value(Some(e.into()))),
            ],
        };
        let expect = |region: &str, body: &str| {
            let raw = ["1", region, body, "{0.25,-4}"]
                .map(|c| Some(c.to_owned()))
                .to_vec();
            let crate::document::Mapped::Doc(d, _) =
                crate::document::map_row(&ix, raw, &MapLimits::default())
            else {
                panic!()
            };
            let mut want = BTreeMap::new();
            want.insert("1".to_owned(), (region.to_owned(), d.content_hash()));
            want
        };
        let vector_in = |region: &str| {
            let v = view.load().unwrap();
            let p = &v.partitions[&(0, region.to_owned())];
            p.vectors.as_ref().unwrap().get("1").map(<[f32]>::to_vec)
        };
        shard
            .apply(&Transaction::at(
                10,
                vec![change("eu", "a", Some("{0.25,-4}"))],
            ))
            .unwrap();
        // The previous version is fresh.
        shard
            .apply(&Transaction::at(20, vec![change("eu", "b", None)]))
            .unwrap();
        shard.make_searchable(Lsn(20));
        assert_eq!(visible(&view.load().unwrap()), expect("eu", "b"));
        shard.commit().unwrap();
        assert_eq!(vector_in("eu"), Some(vec![0.25, -4.0]));
        // The previous version is committed, and the row moves.
        shard
            .apply(&Transaction::at(30, vec![change("as", "c", None)]))
            .unwrap();
        shard.make_searchable(Lsn(30));
        assert_eq!(visible(&view.load().unwrap()), expect("as", "c"));
        shard.commit().unwrap();
        assert_eq!(visible(&view.load().unwrap()), expect("as", "c"));
        assert_eq!(vector_in("as"), Some(vec![0.25, -4.0]));
        assert_eq!(vector_in("eu"), None);
    }

    /// A vector column that is a stored field reads back as text, from the floats (the row
    /// keeps no text of an indexed vector), fresh and committed alike; a rejected one as
    /// the text it was stored with.
    #[test]
    fn a_stored_vector_reads_back_as_text() {
        use crate::search::{self, Scope, TextSearch};
        use crate::text::{Operator, TextQuery};
        let dir = tempfile::tempdir().unwrap();
        let mut ix = crate::schema::test_index(
            &["id", "region", "body", "emb"],
            Some(2),
            None,
            Some((3, 2)),
        );
        ix.stored = vec![2, 3];
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![ix.clone()], 100).unwrap();
        let row = |id: &str, emb: &str| Change::Upsert {
            index: 0,
            old_key: None,
            new: [id, "eu", "word", emb]
                .map(|c| Cell::Value(Some(c.into())))
                .to_vec(),
        };
        shard
            .apply(&Transaction::at(
                10,
                vec![row("1", "{0.5, -1e-5}"), row("2", "{1,2,3}")],
            ))
            .unwrap();
        shard.make_searchable(Lsn(10));
        let (_, fields) = crate::partition::Fields::schema(&ix);
        let query = TextQuery::parse("word", Operator::And, &fields.text).unwrap();
        let read = || {
            let v = view.load().unwrap();
            let p = &v.partitions[&(0, "eu".to_owned())];
            let by_key: Vec<Option<String>> = ["1", "2"]
                .iter()
                .map(|k| search::row_of(p, k).unwrap().unwrap()[3].clone())
                .collect();
            let mut hits: Vec<(String, Option<String>)> =
                search::text(&v, &Scope::all(0), &TextSearch::top(query.clone(), 10))
                    .unwrap()
                    .hits
                    .into_iter()
                    .map(|h| (h.key.to_string(), h.row[3].clone()))
                    .collect();
            hits.sort();
            (by_key, hits)
        };
        let want = (
            vec![
                Some("{0.5,-0.00001}".to_owned()),
                Some("{1,2,3}".to_owned()),
            ],
            vec![
                ("1".to_owned(), Some("{0.5,-0.00001}".to_owned())),
                ("2".to_owned(), Some("{1,2,3}".to_owned())),
            ],
        );
        assert_eq!(read(), want, "fresh");
        shard.commit().unwrap();
        assert_eq!(read(), want, "committed");
    }
}

mod engine_answers {
    use super::delete_of;
    use crate::search::{self, GeoQuery, Scope, VectorQuery};
    use crate::shard::*;

    fn index() -> ResolvedIndex {
        crate::schema::test_index(
            &["id", "region", "lat", "lon", "emb"],
            None,
            Some((2, 3)),
            Some((4, 2)),
        )
    }

    fn row(id: u32, region: &str, lat: f64, emb: &str) -> Change {
        let cells = [
            Some(id.to_string()),
            Some(region.into()),
            Some(lat.to_string()),
            Some("0".into()),
            Some(emb.into()),
        ];
        Change::Upsert {
            index: 0,
            old_key: None,
            new: cells.into_iter().map(Cell::Value).collect(),
        }
    }

    fn answers(view: &ShardView) -> (Vec<String>, Vec<String>) {
        let scope = Scope::all(0);
        let geo = search::geo(
            view,
            &scope,
            &GeoQuery::Within {
                lat: 0.0,
                lon: 0.0,
                radius_m: 2e7,
            },
            100,
        );
        let q = VectorQuery {
            values: vec![1.0, 0.0],
            k: 100,
            ef: None,
            exact: false,
            filter: None,
            fields_filter: None,
            cancel: None,
        };
        let vec = search::vector(view, &scope, &q).unwrap();
        let mut g: Vec<String> = geo
            .into_iter()
            .map(|h| format!("{}@{}", h.key, h.region))
            .collect();
        let mut v: Vec<String> = vec
            .into_iter()
            .map(|h| format!("{}@{}", h.key, h.region))
            .collect();
        g.sort();
        v.sort();
        (g, v)
    }

    #[test]
    fn truncate_moves_and_deletes_reach_every_engine_before_and_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![index()], 100).unwrap();
        let tx = Transaction::at;
        shard
            .apply(&tx(
                10,
                vec![
                    row(1, "eu", 1.0, "{1,0}"),
                    row(2, "eu", 2.0, "{0,1}"),
                    row(3, "as", 3.0, "{1,1}"),
                ],
            ))
            .unwrap();
        shard.make_searchable(Lsn(10));
        shard.commit().unwrap();
        for job in shard.take_graph_jobs() {
            job.run(&std::sync::atomic::AtomicBool::new(false));
        }
        let all = (
            vec!["1@eu".to_owned(), "2@eu".into(), "3@as".into()],
            vec!["1@eu".to_owned(), "2@eu".into(), "3@as".into()],
        );
        assert_eq!(answers(&view.load().unwrap()), all);

        // A move and a delete, searchable before they are durable, equal after.
        let delete = delete_of("2", 5);
        shard
            .apply(&tx(20, vec![row(1, "as", 1.0, "{1,0}"), delete]))
            .unwrap();
        shard.make_searchable(Lsn(20));
        let moved = (
            vec!["1@as".to_owned(), "3@as".into()],
            vec!["1@as".to_owned(), "3@as".into()],
        );
        assert_eq!(answers(&view.load().unwrap()), moved);
        shard.commit().unwrap();
        assert_eq!(
            answers(&view.load().unwrap()),
            moved,
            "before the graph has the new version"
        );
        for job in shard.take_graph_jobs() {
            job.run(&std::sync::atomic::AtomicBool::new(false));
        }
        assert_eq!(answers(&view.load().unwrap()), moved, "after");

        // TRUNCATE then one row: only that row, before and after the commit that rebuilds.
        shard
            .apply(&tx(
                30,
                vec![Change::Truncate { index: 0 }, row(4, "eu", 4.0, "{2,0}")],
            ))
            .unwrap();
        shard.make_searchable(Lsn(30));
        let only = (vec!["4@eu".to_owned()], vec!["4@eu".to_owned()]);
        assert_eq!(answers(&view.load().unwrap()), only);
        shard.commit().unwrap();
        assert_eq!(answers(&view.load().unwrap()), only);
        for job in shard.take_graph_jobs() {
            job.run(&std::sync::atomic::AtomicBool::new(false));
        }
        assert_eq!(answers(&view.load().unwrap()), only);
    }

    #[test]
    fn a_cancelled_vector_scan_stops_with_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![index()], 100).unwrap();
        // 3,000 committed vectors (three chunks of the store) and 1,500 fresh ones.
        let rows = |from: u32, to: u32| -> Vec<Change> {
            (from..to)
                .map(|i| row(i, "eu", 1.0, &format!("{{1,{}}}", i % 17)))
                .collect()
        };
        shard.apply(&Transaction::at(10, rows(0, 3_000))).unwrap();
        shard.make_searchable(Lsn(10));
        shard.commit().unwrap();
        shard
            .apply(&Transaction::at(20, rows(3_000, 4_500)))
            .unwrap();
        shard.make_searchable(Lsn(20));
        let v = view.load().unwrap();
        let query = |cancel: Option<search::Cancel>| VectorQuery {
            values: vec![1.0, 0.5],
            k: 4_500,
            ef: None,
            exact: true,
            filter: None,
            fields_filter: None,
            cancel,
        };
        let all = search::vector(&v, &Scope::all(0), &query(None)).unwrap();
        assert_eq!(all.len(), 4_500);
        let live = search::Cancel::default();
        let uncancelled = search::vector(&v, &Scope::all(0), &query(Some(live))).unwrap();
        assert_eq!(uncancelled.len(), 4_500);
        let cancel = search::Cancel::default();
        cancel.cancel();
        let stopped = search::vector(&v, &Scope::all(0), &query(Some(cancel))).unwrap();
        assert!(stopped.is_empty(), "{} hits", stopped.len());
        // Past its deadline, the scan stops too.
        let late = search::Cancel::within(std::time::Duration::ZERO);
        assert!(search::vector(&v, &Scope::all(0), &query(Some(late)))
            .unwrap()
            .is_empty());
    }
}

/// A DELETE of `key` as pgoutput sends it: the key cell, the others empty.
fn delete_of(key: &str, columns: usize) -> Change {
    let mut old = vec![Cell::Value(None); columns];
    old[0] = Cell::Value(Some(key.into()));
    Change::Delete { index: 0, old }
}

mod text_answers {
    use super::{delete_of, keys};
    use crate::search::{self, Scope, TextSearch};
    use crate::shard::*;
    use crate::text::{Operator, TextQuery};

    fn index() -> ResolvedIndex {
        let mut ix =
            crate::schema::test_index(&["id", "region", "name", "body"], Some(3), None, None);
        ix.text.insert(
            0,
            crate::schema::TextSpec {
                column: 2,
                boost: 2.0,
                language: None,
            },
        );
        ix
    }

    fn row(id: u32, region: &str, name: &str, body: &str) -> Change {
        let cells = [
            Some(id.to_string()),
            Some(region.into()),
            Some(name.into()),
            Some(body.into()),
        ];
        Change::Upsert {
            index: 0,
            old_key: None,
            new: cells.into_iter().map(Cell::Value).collect(),
        }
    }

    /// (key@region, score) best first.
    fn find(view: &ShardView, q: &str, op: Operator) -> Vec<(String, f32)> {
        let (_, fields) = crate::partition::Fields::schema(&index());
        let search = TextSearch::top(TextQuery::parse(q, op, &fields.text).unwrap(), 100);
        let scope = Scope::all(0);
        search::text(view, &scope, &search)
            .unwrap()
            .hits
            .into_iter()
            .map(|h| (format!("{}@{}", h.key, h.region), h.score.unwrap()))
            .collect()
    }

    #[test]
    fn a_word_repeated_in_the_query_is_counted_once_over_fresh_documents() {
        // Every document fresh and holding "paris": a repeated word once counted twice per
        // fresh document, a document frequency above the document count (tantivy panicked).
        let dir = tempfile::tempdir().unwrap();
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![index()], 10_000).unwrap();
        shard
            .apply(&Transaction::at(
                10,
                vec![
                    row(1, "eu", "Paris", "Paris again"),
                    row(2, "eu", "Paris", "Paris, Texas"),
                ],
            ))
            .unwrap();
        shard.make_searchable(Lsn(10));
        let v = view.load().unwrap();
        let hits = find(&v, "paris texas OR paris", Operator::And);
        assert_eq!(hits.len(), 2, "{hits:?}");
        shard.commit().unwrap();
        shard
            .apply(&Transaction::at(20, vec![row(3, "eu", "Paris", "Paris")]))
            .unwrap();
        shard.make_searchable(Lsn(20));
        let v = view.load().unwrap();
        assert_eq!(find(&v, "paris paris name:paris", Operator::And).len(), 3);
    }

    #[test]
    fn fresh_and_committed_documents_rank_alike_and_shadow_correctly() {
        let dir = tempfile::tempdir().unwrap();
        let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![index()], 10_000).unwrap();
        let tx = Transaction::at;
        shard
            .apply(&tx(
                10,
                vec![
                    row(1, "eu", "Paris", "Capital of France, on the Seine."),
                    row(
                        2,
                        "na",
                        "Paris",
                        "A city in Texas named after Paris, France.",
                    ),
                    row(
                        3,
                        "eu",
                        "Lyon",
                        "A city in France on the Rhône; not far from Paris.",
                    ),
                    row(4, "as", "東京", "Tokyo, Japan. Also known as 東京都."),
                    row(5, "eu", "Zürich", "Largest city of Switzerland."),
                ],
            ))
            .unwrap();
        shard.make_searchable(Lsn(10));
        let v = view.load().unwrap();
        let fresh = find(&v, "paris", Operator::And);
        // The name boost puts the two Parises first (Texas's also says Paris in its body).
        assert_eq!(keys(&fresh)[..2], ["2@na", "1@eu"]);
        assert_eq!(keys(&fresh)[2], "3@eu");

        shard.commit().unwrap();
        let v = view.load().unwrap();
        let committed = find(&v, "paris", Operator::And);
        assert_eq!(keys(&committed), keys(&fresh));
        for ((_, a), (_, b)) in fresh.iter().zip(&committed) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs(),
                "fresh {a} vs committed {b}"
            );
        }

        // Query forms.
        assert_eq!(
            keys(&find(&v, "\"capital of france\"", Operator::And)),
            ["1@eu"]
        );
        assert_eq!(
            keys(&find(&v, "\"france capital\"", Operator::And)),
            Vec::<&str>::new()
        );
        assert_eq!(
            keys(&find(&v, "paris -texas", Operator::And)),
            ["1@eu", "3@eu"]
        );
        assert_eq!(keys(&find(&v, "name:paris texas", Operator::And)), ["2@na"]);
        assert_eq!(keys(&find(&v, "zurich", Operator::And)), ["5@eu"], "folded");
        assert_eq!(keys(&find(&v, "zur*", Operator::And)), ["5@eu"]);
        assert_eq!(keys(&find(&v, "swizerland~1", Operator::And)), ["5@eu"]);
        assert!(find(&v, "swizterlnd~1", Operator::And).is_empty());
        assert_eq!(
            keys(&find(&v, "京都", Operator::And)),
            ["4@as"],
            "CJK bigram"
        );
        let mut either = keys(&find(&v, "texas OR tokyo", Operator::And))
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        either.sort();
        assert_eq!(either, ["2@na", "4@as"]);
        assert_eq!(find(&v, "texas tokyo", Operator::And).len(), 0);
        assert_eq!(find(&v, "texas tokyo", Operator::Or).len(), 2);

        // An update that drops the word hides the committed version at once; a delete too.
        shard
            .apply(&tx(
                20,
                vec![
                    row(1, "eu", "Paname", "Capital of France."),
                    delete_of("3", 4),
                ],
            ))
            .unwrap();
        shard.make_searchable(Lsn(20));
        let v = view.load().unwrap();
        assert_eq!(keys(&find(&v, "paris", Operator::And)), ["2@na"]);
        assert_eq!(keys(&find(&v, "paname", Operator::And)), ["1@eu"]);
        shard.commit().unwrap();
        let v = view.load().unwrap();
        assert_eq!(keys(&find(&v, "paris", Operator::And)), ["2@na"]);

        // Snippets mark the matched words.
        let (_, fields) = crate::partition::Fields::schema(&index());
        let query = TextQuery::parse("texas", Operator::And, &fields.text).unwrap();
        let search = TextSearch::top(query, 10);
        let scope = Scope::all(0);
        let answer = search::text(&v, &scope, &search).unwrap();
        assert_eq!(answer.total, 1);
        assert_eq!(answer.hits[0].highlights.len(), 1);
        assert!(answer.hits[0].highlights[0].1.contains("<b>Texas</b>"));
    }
}
