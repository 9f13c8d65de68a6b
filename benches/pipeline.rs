//! Micro benchmarks, one criterion group per pipeline stage, plus the whole in-process
//! pipeline. Every input is built before the timed loop; each iteration handles one element
//! (event, point, decision, task), cycling through a prepared batch, so the reported
//! throughput is elements per second on one core.
//!
//! Targets (see BENCHMARKS.md): whole pipeline > 1,000,000 events/s; grid lookup on the
//! 100,000-cell map < 1 µs; scoring with the sample rule set < 200 ns.
//!
//! `cargo bench --bench pipeline` runs everything (a few minutes on 2 cores);
//! `cargo bench --bench pipeline -- grid/` runs one group.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use geo::{Coord, LineString, MultiPolygon, Polygon};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use dissuade::config::Config;
use dissuade::dispatch::{callee_key, Dispatcher};
use dissuade::event::Event;
use dissuade::features::{
    Aggregate, CallFacts, FeatureSpec, KeySide, WindowLimits, Windows, NO_FIGURES,
};
use dissuade::grid::{
    CellSpec, GridMap, GridOptions, MatchKind, Officer, Role, RosterEntry, Station,
};
use dissuade::lifecycle::{Feedback, Lifecycle, LifecycleSettings, TrackedTask};
use dissuade::pipeline::{Action, Live, Outcome, Pipeline, Worker};
use dissuade::rules::{synthetic_rule_set, Level, RuleSet};
use dissuade::shadow::Shadow;
use dissuade::synth::{Synth, SynthConfig};
use dissuade::task::{EventKeys, GridRef, Reason, Scripts, Task, TaskId, Victim};

/// Synthetic events per prepared batch.
const EVENTS: usize = 100_000;
/// Points per prepared batch.
const POINTS: usize = 4_096;
/// Event time of the first synthetic event (2026-11-24T00:30:00Z).
const T0_MS: i64 = 1_795_480_200_000;

fn config() -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dissuade.toml");
    Config::load_with_env(&path, std::iter::empty()).expect("sample config loads")
}

fn sample_pipeline() -> Pipeline {
    Pipeline::load(&config()).expect("sample pipeline loads").0
}

/// A realistic mix (the synth defaults: 12 % risky, repeat callers), one event per 10 ms.
fn synthetic_events(pipeline: &Pipeline, n: usize) -> Vec<Vec<u8>> {
    let mut synth = Synth::new(&pipeline.cell_table(), SynthConfig::default()).with_run_id("bench");
    (0..n)
        .map(|i| {
            let mut buf = Vec::with_capacity(400);
            synth.next_event(T0_MS + i as i64 * 10, &mut buf);
            buf
        })
        .collect()
}

/// Runs `f` on one element per iteration, cycling through `items`.
fn cycle<'a, T, R, F: FnMut(&T) -> R + 'a>(items: &'a [T], mut f: F) -> impl FnMut() -> R + 'a {
    let mut i = 0;
    move || {
        let r = f(&items[i]);
        i += 1;
        if i == items.len() {
            i = 0;
        }
        r
    }
}

fn configure() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30)
}

fn decode(c: &mut Criterion) {
    let pipeline = sample_pipeline();
    let events = synthetic_events(&pipeline, EVENTS);
    let mean = events.iter().map(Vec::len).sum::<usize>() / events.len();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("synthetic_mix_{mean}B"), |b| {
        b.iter(cycle(&events, |e| {
            black_box(Event::decode(black_box(e)).is_ok())
        }))
    });
    g.finish();
}

