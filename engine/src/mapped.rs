//! File-backed memory for the vector store's full-precision components: fixed-size blocks of
//! `f32` in an unnamed file under the partition's directory, mapped into memory. The kernel
//! keeps the pages a search touches in its page cache and may drop them under pressure (they
//! are clean once written back), so a partition's vectors are not held in anonymous memory.
//!
//! The file is a cache of what the index's `_vec` column holds durably: it has no name (it
//! disappears with the process, a crash included) and is rebuilt at open like the rest of the
//! derived structures. A block's disk space is allocated (`fallocate`) when it is handed out
//! and released (a hole punched) when it is given back, so the file takes on disk about what
//! it holds, and a full disk is an allocation failure here — the block then comes from the
//! heap — never a `SIGBUS` on a later write through the mapping.
//!
//! The workspace's one `unsafe` module (mapping a file cannot be done without it): each use
//! says why it is sound.
#![allow(unsafe_code)]

use std::fs::File;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

/// The most bytes mapped at a time as the file grows: each piece stays mapped, at the same
/// address, until the pool is dropped.
const PIECE_BYTES: usize = 64 << 20;

/// A pool of equal blocks of `f32` in one unnamed, mapped file.
pub struct Pool {
    dir: PathBuf,
    /// `f32`s per block.
    len: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Created at the first block.
    file: Option<File>,
    /// The mapped pieces, in file order, with the first block each holds.
    pieces: Vec<(u32, memmap2::MmapMut)>,
    /// Blocks given back that keep their disk space (and cached pages), for the next takes:
    /// a commit gives back about as many blocks as it takes.
    hot: Vec<u32>,
    /// Blocks without disk space: given back beyond what `hot` keeps, or never used.
    holes: Vec<u32>,
    /// Blocks the mapped pieces hold.
    made: u32,
    /// The file could not be created or grown: blocks come from the heap from then on.
    failed: bool,
}

impl Inner {
    /// Blocks handed out (and not given back).
    fn in_use(&self) -> usize {
        self.made as usize - self.hot.len() - self.holes.len()
    }
}

impl Pool {
    /// A pool of blocks of `len` values whose file will be made in `dir`.
    pub fn new(dir: &Path, len: usize) -> Arc<Pool> {
        Arc::new(Pool {
            dir: dir.to_owned(),
            len,
            inner: Mutex::default(),
        })
    }

