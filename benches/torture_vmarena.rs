//! The footprint torture workload (`benches/torture/workload.rs`) with vmarena as the global
//! allocator.
//!
//! `cargo bench --bench torture_vmarena` (no C compiler needed)

mod support;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const ALLOCATOR: &str = "vmarena";

include!("torture/workload.rs");
