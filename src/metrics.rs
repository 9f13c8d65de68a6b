//! Prometheus metrics, owned by the service (no global registry).
//!
//! Hot-path counters are resolved to plain handles once at start-up (per rule, per level and
//! match kind, per dead-letter reason), so counting an event is an atomic add, never a label
//! lookup. Every label set is bounded by configuration; no label carries a phone number.
//! Names follow the Prometheus conventions (`_total` counters, base units, `promtool check
//! metrics` clean); the README lists every one.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram as Hdr;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::grid::MatchKind;
use crate::lifecycle::{Outcome as FeedbackOutcome, Transition};
use crate::pipeline::{Action, Outcome, Stage};
use crate::rules::{Level, RuleSet};

/// Dead-letter reasons: the [`crate::event::EventError::kind`] values plus record-level ones.
pub const DEAD_LETTER_REASONS: [&str; 6] = [
    "too_large",
    "malformed",
    "missing_field",
    "invalid_field",
    "out_of_range",
    "empty_record",
];

/// Buckets from 1 µs to 10 s: stage times are sub-millisecond, end-to-end times are not.
const LATENCY_BUCKETS: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The quantiles of the end-to-end HdrHistogram, exposed as a summary.
const QUANTILES: [f64; 3] = [0.5, 0.99, 0.999];

/// End-to-end latencies in microseconds, from 1 µs to an hour, 3 significant digits.
type SharedHdr = Arc<Mutex<Hdr<u64>>>;

/// How far back [`Metrics::recent_end_to_end_quantiles`] looks.
pub const RECENT: Duration = Duration::from_secs(10);

/// End-to-end latencies of the last [`RECENT`], one histogram per second, so that a live
/// view shows a slowdown when it starts rather than once it dominates the whole run.
struct RecentHdr {
    started: std::time::Instant,
    /// (second since `started`, its histogram), oldest first.
    slots: std::collections::VecDeque<(u64, Hdr<u64>)>,
}

impl RecentHdr {
    fn new() -> RecentHdr {
        RecentHdr {
            started: std::time::Instant::now(),
            slots: Default::default(),
        }
    }

    fn record(&mut self, micros: u64) {
        let now = self.started.elapsed().as_secs();
        if self.slots.back().is_none_or(|(s, _)| *s != now) {
            let keep = RECENT.as_secs() as usize;
            let mut h = if self.slots.len() >= keep {
                self.slots.pop_front().expect("non-empty").1
            } else {
                e2e_histogram()
            };
            h.reset();
            self.slots.push_back((now, h));
        }
        let (_, h) = self.slots.back_mut().expect("just pushed");
        h.saturating_record(micros.max(1));
    }

    fn quantiles(&self) -> ([u64; 3], u64) {
        let now = self.started.elapsed().as_secs();
        let mut all = e2e_histogram();
        for (_, h) in self
            .slots
            .iter()
            .filter(|(s, _)| s + RECENT.as_secs() > now)
        {
            all.add(h).expect("same bounds");
        }
        (QUANTILES.map(|q| all.value_at_quantile(q)), all.len())
    }
}

