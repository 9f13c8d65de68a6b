//! Shadow rules: a candidate rule set (`rules.shadow`) scored beside the live one on every
//! event the service processes. It makes nothing: it counts what it would have done
//! differently (tasks added, removed, levels up and down, per rule), in `/metrics` and in the
//! report at `/shadow` on the metrics endpoint, the same report `dissuade backtest` prints
//! for a replay ([`crate::backtest::Comparison`]).
//!
//! The candidate runs in a pipeline of its own, with its own windows and its own
//! suppression, so a task it would not make because it made one earlier is seen as such. It
//! starts empty when the service starts (no state restored) and sees only this instance's
//! partitions; caller-side windows it keeps in process, over this instance's calls. A reload
//! of the live set starts a new comparison (the report says since when).

use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::backtest::{Comparison, Report, Verdict};
use crate::config::Config;
use crate::pipeline::{LoadError, Outcome, Pipeline};
use crate::rules::RuleSet;

/// How one event fared in the shadow, against the live set (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Difference {
    Same,
    /// The shadow makes a task the live set does not.
    Added,
    Removed,
    LevelUp,
    LevelDown,
}

impl Difference {
    pub const ALL: [Difference; 5] = [
        Difference::Same,
        Difference::Added,
        Difference::Removed,
        Difference::LevelUp,
        Difference::LevelDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Difference::Same => "same",
            Difference::Added => "added",
            Difference::Removed => "removed",
            Difference::LevelUp => "level_up",
            Difference::LevelDown => "level_down",
        }
    }

    fn of(live: &Verdict, shadow: &Verdict) -> Difference {
        match (live.task, shadow.task) {
            (false, true) => Difference::Added,
            (true, false) => Difference::Removed,
            (true, true) if shadow.level > live.level => Difference::LevelUp,
            (true, true) if shadow.level < live.level => Difference::LevelDown,
            _ => Difference::Same,
        }
    }
}

/// What `/shadow` serves.
#[derive(Debug, Serialize)]
pub struct ShadowReport {
    /// Counted since (the start, or the last reload of the live set), RFC 3339.
    pub since: String,
    pub live_version: String,
    pub shadow_version: String,
    pub shadow_file: String,
    /// As `dissuade backtest --json`: index 0 is the live set, 1 the shadow.
    pub report: Report,
}

struct Running {
    comparison: Comparison,
    /// The live set it compares against: a reload starts a new comparison.
    live_generation: u64,
    live_version: String,
    since: DateTime<Utc>,
}

pub struct Shadow {
    pipeline: Pipeline,
    file: String,
    running: Mutex<Running>,
}

impl Shadow {
    /// Loads `rules.shadow` with the live configuration's grid, dispatch and scripts; `None`
    /// when none is configured.
    pub fn load(config: &Config, live: &Pipeline) -> Result<Option<Shadow>, LoadError> {
        let Some(path) = &config.rules.shadow else {
            return Ok(None);
        };
        let path = config.resolve(path);
        let (pipeline, _) = Pipeline::load_with(config, RuleSet::load(&path)?)?;
        let live_rules = live.rules();
        Ok(Some(Shadow {
            running: Mutex::new(Running {
                comparison: Comparison::new([&live_rules, &pipeline.rules()]),
                live_generation: live.live().generation,
                live_version: live_rules.version().to_owned(),
                since: Utc::now(),
            }),
            pipeline,
            file: path.display().to_string(),
        }))
    }

    pub fn version(&self) -> String {
        self.pipeline.rules().version().to_owned()
    }

    /// Scores the record the live set made `outcome` of (with `live`) and counts the
    /// difference; `None` when the live set rejected it (the shadow then has nothing to say).
    pub fn observe(
        &self,
        live: &Pipeline,
        outcome: &Outcome,
        payload: &[u8],
        partition: i32,
        now_ms: i64,
        scratch: &mut Vec<u8>,
    ) -> Option<Difference> {
        let Outcome::Scored(scored) = outcome else {
            return None;
        };
        let live_verdict = Verdict::of(outcome, 0)?;
        scratch.clear();
        let shadow_outcome = self.pipeline.process(payload, partition, now_ms, scratch);
        let shadow_verdict = Verdict::of(&shadow_outcome, 0)?;
        let difference = Difference::of(&live_verdict, &shadow_verdict);
        let mut running = self.running.lock().expect("shadow lock");
        if running.live_generation != scored.generation {
            // The live set was reloaded: compare against the new one from here on.
            let live_rules = live.rules();
            if live.live().generation != scored.generation {
                return Some(difference);
            }
            *running = Running {
                comparison: Comparison::new([&live_rules, &self.pipeline.rules()]),
                live_generation: scored.generation,
                live_version: live_rules.version().to_owned(),
                since: Utc::now(),
            };
        }
        running
            .comparison
            .add([Some(&live_verdict), Some(&shadow_verdict)], None);
        Some(difference)
    }

    pub fn report(&self) -> ShadowReport {
        let running = self.running.lock().expect("shadow lock");
        ShadowReport {
            since: running.since.to_rfc3339_opts(SecondsFormat::Secs, true),
            live_version: running.live_version.clone(),
            shadow_version: self.version(),
            shadow_file: self.file.clone(),
            report: running.comparison.report(),
        }
    }
}
