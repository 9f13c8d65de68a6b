//! The figures for a hand-written month: seven tasks in the window (one story upgraded,
//! one escalated, one unmatched), one before it, redeliveries, and feedback of every kind.

use std::collections::HashMap;

use super::aggregate::*;
use super::record::{EscalationRecord, FeedbackRecord, TaskRecord};
use crate::lifecycle::{NotReachedReason, Outcome};
use crate::rules::Level;
use crate::task::TaskId;

fn ms(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .unwrap()
        .timestamp_millis()
}

fn at(hh_mm: &str) -> i64 {
    ms(&format!("2026-11-01T{hh_mm}:00Z"))
}

fn id(n: u8) -> TaskId {
    TaskId([n; 16])
}

struct T {
    n: u8,
    person: u64,
    station: Option<&'static str>,
    grid: Option<&'static str>,
    rules: &'static [&'static str],
    created: &'static str,
    deadline: &'static str,
    upgrade_of: Option<u8>,
}

fn task(t: T) -> TaskRecord {
    TaskRecord {
        task_id: id(t.n),
        event_id: format!("ev-{}", t.n),
        upgrade_of: t.upgrade_of.map(id),
        created_at_ms: at(t.created),
        deadline_ms: at(t.deadline),
        level: Level::High,
        person: t.person,
        victim_masked: format!("138****000{}", t.person),
        grid_id: t.grid.map(String::from),
        grid_name: None,
        station_id: t.station.map(String::from),
        station_name: t.station.map(|s| format!("{s} station")),
        assignee_id: format!("po-{}", t.n),
        rule_ids: t.rules.iter().map(|r| r.to_string()).collect(),
    }
}

fn fb(n: u8, time: &str, outcome: Outcome) -> FeedbackRecord {
    FeedbackRecord {
        task_id: id(n),
        at_ms: at(time),
        outcome,
        fingerprint: u64::from(n) << 32 ^ at(time) as u64 ^ outcome.as_str().len() as u64,
    }
}

const P1: u64 = 1;
const P2: u64 = 2;
const P3: u64 = 3;
const P4: u64 = 4;
const P5: u64 = 5;

fn window() -> Window {
    Window {
        from_ms: Some(ms("2026-11-01T00:00:00Z")),
        to_ms: Some(ms("2026-11-02T00:00:00Z")),
    }
}

fn as_of() -> i64 {
    ms("2026-11-02T00:00:00Z")
}

fn districts() -> HashMap<String, String> {
    HashMap::from([
        ("S1".to_string(), "120101".to_string()),
        ("S2".to_string(), "120102".to_string()),
    ])
}

fn tasks() -> Vec<TaskRecord> {
    let t = |n, person, station, grid, rules, created, deadline, upgrade_of| {
        task(T {
            n,
            person,
            station,
            grid,
            rules,
            created,
            deadline,
            upgrade_of,
        })
    };
    vec![
        // A: reached by phone in 5 minutes.
        t(
            1,
            P1,
            Some("S1"),
            Some("G1"),
            &["official", "overseas"],
            "00:00",
            "00:10",
            None,
        ),
        // B: a false alarm.
        t(
            2,
            P2,
            Some("S1"),
            Some("G1"),
            &["overseas"],
            "00:00",
            "00:30",
            None,
        ),
        // C: nobody answers; escalated.
        t(
            3,
            P3,
            Some("S1"),
            Some("G2"),
            &["elderly"],
            "01:00",
            "01:10",
            None,
        ),
        // D raised to E; feedback names D; E's deadline passes first.
        t(
            4,
            P4,
            Some("S2"),
            Some("G3"),
            &["elderly"],
            "02:00",
            "06:00",
            None,
        ),
        t(
            5,
            P4,
            Some("S2"),
            Some("G3"),
            &["elderly", "official"],
            "02:30",
            "02:40",
            Some(4),
        ),
        // F: the person of A again, elsewhere, already defrauded.
        t(
            6,
            P1,
            Some("S2"),
            Some("G3"),
            &["official"],
            "03:00",
            "03:10",
            None,
        ),
        // G: no grid matched; only acknowledged.
        t(7, P5, None, None, &["overseas"], "04:00", "04:30", None),
    ]
}

