//! The approximate vector index: an HNSW graph (hnsw_rs) per partition, fed in the background.
//! Graph inserts are slow (a few thousand vectors/s), so they never sit on the commit path:
//! committed vectors are queued to a builder thread, and until the graph has them they are
//! found by the exact scanner. Points are ids `(slot << 32) | generation` from the
//! `VectorStore`; a hit whose id is no longer current (the vector was replaced or deleted) is
//! dropped by the caller, so deletes and updates are tombstones.
//!
//! The graph only orders candidates (callers rescore them exactly in f64), so its distances
//! are f32 and vectorisable; cosine vectors are normalised on the way in, making cosine a dot
//! product.
//!
//! Persistence: a graph is expensive to build, so the builder dumps it (hnsw_rs' own format)
//! with a log of (graph id, key, vector hash) per point. Store ids are not stable across
//! restarts (the store is rebuilt from the committed documents), so a reloaded graph maps
//! each point whose key still holds the same vector (same hash) to the key's current id, and
//! drops the rest (tombstones); vectors it lacks are queued to the builder as usual. Graph
//! ids carry the session's epoch in their top byte, so ids given after a reload never
//! collide with reloaded ones. A dump is a cache: losing it or finding it stale costs a
//! rebuild, never a wrong answer. A dump also holds the searchable copy, read at start-up:
//! hnsw_rs's graph is loaded only when the builder first inserts, and dropped again once the
//! graph is idle and its dump holds every point.
//!
//! Over 700 lines as one job, a graph's life: build, the searchable copy and its watermark,
//! dump, reload and idle drop (eager or lazy) share one id scheme (epoch, store id) that must change
//! together; the copy's layout, search and file format are in `frozen_graph.rs`, the distance
//! loops in `kernels.rs`, the tests in `graph/tests.rs`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hnsw_rs::prelude::{AnnT, Distance, Hnsw, HnswIo};

use crate::frozen_graph::FrozenGraph;
use crate::kernels::{dot_f32 as dot8, dot_i8, squared_l2_f32};
use crate::schema::Metric;
use crate::vector::VectorStore;
pub use crate::vector::{GraphBatch, GraphItem};

/// A graph with new points is dumped at most this often (unless it grew by half): each dump
/// writes every vector and fsyncs, which competes with the apply path's commits.
const DUMP_EVERY_SECS: u64 = 300;

/// After a failed dump (a full disk, say) the next is not tried for this long: each writes
/// every point.
const DUMP_RETRY: std::time::Duration = std::time::Duration::from_secs(60);

/// Links per node and construction breadth: recall@10 ≥ 0.95 at modest build cost.
const MAX_CONNECTIONS: usize = 16;
const EF_CONSTRUCTION: usize = 100;
const MAX_LAYERS: usize = 16;

/// The searchable copy is renewed after inserts when the new points are at least this
/// fraction of it, or else this long after the last copy and twenty times as long as that
/// copy took (the builder's idle tick). Copying costs ~8 µs a point through hnsw_rs's API
/// against ~630 µs to insert one (5,000 384-d points, measured once), so renewing after
/// every quarter keeps copying to ~5% of the builder's time. Until then the exact scanner
/// covers the newer vectors.
const FREEZE_FRACTION: usize = 4;
const FREEZE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The largest 8-bit component of a quantised vector.
const Q: f32 = 127.0;

/// Bytes after the components of a quantised vector: the inverse of its scale (f32, LE).
const SCALE_BYTES: usize = 4;

/// A unit vector as 8-bit components scaled so the largest is ±127, followed by the scale's
/// inverse: a quarter of the memory of f32, and integer dot products. A fixed scale of 127
/// would leave 384-d embeddings (components within ±0.25) about four bits each, and the graph
/// then navigates and orders by noise (recall@10 0.39 at ef 10 on the dev set, pgvector's f32
/// graph 0.80). Only for ordering candidates: hits are rescored from the f32 store.
pub fn quantize(v: &[f32]) -> Vec<i8> {
    let u = unit(v);
    let max = u.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { Q / max } else { 1.0 };
    let mut q: Vec<i8> = u
        .iter()
        .map(|x| (x * scale).round().clamp(-Q, Q) as i8)
        .collect();
    q.extend((1.0 / scale).to_le_bytes().map(|b| b as i8));
    q
}