/// Microseconds, 1 µs to one hour, three significant figures.
fn e2e_histogram() -> Hdr<u64> {
    Hdr::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// The results a reload is counted under.
pub const RELOAD_RESULTS: [&str; 4] = ["applied", "unchanged", "invalid", "refused"];

/// Rule hit counters of a live set, by rule index, with its generation.
type GenerationHits = (u64, Vec<IntCounter>);

struct RuleHits {
    live: GenerationHits,
    previous: Option<GenerationHits>,
}

impl RuleHits {
    fn of(&self, generation: u64) -> Option<&[IntCounter]> {
        if self.live.0 == generation {
            return Some(&self.live.1);
        }
        self.previous
            .as_ref()
            .filter(|p| p.0 == generation)
            .map(|p| &p.1[..])
    }
}

fn counters_of(rule_vec: &IntCounterVec, rules: &RuleSet) -> Vec<IntCounter> {
    rules
        .rules()
        .iter()
        .map(|r| rule_vec.with_label_values(&[&r.id]))
        .collect()
}

pub struct Metrics {
    registry: Registry,
    pub events_consumed: IntCounter,
    outcome_task: IntCounter,
    outcome_suppressed: IntCounter,
    outcome_below: IntCounter,
    outcome_dead_letter: IntCounter,
    dead_letters: Vec<IntCounter>,
    /// Indexed by `(level as usize - 1) * 3 + match kind`: level `none` never makes a task.
    tasks: Vec<IntCounter>,
    pub upgrades: IntCounter,
    rule_vec: IntCounterVec,
    /// The hit counters of the live rule set and of the one before it, by index: an event
    /// scored just before a reload is still counted for the rules that scored it.
    rule_hits: ArcSwap<RuleHits>,
    rules_info: IntGaugeVec,
    rules_loaded: IntGauge,
    grid_cells: IntGauge,
    reloads: IntCounterVec,
    ready: IntGauge,
    broker_reachable: IntGauge,
    shadow_events: Vec<IntCounter>,
    shadow_info: IntGaugeVec,
    last_reload_ok: IntGauge,
    last_reload_ok_at: IntGauge,
    pub tasks_delivered: IntCounter,
    pub delivery_failures: IntCounter,
    /// Tasks opened while the suppression state was full (`dispatch.max_open`), so a repeat
    /// call for that person may get a second task.
    pub not_remembered: IntCounter,
    /// Suppression entries evicted at `dispatch.max_open` to make room for a new person.
    pub evicted: IntCounter,
    /// Records whose key is not their canonical callee number.
    pub key_mismatches: IntCounter,
    /// Outputs the broker refused as records (too large, invalid), dead-lettered instead.
    pub outputs_rejected: IntCounter,
    /// Open-task records read back from the state changelog on assignment.
    pub state_restored: IntCounter,
    pub commits: IntCounterVec,
    /// With `kafka.delivery = "exactly-once"`: transactions by how they ended.
    pub transactions: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub in_flight: IntGauge,
    pub open_tasks: IntGauge,
    pub assigned_partitions: IntGauge,
    /// Calls the windowed features did not count: late, or a redelivered event.
    pub window_late: IntCounter,
    pub window_duplicates: IntCounter,
    /// Calls dropped early from a key holding `max_calls_per_key`.
    pub window_truncated: IntCounter,
    /// Records of the lists topic, by what became of them.
    list_changes: IntCounterVec,
    /// Entries on each number list now.
    list_entries: IntGaugeVec,
    /// Records passed on by the by-caller stages, by stage and outcome.
    by_caller_records: IntCounterVec,
    /// Records not yet read by each by-caller stage, over the partitions it holds.
    by_caller_lag: IntGaugeVec,
    /// Keys and calls held in the feature windows, by side (caller, callee).
    pub window_keys: IntGaugeVec,
    pub window_calls: IntGaugeVec,
    stage_seconds: Vec<Histogram>,
    e2e_seconds: Histogram,
    e2e_hdr: SharedHdr,
    e2e_recent: Mutex<RecentHdr>,
    /// The second half of the loop: feedback, closing, escalation.
    pub lifecycle: LifecycleMetrics,
    /// The desk and officer views.
    pub web: WebMetrics,
}

/// A counter with one label, registered, every value in `values` present from the start.
fn labelled_counter(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    for v in values {
        c.with_label_values(&[v]);
    }
    c
}

fn registered_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

/// The web views' metrics: results and counts, never a token, a person or a task id.
pub struct WebMetrics {
    /// Sign-ins by result (`ok`, `refused`).
    pub sign_ins: IntCounterVec,
    /// Feedback submitted from the officer's page, by result (`written`, `invalid`,
    /// `not_found`, `closed`, `unavailable`).
    pub feedback: IntCounterVec,
    /// Pages connected to the live events now.
    pub live_views: IntGauge,
    /// Tasks on the views' read model now (open ones, and closed ones for a day).
    pub board_tasks: IntGauge,
}

impl WebMetrics {
    fn new(registry: &Registry) -> WebMetrics {
        let counter_vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            labelled_counter(registry, name, help, label, values)
        };
        let gauge = |name: &str, help: &str| registered_gauge(registry, name, help);
        WebMetrics {
            sign_ins: counter_vec(
                "dissuade_web_sign_ins_total",
                "Sign-ins to the desk and officer views, by result.",
                "result",
                &["ok", "refused"],
            ),
            feedback: counter_vec(
                "dissuade_web_feedback_total",
                "Feedback submitted from the views, by result.",
                "result",
                &["written", "invalid", "not_found", "closed", "unavailable"],
            ),
            live_views: gauge(
                "dissuade_web_live_views",
                "Pages connected to the views' live events now.",
            ),
            board_tasks: gauge(
                "dissuade_web_board_tasks",
                "Tasks on the views' read model now: open ones, and closed ones for a day.",
            ),
        }
    }
}

/// Why feedback was dead-lettered: the [`crate::lifecycle::FeedbackError::kind`] values, the
/// [`crate::lifecycle::Rejected::kind`] values, and a record with no payload.
pub const FEEDBACK_REJECTED_REASONS: [&str; 11] = [
    "too_large",
    "malformed",
    "missing_field",
    "invalid_field",
    "out_of_range",
    "unknown_outcome",
    "empty_record",
    "unknown_task",
    "wrong_key",
    "not_authorized",
    "closed",
];

/// Closing outcomes: [`FeedbackOutcome::is_closing`].
const CLOSING_OUTCOMES: [&str; 4] = [
    "reached_in_person",
    "reached_by_phone",
    "already_defrauded",
    "false_alarm",
];

/// Buckets for the time to first contact: a critical task allows 10 minutes, a low one a day.
const CONTACT_BUCKETS: [f64; 14] = [
    30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0,
    86400.0, 172800.0,
];

/// The lifecycle's metrics. Labels are outcome, reason, tier and status names: never a
/// person, a number or a task id.
pub struct LifecycleMetrics {
    /// Task and feedback records read, by input (`task`, `feedback`).
    pub records: IntCounterVec,
    feedback: IntCounterVec,
    feedback_rejected: IntCounterVec,
    closed: IntCounterVec,
    reached: IntCounter,
    escalations: IntCounterVec,
    /// Unclosed tasks, summed over this instance's partitions, by status.
    pub tasks: IntGaugeVec,
    first_contact_seconds: Histogram,
    evicted: IntCounterVec,
    expired: IntCounter,
    /// Task records the lifecycle could not read (our own output: a bug or another writer).
    pub task_records_skipped: IntCounter,
    /// Feedback waiting for its task to arrive on its partition.
    pub feedback_held: IntGauge,
    /// Lifecycle records read back from the changelog on assignment.
    pub restored: IntCounter,
    /// Task partitions assigned to this instance's lifecycle consumer.
    pub assigned_partitions: IntGauge,
}

