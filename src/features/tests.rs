//! Windows checked against figures worked out by hand.

use std::time::Duration;

use super::*;

const MIN: i64 = 60_000;

fn spec(
    id: &str,
    key: KeySide,
    aggregate: Aggregate,
    window_min: u64,
    filtered: bool,
) -> FeatureSpec {
    FeatureSpec {
        id: id.into(),
        description: String::new(),
        key,
        aggregate,
        window: Duration::from_secs(window_min * 60),
        filter: filtered.then(|| "callee_age >= 60".into()),
        used: true,
    }
}

/// A call from `caller` to `callee` at minute `at_min` (plus `ms`), lasting `secs`; `elderly`
/// sets filter bit 0 (in these tests, feature 0's `where` is "callee_age >= 60").
fn call(event: u64, caller: u64, callee: u64, at_ms: i64, secs: f64, elderly: bool) -> CallFacts {
    CallFacts {
        at_ms,
        event,
        caller,
        callee,
        duration_s: secs,
        filters: if elderly { 0b1111 } else { 0 },
        partition: 0,
    }
}

fn figures(w: &Windows, c: CallFacts) -> Figures {
    let mut out = NO_FIGURES;
    w.observe(&c, c.event, &mut out);
    out
}

fn limits(lateness_s: u64, max_calls: usize) -> WindowLimits {
    WindowLimits {
        allowed_lateness: Duration::from_secs(lateness_s),
        max_calls_per_key: max_calls,
    }
}

#[test]
fn a_window_holds_the_calls_after_its_start_and_up_to_its_end() {
    // distinct elderly callees of a caller over 10 min, and all calls of the caller over 10 min
    let w = Windows::new(
        &[
            spec("elderly", KeySide::Caller, Aggregate::Distinct, 10, true),
            spec("calls", KeySide::Caller, Aggregate::Count, 10, false),
        ],
        limits(60, 100),
    );
    // 7 and 9 are elderly, 8 is not; 7 is called twice.
    assert_eq!(figures(&w, call(1, 1, 7, 0, 30.0, true))[..2], [1.0, 1.0]);
    assert_eq!(
        figures(&w, call(2, 1, 8, MIN, 30.0, false))[..2],
        [1.0, 2.0]
    );
    assert_eq!(
        figures(&w, call(3, 1, 7, 2 * MIN, 30.0, true))[..2],
        [1.0, 3.0]
    );
    assert_eq!(
        figures(&w, call(4, 1, 9, 9 * MIN, 30.0, true))[..2],
        [2.0, 4.0]
    );
    // At exactly 10 min the call at 0 leaves: a window is (end - 10 min, end].
    assert_eq!(
        figures(&w, call(5, 1, 8, 10 * MIN, 30.0, false))[..2],
        [2.0, 4.0]
    );
    // At 12 min + 1 ms, the second call to 7 (at 2 min) is out too: 9 is left.
    assert_eq!(
        figures(&w, call(6, 1, 8, 12 * MIN + 1, 30.0, false))[..2],
        [1.0, 3.0]
    );
    // Another caller's calls are its own.
    assert_eq!(
        figures(&w, call(7, 2, 7, 12 * MIN + 1, 30.0, true))[..2],
        [1.0, 1.0]
    );
}

#[test]
fn windows_of_different_lengths_share_one_key() {
    let w = Windows::new(
        &[
            spec("short", KeySide::Callee, Aggregate::Count, 5, false),
            spec("long", KeySide::Callee, Aggregate::Count, 60, false),
            spec("talk", KeySide::Callee, Aggregate::SumDurationS, 60, false),
            spec("callers", KeySide::Callee, Aggregate::Distinct, 60, false),
        ],
        limits(60, 100),
    );
    let mut last = NO_FIGURES;
    for (i, at) in [0, 3, 6, 30, 61].into_iter().enumerate() {
        last = figures(
            &w,
            call(i as u64, 100 + i as u64 % 2, 5, at * MIN, 10.5, false),
        );
        let expected = match at {
            0 => [1.0, 1.0, 10.5, 1.0],
            3 => [2.0, 2.0, 21.0, 2.0],
            6 => [2.0, 3.0, 31.5, 2.0], // 0 is out of the 5-min window: (1, 6]
            30 => [1.0, 4.0, 42.0, 2.0], // (25, 30] holds 30 only
            _ => [1.0, 4.0, 42.0, 2.0], // (1, 61]: 0 left the hour
        };
        assert_eq!(last[..4], expected, "at minute {at}");
    }
    assert_eq!(w.size(), (0, 0, 1, 4));
    assert!(last[4].is_nan(), "no feature at index 4");
}

