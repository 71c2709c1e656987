//! The application benchmark (`benches/app/workload.rs`) with jemalloc as the global allocator.
//!
//! `cargo bench --features baselines --bench app_jemalloc`

mod support;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ALLOCATOR: &str = "jemalloc";

include!("app/workload.rs");
