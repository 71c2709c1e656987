//! The lock protocol (region read/write locks, write sessions, speculation) and the region
//! logic (page claims, large blocks, resizing, moving, purging) on the fake OS back end, each
//! against a model (see `vmarena::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (first, second) = data.split_at(data.len() / 2);
    vmarena::fuzzing::protocol(first);
    vmarena::fuzzing::regions(second);
});