#[test]
fn share_is_the_part_of_the_window_that_matches() {
    let w = Windows::new(
        &[spec(
            "elderly_share",
            KeySide::Caller,
            Aggregate::Share,
            10,
            true,
        )],
        limits(60, 100),
    );
    assert_eq!(figures(&w, call(1, 1, 7, 0, 1.0, true))[0], 1.0);
    assert_eq!(figures(&w, call(2, 1, 8, MIN, 1.0, false))[0], 0.5);
    assert_eq!(
        figures(&w, call(3, 1, 9, 2 * MIN, 1.0, false))[0],
        1.0 / 3.0
    );
    assert_eq!(figures(&w, call(4, 1, 9, 11 * MIN, 1.0, true))[0], 0.5); // (1, 11]: 3 and 4
}

#[test]
fn a_late_call_counts_within_the_allowed_lateness_and_not_beyond() {
    let w = Windows::new(
        &[spec("calls", KeySide::Caller, Aggregate::Count, 10, false)],
        limits(120, 100),
    );
    assert_eq!(figures(&w, call(1, 1, 7, 20 * MIN, 1.0, false))[0], 1.0);
    // 2 min late: allowed, and inside the window ending at 20 min.
    assert_eq!(figures(&w, call(2, 1, 8, 18 * MIN, 1.0, false))[0], 2.0);
    // 2 min 1 ms late: not counted, but the figures are still given.
    assert_eq!(figures(&w, call(3, 1, 9, 18 * MIN - 1, 1.0, false))[0], 2.0);
    assert_eq!(w.counters.late.load(Ordering::Relaxed), 1);
    // Out of order but in time: it is sorted in, and leaves when its own time is up.
    assert_eq!(figures(&w, call(4, 1, 9, 19 * MIN, 1.0, false))[0], 3.0);
    assert_eq!(figures(&w, call(5, 1, 9, 28 * MIN, 1.0, false))[0], 3.0); // (18, 28]: 19, 20, 28
    assert_eq!(figures(&w, call(6, 1, 9, 30 * MIN, 1.0, false))[0], 2.0); // (20, 30]: 28, 30
}

#[test]
fn a_late_call_older_than_a_short_window_counts_only_in_the_long_one() {
    let w = Windows::new(
        &[
            spec("short", KeySide::Caller, Aggregate::Count, 1, false),
            spec("long", KeySide::Caller, Aggregate::Count, 10, false),
        ],
        limits(300, 100),
    );
    assert_eq!(
        figures(&w, call(1, 1, 7, 10 * MIN, 1.0, false))[..2],
        [1.0, 1.0]
    );
    // 3 minutes late: outside the 1-min window, inside the 10-min one.
    assert_eq!(
        figures(&w, call(2, 1, 7, 7 * MIN, 1.0, false))[..2],
        [1.0, 2.0]
    );
    // Then the short window moves on without ever having held it.
    assert_eq!(
        figures(&w, call(3, 1, 7, 10 * MIN + 30_000, 1.0, false))[..2],
        [2.0, 3.0]
    );
    assert_eq!(
        figures(&w, call(4, 1, 7, 17 * MIN, 1.0, false))[..2],
        [1.0, 3.0]
    ); // (7, 17]: 7 out
}

#[test]
fn a_redelivered_event_is_counted_once() {
    let w = Windows::new(
        &[spec("calls", KeySide::Caller, Aggregate::Count, 10, false)],
        limits(60, 100),
    );
    let c = call(1, 1, 7, MIN, 1.0, false);
    assert_eq!(figures(&w, c)[0], 1.0);
    assert_eq!(
        figures(&w, call(2, 1, 7, MIN, 1.0, false))[0],
        2.0,
        "same time, other event"
    );
    assert_eq!(figures(&w, c)[0], 2.0);
    assert_eq!(w.counters.duplicates.load(Ordering::Relaxed), 1);
}

