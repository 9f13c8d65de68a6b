//! The whole per-event path as one synchronous call: decode → score → dispatch → locate →
//! encode. No I/O and no locks beyond the dispatcher's sharded map, so any number of worker
//! threads can share one `Pipeline`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use thiserror::Error;

use crate::config::{Config, DispatchConfig, InputConfig, ScriptsConfig};
use crate::dispatch::{Decision, Dispatcher, OpenTask};
use crate::event::{Event, EventError, Location};
use crate::features::{FeatureSpec, Figures, KeySide, Windows, NO_FIGURES};
use crate::grid::cell_table::CellTable;
use crate::grid::{GridError, GridMap, GridMatch, GridOptions, GridWarning, MatchKind};
use crate::rules::{Fired, Level, RuleSet, RulesError, Score};
use crate::task::{
    victim_location, CellRecipients, EventKeys, GridRef, LocationSource, Reason, Recipients,
    Scripts, Task, TaskId, Victim,
};

/// What became of one input record.
// Returned once per event and matched at once: boxing the large variant would allocate per
// event to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Outcome {
    /// The record is not a valid event; it belongs in the dead-letter topic.
    Rejected(EventError),
    Scored(Scored),
}

#[derive(Debug)]
pub struct Scored {
    /// The [`Live::generation`] that scored it: `fired` indexes its rules.
    pub generation: u64,
    pub level: Level,
    pub score: i32,
    /// Indexes of the rules that fired, into [`RuleSet::rules`].
    pub fired: Fired,
    /// The figures of the rule set's features this event saw (see [`RuleSet::features`]).
    pub figures: Figures,
    pub occurred_at_ms: i64,
    /// Whether the record's key is, byte for byte, the canonical callee number (`None` when
    /// no key was given). Input is partitioned by the key's bytes, so another spelling, or
    /// a key that is not the number, can put one person on two partitions.
    pub key_matches: Option<bool>,
    pub action: Action,
}

#[derive(Debug, PartialEq)]
pub enum Action {
    /// Below the dispatch level: counted only.
    BelowThreshold,
    /// An open task for this person already covers it.
    Suppressed { open: TaskId },
    /// A task was encoded into the output buffer.
    Task(EmittedTask),
}

#[derive(Debug, PartialEq)]
pub struct EmittedTask {
    pub task_id: TaskId,
    /// Assignee id: the Kafka key of the task.
    pub key: Arc<str>,
    pub match_kind: MatchKind,
    pub upgrade_of: Option<TaskId>,
    /// The callee's key and open task now remembered, for the state changelog (`None` when
    /// the state was full and the task is not remembered).
    pub state: Option<(u64, OpenTask)>,
}

/// The stages of [`Pipeline::process`], for per-stage timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Decode,
    Score,
    Dispatch,
    Locate,
    Encode,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Decode,
        Stage::Score,
        Stage::Dispatch,
        Stage::Locate,
        Stage::Encode,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Score => "score",
            Stage::Dispatch => "dispatch",
            Stage::Locate => "locate",
            Stage::Encode => "encode",
        }
    }
}

/// Receives the end of each stage. [`NoTimer`] compiles to nothing, so untimed events pay
/// nothing for the instrumentation.
pub trait StageTimer {
    fn lap(&mut self, stage: Stage);
}

pub struct NoTimer;

impl StageTimer for NoTimer {
    #[inline(always)]
    fn lap(&mut self, _: Stage) {}
}

/// Measures the stages one event went through.
pub struct Laps {
    last: Instant,
    pub laps: [Option<Duration>; 5],
}

impl Laps {
    pub fn start() -> Laps {
        Laps {
            last: Instant::now(),
            laps: [None; 5],
        }
    }
}

