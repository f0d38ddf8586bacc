//! Exact k-nearest-neighbour search over a partition's vectors (cosine, L2, dot). This is the
//! "exact" mode, the scanner for vectors not yet in an approximate graph, and the answer for
//! filters that pass few documents.
//!
//! Vectors live in fixed-size chunks behind `Arc`s, with a persistent key → slot map, so a
//! copy for readers is cheap and a write copies only the chunk it touches. A partition's
//! store keeps the chunks' components in a mapped file (`mapped.rs`), not in anonymous
//! memory. Scores accumulate in f64: exact mode agrees with a float64 reference on the same
//! f32 inputs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use crate::kernels::dot_f64 as dot;
use crate::mapped::{Block, Pool};
use crate::schema::Metric;

/// Vectors a chunk holds. Small, because a commit copies every chunk it writes: a commit of
/// 1,000 scattered updates over 300k 384-d vectors took 78 ms with 1,024-vector chunks on the
/// heap, 6-8 ms with these (`engine/examples/store_commit.rs`).
const CHUNK: usize = 16;
/// Vectors an exact scan goes through between two looks at `stop`.
const STOP_EVERY: usize = 1024;

#[derive(Clone)]
struct Chunk {
    keys: Vec<Option<Arc<str>>>,
    /// `CHUNK * dim` values, row-major.
    data: Block,
    /// 1 / |v| per slot (cosine).
    inv_norm: Vec<f64>,
    /// Bumped by every write of a slot: `(slot << 32) | generation` names one vector version.
    gens: Vec<u32>,
}

/// Similarity of two vectors under `metric`, higher is closer: cosine similarity, dot
/// product, or minus the Euclidean distance.
pub fn score(metric: Metric, q: &[f32], q_inv_norm: f64, v: &[f32], v_inv_norm: f64) -> f64 {
    match metric {
        Metric::Cosine => dot(q, v) * q_inv_norm * v_inv_norm,
        Metric::Dot => dot(q, v),
        Metric::L2 => -q
            .iter()
            .zip(v)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum::<f64>()
            .sqrt(),
    }
}

pub fn inv_norm(v: &[f32]) -> f64 {
    let n = dot(v, v).sqrt();
    if n > 0.0 {
        1.0 / n
    } else {
        0.0
    }
}

/// A hit: key and score (higher is closer).
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    pub key: Arc<str>,
    pub score: f64,
}

/// Orders hits best first; ties by key, so results are deterministic.
pub fn best_first(a: &Scored, b: &Scored) -> Ordering {
    b.score.total_cmp(&a.score).then_with(|| a.key.cmp(&b.key))
}

/// Keeps the `k` best hits seen.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

/// Heap order: the worst hit on top.
struct Worst(Scored);