fn score(c: &mut Criterion) {
    let pipeline = sample_pipeline();
    let payloads = synthetic_events(&pipeline, EVENTS);
    let events: Vec<Event<'_>> = payloads
        .iter()
        .map(|p| Event::decode(p).expect("synthetic events are valid"))
        .collect();
    let sample = pipeline.rules();
    let synthetic =
        RuleSet::from_toml_str(&synthetic_rule_set(50), "synthetic-50").expect("compiles");
    let mut g = c.benchmark_group("score");
    g.throughput(Throughput::Elements(1));
    for (name, rules) in [
        (format!("sample_{}_rules", sample.rules().len()), &sample),
        ("synthetic_50_rules".to_string(), &Arc::new(synthetic)),
    ] {
        g.bench_function(name, |b| {
            b.iter(cycle(&events, |e| {
                black_box(rules.score(black_box(e)).total)
            }))
        });
    }
    // With the windows the pipeline keeps: each call goes into its caller's and callee's
    // windows first. Every pass over the batch is moved later in event time by the batch's
    // span, so every call is new to the windows (none is a redelivery) and old ones expire.
    // The sample's windowed rules ship disabled (an unread feature keeps no window): enable
    // them here.
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/rules.toml"))
            .expect("sample rules")
            .replace("enabled = false", "enabled = true");
    let windowed = RuleSet::from_toml_str_in(
        &text,
        "rules.toml",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
    )
    .expect("compiles");
    let span_ms = EVENTS as i64 * 10;
    g.bench_function(
        format!("sample_{}_rules_with_windows", sample.rules().len()),
        |b| {
            let (sample, windows) = (
                &windowed,
                Windows::new(windowed.features(), windowed.window_limits()),
            );
            let (mut i, mut pass) = (0usize, 0i64);
            b.iter(|| {
                let mut e = events[i].clone();
                e.occurred_at_ms += pass * span_ms;
                let callee = callee_key(&e.callee_number);
                let keys = EventKeys {
                    callee,
                    task: TaskId::for_event_of(&e.event_id, callee ^ pass as u64),
                };
                let total = sample
                    .score_with(black_box(&e), &windows, keys, 0, None)
                    .0
                    .total;
                i += 1;
                if i == events.len() {
                    (i, pass) = (0, pass + 1);
                }
                black_box(total)
            })
        },
    );
    g.finish();
}

/// The sample's three features (elderly callees of a caller in 10 minutes, flagged callers of
/// a person in the hour, seconds since the person's last task) over a production-sized key
/// space: calls from 2 M numbers to 1 M people, one per millisecond of event time, 30 % to
/// elderly people, 5 % from flagged numbers, a task for 1 %. After the first hour of event
/// time the windows hold hundreds of thousands of keys a side, far more than the caches hold,
/// where the batch of `pipeline/process` repeats 100,000 events whose keys stay warm.
///
/// Three shapes, as deployed: `2m_callers_1m_people` keeps all three in one set of windows
/// (`dissuade score`, one process); `1m_people` the person's two, as the processor on Kafka
/// keeps them (the sample's enabled rules read only these); `2m_callers` the caller's, as the
/// by-caller stage keeps it when `burst_to_elderly` is enabled.
fn windows(c: &mut Criterion) {
    let feature = |id: &str, key, aggregate, minutes: u64, filtered: bool| FeatureSpec {
        id: id.into(),
        description: String::new(),
        key,
        aggregate,
        window: Duration::from_secs(minutes * 60),
        filter: filtered.then(|| "a where".into()),
        used: true,
    };
    let specs = [
        feature(
            "elderly_callees_10m",
            KeySide::Caller,
            Aggregate::Distinct,
            10,
            true,
        ),
        feature(
            "flagged_callers_1h",
            KeySide::Callee,
            Aggregate::Distinct,
            60,
            true,
        ),
        feature(
            "since_last_task_s",
            KeySide::Callee,
            Aggregate::SecondsSinceLastTask,
            7 * 24 * 60,
            false,
        ),
    ];
    let limits = WindowLimits::default();
    let mut g = c.benchmark_group("windows");
    g.throughput(Throughput::Elements(1));
    for (name, windows, by_caller) in [
        (
            "observe/2m_callers_1m_people",
            Windows::new(&specs, limits),
            false,
        ),
        (
            "observe/1m_people",
            Windows::without_callers(&specs, limits),
            false,
        ),
        (
            "observe/2m_callers",
            Windows::for_callers(&specs, limits),
            true,
        ),
    ] {
        let mut observe = production_calls(by_caller);
        // The first hour and a half of event time, so that the timed calls meet full windows.
        // (Not in CI's untimed run of the benches, a debug build where it would take minutes.)
        let prefill = if cfg!(debug_assertions) {
            10_000
        } else {
            5_400_000
        };
        for _ in 0..prefill {
            observe(&windows);
        }
        g.bench_function(name, |b| b.iter(|| black_box(observe(&windows))));
    }
    g.finish();
}

