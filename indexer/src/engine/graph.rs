//! The approximate vector index: an HNSW graph (hnsw_rs) per partition, fed in the background.
//! Graph inserts are slow (hundreds to a few thousand vectors/s), so they never sit on the
//! commit path: committed vectors are queued to a builder thread, and until the graph has them
//! they are found by the exact scanner. Points are ids `(slot << 32) | generation` from the
//! `VectorStore`; a hit whose id is no longer current (the vector was replaced or deleted) is
//! dropped by the caller, so deletes and updates are tombstones.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use hnsw_rs::prelude::{DistCosine, DistDot, DistL2, Hnsw};

use crate::config::Metric;

/// Links per node and construction breadth: recall ≥ 0.95 at modest build cost.
const MAX_CONNECTIONS: usize = 16;
const EF_CONSTRUCTION: usize = 100;
const MAX_LAYERS: usize = 16;

enum Kind {
    Cosine(Hnsw<'static, f32, DistCosine>),
    L2(Hnsw<'static, f32, DistL2>),
    Dot(Hnsw<'static, f32, DistDot>),
}

pub struct Graph {
    kind: Kind,
    /// Every vector write with a sequence number below this is in the graph.
    graphed: AtomicU64,
    points: AtomicUsize,
}

impl Graph {
    pub fn new(metric: Metric, capacity: usize) -> Graph {
        let cap = capacity.max(1024);
        let kind = match metric {
            Metric::Cosine => Kind::Cosine(Hnsw::new(
                MAX_CONNECTIONS,
                cap,
                MAX_LAYERS,
                EF_CONSTRUCTION,
                DistCosine,
            )),
            Metric::L2 => Kind::L2(Hnsw::new(
                MAX_CONNECTIONS,
                cap,
                MAX_LAYERS,
                EF_CONSTRUCTION,
                DistL2,
            )),
            Metric::Dot => Kind::Dot(Hnsw::new(
                MAX_CONNECTIONS,
                cap,
                MAX_LAYERS,
                EF_CONSTRUCTION,
                DistDot,
            )),
        };
        Graph {
            kind,
            graphed: AtomicU64::new(0),
            points: AtomicUsize::new(0),
        }
    }

    /// Inserts points (using every core), then marks writes below `seq_end` as graphed.
    pub fn insert(&self, items: &[(u64, Vec<f32>)], seq_end: u64) {
        let data: Vec<(&[f32], usize)> = items
            .iter()
            .map(|(id, v)| (v.as_slice(), *id as usize))
            .collect();
        match &self.kind {
            Kind::Cosine(h) => h.parallel_insert_slice(&data),
            Kind::L2(h) => h.parallel_insert_slice(&data),
            Kind::Dot(h) => h.parallel_insert_slice(&data),
        }
        self.points.fetch_add(items.len(), Ordering::Relaxed);
        self.graphed.fetch_max(seq_end, Ordering::AcqRel);
    }

    /// Candidate ids, closest first (callers validate and rescore them).
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<u64> {
        let hits = match &self.kind {
            Kind::Cosine(h) => h.search(query, k, ef.max(k)),
            Kind::L2(h) => h.search(query, k, ef.max(k)),
            Kind::Dot(h) => h.search(query, k, ef.max(k)),
        };
        hits.into_iter().map(|n| n.d_id as u64).collect()
    }

    pub fn graphed(&self) -> u64 {
        self.graphed.load(Ordering::Acquire)
    }

    /// Points inserted, live or tombstoned.
    pub fn points(&self) -> usize {
        self.points.load(Ordering::Relaxed)
    }
}

/// Committed vectors for a partition's graph, in write order.
pub struct GraphJob {
    pub graph: std::sync::Arc<Graph>,
    pub items: Vec<(u64, Vec<f32>)>,
    /// One past the last write sequence number in `items`.
    pub seq_end: u64,
}

impl GraphJob {
    pub fn run(self) {
        self.graph.insert(&self.items, self.seq_end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_near_points_and_tracks_the_watermark() {
        let g = Graph::new(Metric::L2, 100);
        let items: Vec<(u64, Vec<f32>)> = (0..200u64).map(|i| (i, vec![i as f32, 0.0])).collect();
        g.insert(&items, 200);
        assert_eq!(g.graphed(), 200);
        assert_eq!(g.points(), 200);
        let hits = g.search(&[50.2, 0.0], 3, 32);
        assert_eq!(hits[0], 50);
        assert!(hits.contains(&51) && hits.contains(&49));
    }
}
