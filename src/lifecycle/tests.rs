use std::borrow::Cow;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::*;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const OFFICER: &str = "TJ-HX-0012";
const AUX: &str = "TJ-HX-0012-A";
const DESK: &str = "desk-hx";
const CENTRE: &str = "centre-desk";

fn settings() -> LifecycleSettings {
    LifecycleSettings {
        second_escalation_after: Duration::from_secs(30 * 60),
        centre_desk: CENTRE.into(),
        closed_retention: Duration::from_secs(24 * 3600),
        unclosed_retention: Duration::from_secs(48 * 3600),
        max_tracked: 100,
    }
}

fn lifecycle() -> Lifecycle {
    Lifecycle::new(settings())
}

fn id(n: u8) -> TaskId {
    TaskId([n; 16])
}

fn task(n: u8, deadline_ms: i64) -> TrackedTask {
    TrackedTask {
        task_id: id(n),
        kind: TaskKind::New,
        upgrade_of: None,
        created_at_ms: 0,
        deadline_ms,
        level: Level::High,
        key: OFFICER.into(),
        station_id: Some("hx".into()),
        station_desk: Some(DESK.into()),
        may_report: vec![OFFICER.into(), AUX.into()],
    }
}

fn upgrade(n: u8, of: u8, deadline_ms: i64) -> TrackedTask {
    TrackedTask {
        kind: TaskKind::Upgrade,
        upgrade_of: Some(id(of)),
        level: Level::Critical,
        ..task(n, deadline_ms)
    }
}

fn fb(n: u8, actor: &str, at_ms: i64, outcome: Outcome) -> Feedback<'static> {
    Feedback {
        task_id: id(n),
        actor_id: Cow::Owned(actor.into()),
        at_ms,
        outcome,
        note: None,
        photos: Vec::new(),
        location: None,
    }
}

fn send(l: &mut Lifecycle, f: &Feedback<'_>) -> Result<Vec<Transition>, Rejected> {
    l.on_feedback(f, Some(OFFICER.as_bytes()))
}

fn kinds(ts: &[Transition]) -> Vec<&'static str> {
    ts.iter().map(Transition::kind).collect()
}

fn escalations(ts: &[Transition]) -> Vec<&Escalation> {
    ts.iter()
        .filter_map(|t| match t {
            Transition::Escalated { escalation, .. } => Some(escalation),
            _ => None,
        })
        .collect()
}

/// (open, acknowledged, overdue, closed) counted from the entries themselves.
fn recount(l: &Lifecycle) -> [usize; 4] {
    let mut c = [0; 4];
    for s in l.states() {
        c[match s.status() {
            Some(Status::Open) => 0,
            Some(Status::Acknowledged) => 1,
            Some(Status::Overdue) => 2,
            None => 3,
        }] += 1;
    }
    c
}

fn counters(l: &Lifecycle) -> [usize; 4] {
    [l.open(), l.acknowledged(), l.overdue(), l.closed()]
}

/// A fresh lifecycle restored from every change `l` has reported.
fn restored(changes: &[Change]) -> Lifecycle {
    let mut r = lifecycle();
    for c in changes {
        let value = c.value();
        r.restore(Change::decode(c.key().as_bytes(), value.as_deref()).unwrap());
    }
    r
}

#[test]
fn a_new_task_opens() {
    let mut l = lifecycle();
    assert_eq!(
        l.on_task(task(1, HOUR)),
        [Transition::Opened {
            task_id: id(1),
            level: Level::High,
            deadline_ms: HOUR
        }]
    );
    assert_eq!(counters(&l), [1, 0, 0, 0]);
    assert_eq!(l.state_of(id(1)).unwrap().status(), Some(Status::Open));
    assert_eq!(l.next_due_ms(), Some(HOUR));
}

