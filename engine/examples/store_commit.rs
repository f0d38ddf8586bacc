//! What a commit's copy-on-write costs the vector store: a store of N 384-d vectors, then
//! rounds of 1,000 updates at random keys applied to a copy while a reader holds the old
//! version (as the committer does), for the store on the heap and in a mapped file.
//!
//!   cargo run --release -p engine --example store_commit -- 300000

use std::sync::Arc;
use std::time::Instant;

use engine::schema::Metric;
use engine::vector::VectorStore;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(300_000, |a| a.parse().expect("a number of vectors"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, mut store) in [
        ("heap", VectorStore::new(384, Metric::Cosine)),
        (
            "mapped",
            VectorStore::mapped(384, Metric::Cosine, dir.path()),
        ),
    ] {
        let v: Vec<f32> = (0..384).map(|i| i as f32 / 384.0).collect();
        for i in 0..n {
            store.set(&i.to_string(), Some(&v));
        }
        let mut rng = 12345u64;
        let mut ms = Vec::new();
        for round in 0..11 {
            let reader = Arc::new(store.clone());
            let started = Instant::now();
            let mut next = (*reader).clone();
            for j in 0..1000 {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let mut w = v.clone();
                w[0] = (round * 1000 + j) as f32;
                next.set(&((rng >> 33) as usize % n).to_string(), Some(&w));
            }
            ms.push(started.elapsed().as_secs_f64() * 1e3);
            store = next;
            drop(reader);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "{name}: {n} vectors, a commit of 1,000 scattered updates: median {:.1} ms \
             (min {:.1}, max {:.1}, 11 rounds); mapped file {} MB",
            ms[5],
            ms[0],
            ms[10],
            store.file_bytes() >> 20
        );
    }
}
