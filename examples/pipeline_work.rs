//! A fixed amount of pipeline work, for comparing builds by instruction count where wall
//! time is too noisy (shared hosts): `scripts/ab-instructions REV` runs it under callgrind for
//! this tree and for REV. It runs the whole in-process pipeline over the criterion bench's
//! synthetic mix (100,000 events, one per 10 ms) `ROUNDS` times (default 2) and prints the
//! wall time per event, which is only indicative.

use std::path::Path;
use std::time::Instant;

use dissuade::config::Config;
use dissuade::pipeline::Pipeline;
use dissuade::synth::{Synth, SynthConfig};

/// Event time of the first synthetic event, as in `benches/pipeline.rs`.
const T0_MS: i64 = 1_795_480_200_000;
const EVENTS: usize = 100_000;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(2, |s| s.parse().expect("ROUNDS is a number"));
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dissuade.toml");
    let config = Config::load_with_env(&path, std::iter::empty()).expect("sample config loads");
    let pipeline = Pipeline::load(&config).expect("sample pipeline loads").0;
    let mut synth = Synth::new(&pipeline.cell_table(), SynthConfig::default()).with_run_id("bench");
    let events: Vec<Vec<u8>> = (0..EVENTS)
        .map(|i| {
            let mut buf = Vec::with_capacity(400);
            synth.next_event(T0_MS + i as i64 * 10, &mut buf);
            buf
        })
        .collect();
    let now_ms = T0_MS + EVENTS as i64 * 10;
    let mut out = Vec::with_capacity(4096);
    let mut tasks = 0usize;
    let start = Instant::now();
    for _ in 0..rounds {
        for e in &events {
            out.clear();
            let outcome = pipeline.process(std::hint::black_box(e), 0, now_ms, &mut out);
            std::hint::black_box(&outcome);
            tasks += usize::from(!out.is_empty());
        }
    }
    let n = rounds * EVENTS;
    println!(
        "{n} events, {tasks} tasks, {:.1} ns/event",
        start.elapsed().as_nanos() as f64 / n as f64
    );
}
