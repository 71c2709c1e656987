//! Blocks full of the fuzzer's own bytes, freed by the thread that allocated them and by
//! another one. libFuzzer records the operands of the comparisons the allocator makes and
//! writes them into its inputs; if it could see a block's double-free marker this way, it
//! would soon write the marker into one of these blocks and vmarena would abort on a double
//! free that never happened. (It did, until the comparison moved out of the instrumentation's
//! sight: see `src/heap/double_free.rs`.)
#![no_main]

use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;

#[global_allocator]
static GLOBAL: vmarena::VmArena = vmarena::VmArena;

/// A thread that frees the batches it is sent: frees from a thread that does not own the page.
fn remote_freer() -> &'static Sender<Vec<Vec<u8>>> {
    static SENDER: OnceLock<Sender<Vec<Vec<u8>>>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (sender, receiver) = channel::<Vec<Vec<u8>>>();
        std::thread::spawn(move || {
            for batch in receiver {
                drop(std::hint::black_box(batch));
            }
        });
        sender
    })
}

/// Blocks on their way to the remote freer, sent in batches (one wake-up per batch).
static OUTBOX: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
const BATCH: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut outbox = OUTBOX.lock().unwrap();
    // Copies from several offsets, so every input position lands in some block's second word;
    // half of them freed here, half by the other thread.
    for start in 0..data.len().min(8) {
        let block = data[start..].to_vec();
        if start % 2 == 0 {
            drop(std::hint::black_box(block));
        } else {
            outbox.push(block);
        }
    }
    if outbox.len() >= BATCH {
        remote_freer().send(std::mem::take(&mut *outbox)).unwrap();
    }
});
