//! What each simulated officer does with a task: a pure function of a seeded RNG and the
//! task, so the mix and the timing are unit-tested without a broker.
//!
//! The mix follows the figure the centre reports (Tianjin: about 65 % of the people pushed
//! were reached): most tasks are acknowledged and then reached before the deadline, some
//! need a second attempt, some turn out false alarms or come too late, some close after the
//! deadline, and about one in eight is never answered, so it goes overdue and escalates. At
//! the desks an escalation is sometimes taken in hand and closed before the next tier.
//!
//! Times scale with the task's own SLA (deadline minus creation), so a demo with shortened
//! SLAs keeps the same shape. Every plan keys its feedback by the task's assignee id, as the
//! feedback contract requires (docs/lifecycle.md), whoever reports.

use std::time::Duration;

use rand::Rng;
use serde::Serialize;

use crate::lifecycle::{NotReachedReason, Outcome};
use crate::task::TaskId;

/// A task as the officers see it on the task topic (new or upgrade); never the victim.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    pub task_id: TaskId,
    pub upgrade_of: Option<TaskId>,
    pub created_at_ms: i64,
    pub deadline_ms: i64,
    /// The assignee id: the task's key and the key of all its feedback.
    pub assignee: String,
    /// The copied roster members (auxiliary officer, grid workers).
    pub also_notify: Vec<String>,
}

/// An escalation as the desk sees it on the task topic.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalationView {
    /// The escalation's own id: the desk reports on the task it received.
    pub task_id: TaskId,
    pub escalation_of: TaskId,
    pub tier: u8,
    /// The desk it went to: the actor of the desk's feedback.
    pub desk: String,
    /// The escalated task's assignee id: the key the desk's feedback must carry.
    pub original_assignee: String,
}

/// One feedback record to write at `at_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at_ms: i64,
    pub actor: String,
    pub outcome: Outcome,
    pub note: Option<&'static str>,
}

/// Everything one actor will report on one task, in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub task_id: TaskId,
    /// The Kafka key of every record: the task's assignee id.
    pub key: String,
    pub steps: Vec<Step>,
}

impl Plan {
    /// Whether the plan ends the task: then nobody else may report on it afterwards, or the
    /// lifecycle dead-letters that report as `closed`.
    pub fn closes(&self) -> bool {
        self.steps.iter().any(|s| s.outcome.is_closing())
    }
}

/// Shares of tasks per course of events, in per mille. The reached ones (direct, second
/// attempt, late) add up to about two thirds.
const DIRECT_REACHED: u32 = 550;
const RETRY: u32 = 140; // half of them reached on the retry
const LATE_REACHED: u32 = 40;
const FALSE_ALARM: u32 = 90;
const DEFRAUDED: u32 = 30;
const ACK_ONLY: u32 = 30;
// The rest (120) is never answered.

/// How often a copied roster member, not the assignee, reports the outcome.
const COPIED_REPORTS: f64 = 0.25;

const REACHED_NOTES: [&str; 3] = [
    "已电话劝阻，未转账",
    "已上门劝阻，当事人已知晓",
    "已提醒家属",
];