/// The calls of the `windows` benches, each observed by `windows` (`by_caller`: as the
/// by-caller stage does, on one partition of its topic). Otherwise, as the processor does,
/// the next call's window state starts loading (by its callee) before a call is observed.
fn production_calls(by_caller: bool) -> impl FnMut(&Windows) -> f64 {
    // splitmix64: numbers as the windows get them, hashed.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let call = move |n: u64| {
        let r = mix(n);
        let elderly = r % 100 < 30;
        let flagged = (r >> 8) % 100 < 5;
        CallFacts {
            at_ms: T0_MS + n as i64,
            event: r,
            caller: mix((r >> 16) % 2_000_000),
            callee: mix((1 << 40) | ((r >> 40) % 1_000_000)),
            duration_s: 60.0,
            filters: u16::from(elderly) | (u16::from(flagged) << 1),
            partition: 0,
        }
    };
    let mut n = 1u64;
    let mut next = call(n);
    move |windows: &Windows| {
        n += 1;
        let call = std::mem::replace(&mut next, call(n));
        let mut out = NO_FIGURES;
        if by_caller {
            windows.observe_by_caller(&call, &mut out);
            return out[0];
        }
        windows.prefetch(next.callee, next.partition);
        windows.observe(&call, call.event, &mut out);
        if (call.event >> 32) % 100 == 0 {
            windows.task_made(call.callee, call.at_ms, call.event);
        }
        out[0] + out[1]
    }
}

/// Cells of the lattice map: `COLS x ROWS` squares of `STEP` degrees, `GAP` apart.
const COLS: usize = 400;
const ROWS: usize = 250;
const STEP: f64 = 0.005;
const GAP: f64 = 0.0005;
const LON0: f64 = 116.2;
const LAT0: f64 = 38.5;

fn lattice_x(col: usize) -> f64 {
    LON0 + col as f64 * STEP
}

fn lattice_y(row: usize) -> f64 {
    LAT0 + row as f64 * STEP
}

/// A 100,000-cell map built in memory: a lattice of small square cells (about 430 x 550 m)
/// separated by gaps of about 50 m, 100 cells per station, a community officer per cell.
fn lattice_map() -> GridMap {
    let side = STEP - GAP;
    let mut cells = Vec::with_capacity(COLS * ROWS);
    let mut roster = Vec::with_capacity(COLS * ROWS);
    for row in 0..ROWS {
        for col in 0..COLS {
            let (x0, y0) = (lattice_x(col), lattice_y(row));
            let (x1, y1) = (x0 + side, y0 + side);
            let ring = LineString::from(vec![
                Coord { x: x0, y: y0 },
                Coord { x: x1, y: y0 },
                Coord { x: x1, y: y1 },
                Coord { x: x0, y: y1 },
                Coord { x: x0, y: y0 },
            ]);
            let n = row * COLS + col;
            let grid_id = format!("L{row:03}-{col:03}");
            cells.push(CellSpec {
                grid_id: grid_id.clone(),
                name: format!("lattice cell {n}"),
                station_id: format!("S{:04}", n / 100),
                geometry: MultiPolygon(vec![Polygon::new(ring, vec![])]),
            });
            roster.push(RosterEntry {
                grid_id,
                officer: Officer {
                    officer_id: format!("po-{n}"),
                    name: format!("officer {n}"),
                    role: Role::CommunityOfficer,
                    phone: "022-00000000".into(),
                },
            });
        }
    }
    let stations = (0..COLS * ROWS / 100)
        .map(|s| Station {
            station_id: format!("S{s:04}"),
            name: format!("station {s}"),
            district_code: "120000".into(),
            duty_desk_id: format!("desk-{s}"),
        })
        .collect();
    let (map, warnings) = GridMap::from_parts(cells, stations, roster, GridOptions::default())
        .expect("lattice map builds");
    assert!(warnings.is_empty(), "lattice cells are valid polygons");
    assert_eq!(map.cells().len(), COLS * ROWS);
    map
}