#[test]
fn a_busy_key_keeps_its_latest_calls_only() {
    let w = Windows::new(
        &[spec(
            "callees",
            KeySide::Caller,
            Aggregate::Distinct,
            10,
            false,
        )],
        limits(60, 3),
    );
    for i in 0..5 {
        figures(&w, call(i, 1, 100 + i, i as i64 * 1000, 1.0, false));
    }
    assert_eq!(figures(&w, call(9, 1, 200, 6000, 1.0, false))[0], 3.0);
    assert_eq!(w.counters.truncated.load(Ordering::Relaxed), 3);
    assert_eq!(w.size(), (1, 3, 0, 0));
    assert_eq!(w.size(), w.size_by_visit());
}

#[test]
fn seconds_since_the_last_task_ignore_the_events_own_task() {
    let w = Windows::new(
        &[spec(
            "since",
            KeySide::Callee,
            Aggregate::SecondsSinceLastTask,
            60 * 24,
            false,
        )],
        limits(60, 100),
    );
    let mut out = NO_FIGURES;
    w.observe(&call(1, 1, 7, 0, 1.0, false), 11, &mut out);
    assert!(out[0].is_nan(), "no task yet");
    w.task_made(7, 0, 11);
    w.observe(&call(2, 1, 7, 90_000, 1.0, false), 12, &mut out);
    assert_eq!(out[0], 90.0);
    w.task_made(7, 90_000, 12);
    // Event 2 redelivered: it sees the task before its own, as it did the first time.
    w.observe(&call(2, 1, 7, 90_000, 1.0, false), 12, &mut out);
    assert_eq!(out[0], 90.0);
    w.observe(&call(3, 1, 7, 100_000, 1.0, false), 13, &mut out);
    assert_eq!(out[0], 10.0);
    // A day later (the window), the tasks are forgotten.
    w.observe(
        &call(4, 1, 7, 90_000 + 24 * 60 * MIN + 1, 1.0, false),
        14,
        &mut out,
    );
    assert!(out[0].is_nan());
}

#[test]
fn a_sweep_forgets_old_tasks_and_keeps_recent_ones() {
    let w = Windows::new(
        &[spec(
            "since",
            KeySide::Callee,
            Aggregate::SecondsSinceLastTask,
            60,
            false,
        )],
        limits(60, 100),
    );
    // Hashed numbers, as the windows get them.
    let (old, recent) = (0x1111_2222_3333_4444_u64, 0xaaaa_bbbb_cccc_dddd_u64);
    let mut out = NO_FIGURES;
    w.task_made(old, 0, 1);
    w.task_made(recent, 50 * MIN, 2);
    // Event time moves on to 61 minutes; the sweep keeps the tasks of the last hour.
    w.observe(&call(3, 1, recent, 61 * MIN, 1.0, false), 3, &mut out);
    w.expire_idle();
    w.observe(&call(4, 1, old, 61 * MIN, 1.0, false), 4, &mut out);
    assert!(out[0].is_nan(), "the old task is past the hour");
    w.observe(&call(5, 1, recent, 61 * MIN, 1.0, false), 5, &mut out);
    assert_eq!(out[0], (11 * 60) as f64);
    // A new task for the forgotten person is found again.
    w.task_made(old, 61 * MIN, 6);
    w.observe(&call(7, 1, old, 62 * MIN, 1.0, false), 7, &mut out);
    assert_eq!(out[0], 60.0);
}

#[test]
fn idle_keys_expire_against_the_latest_time_seen_anywhere() {
    let w = Windows::new(
        &[spec("calls", KeySide::Caller, Aggregate::Count, 10, false)],
        limits(60, 100),
    );
    figures(&w, call(1, 1, 7, 0, 1.0, false));
    figures(&w, call(2, 2, 7, 5 * MIN, 1.0, false));
    assert_eq!(w.expire_idle(), 0);
    // Caller 1's last call is 11 min + 1 ms old: past its window and the lateness.
    figures(&w, call(3, 3, 7, 11 * MIN + 1, 1.0, false));
    assert_eq!(w.expire_idle(), 1);
    assert_eq!(w.size().0, 2);
}

