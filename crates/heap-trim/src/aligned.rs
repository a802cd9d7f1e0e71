//! The process's global allocator: glibc's `malloc`, with over-aligned small blocks served by padding.
//!
//! Rust asks for a block aligned beyond `malloc`'s 16 bytes through `posix_memalign`. In glibc before 2.38 that
//! call skips the per-thread cache: it takes a larger chunk from the arena, splits off the leading and trailing
//! remainders and frees them, which costs about 600 instructions a call against about 60 for a cached `malloc`,
//! and churns the arena's bins for every allocation after it. tokio aligns two objects per connection to 128
//! bytes (the task and the socket's readiness record), so every accepted connection paid it twice.
//!
//! Here an over-aligned block of moderate size is a plain `malloc` of `size + align` bytes, rounded up to the
//! alignment inside; the address `malloc` returned is kept in the 8 bytes before the aligned block, where `free`
//! finds it. The cost is `align` bytes per such block. Everything else goes to [`System`] unchanged.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// `malloc`'s own alignment on the 64-bit targets Portico ships for (glibc's `MALLOC_ALIGNMENT`).
const MALLOC_ALIGN: usize = 16;
/// The largest alignment served by padding: beyond it the padding would cost more than the call saves.
const MAX_PADDED_ALIGN: usize = 256;
/// The largest padded request: larger blocks are rare, and `malloc` serves them from `mmap` past 128 KiB anyway.
const MAX_PADDED_SIZE: usize = 64 << 10;

/// glibc's allocator, with blocks aligned to 32-256 bytes and up to 64 KiB (padding included) taken by `malloc`
/// instead of `posix_memalign`. Install with `#[global_allocator]`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Allocator;

/// Whether `layout` is served by padding (the same answer for the allocation and its `dealloc`, which gets the
/// same layout).
#[inline(always)]
fn padded(layout: Layout) -> bool {
    // Only where `malloc`'s 16-byte alignment is known; elsewhere everything goes to `System`.
    cfg!(all(target_env = "gnu", target_pointer_width = "64"))
        && layout.align() > MALLOC_ALIGN
        && layout.align() <= MAX_PADDED_ALIGN
        && layout.size() <= MAX_PADDED_SIZE - layout.align()
}

/// # Safety
/// `padded(layout)` holds.
#[inline]
unsafe fn alloc_padded(layout: Layout) -> *mut u8 {
    let align = layout.align();
    // SAFETY: a plain `malloc`; the size cannot overflow (both terms are bounded by `padded`).
    let raw = unsafe { libc::malloc(layout.size() + align) }.cast::<u8>();
    if raw.is_null() {
        return raw;
    }
    // `raw` is 16-aligned and `align` a larger power of two, so the next multiple of `align` above `raw` is at
    // least 16 and at most `align` bytes in: the block fits, and the 8 bytes before it are ours.
    let offset = align - (raw as usize & (align - 1));
    // SAFETY: `offset <= align`, inside the `size + align` bytes just allocated.
    let aligned = unsafe { raw.add(offset) };
    // SAFETY: `offset >= 16`, so `aligned - 8` is inside the allocation and 8-aligned.
    unsafe { aligned.sub(8).cast::<*mut u8>().write(raw) };
    aligned
}

/// # Safety
/// `ptr` came from [`alloc_padded`] and was not freed.
#[inline]
unsafe fn free_padded(ptr: *mut u8) {
    // SAFETY: `alloc_padded` wrote the address `malloc` returned in the 8 bytes before the block.
    unsafe { libc::free(ptr.sub(8).cast::<*mut u8>().read().cast()) }
}

