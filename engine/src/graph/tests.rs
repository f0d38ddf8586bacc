//! The graph's tests: build, copy and watermark, dump and reload (lazily, damaged, replaced).

use super::*;

/// Inserts one vector as the write before sequence number 1.
fn insert_one(g: &Graph, id: u64, v: &[f32]) {
    g.insert(
        &[GraphBatch::Copied(vec![item(id, v.to_vec())])],
        1,
        &AtomicBool::new(false),
    );
}

fn item(id: u64, vector: Vec<f32>) -> GraphItem {
    GraphItem {
        id,
        key: Arc::from(id.to_string()),
        vector,
    }
}

#[test]
fn a_dump_reloads_for_unchanged_keys_only() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("graph");
    let mut store = VectorStore::new(2, Metric::L2);
    let mut items = Vec::new();
    for i in 0..300u32 {
        let key = i.to_string();
        let v = vec![i as f32, (i % 7) as f32];
        let id = store.set(&key, Some(&v)).unwrap();
        items.push(GraphItem {
            id,
            key: Arc::from(key.as_str()),
            vector: v,
        });
    }
    let g = Graph::new(Metric::L2, 2, 300);
    g.insert(&[GraphBatch::Copied(items)], 300, &AtomicBool::new(false));
    g.dump(&gdir).unwrap();
    // A restart rebuilds the store in another order; one key changed, one was deleted.
    let mut store2 = VectorStore::new(2, Metric::L2);
    for i in (0..300u32).rev() {
        let v = match i {
            5 => vec![1000.0, 0.0],
            _ => vec![i as f32, (i % 7) as f32],
        };
        if i != 9 {
            store2.set(&i.to_string(), Some(&v));
        }
    }
    let (g2, have) = Graph::load(&gdir, Metric::L2, &store2).unwrap();
    assert_eq!(have.len(), 298, "all but the changed and the deleted key");
    assert!(
        !g2.insertable_in_memory(),
        "searched from the dump's copy, hnsw_rs not loaded"
    );
    assert!(Graph::load(&gdir, Metric::Cosine, &store2).is_none());
    // Hits are current store ids; the stale versions are gone.
    for id in g2.search(&[5.0, 5.0], 10, 64) {
        let (key, _, _) = store2.by_id(id).expect("a current id");
        assert!(&**key != "5" && &**key != "9");
    }
    let (near, _, _) = store2.by_id(g2.search(&[100.0, 2.0], 1, 64)[0]).unwrap();
    assert_eq!(&**near, "100");
    // New inserts after the reload get ids of the new epoch, found as store ids.
    let (id5, v5) = store2.id_of("5").unwrap();
    g2.insert(
        &[GraphBatch::Copied(vec![GraphItem {
            id: id5,
            key: Arc::from("5"),
            vector: v5.to_vec(),
        }])],
        1,
        &AtomicBool::new(false),
    );
    assert!(
        g2.insertable_in_memory(),
        "the insert loaded hnsw_rs's graph"
    );
    // One new point in 300 is not worth a new copy yet: searches do not see it, and the
    // watermark says so (the exact scanner covers it), until the builder's tick copies.
    assert_eq!(g2.graphed(), 0);
    assert_ne!(g2.search(&[1000.0, 0.0], 1, 64), [id5]);
    g2.freeze();
    assert_eq!(g2.graphed(), 1);
    assert_eq!(g2.search(&[1000.0, 0.0], 1, 64), [id5]);
    // The copy holds the reloaded points beside the new one.
    let (near, _, _) = store2.by_id(g2.search(&[100.0, 2.0], 1, 64)[0]).unwrap();
    assert_eq!(&**near, "100");
    // Dumped again (copy and all) and reloaded: the same answers.
    g2.dump(&gdir).unwrap();
    let (g3, have) = Graph::load(&gdir, Metric::L2, &store2).unwrap();
    assert_eq!(have.len(), 299);
    assert_eq!(g3.search(&[1000.0, 0.0], 1, 64), [id5]);
}

/// A dump of 300 points in `dir`, its store, and a query's expected nearest key.
fn dumped(dir: &Path) -> VectorStore {
    let mut store = VectorStore::new(2, Metric::L2);
    let items: Vec<GraphItem> = (0..300u32)
        .map(|i| {
            let key = i.to_string();
            let v = vec![i as f32, (i % 7) as f32];
            let id = store.set(&key, Some(&v)).unwrap();
            GraphItem {
                id,
                key: Arc::from(key.as_str()),
                vector: v,
            }
        })
        .collect();
    let g = Graph::new(Metric::L2, 2, 300);
    g.insert(&[GraphBatch::Copied(items)], 300, &AtomicBool::new(false));
    g.dump(dir).unwrap();
    store
}

