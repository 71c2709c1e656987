//! The random-access benchmark (`benches/btree/workload.rs`) with mimalloc as the global allocator.
//!
//! `cargo bench --features baselines --bench btree_mimalloc`

mod support;

#[global_allocator]
static GLOBAL: support::MiMalloc = support::MiMalloc;

const ALLOCATOR: &str = "mimalloc";

include!("btree/workload.rs");