// SAFETY: every block comes from glibc's `malloc` (directly, padded) or from `System`, and goes back the same
// way: `padded` decides by the layout, which `dealloc` and `realloc` receive unchanged.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if padded(layout) {
            // SAFETY: `padded(layout)`.
            unsafe { alloc_padded(layout) }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if padded(layout) {
            // SAFETY: `padded(layout)`; the block is `layout.size()` bytes long.
            unsafe {
                let p = alloc_padded(layout);
                if !p.is_null() {
                    ptr::write_bytes(p, 0, layout.size());
                }
                p
            }
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if padded(layout) {
            // SAFETY: allocated by `alloc_padded` for this same layout.
            unsafe { free_padded(ptr) }
        } else {
            // SAFETY: allocated by `System` for this same layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the alignment, does not overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !padded(layout) && !padded(new_layout) {
            // SAFETY: both layouts are `System`'s; forwarded with the caller's guarantees.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a fresh block, the common prefix copied, the old block freed the way it was allocated.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(p: *mut u8, len: usize, seed: u8) {
        for i in 0..len {
            // SAFETY: `p` is a live block of at least `len` bytes.
            unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
        }
    }

    fn check(p: *const u8, len: usize, seed: u8) -> bool {
        // SAFETY: `p` is a live block of at least `len` bytes.
        (0..len).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
    }

    #[test]
    fn blocks_are_aligned_writable_and_distinct() {
        let a = Allocator;
        for align in [1usize, 8, 16, 32, 64, 128, 256, 512, 4096] {
            for size in [1usize, 7, 16, 100, 128, 1000, 4096, 65536 - 256, 65536, 200_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                let blocks: Vec<*mut u8> = (0..8u8)
                    .map(|seed| {
                        // SAFETY: a non-zero size.
                        let p = unsafe { a.alloc(layout) };
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size} align {align}");
                        fill(p, size, seed);
                        p
                    })
                    .collect();
                for (seed, &p) in blocks.iter().enumerate() {
                    assert!(check(p, size, seed as u8), "size {size} align {align}: blocks overlap");
                    // SAFETY: allocated above with `layout`.
                    unsafe { a.dealloc(p, layout) };
                }
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_on_reused_memory() {
        let a = Allocator;
        let layout = Layout::from_size_align(384, 128).unwrap();
        for _ in 0..4 {
            // SAFETY: a non-zero size; the block is filled, freed, and the next one checked.
            unsafe {
                let dirty = a.alloc(layout);
                fill(dirty, 384, 0xA5);
                a.dealloc(dirty, layout);
                let p = a.alloc_zeroed(layout);
                assert_eq!(p as usize % 128, 0);
                assert!((0..384).all(|i| p.add(i).read() == 0));
                a.dealloc(p, layout);
            }
        }
    }

    #[test]
    fn realloc_keeps_contents_across_both_paths() {
        let a = Allocator;
        for align in [16usize, 64, 128] {
            // Grows from padded sizes past the padded limit and back down again.
            let sizes = [24usize, 300, 5000, 70_000, 200_000, 40_000, 100, 10];
            let mut layout = Layout::from_size_align(sizes[0], align).unwrap();
            // SAFETY: a non-zero size.
            let mut p = unsafe { a.alloc(layout) };
            fill(p, sizes[0], 3);
            for &next in &sizes[1..] {
                let kept = layout.size().min(next);
                // SAFETY: `p` is live with `layout`; `next` is non-zero and small.
                p = unsafe { a.realloc(p, layout, next) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                assert!(
                    check(p, kept, 3),
                    "align {align}: {} -> {next} lost bytes",
                    layout.size()
                );
                fill(p, next, 3);
                layout = Layout::from_size_align(next, align).unwrap();
            }
            // SAFETY: `p` is live with `layout`.
            unsafe { a.dealloc(p, layout) };
        }
    }

    #[test]
    #[cfg(all(target_env = "gnu", target_pointer_width = "64"))]
    fn padding_covers_the_over_aligned_small_blocks_only() {
        let l = |size, align| Layout::from_size_align(size, align).unwrap();
        assert!(!padded(l(64, 16)));
        assert!(padded(l(64, 32)));
        assert!(padded(l(384, 128)));
        assert!(padded(l(65536 - 128, 128)));
        assert!(!padded(l(65536 - 127, 128)));
        assert!(!padded(l(64, 512)));
    }
}