#[test]
fn open_ack_reached_closes_and_leaves_only_the_compact_record() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    let ack = send(&mut l, &fb(1, OFFICER, 5 * MIN, Outcome::Acknowledged)).unwrap();
    assert_eq!(
        ack,
        [Transition::Acknowledged {
            task_id: id(1),
            by: OFFICER.into(),
            at_ms: 5 * MIN,
            first: true,
            status: Status::Acknowledged
        }]
    );
    assert_eq!(counters(&l), [0, 1, 0, 0]);
    let reached = send(&mut l, &fb(1, OFFICER, 20 * MIN, Outcome::ReachedInPerson)).unwrap();
    assert_eq!(
        reached,
        [Transition::Closed {
            task_id: id(1),
            outcome: Outcome::ReachedInPerson,
            by: OFFICER.into(),
            at_ms: 20 * MIN,
            key: OFFICER.into(),
            level: Level::High,
            created_at_ms: 0,
            deadline_ms: HOUR,
            acknowledged_at_ms: Some(5 * MIN),
            first_contact_ms: Some(20 * MIN),
            attempts: 0,
            tier: 0
        }]
    );
    assert_eq!(counters(&l), [0, 0, 0, 1]);
    match l.state_of(id(1)).unwrap() {
        TaskState::Closed(c) => {
            assert_eq!(c.outcome, "reached_in_person");
            assert_eq!(c.closed_at_ms, 20 * MIN);
            assert_eq!(c.seen.len(), 2, "the ack and the close");
        }
        other => panic!("expected a closed record, got {other:?}"),
    }
    // The deadline passing changes nothing for a closed task.
    assert_eq!(l.advance(2 * HOUR), []);
}

#[test]
fn feedback_after_close_is_rejected_but_a_redelivered_record_is_a_no_op() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    let ack = fb(1, OFFICER, MIN, Outcome::Acknowledged);
    let close = fb(1, OFFICER, 2 * MIN, Outcome::ReachedByPhone);
    send(&mut l, &ack).unwrap();
    send(&mut l, &close).unwrap();
    l.take_changes();
    assert_eq!(send(&mut l, &close), Ok(vec![]));
    assert_eq!(
        send(&mut l, &ack),
        Ok(vec![]),
        "replayed input after the close"
    );
    assert_eq!(l.take_changes(), [], "a no-op writes nothing");
    let late = send(&mut l, &fb(1, AUX, 3 * MIN, Outcome::FalseAlarm)).unwrap_err();
    assert_eq!(
        late,
        Rejected::Closed {
            task_id: id(1),
            outcome: "reached_by_phone".into()
        }
    );
    assert_eq!(late.kind(), "closed");
}

#[test]
fn a_redelivered_record_on_an_open_task_is_a_no_op() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    let attempt = fb(
        1,
        OFFICER,
        MIN,
        Outcome::NotReached(NotReachedReason::NoAnswer),
    );
    assert_eq!(kinds(&send(&mut l, &attempt).unwrap()), ["attempted"]);
    assert_eq!(send(&mut l, &attempt), Ok(vec![]));
    // The same reason a minute later is a second attempt.
    let again = fb(
        1,
        OFFICER,
        2 * MIN,
        Outcome::NotReached(NotReachedReason::NoAnswer),
    );
    assert_eq!(
        send(&mut l, &again).unwrap(),
        [Transition::Attempted {
            task_id: id(1),
            by: OFFICER.into(),
            at_ms: 2 * MIN,
            reason: NotReachedReason::NoAnswer,
            attempts: 2
        }]
    );
    assert_eq!(counters(&l), [1, 0, 0, 0], "attempts leave the task open");
}

#[test]
fn an_actor_not_on_the_task_is_not_authorized() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    let err = send(&mut l, &fb(1, "TJ-NK-0001", MIN, Outcome::FalseAlarm)).unwrap_err();
    assert_eq!(
        err,
        Rejected::NotAuthorized {
            task_id: id(1),
            actor: "TJ-NK-0001".into()
        }
    );
    assert_eq!(err.kind(), "not_authorized");
    // A phone number typed as the actor id is masked.
    let err = send(&mut l, &fb(1, "13812345678", MIN, Outcome::FalseAlarm)).unwrap_err();
    assert!(!format!("{err} {err:?}").contains("13812345678"), "{err}");
    // Copied officers and both desks may report.
    for actor in [AUX, DESK, CENTRE] {
        let mut l = lifecycle();
        l.on_task(task(1, HOUR));
        assert_eq!(
            kinds(&send(&mut l, &fb(1, actor, MIN, Outcome::Acknowledged)).unwrap()),
            ["acknowledged"],
            "{actor}"
        );
    }
}