/// What the assignee (or a copied officer) of `task` reports, and when.
pub fn officer_plan(rng: &mut impl Rng, task: &TaskView) -> Plan {
    // A deadline already past at creation (an old event) still gets a plausible story.
    let sla = (task.deadline_ms - task.created_at_ms).max(1_000) as f64;
    let at = |frac: f64| task.created_at_ms + (sla * frac) as i64;
    let assignee = task.assignee.as_str();
    let mut steps = Vec::new();
    let mut push = |at_ms: i64, actor: &str, outcome: Outcome, note: Option<&'static str>| {
        steps.push(Step {
            at_ms,
            actor: actor.to_owned(),
            outcome,
            note,
        })
    };
    let roll = rng.random_range(0..1000u32);
    let ack = at(rng.random_range(0.03..0.15));
    let mut thresholds = [
        DIRECT_REACHED,
        RETRY,
        LATE_REACHED,
        FALSE_ALARM,
        DEFRAUDED,
        ACK_ONLY,
    ]
    .into_iter()
    .scan(0, |sum, share| {
        *sum += share;
        Some(*sum)
    });
    let course = thresholds.position(|t| roll < t).unwrap_or(usize::MAX);
    match course {
        0 => {
            push(ack, assignee, Outcome::Acknowledged, None);
            let actor = reporter(rng, task);
            push(
                at(rng.random_range(0.25..0.85)),
                &actor,
                reached(rng),
                note(rng),
            );
        }
        1 => {
            push(ack, assignee, Outcome::Acknowledged, None);
            let reason = not_reached_reason(rng);
            push(
                at(rng.random_range(0.2..0.5)),
                assignee,
                Outcome::NotReached(reason),
                None,
            );
            let retry = at(rng.random_range(0.55..0.9));
            let actor = reporter(rng, task);
            if rng.random_bool(0.5) {
                push(retry, &actor, reached(rng), note(rng));
            } else {
                // A second failure: nobody closes it, so it goes overdue, acknowledged.
                push(
                    retry,
                    &actor,
                    Outcome::NotReached(not_reached_reason(rng)),
                    None,
                );
            }
        }
        2 => {
            push(ack, assignee, Outcome::Acknowledged, None);
            let actor = reporter(rng, task);
            push(
                at(rng.random_range(1.05..1.4)),
                &actor,
                reached(rng),
                note(rng),
            );
        }
        3 => {
            push(ack, assignee, Outcome::Acknowledged, None);
            push(
                at(rng.random_range(0.2..0.8)),
                assignee,
                Outcome::FalseAlarm,
                Some("核实为正常通话"),
            );
        }
        4 => {
            push(ack, assignee, Outcome::Acknowledged, None);
            // Log-uniform from 1,000 to 500,000 yuan: most losses are small, a few ruinous.
            let loss = (1_000f64.ln() + rng.random::<f64>() * (500f64).ln())
                .exp()
                .round();
            push(
                at(rng.random_range(0.3..0.9)),
                assignee,
                Outcome::AlreadyDefrauded {
                    loss_cny: Some(loss),
                },
                Some("当事人已转账，已引导报案"),
            );
        }
        5 => push(ack, assignee, Outcome::Acknowledged, None),
        _ => {}
    }
    Plan {
        task_id: task.task_id,
        key: task.assignee.clone(),
        steps,
    }
}

/// What the desk an escalation went to does: at tier 1 the station desk takes about half in
/// hand and closes most of those before the tier-2 interval (`second_after`) runs out; at
/// tier 2 the centre's desk closes about half. `seen_ms` is when the desk received it.
pub fn desk_plan(
    rng: &mut impl Rng,
    esc: &EscalationView,
    seen_ms: i64,
    second_after: Duration,
) -> Plan {
    let window = second_after.as_millis().max(1_000) as f64;
    let at = |frac: f64| seen_ms + (window * frac) as i64;
    let (take, close) = if esc.tier <= 1 {
        (0.55, 0.8)
    } else {
        (0.5, 1.0)
    };
    let mut steps = Vec::new();
    if rng.random_bool(take) {
        steps.push(Step {
            at_ms: at(rng.random_range(0.05..0.2)),
            actor: esc.desk.clone(),
            outcome: Outcome::Acknowledged,
            note: None,
        });
        if rng.random_bool(close) {
            // Well before the next tier, so that a lagging lifecycle still sees the close first.
            steps.push(Step {
                at_ms: at(rng.random_range(0.25..0.6)),
                actor: esc.desk.clone(),
                outcome: Outcome::ReachedByPhone,
                note: Some("值班室电话劝阻"),
            });
        }
    }
    Plan {
        task_id: esc.task_id,
        key: esc.original_assignee.clone(),
        steps,
    }
}

fn reached(rng: &mut impl Rng) -> Outcome {
    if rng.random_bool(0.4) {
        Outcome::ReachedInPerson
    } else {
        Outcome::ReachedByPhone
    }
}

fn note(rng: &mut impl Rng) -> Option<&'static str> {
    rng.random_bool(0.3)
        .then(|| REACHED_NOTES[rng.random_range(0..REACHED_NOTES.len())])
}

fn reporter(rng: &mut impl Rng, task: &TaskView) -> String {
    if !task.also_notify.is_empty() && rng.random_bool(COPIED_REPORTS) {
        task.also_notify[rng.random_range(0..task.also_notify.len())].clone()
    } else {
        task.assignee.clone()
    }
}

