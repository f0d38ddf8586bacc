//! What a walk of the searchable graph copies costs, on dumps a run left behind: every
//! `<dir>/<partition>/frozen.bin` (8-bit cosine copies, as `graph.rs` writes them) is read,
//! and the dev set's 200 vector queries walk each copy at a breadth (default 208: a global
//! query's first look at 1M rows, 1250 / 6 partitions). Prints how long reading the copies
//! took (a restart reads them) and the median over rounds of the microseconds per query (all
//! partitions, one after the other, one thread).
//!
//!   cargo run --release -p engine --example frozen_walk -- DIR [EF] [ROUNDS]

use std::time::Instant;

use engine::frozen_graph::FrozenGraph;
use engine::graph::{quantize, UnitCosineI8};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("a directory of <partition>/frozen.bin");
    let ef: usize = args.next().map_or(208, |a| a.parse().expect("a breadth"));
    let rounds: usize = args.next().map_or(5, |a| a.parse().expect("rounds"));
    let mut graphs = Vec::new();
    let loading = Instant::now();
    for entry in std::fs::read_dir(&dir).expect("the directory") {
        let path = entry.expect("an entry").path().join("frozen.bin");
        if let Ok(file) = std::fs::File::open(&path) {
            let g: FrozenGraph<i8, UnitCosineI8> =
                FrozenGraph::read_from(std::io::BufReader::new(file), UnitCosineI8)
                    .expect("a cosine_i8 copy");
            graphs.push(g);
        }
    }
    let points: usize = graphs.iter().map(|g| g.len()).sum();
    let loaded_s = loading.elapsed().as_secs_f64();
    let queries: Vec<Vec<i8>> = std::fs::read_to_string("../shared/data/dev/queries_vector.jsonl")
        .or_else(|_| std::fs::read_to_string("../../shared/data/dev/queries_vector.jsonl"))
        .expect("the dev queries")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a query line");
            let e: Vec<f32> = v["embedding"]
                .as_array()
                .expect("an embedding")
                .iter()
                .map(|x| x.as_f64().unwrap_or(0.0) as f32)
                .collect();
            quantize(&e)
        })
        .collect();
    let mut per_query = Vec::new();
    let mut found = 0usize;
    for _ in 0..rounds {
        let started = Instant::now();
        for q in &queries {
            for g in &graphs {
                found += g.search(q, 10, ef).len();
            }
        }
        per_query.push(started.elapsed().as_secs_f64() * 1e6 / queries.len() as f64);
    }
    per_query.sort_by(f64::total_cmp);
    println!(
        "{} partitions, {points} points read in {loaded_s:.2} s, ef {ef}: {:.0} µs a query (median of {rounds}; min {:.0}, max {:.0}; {found} hits)",
        graphs.len(),
        per_query[rounds / 2],
        per_query[0],
        per_query[rounds - 1]
    );
}