#[test]
fn feedback_keyed_other_than_by_the_assignee_is_rejected_naming_the_key() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    let ack = fb(1, DESK, MIN, Outcome::Acknowledged);
    for key in [Some(DESK.as_bytes()), None] {
        let err = l.on_feedback(&ack, key).unwrap_err();
        assert_eq!(
            err,
            Rejected::WrongKey {
                task_id: id(1),
                expected: OFFICER.into()
            }
        );
        assert_eq!(err.kind(), "wrong_key");
        assert!(err.to_string().contains("`TJ-HX-0012`"), "{err}");
    }
    assert_eq!(counters(&l), [1, 0, 0, 0]);
}

#[test]
fn feedback_for_an_unknown_task_is_rejected() {
    let mut l = lifecycle();
    let err = send(&mut l, &fb(9, OFFICER, MIN, Outcome::Acknowledged)).unwrap_err();
    assert_eq!(err, Rejected::UnknownTask { task_id: id(9) });
    assert_eq!(err.kind(), "unknown_task");
}

#[test]
fn the_deadline_makes_a_task_overdue_and_escalates_tier_1_exactly_once() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    send(&mut l, &fb(1, AUX, MIN, Outcome::Acknowledged)).unwrap();
    assert_eq!(l.advance(HOUR - 1), []);
    let fired = l.advance(HOUR);
    assert_eq!(kinds(&fired), ["overdue", "escalated"]);
    assert_eq!(
        fired[0],
        Transition::Overdue {
            task_id: id(1),
            since_ms: HOUR
        }
    );
    assert_eq!(
        *escalations(&fired)[0],
        Escalation {
            escalation_id: Escalation::id_for(id(1), 1),
            of: id(1),
            tier: 1,
            to_desk: DESK.into(),
            created_at_ms: 0,
            deadline_ms: HOUR,
            overdue_since_ms: HOUR,
            not_responded: vec![OFFICER.into()],
            acknowledged_at_ms: Some(MIN),
            attempts: 0,
            original_key: OFFICER.into(),
            station_id: Some("hx".into()),
            level: Level::High,
        }
    );
    assert_eq!(counters(&l), [0, 0, 1, 0]);
    for now in [HOUR, HOUR + 1, HOUR + 29 * MIN] {
        assert_eq!(l.advance(now), [], "at {now}");
    }
    // An acknowledgement now is recorded; the task stays overdue.
    let ack = send(&mut l, &fb(1, OFFICER, HOUR + MIN, Outcome::Acknowledged)).unwrap();
    assert_eq!(
        ack,
        [Transition::Acknowledged {
            task_id: id(1),
            by: OFFICER.into(),
            at_ms: HOUR + MIN,
            first: false,
            status: Status::Overdue
        }]
    );
    assert_eq!(counters(&l), [0, 0, 1, 0]);
}

#[test]
fn tier_2_goes_to_the_centre_after_the_second_interval() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    l.advance(HOUR);
    // The station desk looked but did not close it.
    send(&mut l, &fb(1, DESK, HOUR + MIN, Outcome::Acknowledged)).unwrap();
    assert_eq!(l.advance(HOUR + 30 * MIN - 1), []);
    let fired = l.advance(HOUR + 30 * MIN);
    assert_eq!(kinds(&fired), ["escalated"]);
    let e = escalations(&fired)[0];
    assert_eq!(e.tier, 2);
    assert_eq!(e.to_desk, CENTRE);
    assert_eq!(e.escalation_id, Escalation::id_for(id(1), 2));
    assert_eq!(e.overdue_since_ms, HOUR);
    assert_eq!(e.not_responded, [OFFICER, AUX]);
    assert_eq!(l.advance(10 * HOUR), [], "no third tier");
}

#[test]
fn a_long_pause_fires_both_tiers_in_one_call() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    let fired = l.advance(3 * HOUR);
    assert_eq!(kinds(&fired), ["overdue", "escalated", "escalated"]);
    let tiers: Vec<_> = escalations(&fired)
        .iter()
        .map(|e| (e.tier, e.to_desk.clone()))
        .collect();
    assert_eq!(tiers, [(1, DESK.to_owned()), (2, CENTRE.to_owned())]);
    assert_eq!(escalations(&fired)[1].not_responded, [OFFICER, AUX, DESK]);
}

