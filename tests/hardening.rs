//! A detected invalid or double free aborts the process with a message naming the address.
//! Each case runs in a child process (this test binary, re-run with an environment variable
//! that selects the misbehaviour), and the parent checks how it died and what it printed.

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const CASE: &str = "VMARENA_TEST_HARDENING_CASE";

/// Runs the misbehaviour named by `CASE`, if any (in the child).
fn misbehave() {
    let Ok(case) = std::env::var(CASE) else {
        return;
    };
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: none of this is safe: the child exists to break the rules and be killed for it.
    unsafe {
        match case.as_str() {
            "double-free" => {
                let p = GLOBAL.alloc(layout);
                println!("address {p:p}");
                GLOBAL.dealloc(p, layout);
                GLOBAL.dealloc(p, layout);
            }
            "heap-double-free" => {
                let heap = vmarena::Heap::new();
                let p = heap.alloc(layout);
                println!("address {p:p}");
                heap.dealloc(p, layout);
                heap.dealloc(p, layout);
            }
            "heap-large-double-free" => {
                let heap = vmarena::LocalHeap::new();
                let big = Layout::from_size_align(1 << 20, 8).unwrap();
                let p = heap.alloc(big);
                println!("address {p:p}");
                GLOBAL.dealloc(p, big); // marked: the heap gives it back later
                heap.dealloc(p, big);
            }
            "double-free-other-thread" => {
                let p = GLOBAL.alloc(layout) as usize;
                println!("address {:p}", p as *const u8);
                std::thread::spawn(move || GLOBAL.dealloc(p as *mut u8, layout))
                    .join()
                    .unwrap();
                std::thread::spawn(move || GLOBAL.dealloc(p as *mut u8, layout))
                    .join()
                    .unwrap();
            }
            "foreign-pointer" => {
                let mut on_stack = [0u64; 8];
                let p = on_stack.as_mut_ptr().cast::<u8>();
                println!("address {p:p}");
                GLOBAL.dealloc(p, layout);
            }
            "large-double-free" => {
                let big = Layout::from_size_align(4 << 20, 8).unwrap();
                let p = GLOBAL.alloc(big);
                println!("address {p:p}");
                GLOBAL.dealloc(p, big);
                GLOBAL.dealloc(p, big);
            }
            "cached-large-double-free" => {
                // 200 KiB: a large block small enough for the thread's cache of freed large
                // blocks, so the first free keeps it committed (and findable in the page map).
                let mid = Layout::from_size_align(200 << 10, 8).unwrap();
                let p = GLOBAL.alloc(mid);
                println!("address {p:p}");
                GLOBAL.dealloc(p, mid);
                GLOBAL.dealloc(p, mid);
            }
            "cached-large-realloc-after-free" => {
                let mid = Layout::from_size_align(200 << 10, 8).unwrap();
                let p = GLOBAL.alloc(mid);
                println!("address {p:p}");
                GLOBAL.dealloc(p, mid);
                GLOBAL.realloc(p, mid, 300 << 10);
            }
            "cached-large-interior-pointer" => {
                let mid = Layout::from_size_align(200 << 10, 8).unwrap();
                let p = GLOBAL.alloc(mid);
                let inner = p.add(4096);
                println!("address {inner:p}");
                GLOBAL.dealloc(inner, mid);
            }
            "interior-pointer" => {
                let p = GLOBAL.alloc(layout) as usize;
                let inner = p + 8;
                println!("address {:p}", inner as *const u8);
                std::thread::spawn(move || GLOBAL.dealloc(inner as *mut u8, layout))
                    .join()
                    .unwrap();
            }
            "interior-pointer-same-thread" => {
                // The thread that allocated the block frees a pointer 16 bytes into it: the
                // fast path of the page's owner, which once linked it into the free list.
                let p = GLOBAL.alloc(layout);
                let inner = p.add(16);
                println!("address {inner:p}");
                GLOBAL.dealloc(inner, layout);
            }
            "misaligned-pointer-same-thread" => {
                let p = GLOBAL.alloc(layout);
                let inner = p.add(1);
                println!("address {inner:p}");
                GLOBAL.dealloc(inner, layout);
            }
            "interior-pointer-realloc" => {
                let p = GLOBAL.alloc(layout);
                let inner = p.add(16);
                println!("address {inner:p}");
                GLOBAL.realloc(inner, layout, 4000); // moves: frees the old pointer
            }
            "uncarved-block-other-thread" => {
                // An address at a block boundary of the block's page, beyond the part of the
                // page carved into blocks so far: no block there was ever handed out.
                let p = GLOBAL.alloc(layout) as usize;
                let page = p & !((64 << 10) - 1);
                let last = page + ((64 << 10) / 48 - 1) * 48;
                println!("address {:p}", last as *const u8);
                std::thread::spawn(move || GLOBAL.dealloc(last as *mut u8, layout))
                    .join()
                    .unwrap();
            }
            "uncarved-block-same-thread" => {
                let p = GLOBAL.alloc(layout) as usize;
                let page = p & !((64 << 10) - 1);
                let last = page + ((64 << 10) / 48 - 1) * 48;
                println!("address {:p}", last as *const u8);
                GLOBAL.dealloc(last as *mut u8, layout);
            }
            "close-free-16" | "close-free-4096" | "close-free-16-other-thread" => {
                // free(p + 4096): a block of p's page that the page carved along with p but
                // never handed out (mimalloc-bench's `invalid_free_close`). It is on the free
                // list already: accepting it would list it twice.
                // On a new thread, whose heap starts with a fresh page: `p` is its first block,
                // and `p + 4096` one the first carving made and nothing handed out.
                let size = if case.contains("4096") { 4096 } else { 16 };
                let layout = Layout::from_size_align(size, 8).unwrap();
                let other_thread = case.ends_with("other-thread");
                let (owner_done, park) = std::sync::mpsc::channel::<usize>();
                let owner = std::thread::spawn(move || {
                    let close = GLOBAL.alloc(layout).add(4096) as usize;
                    println!("address {:p}", close as *const u8);
                    if other_thread {
                        owner_done.send(close).unwrap();
                        std::thread::park(); // the page stays this thread's meanwhile
                    } else {
                        GLOBAL.dealloc(close as *mut u8, layout);
                    }
                });
                if other_thread {
                    let close = park.recv().unwrap();
                    GLOBAL.dealloc(close as *mut u8, layout);
                    owner.thread().unpark();
                }
                owner.join().unwrap();
            }
            "corrupted-list-double-free" => {
                // Two blocks freed (the second links to the first), then a write after free
                // overwrites the second's link, then the first is freed again: confirming
                // that double free walks the list, and must not follow the wild link.
                let a = GLOBAL.alloc(layout);
                let b = GLOBAL.alloc(layout);
                GLOBAL.dealloc(a, layout);
                GLOBAL.dealloc(b, layout);
                b.cast::<usize>().write(0x4141_4141_4141_4141);
                println!("address {b:p}");
                GLOBAL.dealloc(a, layout);
            }
            other => panic!("unknown case {other}"),
        }
    }
    std::process::exit(0); // reached only if the allocator failed to notice
}