impl StageTimer for Laps {
    fn lap(&mut self, stage: Stage) {
        let now = Instant::now();
        self.laps[stage as usize] = Some(now - self.last);
        self.last = now;
    }
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Rules(#[from] RulesError),
    #[error(transparent)]
    Grid(#[from] GridError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// What a reload replaces: the rule set, the grid map with its roster, the cell table, and
/// the windows of the rule set's features (the same windows while the features stay the
/// same). Each event is processed wholly by one `Live`.
pub struct Live {
    /// Counts installs from 0 (the set loaded at start): metrics tell events scored by a set
    /// just replaced from those of the new one.
    pub generation: u64,
    pub rules: Arc<RuleSet>,
    pub grid: Arc<GridMap>,
    /// Who the tasks of each cell of `grid` go to, rendered.
    pub recipients: Arc<CellRecipients>,
    pub cells: Arc<CellTable>,
    /// The state of the rule set's windowed features.
    pub windows: Arc<Windows>,
}

/// A validated replacement for the live set, not installed yet.
pub struct Candidate {
    live: Live,
    /// Whether its windows are new (the features changed) and must be filled from the input
    /// before it is installed (see [`Pipeline::offer`]).
    pub rebuild_windows: bool,
}

impl Candidate {
    /// How far back its windows look (see [`Windows::span`]).
    pub fn windows_span(&self) -> Duration {
        self.live.windows.span()
    }
}

/// Why a replacement was refused; the live set stays.
#[derive(Debug, Error)]
pub enum RefusedChange {
    #[error(
        "the change turns the caller-side windows {0}: the by-caller stages start and stop \
         only with the service; restart dissuade to apply it"
    )]
    CallerStagesChanged(&'static str),
    #[error(
        "the change edits the caller-side features, which the by-caller stage computes from \
         windows it keeps since the start; restart dissuade to apply it"
    )]
    CallerFeaturesChanged,
}

pub struct Pipeline {
    input: InputConfig,
    live: ArcSwap<Live>,
    /// A candidate whose windows the processor fills before installing it.
    pending: Mutex<Option<Candidate>>,
    /// From the offer of such a candidate to its install.
    rebuilding: AtomicBool,
    /// Held while a change from the lists topic is applied and while a new set takes over
    /// the changes, so that none lands on a set just replaced.
    list_changes: Mutex<()>,
    dispatcher: Dispatcher,
    /// Set when the by-caller stage computes the caller figures (the windows then keep none).
    caller_figures_in_records: bool,
    dispatch: DispatchConfig,
    /// Who gets the tasks of locations no cell holds.
    fallback: Recipients,
    scripts: Scripts,
    /// Candidate rules scored beside these, making nothing; a reload may replace them.
    shadow: ArcSwapOption<crate::shadow::Shadow>,
}

/// One thread's handle for its loop over records, as the processor's workers hold: it reads
/// the live set and the shadow rules through caches of its own, a plain load per record where
/// [`Pipeline::process`] and [`Pipeline::shadow`] each take and give back a borrow, two
/// locked instructions. A reload is seen from the worker's next record on; until then the
/// worker keeps the replaced set alive.
pub struct Worker<'a> {
    pipeline: &'a Pipeline,
    live: arc_swap::Cache<&'a ArcSwap<Live>, Arc<Live>>,
    shadow: arc_swap::Cache<
        &'a ArcSwapOption<crate::shadow::Shadow>,
        Option<Arc<crate::shadow::Shadow>>,
    >,
}

impl Worker<'_> {
    /// [`Pipeline::process`], through this worker's cache.
    pub fn process(
        &mut self,
        payload: &[u8],
        partition: i32,
        now_ms: i64,
        out: &mut Vec<u8>,
    ) -> Outcome {
        self.process_timed(payload, None, None, partition, now_ms, out, &mut NoTimer)
    }

    /// [`Pipeline::process`] for a record with `key` and, when the by-caller stage computed
    /// them, its caller figures; reports the end of each stage to `timer`.
    #[allow(clippy::too_many_arguments)]
    pub fn process_timed(
        &mut self,
        payload: &[u8],
        key: Option<&[u8]>,
        caller_figures: Option<&Figures>,
        partition: i32,
        now_ms: i64,
        out: &mut Vec<u8>,
        timer: &mut impl StageTimer,
    ) -> Outcome {
        let live = self.live.load();
        self.pipeline.process_with(
            live,
            payload,
            key,
            caller_figures,
            partition,
            now_ms,
            out,
            timer,
        )
    }

    /// Starts loading the window state and the open task that a record with Kafka key
    /// `key` on `partition` will read. The input is keyed by the callee's number: called
    /// with the next record's key before the current record is processed, the next
    /// record's reads from memory overlap the current one's work instead of following it.
    /// A key that is not the callee's number only fetches memory nobody reads.
    pub fn prefetch(&mut self, key: &[u8], partition: i32) {
        let callee = crate::dispatch::callee_key_of_bytes(key);
        let live = self.live.load();
        if !live.windows.is_empty() {
            live.windows.prefetch(callee, partition);
        }
        self.pipeline.dispatcher.prefetch(callee, partition);
    }

    /// The shadow rules, if any (see [`Pipeline::shadow`]).
    pub fn shadow(&mut self) -> Option<&Arc<crate::shadow::Shadow>> {
        self.shadow.load().as_ref()
    }
}