#[derive(Clone, Copy)]
enum Where {
    Inside,
    Edge,
    Gap,
    Outside,
}

fn lattice_points(rng: &mut SmallRng, kind: Where) -> Vec<(f64, f64)> {
    let side = STEP - GAP;
    (0..POINTS)
        .map(|_| {
            let (col, row) = (rng.random_range(1..COLS - 1), rng.random_range(1..ROWS - 1));
            let (x0, y0) = (lattice_x(col), lattice_y(row));
            let t: f64 = rng.random_range(0.05..0.95);
            match kind {
                Where::Inside => (
                    x0 + side * rng.random_range(0.05..0.95),
                    y0 + side * rng.random_range(0.05..0.95),
                ),
                // Exactly on one of the four edges (a coordinate equal to the edge's).
                Where::Edge => match rng.random_range(0..4u8) {
                    0 => (x0, y0 + side * t),
                    1 => (x0 + side, y0 + side * t),
                    2 => (x0 + side * t, y0),
                    _ => (x0 + side * t, y0 + side),
                },
                // In the 50 m strip between this cell and its right neighbour: snapped.
                Where::Gap => (x0 + side + GAP * rng.random_range(0.1..0.9), y0 + side * t),
                // Far from every cell: unmatched.
                Where::Outside => (LON0 - 1.0 - rng.random::<f64>(), LAT0 + rng.random::<f64>()),
            }
        })
        .collect()
}

/// Points of the sample map: interior points and exact boundary vertices of random cells, and
/// the locations of the synthetic victims (mostly inside, some in gaps or out of town).
fn sample_points(pipeline: &Pipeline, rng: &mut SmallRng) -> [(String, Vec<(f64, f64)>); 3] {
    use geo::InteriorPoint;
    let grid = pipeline.grid();
    let n = grid.cells().len();
    let inside = (0..POINTS)
        .filter_map(|_| {
            let p = grid.geometry(rng.random_range(0..n)).interior_point()?;
            Some((p.x(), p.y()))
        })
        .collect();
    let edge = (0..POINTS)
        .filter_map(|_| {
            let mp = grid.geometry(rng.random_range(0..n));
            let ring = &mp.0.first()?.exterior().0;
            let c = ring[rng.random_range(0..ring.len())];
            Some((c.x, c.y))
        })
        .collect();
    let payloads = synthetic_events(pipeline, POINTS * 2);
    let victims = payloads
        .iter()
        .filter_map(|p| {
            let e = Event::decode(p).ok()?;
            e.callee_location.map(|l| (l.lon, l.lat))
        })
        .take(POINTS)
        .collect();
    [
        ("inside".into(), inside),
        ("vertex".into(), edge),
        ("victim_mix".into(), victims),
    ]
}

