// The footprint torture workload, included by one bench target per allocator
// (`benches/torture_<allocator>.rs`), each of which installs its allocator as the global one.
//
// Four threads, each keeping up to 20,000 live blocks of mixed sizes (1 B – 64 KiB, skewed
// to small; one in 200 up to 1 MiB) and alignments (8 B – 4 KiB), replaced at random; one
// step in eight grows a block through a chain of reallocs (up to 256 KiB, each step ×1.5),
// and one in four hands the block it replaces to the next thread, which frees it (so a
// quarter of the frees are remote). Every block is filled and checked before it is freed.
// The binary runs the workload in child processes (itself, with `--child`) and prints the
// median wall time, peak RSS, RSS after everything was freed, minor page faults and huge pages
// (the most `AnonHugePages` seen while it ran), of five runs.

use std::alloc::{Layout, alloc, dealloc, realloc};
use std::sync::mpsc;
use std::time::Instant;

use support::{Rng, status_kib};

const THREADS: usize = 4;
const LIVE: usize = 20_000;
const STEPS: usize = 400_000; // per thread

struct Block {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: a block is plain memory owned by whoever holds the struct.
unsafe impl Send for Block {}

impl Block {
    fn new(size: usize, align: usize) -> Block {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: size is at least 1.
        let ptr = unsafe { alloc(layout) };
        assert!(!ptr.is_null());
        let block = Block { ptr, layout };
        block.fill();
        block
    }

    fn tag(&self) -> u8 {
        ((self.layout.size() as u8) ^ (self.layout.align() as u8)) | 1
    }

    fn fill(&self) {
        // SAFETY: the block's own bytes.
        unsafe { std::ptr::write_bytes(self.ptr, self.tag(), self.layout.size()) };
    }

    fn check(&self) {
        let tag = self.tag();
        // SAFETY: the block's own bytes.
        let bytes = unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) };
        assert!(
            bytes.iter().step_by(61).all(|&b| b == tag),
            "corrupted block"
        );
    }

    /// Grows the block by a realloc chain, each step 1.5× the last, to `limit` bytes.
    fn grow_chain(mut self, limit: usize) -> Block {
        while self.layout.size() < limit {
            self.check();
            let new = (self.layout.size() * 3 / 2 + 1).min(limit);
            // SAFETY: a live block with its layout; new size is non-zero.
            let ptr = unsafe { realloc(self.ptr, self.layout, new) };
            assert!(!ptr.is_null());
            self.ptr = ptr;
            self.layout = Layout::from_size_align(new, self.layout.align()).unwrap();
            self.fill();
        }
        self
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        self.check();
        // SAFETY: allocated with this layout and not freed yet.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

/// A block size: 1 B – 64 KiB skewed to small, one in 200 of 64 KiB – 1 MiB.
fn pick_size(rng: &mut Rng) -> usize {
    match rng.below(200) {
        0 => 64 * 1024 + rng.below(960 * 1024) as usize,
        1..=139 => 1 + rng.below(256) as usize,
        140..=189 => 1 + rng.below(4096) as usize,
        _ => 1 + rng.below(64 * 1024) as usize,
    }
}

/// An alignment: 8 B, one in 16 of 64 B – 4 KiB.
fn pick_align(rng: &mut Rng) -> usize {
    match rng.below(16) {
        0 => 1 << (6 + rng.below(7)),
        _ => 8,
    }
}

fn thread_work(id: usize, send: mpsc::Sender<Block>, recv: mpsc::Receiver<Block>) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((id as u64 + 1) * 0x1234_5678_9abc));
    let mut live: Vec<Option<Block>> = (0..LIVE).map(|_| None).collect();
    for step in 0..STEPS {
        let slot = rng.below(LIVE as u64) as usize;
        let (size, align) = (pick_size(&mut rng), pick_align(&mut rng));
        let mut block = Block::new(size, align);
        if rng.below(8) == 0 {
            block = block.grow_chain((size * 4).min(256 * 1024));
        }
        if let Some(old) = live[slot].replace(block) {
            if rng.below(4) == 0 {
                send.send(old).unwrap(); // the next thread frees it
            }
        }
        if step % 64 == 0 {
            while let Ok(block) = recv.try_recv() {
                drop(block);
            }
        }
    }
    drop(live);
    drop(send);
    for block in recv {
        drop(block);
    }
}

fn workload() {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..THREADS {
        let (s, r) = mpsc::channel();
        senders.push(s);
        receivers.push(Some(r));
    }
    // Thread i sends to thread i + 1.
    senders.rotate_left(1);
    let threads: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, send)| {
            let recv = receivers[i].take().unwrap();
            std::thread::spawn(move || thread_work(i, send, recv))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if args.iter().any(|a| a == "--child") {
        let huge = support::HugeSampler::start();
        let start = Instant::now();
        workload();
        let elapsed = start.elapsed().as_secs_f64();
        let huge = huge.stop();
        println!(
            "{} {} {} {} {huge}",
            elapsed,
            status_kib("VmHWM:"),
            status_kib("VmRSS:"),
            support::minor_faults()
        );
        return;
    }
    let mut runs = Vec::new();
    for _ in 0..5 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--child")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let v: Vec<f64> = text
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        runs.push(v);
    }
    let median = |i: usize| {
        let mut xs: Vec<f64> = runs.iter().map(|r| r[i]).collect();
        xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        xs[2]
    };
    println!(
        "torture {ALLOCATOR} {:.1} ms {:.1} MiB {:.1} MiB {:.0} faults {:.1} MiB-huge",
        median(0) * 1e3,
        median(1) / 1024.0,
        median(2) / 1024.0,
        median(3),
        median(4) / 1024.0
    );
}