impl Pipeline {
    pub fn new(
        input: InputConfig,
        rules: RuleSet,
        grid: GridMap,
        cells: CellTable,
        dispatch: DispatchConfig,
        scripts: ScriptsConfig,
    ) -> Pipeline {
        Pipeline {
            input,
            dispatcher: Dispatcher::new(dispatch.suppression_window, dispatch.max_open),
            live: ArcSwap::from_pointee(Live {
                generation: 0,
                windows: Arc::new(Windows::new(rules.features(), rules.window_limits())),
                rules: Arc::new(rules),
                recipients: Arc::new(CellRecipients::new(&grid)),
                grid: Arc::new(grid),
                cells: Arc::new(cells),
            }),
            pending: Mutex::new(None),
            rebuilding: AtomicBool::new(false),
            list_changes: Mutex::new(()),
            caller_figures_in_records: false,
            fallback: Recipients::desk(&dispatch.fallback_desk),
            dispatch,
            scripts: Scripts::new(&scripts),
            shadow: ArcSwapOption::empty(),
        }
    }

    /// Loads the rules, the grid map and the cell table named by the config. Warnings are
    /// polygons that were repaired on load.
    pub fn load(config: &Config) -> Result<(Pipeline, Vec<GridWarning>), LoadError> {
        Self::load_with(config, RuleSet::load(&config.resolve(&config.rules.path))?)
    }

    /// [`Pipeline::load`] with `rules` in place of the config's rules file.
    pub fn load_with(
        config: &Config,
        rules: RuleSet,
    ) -> Result<(Pipeline, Vec<GridWarning>), LoadError> {
        let (rules, grid, cells, warnings) = load_parts(config, rules)?;
        let pipeline = Pipeline::new(
            config.input.clone(),
            rules,
            grid,
            cells,
            config.dispatch.clone(),
            config.scripts.clone(),
        );
        Ok((pipeline, warnings))
    }

    /// Scores `shadow`'s rules beside these from the next event on (see [`crate::shadow`]),
    /// in place of any before.
    pub fn set_shadow(&self, shadow: crate::shadow::Shadow) {
        self.shadow.store(Some(Arc::new(shadow)));
    }

    /// The shadow rules, if any (a guard: cheap to take per event).
    pub fn shadow(&self) -> arc_swap::Guard<Option<Arc<crate::shadow::Shadow>>> {
        self.shadow.load()
    }