impl PartialEq for Worst {
    fn eq(&self, o: &Self) -> bool {
        best_first(&self.0, &o.0) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    fn cmp(&self, o: &Self) -> Ordering {
        best_first(&self.0, &o.0)
    }
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Whether a hit with this score could enter.
    pub fn admits(&self, score: f64) -> bool {
        self.heap.len() < self.k || self.heap.peek().is_some_and(|w| score >= w.0.score)
    }

    pub fn push(&mut self, hit: Scored) {
        if self.k == 0 {
            return;
        }
        self.heap.push(Worst(hit));
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<Scored> {
        let mut v: Vec<Scored> = self.heap.into_iter().map(|w| w.0).collect();
        v.sort_by(best_first);
        v
    }
}

/// The vectors of one partition's committed documents.
#[derive(Clone)]
pub struct VectorStore {
    dim: usize,
    metric: Metric,
    chunks: Vec<Arc<Chunk>>,
    slots: imbl::HashMap<Arc<str>, u32>,
    free: Vec<u32>,
    /// Where chunks keep their components: a mapped file, or the heap when `None`.
    pool: Option<Arc<Pool>>,
}

impl VectorStore {
    /// A store whose components are on the heap.
    pub fn new(dim: usize, metric: Metric) -> VectorStore {
        VectorStore {
            dim,
            metric,
            chunks: Vec::new(),
            slots: imbl::HashMap::new(),
            free: Vec::new(),
            pool: None,
        }
    }

    /// A store whose components are in an unnamed file mapped from `dir` (the heap for any
    /// chunk the file has no room for).
    pub fn mapped(dim: usize, metric: Metric, dir: &std::path::Path) -> VectorStore {
        VectorStore {
            pool: Some(Pool::new(dir, CHUNK * dim)),
            ..VectorStore::new(dim, metric)
        }
    }

    /// Bytes of the mapped file behind this store and the stores it shares it with (earlier
    /// versions readers still hold).
    pub fn file_bytes(&self) -> u64 {
        self.pool.as_ref().map_or(0, |p| p.file_bytes())
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn metric(&self) -> Metric {
        self.metric
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&[f32]> {
        let slot = *self.slots.get(key)? as usize;
        let c = &self.chunks[slot / CHUNK];
        let at = (slot % CHUNK) * self.dim;
        Some(&c.data[at..at + self.dim])
    }

    /// Sets the vector of `key` (of this store's dimension), or removes it; returns the id of
    /// the new version, or None when there is none: removed, or the same values as the
    /// current version (an update of other columns keeps the vector's version, so the graph
    /// keeps its point instead of gaining a tombstone).
    pub fn set(&mut self, key: &str, v: Option<&[f32]>) -> Option<u64> {
        match (self.slots.get(key).copied(), v) {
            (Some(slot), Some(v)) if self.by_slot(slot).is_some_and(|(_, cur, _)| cur == v) => None,
            (Some(slot), Some(v)) => self.write(slot, key, Some(v)),
            (Some(slot), None) => {
                self.write(slot, key, None);
                self.slots.remove(key);
                self.free.push(slot);
                None
            }
            (None, Some(v)) => {
                let slot = match self.free.pop() {
                    Some(s) => s,
                    None => {
                        let s = (self.chunks.len() * CHUNK) as u32;
                        self.chunks.push(Arc::new(Chunk {
                            keys: vec![None; CHUNK],
                            data: Block::new(self.pool.as_ref(), CHUNK * self.dim),
                            inv_norm: vec![0.0; CHUNK],
                            gens: vec![0; CHUNK],
                        }));
                        // The rest of the new chunk is free, lowest slot first.
                        self.free.extend((s + 1..s + CHUNK as u32).rev());
                        s
                    }
                };
                self.slots.insert(Arc::from(key), slot);
                self.write(slot, key, Some(v))
            }
            (None, None) => None,
        }
    }

    /// The current version under an id: key, vector and 1/|v|; `None` once replaced or deleted.
    pub fn by_id(&self, id: u64) -> Option<(&Arc<str>, &[f32], f64)> {
        let slot = (id >> 32) as usize;
        let c = self.chunks.get(slot / CHUNK)?;
        let i = slot % CHUNK;
        if c.gens[i] != id as u32 {
            return None;
        }
        let key = c.keys[i].as_ref()?;
        Some((
            key,
            &c.data[i * self.dim..(i + 1) * self.dim],
            c.inv_norm[i],
        ))
    }

    /// Slots in use or free: every slot number is below this.
    pub fn slot_count(&self) -> usize {
        self.chunks.len() * CHUNK
    }

    /// The slot of `key`'s current vector.
    pub fn slot_of(&self, key: &str) -> Option<u32> {
        self.slots.get(key).copied()
    }

    /// The live vector in a slot: key, vector and 1/|v|.
    pub fn by_slot(&self, slot: u32) -> Option<(&Arc<str>, &[f32], f64)> {
        let c = self.chunks.get(slot as usize / CHUNK)?;
        let i = slot as usize % CHUNK;
        let key = c.keys[i].as_ref()?;
        Some((
            key,
            &c.data[i * self.dim..(i + 1) * self.dim],
            c.inv_norm[i],
        ))
    }

    /// The id of every live vector, in slot order (to build a graph).
    pub fn live_ids(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.len());
        for (ci, c) in self.chunks.iter().enumerate() {
            for (i, key) in c.keys.iter().enumerate() {
                if key.is_some() {
                    let slot = (ci * CHUNK + i) as u64;
                    out.push((slot << 32) | u64::from(c.gens[i]));
                }
            }
        }
        out
    }

    /// The current id and vector of `key`.
    pub fn id_of(&self, key: &str) -> Option<(u64, &[f32])> {
        let slot = *self.slots.get(key)?;
        let c = &self.chunks[slot as usize / CHUNK];
        let i = slot as usize % CHUNK;
        Some((
            (u64::from(slot) << 32) | u64::from(c.gens[i]),
            &c.data[i * self.dim..(i + 1) * self.dim],
        ))
    }

    fn write(&mut self, slot: u32, key: &str, v: Option<&[f32]>) -> Option<u64> {
        let dim = self.dim;
        let c = Arc::make_mut(&mut self.chunks[slot as usize / CHUNK]);
        let i = slot as usize % CHUNK;
        c.gens[i] = c.gens[i].wrapping_add(1);
        match v {
            Some(v) => {
                debug_assert_eq!(v.len(), dim);
                c.data[i * dim..(i + 1) * dim].copy_from_slice(v);
                c.inv_norm[i] = inv_norm(v);
                c.keys[i] = Some(Arc::from(key));
                Some((u64::from(slot) << 32) | u64::from(c.gens[i]))
            }
            None => {
                c.keys[i] = None;
                None
            }
        }
    }

    /// The `k` best vectors for `query`, skipping keys for which `skip` is true.
    /// The `k` best of every vector but those `skip` names; `stop` is asked before each
    /// 1,024 vectors (true: the scan ends with what it has).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        skip: impl Fn(&str) -> bool,
        stop: &dyn Fn() -> bool,
    ) -> Vec<Scored> {
        let q_inv = inv_norm(query);
        let mut top = TopK::new(k);
        for (ci, c) in self.chunks.iter().enumerate() {
            if ci % (STOP_EVERY / CHUNK) == 0 && stop() {
                break;
            }
            for (i, key) in c.keys.iter().enumerate() {
                let Some(key) = key else { continue };
                let v = &c.data[i * self.dim..(i + 1) * self.dim];
                let s = score(self.metric, query, q_inv, v, c.inv_norm[i]);
                if top.admits(s) && !skip(key) {
                    top.push(Scored {
                        key: key.clone(),
                        score: s,
                    });
                }
            }
        }
        top.into_sorted()
    }
}

/// A committed vector version for the graph builder: its store id, key and values.
#[derive(Clone, Debug)]
pub struct GraphItem {
    /// Store id: `(slot << 32) | generation`.
    pub id: u64,
    pub key: Arc<str>,
    pub vector: Vec<f32>,
}

/// Committed vector versions for the graph builder, in write order.
#[derive(Clone)]
pub enum GraphBatch {
    /// Versions with their values copied: what a commit changed (few beside the store).
    Copied(Vec<GraphItem>),
    /// Versions read from the store they were taken from: every live vector of a rebuilt
    /// store, or most of those of one a large transaction rewrote. Copying them held a
    /// second copy of the store until the builder was done (1.5 GB per 1M 384-d vectors);
    /// holding the store costs at most the chunks later writes copy (once each).
    Stored {
        store: Arc<VectorStore>,
        ids: Vec<u64>,
    },
}

impl GraphBatch {
    /// Every live vector of `store`.
    pub fn all(store: &Arc<VectorStore>) -> GraphBatch {
        GraphBatch::Stored {
            store: store.clone(),
            ids: store.live_ids(),
        }
    }

    /// The versions' store ids, in order.
    pub fn ids(&self) -> Vec<u64> {
        match self {
            GraphBatch::Copied(items) => items.iter().map(|i| i.id).collect(),
            GraphBatch::Stored { ids, .. } => ids.clone(),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            GraphBatch::Copied(items) => items.len(),
            GraphBatch::Stored { ids, .. } => ids.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the versions whose id passes `keep`.
    pub fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        match self {
            GraphBatch::Copied(items) => items.retain(|i| keep(i.id)),
            GraphBatch::Stored { ids, .. } => ids.retain(|id| keep(*id)),
        }
    }

    /// Calls `f` with each version's id, key and values, on the current rayon pool's
    /// threads, in no particular order.
    pub fn par_visit(&self, f: impl Fn(u64, &Arc<str>, &[f32]) + Sync) {
        use rayon::prelude::*;
        match self {
            GraphBatch::Copied(items) => items.par_iter().for_each(|i| f(i.id, &i.key, &i.vector)),
            GraphBatch::Stored { store, ids } => ids.par_iter().for_each(|&id| {
                let (key, v, _) = store.by_id(id).expect("a version of the store it names");
                f(id, key, v)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn brute(vs: &[(String, Vec<f32>)], q: &[f32], k: usize, metric: Metric) -> Vec<String> {
        let mut all: Vec<Scored> = vs
            .iter()
            .map(|(key, v)| Scored {
                key: Arc::from(key.as_str()),
                score: score(metric, q, inv_norm(q), v, inv_norm(v)),
            })
            .collect();
        all.sort_by(best_first);
        all.into_iter().take(k).map(|s| s.key.to_string()).collect()
    }

    #[test]
    fn set_overwrite_and_remove() {
        let mut s = VectorStore::new(2, Metric::Dot);
        let a1 = s.set("a", Some(&[1.0, 0.0])).unwrap();
        s.set("b", Some(&[0.0, 1.0]));
        assert_eq!(
            s.set("a", Some(&[1.0, 0.0])),
            None,
            "same values: no new version"
        );
        assert!(s.by_id(a1).is_some(), "the version stays current");
        let a2 = s.set("a", Some(&[0.0, 2.0])).unwrap();
        assert!(s.by_id(a1).is_none(), "a replaced version is a tombstone");
        assert_eq!(
            s.by_id(a2).map(|(k, v, _)| (k.to_string(), v.to_vec())),
            Some(("a".into(), vec![0.0, 2.0]))
        );
        assert_eq!(s.live_ids().len(), 2);
        assert_eq!(s.get("a"), Some(&[0.0, 2.0][..]));
        let top: Vec<String> = s
            .search(&[0.0, 1.0], 2, |_| false, &|| false)
            .iter()
            .map(|h| h.key.to_string())
            .collect();
        assert_eq!(top, ["a", "b"]);
        s.set("a", None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.search(&[0.0, 1.0], 5, |_| false, &|| false).len(), 1);
        assert_eq!(s.search(&[0.0, 1.0], 5, |k| k == "b", &|| false).len(), 0);
    }

    #[test]
    fn copies_share_untouched_chunks() {
        let mut s = VectorStore::new(1, Metric::Dot);
        for i in 0..3000 {
            s.set(&i.to_string(), Some(&[i as f32]));
        }
        let before = s.clone();
        s.set("5", Some(&[-1.0]));
        assert_eq!(before.get("5"), Some(&[5.0][..]), "readers keep their copy");
        assert!(
            Arc::ptr_eq(&before.chunks[2], &s.chunks[2]),
            "other chunks are shared"
        );
    }

    #[test]
    fn a_mapped_store_answers_as_the_heap_store_and_keeps_readers_copies() {
        let dir = tempfile::tempdir().unwrap();
        let mut mapped = VectorStore::mapped(8, Metric::Cosine, dir.path());
        let mut heap = VectorStore::new(8, Metric::Cosine);
        let v = |i: usize| -> Vec<f32> {
            (0..8)
                .map(|j| ((i * 7 + j * 3) % 11) as f32 - 5.0)
                .collect()
        };
        for i in 0..5000 {
            mapped.set(&i.to_string(), Some(&v(i)));
            heap.set(&i.to_string(), Some(&v(i)));
        }
        assert!(
            mapped.file_bytes() >= (5 * CHUNK * 8 * 4) as u64,
            "chunks are in the file"
        );
        let reader = mapped.clone();
        for i in (0..5000).step_by(3) {
            mapped.set(&i.to_string(), Some(&v(i + 1)));
            heap.set(&i.to_string(), Some(&v(i + 1)));
        }
        for i in (1..5000).step_by(5) {
            mapped.set(&i.to_string(), None);
            heap.set(&i.to_string(), None);
        }
        for i in 0..5000 {
            let k = i.to_string();
            assert_eq!(mapped.get(&k), heap.get(&k));
            assert_eq!(
                reader.get(&k),
                Some(&v(i)[..]),
                "a reader's copy is unchanged"
            );
        }
        for q in 0..20 {
            let q = v(q * 13 + 1);
            let a: Vec<Scored> = mapped.search(&q, 10, |_| false, &|| false);
            let b: Vec<Scored> = heap.search(&q, 10, |_| false, &|| false);
            assert_eq!(a, b);
        }
    }

    proptest! {
        #[test]
        fn search_equals_brute_force(
            vs in proptest::collection::vec(proptest::collection::vec(-1.0f32..1.0, 4), 1..300),
            q in proptest::collection::vec(-1.0f32..1.0, 4),
            k in 1usize..20,
            m in 0..3,
            deletes in proptest::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let metric = [Metric::Cosine, Metric::Dot, Metric::L2][m as usize];
            let mut live: Vec<(String, Vec<f32>)> = vs.iter().enumerate().map(|(i, v)| (i.to_string(), v.clone())).collect();
            let mut s = VectorStore::new(4, metric);
            for (k, v) in &live {
                s.set(k, Some(v));
            }
            for d in deletes {
                if live.is_empty() { break; }
                let (key, _) = live.remove(d.index(live.len()));
                s.set(&key, None);
            }
            let got: Vec<String> = s.search(&q, k, |_| false, &|| false).iter().map(|h| h.key.to_string()).collect();
            prop_assert_eq!(got, brute(&live, &q, k, metric));
        }
    }
}
