//! The random-access benchmark (`benches/btree/workload.rs`) with glibc as the global allocator.
//!
//! `cargo bench --features baselines --bench btree_glibc`

mod support;

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

const ALLOCATOR: &str = "glibc";

include!("btree/workload.rs");