#[test]
fn a_desk_assigned_or_stationless_task_escalates_to_the_centre_only() {
    let desk_task = TrackedTask {
        key: DESK.into(),
        may_report: vec![DESK.into()],
        ..task(1, HOUR)
    };
    let stationless = TrackedTask {
        station_id: None,
        station_desk: None,
        ..task(2, HOUR)
    };
    for t in [desk_task, stationless] {
        let mut l = lifecycle();
        let n = t.task_id;
        l.on_task(t);
        let fired = l.advance(HOUR);
        let e = escalations(&fired);
        assert_eq!(e.len(), 1, "{n}");
        assert_eq!((e[0].tier, e[0].to_desk.as_str()), (1, CENTRE));
        assert_eq!(l.advance(HOUR + 30 * MIN), [], "no tier 2 for {n}");
        assert_eq!(
            l.advance(HOUR + 48 * HOUR),
            [Transition::Expired {
                task_id: n,
                tier: 1
            }]
        );
    }
}

#[test]
fn an_upgrade_inherits_the_story_and_the_earlier_deadline() {
    let mut l = lifecycle();
    l.on_task(task(1, 2 * HOUR));
    send(&mut l, &fb(1, OFFICER, MIN, Outcome::Acknowledged)).unwrap();
    send(
        &mut l,
        &fb(
            1,
            AUX,
            2 * MIN,
            Outcome::NotReached(NotReachedReason::NoAnswer),
        ),
    )
    .unwrap();
    l.take_changes();
    let up = l.on_task(upgrade(2, 1, 3 * HOUR));
    assert_eq!(
        up,
        [Transition::Upgraded {
            task_id: id(2),
            from: id(1),
            status: Status::Acknowledged,
            deadline_ms: 2 * HOUR
        }]
    );
    assert_eq!(counters(&l), [0, 1, 0, 0]);
    assert_eq!(l.state_of(id(1)), None);
    match l.state_of(id(2)).unwrap() {
        TaskState::Tracked(t) => {
            assert_eq!(t.supersedes, [id(1)]);
            assert_eq!(t.level, Level::Critical);
            assert_eq!(t.acknowledged_at_ms, Some(MIN));
            assert_eq!(t.attempts, 1);
            assert_eq!(t.deadline_ms, 2 * HOUR);
        }
        other => panic!("{other:?}"),
    }
    // The old id's entry is a tombstone, the new one holds the story.
    let changes = l.take_changes();
    assert_eq!(changes.len(), 2);
    assert_eq!(
        changes[0],
        Change {
            task_id: id(1),
            state: None
        }
    );
    assert_eq!(changes[1].task_id, id(2));
    // Feedback naming the old id reaches the upgrade and closes it.
    let closed = send(&mut l, &fb(1, OFFICER, 3 * MIN, Outcome::ReachedByPhone)).unwrap();
    assert_eq!(closed[0].task_id(), id(2));
    assert_eq!(counters(&l), [0, 0, 0, 1]);
    assert_eq!(
        send(&mut l, &fb(2, AUX, 4 * MIN, Outcome::Acknowledged)),
        Err(Rejected::Closed {
            task_id: id(2),
            outcome: "reached_by_phone".into()
        })
    );
}

#[test]
fn an_upgrade_after_tier_1_keeps_the_tier_and_escalates_tier_2_on_time() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    assert_eq!(escalations(&l.advance(HOUR)).len(), 1);
    l.on_task(upgrade(2, 1, 5 * HOUR));
    assert_eq!(counters(&l), [0, 0, 1, 0]);
    assert_eq!(l.advance(HOUR + 29 * MIN), [], "no second tier 1");
    let fired = l.advance(HOUR + 30 * MIN);
    let e = escalations(&fired);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].tier, 2);
    assert_eq!(e[0].of, id(2));
    assert_eq!(
        e[0].escalation_id,
        Escalation::id_for(id(1), 2),
        "ids follow the chain's root"
    );
}

#[test]
fn feedback_naming_an_escalation_id_reaches_the_task() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    let fired = l.advance(HOUR);
    let esc_id = escalations(&fired)[0].escalation_id;
    let mut close = fb(0, DESK, HOUR + MIN, Outcome::FalseAlarm);
    close.task_id = esc_id;
    assert_eq!(send(&mut l, &close).unwrap()[0].task_id(), id(1));
}

#[test]
fn an_upgrade_of_an_unknown_or_closed_task_opens_fresh() {
    let mut l = lifecycle();
    assert_eq!(kinds(&l.on_task(upgrade(2, 1, HOUR))), ["opened"]);
    l.on_task(task(3, HOUR));
    send(&mut l, &fb(3, OFFICER, MIN, Outcome::FalseAlarm)).unwrap();
    assert_eq!(kinds(&l.on_task(upgrade(4, 3, HOUR))), ["opened"]);
    assert_eq!(counters(&l), [2, 0, 0, 1]);
    // The closed task keeps its own record.
    assert_eq!(
        send(&mut l, &fb(3, AUX, 2 * MIN, Outcome::Acknowledged))
            .unwrap_err()
            .kind(),
        "closed"
    );
}