    /// The live set (a snapshot: a reload does not change it under the caller).
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        self.live.load().rules.clone()
    }

    /// The lowest level that makes a task (`dispatch.min_level`).
    pub fn dispatch_min_level(&self) -> Level {
        self.dispatch.min_level
    }

    pub fn grid(&self) -> Arc<GridMap> {
        self.live.load().grid.clone()
    }

    pub fn cell_table(&self) -> Arc<CellTable> {
        self.live.load().cells.clone()
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// The windowed features' state.
    pub fn windows(&self) -> Arc<Windows> {
        self.live.load().windows.clone()
    }

    /// Leaves the caller-side windows to the by-caller stage (`kafka::by_caller`), whose
    /// figures then come with each record. False, and nothing changed, when no enabled rule
    /// reads a caller-side window.
    pub fn take_caller_figures_from_records(&mut self) -> bool {
        let live = self.live.load_full();
        if !live.windows.keeps_callers() {
            return false;
        }
        self.live.store(Arc::new(Live {
            generation: live.generation,
            rules: live.rules.clone(),
            grid: live.grid.clone(),
            recipients: live.recipients.clone(),
            cells: live.cells.clone(),
            windows: Arc::new(Windows::without_callers(
                live.rules.features(),
                live.rules.window_limits(),
            )),
        }));
        self.caller_figures_in_records = true;
        true
    }

    /// Checks a replacement for the live set against what cannot change while running, and
    /// gives it the live windows when its features are the same (else new, empty ones that
    /// keep the people's last tasks).
    pub fn prepare(
        &self,
        rules: RuleSet,
        grid: GridMap,
        cells: CellTable,
    ) -> Result<Candidate, RefusedChange> {
        let live = self.live.load();
        let caller_features = |r: &RuleSet| -> Vec<(usize, FeatureSpec)> {
            r.features()
                .iter()
                .enumerate()
                .filter(|(_, f)| f.used && f.key == KeySide::Caller)
                .map(|(i, f)| (i, f.clone()))
                .collect()
        };
        if self.caller_figures_in_records {
            if !rules.keeps_caller_windows() {
                return Err(RefusedChange::CallerStagesChanged("off"));
            }
            if caller_features(&rules) != caller_features(&live.rules) {
                return Err(RefusedChange::CallerFeaturesChanged);
            }
        } else if rules.keeps_caller_windows() && !live.rules.keeps_caller_windows() {
            return Err(RefusedChange::CallerStagesChanged("on"));
        }
        let same_windows = rules.features() == live.rules.features()
            && rules.window_limits() == live.rules.window_limits();
        let windows = if same_windows {
            live.windows.clone()
        } else {
            let fresh = if self.caller_figures_in_records {
                Windows::without_callers(rules.features(), rules.window_limits())
            } else {
                Windows::new(rules.features(), rules.window_limits())
            };
            fresh.adopt_last_tasks(&live.windows);
            Arc::new(fresh)
        };
        Ok(Candidate {
            rebuild_windows: !same_windows && !windows.is_empty(),
            live: Live {
                generation: live.generation + 1,
                rules: Arc::new(rules),
                recipients: Arc::new(CellRecipients::new(&grid)),
                grid: Arc::new(grid),
                cells: Arc::new(cells),
                windows,
            },
        })
    }

    /// Installs a candidate at once when its windows are the live ones (or it keeps none);
    /// otherwise leaves it for the processor, which fills its windows from the input at its
    /// next pause ([`Pipeline::take_pending`]) and installs it. Returns whether it was
    /// installed now.
    pub fn offer(&self, candidate: Candidate) -> bool {
        if candidate.rebuild_windows {
            self.rebuilding.store(true, Ordering::Release);
            *self.pending.lock().expect("pending lock") = Some(candidate);
            false
        } else {
            self.install(candidate);
            true
        }
    }

    /// The candidate waiting for its windows, if any.
    pub fn take_pending(&self) -> Option<Candidate> {
        self.pending.lock().expect("pending lock").take()
    }

    /// Takes back a candidate the processor has not taken yet; false when there is none (it
    /// may be filling its windows now).
    pub fn withdraw_pending(&self) -> bool {
        let withdrawn = self.pending.lock().expect("pending lock").take().is_some();
        if withdrawn {
            self.rebuilding.store(false, Ordering::Release);
        }
        withdrawn
    }

    /// Whether a candidate offered is waiting for, or getting, its windows.
    pub fn rebuild_pending(&self) -> bool {
        self.rebuilding.load(Ordering::Acquire)
    }

    /// Makes `candidate` the live set: events processed from now on use it. Its lists take
    /// over the changes the lists topic made to the live ones.
    pub fn install(&self, candidate: Candidate) {
        let _changes = self.list_changes.lock().expect("list changes lock");
        let live = self.live.load();
        for list in candidate.live.rules.lists() {
            if let Some(previous) = live.rules.list(&list.id) {
                list.carry_changes_from(previous);
            }
        }
        self.live.store(Arc::new(candidate.live));
        self.rebuilding.store(false, Ordering::Release);
    }

    /// Applies one record of the lists topic to the live lists (see `kafka::lists`).
    pub fn apply_list_change(&self, payload: &[u8]) -> crate::kafka::lists::Applied {
        let _changes = self.list_changes.lock().expect("list changes lock");
        crate::kafka::lists::apply(&self.live.load().rules, payload)
    }

    /// Whether each record brings its caller figures (see
    /// [`Pipeline::take_caller_figures_from_records`]).
    pub fn caller_figures_in_records(&self) -> bool {
        self.caller_figures_in_records
    }

    /// The suppression window: one open task per person within it.
    pub fn dispatch_window(&self) -> std::time::Duration {
        self.dispatch.suppression_window
    }

    /// The bounds on input records.
    pub fn input(&self) -> &InputConfig {
        &self.input
    }

    /// Runs one record through the pipeline. A task, if any, is appended to `out` as JSON.
    /// `partition` is the input partition (for per-partition state); `now_ms` stamps
    /// `created_at` and is the clock that events' own times are checked against. A loop over
    /// many records is cheaper through a [`Worker`], which also takes a record's key, caller
    /// figures and a stage timer.
    pub fn process(
        &self,
        payload: &[u8],
        partition: i32,
        now_ms: i64,
        out: &mut Vec<u8>,
    ) -> Outcome {
        let live = self.live.load();
        self.process_with(
            &live,
            payload,
            None,
            None,
            partition,
            now_ms,
            out,
            &mut NoTimer,
        )
    }

    /// A handle for one thread's loop over records (see [`Worker`]).
    pub fn worker(&self) -> Worker<'_> {
        Worker {
            pipeline: self,
            live: arc_swap::Cache::new(&self.live),
            shadow: arc_swap::Cache::new(&self.shadow),
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn process_with(
        &self,
        live: &Live,
        payload: &[u8],
        key: Option<&[u8]>,
        caller_figures: Option<&Figures>,
        partition: i32,
        now_ms: i64,
        out: &mut Vec<u8>,
        timer: &mut impl StageTimer,
    ) -> Outcome {
        let event = match self.admit(payload, now_ms) {
            Ok(e) => e,
            Err(e) => return Outcome::Rejected(e),
        };
        timer.lap(Stage::Decode);
        let (score, figures, keys) = if live.windows.is_empty() && caller_figures.is_none() {
            (live.rules.score(&event), NO_FIGURES, None)
        } else {
            let keys = EventKeys::of(&event.event_id, &event.callee_number);
            let (score, figures) =
                live.rules
                    .score_with(&event, &live.windows, keys, partition, caller_figures);
            (score, figures, Some(keys))
        };
        timer.lap(Stage::Score);
        let action = self.act(
            live, &event, keys, &score, &figures, partition, now_ms, out, timer,
        );
        Outcome::Scored(Scored {
            generation: live.generation,
            level: score.level,
            score: score.total,
            fired: score.fired,
            figures,
            occurred_at_ms: event.occurred_at_ms,
            key_matches: key.map(|k| k == event.callee_number.as_bytes()),
            action,
        })
    }

    /// Adds a record already processed before (read back from the input when a partition is
    /// assigned) to the feature windows, as processing it did, without scoring it or making
    /// anything of it. False when it is not a valid event (it was dead-lettered then).
    pub fn replay_into_windows(&self, payload: &[u8], partition: i32, now_ms: i64) -> bool {
        self.replay_into(&self.live.load(), payload, partition, now_ms)
    }

    /// [`Pipeline::replay_into_windows`] into the windows of a candidate set.
    pub fn replay_into_candidate(
        &self,
        candidate: &Candidate,
        payload: &[u8],
        partition: i32,
        now_ms: i64,
    ) -> bool {
        self.replay_into(&candidate.live, payload, partition, now_ms)
    }

    fn replay_into(&self, live: &Live, payload: &[u8], partition: i32, now_ms: i64) -> bool {
        let Ok(event) = self.admit(payload, now_ms) else {
            return false;
        };
        let keys = EventKeys::of(&event.event_id, &event.callee_number);
        live.rules.observe(&event, &live.windows, keys, partition);
        true
    }

    /// Decodes a record and checks its time: the event processing would score, or why it
    /// would dead-letter the record. Inlined, so that the event is decoded where the caller
    /// keeps it instead of copied there (168 bytes, a `memcpy` call per record).
    #[inline]
    pub fn admit<'a>(&self, payload: &'a [u8], now_ms: i64) -> Result<Event<'a>, EventError> {
        let event = Event::decode_with(payload, &self.input.limits())?;
        self.check_time(&event, now_ms)?;
        Ok(event)
    }

    /// Rejects events dated too far ahead of `now_ms` (or, when configured, too far behind):
    /// a clock or unit error must not become a task, nor move event time by years.
    fn check_time(&self, event: &Event<'_>, now_ms: i64) -> Result<(), EventError> {
        let at = event.occurred_at_ms;
        let skew = self.input.max_future_skew.as_millis() as i64;
        let describe = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms).map_or_else(
                || format!("{ms} ms since the epoch"),
                |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
        };
        if at > now_ms.saturating_add(skew) {
            return Err(EventError::OutOfRange {
                field: "occurred_at",
                reason: format!(
                    "{} is {} ahead of this service's clock; input.max_future_skew allows {}",
                    describe(at),
                    humantime::format_duration(Duration::from_secs(((at - now_ms) / 1000) as u64)),
                    humantime::format_duration(self.input.max_future_skew),
                ),
            });
        }
        if let Some(max_age) = self.input.max_event_age {
            if now_ms.saturating_sub(at) > max_age.as_millis() as i64 {
                return Err(EventError::OutOfRange {
                    field: "occurred_at",
                    reason: format!(
                        "{} is older than input.max_event_age ({})",
                        describe(at),
                        humantime::format_duration(max_age),
                    ),
                });
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn act(
        &self,
        live: &Live,
        event: &Event<'_>,
        keys: Option<EventKeys>,
        score: &Score,
        figures: &Figures,
        partition: i32,
        now_ms: i64,
        out: &mut Vec<u8>,
        timer: &mut impl StageTimer,
    ) -> Action {
        let (level, total, fired) = (score.level, score.total, &score.fired);
        if level < self.dispatch.min_level {
            return Action::BelowThreshold;
        }
        // Keys are hashed once per event: by the windows when they are kept, else here, for
        // the few events at the dispatch level.
        let EventKeys {
            callee,
            task: task_id,
        } = keys.unwrap_or_else(|| EventKeys::of(&event.event_id, &event.callee_number));
        let decided =
            self.dispatcher
                .decide(callee, level, event.occurred_at_ms, task_id, partition);
        let upgrade_of = match decided.decision {
            Decision::Suppressed { open } => return Action::Suppressed { open },
            Decision::New => None,
            Decision::Upgrade { previous } => Some(previous),
        };
        live.windows
            .task_made(callee, event.occurred_at_ms, task_id.short());
        timer.lap(Stage::Dispatch);

        let location = Self::locate_victim(live, event);
        let found = match location {
            Some((loc, _)) => live.grid.locate(loc.lon, loc.lat),
            None => GridMatch {
                cell: None,
                kind: MatchKind::Unmatched,
                distance_m: 0.0,
            },
        };
        timer.lap(Stage::Locate);
        let (grid, recipients) = self.assign(live, found);
        let task = Task {
            task_id,
            event_id: &event.event_id,
            kind: if upgrade_of.is_some() {
                "upgrade"
            } else {
                "new"
            },
            upgrade_of,
            created_at: now_ms,
            occurred_at: event.occurred_at_ms,
            deadline: event.occurred_at_ms + self.dispatch.sla.for_level(level).as_millis() as i64,
            level,
            score: total,
            reasons: fired
                .iter()
                .map(|&i| {
                    let rule = &live.rules.rules()[i as usize];
                    Reason {
                        rule_id: &rule.id,
                        reason: live.rules.reason(i, event, figures),
                        score: rule.score,
                    }
                })
                .collect(),
            victim: Victim {
                number: &event.callee_number,
                age: event.callee_age,
                location: location.map(|(l, s)| victim_location(l, s)),
            },
            grid,
            assignee: &recipients.assignee,
            also_notify: &recipients.also_notify,
            fraud_type: event.fraud_type_hint.as_deref(),
            script: self
                .scripts
                .for_fraud_type(event.fraud_type_hint.as_deref()),
            rules_version: live.rules.version(),
        };
        task.encode_into(out);
        timer.lap(Stage::Encode);
        Action::Task(EmittedTask {
            task_id,
            key: recipients.key.clone(),
            match_kind: found.kind,
            upgrade_of,
            state: decided.state.map(|s| (callee, s)),
        })
    }

    fn locate_victim(live: &Live, event: &Event<'_>) -> Option<(Location, LocationSource)> {
        if let Some(loc) = event.callee_location {
            return Some((loc, LocationSource::Event));
        }
        let cell_id = event.cell_id.as_deref()?;
        let (lon, lat) = live.cells.get(cell_id)?;
        Some((Location { lon, lat }, LocationSource::CellId))
    }

    /// The grid reference and who the task goes to, for a lookup result.
    fn assign<'a>(&'a self, live: &'a Live, found: GridMatch) -> (GridRef<'a>, &'a Recipients) {
        let Some(cell_idx) = found.cell else {
            let grid = GridRef {
                match_kind: MatchKind::Unmatched,
                grid_id: None,
                name: None,
                station_id: None,
                station_name: None,
                distance_m: None,
            };
            return (grid, &self.fallback);
        };
        let cell = live.grid.cell(cell_idx);
        let station = live.grid.station_of(cell_idx);
        let grid = GridRef {
            match_kind: found.kind,
            grid_id: Some(&cell.grid_id),
            name: Some(&cell.name),
            station_id: Some(&station.station_id),
            station_name: Some(&station.name),
            distance_m: (found.kind == MatchKind::Snapped)
                .then(|| (found.distance_m * 10.0).round() / 10.0),
        };
        (grid, live.recipients.of(&live.grid, cell_idx))
    }
}