/// Numbers as the windows get them, hashed, so that they spread over the shards.
fn hashed(i: u64) -> u64 {
    (i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Windows counting each caller's calls over 10 minutes, with 6,400 callers that called at
/// minute 0: the callers.
fn callers_at_minute_zero() -> (Windows, Vec<u64>) {
    let w = Windows::new(
        &[spec("calls", KeySide::Caller, Aggregate::Count, 10, false)],
        limits(60, 100),
    );
    let callers: Vec<u64> = (0..6_400).map(hashed).collect();
    for (i, &caller) in callers.iter().enumerate() {
        figures(&w, call(i as u64, caller, 7, 0, 1.0, false));
    }
    (w, callers)
}

#[test]
fn calls_sweep_idle_keys_a_shard_at_a_time() {
    let (w, idle) = callers_at_minute_zero();
    // An hour later one number calls on: every other key is idle. Calls sweep shard k at
    // the k-th multiple of SWEEP_STEP calls observed, so after three steps shards 1 to 3
    // are swept and no other.
    let busy = hashed(1_000_000);
    let calls = 3 * SWEEP_STEP - idle.len() as u64;
    for i in 0..calls {
        figures(
            &w,
            call(10_000 + i, busy, 7, 60 * MIN + i as i64, 1.0, false),
        );
    }
    let left = idle
        .iter()
        .filter(|&&k| !(1..=3).contains(&shard_of(k)))
        .count();
    assert!(left < idle.len(), "the swept shards held keys");
    assert_eq!(w.size().0, left + 1);
    // The whole round of shards forgets every idle key.
    for i in calls..SWEEP_EVERY {
        figures(
            &w,
            call(10_000 + i, busy, 7, 60 * MIN + i as i64, 1.0, false),
        );
    }
    assert_eq!(w.size().0, 1);
}

#[test]
fn each_metrics_export_sweeps_one_shard() {
    let (w, idle) = callers_at_minute_zero();
    // An hour later: every key but the last caller's is idle (and too few calls for the
    // calls' own sweeps).
    figures(&w, call(10_000, hashed(1_000_000), 7, 60 * MIN, 1.0, false));
    let rules =
        crate::rules::RuleSet::from_toml_str(&crate::rules::synthetic_rule_set(1), "synthetic")
            .expect("synthetic rules");
    let metrics = crate::metrics::Metrics::new(&rules, 1);
    let caller_keys = || metrics.window_keys.with_label_values(&["caller"]).get();
    w.export(&metrics);
    w.export(&metrics);
    let left = idle.iter().filter(|&&k| shard_of(k) > 1).count();
    assert!(left < idle.len(), "shards 0 and 1 held keys");
    assert_eq!(caller_keys(), left as i64 + 1);
    for _ in 2..SHARDS {
        w.export(&metrics);
    }
    assert_eq!(caller_keys(), 1);
    assert_eq!(metrics.window_calls.with_label_values(&["caller"]).get(), 1);
}

#[test]
fn callee_keys_expire_by_their_own_partitions_clock() {
    let w = Windows::new(
        &[spec("calls", KeySide::Callee, Aggregate::Count, 10, false)],
        limits(60, 100),
    );
    let on = |p: i32, callee: u64, at_ms: i64| CallFacts {
        partition: p,
        ..call(at_ms as u64, 1, callee, at_ms, 1.0, false)
    };
    let mut out = NO_FIGURES;
    w.observe(&on(1, 7, 0), 0, &mut out);
    // Partition 0 runs an hour ahead (replayed after a restart, say): partition 1's callee
    // keeps its window, because partition 1's own clock has not moved.
    w.observe(&on(0, 8, 60 * MIN), 1, &mut out);
    assert_eq!(w.expire_idle(), 0);
    w.observe(&on(1, 7, 5 * MIN), 2, &mut out);
    assert_eq!(out[0], 2.0);
    // Once partition 1's clock passes the window and the lateness, the key goes.
    w.observe(&on(1, 9, 16 * MIN + 1), 3, &mut out);
    assert_eq!(w.expire_idle(), 1);
}

#[test]
fn split_into_the_by_caller_stage_and_the_processor_the_figures_are_the_same() {
    // 0: distinct elderly callees of the caller (10 min); 1: calls the callee received (10
    // min); 2: the caller's total call seconds (10 min).
    let specs = [
        spec("elderly", KeySide::Caller, Aggregate::Distinct, 10, true),
        spec("received", KeySide::Callee, Aggregate::Count, 10, false),
        spec(
            "seconds",
            KeySide::Caller,
            Aggregate::SumDurationS,
            10,
            false,
        ),
    ];
    let local = Windows::new(&specs, limits(60, 100));
    let callers = Windows::for_callers(&specs, limits(60, 100));
    let processor = Windows::without_callers(&specs, limits(60, 100));
    assert!(local.keeps_callers() && !callers.is_empty() && !processor.keeps_callers());
    // Caller 7 calls callees 1, 2, 1, 3 (elderly but 3); caller 8 calls callee 1.
    let calls = [
        call(1, 7, 1, 0, 60.0, true),
        call(2, 7, 2, MIN, 30.0, true),
        call(3, 8, 1, 2 * MIN, 10.0, true),
        call(4, 7, 1, 3 * MIN, 20.0, true),
        call(5, 7, 3, 4 * MIN, 40.0, false),
    ];
    let want = [
        [1.0, 1.0, 60.0],
        [2.0, 1.0, 90.0],
        [1.0, 2.0, 10.0],
        [2.0, 3.0, 110.0],
        [2.0, 1.0, 150.0],
    ];
    for (c, want) in calls.iter().zip(want) {
        let all = figures(&local, *c);
        let mut by_caller = NO_FIGURES;
        callers.observe_by_caller(c, &mut by_caller);
        let own = figures(&processor, *c);
        assert_eq!(&all[..3], &want, "event {}", c.event);
        assert_eq!(
            (by_caller[0], by_caller[2]),
            (want[0], want[2]),
            "event {}",
            c.event
        );
        assert!(by_caller[1].is_nan(), "the stage keeps no callee figure");
        assert_eq!(own[1], want[1], "event {}", c.event);
        assert!(
            own[0].is_nan() && own[2].is_nan(),
            "the processor keeps no caller figure"
        );
    }
}

#[test]
fn calls_no_feature_counts_are_not_kept_and_change_no_figure() {
    use rand::{Rng, SeedableRng};
    // Counting features only, each with a `where`: a call matching none is not kept. With a
    // `share` beside them every call is kept. Their figures must be the same call by call,
    // through late, out-of-order and redelivered calls and expiring windows.
    let counting = [
        spec(
            "elderly_callers",
            KeySide::Callee,
            Aggregate::Distinct,
            10,
            true,
        ),
        spec("elderly_calls", KeySide::Callee, Aggregate::Count, 60, true),
        spec(
            "elderly_seconds",
            KeySide::Callee,
            Aggregate::SumDurationS,
            30,
            true,
        ),
    ];
    let mut with_share = counting.to_vec();
    with_share.push(spec("share", KeySide::Callee, Aggregate::Share, 60, true));
    let lean = Windows::new(&counting, limits(120, 50));
    let full = Windows::new(&with_share, limits(120, 50));

    let mut rng = rand::rngs::SmallRng::seed_from_u64(13);
    // Numbers are hashed before they reach the windows: spread the keys over shards and bits.
    let key = hashed;
    let mut at = 0i64;
    let mut sent: Vec<CallFacts> = Vec::new();
    for event in 0..20_000u64 {
        let c = if !sent.is_empty() && rng.random_bool(0.05) {
            sent[rng.random_range(0..sent.len())] // a redelivery
        } else {
            at += rng.random_range(0..40_000);
            let late_by = if rng.random_bool(0.1) {
                rng.random_range(0..4 * MIN)
            } else {
                0
            };
            let (caller, callee) = (key(rng.random_range(0..30)), key(rng.random_range(0..20)));
            call(
                event,
                caller,
                callee,
                at - late_by,
                rng.random_range(1.0..600.0),
                rng.random_bool(0.3),
            )
        };
        sent.push(c);
        let (a, b) = (figures(&lean, c), figures(&full, c));
        assert_eq!(a[..3], b[..3], "call {event}: {c:?}");
    }
    assert_eq!(lean.size(), lean.size_by_visit());
    assert_eq!(full.size(), full.size_by_visit());
    let (_, _, lean_keys, lean_calls) = lean.size();
    let (_, _, full_keys, full_calls) = full.size();
    assert!(
        lean_calls < full_calls / 2,
        "{lean_calls} calls kept against {full_calls}"
    );
    assert!(lean_keys <= full_keys);
    // Late against a key holding nothing counted is not told apart: nothing changes either way.
    let late = |w: &Windows| w.counters.late.load(Ordering::Relaxed);
    assert!(late(&lean) > 0 && late(&lean) <= late(&full));
}

#[test]
fn the_bits_that_skip_empty_keys_change_no_figure() {
    use rand::{Rng, SeedableRng};
    // Filtered features on both sides and the last task: a call that no feature counts, of
    // a key that holds nothing, skips the lock when the key's bit is clear. With the bits
    // and without (every lookup through the lock), the figures must be the same call by
    // call, through late and redelivered calls, tasks, and sweeps that rebuild the bits.
    let specs = [
        spec(
            "elderly_callees",
            KeySide::Caller,
            Aggregate::Distinct,
            10,
            true,
        ),
        spec(
            "elderly_callers",
            KeySide::Callee,
            Aggregate::Count,
            60,
            true,
        ),
        spec(
            "since",
            KeySide::Callee,
            Aggregate::SecondsSinceLastTask,
            90,
            false,
        ),
    ];
    let with_bits = Windows::new(&specs, limits(120, 50));
    let without = Windows::new(&specs, limits(120, 50)).without_presence();

    let mut rng = rand::rngs::SmallRng::seed_from_u64(17);
    // Numbers are hashed before they reach the windows: spread the keys over shards and bits.
    let key = hashed;
    let mut at = 0i64;
    let mut sent: Vec<CallFacts> = Vec::new();
    let (mut sweep, mut swept, mut saw_nothing) = (false, 0, 0);
    for event in 0..20_000u64 {
        if sweep || event % 1_000 == 999 {
            assert_eq!(with_bits.size(), with_bits.size_by_visit(), "call {event}");
            assert_eq!(with_bits.expire_idle(), without.expire_idle());
            assert_eq!(with_bits.size(), with_bits.size_by_visit(), "call {event}");
            swept += 1;
            sweep = false;
        }
        let c = if !sent.is_empty() && rng.random_bool(0.05) {
            sent[rng.random_range(0..sent.len())] // a redelivery
        } else {
            at += rng.random_range(0..40_000);
            if rng.random_bool(0.002) {
                // A quiet spell, swept after its first call: the other keys go.
                at += 3 * 60 * MIN;
                sweep = true;
            }
            let late_by = if rng.random_bool(0.1) {
                rng.random_range(0..4 * MIN)
            } else {
                0
            };
            call(
                event,
                key(rng.random_range(0..300)),
                key(rng.random_range(0..200)),
                at - late_by,
                rng.random_range(1.0..600.0),
                rng.random_bool(0.2),
            )
        };
        sent.push(c);
        let (a, b) = (figures(&with_bits, c), figures(&without, c));
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "call {event}: {c:?}");
        // Nothing counted on either side: the calls a clear bit can answer.
        if a[..2] == [0.0, 0.0] {
            saw_nothing += 1;
        }
        if rng.random_bool(0.05) {
            for w in [&with_bits, &without] {
                w.task_made(c.callee, c.at_ms, c.event);
            }
        }
    }
    assert!(swept > 20, "{swept} sweeps");
    assert!(saw_nothing > 5_000, "{saw_nothing} calls of empty keys");
    assert_eq!(with_bits.size(), without.size());
}

#[test]
fn new_windows_take_over_the_last_tasks() {
    let specs = [spec(
        "since",
        KeySide::Callee,
        Aggregate::SecondsSinceLastTask,
        60,
        false,
    )];
    let old = Windows::new(&specs, limits(60, 100));
    let person = 0x5555_6666_7777_8888_u64;
    old.task_made(person, 0, 1);
    // A reloaded rule set's windows start empty but for the last tasks.
    let new = Windows::new(&specs, limits(60, 100));
    new.adopt_last_tasks(&old);
    let mut out = NO_FIGURES;
    new.observe(&call(2, 1, person, 5 * MIN, 1.0, false), 2, &mut out);
    assert_eq!(out[0], 300.0);
}
