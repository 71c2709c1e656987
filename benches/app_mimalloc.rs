//! The application benchmark (`benches/app/workload.rs`) with mimalloc as the global allocator.
//!
//! `cargo bench --features baselines --bench app_mimalloc`

mod support;

#[global_allocator]
static GLOBAL: support::MiMalloc = support::MiMalloc;

const ALLOCATOR: &str = "mimalloc";

include!("app/workload.rs");
