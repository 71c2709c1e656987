//! Moving a large block with `mremap` must never leave a hole in the arena that another
//! mapping of the process can fall into and that vmarena then maps over.
//!
//! This binary defines `mremap` itself, so vmarena's calls come here: it makes the real call,
//! and then does what any other thread of a real program may do at that instant (a thread
//! stack, `dlopen`, a Python arena): it maps memory of its own at the address the source
//! range had, if that address is free, and fills it. Whatever vmarena does next, that memory
//! must keep its contents, and vmarena must never hand it out.
//!
//! The definition takes the variadic `new_address` as a fifth fixed argument, which is how the
//! x86-64 and AArch64 Linux calling conventions pass it anyway.

#![cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// While set, `mremap` refuses `MREMAP_DONTUNMAP` with `EINVAL`, as kernels before 5.7 do.
static REFUSE_DONTUNMAP: AtomicBool = AtomicBool::new(false);
/// Moves seen, and moves after which the source was still mapped (no hole).
static MOVES: AtomicUsize = AtomicUsize::new(0);
static SOURCE_KEPT: AtomicUsize = AtomicUsize::new(0);
/// Mappings of "another thread" placed in holes: (address, length).
static VICTIMS: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());

const VICTIM_BYTE: u8 = 0xAB;

/// # Safety
/// As for the C library's `mremap`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mremap(
    old: *mut libc::c_void,
    old_size: usize,
    new_size: usize,
    flags: libc::c_int,
    new_address: *mut libc::c_void,
) -> *mut libc::c_void {
    if flags & libc::MREMAP_DONTUNMAP != 0 && REFUSE_DONTUNMAP.load(Ordering::Relaxed) {
        // SAFETY: this thread's errno.
        unsafe { *libc::__errno_location() = libc::EINVAL };
        return libc::MAP_FAILED;
    }
    // SAFETY: the caller's arguments, passed on unchanged.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_mremap,
            old,
            old_size,
            new_size,
            flags,
            new_address,
        )
    } as *mut libc::c_void;
    if moved == libc::MAP_FAILED || moved == old {
        return moved;
    }
    MOVES.fetch_add(1, Ordering::Relaxed);
    // "Another thread" maps at the source address if nothing is there. Never over anything:
    // MAP_FIXED_NOREPLACE fails with EEXIST if the range is mapped.
    // SAFETY: a new anonymous mapping that replaces nothing.
    let grabbed = unsafe {
        libc::mmap(
            old,
            old_size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if grabbed == old {
        // SAFETY: our own new mapping of `old_size` bytes.
        unsafe { std::ptr::write_bytes(grabbed.cast::<u8>(), VICTIM_BYTE, old_size) };
        // No allocation in here (we are inside the allocator): reserve room up front (main).
        VICTIMS.lock().unwrap().push((old as usize, old_size));
    } else {
        if grabbed != libc::MAP_FAILED {
            // An old kernel treated NOREPLACE as a hint and mapped elsewhere: undo.
            // SAFETY: our own mapping.
            unsafe { libc::munmap(grabbed, old_size) };
        }
        SOURCE_KEPT.fetch_add(1, Ordering::Relaxed);
    }
    moved
}

fn victims_intact() {
    for &(addr, len) in VICTIMS.lock().unwrap().iter() {
        // SAFETY: the victim mapping is ours and still mapped (we never unmap it here).
        let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
        if let Some(i) = bytes.iter().position(|&b| b != VICTIM_BYTE) {
            panic!(
                "vmarena overwrote a mapping it does not own: byte {i} of {addr:#x}+{len:#x} is {:#x}",
                bytes[i]
            );
        }
    }
}

fn overlaps_a_victim(ptr: usize, len: usize) -> bool {
    VICTIMS
        .lock()
        .unwrap()
        .iter()
        .any(|&(addr, vlen)| ptr < addr + vlen && addr < ptr + len)
}

/// Grows blocks that cannot grow in place (a neighbour blocks them), so they move.
fn grow_blocks_that_must_move(rounds: usize) {
    const MIB: usize = 1 << 20;
    for round in 0..rounds {
        let size = (4 + round % 13) * MIB;
        let mut a: Vec<u8> = Vec::with_capacity(size);
        let _neighbour: Vec<u8> = Vec::with_capacity(size);
        a.extend((0..size).map(|i| (i % 251) as u8));
        a.reserve_exact(3 * size);
        assert!(
            a.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8),
            "the moved block lost its contents"
        );
        victims_intact();
    }
}

/// Nothing vmarena hands out later lies in a victim's range.
fn later_blocks_avoid_victims() {
    let mut blocks = Vec::new();
    for i in 0..200 {
        let size = (1 + i % 40) << 20;
        let v: Vec<u8> = vec![1; size];
        assert!(
            !overlaps_a_victim(v.as_ptr() as usize, size),
            "vmarena handed out memory inside a mapping it lost"
        );
        blocks.push(v);
        if blocks.len() > 8 {
            blocks.remove(0);
        }
    }
    drop(blocks);
    vmarena::collect();
    victims_intact();
}

/// True if the running kernel is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}

#[test]
fn moving_a_large_block_never_maps_over_another_mapping() {
    VICTIMS.lock().unwrap().reserve(10_000);

    // With MREMAP_DONTUNMAP the source stays mapped: there is never a hole to fall into.
    grow_blocks_that_must_move(40);
    vmarena::collect();
    victims_intact();
    let moves = MOVES.load(Ordering::Relaxed);
    assert!(moves >= 20, "only {moves} of 40 growths moved");
    if kernel_at_least(5, 7) {
        assert_eq!(
            SOURCE_KEPT.load(Ordering::Relaxed),
            moves,
            "a move left a hole although the kernel has MREMAP_DONTUNMAP"
        );
    }

    // A kernel without MREMAP_DONTUNMAP: the hole exists for an instant, and another mapping
    // takes it. vmarena must notice and leave that range alone for good.
    REFUSE_DONTUNMAP.store(true, Ordering::Relaxed);
    grow_blocks_that_must_move(40);
    vmarena::collect();
    victims_intact();
    later_blocks_avoid_victims();
    assert!(
        !VICTIMS.lock().unwrap().is_empty(),
        "the test never placed a mapping in a hole"
    );
    println!(
        "{} moves, {} with the source kept mapped, {} holes taken by another mapping",
        MOVES.load(Ordering::Relaxed),
        SOURCE_KEPT.load(Ordering::Relaxed),
        VICTIMS.lock().unwrap().len()
    );
}
