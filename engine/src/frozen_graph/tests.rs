//! The searchable copy's tests: nearest points, written and read back, damaged copies.

use super::*;
use crate::graph::SquaredL2;

#[test]
fn finds_the_nearest_points() {
    // 3,000 pseudo-random 8-d points: the copy finds the exact nearest ones as well as
    // hnsw_rs' own search of the same graph does.
    let mut s = 11u64;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32
    };
    let pts: Vec<Vec<f32>> = (0..3_000)
        .map(|_| (0..8).map(|_| rnd()).collect())
        .collect();
    let hnsw: Hnsw<f32, SquaredL2> = Hnsw::new(16, pts.len(), 16, 100, SquaredL2);
    for (i, p) in pts.iter().enumerate() {
        hnsw.insert_slice((p, i));
    }
    let frozen = FrozenGraph::of(&hnsw, SquaredL2);
    assert_eq!(frozen.len(), pts.len());
    let (mut ours, mut theirs, mut total) = (0, 0, 0);
    for probe in (0..pts.len()).step_by(31) {
        let q: Vec<f32> = pts[probe].iter().map(|x| x + 0.01).collect();
        let mut exact: Vec<(f32, usize)> = pts
            .iter()
            .enumerate()
            .map(|(i, p)| (SquaredL2.eval(&q, p), i))
            .collect();
        exact.sort_by(|a, b| a.0.total_cmp(&b.0));
        let want: Vec<usize> = exact.iter().take(10).map(|e| e.1).collect();
        let found = frozen.search(&q, 10, 64);
        assert_eq!(found.len(), 10);
        assert_eq!(found[0], want[0], "probe {probe}: the nearest first");
        ours += found.iter().filter(|i| want.contains(i)).count();
        theirs += hnsw
            .search(&q, 10, 64)
            .iter()
            .filter(|n| want.contains(&n.d_id))
            .count();
        total += 10;
    }
    let recall = ours as f64 / total as f64;
    assert!(recall >= 0.98, "recall@10 {recall}");
    assert!(ours >= theirs, "ours {ours}, hnsw_rs {theirs} of {total}");
    // Wrong width or k = 0: nothing, no panic.
    assert!(frozen.search(&[1.0], 5, 64).is_empty());
    assert!(frozen.search(&pts[0], 0, 64).is_empty());
}

#[test]
fn a_written_copy_reads_back_the_same_and_a_damaged_one_does_not() {
    let hnsw: Hnsw<f32, SquaredL2> = Hnsw::new(16, 2_000, 16, 100, SquaredL2);
    for i in 0..2_000usize {
        let p = [(i % 50) as f32, (i / 50) as f32, (i % 7) as f32];
        hnsw.insert_slice((&p, i * 3));
    }
    let frozen = FrozenGraph::of(&hnsw, SquaredL2);
    let mut bytes = Vec::new();
    frozen.write_to(&mut bytes).unwrap();
    let back = FrozenGraph::read_from(&bytes[..], SquaredL2).unwrap();
    assert_eq!(back.len(), 2_000);
    assert_eq!(back.data, frozen.data);
    assert_eq!(back.ids, frozen.ids);
    assert_eq!(back.level0, frozen.level0);
    assert_eq!(back.upper, frozen.upper);
    assert_eq!(back.entry, frozen.entry);
    for q in [[3.0, 7.0, 1.0], [49.0, 0.0, 6.0]] {
        assert_eq!(back.search(&q, 10, 64), frozen.search(&q, 10, 64));
    }
    for at in [3, 40, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x10;
        assert!(
            FrozenGraph::read_from(&bad[..], SquaredL2).is_err(),
            "byte {at}"
        );
    }
    assert!(FrozenGraph::read_from(&bytes[..bytes.len() - 9], SquaredL2).is_err());
    for len in (0..bytes.len()).step_by(997) {
        assert!(
            FrozenGraph::read_from(&bytes[..len], SquaredL2).is_err(),
            "cut at {len}"
        );
    }
    // A damaged count asks for more than any machine has, or overflows: an error, not
    // an allocation failure.
    for n in [1u64 << 40, 1 << 62, u64::MAX] {
        let mut huge = bytes.clone();
        huge[16..24].copy_from_slice(&n.to_le_bytes());
        assert!(FrozenGraph::read_from(&huge[..], SquaredL2).is_err(), "{n}");
    }
    // 8-bit components and an empty copy too.
    let empty: Hnsw<f32, SquaredL2> = Hnsw::new(16, 10, 16, 100, SquaredL2);
    let mut bytes = Vec::new();
    FrozenGraph::of(&empty, SquaredL2)
        .write_to(&mut bytes)
        .unwrap();
    assert!(FrozenGraph::read_from(&bytes[..], SquaredL2)
        .unwrap()
        .is_empty());
}

#[test]
fn an_empty_graph_finds_nothing() {
    let hnsw: Hnsw<f32, SquaredL2> = Hnsw::new(16, 10, 16, 100, SquaredL2);
    let frozen = FrozenGraph::of(&hnsw, SquaredL2);
    assert!(frozen.is_empty());
    assert!(frozen.search(&[0.0, 0.0], 3, 10).is_empty());
}
