//! The footprint torture workload (`benches/torture/workload.rs`) with vmarena as the global
//! allocator.
//!
//! `cargo bench --features baselines --bench torture_vmarena`

mod support;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const ALLOCATOR: &str = "vmarena";

include!("torture/workload.rs");
