//! Prometheus metrics, owned by the service (no global registry).
//!
//! Hot-path counters are resolved to plain handles once at start-up (per rule, per level and
//! match kind, per dead-letter reason), so counting an event is an atomic add, never a label
//! lookup. Every label set is bounded by configuration; no label carries a phone number.

use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram as Hdr;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::grid::MatchKind;
use crate::pipeline::{Action, Outcome, Stage};
use crate::rules::{Level, RuleSet};

/// Dead-letter reasons: the [`crate::event::EventError::kind`] values plus record-level ones.
pub const DEAD_LETTER_REASONS: [&str; 5] = [
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

const QUANTILES: [(&str, f64); 3] = [("0.5", 0.5), ("0.99", 0.99), ("0.999", 0.999)];

pub struct Metrics {
    registry: Registry,
    pub events_consumed: IntCounter,
    outcome_task: IntCounter,
    outcome_suppressed: IntCounter,
    outcome_below: IntCounter,
    outcome_dead_letter: IntCounter,
    dead_letters: Vec<IntCounter>,
    /// Indexed by `level as usize * 3 + match kind`.
    tasks: Vec<IntCounter>,
    pub upgrades: IntCounter,
    rule_hits: Vec<IntCounter>,
    pub tasks_delivered: IntCounter,
    pub delivery_failures: IntCounter,
    pub commits: IntCounterVec,
    pub consumer_lag: IntGaugeVec,
    pub in_flight: IntGauge,
    pub open_tasks: IntGauge,
    pub assigned_partitions: IntGauge,
    stage_seconds: Vec<Histogram>,
    e2e_seconds: Histogram,
    e2e_quantiles: IntGaugeVec,
    e2e_hdr: Mutex<Hdr<u64>>,
}

impl Metrics {
    /// Registers every metric; `rules` and `grid_cells` fix the label sets and info gauges.
    pub fn new(rules: &RuleSet, grid_cells: usize) -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
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

        let rules_info = gauge_vec(
            "dissuade_rules_info",
            "The loaded rule set: always 1, labelled with its name and content version.",
            &["name", "version"],
        );
        rules_info
            .with_label_values(&[rules.name(), rules.version()])
            .set(1);
        gauge("dissuade_rules_loaded", "Rules in the loaded rule set.")
            .set(rules.rules().len() as i64);
        gauge("dissuade_grid_cells_loaded", "Police grid cells in the loaded map.")
            .set(grid_cells as i64);

        Metrics {
            events_consumed,
            outcome_task: outcomes.with_label_values(&["task"]),
            outcome_suppressed: outcomes.with_label_values(&["suppressed"]),
            outcome_below: outcomes.with_label_values(&["below_threshold"]),
            outcome_dead_letter: outcomes.with_label_values(&["dead_letter"]),
            dead_letters: DEAD_LETTER_REASONS
                .iter()
                .map(|r| dead.with_label_values(&[r]))
                .collect(),
            tasks: Level::ALL
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
            rule_hits: rules
                .rules()
                .iter()
                .map(|r| rule_vec.with_label_values(&[&r.id]))
                .collect(),
            tasks_delivered: counter(
                "dissuade_tasks_delivered_total",
                "Tasks acknowledged by the broker.",
            ),
            delivery_failures: counter(
                "dissuade_delivery_failures_total",
                "Tasks or dead letters the broker did not accept after retries.",
            ),
            commits: counter_vec(
                "dissuade_offset_commits_total",
                "Input offset commits, by result.",
                &["result"],
            ),
            consumer_lag: gauge_vec(
                "dissuade_consumer_lag",
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
            stage_seconds: Stage::ALL
                .iter()
                .map(|s| stage_vec.with_label_values(&[s.as_str()]))
                .collect(),
            e2e_seconds,
            e2e_quantiles: gauge_vec(
                "dissuade_end_to_end_latency_quantile_microseconds",
                "End-to-end latency quantiles from an HdrHistogram over the whole run.",
                &["quantile"],
            ),
            e2e_hdr: Mutex::new(Hdr::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")),
            registry,
        }
    }

    /// Counts one pipeline outcome (the task itself is counted again when delivered).
    pub fn record(&self, outcome: &Outcome) {
        self.events_consumed.inc();
        match outcome {
            Outcome::Rejected(e) => self.record_dead_letter(e.kind()),
            Outcome::Scored(s) => {
                for &i in &s.fired {
                    self.rule_hits[i as usize].inc();
                }
                match &s.action {
                    Action::BelowThreshold => self.outcome_below.inc(),
                    Action::Suppressed { .. } => self.outcome_suppressed.inc(),
                    Action::Task(t) => {
                        self.outcome_task.inc();
                        self.tasks[s.level as usize * MatchKind::ALL.len() + t.match_kind as usize]
                            .inc();
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
    }

    /// The end-to-end quantiles in microseconds (p50, p99, p999) and the sample count.
    pub fn end_to_end_quantiles(&self) -> ([u64; 3], u64) {
        let h = self.e2e_hdr.lock().expect("histogram lock");
        (
            QUANTILES.map(|(_, q)| h.value_at_quantile(q)),
            h.len(),
        )
    }

    /// Sum of a counter family's values, for the demo's live summary.
    pub fn tasks_by_level(&self) -> [u64; 5] {
        let per = MatchKind::ALL.len();
        let mut out = [0; 5];
        for (i, c) in self.tasks.iter().enumerate() {
            out[i / per] += c.get();
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
            if family.name() == "dissuade_consumer_lag" {
                total += family
                    .get_metric()
                    .iter()
                    .map(|m| m.get_gauge().get_value() as i64)
                    .sum::<i64>();
            }
        }
        total
    }

    /// The text exposition format, with the HdrHistogram quantiles refreshed.
    pub fn render(&self) -> String {
        let (values, _) = self.end_to_end_quantiles();
        for ((label, _), v) in QUANTILES.iter().zip(values) {
            self.e2e_quantiles.with_label_values(&[label]).set(v as i64);
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("exposition format is UTF-8")
    }
}
