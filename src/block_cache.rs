//! The process's allocator: the system's, with a small per-thread cache of freed blocks of 128
//! bytes to 8 KiB in front of it.
//!
//! glibc serves blocks up to 1,032 bytes from its own per-thread cache in a few dozen
//! instructions, but keeps only seven of each size there, and a larger block always goes through
//! its bins: several hundred instructions for a malloc and free pair. Each proxied request
//! allocates such blocks for its own lifetime (the client read buffer, the header maps, the
//! exchange and forwarding futures) and frees them when it ends, with as many requests in flight
//! on a thread as it has busy connections; the next requests on the thread take them back.
//!
//! Bounded, unlike a general-purpose allocator's caches: at most [`DEPTH`] blocks per size class
//! and [`BUDGET`] bytes on a thread, only on threads that [`enable`] it (the runtime's), and [`flush`]ed when such a
//! thread stops. To make any cached block fit any request of its class, every block in the
//! cached range is allocated at its class's full size, whichever thread allocates it; classes are
//! 16 bytes apart, glibc's own granularity, so that costs no memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

/// Blocks above this are cached (smaller ones are few per request, and cheap in glibc)...
const MIN: usize = 120;
/// ...up to this size, in classes of glibc's own granularity: chunks 16 bytes apart, each with
/// room for 8 bytes less than its size, so a block rounded up to its class's size takes the same
/// chunk that glibc would give the exact size.
const MAX: usize = 8 * 1024 + 8;
const GRANULE: usize = 16;
const CLASSES: usize = (MAX - MIN) / GRANULE;
/// Free blocks kept per class and thread: about as many as requests in flight on a busy thread,
/// which end in bursts before the next ones begin...
const DEPTH: u8 = 32;
/// ...and bytes kept per thread in all (a burst of other sizes, such as a configuration being
/// decoded, must not leave a thread holding megabytes).
const BUDGET: usize = 512 * 1024;
/// glibc's `malloc` alignment: larger alignments take another path in `System`.
const MALLOC_ALIGN: usize = 16;

pub struct BlockCache;

/// One thread's free blocks: a list per class, linked through the blocks' first word.
struct Cache {
    enabled: bool,
    bytes: usize,
    len: [u8; CLASSES],
    head: [*mut u8; CLASSES],
}

thread_local! {
    // Const-initialised and without a destructor: usable from the allocator at any point of a
    // thread's life, including its teardown.
    static CACHE: UnsafeCell<Cache> = const {
        UnsafeCell::new(Cache {
            enabled: false,
            bytes: 0,
            len: [0; CLASSES],
            head: [ptr::null_mut(); CLASSES],
        })
    };
}

/// Caches freed blocks on this thread from now on.
pub fn enable() {
    with_cache(|cache| cache.enabled = true);
}

/// Stops caching on this thread and returns its cached blocks to the system.
pub fn flush() {
    with_cache(|cache| cache.enabled = false);
    for class in 0..CLASSES {
        loop {
            let block = take(class);
            if block.is_null() {
                break;
            }
            // SAFETY: a cached block was allocated by `System` with its class's layout.
            unsafe { System.dealloc(block, class_layout(class, MALLOC_ALIGN)) };
        }
    }
}

fn with_cache<R>(f: impl FnOnce(&mut Cache) -> R) -> R {
    // SAFETY: the cell is this thread's, and no reference to it outlives `f`, which neither
    // allocates nor calls back here.
    CACHE.with(|cell| f(unsafe { &mut *cell.get() }))
}

/// The size class of a block, if it is one the cache keeps.
fn class_of(size: usize, align: usize) -> Option<usize> {
    (size > MIN && size <= MAX && align <= MALLOC_ALIGN).then(|| (size - MIN - 1) / GRANULE)
}

fn class_size(class: usize) -> usize {
    MIN + (class + 1) * GRANULE
}

fn class_layout(class: usize, align: usize) -> Layout {
    // SAFETY: the alignment came from a valid layout and is at most 16; the size is far from
    // overflowing when rounded to it.
    unsafe { Layout::from_size_align_unchecked(class_size(class), align) }
}

/// The layout a block was really allocated with.
fn allocated(layout: Layout) -> Layout {
    match class_of(layout.size(), layout.align()) {
        Some(class) => class_layout(class, layout.align()),
        None => layout,
    }
}

fn take(class: usize) -> *mut u8 {
    with_cache(|cache| {
        let block = cache.head[class];
        if !block.is_null() {
            // SAFETY: a cached block is free, ours, and holds the next one's address.
            cache.head[class] = unsafe { block.cast::<*mut u8>().read() };
            cache.len[class] -= 1;
            cache.bytes -= class_size(class);
        }
        block
    })
}

fn keep(class: usize, block: *mut u8) -> bool {
    with_cache(|cache| {
        let size = class_size(class);
        if !cache.enabled || cache.len[class] == DEPTH || cache.bytes + size > BUDGET {
            return false;
        }
        // SAFETY: the block is being freed, at least 1 KiB and malloc-aligned.
        unsafe { block.cast::<*mut u8>().write(cache.head[class]) };
        cache.head[class] = block;
        cache.len[class] += 1;
        cache.bytes += size;
        true
    })
}