    fn block_bytes(&self) -> u64 {
        (self.len * std::mem::size_of::<f32>()) as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update of `Inner` is complete before anything can panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of disk the file holds: the blocks handed out and the few given back it keeps
    /// (the rest release theirs).
    pub fn file_bytes(&self) -> u64 {
        let inner = self.lock();
        (u64::from(inner.made) - inner.holes.len() as u64) * self.block_bytes()
    }

    /// A block of this pool's length; `None` when the file cannot give one.
    fn take(self: &Arc<Pool>) -> Option<Region> {
        let mut inner = self.lock();
        if inner.failed {
            return None;
        }
        let reserved = if let Some(id) = inner.hot.pop() {
            Ok(id)
        } else if let Some(id) = inner.holes.pop() {
            self.reserve(&inner, id).map(|()| id)
        } else {
            self.grow(&mut inner).and_then(|()| {
                let id = inner.holes.pop().expect("a grown pool has a free block");
                self.reserve(&inner, id).map(|()| id)
            })
        };
        let id = match reserved {
            Ok(id) => id,
            Err(e) => {
                inner.failed = true;
                tracing::warn!(
                    dir = %self.dir.display(),
                    error = %e,
                    "vectors cannot be kept in a mapped file: they are kept in memory"
                );
                return None;
            }
        };
        let at = inner.pieces.partition_point(|(first, _)| *first <= id) - 1;
        let (first, piece) = &mut inner.pieces[at];
        let offset = u64::from(id - *first) * self.block_bytes();
        // SAFETY: the block lies within the piece (the piece holds every block from `first`
        // up to the next piece's first), and the mapping lives as long as the pool, which the
        // region keeps alive.
        let ptr = unsafe { piece.as_mut_ptr().add(offset as usize) }.cast::<f32>();
        Some(Region {
            pool: self.clone(),
            id,
            ptr: NonNull::new(ptr)?,
        })
    }

    /// Allocates a block's disk space (a given-back block's was released), so that writing
    /// it through the mapping cannot fail.
    fn reserve(&self, inner: &Inner, id: u32) -> std::io::Result<()> {
        use rustix::fs::{fallocate, FallocateFlags};
        let file = inner
            .file
            .as_ref()
            .expect("blocks exist only in a made file");
        let bytes = self.block_bytes();
        fallocate(
            file,
            FallocateFlags::KEEP_SIZE,
            u64::from(id) * bytes,
            bytes,
        )?;
        Ok(())
    }

    /// Takes a block back: kept ready for the next take while few are (a sixteenth of those
    /// in use, 64 at least), else its disk space (and cached pages) are given back to the
    /// system. Reusing a kept block costs its copy alone; a hole costs its allocation and a
    /// page fault per page besides (a commit copying 1,000 blocks: 6-8 ms from kept blocks,
    /// 33 ms from holes, measured).
    fn release(&self, inner: &mut Inner, id: u32) {
        use rustix::fs::{fallocate, FallocateFlags};
        if inner.hot.len() < (inner.in_use() / 16).max(64) {
            inner.hot.push(id);
            return;
        }
        inner.holes.push(id);
        if let Some(file) = &inner.file {
            let bytes = self.block_bytes();
            let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
            // At worst (a file system without holes) the block keeps its space until reused.
            let _ = fallocate(file, flags, u64::from(id) * bytes, bytes);
        }
    }

    /// Maps one more piece: a quarter of the blocks made so far (one at least; at most
    /// `PIECE_BYTES` worth), so the file is never much larger than what it holds.
    fn grow(&self, inner: &mut Inner) -> std::io::Result<()> {
        let bytes = self.block_bytes();
        // A piece starts at a page boundary: its block count is a multiple of `align`.
        let align = PAGE / gcd(bytes, PAGE);
        let most = (PIECE_BYTES as u64 / bytes).max(1);
        let want = (u64::from(inner.made) / 4).clamp(1, most);
        let count = want.div_ceil(align) * align;
        let offset = u64::from(inner.made) * bytes;
        if inner.file.is_none() {
            inner.file = Some(tempfile::tempfile_in(&self.dir)?);
        }
        let file = inner.file.as_ref().expect("made above");
        file.set_len(offset + count * bytes)?;
        // SAFETY: the file is ours alone (it has no name) and never shrinks; each block is
        // handed out to one owner at a time.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(offset)
                .len((count * bytes) as usize)
                .map_mut(file)?
        };
        let first = inner.made;
        inner.made += u32::try_from(count).map_err(std::io::Error::other)?;
        inner.pieces.push((first, map));
        // Lowest block first. A new piece's blocks are holes: `reserve` allocates each.
        inner.holes.extend((first..inner.made).rev());
        Ok(())
    }
}

/// The page size pieces are aligned to: 4 KiB here. Where pages are larger, mapping a piece at
/// an offset that is not a page multiple fails, and the store keeps its blocks on the heap.
const PAGE: u64 = 4096;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One block of a pool, owned alone; given back when dropped.
pub struct Region {
    pool: Arc<Pool>,
    id: u32,
    ptr: NonNull<f32>,
}

// SAFETY: a region is the only handle on its block (`&mut` to write, `&` to read), like a Box.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Deref for Region {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `ptr` points at `len` values of a live mapping owned by this region alone.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.pool.len) }
    }
}

impl DerefMut for Region {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as above, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.pool.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let mut inner = self.pool.lock();
        self.pool.release(&mut inner, self.id);
    }
}

/// `len` values, in a pool's file when it has room, else on the heap.
pub enum Block {
    Heap(Box<[f32]>),
    Mapped(Region),
}

impl Block {
    /// `len` zeroes (a mapped block's are whatever its last owner left: callers write before
    /// they read).
    pub fn new(pool: Option<&Arc<Pool>>, len: usize) -> Block {
        match pool.and_then(|p| p.take()) {
            Some(r) => Block::Mapped(r),
            None => Block::Heap(vec![0.0; len].into_boxed_slice()),
        }
    }
}

impl Clone for Block {
    /// A copy in a new block of the same pool (the heap when it has no room).
    fn clone(&self) -> Block {
        let mut copy = match self {
            Block::Heap(b) => return Block::Heap(b.clone()),
            Block::Mapped(r) => Block::new(Some(&r.pool), r.len()),
        };
        copy.copy_from_slice(self);
        copy
    }
}

