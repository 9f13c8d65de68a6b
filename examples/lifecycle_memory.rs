//! Memory of the lifecycle state: tracks N open tasks (default 10,000,000) in one
//! `Lifecycle` and prints the resident memory they take, per task. Ids are shaped like the
//! sample city's (officer `po-120101-01-001`, station `120101-01`, desk `desk-120101-01`, two
//! more roster members per cell), one distinct cell per 1,000 tasks.
//!
//! `cargo run --release --example lifecycle_memory [N]` (Linux: reads /proc/self/status).

use std::time::{Duration, Instant};

use dissuade::lifecycle::{Lifecycle, LifecycleSettings, TaskKind, TrackedTask};
use dissuade::rules::Level;
use dissuade::task::TaskId;

mod common;
use common::rss_mib;

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(10_000_000, |s| s.parse().expect("N is a number"));
    let mut lifecycle = Lifecycle::new(LifecycleSettings {
        second_escalation_after: Duration::from_secs(3600),
        centre_desk: "tianjin-anti-fraud-centre-duty-desk".into(),
        closed_retention: Duration::from_secs(7 * 24 * 3600),
        unclosed_retention: Duration::from_secs(7 * 24 * 3600),
        max_tracked: n as usize,
    });
    let before = rss_mib();
    let start = Instant::now();
    let t0 = 1_795_480_200_000i64;
    for i in 0..n {
        let cell = i / 1000;
        let (district, station, grid) = (120101 + cell % 16, cell % 40, cell % 997);
        let station_id = format!("{district}-{station:02}");
        let officer = format!("po-{station_id}-{grid:03}");
        let task = TrackedTask {
            task_id: TaskId(u128::from(i).to_be_bytes()),
            kind: TaskKind::New,
            upgrade_of: None,
            created_at_ms: t0 + i as i64,
            deadline_ms: t0 + i as i64 + 4 * 3600 * 1000,
            level: Level::High,
            may_report: vec![
                officer.clone(),
                format!("aux-{station_id}-{grid:03}"),
                format!("gw-{station_id}-{grid:03}-1"),
            ],
            key: officer,
            station_desk: Some(format!("desk-{station_id}")),
            station_id: Some(station_id),
        };
        lifecycle.on_task(task);
        if i % 100_000 == 0 {
            // The edge drains changes after every record; here they are dropped unwritten.
            lifecycle.take_changes();
        }
    }
    lifecycle.take_changes();
    let after = rss_mib();
    assert_eq!(lifecycle.open() as u64, n);
    println!(
        "{n} open tasks: RSS {before:.0} MiB before, {after:.0} MiB after, {:.0} bytes per task, built in {:.1} s",
        (after - before) * 1024.0 * 1024.0 / n as f64,
        start.elapsed().as_secs_f64()
    );
}
