//! The footprint torture workload (`benches/torture/workload.rs`) with mimalloc as the global
//! allocator.
//!
//! `cargo bench --features baselines --bench torture_mimalloc`

mod support;

#[global_allocator]
static GLOBAL: support::MiMalloc = support::MiMalloc;

const ALLOCATOR: &str = "mimalloc";

include!("torture/workload.rs");
