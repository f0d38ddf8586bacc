//! A read-only, flat copy of an HNSW graph, for searching.
//!
//! hnsw_rs builds the graph; its own search walked it through a lock and an `Arc` per node,
//! kept the visited set in a SipHash map and allocated per candidate: 55–66% of a vector
//! query's CPU in the benchmark's profiles, the distances themselves 24–29%. This copy holds
//! every point's components in one array (position order), the links of layer 0 as `u32`
//! positions at a fixed stride, the few upper-layer links in maps, and marks visited nodes
//! with a per-thread generation stamp: a search allocates its two heaps and nothing else.
//!
//! The graph's builder (one thread) makes a new copy after its inserts ([`crate::graph`]);
//! searches use the latest copy, and vectors the copy lacks are scanned exactly, as before.

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};

use hnsw_rs::prelude::{Distance, Hnsw};

/// No link in a layer-0 slot.
const EMPTY: u32 = u32::MAX;

/// The first bytes of a written copy.
const MAGIC: &[u8; 8] = b"FGRAPH01";

/// A component type a copy can be written in (little-endian, fixed width).
pub trait Component: Copy {
    const BYTES: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

/// `Component` for a number type, little-endian.
macro_rules! component {
    ($($t:ty),*) => {$(
        impl Component for $t {
            const BYTES: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> $t {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(&bytes[..std::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(b)
            }
        }
    )*};
}

component!(i8, u32, u64, f32);

/// Reads `n` values of `C`, reserved up front (a corrupt count fails the reservation or the
/// read; it cannot make the reader allocate without bound) and converted through a small
/// buffer: reading into a growing byte vector and converting it after took a restart's
/// reads of these copies twice the memory and a third of their time in `realloc`.
fn read_values<C: Component>(r: &mut impl Read, n: usize) -> io::Result<Vec<C>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "size");
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| bad())?;
    let mut left = n.checked_mul(C::BYTES).ok_or_else(bad)?;
    let mut buf = vec![0u8; left.min(((1 << 16) / C::BYTES).max(1) * C::BYTES)];
    while left > 0 {
        let take = left.min(buf.len());
        r.read_exact(&mut buf[..take])?;
        out.extend(buf[..take].chunks_exact(C::BYTES).map(C::get));
        left -= take;
    }
    Ok(out)
}

pub struct FrozenGraph<T, D> {
    dist: D,
    /// Components per point.
    dim: usize,
    /// Every point's components, `dim` per position.
    data: Vec<T>,
    /// The data id each point was inserted with, by position.
    ids: Vec<usize>,
    /// Layer-0 links: `stride` slots per position, unused slots `EMPTY`.
    stride: usize,
    level0: Vec<u32>,
    /// Links in layers 1.. (index 0 is layer 1), for the points that reach them.
    upper: Vec<HashMap<u32, Box<[u32]>>>,
    entry: Option<u32>,
}