// SAFETY: every block comes from `System`; a block in the cached range is allocated, resized and
// freed with its class's layout, so a cached block satisfies any request of its class.
unsafe impl GlobalAlloc for BlockCache {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout.size(), layout.align()) else {
            return unsafe { System.alloc(layout) };
        };
        let block = take(class);
        if !block.is_null() {
            return block;
        }
        unsafe { System.alloc(class_layout(class, layout.align())) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class_of(layout.size(), layout.align()) {
            Some(class) => unsafe { System.alloc_zeroed(class_layout(class, layout.align())) },
            None => unsafe { System.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout.size(), layout.align())
            && keep(class, block)
        {
            return;
        }
        unsafe { System.dealloc(block, allocated(layout)) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_class = class_of(new_size, layout.align());
        if new_class.is_some() && new_class == class_of(layout.size(), layout.align()) {
            // The block already has its class's size.
            return block;
        }
        let new_size = new_class.map_or(new_size, class_size);
        unsafe { System.realloc(block, allocated(layout), new_size) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn classes_cover_the_range_in_granules() {
        assert_eq!(class_of(120, 8), None);
        assert_eq!(class_of(121, 8), Some(0));
        assert_eq!(class_size(0), 136);
        assert_eq!(class_of(136, 8), Some(0));
        assert_eq!(class_of(137, 8), Some(1));
        assert_eq!(class_of(8200, 8), Some(CLASSES - 1));
        assert_eq!(class_size(CLASSES - 1), 8200);
        assert_eq!(class_of(8201, 8), None);
        // glibc's usable sizes: 16 * n + 8.
        assert!((0..CLASSES).all(|c| class_size(c) % 16 == 8));
        assert_eq!(
            class_of(2048, 32),
            None,
            "over-aligned blocks are not malloc's"
        );
    }

    #[test]
    fn a_freed_block_is_reused_on_its_thread_only_while_enabled() {
        std::thread::spawn(|| unsafe {
            let a = BlockCache.alloc(layout(2000));
            BlockCache.dealloc(a, layout(2000));
            let b = BlockCache.alloc(layout(2000));
            assert!(
                with_cache(|c| c.len.iter().all(|&l| l == 0)),
                "disabled: nothing kept"
            );
            BlockCache.dealloc(b, layout(2000));

            enable();
            let a = BlockCache.alloc(layout(2000));
            a.write_bytes(0xab, 2000);
            BlockCache.dealloc(a, layout(2000));
            // Any size of the class gets it, at the class's full size.
            let b = BlockCache.alloc(layout(1995));
            assert_eq!(a, b);
            b.write_bytes(0xcd, 1995);
            BlockCache.dealloc(b, layout(1995));
            flush();
            assert!(with_cache(|c| !c.enabled && c.len.iter().all(|&l| l == 0)));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn at_most_depth_blocks_are_kept_per_class() {
        std::thread::spawn(|| unsafe {
            enable();
            let blocks: Vec<_> = (0..usize::from(DEPTH) + 3)
                .map(|_| BlockCache.alloc(layout(5000)))
                .collect();
            for &b in &blocks {
                BlockCache.dealloc(b, layout(5000));
            }
            assert_eq!(with_cache(|c| c.len[class_of(5000, 8).unwrap()]), DEPTH);
            flush();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn at_most_the_budget_is_kept_per_thread() {
        std::thread::spawn(|| unsafe {
            enable();
            let sizes = (0..200).map(|i| 4096 + 16 * i);
            let blocks: Vec<_> = sizes.clone().map(|s| BlockCache.alloc(layout(s))).collect();
            for (b, s) in blocks.into_iter().zip(sizes) {
                BlockCache.dealloc(b, layout(s));
            }
            let kept = with_cache(|c| c.bytes);
            assert!(kept <= BUDGET && kept > BUDGET - 8192, "{kept}");
            flush();
            assert_eq!(with_cache(|c| c.bytes), 0);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn realloc_keeps_contents_across_and_within_classes() {
        std::thread::spawn(|| unsafe {
            enable();
            let a = BlockCache.alloc(layout(100));
            for i in 0..100 {
                *a.add(i) = i as u8;
            }
            // Into the cached range, within one class, then past it and back out.
            let b = BlockCache.realloc(a, layout(100), 1100);
            let c = BlockCache.realloc(b, layout(1100), 1104);
            assert_eq!(b, c, "same class: the block already has room");
            c.add(1103).write(7);
            let d = BlockCache.realloc(c, layout(1104), 9000);
            let e = BlockCache.realloc(d, layout(9000), 3000);
            for i in 0..100 {
                assert_eq!(*e.add(i), i as u8);
            }
            assert_eq!(*e.add(1103), 7);
            BlockCache.dealloc(e, layout(3000));
            let f = BlockCache.alloc_zeroed(layout(3000));
            assert!((0..3000).all(|i| *f.add(i) == 0));
            BlockCache.dealloc(f, layout(3000));
            flush();
        })
        .join()
        .unwrap();
    }
}