fn run(case: &str, expect: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CASE, case)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{case}: not aborted ({:?}); stdout {stdout} stderr {stderr}",
        out.status
    );
    let address = stdout
        .split_whitespace()
        .skip_while(|w| *w != "address")
        .nth(1)
        .unwrap_or_else(|| panic!("{case}: no address printed: {stdout}"));
    let digits = address.trim_start_matches("0x");
    assert!(
        stderr.contains(expect),
        "{case}: message {stderr:?} lacks {expect:?}"
    );
    assert!(
        stderr.contains(digits),
        "{case}: message {stderr:?} does not name {address}"
    );
}

#[test]
fn child() {
    misbehave();
}

#[test]
fn double_free_aborts_naming_the_block() {
    run("double-free", "double free");
}

#[test]
fn double_free_in_a_heap_aborts_naming_the_block() {
    run("heap-double-free", "double free");
}

#[test]
fn double_free_of_a_heaps_large_block_aborts_naming_it() {
    run("heap-large-double-free", "double free");
}

#[test]
fn double_free_from_other_threads_aborts() {
    run("double-free-other-thread", "double free");
}

#[test]
fn freeing_a_pointer_vmarena_never_returned_aborts() {
    run("foreign-pointer", "invalid free");
}

#[test]
fn double_free_of_a_large_block_aborts() {
    run("large-double-free", "invalid free");
}

#[test]
fn double_free_of_a_cached_large_block_aborts_naming_it() {
    run("cached-large-double-free", "double free");
}

#[test]
fn reallocating_a_freed_cached_large_block_aborts() {
    run("cached-large-realloc-after-free", "double free");
}

#[test]
fn freeing_an_interior_pointer_of_a_cacheable_large_block_aborts() {
    run("cached-large-interior-pointer", "invalid free");
}

#[test]
fn freeing_an_interior_pointer_from_another_thread_aborts() {
    run("interior-pointer", "invalid free");
}

#[test]
fn freeing_an_interior_pointer_on_the_owning_thread_aborts() {
    run("interior-pointer-same-thread", "invalid free");
}

#[test]
fn freeing_a_misaligned_pointer_on_the_owning_thread_aborts() {
    run("misaligned-pointer-same-thread", "invalid free");
}

#[test]
fn reallocating_an_interior_pointer_aborts() {
    run("interior-pointer-realloc", "invalid free");
}

#[test]
fn freeing_a_never_carved_block_from_another_thread_aborts() {
    run("uncarved-block-other-thread", "invalid free");
}

#[test]
fn freeing_a_never_carved_block_on_the_owning_thread_aborts() {
    run("uncarved-block-same-thread", "invalid free");
}

#[test]
fn freeing_a_carved_block_never_handed_out_aborts() {
    // The message names the address: the block is free (on the page's free list).
    run("close-free-16", "already free");
    run("close-free-4096", "already free");
}

#[test]
fn freeing_a_carved_block_never_handed_out_from_another_thread_aborts() {
    run("close-free-16-other-thread", "already free");
}

#[test]
fn confirming_a_double_free_over_a_corrupted_list_aborts_naming_the_block() {
    run("corrupted-list-double-free", "corrupted free list");
}