impl<T: Copy + Send + Sync + 'static, D: Distance<T> + Copy + Send + Sync> FrozenGraph<T, D> {
    /// Copies `hnsw`. Call from the thread that inserts (no insert may run meanwhile).
    pub fn of(hnsw: &Hnsw<'_, T, D>, dist: D) -> FrozenGraph<T, D> {
        let points = hnsw.get_point_indexation();
        if points.get_nb_point() == 0 {
            // (hnsw_rs' point iterator expects an entry point.)
            return FrozenGraph {
                dist,
                dim: 0,
                data: Vec::new(),
                ids: Vec::new(),
                stride: 0,
                level0: Vec::new(),
                upper: Vec::new(),
                entry: None,
            };
        }
        let top = usize::from(points.get_max_level_observed());
        // Positions: layer by layer (a point is stored in its top layer), in storage order.
        let mut offset = Vec::with_capacity(top + 2);
        let mut n = 0usize;
        for layer in 0..=top {
            offset.push(n);
            n += points.get_layer_nb_point(layer);
        }
        let position = |layer: u8, rank: i32| -> Option<u32> {
            let base = *offset.get(usize::from(layer))?;
            let rank = usize::try_from(rank).ok()?;
            u32::try_from(base + rank)
                .ok()
                .filter(|p| (*p as usize) < n)
        };
        let mut dim = 0;
        let mut data = Vec::new();
        let mut ids = Vec::with_capacity(n);
        let mut links0: Vec<Vec<u32>> = Vec::with_capacity(n);
        let mut upper: Vec<HashMap<u32, Box<[u32]>>> = vec![HashMap::new(); top];
        let mut entry = None;
        for point in points {
            let id = point.get_point_id();
            let (layer, rank) = (id.0, id.1);
            let Some(pos) = position(layer, rank) else {
                continue;
            };
            debug_assert_eq!(pos as usize, ids.len(), "points come in position order");
            let v = point.get_v();
            if data.is_empty() {
                dim = v.len();
                data.reserve(dim * n);
            }
            // Points of another width cannot come from one graph; pad defensively.
            data.extend(v.iter().copied().take(dim));
            if v.len() < dim {
                data.extend(std::iter::repeat_n(v[0], dim - v.len()));
            }
            ids.push(point.get_origin_id());
            let mut layers = point.get_neighborhood_id().into_iter();
            links0.push(
                layers
                    .next()
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|nb| position(nb.p_id.0, nb.p_id.1))
                    .collect(),
            );
            for (l, nbs) in layers.enumerate() {
                if let Some(map) = upper.get_mut(l) {
                    let list = nbs
                        .iter()
                        .filter_map(|nb| position(nb.p_id.0, nb.p_id.1))
                        .collect();
                    map.insert(pos, list);
                }
            }
            // hnsw_rs enters at the first point that reached the top layer.
            if usize::from(layer) == top && entry.is_none() {
                entry = Some(pos);
            }
        }
        let stride = links0.iter().map(Vec::len).max().unwrap_or(0);
        let mut level0 = vec![EMPTY; stride * links0.len()];
        for (pos, links) in links0.iter().enumerate() {
            level0[pos * stride..pos * stride + links.len()].copy_from_slice(links);
        }
        FrozenGraph {
            dist,
            dim,
            data,
            ids,
            stride,
            level0,
            upper,
            entry,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Writes the copy (little-endian; a hash of everything at the end), so that a restart
    /// reads it back instead of copying a reloaded hnsw_rs graph point by point.
    pub fn write_to(&self, w: impl Write) -> io::Result<()>
    where
        T: Component,
    {
        let mut w = Hashing::new(io::BufWriter::new(w));
        let mut buf = Vec::with_capacity(1 << 16);
        let u64s = |buf: &mut Vec<u8>, xs: &[u64]| {
            xs.iter()
                .for_each(|x| buf.extend_from_slice(&x.to_le_bytes()))
        };
        buf.extend_from_slice(MAGIC);
        let entry = self.entry.map_or(u64::MAX, u64::from);
        u64s(
            &mut buf,
            &[
                self.dim as u64,
                self.len() as u64,
                self.stride as u64,
                entry,
            ],
        );
        w.write_all(&buf)?;
        for chunk in self.data.chunks(1 << 14) {
            buf.clear();
            chunk.iter().for_each(|c| c.put(&mut buf));
            w.write_all(&buf)?;
        }
        for chunk in self.ids.chunks(1 << 13) {
            buf.clear();
            chunk
                .iter()
                .for_each(|&id| buf.extend_from_slice(&(id as u64).to_le_bytes()));
            w.write_all(&buf)?;
        }
        for chunk in self.level0.chunks(1 << 14) {
            buf.clear();
            chunk
                .iter()
                .for_each(|l| buf.extend_from_slice(&l.to_le_bytes()));
            w.write_all(&buf)?;
        }
        buf.clear();
        u64s(&mut buf, &[self.upper.len() as u64]);
        for layer in &self.upper {
            u64s(&mut buf, &[layer.len() as u64]);
            let mut nodes: Vec<(&u32, &Box<[u32]>)> = layer.iter().collect();
            nodes.sort_by_key(|(pos, _)| **pos);
            for (pos, links) in nodes {
                buf.extend_from_slice(&pos.to_le_bytes());
                buf.extend_from_slice(&(links.len() as u32).to_le_bytes());
                links
                    .iter()
                    .for_each(|l| buf.extend_from_slice(&l.to_le_bytes()));
            }
        }
        w.write_all(&buf)?;
        let hash = w.digest();
        let mut inner = w.inner;
        inner.write_all(&hash.to_le_bytes())?;
        inner.flush()
    }

    /// Reads a copy `write_to` wrote; an error for anything else (a wrong hash included).
    pub fn read_from(r: impl Read, dist: D) -> io::Result<FrozenGraph<T, D>>
    where
        T: Component,
    {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let mut r = Hashing::new(io::BufReader::new(r));
        let mut head = [0u8; 40];
        r.read_exact(&mut head)?;
        if &head[..8] != MAGIC {
            return Err(bad("not a graph copy"));
        }
        let word =
            |i: usize| u64::from_le_bytes(head[8 + 8 * i..16 + 8 * i].try_into().expect("8"));
        let [dim, n, stride, entry] = [word(0), word(1), word(2), word(3)];
        let n = usize::try_from(n).map_err(|_| bad("size"))?;
        let (dim, stride) = (dim as usize, stride as usize);
        // Sizes are checked against what follows by reading it: a corrupt count fails the
        // read (or the hash), it cannot make the copy index out of bounds below.
        let count = |a: usize, b: usize| a.checked_mul(b).ok_or_else(|| bad("size"));
        let truncated = |e: io::Error| match e.kind() {
            io::ErrorKind::UnexpectedEof => bad("truncated"),
            _ => e,
        };
        let data: Vec<T> = read_values(&mut r, count(n, dim)?).map_err(truncated)?;
        let ids: Vec<usize> = read_values::<u64>(&mut r, n)
            .map_err(truncated)?
            .into_iter()
            .map(|id| id as usize)
            .collect();
        let level0: Vec<u32> = read_values(&mut r, count(n, stride)?).map_err(truncated)?;
        let word = |r: &mut Hashing<_>| -> io::Result<u64> {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).map_err(truncated)?;
            Ok(u64::from_le_bytes(b))
        };
        let layers = word(&mut r)? as usize;
        if layers > 64 {
            return Err(bad("layers"));
        }
        let mut upper = Vec::with_capacity(layers);
        for _ in 0..layers {
            let nodes = word(&mut r)? as usize;
            let mut layer = HashMap::with_capacity(nodes.min(n));
            for _ in 0..nodes {
                let head = word(&mut r)?;
                let (pos, len) = (head as u32, (head >> 32) as usize);
                let links: Vec<u32> = read_values(&mut r, len).map_err(truncated)?;
                layer.insert(pos, links.into_boxed_slice());
            }
            upper.push(layer);
        }
        let hash = r.digest();
        let mut stored = [0u8; 8];
        r.inner.read_exact(&mut stored)?;
        if u64::from_le_bytes(stored) != hash {
            return Err(bad("hash mismatch"));
        }
        let in_range = |p: u32| (p as usize) < n;
        let links_ok = level0.iter().all(|&l| l == EMPTY || in_range(l))
            && upper.iter().all(|l| {
                l.iter()
                    .all(|(p, ls)| in_range(*p) && ls.iter().all(|&x| in_range(x)))
            });
        let entry = match entry {
            u64::MAX => None,
            e => Some(u32::try_from(e).map_err(|_| bad("entry"))?),
        };
        if !links_ok || entry.is_some_and(|e| !in_range(e)) || (n > 0 && entry.is_none()) {
            return Err(bad("links out of range"));
        }
        Ok(FrozenGraph {
            dist,
            dim,
            data,
            ids,
            stride,
            level0,
            upper,
            entry,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Reads one component in each cache line of a point, so that they are in cache for its
    /// distance (safe Rust has no prefetch instruction; a read the CPU runs ahead with is one).
    fn touch(&self, pos: u32) {
        let at = pos as usize * self.dim;
        let step = (64 / std::mem::size_of::<T>()).max(1);
        for i in (at..at + self.dim).step_by(step) {
            std::hint::black_box(self.data[i]);
        }
    }

    fn distance(&self, q: &[T], pos: u32) -> f32 {
        let at = pos as usize * self.dim;
        self.dist.eval(q, &self.data[at..at + self.dim])
    }

    /// The data ids of up to `k` points closest to `q`, closest first, from a beam of
    /// `ef.max(k)`: greedy descent through the upper layers, then a beam search in layer 0.
    pub fn search(&self, q: &[T], k: usize, ef: usize) -> Vec<usize> {
        let Some(mut ep) = self.entry else {
            return Vec::new();
        };
        if q.len() != self.dim || k == 0 {
            return Vec::new();
        }
        let ef = ef.max(k);
        let mut d_ep = self.distance(q, ep);
        for layer in self.upper.iter().rev() {
            loop {
                let mut moved = false;
                for &nb in layer.get(&ep).map(|l| &l[..]).unwrap_or(&[]) {
                    let d = self.distance(q, nb);
                    if d < d_ep {
                        (ep, d_ep) = (nb, d);
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let found = VISITED.with(|v| {
            let mut visited = v.borrow_mut();
            let stamp = visited.next(self.len());
            self.beam(q, ep, d_ep, ef, &mut visited.marks, stamp)
        });
        found
            .into_iter()
            .take(k)
            .map(|(_, pos)| self.ids[pos as usize])
            .collect()
    }

    /// Layer-0 beam search from `ep`: the `ef` closest points reached, closest first.
    fn beam(
        &self,
        q: &[T],
        ep: u32,
        d_ep: f32,
        ef: usize,
        marks: &mut [u32],
        stamp: u32,
    ) -> Vec<(Dist, u32)> {
        let mut candidates: BinaryHeap<Reverse<(Dist, u32)>> = BinaryHeap::with_capacity(ef * 2);
        let mut best: BinaryHeap<(Dist, u32)> = BinaryHeap::with_capacity(ef + 1);
        let mut unseen: Vec<u32> = Vec::with_capacity(self.stride);
        marks[ep as usize] = stamp;
        candidates.push(Reverse((Dist(d_ep), ep)));
        best.push((Dist(d_ep), ep));
        while let Some(Reverse((Dist(d), pos))) = candidates.pop() {
            if best.len() >= ef && best.peek().is_some_and(|(Dist(w), _)| d > *w) {
                break;
            }
            let links = &self.level0[pos as usize * self.stride..(pos as usize + 1) * self.stride];
            unseen.clear();
            for &nb in links {
                if nb == EMPTY {
                    break;
                }
                let mark = &mut marks[nb as usize];
                if *mark != stamp {
                    *mark = stamp;
                    unseen.push(nb);
                }
            }
            // Each unseen neighbour's components are read once before any distance: the
            // reads do not depend on each other, so their cache misses overlap instead of
            // costing one memory latency per distance (a large graph's points are not in
            // cache: 1M 8-bit 384-d points are ~400 MB).
            for &nb in &unseen {
                self.touch(nb);
            }
            for &nb in &unseen {
                let dn = self.distance(q, nb);
                let worst = best.peek().map_or(f32::INFINITY, |(Dist(w), _)| *w);
                if best.len() < ef || dn < worst {
                    candidates.push(Reverse((Dist(dn), nb)));
                    best.push((Dist(dn), nb));
                    if best.len() > ef {
                        best.pop();
                    }
                }
            }
        }
        best.into_sorted_vec()
    }
}

/// A reader or writer that hashes the bytes going through it. Small pieces are gathered
/// before they are hashed: an update costs xxh3 about as much for 8 bytes as for 4 KB, and
/// a copy's upper layers are read a few bytes at a time (a quarter of a restart's reading
/// of the copies went to those updates).
struct Hashing<I> {
    inner: I,
    hash: xxhash_rust::xxh3::Xxh3,
    pending: Vec<u8>,
}

/// Pieces are gathered up to this many bytes before they are hashed.
const HASH_GATHER: usize = 4096;

impl<I> Hashing<I> {
    fn new(inner: I) -> Hashing<I> {
        Hashing {
            inner,
            hash: xxhash_rust::xxh3::Xxh3::new(),
            pending: Vec::with_capacity(HASH_GATHER),
        }
    }

    fn hash(&mut self, bytes: &[u8]) {
        if self.pending.len() + bytes.len() > HASH_GATHER {
            self.hash.update(&self.pending);
            self.pending.clear();
        }
        if bytes.len() >= HASH_GATHER {
            self.hash.update(bytes);
        } else {
            self.pending.extend_from_slice(bytes);
        }
    }

    /// The hash of every byte so far.
    fn digest(&mut self) -> u64 {
        self.hash.update(&self.pending);
        self.pending.clear();
        self.hash.digest()
    }
}

impl<I: Write> Write for Hashing<I> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<I: Read> Read for Hashing<I> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash(&buf[..n]);
        Ok(n)
    }
}

/// A distance that orders totally (NaN last).
#[derive(Clone, Copy, PartialEq, Debug)]
struct Dist(f32);

impl Eq for Dist {}

impl PartialOrd for Dist {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Dist {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Visited marks of this thread's searches: a node is visited when its mark equals the
/// search's stamp, so a new search costs one increment, not a clear.
struct Visited {
    marks: Vec<u32>,
    stamp: u32,
}

impl Visited {
    /// A fresh stamp, with marks for `n` nodes.
    fn next(&mut self, n: usize) -> u32 {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            self.marks.fill(0);
            self.stamp = 1;
        }
        self.stamp
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = const {
        RefCell::new(Visited { marks: Vec::new(), stamp: 0 })
    };
}

#[cfg(test)]
mod tests;
