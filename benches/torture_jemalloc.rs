//! The footprint torture workload (`benches/torture/workload.rs`) with jemalloc as the global
//! allocator.
//!
//! `cargo bench --features baselines --bench torture_jemalloc`

mod support;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ALLOCATOR: &str = "jemalloc";

include!("torture/workload.rs");