/// The components and the scale's inverse of a quantised vector.
fn components(q: &[i8]) -> (&[i8], f32) {
    let (c, s) = q.split_at(q.len().saturating_sub(SCALE_BYTES));
    let inv = match s {
        [a, b, c, d] => f32::from_le_bytes([*a as u8, *b as u8, *c as u8, *d as u8]),
        _ => 0.0,
    };
    (c, inv)
}

/// Cosine distance between unit vectors: `1 - a·b`, clamped at 0 against rounding.
#[derive(Clone, Copy, Default)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot8(a, b)).max(0.0)
    }
}

/// Cosine graphs of at least this dimension keep 8-bit components: in high dimensions the
/// rounding barely moves distances (and the beam is rescored exactly), in a handful of
/// dimensions it would merge distinct directions.
pub const QUANTIZE_FROM_DIM: usize = 64;

/// Cosine distance between quantised unit vectors: `1 - a·b`, clamped at 0.
#[derive(Clone, Copy, Default)]
pub struct UnitCosineI8;

impl Distance<i8> for UnitCosineI8 {
    fn eval(&self, a: &[i8], b: &[i8]) -> f32 {
        let ((a, inv_a), (b, inv_b)) = (components(a), components(b));
        let dot = dot_i8(a, b) as f32 * inv_a * inv_b;
        (1.0 - dot).max(0.0)
    }
}

/// Squared Euclidean distance (orders like the distance).
#[derive(Clone, Copy, Default)]
pub struct SquaredL2;

impl Distance<f32> for SquaredL2 {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        squared_l2_f32(a, b)
    }
}

/// Maximum inner product as a dissimilarity: larger dot, smaller value (may be negative).
#[derive(Clone, Copy, Default)]
pub struct NegDot;

impl Distance<f32> for NegDot {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        -dot8(a, b)
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = dot8(v, v).sqrt();
    if n > 0.0 {
        v.iter().map(|x| x / n).collect()
    } else {
        v.to_vec()
    }
}