#[test]
fn redelivered_tasks_and_escalation_records_change_nothing() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    send(&mut l, &fb(1, OFFICER, MIN, Outcome::Acknowledged)).unwrap();
    l.on_task(upgrade(2, 1, HOUR));
    l.take_changes();
    assert_eq!(l.on_task(task(1, HOUR)), [], "an id the upgrade replaced");
    assert_eq!(l.on_task(upgrade(2, 1, HOUR)), [], "the upgrade itself");
    let escalation = TrackedTask {
        kind: TaskKind::Escalation,
        key: DESK.into(),
        ..task(7, HOUR)
    };
    assert_eq!(l.on_task(escalation), []);
    assert_eq!(counters(&l), [0, 1, 0, 0]);
    assert_eq!(l.take_changes(), []);
}

#[test]
fn restore_then_replay_does_not_escalate_twice() {
    let mut before = lifecycle();
    let mut changes = Vec::new();
    before.on_task(task(1, HOUR));
    before.on_task(task(2, HOUR));
    let ack = fb(1, OFFICER, MIN, Outcome::Acknowledged);
    send(&mut before, &ack).unwrap();
    changes.extend(before.take_changes());
    assert_eq!(escalations(&before.advance(HOUR)).len(), 2);
    changes.extend(before.take_changes());

    let mut after = restored(&changes);
    assert_eq!(counters(&after), [0, 0, 2, 0]);
    assert_eq!(counters(&after), recount(&after));
    // The input since the last committed offset comes again.
    assert_eq!(after.on_task(task(1, HOUR)), []);
    assert_eq!(after.on_task(task(2, HOUR)), []);
    assert_eq!(send(&mut after, &ack), Ok(vec![]));
    assert_eq!(after.advance(HOUR), []);
    assert_eq!(after.advance(HOUR + 29 * MIN), []);
    // The restored deadline queue still fires tier 2, once per task.
    let fired = after.advance(HOUR + 30 * MIN);
    let tiers: Vec<_> = escalations(&fired).iter().map(|e| (e.of, e.tier)).collect();
    assert_eq!(tiers.len(), 2);
    assert!(tiers.iter().all(|&(_, tier)| tier == 2), "{tiers:?}");
    assert_eq!(after.advance(HOUR + 31 * MIN), []);
}

#[test]
fn restore_keeps_upgrade_aliases_and_honours_tombstones() {
    let mut before = lifecycle();
    before.on_task(task(1, 100 * HOUR));
    before.on_task(upgrade(2, 1, 100 * HOUR));
    before.on_task(task(3, HOUR));
    send(&mut before, &fb(3, OFFICER, MIN, Outcome::FalseAlarm)).unwrap();
    let mut changes = before.take_changes();
    before.advance(MIN + 24 * HOUR);
    let forgotten = before.take_changes();
    assert_eq!(
        forgotten,
        [Change {
            task_id: id(3),
            state: None
        }]
    );
    changes.extend(forgotten);

    let mut after = restored(&changes);
    assert_eq!(counters(&after), [1, 0, 0, 0]);
    assert_eq!(after.resolve(id(1)), Some(id(2)));
    assert_eq!(after.resolve(id(3)), None);
    assert_eq!(
        kinds(&send(&mut after, &fb(1, OFFICER, 2 * MIN, Outcome::Acknowledged)).unwrap()),
        ["acknowledged"]
    );
    assert_eq!(
        after.take_changes().len(),
        1,
        "restoring wrote nothing back"
    );
}