fn grid(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(5);
    let pipeline = sample_pipeline();
    let mut g = c.benchmark_group("grid");
    g.throughput(Throughput::Elements(1));
    let cells = pipeline.grid().cells().len();
    for (name, points) in sample_points(&pipeline, &mut rng) {
        let map = pipeline.grid();
        g.bench_function(format!("tianjin_{cells}/{name}"), |b| {
            b.iter(cycle(&points, |&(x, y)| {
                black_box(map.locate(black_box(x), black_box(y)).cell)
            }))
        });
    }
    let map = lattice_map();
    for (name, kind, expect) in [
        ("inside", Where::Inside, MatchKind::Inside),
        ("edge", Where::Edge, MatchKind::Inside),
        ("gap", Where::Gap, MatchKind::Snapped),
        ("outside", Where::Outside, MatchKind::Unmatched),
    ] {
        let points = lattice_points(&mut rng, kind);
        for &(x, y) in &points {
            assert_eq!(map.locate(x, y).kind, expect, "{name} point ({x}, {y})");
        }
        g.bench_function(format!("lattice_100k/{name}"), |b| {
            b.iter(cycle(&points, |&(x, y)| {
                black_box(map.locate(black_box(x), black_box(y)).cell)
            }))
        });
    }
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    let pipeline = sample_pipeline();
    let payloads = synthetic_events(&pipeline, EVENTS);
    // The callees of the events that reach the dispatcher (risky ones, with repeats).
    let inputs: Vec<(u64, Level)> = payloads
        .iter()
        .filter_map(|p| {
            let e = Event::decode(p).ok()?;
            let s = pipeline.rules().score(&e);
            (s.level >= Level::Medium).then(|| (callee_key(&e.callee_number), s.level))
        })
        .collect();
    let cfg = config();
    let dispatcher = Dispatcher::new(cfg.dispatch.suppression_window, cfg.dispatch.max_open);
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(1));
    let mut seq: u64 = 0;
    g.bench_function(format!("decide_{}_callees", inputs.len()), |b| {
        b.iter(cycle(&inputs, |&(key, level)| {
            seq += 1;
            let task_id = TaskId((seq as u128).to_be_bytes());
            // One risky event per 100 ms of event time: the 30 min window keeps ~18k open.
            black_box(dispatcher.decide(key, level, T0_MS + seq as i64 * 100, task_id, 0));
        }))
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let pipeline = sample_pipeline();
    let scripts = Scripts::new(&config().scripts);
    let payloads = synthetic_events(&pipeline, EVENTS);
    let live = pipeline.live();
    let (rules, grid) = (&live.rules, &live.grid);
    // Risky events with the cell their victim is in: the inputs of a typical task.
    let risky: Vec<(Event<'_>, dissuade::rules::Score, usize)> = payloads
        .iter()
        .filter_map(|p| {
            let e = Event::decode(p).ok()?;
            let s = rules.score(&e);
            let loc = e.callee_location?;
            let cell = grid.locate(loc.lon, loc.lat).cell?;
            (s.level >= Level::Medium).then_some((e, s, cell))
        })
        .take(4096)
        .collect();
    let mut out = Vec::with_capacity(4096);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    let bytes = {
        let mut total = 0;
        for (e, s, cell) in &risky {
            out.clear();
            task(&live, &scripts, e, s, *cell).encode_into(&mut out);
            total += out.len();
        }
        total / risky.len()
    };
    g.bench_function(format!("task_{bytes}B"), |b| {
        b.iter(cycle(&risky, |(e, s, cell)| {
            out.clear();
            task(&live, &scripts, e, s, *cell).encode_into(&mut out);
            black_box(out.len())
        }))
    });
    g.finish();
}

/// The task the pipeline would build (same fields, the cell's community officer assigned),
/// including rendering the reasons.
fn task<'a>(
    live: &'a Live,
    scripts: &'a Scripts,
    e: &'a Event<'a>,
    s: &dissuade::rules::Score,
    cell: usize,
) -> Task<'a> {
    let rules = &live.rules;
    let grid = &live.grid;
    let c = grid.cell(cell);
    let station = grid.station_of(cell);
    let recipients = live.recipients.of(grid, cell);
    Task {
        task_id: TaskId::for_event(&e.event_id, &e.callee_number),
        event_id: &e.event_id,
        kind: "new",
        upgrade_of: None,
        created_at: e.occurred_at_ms + 3,
        occurred_at: e.occurred_at_ms,
        deadline: e.occurred_at_ms + 1_800_000,
        level: s.level,
        score: s.total,
        reasons: s
            .fired
            .iter()
            .map(|&i| Reason {
                rule_id: &rules.rules()[i as usize].id,
                reason: rules.reason(i, e, &dissuade::features::NO_FIGURES),
                score: rules.rules()[i as usize].score,
            })
            .collect(),
        victim: Victim {
            number: &e.callee_number,
            age: e.callee_age,
            location: None,
        },
        grid: GridRef {
            match_kind: MatchKind::Inside,
            grid_id: Some(&c.grid_id),
            name: Some(&c.name),
            station_id: Some(&station.station_id),
            station_name: Some(&station.name),
            distance_m: None,
        },
        assignee: &recipients.assignee,
        also_notify: &recipients.also_notify,
        fraud_type: e.fraud_type_hint.as_deref(),
        script: scripts.for_fraud_type(e.fraud_type_hint.as_deref()),
        rules_version: rules.version(),
    }
}