fn nearest_key(g: &Graph, store: &VectorStore, q: &[f32]) -> String {
    let (key, _, _) = store.by_id(g.search(q, 1, 64)[0]).unwrap();
    key.to_string()
}

#[test]
fn a_dump_without_a_usable_copy_loads_hnsw_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("graph");
    let store = dumped(&gdir);
    // A dump from before the copy was written, then one whose copy is damaged.
    std::fs::remove_file(gdir.join(FROZEN_FILE)).unwrap();
    let (g, _) = Graph::load(&gdir, Metric::L2, &store).unwrap();
    assert!(g.insertable_in_memory());
    assert_eq!(nearest_key(&g, &store, &[100.0, 2.0]), "100");
    g.dump(&gdir).unwrap();
    let copy = gdir.join(FROZEN_FILE);
    let mut bytes = std::fs::read(&copy).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&copy, &bytes).unwrap();
    let (g, _) = Graph::load(&gdir, Metric::L2, &store).unwrap();
    assert!(g.insertable_in_memory(), "a damaged copy is not used");
    assert_eq!(nearest_key(&g, &store, &[100.0, 2.0]), "100");
}

#[test]
fn a_reloaded_graph_does_not_take_a_later_dump_for_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("graph");
    let mut store = dumped(&gdir);
    let (g, _) = Graph::load(&gdir, Metric::L2, &store).unwrap();
    // A graph rebuilt meanwhile dumps into the same directory.
    let id = store.set("other", Some(&[-5.0, 0.0])).unwrap();
    let rebuilt = Graph::new(Metric::L2, 2, 10);
    insert_one(&rebuilt, id, &[-5.0, 0.0]);
    rebuilt.dump(&gdir).unwrap();
    let id = store.set("new", Some(&[5000.0, 0.0])).unwrap();
    insert_one(&g, id, &[5000.0, 0.0]);
    assert!(g.broken(), "the later dump is not this graph's");
    assert_eq!(
        nearest_key(&g, &store, &[100.0, 2.0]),
        "100",
        "its copy still answers"
    );
}

#[test]
fn a_graph_whose_hnsw_cannot_load_keeps_searching_and_asks_for_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("graph");
    let mut store = dumped(&gdir);
    let (g, _) = Graph::load(&gdir, Metric::L2, &store).unwrap();
    for f in std::fs::read_dir(&gdir).unwrap() {
        let path = f.unwrap().path();
        if path.to_string_lossy().contains("hnsw") {
            std::fs::write(&path, b"damaged").unwrap();
        }
    }
    assert!(!g.broken());
    let id = store.set("new", Some(&[5000.0, 0.0])).unwrap();
    insert_one(&g, id, &[5000.0, 0.0]);
    assert!(g.broken(), "the partition rebuilds it");
    assert_eq!(
        g.graphed(),
        0,
        "the new vector stays with the exact scanner"
    );
    g.freeze();
    assert_eq!(
        nearest_key(&g, &store, &[100.0, 2.0]),
        "100",
        "the copy still answers"
    );
    assert_ne!(nearest_key(&g, &store, &[5000.0, 0.0]), "new");
    g.dump(&gdir).unwrap();
    assert!(
        gdir.join(FROZEN_FILE).exists(),
        "the dump on disk is left as it was"
    );
}

#[test]
fn finds_near_points_and_tracks_the_watermark() {
    let g = Graph::new(Metric::L2, 2, 100);
    let items: Vec<GraphItem> = (0..200u64).map(|i| item(i, vec![i as f32, 0.0])).collect();
    g.insert(&[GraphBatch::Copied(items)], 200, &AtomicBool::new(false));
    assert_eq!(g.graphed(), 200);
    assert_eq!(g.points(), 200);
    let hits = g.search(&[50.2, 0.0], 3, 32);
    assert_eq!(hits[0], 50);
    assert!(hits.contains(&51) && hits.contains(&49));
    // A stopping builder skips the rest and leaves the watermark.
    let more: Vec<GraphItem> = (200..300u64)
        .map(|i| item(i, vec![i as f32, 0.0]))
        .collect();
    g.insert(&[GraphBatch::Copied(more)], 300, &AtomicBool::new(true));
    assert_eq!((g.graphed(), g.points()), (200, 200));
}