/// Checks a rule set against the config and loads the grid map and cell table beside it:
/// everything a start or a reload needs. Warnings are polygons repaired on load.
pub fn load_parts(
    config: &Config,
    rules: RuleSet,
) -> Result<(RuleSet, GridMap, CellTable, Vec<GridWarning>), LoadError> {
    // Script keys are fraud types: only the rule set knows which exist.
    config.check_scripts(&rules.fraud_types().collect::<Vec<_>>())?;
    let (grid, warnings) = load_grid(config)?;
    let cells = match &config.grid.cell_table {
        Some(p) => CellTable::load(&config.resolve(p))?,
        None => CellTable::from_rows(Vec::<(String, f64, f64)>::new())?,
    };
    Ok((rules, grid, cells, warnings))
}

/// Loads the grid map the config names. Warnings are polygons that were repaired on load.
pub fn load_grid(config: &Config) -> Result<(GridMap, Vec<GridWarning>), GridError> {
    GridMap::load(
        &config.resolve(&config.grid.cells),
        &config.resolve(&config.grid.stations),
        &config.resolve(&config.grid.roster),
        GridOptions {
            snap_distance_m: config.grid.snap_distance_m,
            strict: config.grid.strict,
        },
    )
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::*;
    use crate::event::FIELDS;
    use crate::metrics::DEAD_LETTER_REASONS;

    fn sample() -> Pipeline {
        let config = Config::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dissuade.toml"),
        )
        .expect("sample config");
        Pipeline::load(&config).expect("sample pipeline").0
    }

    /// Any JSON value, a few levels deep, with the awkward cases near at hand.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            Just(json!(1_795_480_200_000_i64)),
            Just(json!("13812345678")),
            Just(json!("+852 5123 4567")),
            Just(json!("2026-11-24T08:30:00+08:00")),
            Just(json!({"lon": 117.2, "lat": 39.13})),
            Just(json!(["overseas", "voip"])),
            proptest::collection::vec(any::<char>(), 0..40)
                .prop_map(|c| Value::from(c.into_iter().collect::<String>())),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
            ]
        })
    }

    /// An object with some of the event's fields (each any value) and maybe others.
    fn event_like() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec((0..FIELDS.len(), value()), 0..14),
            proptest::option::of(value()),
        )
            .prop_map(|(fields, extra)| {
                let mut m: Map<String, Value> = fields
                    .into_iter()
                    .map(|(i, v)| (FIELDS[i].to_string(), v))
                    .collect();
                if let Some(v) = extra {
                    m.insert("extra".into(), v);
                }
                serde_json::to_vec(&Value::Object(m)).expect("serializes")
            })
    }

    /// A valid, risky event (it makes a task as it is) with one field replaced by any value
    /// or removed: both paths, task and dead letter, are taken.
    fn one_field_changed() -> impl Strategy<Value = Vec<u8>> {
        // A different person each time, mostly: one's open task would suppress the next.
        let person = 10_000_000..100_000_000u32;
        (0..FIELDS.len(), proptest::option::of(value()), person).prop_map(|(i, v, person)| {
            let mut event = json!({
                "event_id": "p-1", "occurred_at": 1_795_480_200_000_i64,
                "caller_number": "+85251234567", "callee_number": format!("138{person}"),
                "callee_location": {"lon": 117.196623, "lat": 39.132584},
                "cell_id": "460-00-4123-1001", "call_duration_s": 742,
                "caller_flags": ["overseas", "spoofed_official"], "callee_age": 71,
                "callee_prior_victim": false, "sms_with_link": true,
                "fraud_type_hint": "impersonate_police",
            });
            let m = event.as_object_mut().expect("object");
            match v {
                Some(v) => m.insert(FIELDS[i].to_string(), v),
                None => m.remove(FIELDS[i]),
            };
            serde_json::to_vec(&event).expect("serializes")
        })
    }

    fn check(pipeline: &Pipeline, payload: &[u8]) -> Result<(), TestCaseError> {
        let mut out = Vec::new();
        match pipeline.process(payload, 0, 1_795_480_300_000, &mut out) {
            Outcome::Rejected(e) => {
                prop_assert!(DEAD_LETTER_REASONS.contains(&e.kind()), "{}", e.kind());
                prop_assert!(out.is_empty());
            }
            Outcome::Scored(s) => match s.action {
                Action::Task(_) => {
                    let task: Value = serde_json::from_slice(&out).expect("a task is JSON");
                    prop_assert!(task["task_id"].is_string());
                }
                _ => prop_assert!(out.is_empty()),
            },
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Bytes of any kind: a dead letter with a known reason, never a panic.
        #[test]
        fn any_bytes_are_scored_or_dead_lettered_with_a_known_reason(
            payload in proptest::collection::vec(any::<u8>(), 0..512)
        ) {
            thread_local!(static PIPELINE: Pipeline = sample());
            PIPELINE.with(|p| check(p, &payload))?;
        }

        /// A valid event with one field changed: a task, a score or a dead letter, never a
        /// panic; a task is always a JSON record.
        #[test]
        fn an_event_with_one_field_changed_is_scored_or_dead_lettered(payload in one_field_changed()) {
            thread_local!(static PIPELINE: Pipeline = sample());
            PIPELINE.with(|p| check(p, &payload))?;
        }

        /// Objects with the event's fields holding values of any type: the same.
        #[test]
        fn event_shaped_objects_are_scored_or_dead_lettered_with_a_known_reason(
            payload in event_like()
        ) {
            thread_local!(static PIPELINE: Pipeline = sample());
            PIPELINE.with(|p| check(p, &payload))?;
        }
    }
}