fn feedback() -> Vec<FeedbackRecord> {
    vec![
        fb(1, "00:02", Outcome::Acknowledged),
        fb(1, "00:05", Outcome::ReachedByPhone),
        fb(2, "00:20", Outcome::FalseAlarm),
        fb(3, "01:05", Outcome::NotReached(NotReachedReason::NoAnswer)),
        fb(4, "02:50", Outcome::ReachedInPerson),
        fb(
            6,
            "03:05",
            Outcome::AlreadyDefrauded {
                loss_cny: Some(38_000.5),
            },
        ),
        // A redelivery: the loss counts once.
        fb(
            6,
            "03:05",
            Outcome::AlreadyDefrauded {
                loss_cny: Some(38_000.5),
            },
        ),
        fb(7, "04:05", Outcome::Acknowledged),
        // Feedback on a task before the window, and on a task never seen: ignored.
        fb(8, "00:01", Outcome::ReachedByPhone),
        fb(9, "00:01", Outcome::FalseAlarm),
    ]
}

fn aggregator(reverse: bool) -> Aggregator {
    let mut agg = Aggregator::new(window());
    let mut tasks = tasks();
    // Before the window.
    tasks.push(TaskRecord {
        created_at_ms: ms("2026-10-31T23:00:00Z"),
        ..task(T {
            n: 8,
            person: 6,
            station: Some("S1"),
            grid: Some("G1"),
            rules: &["overseas"],
            created: "00:00",
            deadline: "00:10",
            upgrade_of: None,
        })
    });
    // A redelivered task.
    tasks.push(tasks[0].clone());
    let mut feedback = feedback();
    if reverse {
        tasks.reverse();
        feedback.reverse();
    }
    for t in tasks {
        agg.add_task(t);
    }
    agg.add_escalation(EscalationRecord {
        escalation_id: id(0xE3),
        escalation_of: id(3),
        tier: 1,
    });
    // Tier 2 names the same task: still one escalated task.
    agg.add_escalation(EscalationRecord {
        escalation_id: id(0xE4),
        escalation_of: id(3),
        tier: 2,
    });
    for f in feedback {
        agg.add_feedback(f);
    }
    agg
}

#[allow(clippy::too_many_arguments)]
fn row(
    key: &str,
    name: Option<&str>,
    (tasks, people, reached): (u64, u64, u64),
    reach_rate: f64,
    contact: Option<(f64, f64)>,
    (overdue, escalated, false_alarms): (u64, u64, u64),
    losses_cny: f64,
) -> Row {
    Row {
        key: key.into(),
        name: name.map(String::from),
        tasks,
        people,
        reached,
        reach_rate: Some(reach_rate),
        median_first_contact_s: contact.map(|c| c.0),
        p90_first_contact_s: contact.map(|c| c.1),
        overdue,
        escalated,
        false_alarms,
        losses_cny,
    }
}

fn total() -> Row {
    // Contact: story A 300 s, story D→E 3,000 s (from D's creation).
    row(
        "total",
        None,
        (7, 5, 2),
        0.4,
        Some((300.0, 3000.0)),
        (3, 1, 1),
        38_000.5,
    )
}

#[test]
fn counts_per_station() {
    let report = aggregator(false).report(Dimension::Station, as_of(), &districts());
    assert_eq!(
        report.rows,
        [
            row("(none)", None, (1, 1, 0), 0.0, None, (1, 0, 0), 0.0),
            row(
                "S1",
                Some("S1 station"),
                (3, 3, 1),
                0.3333,
                Some((300.0, 300.0)),
                (1, 1, 1),
                0.0
            ),
            // P1 was reached in S1, not here; D is not overdue (E took over before its
            // deadline), E is (closed ten minutes late).
            row(
                "S2",
                Some("S2 station"),
                (3, 2, 1),
                0.5,
                Some((3000.0, 3000.0)),
                (1, 0, 0),
                38_000.5
            ),
        ]
    );
    assert_eq!(report.total, total());
}

