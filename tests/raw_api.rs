//! The C library's entry points (`vmarena::raw::c`) from Rust: what `libvmarena.so` runs, in a
//! process where vmarena is also the global allocator. Requested bytes come back to where they
//! were once every C block is freed, though C frees carry no size (they count usable bytes on
//! both sides).

use vmarena::raw::c;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// The calling thread's requested bytes: allocated minus freed. (Not the process's
/// `Stats::bytes_requested`: the test harness's own thread allocates meanwhile, which made
/// this test fail about one run in two.)
fn requested() -> i64 {
    let own = vmarena::thread_stats();
    assert!(own.counting, "counting is on");
    own.bytes_allocated as i64 - own.bytes_freed as i64
}

#[test]
fn c_blocks_leave_the_requested_count_where_it_was() {
    vmarena::track_requested_bytes(true);
    let before = requested();
    let mut blocks = Vec::with_capacity(4000);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in 0..4000usize {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = match i % 10 {
            0 => (x % (3 << 20)) as usize,
            1..=3 => (x % 70_000) as usize,
            _ => (x % 1100) as usize,
        };
        let p = match i % 4 {
            0 => c::malloc(size),
            1 => c::calloc(1, size),
            2 => c::memalign(64, size),
            _ => c::aligned_alloc(4096, size.max(1)),
        };
        assert!(!p.is_null());
        blocks.push(p);
    }
    // Grow and shrink: in place, by copy, and large blocks by remapping.
    for (i, p) in blocks.iter_mut().enumerate() {
        let new_size = [1, 40, 700, 5000, 90_000, 2 << 20][i % 6];
        // SAFETY: a live block of ours; on success the old pointer is not used again.
        let q = unsafe { c::realloc(*p, new_size) };
        assert!(!q.is_null());
        *p = q;
    }
    for p in blocks {
        // SAFETY: each block is live and freed once.
        unsafe { c::free(p) };
    }
    assert_eq!(requested(), before, "C blocks left requested bytes behind");
}

/// `malloc(0)` hands out a block, so counting counts it: its free, counted, must find its
/// allocation counted too.
#[test]
fn zero_byte_blocks_are_counted_both_ways() {
    vmarena::track_requested_bytes(true);
    let (before, blocks) = (vmarena::thread_stats(), requested());
    for _ in 0..100 {
        let p = c::malloc(0);
        assert!(!p.is_null());
        // SAFETY: a live block of ours, freed once.
        unsafe { c::free(p) };
    }
    let after = vmarena::thread_stats();
    assert_eq!(
        after.allocations - before.allocations,
        after.frees - before.frees,
        "zero-byte blocks freed but not counted as allocated"
    );
    assert_eq!(requested(), blocks);
}