impl LifecycleMetrics {
    fn new(registry: &Registry) -> LifecycleMetrics {
        let counter_vec = |name: &str, help: &str, label: &str, values: &[&str]| {
            labelled_counter(registry, name, help, label, values)
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| registered_gauge(registry, name, help);
        let tasks = IntGaugeVec::new(
            Opts::new(
                "dissuade_lifecycle_tasks",
                "Unclosed tasks tracked now, by status (open, acknowledged, overdue).",
            ),
            &["status"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(tasks.clone()))
            .expect("unique metric");
        for s in ["open", "acknowledged", "overdue"] {
            tasks.with_label_values(&[s]);
        }
        let first_contact_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "dissuade_time_to_first_contact_seconds",
                "From a task's creation to the first report that the person was reached.",
            )
            .buckets(CONTACT_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(first_contact_seconds.clone()))
            .expect("unique metric");
        LifecycleMetrics {
            records: counter_vec(
                "dissuade_lifecycle_records_total",
                "Task and feedback records read by the lifecycle, by input.",
                "input",
                &["task", "feedback"],
            ),
            feedback: counter_vec(
                "dissuade_feedback_total",
                "Feedback records applied to a task, by outcome.",
                "outcome",
                &FeedbackOutcome::NAMES,
            ),
            feedback_rejected: counter_vec(
                "dissuade_feedback_rejected_total",
                "Feedback records sent to the feedback dead-letter topic, by reason.",
                "reason",
                &FEEDBACK_REJECTED_REASONS,
            ),
            closed: counter_vec(
                "dissuade_tasks_closed_total",
                "Tasks closed, by closing outcome.",
                "outcome",
                &CLOSING_OUTCOMES,
            ),
            reached: counter(
                "dissuade_people_reached_total",
                "Tasks closed with the person reached (in person or by phone).",
            ),
            escalations: counter_vec(
                "dissuade_escalations_total",
                "Escalations of overdue tasks sent, by tier (1: station desk, 2: centre).",
                "tier",
                &["1", "2"],
            ),
            tasks,
            first_contact_seconds,
            evicted: counter_vec(
                "dissuade_lifecycle_evicted_total",
                "Tasks dropped at lifecycle.max_tracked, by what they were (unclosed: no \
                 longer watched, an escalation may be missed; closed: forgotten early).",
                "was",
                &["unclosed", "closed"],
            ),
            expired: counter(
                "dissuade_lifecycle_expired_total",
                "Unclosed tasks no longer watched, lifecycle.unclosed_retention after their \
                 last escalation.",
            ),
            task_records_skipped: counter(
                "dissuade_lifecycle_task_records_skipped_total",
                "Records on the task topic the lifecycle could not read, skipped.",
            ),
            feedback_held: gauge(
                "dissuade_feedback_held_records",
                "Feedback records waiting (at most lifecycle.unknown_task_grace) for their \
                 task to arrive on its partition.",
            ),
            restored: counter(
                "dissuade_lifecycle_restored_records_total",
                "Lifecycle records read back from the changelog on partition assignment.",
            ),
            assigned_partitions: gauge(
                "dissuade_lifecycle_assigned_partitions",
                "Task partitions assigned to this instance's lifecycle consumer.",
            ),
        }
    }

    /// Counts what a transition means for the figures.
    pub fn record(&self, t: &Transition) {
        match t {
            Transition::Acknowledged { .. } => {
                self.feedback.with_label_values(&["acknowledged"]).inc()
            }
            Transition::Attempted { .. } => self.feedback.with_label_values(&["not_reached"]).inc(),
            Transition::Closed {
                outcome,
                created_at_ms,
                first_contact_ms,
                ..
            } => {
                self.feedback.with_label_values(&[outcome.as_str()]).inc();
                self.closed.with_label_values(&[outcome.as_str()]).inc();
                if outcome.is_reached() {
                    self.reached.inc();
                }
                if let Some(at) = first_contact_ms {
                    let seconds = (at - created_at_ms).max(0) as f64 / 1000.0;
                    self.first_contact_seconds.observe(seconds);
                }
            }
            Transition::Escalated { escalation, .. } => {
                let tier = if escalation.tier <= 1 { "1" } else { "2" };
                self.escalations.with_label_values(&[tier]).inc();
            }
            Transition::Evicted { was, .. } => {
                let was = if was.is_some() { "unclosed" } else { "closed" };
                self.evicted.with_label_values(&[was]).inc();
            }
            Transition::Expired { .. } => self.expired.inc(),
            Transition::Opened { .. }
            | Transition::Upgraded { .. }
            | Transition::Overdue { .. }
            | Transition::Forgotten { .. } => {}
        }
    }

    /// Counts a dead-lettered feedback record; `reason` is one of
    /// [`FEEDBACK_REJECTED_REASONS`].
    pub fn record_rejected(&self, reason: &str) {
        let reason = if FEEDBACK_REJECTED_REASONS.contains(&reason) {
            reason
        } else {
            "malformed"
        };
        self.feedback_rejected.with_label_values(&[reason]).inc();
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.feedback_rejected.with_label_values(&[reason]).get()
    }

    pub fn escalations(&self, tier: u8) -> u64 {
        self.escalations
            .with_label_values(&[if tier <= 1 { "1" } else { "2" }])
            .get()
    }

    pub fn people_reached(&self) -> u64 {
        self.reached.get()
    }
}

impl Metrics {
    /// Registers every metric; `rules` and `grid_cells` fix the label sets and info gauges.
    pub fn new(rules: &RuleSet, grid_cells: usize) -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };

        let events_consumed = counter(
            "dissuade_events_consumed_total",
            "Input records consumed, valid or not.",
        );
        let outcomes = counter_vec(
            "dissuade_events_total",
            "Input records by outcome: task, suppressed, below_threshold, dead_letter.",
            &["outcome"],
        );
        let dead = counter_vec(
            "dissuade_dead_letters_total",
            "Records sent to the dead-letter topic, by reason.",
            &["reason"],
        );
        let tasks_vec = counter_vec(
            "dissuade_tasks_total",
            "Dissuasion tasks emitted (new and upgrades), by level and grid match kind.",
            &["level", "match"],
        );
        let rule_vec = counter_vec(
            "dissuade_rule_hits_total",
            "Events on which each rule fired.",
            &["rule"],
        );
        let stage_vec = HistogramVec::new(
            HistogramOpts::new(
                "dissuade_stage_duration_seconds",
                "Processing time per pipeline stage, sampled one event in 64.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(stage_vec.clone()))
            .expect("unique metric");
        let e2e_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "dissuade_end_to_end_latency_seconds",
                "From the event's occurred_at to the task acknowledged by the broker.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        registry
            .register(Box::new(e2e_seconds.clone()))
            .expect("unique metric");

        // Resident memory, CPU seconds, open file descriptors of this process.
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        gauge_vec(
            "dissuade_build_info",
            "The running build: always 1, labelled with the crate version.",
            &["version"],
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
        let list_changes = counter_vec(
            "dissuade_list_changes_total",
            "Records of the lists topic: applied to a number list, invalid (not a change or \
             not a number), or naming a list the rule set does not declare.",
            &["result"],
        );
        for result in crate::kafka::lists::Applied::ALL {
            list_changes.with_label_values(&[result.as_str()]);
        }
        let by_caller_records = counter_vec(
            "dissuade_by_caller_records_total",
            "Records passed on by the by-caller stages (only when a rule reads a caller-side \
             window): stage rekey or callers; outcome forwarded, or invalid (not an event: \
             sent on to the processor, which dead-letters it).",
            &["stage", "outcome"],
        );
        let by_caller_lag = gauge_vec(
            "dissuade_by_caller_lag_records",
            "Records not yet read by each by-caller stage over the partitions this instance \
             holds: for rekey, the input topic's lag (the processor's own lag is then that of \
             the with-caller-figures topic).",
            &["stage"],
        );
        let list_entries = gauge_vec(
            "dissuade_list_entries",
            "Entries on each number list now (its file and the changes since).",
            &["list"],
        );
        for list in rules.lists() {
            list_entries
                .with_label_values(&[&list.id])
                .set(list.len() as i64);
        }
        let window_calls = counter_vec(
            "dissuade_window_uncounted_total",
            "Calls the windowed features did not count: late (older than the key's latest \
             call by more than windows.allowed_lateness; still scored) or a redelivered event.",
            &["reason"],
        );
        let rules_info = gauge_vec(
            "dissuade_rules_info",
            "The loaded rule set: always 1, labelled with its name and content version.",
            &["name", "version"],
        );
        rules_info
            .with_label_values(&[rules.name(), rules.version()])
            .set(1);
        let rules_loaded = gauge("dissuade_rules_loaded", "Rules in the live rule set.");
        rules_loaded.set(rules.rules().len() as i64);
        let grid_cells_gauge = gauge(
            "dissuade_grid_cells_loaded",
            "Police grid cells in the live map.",
        );
        grid_cells_gauge.set(grid_cells as i64);
        let reloads = counter_vec(
            "dissuade_config_reloads_total",
            "Reloads of the rules, lists, grid map and roster (file change, SIGHUP or rules \
             topic), by result: applied, unchanged, invalid (the live set stays), refused \
             (valid, but needs a restart).",
            &["result"],
        );
        for result in RELOAD_RESULTS {
            reloads.with_label_values(&[result]);
        }
        let ready = gauge(
            "dissuade_ready",
            "1 while /readyz answers 200 (configured, broker reachable, input partitions \
             assigned, lifecycle state restored), 0 otherwise: set at each scrape.",
        );
        let broker_reachable = gauge(
            "dissuade_broker_reachable",
            "1 while librdkafka reports a broker up, 0 when every broker is down: set at each \
             scrape.",
        );
        let shadow_events_vec = counter_vec(
            "dissuade_shadow_events_total",
            "Events scored by the shadow rules (rules.shadow) beside the live ones, by what the \
             shadow would have done differently: same, added (a task the live set did not \
             make), removed, level_up, level_down. Nothing is counted without shadow rules.",
            &["change"],
        );
        let shadow_events = crate::shadow::Difference::ALL
            .iter()
            .map(|d| shadow_events_vec.with_label_values(&[d.as_str()]))
            .collect();
        let shadow_info = gauge_vec(
            "dissuade_shadow_rules_info",
            "The shadow rule set, when one runs: always 1, labelled with its version.",
            &["version"],
        );
        let last_reload_ok = gauge(
            "dissuade_config_last_reload_successful",
            "1 when the last reload was applied or found nothing changed, 0 when it was \
             invalid or refused (the service runs on the set before it).",
        );
        last_reload_ok.set(1);
        let last_reload_ok_at = gauge(
            "dissuade_config_last_reload_success_timestamp_seconds",
            "When the live set was loaded or last reloaded, in seconds since the epoch.",
        );
        last_reload_ok_at.set(chrono::Utc::now().timestamp());

        let e2e_hdr: SharedHdr = Arc::new(Mutex::new(e2e_histogram()));
        registry
            .register(Box::new(HdrSummary::new(
                "dissuade_end_to_end_latency_quantile_seconds",
                "End-to-end latency quantiles (0.5, 0.99, 0.999) from an HdrHistogram over the \
                 whole run; _sum and _count as in dissuade_end_to_end_latency_seconds.",
                e2e_hdr.clone(),
                e2e_seconds.clone(),
            )))
            .expect("unique metric");

        let commits = counter_vec(
            "dissuade_offset_commits_total",
            "Input offset commits, periodic and on revocation or shutdown, by result.",
            &["result"],
        );
        for result in ["ok", "error"] {
            commits.with_label_values(&[result]);
        }
        let transactions = counter_vec(
            "dissuade_transactions_total",
            "With exactly-once delivery: transactions (outputs and input offsets together) by \
             how they ended, committed or aborted.",
            &["result"],
        );
        for result in ["committed", "aborted"] {
            transactions.with_label_values(&[result]);
        }

        Metrics {
            not_remembered: counter(
                "dissuade_suppression_full_total",
                "Tasks opened while the suppression state was full (dispatch.max_open): \
                 a repeat call for these people may get a second task.",
            ),
            evicted: counter(
                "dissuade_open_tasks_evicted_total",
                "Oldest open-task entries evicted at dispatch.max_open to make room: a repeat \
                 call for these people may get a second task.",
            ),
            key_mismatches: counter(
                "dissuade_key_mismatch_total",
                "Input records whose key is not their canonical callee number: the producer \
                 partitions by something else, so one person's events may reach two instances.",
            ),
            outputs_rejected: counter(
                "dissuade_outputs_rejected_total",
                "Tasks or dead letters the broker refused as records (too large, invalid), \
                 sent to the dead-letter topic cut to fit instead.",
            ),
            state_restored: counter(
                "dissuade_state_restored_records_total",
                "Open-task records read back from the state changelog on partition assignment.",
            ),
            events_consumed,
            outcome_task: outcomes.with_label_values(&["task"]),
            outcome_suppressed: outcomes.with_label_values(&["suppressed"]),
            outcome_below: outcomes.with_label_values(&["below_threshold"]),
            outcome_dead_letter: outcomes.with_label_values(&["dead_letter"]),
            dead_letters: DEAD_LETTER_REASONS
                .iter()
                .map(|r| dead.with_label_values(&[r]))
                .collect(),
            tasks: Level::ALL[1..]
                .iter()
                .flat_map(|l| {
                    let tasks_vec = &tasks_vec;
                    MatchKind::ALL
                        .iter()
                        .map(move |m| tasks_vec.with_label_values(&[l.as_str(), m.as_str()]))
                })
                .collect(),
            upgrades: counter(
                "dissuade_task_upgrades_total",
                "Tasks that raised the level of a person's open task.",
            ),
            rule_hits: ArcSwap::from_pointee(RuleHits {
                live: (0, counters_of(&rule_vec, rules)),
                previous: None,
            }),
            rule_vec,
            rules_info,
            rules_loaded,
            grid_cells: grid_cells_gauge,
            reloads,
            ready,
            broker_reachable,
            shadow_events,
            shadow_info,
            last_reload_ok,
            last_reload_ok_at,
            tasks_delivered: counter(
                "dissuade_tasks_delivered_total",
                "Tasks acknowledged by the broker.",
            ),
            delivery_failures: counter(
                "dissuade_delivery_failures_total",
                "Tasks or dead letters the broker did not accept after retries.",
            ),
            commits,
            transactions,
            consumer_lag: gauge_vec(
                "dissuade_consumer_lag_records",
                "Records in the input topic not yet consumed, per assigned partition.",
                &["partition"],
            ),
            in_flight: gauge(
                "dissuade_in_flight_records",
                "Tasks and dead letters produced but not yet acknowledged by the broker.",
            ),
            open_tasks: gauge(
                "dissuade_open_tasks",
                "People with an open task (suppression entries held in memory).",
            ),
            assigned_partitions: gauge(
                "dissuade_assigned_partitions",
                "Input partitions assigned to this instance.",
            ),
            list_changes,
            by_caller_records,
            by_caller_lag,
            list_entries,
            window_late: window_calls.with_label_values(&["late"]),
            window_duplicates: window_calls.with_label_values(&["duplicate"]),
            window_truncated: counter(
                "dissuade_window_truncated_total",
                "Calls dropped from a feature window before their time because their key \
                 held windows.max_calls_per_key calls: that key's figures are capped.",
            ),
            window_keys: gauge_vec(
                "dissuade_window_keys",
                "Callers and callees with calls in the feature windows.",
                &["side"],
            ),
            window_calls: gauge_vec(
                "dissuade_window_calls",
                "Calls held in the feature windows (the longest window's), by side.",
                &["side"],
            ),
            stage_seconds: Stage::ALL
                .iter()
                .map(|s| stage_vec.with_label_values(&[s.as_str()]))
                .collect(),
            e2e_seconds,
            e2e_hdr,
            e2e_recent: Mutex::new(RecentHdr::new()),
            lifecycle: LifecycleMetrics::new(&registry),
            web: WebMetrics::new(&registry),
            registry,
        }
    }

    /// Counts one record of the lists topic.
    pub fn list_change(&self, result: crate::kafka::lists::Applied) {
        self.list_changes
            .with_label_values(&[result.as_str()])
            .inc();
    }

    /// Counts one record passed on by a by-caller stage.
    pub fn by_caller_record(&self, stage: &str, outcome: &str) {
        self.by_caller_records
            .with_label_values(&[stage, outcome])
            .inc();
    }

    /// Sets a by-caller stage's lag.
    pub fn set_by_caller_lag(&self, stage: &str, lag: i64) {
        self.by_caller_lag.with_label_values(&[stage]).set(lag);
    }

    /// Brings the list sizes up to date.
    pub fn export_lists(&self, rules: &RuleSet) {
        for list in rules.lists() {
            self.list_entries
                .with_label_values(&[&list.id])
                .set(list.len() as i64);
        }
    }

    /// Follows a new live set: its rules' hit counters, version, sizes and lists.
    pub fn live_changed(&self, live: &crate::pipeline::Live) {
        self.rules_changed(live.generation, &live.rules, live.grid.cells().len());
    }

    fn rules_changed(&self, generation: u64, rules: &RuleSet, grid_cells: usize) {
        let previous = self.rule_hits.load();
        self.rule_hits.store(Arc::new(RuleHits {
            live: (generation, counters_of(&self.rule_vec, rules)),
            previous: Some(previous.live.clone()),
        }));
        self.rules_info.reset();
        self.rules_info
            .with_label_values(&[rules.name(), rules.version()])
            .set(1);
        self.rules_loaded.set(rules.rules().len() as i64);
        self.grid_cells.set(grid_cells as i64);
        self.export_lists(rules);
    }

    /// Counts one reload; `result` is one of [`RELOAD_RESULTS`].
    pub fn reload(&self, result: &str) {
        self.reloads.with_label_values(&[result]).inc();
        let ok = matches!(result, "applied" | "unchanged");
        self.last_reload_ok.set(i64::from(ok));
        if ok {
            self.last_reload_ok_at.set(chrono::Utc::now().timestamp());
        }
    }

    /// Exports what `/readyz` says, for alerts.
    pub fn set_health(&self, health: &crate::http::Health) {
        self.ready.set(i64::from(health.not_ready().is_empty()));
        self.broker_reachable.set(i64::from(
            health
                .broker_reachable
                .load(std::sync::atomic::Ordering::Relaxed),
        ));
    }

    /// Shows which shadow rule set runs.
    pub fn shadow_started(&self, version: &str) {
        self.shadow_info.with_label_values(&[version]).set(1);
    }

    /// Shows the shadow rule set that replaced `before`.
    pub fn shadow_replaced(&self, before: Option<&str>, version: &str) {
        if let Some(before) = before.filter(|b| *b != version) {
            let _ = self.shadow_info.remove_label_values(&[before]);
        }
        self.shadow_started(version);
    }

    /// Counts one event the shadow rules scored.
    pub fn shadow_event(&self, difference: crate::shadow::Difference) {
        self.shadow_events[difference as usize].inc();
    }

    /// Reloads counted with `result`.
    pub fn reloads(&self, result: &str) -> u64 {
        self.reloads.with_label_values(&[result]).get()
    }

    /// Counts one pipeline outcome (the task itself is counted again when delivered).
    pub fn record(&self, outcome: &Outcome) {
        self.events_consumed.inc();
        match outcome {
            Outcome::Rejected(e) => self.record_dead_letter(e.kind()),
            Outcome::Scored(s) => {
                if !s.fired.is_empty() {
                    let hits = self.rule_hits.load();
                    if let Some(counters) = hits.of(s.generation) {
                        for &i in &s.fired {
                            counters[i as usize].inc();
                        }
                    }
                }
                match &s.action {
                    Action::BelowThreshold => self.outcome_below.inc(),
                    Action::Suppressed { .. } => self.outcome_suppressed.inc(),
                    Action::Task(t) => {
                        self.outcome_task.inc();
                        let level = (s.level as usize).saturating_sub(1);
                        self.tasks[level * MatchKind::ALL.len() + t.match_kind as usize].inc();
                        if t.upgrade_of.is_some() {
                            self.upgrades.inc();
                        }
                    }
                }
            }
        }
    }

    /// Counts a record sent to the dead-letter topic; `reason` is one of
    /// [`DEAD_LETTER_REASONS`].
    pub fn record_dead_letter(&self, reason: &str) {
        self.outcome_dead_letter.inc();
        let i = DEAD_LETTER_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.dead_letters[i].inc();
    }

    pub fn observe_stage(&self, stage: Stage, elapsed: Duration) {
        self.stage_seconds[stage as usize].observe(elapsed.as_secs_f64());
    }

    /// Records a task's end-to-end latency, from its event time to its acknowledgement.
    pub fn observe_end_to_end(&self, micros: u64) {
        self.e2e_seconds.observe(micros as f64 / 1e6);
        if let Ok(mut h) = self.e2e_hdr.lock() {
            h.saturating_record(micros.max(1));
        }
        if let Ok(mut r) = self.e2e_recent.lock() {
            r.record(micros);
        }
    }

    /// [`Metrics::end_to_end_quantiles`] over the last [`RECENT`] only.
    pub fn recent_end_to_end_quantiles(&self) -> ([u64; 3], u64) {
        self.e2e_recent.lock().expect("histogram lock").quantiles()
    }

    /// The end-to-end quantiles in microseconds (p50, p99, p999) and the sample count.
    pub fn end_to_end_quantiles(&self) -> ([u64; 3], u64) {
        let h = self.e2e_hdr.lock().expect("histogram lock");
        (QUANTILES.map(|q| h.value_at_quantile(q)), h.len())
    }

    /// Tasks emitted per level, indexed by `Level as usize` (`none` is always 0), for the
    /// demo's live summary.
    pub fn tasks_by_level(&self) -> [u64; 5] {
        let per = MatchKind::ALL.len();
        let mut out = [0; 5];
        for (i, c) in self.tasks.iter().enumerate() {
            out[i / per + 1] += c.get();
        }
        out
    }

    pub fn suppressed(&self) -> u64 {
        self.outcome_suppressed.get()
    }

    pub fn dead_letters(&self) -> u64 {
        self.outcome_dead_letter.get()
    }

    pub fn total_lag(&self) -> i64 {
        let mut total = 0;
        for family in self.registry.gather() {
            if family.name() == "dissuade_consumer_lag_records" {
                total += family
                    .get_metric()
                    .iter()
                    .map(|m| m.get_gauge().get_value() as i64)
                    .sum::<i64>();
            }
        }
        total
    }

    /// The text exposition format (the HdrHistogram quantiles are read at each scrape).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("exposition format is UTF-8")
    }
}

/// The end-to-end HdrHistogram as a Prometheus summary: exact quantiles over the whole run,
/// which the bucketed histogram can only approximate. `_sum` and `_count` come from that
/// histogram, which records the same observations.
struct HdrSummary {
    desc: Desc,
    hdr: SharedHdr,
    histogram: Histogram,
}

impl HdrSummary {
    fn new(name: &str, help: &str, hdr: SharedHdr, histogram: Histogram) -> HdrSummary {
        let desc =
            Desc::new(name.into(), help.into(), Vec::new(), HashMap::new()).expect("valid metric");
        HdrSummary {
            desc,
            hdr,
            histogram,
        }
    }
}

impl Collector for HdrSummary {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let values = {
            let h = self.hdr.lock().expect("histogram lock");
            // No observation yet: NaN, as client libraries report an empty summary.
            QUANTILES.map(|q| {
                if h.is_empty() {
                    f64::NAN
                } else {
                    h.value_at_quantile(q) as f64 / 1e6
                }
            })
        };
        let mut summary = proto::Summary::default();
        summary.set_sample_count(self.histogram.get_sample_count());
        summary.set_sample_sum(self.histogram.get_sample_sum());
        summary.set_quantile(
            QUANTILES
                .iter()
                .zip(values)
                .map(|(&q, v)| {
                    let mut quantile = proto::Quantile::default();
                    quantile.set_quantile(q);
                    quantile.set_value(v);
                    quantile
                })
                .collect(),
        );
        let mut metric = proto::Metric::default();
        metric.set_summary(summary);
        let mut family = MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(MetricType::SUMMARY);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOIP_RULE: &str = r#"
            [[rule]]
            id = "voip_caller"
            description = "d"
            reason = "r"
            score = 20
            when = "caller_flags has voip"
            "#;