#[test]
fn at_max_tracked_closed_records_go_first_then_the_oldest_task() {
    let mut l = Lifecycle::new(LifecycleSettings {
        max_tracked: 3,
        ..settings()
    });
    l.on_task(task(1, HOUR));
    l.on_task(task(2, HOUR));
    l.on_task(task(3, HOUR));
    send(&mut l, &fb(2, OFFICER, MIN, Outcome::FalseAlarm)).unwrap();
    assert_eq!(
        l.on_task(task(4, HOUR))[0],
        Transition::Evicted {
            task_id: id(2),
            was: None
        }
    );
    assert_eq!((l.evicted(), l.evicted_closed()), (0, 1));
    assert_eq!(kinds(&l.on_task(task(5, HOUR))), ["evicted", "opened"]);
    assert_eq!(l.state_of(id(1)), None, "the oldest task");
    assert_eq!((l.evicted(), l.evicted_closed()), (1, 1));
    assert_eq!(counters(&l), [3, 0, 0, 0]);
    assert_eq!(counters(&l), recount(&l));
    // The evicted task's deadline fires nothing.
    let fired = l.advance(HOUR);
    let of: Vec<_> = escalations(&fired).iter().map(|e| e.of).collect();
    assert_eq!(of, [id(3), id(4), id(5)]);
}

#[test]
fn unclosed_tasks_expire_after_their_last_escalation_and_closed_records_are_forgotten() {
    let mut l = lifecycle();
    l.on_task(task(1, HOUR));
    l.on_task(task(2, HOUR));
    send(
        &mut l,
        &fb(
            2,
            OFFICER,
            MIN,
            Outcome::AlreadyDefrauded {
                loss_cny: Some(5000.0),
            },
        ),
    )
    .unwrap();
    l.advance(0);
    assert_eq!(
        l.advance(HOUR + 30 * MIN).len(),
        3,
        "overdue, tier 1, tier 2"
    );
    assert_eq!(l.advance(MIN + 24 * HOUR - 1), []);
    assert_eq!(
        l.advance(MIN + 24 * HOUR),
        [Transition::Forgotten { task_id: id(2) }]
    );
    assert_eq!(l.advance(HOUR + 30 * MIN + 48 * HOUR - 1), []);
    assert_eq!(
        l.advance(HOUR + 30 * MIN + 48 * HOUR),
        [Transition::Expired {
            task_id: id(1),
            tier: 2
        }]
    );
    assert_eq!(counters(&l), [0, 0, 0, 0]);
    assert_eq!(l.states().count(), 0);
    assert_eq!(
        send(&mut l, &fb(1, OFFICER, 50 * HOUR, Outcome::Acknowledged))
            .unwrap_err()
            .kind(),
        "unknown_task"
    );
}

#[test]
fn counters_match_a_recount_after_a_random_sequence() {
    let outcomes = [
        Outcome::Acknowledged,
        Outcome::ReachedInPerson,
        Outcome::ReachedByPhone,
        Outcome::NotReached(NotReachedReason::Refused),
        Outcome::AlreadyDefrauded { loss_cny: None },
        Outcome::FalseAlarm,
    ];
    let mut rng = SmallRng::seed_from_u64(11);
    let mut l = Lifecycle::new(LifecycleSettings {
        max_tracked: 40,
        closed_retention: Duration::from_secs(3600),
        unclosed_retention: Duration::from_secs(2 * 3600),
        ..settings()
    });
    let mut changes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut now = 0;
    for step in 0..5_000 {
        let n: u8 = rng.random_range(1..=200);
        match rng.random_range(0..10) {
            0..=2 => {
                let t = if rng.random_bool(0.3) {
                    upgrade(
                        n,
                        rng.random_range(1..=80),
                        now + rng.random_range(0..2 * HOUR),
                    )
                } else {
                    task(n, now + rng.random_range(0..2 * HOUR))
                };
                seen.extend(kinds(&l.on_task(t)));
            }
            3..=7 => {
                let outcome = outcomes[rng.random_range(0..outcomes.len())];
                let actor = [OFFICER, AUX, DESK, "stranger"][rng.random_range(0..4)];
                let _ = send(
                    &mut l,
                    &fb(n, actor, now + rng.random_range(0..3) * MIN, outcome),
                );
            }
            _ => {
                now += rng.random_range(0..20) * MIN;
                seen.extend(kinds(&l.advance(now)));
            }
        }
        assert_eq!(counters(&l), recount(&l), "step {step}");
        assert!(l.states().count() <= 40);
        changes.extend(l.take_changes());
    }
    let r = restored(&changes);
    assert_eq!(counters(&r), counters(&l));
    let mut a: Vec<_> = l.states().map(|s| s.encode()).collect();
    let mut b: Vec<_> = r.states().map(|s| s.encode()).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the changelog reproduces the state");
    assert!(
        l.evicted() + l.evicted_closed() > 0,
        "the bound was exercised"
    );
}
