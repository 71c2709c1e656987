//! The random-access benchmark (`benches/btree/workload.rs`) with vmarena as the global allocator.
//!
//! `cargo bench --bench btree_vmarena` (no C compiler needed)

mod support;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const ALLOCATOR: &str = "vmarena";

include!("btree/workload.rs");
