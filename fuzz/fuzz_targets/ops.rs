//! An arbitrary sequence of alloc / alloc_zeroed / realloc / dealloc with arbitrary layouts
//! (1 byte to 32 MiB, alignments 1 to 8 MiB), checked against the model: patterns survive,
//! no two live blocks overlap, alignment holds, zeroed blocks read zero, realloc keeps the
//! prefix.
#![no_main]

mod model;

use std::alloc::Layout;

use libfuzzer_sys::fuzz_target;
use model::{Input, Model};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut model = Model::default();
    let mut seed = 1u8;
    while let Some(op) = input.byte() {
        seed = seed.wrapping_add(1);
        match op % 8 {
            0..=2 if !model.full() => {
                let (Some(size), Some(align)) = (input.size(), input.align()) else {
                    break;
                };
                let layout = Layout::from_size_align(size, align).unwrap();
                if let Some(block) = model::alloc(layout, op % 8 == 2, seed) {
                    model.insert(block);
                }
            }
            3 | 4 => {
                let Some(n) = input.byte() else { break };
                if let Some(block) = model.nth(n as usize) {
                    model::free(model.remove(block.ptr));
                }
            }
            5 | 6 => {
                let (Some(n), Some(size)) = (input.byte(), input.size()) else {
                    break;
                };
                if let Some(block) = model.nth(n as usize) {
                    model.remove(block.ptr);
                    let moved = model::realloc(block, size, seed);
                    model.insert(moved);
                }
            }
            7 => model.check_all(),
            _ => {}
        }
    }
    for block in model.drain() {
        model::free(block);
    }
});