enum Kind {
    Cosine(Hnsw<'static, f32, UnitCosine>),
    CosineI8(Hnsw<'static, i8, UnitCosineI8>),
    L2(Hnsw<'static, f32, SquaredL2>),
    Dot(Hnsw<'static, f32, NegDot>),
}

pub struct Graph {
    /// hnsw_rs's graph, which only inserts need (searches walk the copy, `frozen`): `None`
    /// while it is not in memory — a reloaded graph until its first insert, or a graph whose
    /// every point is in its dump and that took none for a while (`unload_if_idle`). The
    /// next insert loads it back from that dump (`kind()`).
    kind: Mutex<Option<Arc<Kind>>>,
    /// The dump `kind` can be loaded back from, as it was written or read: its directory
    /// and its meta (a dump written since, by a graph rebuilt meanwhile, has another token).
    on_disk: Mutex<Option<(PathBuf, DumpMeta)>>,
    /// Loading `kind` back failed: the graph takes no more points until it is rebuilt.
    broken: AtomicBool,
    /// When the last insert ended (or the graph was made), and how long the last load of
    /// `kind` took: it is dropped only after an idle time worth many such loads.
    last_insert: Mutex<Instant>,
    load_took: Mutex<std::time::Duration>,
    /// When the last dump failed: each try writes every point, so the next waits.
    dump_failed: Mutex<Option<Instant>>,
    metric: Metric,
    dim: usize,
    /// Every vector write with a sequence number below this is in the graph.
    graphed: AtomicU64,
    points: AtomicUsize,
    /// Top byte of the graph ids this session gives (store ids fit in 56 bits).
    epoch: u64,
    /// Reloaded points: graph id → the current store id of the same key and vector.
    translate: HashMap<u64, u64>,
    /// (graph id, key, vector hash) of every mapped or inserted point, for the next dump.
    log: Mutex<Vec<(u64, Arc<str>, u64)>>,
    /// Points at the last dump, and when it was (or when the graph was created).
    dumped: Mutex<(usize, Instant)>,
    /// What searches walk: a flat copy of the graph as of the last freeze (`frozen_graph`).
    frozen: std::sync::RwLock<Arc<Frozen>>,
    /// Points in the copy, when it was made and how long that took.
    frozen_at: Mutex<(usize, Instant, std::time::Duration)>,
    /// One past the last write inserted (the watermark the next copy will publish).
    inserted: AtomicU64,
}

/// The searchable copy, per kind.
enum Frozen {
    Cosine(FrozenGraph<f32, UnitCosine>),
    CosineI8(FrozenGraph<i8, UnitCosineI8>),
    L2(FrozenGraph<f32, SquaredL2>),
    Dot(FrozenGraph<f32, NegDot>),
}

impl Frozen {
    fn of(kind: &Kind) -> Frozen {
        match kind {
            Kind::Cosine(h) => Frozen::Cosine(FrozenGraph::of(h, UnitCosine)),
            Kind::CosineI8(h) => Frozen::CosineI8(FrozenGraph::of(h, UnitCosineI8)),
            Kind::L2(h) => Frozen::L2(FrozenGraph::of(h, SquaredL2)),
            Kind::Dot(h) => Frozen::Dot(FrozenGraph::of(h, NegDot)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Frozen::Cosine(f) => f.len(),
            Frozen::CosineI8(f) => f.len(),
            Frozen::L2(f) => f.len(),
            Frozen::Dot(f) => f.len(),
        }
    }

    fn write_to(&self, w: impl Write) -> std::io::Result<()> {
        match self {
            Frozen::Cosine(f) => f.write_to(w),
            Frozen::CosineI8(f) => f.write_to(w),
            Frozen::L2(f) => f.write_to(w),
            Frozen::Dot(f) => f.write_to(w),
        }
    }

    /// The copy a dump holds (`FROZEN_FILE`), for a graph of `metric` and `dim`.
    fn read(dir: &Path, metric: Metric, dim: usize) -> std::io::Result<Frozen> {
        let r = std::fs::File::open(dir.join(FROZEN_FILE))?;
        Ok(match metric {
            Metric::Cosine if dim >= QUANTIZE_FROM_DIM => {
                Frozen::CosineI8(FrozenGraph::read_from(r, UnitCosineI8)?)
            }
            Metric::Cosine => Frozen::Cosine(FrozenGraph::read_from(r, UnitCosine)?),
            Metric::L2 => Frozen::L2(FrozenGraph::read_from(r, SquaredL2)?),
            Metric::Dot => Frozen::Dot(FrozenGraph::read_from(r, NegDot)?),
        })
    }
}

/// The searchable copy in a dump: read at start-up instead of loading hnsw_rs's graph and
/// copying it (the larger part of a restart: ~16 µs a point, 0.6 s for 39k points).
const FROZEN_FILE: &str = "frozen.bin";

/// Loads hnsw_rs's graph of a dump; `None` when it cannot (hnsw_rs's loader panics on some
/// damaged files instead of returning an error: caught, a dump is a cache).
fn load_kind(dir: &Path, metric: Metric, dim: usize) -> Option<Kind> {
    let load = || {
        // hnsw_rs ties a reloaded graph's lifetime to its loader: leak the (small) loader,
        // once per partition and process start.
        let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, "hnsw")));
        Some(match metric {
            Metric::Cosine if dim >= QUANTIZE_FROM_DIM => {
                Kind::CosineI8(loader.load_hnsw::<i8, UnitCosineI8>().ok()?)
            }
            Metric::Cosine => Kind::Cosine(loader.load_hnsw::<f32, UnitCosine>().ok()?),
            Metric::L2 => Kind::L2(loader.load_hnsw::<f32, SquaredL2>().ok()?),
            Metric::Dot => Kind::Dot(loader.load_hnsw::<f32, NegDot>().ok()?),
        })
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(load))
        .ok()
        .flatten()
}

const ID_BITS: u32 = 56;
const ID_MASK: u64 = (1 << ID_BITS) - 1;

/// Identifies a vector's exact contents (f32 bits) in a dump's log.
pub fn vector_hash(v: &[f32]) -> u64 {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct DumpMeta {
    metric: String,
    epoch: u64,
    points: usize,
    /// Random per dump, telling apart two dumps of the same epoch and size (a graph rebuilt
    /// from scratch has epoch 0 again). Dumps written before it read as 0.
    #[serde(default)]
    token: u64,
}

/// A random token for a dump.
fn dump_token() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The graph kind for a metric and dimension, as named in dumps.
fn kind_name(m: Metric, dim: usize) -> &'static str {
    match m {
        // (`cosine_i8` dumps had a fixed scale: not reloaded, rebuilt.)
        Metric::Cosine if dim >= QUANTIZE_FROM_DIM => "cosine_i8_scaled",
        Metric::Cosine => "cosine",
        Metric::L2 => "l2",
        Metric::Dot => "dot",
    }
}

impl Graph {
    pub fn new(metric: Metric, dim: usize, capacity: usize) -> Graph {
        let cap = capacity.max(1024);
        let (m, l, ef) = (MAX_CONNECTIONS, MAX_LAYERS, EF_CONSTRUCTION);
        let kind = match metric {
            Metric::Cosine if dim >= QUANTIZE_FROM_DIM => {
                Kind::CosineI8(Hnsw::new(m, cap, l, ef, UnitCosineI8))
            }
            Metric::Cosine => Kind::Cosine(Hnsw::new(m, cap, l, ef, UnitCosine)),
            Metric::L2 => Kind::L2(Hnsw::new(m, cap, l, ef, SquaredL2)),
            Metric::Dot => Kind::Dot(Hnsw::new(m, cap, l, ef, NegDot)),
        };
        let frozen = Frozen::of(&kind);
        Graph {
            kind: Mutex::new(Some(Arc::new(kind))),
            on_disk: Mutex::new(None),
            broken: AtomicBool::new(false),
            last_insert: Mutex::new(Instant::now()),
            load_took: Mutex::new(std::time::Duration::ZERO),
            dump_failed: Mutex::new(None),
            metric,
            dim,
            graphed: AtomicU64::new(0),
            points: AtomicUsize::new(0),
            epoch: 0,
            translate: HashMap::new(),
            log: Mutex::new(Vec::new()),
            dumped: Mutex::new((0, Instant::now())),
            frozen: std::sync::RwLock::new(Arc::new(frozen)),
            frozen_at: Mutex::new((0, Instant::now(), std::time::Duration::ZERO)),
            inserted: AtomicU64::new(0),
        }
    }

    /// Writes the graph and its id log to `dir` (replaced atomically: a crash leaves the
    /// old dump or the new one). Call from the thread that inserts. After a failure (a full
    /// disk) no dump is due for `DUMP_RETRY`.
    pub fn dump(&self, dir: &Path) -> std::io::Result<()> {
        let written = self.write_dump(dir);
        if written.is_err() {
            *self.dump_failed.lock().unwrap() = Some(Instant::now());
        }
        written
    }

    fn write_dump(&self, dir: &Path) -> std::io::Result<()> {
        let io = |e: anyhow::Error| std::io::Error::other(e.to_string());
        let parent = dir.parent().unwrap_or(Path::new("."));
        let tmp = parent.join("graph.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        // Not create_dir_all: a partition removed meanwhile (re-snapshot) stays removed.
        let Some(kind) = self.loaded() else {
            // Not in memory: nothing was inserted since it was reloaded or dropped, the dump
            // on disk is this graph. (A failed load: the rebuild this graph waits for dumps.)
            return Ok(());
        };
        std::fs::create_dir(&tmp)?;
        let points = self.points();
        match &*kind {
            Kind::Cosine(h) => h.file_dump(&tmp, "hnsw").map_err(io)?,
            Kind::CosineI8(h) => h.file_dump(&tmp, "hnsw").map_err(io)?,
            Kind::L2(h) => h.file_dump(&tmp, "hnsw").map_err(io)?,
            Kind::Dot(h) => h.file_dump(&tmp, "hnsw").map_err(io)?,
        };
        // The searchable copy of the same points, for the next start-up to read.
        self.freeze();
        let frozen = self
            .frozen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        frozen.write_to(std::fs::File::create(tmp.join(FROZEN_FILE))?)?;
        {
            let log = self.log.lock().unwrap();
            let mut w = std::io::BufWriter::new(std::fs::File::create(tmp.join("ids.bin"))?);
            for (gid, key, hash) in log.iter() {
                w.write_all(&gid.to_le_bytes())?;
                w.write_all(&hash.to_le_bytes())?;
                w.write_all(&(key.len() as u32).to_le_bytes())?;
                w.write_all(key.as_bytes())?;
            }
            w.flush()?;
        }
        let meta = DumpMeta {
            metric: kind_name(self.metric, self.dim).into(),
            epoch: self.epoch,
            points,
            token: dump_token(),
        };
        std::fs::write(tmp.join("meta.json"), serde_json::to_vec(&meta)?)?;
        for entry in std::fs::read_dir(&tmp)? {
            std::fs::File::open(entry?.path())?.sync_all()?;
        }
        let old = parent.join("graph.old");
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        if dir.exists() {
            std::fs::rename(dir, &old)?;
        }
        std::fs::rename(&tmp, dir)?;
        std::fs::File::open(parent)?.sync_all()?;
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        *self.dumped.lock().unwrap() = (points, Instant::now());
        *self.on_disk.lock().unwrap() = Some((dir.to_owned(), meta));
        Ok(())
    }

    /// Whether enough changed since the last dump to write a new one: new points, and
    /// either `DUMP_EVERY_SECS` passed or the graph grew by half.
    pub fn wants_dump(&self) -> bool {
        if self.dump_failed_lately() {
            return false;
        }
        let (at, when) = *self.dumped.lock().unwrap();
        let now = self.points();
        now > at && (when.elapsed().as_secs() >= DUMP_EVERY_SECS || now >= at + at / 2 + 1_000)
    }

    /// Whether points were inserted since the last dump.
    pub fn has_undumped(&self) -> bool {
        self.points() > self.dumped.lock().unwrap().0
    }

    /// Reloads a dump for `store` (the committed vectors as rebuilt at start-up). Returns
    /// the graph and the store ids it already holds; `None` when there is no usable dump.
    pub fn load(dir: &Path, metric: Metric, store: &VectorStore) -> Option<(Graph, Vec<u64>)> {
        let meta: DumpMeta =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).ok()?).ok()?;
        let dim = store.dim();
        if meta.metric != kind_name(metric, dim) {
            return None;
        }
        // The dump's searchable copy when it has one of every point (hnsw_rs's graph waits
        // for the first insert); else hnsw_rs's graph now, and a copy made from it.
        let (kind, frozen) = match Frozen::read(dir, metric, dim) {
            Ok(f) if f.len() == meta.points => (None, f),
            _ => {
                let kind = load_kind(dir, metric, dim)?;
                let frozen = Frozen::of(&kind);
                (Some(Arc::new(kind)), frozen)
            }
        };
        let mut bytes = Vec::new();
        std::fs::File::open(dir.join("ids.bin"))
            .ok()?
            .read_to_end(&mut bytes)
            .ok()?;
        let mut translate = HashMap::new();
        let mut log = Vec::new();
        let mut have = Vec::new();
        let mut at = 0;
        while at + 20 <= bytes.len() {
            let gid = u64::from_le_bytes(bytes[at..at + 8].try_into().ok()?);
            let hash = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().ok()?);
            let len = u32::from_le_bytes(bytes[at + 16..at + 20].try_into().ok()?) as usize;
            let key = std::str::from_utf8(bytes.get(at + 20..at + 20 + len)?).ok()?;
            at += 20 + len;
            if let Some((id, v)) = store.id_of(key) {
                if vector_hash(v) == hash && translate.insert(gid, id).is_none() {
                    have.push(id);
                    log.push((gid, Arc::from(key), hash));
                }
            }
        }
        let graph = Graph {
            kind: Mutex::new(kind),
            on_disk: Mutex::new(Some((dir.to_owned(), meta.clone()))),
            broken: AtomicBool::new(false),
            last_insert: Mutex::new(Instant::now()),
            load_took: Mutex::new(std::time::Duration::ZERO),
            dump_failed: Mutex::new(None),
            metric,
            dim,
            graphed: AtomicU64::new(0),
            points: AtomicUsize::new(meta.points),
            epoch: (meta.epoch + 1) & 0xff,
            translate,
            log: Mutex::new(log),
            dumped: Mutex::new((meta.points, Instant::now())),
            frozen: std::sync::RwLock::new(Arc::new(frozen)),
            frozen_at: Mutex::new((meta.points, Instant::now(), std::time::Duration::ZERO)),
            inserted: AtomicU64::new(0),
        };
        Some((graph, have))
    }

