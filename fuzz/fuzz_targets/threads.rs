//! Two threads allocate, reallocate and free blocks and pass blocks to each other to be
//! freed remotely, while the fuzzer's main thread keeps reshaping the arena (large blocks that
//! grow, shrink and move, frees, `collect()`). Every block is checked against the model when
//! it is freed or reallocated, by whichever thread does it.
//!
//! The worker threads live across runs (a pool), so a run costs two barrier waits rather
//! than thread creation.
#![no_main]

mod model;

use std::alloc::Layout;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use model::{Input, Live, Model};

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

const WORKERS: usize = 2;

/// A barrier that spins (then yields) instead of sleeping: a run is short, and sleeping and
/// waking four threads would cost more than the run.
struct SpinBarrier {
    arrived: AtomicUsize,
    generation: AtomicUsize,
    parties: usize,
}

impl SpinBarrier {
    const fn new(parties: usize) -> SpinBarrier {
        SpinBarrier {
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            parties,
        }
    }

    fn wait(&self) {
        // Acquire/Release (AcqRel): what each party did before arriving happens before what
        // every party does after leaving.
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.parties {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

struct Pool {
    start: SpinBarrier,
    end: SpinBarrier,
    inputs: [Mutex<Vec<u8>>; WORKERS],
    /// Blocks in transit between threads.
    exchange: Mutex<Vec<Live>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<&'static Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            start: SpinBarrier::new(WORKERS + 1),
            end: SpinBarrier::new(WORKERS + 1),
            inputs: Default::default(),
            exchange: Mutex::new(Vec::new()),
        }));
        for i in 0..WORKERS {
            std::thread::spawn(move || {
                loop {
                    pool.start.wait();
                    let input = std::mem::take(&mut *pool.inputs[i].lock().unwrap());
                    worker(pool, &input);
                    pool.end.wait();
                }
            });
        }
        pool
    })
}

/// Small and medium blocks: allocate, free, reallocate, give to the exchange, take from it.
fn worker(pool: &Pool, data: &[u8]) {
    let mut input = Input(data);
    let mut model = Model::default();
    let mut seed = 0x40u8;
    while let Some(op) = input.byte() {
        seed = seed.wrapping_add(1);
        match op % 8 {
            0 | 1 => {
                let (Some(size), Some(align)) = (input.u16(), input.byte()) else {
                    break;
                };
                let layout = Layout::from_size_align(1 + size * 4, 1 << (align % 8)).unwrap();
                if let Some(block) = model::alloc(layout, op % 8 == 1, seed) {
                    model.insert(block);
                }
            }
            2 => {
                if let Some(block) = model.nth(input.byte().unwrap_or(0) as usize) {
                    model::free(model.remove(block.ptr));
                }
            }
            3 => {
                let (Some(n), Some(size)) = (input.byte(), input.u16()) else {
                    break;
                };
                if let Some(block) = model.nth(n as usize) {
                    model.remove(block.ptr);
                    model.insert(model::realloc(block, 1 + size * 4, seed));
                }
            }
            4 | 5 => {
                if let Some(block) = model.nth(input.byte().unwrap_or(0) as usize) {
                    pool.exchange.lock().unwrap().push(model.remove(block.ptr));
                }
            }
            6 => {
                let taken = pool.exchange.lock().unwrap().pop();
                if let Some(block) = taken {
                    model::free(block); // very likely another thread's page: a remote free
                }
            }
            _ => model.check_all(),
        }
    }
    for block in model.drain() {
        model::free(block);
    }
}

/// Large blocks that grow, shrink and move; frees; purges.
fn remapper(data: &[u8]) {
    let mut input = Input(data);
    let mut model = Model::default();
    let mut seed = 0x80u8;
    while let Some(op) = input.byte() {
        seed = seed.wrapping_add(1);
        let large = |input: &mut Input| Some((512 << 10) + input.u16()? * 256);
        match op % 16 {
            0..=3 => {
                let Some(size) = large(&mut input) else { break };
                let layout = Layout::from_size_align(size, 8).unwrap();
                if let Some(block) = model::alloc(layout, false, seed) {
                    model.insert(block);
                }
            }
            4..=7 => {
                let (Some(n), Some(size)) = (input.byte(), large(&mut input)) else {
                    break;
                };
                if let Some(block) = model.nth(n as usize) {
                    model.remove(block.ptr);
                    model.insert(model::realloc(block, size, seed));
                }
            }
            10..=13 => {
                if let Some(block) = model.nth(input.byte().unwrap_or(0) as usize) {
                    model::free(model.remove(block.ptr));
                }
            }
            14 => vmarena::collect(),
            _ => model.check_all(),
        }
    }
    for block in model.drain() {
        model::free(block);
    }
}

fuzz_target!(|data: &[u8]| {
    let pool = pool();
    // Deal the bytes out: worker i gets chunks i, i + 3, ...; the remapper gets the rest.
    let mut streams: Vec<Vec<u8>> = vec![Vec::new(); WORKERS + 1];
    for (i, chunk) in data.chunks(8).enumerate() {
        streams[i % (WORKERS + 1)].extend_from_slice(chunk);
    }
    let main_stream = streams.pop().unwrap();
    for (slot, stream) in pool.inputs.iter().zip(streams) {
        *slot.lock().unwrap() = stream;
    }
    pool.start.wait();
    remapper(&main_stream);
    pool.end.wait();
    for block in std::mem::take(&mut *pool.exchange.lock().unwrap()) {
        model::free(block);
    }
});
