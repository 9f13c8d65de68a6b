//! Memory of the feature windows: N calls (default 10,000,000) through the sample rule set's
//! windows (its windowed rules enabled), over event time one call per `STEP_MS`, from callers and to callees drawn from
//! pools of the given sizes; prints the resident memory held, per key and per call, the
//! time per call, and the slowest calls (each call timed, which adds some 40 ns to each).
//!
//! `cargo run --release --example window_memory [N] [CALLERS] [CALLEES] [STEP_MS]`
//! (Linux: reads /proc/self/status).

use std::path::Path;
use std::time::Instant;

use dissuade::features::{CallFacts, Windows, NO_FIGURES};
use dissuade::rules::RuleSet;

mod common;
use common::rss_mib;

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .map_or(default, |s| s.parse().expect("a number"))
}

/// A cheap, well-mixed hash (splitmix64): the windows expect hashed keys.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn main() {
    let (n, callers, callees, step_ms) = (
        arg(1, 10_000_000),
        arg(2, 2_000_000),
        arg(3, 5_000_000),
        arg(4, 1),
    );
    // The sample's windowed rules ship disabled, and an unread feature keeps no window.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules.toml");
    let text = std::fs::read_to_string(&path)
        .expect("sample rules")
        .replace("enabled = false", "enabled = true");
    let rules = RuleSet::from_toml_str_in(
        &text,
        "rules.toml",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
    )
    .expect("sample rules load");
    let windows = Windows::new(rules.features(), rules.window_limits());
    let before = rss_mib();
    let start = Instant::now();
    let mut figures = NO_FIGURES;
    let mut latency =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    for i in 0..n {
        let call = CallFacts {
            at_ms: 1_795_480_200_000 + (i * step_ms) as i64,
            event: mix(i),
            caller: mix(mix(i) % callers + (1 << 40)),
            callee: mix(mix(i ^ 0x5555) % callees + (1 << 41)),
            duration_s: 60.0,
            // Half the calls to elderly people, one in ten from a flagged number.
            filters: u16::from(i % 2 == 0) | if i % 10 == 0 { 0b10 } else { 0 },
            partition: 0,
        };
        let t = Instant::now();
        windows.observe(&call, call.event, &mut figures);
        latency.saturating_record(t.elapsed().as_nanos() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    let after = rss_mib();
    // What the service's once-a-second metrics export reads.
    let counted = Instant::now();
    let (caller_keys, caller_calls, callee_keys, callee_calls) = windows.size();
    let counted = counted.elapsed();
    let bytes = (after - before) * 1024.0 * 1024.0;
    println!(
        "{n} calls over {:.0} min of event time: {caller_keys} callers holding {caller_calls} calls, \
         {callee_keys} callees holding {callee_calls} calls; RSS {before:.0} MiB before, {after:.0} MiB after: \
         {:.0} bytes per key, {:.0} bytes per call held; {:.0} ns per call",
        (n * step_ms) as f64 / 60_000.0,
        bytes / (caller_keys + callee_keys) as f64,
        bytes / (caller_calls + callee_calls) as f64,
        secs * 1e9 / n as f64,
    );
    let swept = Instant::now();
    windows.expire_idle();
    println!(
        "counting the keys and calls held: {:.1} µs; sweeping every key: {:.1} ms",
        counted.as_secs_f64() * 1e6,
        swept.elapsed().as_secs_f64() * 1e3,
    );
    println!(
        "per call: p50 {} ns, p99 {} ns, p99.99 {} ns, max {:.1} ms",
        latency.value_at_quantile(0.5),
        latency.value_at_quantile(0.99),
        latency.value_at_quantile(0.9999),
        latency.max() as f64 / 1e6,
    );
}