fn whole_pipeline(c: &mut Criterion) {
    let pipeline = sample_pipeline();
    let events = synthetic_events(&pipeline, EVENTS);
    // The service's clock as the last event is processed: no event is dated in its future.
    let now_ms = T0_MS + EVENTS as i64 * 10;
    let mut out = Vec::with_capacity(4096);
    // The records' Kafka keys: the input is keyed by the callee's number.
    let keys: Vec<String> = events
        .iter()
        .map(|e| {
            let event = Event::decode(e).expect("synthetic events decode");
            event.callee_number.into_owned()
        })
        .collect();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    // Through a worker, as the processor's threads run records: each starts loading the
    // next record's window state by its key first.
    let mut worker = pipeline.worker();
    g.bench_function("process/synthetic_mix", |b| {
        let mut i = 0;
        b.iter(|| {
            let next = (i + 1) % events.len();
            worker.prefetch(keys[next].as_bytes(), 0);
            out.clear();
            black_box(worker.process(black_box(&events[i]), 0, now_ms, &mut out));
            i = next;
        })
    });
    // The same events, each pass moved later in event time by the span of the batch, so
    // that every call is new as on live traffic: no redelivery, tasks made anew once their
    // person's suppression has run out, windows filled and expired, clocks moved. Writing
    // the 13 timestamp digits of each record is inside the timing: about 15-20 ns (perf,
    // 2.5 % of this bench's samples and of `process/1m_people_advancing`'s), which the
    // processor does not pay.
    let fresh = sample_pipeline();
    let mut fresh_worker = fresh.worker();
    let mut advancing = events.clone();
    let at_digits: Vec<usize> = advancing.iter().map(|e| occurred_at_digits(e)).collect();
    g.bench_function("process/synthetic_mix_advancing", |b| {
        let (mut i, mut pass) = (0, 0i64);
        b.iter(|| {
            let at_ms = T0_MS + i as i64 * 10 + pass * EVENTS as i64 * 10;
            write_millis(&mut advancing[i][at_digits[i]..], at_ms);
            let next = (i + 1) % advancing.len();
            fresh_worker.prefetch(keys[next].as_bytes(), 0);
            out.clear();
            black_box(fresh_worker.process(black_box(&advancing[i]), 0, at_ms + 1_000, &mut out));
            i = next;
            if i == 0 {
                pass += 1;
            }
        })
    });
    // With shadow rules (the shipped set again, as a candidate) scored beside the live set
    // on every event, as the processor does.
    let mut cfg = config();
    cfg.rules.shadow = Some(cfg.rules.path.clone());
    let (shadowed, _) = Pipeline::load(&cfg).expect("sample pipeline loads");
    let shadow = Shadow::load(&cfg, &shadowed)
        .expect("shadow loads")
        .expect("configured");
    shadowed.set_shadow(shadow);
    let mut scratch = Vec::with_capacity(4096);
    let mut shadowed_worker = shadowed.worker();
    g.bench_function("process_with_shadow/synthetic_mix", |b| {
        b.iter(cycle(&events, |e| {
            out.clear();
            let outcome = shadowed_worker.process(black_box(e), 0, now_ms, &mut out);
            let shadow = shadowed_worker.shadow().expect("set");
            black_box(shadow.observe(&shadowed, &outcome, e, 0, now_ms, &mut scratch));
        }))
    });
    g.finish();
}

/// Where the 13 digits of a synthetic record's `occurred_at` start.
fn occurred_at_digits(record: &[u8]) -> usize {
    let key = b"\"occurred_at\":";
    let at = record.windows(key.len()).position(|w| w == key);
    at.expect("synthetic events carry epoch milliseconds") + key.len()
}