    /// The levels, then `rules`.
    fn rule_set(rules: &str) -> RuleSet {
        let levels = "[levels]\nlow = 20\nmedium = 40\nhigh = 60\ncritical = 90\n";
        RuleSet::from_toml_str(&format!("{levels}{rules}"), "test").unwrap()
    }

    fn metrics() -> Metrics {
        Metrics::new(&rule_set(VOIP_RULE), 7)
    }

    /// Rule indexes mean the rules of the set that scored the event: one scored just before
    /// a reload is counted for the rule it fired, not for the rule now at that index.
    #[test]
    fn rule_hits_follow_the_set_that_scored_the_event_across_a_reload() {
        let m = metrics();
        let reloaded = rule_set(&format!(
            r#"
            [[rule]]
            id = "added_first"
            description = "d"
            reason = "r"
            score = 20
            when = "callee_age >= 70"
            {VOIP_RULE}"#
        ));
        m.rules_changed(1, &reloaded, 7);
        let scored = |generation: u64| {
            Outcome::Scored(crate::pipeline::Scored {
                generation,
                level: Level::Low,
                score: 20,
                fired: [0].into_iter().collect(),
                figures: crate::features::NO_FIGURES,
                occurred_at_ms: 0,
                key_matches: None,
                action: Action::BelowThreshold,
            })
        };
        m.record(&scored(0));
        m.record(&scored(1));
        m.record(&scored(1));
        // Two reloads ago: its rules are not known any more, so it is not counted.
        m.rules_changed(2, &reloaded, 7);
        m.record(&scored(0));
        let text = m.render();
        for line in [
            "dissuade_rule_hits_total{rule=\"voip_caller\"} 1\n",
            "dissuade_rule_hits_total{rule=\"added_first\"} 2\n",
            "dissuade_rules_loaded 2\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(text.matches("dissuade_rules_info{").count(), 1, "{text}");
    }

    #[test]
    fn end_to_end_quantiles_are_a_summary_in_seconds() {
        let m = metrics();
        let text = m.render();
        assert!(text.contains("# TYPE dissuade_end_to_end_latency_quantile_seconds summary\n"));
        assert!(
            text.contains("dissuade_end_to_end_latency_quantile_seconds{quantile=\"0.99\"} NaN\n")
        );
        assert!(text.contains("dissuade_end_to_end_latency_quantile_seconds_count 0\n"));

        m.observe_end_to_end(1500);
        m.observe_end_to_end(1500);
        let text = m.render();
        for q in ["0.5", "0.99", "0.999"] {
            let line = format!(
                "dissuade_end_to_end_latency_quantile_seconds{{quantile=\"{q}\"}} 0.0015\n"
            );
            assert!(text.contains(&line), "{line} in\n{text}");
        }
        assert!(text.contains("dissuade_end_to_end_latency_quantile_seconds_sum 0.003\n"));
        assert!(text.contains("dissuade_end_to_end_latency_quantile_seconds_count 2\n"));
        assert!(text.contains("dissuade_end_to_end_latency_seconds_count 2\n"));
        assert_eq!(m.end_to_end_quantiles(), ([1500, 1500, 1500], 2));
    }

    #[test]
    fn recent_quantiles_forget_what_is_older_than_the_window() {
        let mut r = RecentHdr::new();
        for _ in 0..100 {
            r.record(900_000);
        }
        assert_eq!(r.quantiles().1, 100);
        // The clock moves on: those samples are now 20 s old.
        r.started = r.started.checked_sub(Duration::from_secs(20)).unwrap();
        assert_eq!(r.quantiles(), ([0, 0, 0], 0));
        r.record(2_000);
        let ([_, p99, _], n) = r.quantiles();
        assert_eq!(n, 1);
        assert!((1_990..=2_010).contains(&p99), "{p99}");
    }

    #[test]
    fn known_label_sets_are_exposed_at_zero_from_the_start() {
        let text = metrics().render();
        for line in [
            "dissuade_offset_commits_total{result=\"ok\"} 0\n",
            "dissuade_offset_commits_total{result=\"error\"} 0\n",
            "dissuade_dead_letters_total{reason=\"empty_record\"} 0\n",
            "dissuade_tasks_total{level=\"critical\",match=\"unmatched\"} 0\n",
            "dissuade_rule_hits_total{rule=\"voip_caller\"} 0\n",
            "dissuade_events_total{outcome=\"suppressed\"} 0\n",
            "dissuade_grid_cells_loaded 7\n",
            "dissuade_rules_loaded 1\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(text.contains(&format!(
            "dissuade_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(!text.contains("microseconds"));
        assert!(!text.contains("level=\"none\""), "no task has level none");
    }

    #[test]
    fn lifecycle_figures_have_bounded_labels_from_the_start() {
        let text = metrics().render();
        for line in [
            "dissuade_feedback_total{outcome=\"reached_by_phone\"} 0\n",
            "dissuade_feedback_rejected_total{reason=\"unknown_task\"} 0\n",
            "dissuade_tasks_closed_total{outcome=\"false_alarm\"} 0\n",
            "dissuade_people_reached_total 0\n",
            "dissuade_escalations_total{tier=\"2\"} 0\n",
            "dissuade_lifecycle_tasks{status=\"overdue\"} 0\n",
            "dissuade_time_to_first_contact_seconds_count 0\n",
            "dissuade_lifecycle_evicted_total{was=\"unclosed\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn a_reached_close_counts_the_person_and_the_time_to_first_contact() {
        let m = metrics();
        m.lifecycle.record(&Transition::Closed {
            task_id: crate::task::TaskId([1; 16]),
            outcome: FeedbackOutcome::ReachedByPhone,
            by: "TJ-1".into(),
            at_ms: 100_000,
            key: "TJ-1".into(),
            level: Level::High,
            created_at_ms: 10_000,
            deadline_ms: 1_000_000,
            acknowledged_at_ms: None,
            first_contact_ms: Some(100_000),
            attempts: 0,
            tier: 0,
        });
        let text = m.render();
        assert!(text.contains("dissuade_people_reached_total 1\n"), "{text}");
        assert!(text.contains("dissuade_tasks_closed_total{outcome=\"reached_by_phone\"} 1\n"));
        assert!(
            text.contains("dissuade_time_to_first_contact_seconds_sum 90\n"),
            "{text}"
        );
    }

    #[test]
    fn total_lag_sums_the_partitions() {
        let m = metrics();
        m.consumer_lag.with_label_values(&["0"]).set(5);
        m.consumer_lag.with_label_values(&["3"]).set(7);
        assert_eq!(m.total_lag(), 12);
        assert!(m
            .render()
            .contains("dissuade_consumer_lag_records{partition=\"3\"} 7\n"));
    }
}