#[test]
fn counts_a_task_under_each_rule_that_fired() {
    let report = aggregator(false).report(Dimension::Rule, as_of(), &districts());
    assert_eq!(
        report.rows,
        [
            row(
                "elderly",
                None,
                (3, 2, 1),
                0.5,
                Some((3000.0, 3000.0)),
                (2, 1, 0),
                0.0
            ),
            // The D→E story enters this row with E: 20 minutes from E to the contact.
            row(
                "official",
                None,
                (3, 2, 2),
                1.0,
                Some((300.0, 1200.0)),
                (1, 0, 0),
                38_000.5
            ),
            row(
                "overseas",
                None,
                (3, 3, 1),
                0.3333,
                Some((300.0, 300.0)),
                (1, 0, 1),
                0.0
            ),
        ]
    );
    assert_eq!(report.total, total());
}

#[test]
fn districts_come_from_the_stations_file() {
    let mut districts = districts();
    districts.remove("S2");
    let report = aggregator(false).report(Dimension::District, as_of(), &districts);
    let keys: Vec<(&str, u64)> = report
        .rows
        .iter()
        .map(|r| (r.key.as_str(), r.tasks))
        .collect();
    assert_eq!(keys, [("(none)", 1), ("(unknown)", 3), ("120101", 3)]);
}

#[test]
fn the_same_records_in_another_order_give_the_same_report() {
    for by in [
        Dimension::District,
        Dimension::Station,
        Dimension::Grid,
        Dimension::Rule,
    ] {
        assert_eq!(
            aggregator(false).report(by, as_of(), &districts()),
            aggregator(true).report(by, as_of(), &districts()),
            "{by:?}"
        );
    }
    assert_eq!(
        aggregator(false).station_list(as_of(), &districts()),
        aggregator(true).station_list(as_of(), &districts())
    );
}

#[test]
fn overdue_is_judged_at_as_of() {
    // At 01:05 only B's and A's deadlines... A closed in time; nothing is overdue yet.
    let report = aggregator(false).report(Dimension::Station, at("01:05"), &districts());
    assert_eq!(report.total.overdue, 0);
    // After C's deadline.
    let report = aggregator(false).report(Dimension::Station, at("01:11"), &districts());
    assert_eq!(report.total.overdue, 1);
}

#[test]
fn feedback_naming_an_escalation_belongs_to_the_story() {
    let mut agg = aggregator(false);
    agg.add_feedback(fb(0xE3, "01:30", Outcome::ReachedInPerson));
    let report = agg.report(Dimension::Station, as_of(), &districts());
    let s1 = &report.rows[1];
    assert_eq!((s1.key.as_str(), s1.reached, s1.overdue), ("S1", 2, 1));
    assert_eq!(s1.p90_first_contact_s, Some(1800.0));
}

#[test]
fn station_list_puts_open_items_first() {
    let list = aggregator(false).station_list(as_of(), &districts());
    let summary: Vec<(&str, Option<&str>, usize, usize)> = list
        .stations
        .iter()
        .map(|s| {
            (
                s.station_id.as_str(),
                s.district.as_deref(),
                s.open,
                s.overdue,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("(none)", None, 1, 1),
            ("S1", Some("120101"), 1, 1),
            ("S2", Some("120102"), 0, 1),
        ]
    );
    let items = |i: usize| -> Vec<(TaskId, &str, bool, bool)> {
        list.stations[i]
            .items
            .iter()
            .map(|t| (t.task_id, t.state, t.open, t.overdue))
            .collect()
    };
    assert_eq!(
        items(1),
        [
            (id(3), "not_reached", true, true),
            (id(1), "reached_by_phone", false, false),
            (id(2), "false_alarm", false, false),
        ]
    );
    assert_eq!(
        items(2),
        [
            (id(4), "upgraded", false, false),
            (id(5), "reached_in_person", false, true),
            (id(6), "already_defrauded", false, false),
        ]
    );
    assert_eq!(items(0), [(id(7), "acknowledged", true, true)]);
    assert_eq!(list.stations[1].items[0].victim, "138****0003");
}