    /// Inserts `items`, on the current rayon pool's threads (the builder's: at idle
    /// priority, so they take only CPU nothing else wants; hnsw_rs inserts concurrently);
    /// the graph then covers every write before `seq_end`. When `stop` is set midway (the
    /// process is stopping and must not wait for the builder), the rest is skipped and the
    /// watermark stays where it was.
    pub fn insert(&self, batches: &[GraphBatch], seq_end: u64, stop: &AtomicBool) {
        let Some(kind) = self.kind() else {
            // hnsw_rs's graph could not be loaded: these vectors stay with the exact scanner
            // until the partition rebuilds the graph (`broken`).
            return;
        };
        let kind = &*kind;
        for batch in batches {
            batch.par_visit(|id, key, v| {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                debug_assert!(id <= ID_MASK, "store ids fit in 56 bits");
                let gid = (self.epoch << ID_BITS) | id;
                match kind {
                    Kind::Cosine(h) => h.insert_slice((&unit(v), gid as usize)),
                    Kind::CosineI8(h) => h.insert_slice((&quantize(v), gid as usize)),
                    Kind::L2(h) => h.insert_slice((v, gid as usize)),
                    Kind::Dot(h) => h.insert_slice((v, gid as usize)),
                }
                self.log
                    .lock()
                    .unwrap()
                    .push((gid, key.clone(), vector_hash(v)));
                self.points.fetch_add(1, Ordering::Relaxed);
            });
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
        self.inserted.fetch_max(seq_end, Ordering::AcqRel);
        *self.last_insert.lock().unwrap() = Instant::now();
        let (at, _, _) = *self.frozen_at.lock().unwrap();
        if (self.points() - at) * FREEZE_FRACTION >= at {
            self.freeze();
        }
    }

    /// Makes the searchable copy hold every point inserted, and publishes the watermark of
    /// what it holds. Call from the thread that inserts (the builder, or tests).
    pub fn freeze(&self) {
        let started = Instant::now();
        let points = self.points();
        let inserted = self.inserted.load(Ordering::Acquire);
        let Some(kind) = self.loaded() else {
            // Not in memory (nothing inserted since it was reloaded or dropped) or broken:
            // the copy is current.
            return;
        };
        let frozen = Arc::new(Frozen::of(&kind));
        *self.frozen.write().unwrap_or_else(|e| e.into_inner()) = frozen;
        *self.frozen_at.lock().unwrap() = (points, Instant::now(), started.elapsed());
        self.graphed.fetch_max(inserted, Ordering::AcqRel);
    }

    /// Freezes inserts still waiting for a copy, unless the last copy is too recent for its
    /// cost (the builder calls this when idle). Returns whether it copied.
    pub fn freeze_if_due(&self) -> bool {
        let (_, when, took) = *self.frozen_at.lock().unwrap();
        let due = when.elapsed() >= FREEZE_AFTER.max(took * 20);
        if due && self.inserted.load(Ordering::Acquire) > self.graphed() {
            self.freeze();
            return true;
        }
        false
    }

    /// Candidate store ids, closest first (callers validate and rescore them), from the
    /// searchable copy: points inserted after it are not among them (`graphed`).
    pub fn search(&self, query: &[f32], k: usize, ef: usize) -> Vec<u64> {
        let frozen = self
            .frozen
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let hits = match &*frozen {
            Frozen::Cosine(f) => f.search(&unit(query), k, ef),
            Frozen::CosineI8(f) => f.search(&quantize(query), k, ef),
            Frozen::L2(f) => f.search(query, k, ef),
            Frozen::Dot(f) => f.search(query, k, ef),
        };
        hits.into_iter()
            .filter_map(|d_id| {
                let gid = d_id as u64;
                if gid >> ID_BITS == self.epoch {
                    Some(gid & ID_MASK)
                } else {
                    self.translate.get(&gid).copied()
                }
            })
            .collect()
    }

    /// hnsw_rs's graph if it is in memory.
    fn loaded(&self) -> Option<Arc<Kind>> {
        self.kind.lock().unwrap().clone()
    }

    /// hnsw_rs's graph, loaded back from the dump when it is not in memory (on the builder's
    /// thread, off the start-up and query paths); `None` when that load failed (`broken`).
    fn kind(&self) -> Option<Arc<Kind>> {
        if let Some(kind) = self.loaded() {
            return Some(kind);
        }
        if self.broken() {
            return None;
        }
        // Only the builder's thread inserts, so nothing else loads meanwhile; the lock is
        // not held while loading (commits ask `broken`, searches never wait on it).
        let started = Instant::now();
        let on_disk = self.on_disk.lock().unwrap().clone();
        // The dump must still be the one this graph wrote or was reloaded from (a graph
        // rebuilt meanwhile dumps into the same directory).
        let kind = on_disk.and_then(|(dir, expected)| {
            let meta: DumpMeta =
                serde_json::from_slice(&std::fs::read(dir.join("meta.json")).ok()?).ok()?;
            if meta != expected {
                return None;
            }
            load_kind(&dir, self.metric, self.dim).map(|k| (dir, Arc::new(k)))
        });
        match kind {
            Some((dir, kind)) => {
                let took = started.elapsed();
                tracing::info!(
                    dir = %dir.display(),
                    points = self.points(),
                    ms = took.as_millis() as u64,
                    "vector graph's insert structure loaded"
                );
                *self.load_took.lock().unwrap() = took;
                *self.kind.lock().unwrap() = Some(kind.clone());
                Some(kind)
            }
            None => {
                tracing::warn!(
                    points = self.points(),
                    "vector graph's insert structure cannot be loaded from its dump: the graph will be rebuilt"
                );
                self.broken.store(true, Ordering::Release);
                None
            }
        }
    }

    /// Drops hnsw_rs's graph (~2 KB a point, the larger part of a partition's memory) when
    /// every point is in the dump on disk and nothing was inserted for `after`, or for
    /// twenty times the last load if longer (loading it back costs ~16 µs a point: a steady
    /// trickle of changes must not load and drop it over and over): searches walk the copy,
    /// and the next insert loads it back. Call from the thread that inserts. Returns whether
    /// it dropped.
    pub fn unload_if_idle(&self, after: std::time::Duration) -> bool {
        let idle = self.last_insert.lock().unwrap().elapsed();
        let due = idle >= after.max(*self.load_took.lock().unwrap() * 20);
        if !due || self.has_undumped() || self.on_disk.lock().unwrap().is_none() {
            return false;
        }
        self.kind.lock().unwrap().take().is_some()
    }

    /// Whether a dump is due because the graph has points its dump lacks and took no
    /// insert for `after` (so that it can then be dropped from memory).
    pub fn wants_idle_dump(&self, after: std::time::Duration) -> bool {
        self.has_undumped()
            && !self.dump_failed_lately()
            && self.last_insert.lock().unwrap().elapsed() >= after
    }

    fn dump_failed_lately(&self) -> bool {
        self.dump_failed
            .lock()
            .unwrap()
            .is_some_and(|t| t.elapsed() < DUMP_RETRY)
    }

    /// Whether hnsw_rs's graph is in memory (inserts need it; searches do not).
    pub fn insertable_in_memory(&self) -> bool {
        self.kind.lock().unwrap().is_some()
    }

    /// Whether hnsw_rs's graph could not be loaded: the graph searches what it had and takes
    /// no new points; the partition rebuilds it.
    pub fn broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
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
    pub graph: Arc<Graph>,
    pub items: Vec<GraphBatch>,
    /// One past the last write sequence number in `items`.
    pub seq_end: u64,
    /// Where the partition's graph is dumped.
    pub dir: std::path::PathBuf,
}

impl GraphJob {
    /// Inserts the job's vectors, unless `stop` is set meanwhile.
    pub fn run(self, stop: &AtomicBool) {
        self.graph.insert(&self.items, self.seq_end, stop);
    }
}

#[cfg(test)]
mod tests;