/// Overwrites the 13 digits at the start of `digits` with `at_ms`.
fn write_millis(digits: &mut [u8], at_ms: i64) {
    let mut v = at_ms;
    for d in digits[..13].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// Records of the synthetic mix over a centre's population, one a millisecond of event time,
/// replayed with advancing timestamps (as `process/synthetic_mix_advancing` does).
struct ProductionStream {
    /// The records back to back, and where each ends.
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// The records' Kafka keys (the callee's number) back to back, and where each ends.
    keys: Vec<u8>,
    key_ends: Vec<usize>,
    /// Where each record's timestamp digits are.
    at_digits: Vec<usize>,
    next: usize,
    at_ms: i64,
}

impl ProductionStream {
    /// `records` distinct calls to `people` people, to be repeated.
    fn new(pipeline: &Pipeline, people: usize, records: usize) -> ProductionStream {
        let config = SynthConfig {
            victims: people,
            ..SynthConfig::default()
        };
        let mut synth = Synth::new(&pipeline.cell_table(), config).with_run_id("prod");
        let mut stream = ProductionStream {
            bytes: Vec::with_capacity(records * 240),
            ends: Vec::with_capacity(records),
            keys: Vec::with_capacity(records * 11),
            key_ends: Vec::with_capacity(records),
            at_digits: Vec::with_capacity(records),
            next: 0,
            at_ms: T0_MS,
        };
        for i in 0..records {
            let start = stream.bytes.len();
            let victim = synth.next_event(T0_MS + i as i64, &mut stream.bytes);
            let digits = start + occurred_at_digits(&stream.bytes[start..]);
            stream.at_digits.push(digits);
            stream.ends.push(stream.bytes.len());
            let key = synth.callee_number(victim).as_bytes();
            stream.keys.extend_from_slice(key);
            stream.key_ends.push(stream.keys.len());
        }
        stream
    }

    /// Processes the next record as the processor does: the record after it starts loading
    /// its window state first.
    fn process(&mut self, worker: &mut Worker, out: &mut Vec<u8>) -> Outcome {
        let (i, at_ms) = (self.next, self.at_ms);
        self.next = (i + 1) % self.ends.len();
        self.at_ms += 1;
        worker.prefetch(slice(&self.keys, &self.key_ends, self.next), 0);
        out.clear();
        let outcome = worker.process(slice(&self.bytes, &self.ends, i), 0, at_ms + 1_000, out);
        // Dated for its next pass now, while its bytes are in the caches: a store that
        // missed would hold up the stores after it, which the processor does not pay.
        let next_pass = at_ms + self.ends.len() as i64;
        write_millis(&mut self.bytes[self.at_digits[i]..], next_pass);
        outcome
    }
}

/// Item `i` of `items` laid back to back, each ending where `ends` says.
fn slice<'a>(items: &'a [u8], ends: &[usize], i: usize) -> &'a [u8] {
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &items[start..ends[i]]
}

/// The whole pipeline at a centre's key counts: 1 M people, and callers drawn from the
/// synthetic mix's hundreds of millions of numbers, so that the window and suppression state
/// of most records is not in the caches, unlike that of the 100,000 records the
/// `pipeline/process` benches repeat. The timing starts after the first 90 minutes of event
/// time (5.4 M records), so that the windows are full.
fn production_pipeline(c: &mut Criterion) {
    let pipeline = sample_pipeline();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    // Built on first use: about ten seconds and 700 MiB that other benches need not pay.
    // (Smaller in CI's untimed run of the benches, a debug build.)
    let mut state = None;
    g.bench_function("process/1m_people_advancing", |b| {
        let (worker, stream) = state.get_or_insert_with(|| {
            let (people, records, prefill) = if cfg!(debug_assertions) {
                (10_000, 20_000, 20_000)
            } else {
                (1_000_000, 2_000_000, 5_400_000)
            };
            let mut worker = pipeline.worker();
            let mut stream = ProductionStream::new(&pipeline, people, records);
            let mut out = Vec::with_capacity(4096);
            for _ in 0..prefill {
                stream.process(&mut worker, &mut out);
            }
            (worker, stream)
        });
        let mut out = Vec::with_capacity(4096);
        // The outcome is kept here, not returned: criterion passes a returned value through
        // its own `black_box`, a volatile read that copies the 330-byte outcome a byte at
        // a time (about a sixth of this bench's time at 7de5e9e), which the processor does
        // not do.
        b.iter(|| {
            black_box(stream.process(worker, &mut out));
        })
    });
    g.finish();
}