#[test]
fn a_stored_batch_reads_its_store_as_of_when_it_was_taken() {
    let mut store = VectorStore::new(2, Metric::L2);
    for i in 0..100u32 {
        store.set(&i.to_string(), Some(&[i as f32, 0.0]));
    }
    let taken = Arc::new(store.clone());
    let batch = GraphBatch::all(&taken);
    // Later writes to the store do not change what the batch names.
    store.set("7", Some(&[500.0, 0.0]));
    store.set("8", None);
    drop(store);
    let g = Graph::new(Metric::L2, 2, 100);
    g.insert(&[batch], 100, &AtomicBool::new(false));
    assert_eq!(g.points(), 100);
    let near = |q: [f32; 2]| taken.by_id(g.search(&q, 1, 32)[0]).unwrap().0.to_string();
    assert_eq!(near([7.1, 0.0]), "7");
    assert_eq!(near([8.2, 0.0]), "8");
    assert_eq!(near([499.0, 0.0]), "99");
}

#[test]
fn cosine_graph_ranks_by_angle_and_survives_rounding() {
    let g = Graph::new(Metric::Cosine, 2, 100);
    let items: Vec<GraphItem> = (0..90u64)
        .map(|d| {
            let a = (d as f32).to_radians();
            let r = 1.0 + d as f32;
            item(d, vec![a.cos() * r, a.sin() * r])
        })
        .collect();
    g.insert(&[GraphBatch::Copied(items)], 90, &AtomicBool::new(false));
    // Identical directions round to a distance of ~0: clamped, never negative.
    assert_eq!(g.search(&[2.0, 0.0], 1, 16), [0]);
    assert_eq!(g.search(&[0.0, 1.0], 1, 32), [89]);
}

#[test]
fn quantised_cosine_orders_like_cosine_in_high_dimensions() {
    // 400 pseudo-random 128-d directions: the nearest by 8-bit distance is the nearest.
    let mut s = 7u64;
    let mut rnd = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let items: Vec<GraphItem> = (0..400u64)
        .map(|i| item(i, (0..128).map(|_| rnd()).collect()))
        .collect();
    let g = Graph::new(Metric::Cosine, 128, 400);
    assert!(matches!(g.kind().as_deref(), Some(Kind::CosineI8(_))));
    g.insert(
        &[GraphBatch::Copied(items.clone())],
        400,
        &AtomicBool::new(false),
    );
    for probe in items.iter().step_by(37) {
        assert_eq!(g.search(&probe.vector, 1, 64), [probe.id]);
    }
    let (a, b) = (&items[0].vector, &items[1].vector);
    let exact = 1.0 - dot8(&unit(a), &unit(b));
    let approx = UnitCosineI8.eval(&quantize(a), &quantize(b));
    assert!((exact - approx).abs() < 0.005, "{exact} vs {approx}");
}

#[test]
fn distances_agree_with_scalar_formulas() {
    let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.1).collect();
    let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32 * 0.05).collect();
    let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
    assert!((dot8(&a, &b) - dot).abs() < 1e-4);
    assert!((SquaredL2.eval(&a, &b) - l2).abs() < 1e-4);
    assert!((NegDot.eval(&a, &b) + dot).abs() < 1e-4);
}

