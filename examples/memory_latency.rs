//! What a read from memory costs on this machine, the bound under the feature windows at a
//! centre's key counts (BENCHMARKS.md, "The sweep a shard at a time, and huge pages"): reads
//! at random over MIB mebibytes (default 256), each depending on the one before (a lookup
//! that waits for its miss) and independent (misses that overlap).
//!
//! `cargo run --release --example memory_latency [MIB]`; with
//! `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` the array is on huge pages (see
//! `AnonHugePages` in /proc/PID/smaps_rollup).

use std::hint::black_box;
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const READS: usize = 10_000_000;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .map_or(256, |s| s.parse().expect("MiB, a number"));
    let n = mib * 1024 * 1024 / std::mem::size_of::<usize>();
    // One cycle through every slot, in random order: `next[i]` is the slot read after `i`.
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    order.shuffle(&mut rng);
    let mut next = vec![0usize; n];
    for pair in order.windows(2) {
        next[pair[0]] = pair[1];
    }
    next[order[n - 1]] = order[0];

    let start = Instant::now();
    let mut at = order[0];
    for _ in 0..READS {
        at = next[at];
    }
    let dependent = start.elapsed().as_nanos() as f64 / READS as f64;
    black_box(at);

    let slots: Vec<usize> = (0..READS).map(|_| rng.random_range(0..n)).collect();
    let start = Instant::now();
    let mut sum = 0usize;
    for &slot in &slots {
        sum = sum.wrapping_add(next[slot]);
    }
    let independent = start.elapsed().as_nanos() as f64 / READS as f64;
    black_box(sum);

    println!(
        "{mib} MiB, {READS} random reads: {dependent:.1} ns each when each waits for the one \
         before, {independent:.1} ns each when they are independent"
    );
}
