//! A plugin as a Rust program would build one: a `cdylib` with vmarena as its global
//! allocator, loaded with `dlopen` and unloaded with `dlclose` by a host
//! (`capi/tests/c/plugin_host.c`).

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// Allocates through vmarena on the calling thread (which brings its heap up) and returns a
/// checksum, so the work cannot be optimised away.
#[unsafe(no_mangle)]
pub extern "C" fn plugin_work(n: u64) -> u64 {
    let v: Vec<u64> = (0..n).collect();
    let boxed: Vec<Box<[u8]>> = (0..100)
        .map(|i| vec![i as u8; 1 + i * 13].into_boxed_slice())
        .collect();
    v.iter().sum::<u64>() + boxed.iter().map(|b| b.len() as u64).sum::<u64>()
}
