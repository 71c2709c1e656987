//! The integration tests' helpers: the shared test kit (`testkit/`, also used by the benchmarks
//! and the fuzz targets), with the address-derived block pattern as `fill`, `check` and
//! `check_from`.
#![allow(unused_imports)]

pub use vmarena_testkit::address_pattern::{check, check_from, fill};
pub use vmarena_testkit::proc::resident_bytes;
pub use vmarena_testkit::{Block, Rng, random_align, random_size, run_cases};
