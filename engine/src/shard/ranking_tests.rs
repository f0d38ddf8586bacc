//! Ranking rules (`RankingSpec`) and lenient queries (`Leniency`) over a shard: the name
//! field's full matches first, popularity inside, typo and prefix alternatives below exact
//! matches, and the same scores whether a document is fresh or committed.

use super::tests::keys;
use super::*;
use crate::filter::FilterKind;
use crate::search::{self, Scope, TextSearch};
use crate::text::{Leniency, Operator, TextQuery};

fn index() -> ResolvedIndex {
    let mut ix = crate::schema::test_index(
        &["id", "region", "name", "body", "population"],
        Some(3),
        None,
        None,
    );
    ix.text.insert(
        0,
        crate::schema::TextSpec {
            column: 2,
            boost: 2.0,
            language: None,
        },
    );
    ix.filters.push(crate::schema::FilterSpec {
        column: 4,
        kind: FilterKind::Int,
    });
    ix.ranking = crate::schema::RankingSpec {
        name_field: Some(0),
        popularity: Some(0),
        weight: 2.0,
    };
    ix
}

fn row(id: u32, name: &str, body: &str, population: Option<i64>) -> Change {
    let cells = [
        Some(id.to_string()),
        Some("eu".into()),
        Some(name.into()),
        Some(body.into()),
        population.map(|p| p.to_string()),
    ];
    Change::Upsert {
        index: 0,
        old_key: None,
        new: cells.into_iter().map(Cell::Value).collect(),
    }
}

/// (key, score) best first, with typos and the last word as a prefix when `lenient`.
fn find(view: &ShardView, q: &str, lenient: bool) -> Vec<(String, f32)> {
    let (_, fields) = crate::partition::Fields::schema(&index());
    let leniency = Leniency {
        typo: lenient,
        prefix_last: lenient,
        name_field: fields.ranking.name_field,
    };
    let query = TextQuery::parse_with(q, Operator::And, &fields.text, leniency).unwrap();
    search::text(view, &Scope::all(0), &TextSearch::top(query, 100))
        .unwrap()
        .hits
        .into_iter()
        .map(|h| (h.key, h.score.unwrap()))
        .collect()
}

#[test]
fn name_matches_rank_first_by_popularity_and_lenient_words_below_exact_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (mut shard, view) = Shard::open_unobserved(dir.path(), vec![index()], 10_000).unwrap();
    shard
        .apply(&Transaction::at(
            10,
            vec![
                // Paris, Texas says "paris" more often, in a shorter text: plain BM25 put it
                // first; the name bucket ties them and popularity decides.
                row(1, "Paris", "Capital of France.", Some(2_138_551)),
                row(
                    2,
                    "Paris",
                    "Paris, Texas: Paris of the plains.",
                    Some(24_782),
                ),
                // Mentions Paris only in its body: below both, however populous.
                row(3, "Lyon", "Two hours from Paris by train.", Some(9_000_000)),
                row(4, "Amsterdam", "Capital of the Netherlands.", Some(741_636)),
                row(5, "Amstelveen", "Next to Amsterdam.", Some(90_000)),
                row(6, "Parish", "A parish with no population figure.", None),
            ],
        ))
        .unwrap();
    shard.make_searchable(Lsn(10));
    let fresh_view = view.load().unwrap();
    let fresh = find(&fresh_view, "paris", false);
    assert_eq!(keys(&fresh), ["1", "2", "3"], "{fresh:?}");
    assert!(fresh[1].1 >= crate::text::NAME_MATCH_SCORE && fresh[2].1 < 100.0);

    // Typo and prefix alternatives: "amster" finds Amsterdam by prefix (name bucket) and
    // Amstelveen's body; "amsterdm" within one edit; an exact match outranks a typo match.
    assert_eq!(keys(&find(&fresh_view, "amster", true))[0], "4");
    assert!(find(&fresh_view, "amster", false).is_empty());
    assert_eq!(keys(&find(&fresh_view, "amsterdm", true))[..2], ["4", "5"]);
    let lenient = find(&fresh_view, "paris", true);
    assert_eq!(keys(&lenient)[..2], ["1", "2"], "{lenient:?}");
    assert!(
        keys(&lenient).contains(&"6"),
        "parish is one edit away: {lenient:?}"
    );
    // Words shorter than 5 characters take no typo ("pari" is a prefix only as the last word).
    assert!(find(&fresh_view, "pari lyon", true).is_empty());

    // The same order and scores once committed (popularity read from the column there).
    let before: Vec<(String, f32)> = ["paris", "amster", "amsterdm", "france"]
        .iter()
        .flat_map(|q| find(&fresh_view, q, true))
        .collect();
    shard.commit().unwrap();
    let committed_view = view.load().unwrap();
    let after: Vec<(String, f32)> = ["paris", "amster", "amsterdm", "france"]
        .iter()
        .flat_map(|q| find(&committed_view, q, true))
        .collect();
    assert_eq!(keys(&after), keys(&before));
    for ((k, a), (_, b)) in before.iter().zip(&after) {
        assert!(
            (a - b).abs() <= 1e-4 * a.abs(),
            "{k}: fresh {a} vs committed {b}"
        );
    }
}
