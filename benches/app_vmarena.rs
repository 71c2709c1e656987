//! The application benchmark (`benches/app/workload.rs`) with vmarena as the global allocator.
//!
//! `cargo bench --bench app_vmarena` (no C compiler needed)

mod support;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const ALLOCATOR: &str = "vmarena";

include!("app/workload.rs");