fn not_reached_reason(rng: &mut impl Rng) -> NotReachedReason {
    // No answer is by far the commonest; the others are rare.
    match rng.random_range(0..10u8) {
        0..=5 => NotReachedReason::NoAnswer,
        6 => NotReachedReason::WrongAddress,
        7 => NotReachedReason::Refused,
        8 => NotReachedReason::Moved,
        _ => NotReachedReason::Other,
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    task_id: TaskId,
    actor_id: &'a str,
    at: String,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss_cny: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
}

impl Step {
    /// The feedback record for this step on `task_id`, reported at `at_ms` (the time it is
    /// actually written: a late step says so).
    pub fn encode(&self, task_id: TaskId, at_ms: i64) -> Vec<u8> {
        let at = chrono::DateTime::from_timestamp_millis(at_ms)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let loss_cny = match self.outcome {
            Outcome::AlreadyDefrauded { loss_cny } => loss_cny,
            _ => None,
        };
        serde_json::to_vec(&Wire {
            task_id,
            actor_id: &self.actor,
            at,
            outcome: self.outcome.as_str(),
            reason: self.outcome.reason().map(NotReachedReason::as_str),
            loss_cny,
            note: self.note,
        })
        .expect("feedback always serializes")
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    use super::*;
    use crate::lifecycle::Feedback;

    const MINUTE: i64 = 60_000;

    fn task(i: u64, sla_ms: i64) -> TaskView {
        let created = 1_795_480_200_000 + i as i64 * 7;
        TaskView {
            task_id: TaskId::for_event(&format!("ev-{i}"), "13912345678"),
            upgrade_of: None,
            created_at_ms: created,
            deadline_ms: created + sla_ms,
            assignee: "po-120101-01".into(),
            also_notify: vec!["aux-120101-01".into(), "gw-120101-01-1".into()],
        }
    }

    fn plans(n: u64, sla_ms: i64) -> Vec<(TaskView, Plan)> {
        let mut rng = SmallRng::seed_from_u64(2026);
        (0..n)
            .map(|i| {
                let t = task(i, sla_ms);
                let p = officer_plan(&mut rng, &t);
                (t, p)
            })
            .collect()
    }

    fn share(plans: &[(TaskView, Plan)], f: impl Fn(&Plan) -> bool) -> f64 {
        plans.iter().filter(|(_, p)| f(p)).count() as f64 / plans.len() as f64
    }

    fn has(p: &Plan, f: impl Fn(&Outcome) -> bool) -> bool {
        p.steps.iter().any(|s| f(&s.outcome))
    }

    #[test]
    fn about_two_thirds_are_reached_and_the_rest_is_a_realistic_mix() {
        let plans = plans(20_000, 10 * MINUTE);
        let reached = share(&plans, |p| has(p, Outcome::is_reached));
        assert!((reached - 0.66).abs() < 0.02, "reached {reached}");
        let never = share(&plans, |p| p.steps.is_empty());
        assert!((never - 0.12).abs() < 0.015, "never answered {never}");
        let false_alarm = share(&plans, |p| has(p, |o| *o == Outcome::FalseAlarm));
        assert!(
            (false_alarm - 0.09).abs() < 0.015,
            "false alarms {false_alarm}"
        );
        let defrauded = share(&plans, |p| {
            has(
                p,
                |o| matches!(o, Outcome::AlreadyDefrauded { loss_cny: Some(l) } if *l >= 1_000.0 && *l <= 500_000.0),
            )
        });
        assert!((defrauded - 0.03).abs() < 0.01, "defrauded {defrauded}");
        let attempted = share(&plans, |p| has(p, |o| matches!(o, Outcome::NotReached(_))));
        assert!(
            (attempted - 0.14).abs() < 0.015,
            "not reached first {attempted}"
        );
        // Not closed by anyone: these go overdue and escalate.
        let unclosed = share(&plans, |p| !p.closes());
        assert!((unclosed - 0.22).abs() < 0.02, "unclosed {unclosed}");
        let by_copied = share(&plans, |p| {
            p.steps.iter().any(|s| s.actor != "po-120101-01")
        });
        assert!(by_copied > 0.1 && by_copied < 0.25, "by copied {by_copied}");
        for reason in NotReachedReason::ALL {
            assert!(
                plans
                    .iter()
                    .any(|(_, p)| has(p, |o| *o == Outcome::NotReached(reason))),
                "{reason:?} never reported"
            );
        }
    }

    #[test]
    fn every_plan_is_keyed_by_the_assignee_acknowledges_first_and_keeps_time_order() {
        for (t, p) in plans(5_000, 10 * MINUTE) {
            assert_eq!(p.key, t.assignee);
            assert_eq!(p.task_id, t.task_id);
            if let Some(first) = p.steps.first() {
                assert_eq!(first.outcome, Outcome::Acknowledged);
                assert_eq!(first.actor, t.assignee);
            }
            assert!(p.steps.windows(2).all(|w| w[0].at_ms < w[1].at_ms), "{p:?}");
            // Nothing after the close: the lifecycle would dead-letter it as `closed`.
            let closes = p.steps.iter().filter(|s| s.outcome.is_closing()).count();
            assert!(closes <= 1);
            if closes == 1 {
                assert!(p.steps.last().unwrap().outcome.is_closing());
            }
            for s in &p.steps {
                assert!(
                    s.actor == t.assignee || t.also_notify.contains(&s.actor),
                    "{} may not report",
                    s.actor
                );
            }
        }
    }

    #[test]
    fn delays_scale_with_the_sla_most_closes_land_before_the_deadline() {
        for sla in [12_000, 10 * MINUTE, 4 * 60 * MINUTE] {
            let plans = plans(5_000, sla);
            let mut closes = 0;
            let mut in_time = 0;
            for (t, p) in &plans {
                let first = p.steps.first().map(|s| s.at_ms);
                if let Some(ack) = first {
                    assert!(ack >= t.created_at_ms + sla * 3 / 100 - 1);
                    assert!(ack <= t.created_at_ms + sla * 15 / 100, "ack too late");
                }
                for s in &p.steps {
                    assert!(s.at_ms > t.created_at_ms);
                    assert!(s.at_ms <= t.created_at_ms + sla * 14 / 10, "{s:?}");
                    // Reports that do not close come before the deadline, so a desk's close
                    // after the escalation never overtakes them.
                    if !s.outcome.is_closing() {
                        assert!(s.at_ms < t.deadline_ms, "{s:?}");
                    }
                }
                if let Some(close) = p.steps.iter().find(|s| s.outcome.is_closing()) {
                    closes += 1;
                    in_time += usize::from(close.at_ms < t.deadline_ms);
                }
            }
            let late = 1.0 - in_time as f64 / closes as f64;
            assert!(
                late > 0.02 && late < 0.08,
                "sla {sla}: {late} of closes late"
            );
        }
    }

    #[test]
    fn the_same_seed_and_task_give_the_same_plan() {
        let t = task(7, 10 * MINUTE);
        let a = officer_plan(&mut SmallRng::seed_from_u64(9), &t);
        let b = officer_plan(&mut SmallRng::seed_from_u64(9), &t);
        assert_eq!(a, b);
    }

    fn escalation(tier: u8) -> EscalationView {
        EscalationView {
            task_id: crate::lifecycle::Escalation::id_for(task(1, MINUTE).task_id, tier),
            escalation_of: task(1, MINUTE).task_id,
            tier,
            desk: if tier == 1 {
                "desk-120101".into()
            } else {
                "anti-fraud-centre-duty-desk".into()
            },
            original_assignee: "po-120101-01".into(),
        }
    }

    #[test]
    fn desks_report_on_the_escalation_keyed_by_the_original_assignee_before_the_next_tier() {
        let second = Duration::from_secs(72);
        let seen = 1_795_480_200_000;
        let mut rng = SmallRng::seed_from_u64(1);
        for tier in [1, 2] {
            let esc = escalation(tier);
            let plans: Vec<Plan> = (0..4_000)
                .map(|_| desk_plan(&mut rng, &esc, seen, second))
                .collect();
            for p in &plans {
                assert_eq!(p.key, "po-120101-01");
                assert_eq!(p.task_id, esc.task_id);
                assert!(p.steps.iter().all(|s| s.actor == esc.desk));
                assert!(p.steps.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
                for s in &p.steps {
                    assert!(s.at_ms > seen && s.at_ms <= seen + 72_000 * 6 / 10, "{s:?}");
                }
            }
            let closed = plans.iter().filter(|p| p.closes()).count() as f64 / 4_000.0;
            let expected = if tier == 1 { 0.44 } else { 0.5 };
            assert!(
                (closed - expected).abs() < 0.03,
                "tier {tier}: {closed} closed"
            );
            let taken = plans.iter().filter(|p| !p.steps.is_empty()).count() as f64 / 4_000.0;
            // Station desks sometimes only acknowledge; the centre closes what it takes.
            if tier == 1 {
                assert!(taken > closed + 0.05, "tier 1: {taken} taken");
            } else {
                assert_eq!(taken, closed);
            }
        }
    }

    #[test]
    fn every_step_is_valid_feedback_under_the_contract() {
        for (t, p) in plans(2_000, 10 * MINUTE) {
            for s in &p.steps {
                let bytes = s.encode(p.task_id, s.at_ms);
                let fb = Feedback::decode(&bytes).unwrap_or_else(|e| {
                    panic!("{e}: {}", String::from_utf8_lossy(&bytes));
                });
                assert_eq!(fb.task_id, t.task_id);
                assert_eq!(fb.actor_id, s.actor);
                assert_eq!(fb.at_ms, s.at_ms);
                assert_eq!(fb.outcome, s.outcome);
                assert_eq!(fb.note.as_deref(), s.note);
            }
        }
    }
}
