//! The `override` feature: this test program exports vmarena's `malloc`, `free`, ... itself,
//! so C code in the process (here libc's own functions that allocate) gets vmarena's blocks.
//! Nothing here installs vmarena as the Rust global allocator: every block that comes back
//! vmarena's came through the C names.
//!
//! `cargo test --release --features override --test override`

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;

/// True if vmarena manages the block at `p`.
fn is_vmarena(p: *const libc::c_void) -> bool {
    vmarena::usable_size(p.cast()).is_some()
}

#[test]
fn the_dynamic_linker_binds_malloc_to_vmarena() {
    // SAFETY: looking up symbols by NUL-terminated names.
    let (malloc, free) = unsafe {
        (
            libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr()),
            libc::dlsym(libc::RTLD_DEFAULT, c"free".as_ptr()),
        )
    };
    assert_eq!(
        malloc as usize,
        vmarena::raw::exports::malloc as *const () as usize
    );
    assert_eq!(
        free as usize,
        vmarena::raw::exports::free as *const () as usize
    );
}

#[test]
fn strdup_in_libc_allocates_from_vmarena() {
    let text = c"vmarena allocates for C code too";
    // SAFETY: a NUL-terminated string; the copy is freed once, with free.
    unsafe {
        let copy = libc::strdup(text.as_ptr());
        assert!(!copy.is_null());
        assert!(is_vmarena(copy.cast()), "strdup's block is not vmarena's");
        assert_eq!(CStr::from_ptr(copy), text);
        assert!(libc::malloc_usable_size(copy.cast()) > text.to_bytes().len());
        libc::free(copy.cast());
    }
}

#[test]
fn malloc_realloc_free_through_the_c_names() {
    // SAFETY: each block is used within its size and freed once.
    unsafe {
        let p = libc::malloc(100).cast::<u8>();
        assert!(is_vmarena(p.cast()));
        assert_eq!(
            libc::malloc_usable_size(p.cast()),
            vmarena::usable_size(p).unwrap()
        );
        for i in 0..100 {
            p.add(i).write(i as u8);
        }
        // Small to large: a move into a block of its own region.
        let q = libc::realloc(p.cast(), 1 << 20).cast::<u8>();
        assert!(is_vmarena(q.cast()));
        assert!(vmarena::usable_size(q).unwrap() >= 1 << 20);
        assert!((0..100).all(|i| q.add(i).read() == i as u8));
        q.add((1 << 20) - 1).write(7);
        libc::free(q.cast());

        let z = libc::calloc(1000, 8).cast::<u64>();
        assert!(is_vmarena(z.cast()));
        assert!((0..1000).all(|i| z.add(i).read() == 0));
        libc::free(z.cast());

        let mut a = std::ptr::null_mut();
        assert_eq!(libc::posix_memalign(&mut a, 4096, 3000), 0);
        assert!(is_vmarena(a) && a as usize % 4096 == 0);
        libc::free(a);
    }
}

#[test]
fn blocks_cross_threads_and_rust_code() {
    // A C block made on another thread and freed here (a remote free into its page).
    let copy = std::thread::spawn(|| {
        // SAFETY: a NUL-terminated string.
        unsafe { libc::strdup(c"made on another thread".as_ptr()) as usize }
    })
    .join()
    .unwrap() as *mut libc::c_char;
    assert!(is_vmarena(copy.cast()));
    // SAFETY: the block is live, NUL-terminated, and freed once.
    unsafe {
        assert_eq!(CStr::from_ptr(copy), c"made on another thread");
        libc::free(copy.cast());
    }
    // Rust's `System` allocator calls malloc: its blocks are vmarena's too.
    let layout = Layout::from_size_align(256, 64).unwrap();
    // SAFETY: a non-zero layout, freed with the same layout.
    unsafe {
        let p = System.alloc(layout);
        assert!(!p.is_null() && vmarena::usable_size(p).is_some());
        System.dealloc(p, layout);
    }
}

/// A block Rust allocated (`CString::into_raw` and the like, handed to C code) and resized
/// with C's `realloc`: in place only where the block holds the new size (see
/// `raw::realloc`), whatever its 8-byte-step class.
#[test]
fn c_realloc_of_rust_blocks_never_overruns_them() {
    vmarena_testkit::realloc_in_place::resize_small_blocks_through(
        // SAFETY: non-zero sizes.
        |layout| unsafe { vmarena::VmArena.alloc(layout) },
        // SAFETY: live blocks of vmarena's; the old pointer is not used after a move.
        |p, size| unsafe { libc::realloc(p.cast(), size).cast() },
        // SAFETY: live blocks of vmarena's.
        |p| unsafe { libc::malloc_usable_size(p.cast()) },
        // SAFETY: live blocks, each freed once.
        |p| unsafe { libc::free(p.cast()) },
    );
}
