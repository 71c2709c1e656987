//! The application benchmark (`benches/app/workload.rs`) with glibc as the global allocator.
//!
//! `cargo bench --features baselines --bench app_glibc`

mod support;

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

const ALLOCATOR: &str = "glibc";

include!("app/workload.rs");