/// The task records the pipeline writes for the synthetic mix, with their Kafka keys.
fn task_records(pipeline: &Pipeline, events: &[Vec<u8>], now_ms: i64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    events
        .iter()
        .filter_map(|e| {
            out.clear();
            match pipeline.process(e, 0, now_ms, &mut out) {
                Outcome::Scored(s) => match s.action {
                    Action::Task(t) => Some((t.key.to_string(), out.clone())),
                    _ => None,
                },
                Outcome::Rejected(_) => None,
            }
        })
        .collect()
}

fn lifecycle_settings() -> LifecycleSettings {
    LifecycleSettings {
        second_escalation_after: Duration::from_secs(3600),
        centre_desk: "centre".into(),
        closed_retention: Duration::from_secs(7 * 24 * 3600),
        unclosed_retention: Duration::from_secs(7 * 24 * 3600),
        max_tracked: 10_000_000,
    }
}

/// What the lifecycle edge does per record: decode, apply, and encode every changelog value.
fn track(lifecycle: &mut Lifecycle, record: &[u8]) -> usize {
    let mut task = TrackedTask::decode(record).expect("the pipeline's own task");
    task.station_desk = task.station_id.clone();
    black_box(lifecycle.on_task(task));
    let changes = lifecycle.take_changes();
    changes
        .iter()
        .filter_map(|c| c.value())
        .map(|v| v.len())
        .sum()
}

/// The lifecycle against the task rate the pipeline produces: tracking each task the pipeline
/// writes, and two feedback records per task (acknowledged, then reached by phone), each with
/// its changelog write. Every timed task id is new to its `Lifecycle` (a fresh one per pass
/// over the records; building and dropping it is not timed).
fn lifecycle(c: &mut Criterion) {
    let pipeline = sample_pipeline();
    let events = synthetic_events(&pipeline, EVENTS);
    let tasks = task_records(&pipeline, &events, T0_MS + EVENTS as i64 * 10);
    let feedback: Vec<(String, Vec<u8>)> = tasks
        .iter()
        .flat_map(|(key, record)| {
            let t = TrackedTask::decode(record).expect("the pipeline's own task");
            ["acknowledged", "reached_by_phone"].map(|outcome| {
                let json = format!(
                    r#"{{"task_id":"{}","actor_id":"{key}","at":{},"outcome":"{outcome}"}}"#,
                    t.task_id,
                    t.created_at_ms + 60_000
                );
                (key.clone(), json.into_bytes())
            })
        })
        .collect();
    let mut g = c.benchmark_group("lifecycle");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("track_task_{}", tasks.len()), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut lifecycle = Lifecycle::new(lifecycle_settings());
                let n = (iters - done).min(tasks.len() as u64) as usize;
                let start = Instant::now();
                for (_, record) in &tasks[..n] {
                    black_box(track(&mut lifecycle, record));
                }
                timed += start.elapsed();
                done += n as u64;
            }
            timed
        })
    });
    g.bench_function("feedback_ack_then_reached", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let mut lifecycle = Lifecycle::new(lifecycle_settings());
                for (_, record) in &tasks {
                    track(&mut lifecycle, record);
                }
                let n = (iters - done).min(feedback.len() as u64) as usize;
                let start = Instant::now();
                for (key, record) in &feedback[..n] {
                    let fb = Feedback::decode(record).expect("valid feedback");
                    let applied = lifecycle.on_feedback(&fb, Some(key.as_bytes()));
                    black_box(applied.is_ok());
                    for change in lifecycle.take_changes() {
                        black_box(change.value());
                    }
                }
                timed += start.elapsed();
                done += n as u64;
            }
            timed
        })
    });
    g.finish();
}

criterion_group! {
    name = stages;
    config = configure();
    targets = decode, score, windows, grid, dispatch, encode, whole_pipeline, production_pipeline, lifecycle
}
criterion_main!(stages);
