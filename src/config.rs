//! Sizes that shape the arena. Everything else is derived from these.
//!
//! Layer: a leaf every layer reads; calls nothing.

/// The page map's granule and the smallest page: 64 KiB. Every region starts and ends on a
/// slice boundary, so a slice belongs to exactly one page or large block. It is also at least
/// the largest OS page size Linux uses (64 KiB on some aarch64 kernels).
pub(crate) const SLICE_SHIFT: u32 = 16;
pub(crate) const SLICE_SIZE: usize = 1 << SLICE_SHIFT;

/// Small-object regions are 32 MiB: 512 small or 64 medium pages.
pub(crate) const SMALL_REGION_SIZE: usize = 32 << 20;
/// Page descriptors per region (for the smallest page kind).
pub(crate) const MAX_REGION_PAGES: usize = SMALL_REGION_SIZE / SLICE_SIZE;

/// A transparent huge page (x86-64 and aarch64 with 4 KiB base pages): pages regions are
/// aligned to it, so each holds whole huge pages (see `arena::huge`).
pub(crate) const HUGE_PAGE_SIZE: usize = 2 << 20;
/// Huge pages per pages region.
pub(crate) const HUGE_PAGES_PER_REGION: usize = SMALL_REGION_SIZE / HUGE_PAGE_SIZE;
/// A pages region asks for huge pages only once this much of it has been touched: a program
/// whose small objects fit in a few MiB (a CLI, `python3 -c pass`) keeps small pages, and so
/// its RSS and start-up time (see `arena::huge`). Each page kind's region, and each huge page
/// kept partly free, may hold up to 2 MiB the program never touched, which a lower threshold
/// shows in small programs' peak RSS; a higher one loses the gain of programs with a few tens
/// of MiB live (the thresholds tried: `docs/findings.md`, "The huge-page threshold").
pub(crate) const HUGE_MIN_TOUCHED: usize = 16 << 20;
/// Freed memory the arena keeps resident (dirty free ranges, waiting for their purge) when it
/// needs fresh memory for a large block is at most this much, or a `FREED_RESIDENT_SHARE`th
/// of the live large blocks if that is more: beyond it, the ranges due first are purged
/// before the new block is faulted in, so a burst of large frees and new blocks does not add
/// up to twice the peak (jemalloc purges blocks of 8 MiB and more at once; tcmalloc releases
/// at a rate). Measured on `benches/c/largebursts.c`: `BENCHMARKS.md`, "Huge pages".
pub(crate) const FREED_RESIDENT_MIN: usize = 32 << 20;
pub(crate) const FREED_RESIDENT_SHARE: usize = 2;

/// A huge page that stays partly free this many purge delays is broken up (its free pages
/// purged): longer than for small pages, because breaking it costs the TLB reach of 2 MiB.
pub(crate) const HUGE_BREAK_DELAYS: u64 = 10;

/// Blocks up to this size come from pages; larger ones get a region of their own, fitted to
/// them (in whole slices), as jemalloc and glibc carve such blocks from extents. Per-class pages
/// above 64 KiB (4 MiB pages for blocks up to 512 KiB, until issue 12) left every thread a
/// partly used 4 MiB page for each class it touched: the torture workload peaked at 746 MiB
/// with them, 612–618 MiB without (jemalloc: 608). Thread heaps keep a few freed ones for
/// reuse (`heap::large_cache`), so pairs of such blocks do not take the arena lock.
pub(crate) const MAX_SMALL_SIZE: usize = 64 << 10;

/// Address space reserved at a time. Reserving costs no memory (`MAP_NORESERVE`), only
/// address space, of which a 47-bit process has 128 TiB.
pub(crate) const RESERVATION_SIZE: usize = 4 << 30;
/// The first reservation under strict overcommit, where reserving is charged in full; later
/// ones double up to [`RESERVATION_SIZE`].
pub(crate) const STRICT_RESERVATION_SIZE: usize = 128 << 20;
/// Reservations are aligned so small regions (aligned to their page size) fit without waste.
pub(crate) const RESERVATION_ALIGN: usize = SMALL_REGION_SIZE;
/// The most reservations the arena tracks (a 4 GiB each, 4 TiB in all, more if single blocks
/// need more).
pub(crate) const MAX_RESERVATIONS: usize = 1024;

/// Large blocks at least this big move with `mremap` (page tables move, no bytes are copied)
/// when they cannot grow in place; smaller ones are copied. Moving costs about the same at
/// every size and copying grows with the size: the break-even lies between 64 and 256 KiB
/// (`benches/remap_breakeven.rs`; figures in `docs/findings.md`, "When mremap beats a copy").
pub(crate) const REMAP_MIN_SIZE: usize = 256 << 10;
/// The kernel moves whole page tables (2 MiB each on x86_64 and 4 KiB-page aarch64) when the
/// source and destination of `mremap` are congruent modulo this.
pub(crate) const REMAP_CONGRUENCE: usize = 2 << 20;

/// Heap profiling's default mean distance between samples, in bytes allocated (jemalloc's
/// and tcmalloc's default too).
pub(crate) const PROFILE_INTERVAL: u64 = 512 << 10;

/// Metadata (descriptors, page tables) is carved from chunks of this size.
pub(crate) const META_CHUNK_SIZE: usize = 4 << 20;

/// The two page kinds. A size class lives in the smallest kind that holds at least eight of
/// its blocks, which bounds the unusable tail of a page to one eighth.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum PageKind {
    /// 64 KiB pages for blocks up to 8 KiB.
    Small = 0,
    /// 512 KiB pages for blocks up to 64 KiB.
    Medium = 1,
}

impl PageKind {
    pub(crate) const COUNT: usize = 2;
    pub(crate) const ALL: [PageKind; PageKind::COUNT] = [PageKind::Small, PageKind::Medium];

    pub(crate) const fn shift(self) -> u32 {
        match self {
            PageKind::Small => 16,
            PageKind::Medium => 19,
        }
    }

    pub(crate) const fn page_size(self) -> usize {
        1 << self.shift()
    }

    pub(crate) const fn pages_per_region(self) -> usize {
        SMALL_REGION_SIZE >> self.shift()
    }

    /// The largest block this kind of page holds (an eighth of the page).
    pub(crate) const fn max_block(self) -> usize {
        self.page_size() / 8
    }

    /// The page kind for blocks of `block_size` bytes (at most [`MAX_SMALL_SIZE`]).
    pub(crate) const fn for_block(block_size: usize) -> PageKind {
        if block_size <= PageKind::Small.max_block() {
            PageKind::Small
        } else {
            PageKind::Medium
        }
    }

    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// `value` rounded up to a multiple of `align` (a power of two), or `None` if that overflows.
/// The crate's one round-up: sizes, addresses and reservations all go through it.
pub(crate) const fn align_up(value: usize, align: usize) -> Option<usize> {
    debug_assert!(align.is_power_of_two());
    match value.checked_add(align - 1) {
        Some(bumped) => Some(bumped & !(align - 1)),
        None => None,
    }
}

const _: () = assert!(PageKind::Medium.max_block() == MAX_SMALL_SIZE);
const _: () = assert!(PageKind::Small.page_size() == SLICE_SIZE);
