//! What rescoring a graph walk's beam costs: a mapped store of N 384-d vectors, then per
//! query 2,500 random ids in slot order (a global query's beams at 1M rows) looked up and
//! scored in f64, candidate by candidate or every lookup first (as `search/vector.rs` does:
//! the lookups' cache misses then overlap), in interleaved rounds; prints the median
//! microseconds per query of each. (Reading each vector's cache lines ahead as well, as the
//! graph walk does, measured slower.)
//!
//!   cargo run --release -p engine --example rescore -- 1000000

use std::time::Instant;

use engine::schema::Metric;
use engine::vector::{inv_norm, score, VectorStore};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("a number of vectors"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut store = VectorStore::mapped(384, Metric::Cosine, dir.path());
    let mut rng = 12345u64;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        rng >> 33
    };
    for i in 0..n {
        let v: Vec<f32> = (0..384)
            .map(|j| ((i * 31 + j * 7) % 97) as f32 / 97.0 - 0.5)
            .collect();
        store.set(&i.to_string(), Some(&v));
    }
    let ids = store.live_ids();
    let q: Vec<f32> = (0..384).map(|j| (j % 13) as f32 / 13.0 - 0.5).collect();
    let q_inv = inv_norm(&q);
    for ahead in [false, true, false, true] {
        let mut per_query = Vec::new();
        let mut sum = 0.0;
        for _ in 0..7 {
            let started = Instant::now();
            for _ in 0..200 {
                let mut beam: Vec<u64> = (0..2_500)
                    .map(|_| ids[next() as usize % ids.len()])
                    .collect();
                beam.sort_unstable();
                if ahead {
                    let found: Vec<(&[f32], f64)> = beam
                        .iter()
                        .filter_map(|&id| store.by_id(id).map(|(_, v, inv)| (v, inv)))
                        .collect();
                    for (v, inv) in found {
                        sum += score(Metric::Cosine, &q, q_inv, v, inv);
                    }
                } else {
                    for id in beam {
                        if let Some((_, v, inv)) = store.by_id(id) {
                            sum += score(Metric::Cosine, &q, q_inv, v, inv);
                        }
                    }
                }
            }
            per_query.push(started.elapsed().as_secs_f64() * 1e6 / 200.0);
        }
        per_query.sort_by(f64::total_cmp);
        println!(
            "{n} vectors, lookups first {ahead}: {:.0} µs a query of 2,500 rescored (median of 7; min {:.0}, max {:.0}; {sum:.1})",
            per_query[3], per_query[0], per_query[6]
        );
    }
}