impl Deref for Block {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Block::Heap(b) => b,
            Block::Mapped(r) => r,
        }
    }
}

impl DerefMut for Block {
    fn deref_mut(&mut self) -> &mut [f32] {
        match self {
            Block::Heap(b) => b,
            Block::Mapped(r) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Bytes of disk the pool's file takes.
    fn on_disk(pool: &Pool) -> u64 {
        let inner = pool.lock();
        inner
            .file
            .as_ref()
            .map_or(0, |f| f.metadata().unwrap().blocks() * 512)
    }

    #[test]
    fn blocks_are_separate_reused_and_copied() {
        let dir = tempfile::tempdir().unwrap();
        // 1,024 values a block: 4 KiB.
        let pool = Pool::new(dir.path(), 1024);
        let mut a = Block::new(Some(&pool), 1024);
        let mut b = Block::new(Some(&pool), 1024);
        assert!(matches!((&a, &b), (Block::Mapped(_), Block::Mapped(_))));
        a.fill(1.0);
        b.fill(2.0);
        assert!(a.iter().all(|&x| x == 1.0) && b.iter().all(|&x| x == 2.0));
        let c = a.clone();
        a.fill(3.0);
        assert!(c.iter().all(|&x| x == 1.0), "a copy is its own block");
        assert_eq!(pool.file_bytes(), 3 * 4096);
        drop(b);
        assert_eq!(
            pool.file_bytes(),
            3 * 4096,
            "a given-back block is kept ready"
        );
        let Block::Mapped(d) = Block::new(Some(&pool), 1024) else {
            panic!("mapped")
        };
        assert_eq!(d.id, 1, "the given-back block is handed out again");
        // No name in the directory: nothing is left behind, a crash included.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_file_grows_by_pieces_and_gives_disk_back() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB blocks.
        let len = 16 << 10;
        let pool = Pool::new(dir.path(), len);
        let mut blocks: Vec<Block> = (0..300)
            .map(|i| {
                let mut b = Block::new(Some(&pool), len);
                b.fill(i as f32);
                b
            })
            .collect();
        assert!(blocks.iter().all(|b| matches!(b, Block::Mapped(_))));
        for (i, b) in blocks.iter().enumerate() {
            assert!(
                b.iter().all(|&x| x == i as f32),
                "block {i} kept its values"
            );
        }
        let made = pool.lock().made;
        assert!(
            (300..=380).contains(&made),
            "grown a quarter at a time: {made} blocks"
        );
        assert!(pool.lock().pieces.len() > 10, "in several pieces");
        let full = on_disk(&pool);
        assert!(
            full >= 300 << 16,
            "every block handed out is allocated: {full}"
        );
        blocks.truncate(50);
        // 64 of the 250 given back are kept ready; the others' disk is released.
        assert_eq!(pool.file_bytes(), (50 + 64) << 16);
        let after = on_disk(&pool);
        assert!(
            after <= (50 + 64 + 8) << 16,
            "given-back blocks release their disk: {after}"
        );
        for i in 0..250 {
            let mut b = Block::new(Some(&pool), len);
            b.fill(-(i as f32));
            blocks.push(b);
        }
        assert_eq!(pool.lock().made, made, "given-back blocks are used again");
        for (i, b) in blocks.iter().enumerate().skip(50) {
            assert!(b.iter().all(|&x| x == -((i - 50) as f32)));
        }
        assert!(
            on_disk(&pool) >= 300 << 16,
            "reused holes are allocated again"
        );
    }

    #[test]
    fn blocks_of_any_length_start_pieces_on_pages() {
        let dir = tempfile::tempdir().unwrap();
        // 1,000 values: 4,000 bytes, not a page.
        let pool = Pool::new(dir.path(), 1000);
        let blocks: Vec<Block> = (0..100).map(|_| Block::new(Some(&pool), 1000)).collect();
        assert!(blocks
            .iter()
            .all(|b| matches!(b, Block::Mapped(_)) && b.len() == 1000));
    }

    #[test]
    fn a_pool_that_cannot_make_its_file_gives_heap_blocks() {
        let pool = Pool::new(Path::new("/nonexistent/dir"), 1024);
        let mut b = Block::new(Some(&pool), 1024);
        assert!(matches!(b, Block::Heap(_)));
        b[3] = 1.5;
        assert_eq!(b.clone()[3], 1.5);
        assert_eq!(pool.file_bytes(), 0);
    }
}
