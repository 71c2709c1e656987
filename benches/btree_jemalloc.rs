//! The random-access benchmark (`benches/btree/workload.rs`) with jemalloc as the global allocator.
//!
//! `cargo bench --features baselines --bench btree_jemalloc`

mod support;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const ALLOCATOR: &str = "jemalloc";

include!("btree/workload.rs");
