//! The footprint torture workload (`benches/torture/workload.rs`) with glibc as the global
//! allocator.
//!
//! `cargo bench --features baselines --bench torture_glibc`

mod support;

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

const ALLOCATOR: &str = "glibc";

include!("torture/workload.rs");
