// The random-access benchmark's workload, included by one bench target per allocator
// (`benches/btree_<allocator>.rs`), each of which installs its allocator as the global one.
//
// A BTreeMap of 600,000 entries (u64 keys, 40-byte values: about 30 MiB of nodes, each a block
// of its own) churned at random: 4 million steps, each looking a random key up, and in one
// step in three removing it and inserting a new one, so the tree keeps its size while its
// nodes move around the heap. Every lookup lands on a random node: the time goes to cache and
// TLB misses, which is what huge pages change. The binary runs the workload in child processes
// (itself, with `--child`) and prints the median wall time, minor page faults, peak RSS and
// huge pages (the most `AnonHugePages` seen while it ran) of five runs.

use std::collections::BTreeMap;
use std::time::Instant;

use vmarena_testkit::Rng;

const ENTRIES: u64 = 600_000;
const STEPS: u64 = 4_000_000;

fn workload() -> u64 {
    let mut rng = Rng::new(0x5EED);
    let mut map: BTreeMap<u64, [u64; 5]> = BTreeMap::new();
    let key = |rng: &mut Rng| rng.below(ENTRIES * 4);
    while (map.len() as u64) < ENTRIES {
        let k = key(&mut rng);
        map.insert(k, [k; 5]);
    }
    let mut sum = 0u64;
    for step in 0..STEPS {
        let k = key(&mut rng);
        if let Some((&found, value)) = map.range(k..).next() {
            sum = sum.wrapping_add(value[step as usize % 5]);
            if step % 3 == 0 {
                map.remove(&found);
                loop {
                    let fresh = key(&mut rng);
                    if map.insert(fresh, [fresh; 5]).is_none() {
                        break;
                    }
                }
            }
        }
    }
    assert_eq!(map.len() as u64, ENTRIES);
    sum
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if args.iter().any(|a| a == "--child") {
        let huge = support::HugeSampler::start();
        let start = Instant::now();
        std::hint::black_box(workload());
        let elapsed = start.elapsed().as_secs_f64();
        let huge = huge.stop();
        println!(
            "{elapsed} {} {} {huge}",
            support::minor_faults(),
            support::status_kib("VmHWM:")
        );
        return;
    }
    let mut runs: Vec<[f64; 4]> = Vec::new();
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
        let fields: Vec<f64> = text
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        runs.push([fields[0], fields[1], fields[2], fields[3]]);
    }
    let median = |i: usize| {
        let mut v: Vec<f64> = runs.iter().map(|r| r[i]).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[2]
    };
    println!(
        "btree {ALLOCATOR} {:.1} ms {:.0} faults {:.1} MiB {:.1} MiB-huge",
        median(0) * 1e3,
        median(1),
        median(2) / 1024.0,
        median(3) / 1024.0
    );
}