#[test]
fn an_idle_graph_drops_hnsw_once_dumped_and_loads_it_back_for_the_next_insert() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("graph");
    let mut store = VectorStore::new(2, Metric::L2);
    let items: Vec<GraphItem> = (0..300u32)
        .map(|i| {
            let (key, v) = (i.to_string(), vec![i as f32, (i % 7) as f32]);
            GraphItem {
                id: store.set(&key, Some(&v)).unwrap(),
                key: Arc::from(key.as_str()),
                vector: v,
            }
        })
        .collect();
    let g = Graph::new(Metric::L2, 2, 300);
    g.insert(&[GraphBatch::Copied(items)], 300, &AtomicBool::new(false));
    let now = std::time::Duration::ZERO;
    assert!(
        !g.unload_if_idle(now),
        "points its dump lacks keep it in memory"
    );
    assert!(g.wants_idle_dump(now));
    assert!(
        !g.wants_idle_dump(std::time::Duration::from_secs(3600)),
        "not idle for an hour"
    );
    g.dump(&gdir).unwrap();
    assert!(!g.wants_idle_dump(now));
    assert!(
        !g.unload_if_idle(std::time::Duration::from_secs(3600)),
        "not idle for an hour"
    );
    assert!(g.unload_if_idle(now));
    assert!(!g.insertable_in_memory());
    assert!(!g.unload_if_idle(now), "dropped once");
    assert_eq!(
        nearest_key(&g, &store, &[100.0, 2.0]),
        "100",
        "the copy answers"
    );
    // Dumping a graph not in memory leaves the dump as it is (it is this graph).
    g.dump(&gdir).unwrap();
    // The next insert loads it back from the dump, with the ids this graph gave.
    let new = GraphItem {
        id: store.set("new", Some(&[5000.0, 0.0])).unwrap(),
        key: Arc::from("new"),
        vector: vec![5000.0, 0.0],
    };
    g.insert(
        &[GraphBatch::Copied(vec![new])],
        301,
        &AtomicBool::new(false),
    );
    assert!(g.insertable_in_memory() && !g.broken());
    g.freeze();
    assert_eq!(nearest_key(&g, &store, &[5000.0, 0.0]), "new");
    assert_eq!(nearest_key(&g, &store, &[100.0, 2.0]), "100");
    assert_eq!(g.points(), 301);
    // Dumped and dropped again, then reloaded at a restart: every point is there.
    g.dump(&gdir).unwrap();
    assert!(*g.load_took.lock().unwrap() > now, "the load was timed");
    // A graph whose load took long is kept for twenty times that (a second's load: kept
    // 15 s after its last insert, dropped at 25 s). Set, not waited for: a test's timing
    // is the machine's.
    *g.load_took.lock().unwrap() = std::time::Duration::from_secs(1);
    *g.last_insert.lock().unwrap() -= std::time::Duration::from_secs(15);
    assert!(!g.unload_if_idle(now), "kept for twenty times its load");
    *g.last_insert.lock().unwrap() -= std::time::Duration::from_secs(10);
    assert!(g.unload_if_idle(now));
    let (g2, have) = Graph::load(&gdir, Metric::L2, &store).unwrap();
    assert_eq!(have.len(), 301);
    assert_eq!(nearest_key(&g2, &store, &[5000.0, 0.0]), "new");
}

#[test]
fn a_dropped_graph_does_not_load_a_rebuilt_graphs_dump_of_the_same_size() {
    let dir = tempfile::tempdir().unwrap();
    let gdir = dir.path().join("graph");
    let mut store = VectorStore::new(2, Metric::L2);
    let a = store.set("a", Some(&[1.0, 0.0])).unwrap();
    let g = Graph::new(Metric::L2, 2, 10);
    insert_one(&g, a, &[1.0, 0.0]);
    g.dump(&gdir).unwrap();
    assert!(g.unload_if_idle(std::time::Duration::ZERO));
    // A graph rebuilt meanwhile: same epoch (0), same number of points, other contents.
    let b = store.set("b", Some(&[-7.0, 0.0])).unwrap();
    let rebuilt = Graph::new(Metric::L2, 2, 10);
    insert_one(&rebuilt, b, &[-7.0, 0.0]);
    rebuilt.dump(&gdir).unwrap();
    let c = store.set("c", Some(&[9.0, 0.0])).unwrap();
    insert_one(&g, c, &[9.0, 0.0]);
    assert!(g.broken(), "the dump on disk is not this graph's");
    assert_eq!(
        nearest_key(&g, &store, &[1.0, 0.0]),
        "a",
        "its copy still answers"
    );
}

#[test]
fn a_failed_dump_is_not_retried_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let g = Graph::new(Metric::L2, 2, 10);
    insert_one(&g, 1, &[1.0, 0.0]);
    let now = std::time::Duration::ZERO;
    assert!(g.wants_idle_dump(now));
    // A partition directory removed meanwhile: the dump cannot be written.
    assert!(g.dump(&dir.path().join("gone").join("graph")).is_err());
    assert!(!g.wants_idle_dump(now), "each try writes every point");
    assert!(!g.wants_dump());
    assert!(!g.unload_if_idle(now), "its points are in no dump");
    g.dump(&dir.path().join("graph")).unwrap();
    assert!(g.unload_if_idle(now));
}