#[cfg(test)]
mod worker {
    use super::*;

    #[test]
    fn a_worker_scores_with_a_set_installed_after_it_was_made() {
        let config = Config::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/dissuade.toml"),
        )
        .expect("sample config");
        let pipeline = Pipeline::load(&config).expect("sample pipeline").0;
        let mut worker = pipeline.worker();
        let event = |id: &str| {
            format!(
                r#"{{"event_id":"{id}","occurred_at":1795480200000,"caller_number":"13800000001","callee_number":"13900000002","call_duration_s":60}}"#
            )
        };
        let generation = |o: Outcome| match o {
            Outcome::Scored(s) => s.generation,
            Outcome::Rejected(e) => panic!("rejected: {e}"),
        };
        let now = 1_795_480_300_000;
        let mut out = Vec::new();
        assert_eq!(
            generation(worker.process(event("a").as_bytes(), 0, now, &mut out)),
            0
        );
        let rules = RuleSet::load(&config.resolve(&config.rules.path)).expect("sample rules");
        let (rules, grid, cells, _) = load_parts(&config, rules).expect("sample parts");
        let candidate = pipeline.prepare(rules, grid, cells).expect("same features");
        pipeline.install(candidate);
        assert_eq!(
            generation(worker.process(event("b").as_bytes(), 0, now, &mut out)),
            1
        );
        assert_eq!(
            generation(pipeline.process(event("c").as_bytes(), 0, now, &mut out)),
            1
        );
    }
}
