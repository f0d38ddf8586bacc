//! Handing freed memory back to the system. mimalloc (the process's allocator) keeps a page
//! that another thread freed blocks of until the page's own thread allocates again: the
//! graph builder's insert threads allocate hnsw_rs's points, the builder drops them when a
//! graph goes idle, and the insert threads, idle too, would keep those pages resident for
//! good (a 30k-vector graph's drop gave back 16 of its ~50 MB).
//!
//! The indexer's one `unsafe` call: mimalloc's collection has no preconditions.
#![allow(unsafe_code)]

/// Frees what the calling thread's heap holds without using: pages other threads freed
/// blocks of, and empty pages and segments. Call it on every thread that allocated what was
/// freed (a rayon pool: `broadcast`).
pub fn release_freed() {
    // SAFETY: `mi_collect` may be called on any thread at any time; it only walks the
    // calling thread's heap (and, forced, the abandoned segments it can reclaim). When the
    // global allocator is not mimalloc (a test linking this library), its heaps are empty.
    unsafe { libmimalloc_sys::mi_collect(true) }
}
