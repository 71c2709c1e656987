//! Where moving pages with `mremap` starts to beat copying them: the threshold for large
//! `realloc` (`REMAP_MIN_SIZE` in `src/config.rs`).
//!
//! `cargo bench --bench remap_breakeven`
//!
//! * `copy_reused`: memcpy of N resident bytes into a resident destination (what an allocator
//!   that reuses a freed buffer pays).
//! * `copy_fresh`: the same into a destination just purged, so every page faults in (what an
//!   allocator pays when the new block is fresh memory).
//! * `mremap`: moving N resident bytes to another address of the same reservation with
//!   `mremap(MREMAP_FIXED)`, source and destination congruent modulo 2 MiB, then mapping the
//!   source again, as vmarena's `LinuxOs::remap` does.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [usize; 7] = [
    64 << 10,
    256 << 10,
    512 << 10,
    1 << 20,
    4 << 20,
    16 << 20,
    64 << 20,
];
const MAX: usize = 64 << 20;
const CONGRUENCE: usize = 2 << 20;

/// A read-write reservation of `len` bytes aligned to 2 MiB (leaked: benchmarks only).
fn reserve(len: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping; we only use memory inside it.
    unsafe {
        let raw = libc::mmap(
            std::ptr::null_mut(),
            len + CONGRUENCE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        assert_ne!(raw, libc::MAP_FAILED);
        (raw as usize).next_multiple_of(CONGRUENCE) as *mut u8
    }
}

fn populate(p: *mut u8, len: usize) {
    // SAFETY: inside a reservation of ours.
    unsafe { std::ptr::write_bytes(p, 0x5A, len) };
}

fn breakeven(c: &mut Criterion) {
    let src = reserve(MAX);
    let dst = reserve(MAX);
    populate(src, MAX);
    populate(dst, MAX);
    let mut group = c.benchmark_group("remap_breakeven");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("copy_reused", size), &size, |b, &size| {
            // SAFETY: both ranges are ours, resident, disjoint.
            b.iter(|| unsafe { std::ptr::copy_nonoverlapping(black_box(src), dst, size) })
        });
        group.bench_with_input(BenchmarkId::new("copy_fresh", size), &size, |b, &size| {
            b.iter(|| {
                // SAFETY: as above; the purge makes the destination fault in again.
                unsafe {
                    libc::madvise(dst.cast(), size, libc::MADV_DONTNEED);
                    std::ptr::copy_nonoverlapping(black_box(src), dst, size);
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("mremap", size), &size, |b, &size| {
            populate(src, size);
            let (mut from, mut to) = (src, dst);
            b.iter(|| {
                // SAFETY: both ranges lie in our reservations; the source is mapped again
                // right after the move, as in `LinuxOs::remap`.
                unsafe {
                    let moved = libc::mremap(
                        from.cast(),
                        size,
                        size,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        to.cast::<libc::c_void>(),
                    );
                    assert_ne!(moved, libc::MAP_FAILED);
                    let refill = libc::mmap(
                        from.cast(),
                        size,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE
                            | libc::MAP_ANONYMOUS
                            | libc::MAP_NORESERVE
                            | libc::MAP_FIXED,
                        -1,
                        0,
                    );
                    assert_ne!(refill, libc::MAP_FAILED);
                }
                std::mem::swap(&mut from, &mut to);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = breakeven
}
criterion_main!(benches);
