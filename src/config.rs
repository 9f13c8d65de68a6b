//! Service configuration: plain serde structs with defaults, layered as defaults → file →
//! environment (`DISSUADE__SECTION__KEY=value`), validated in one place that reports every
//! problem at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::rules::Level;

/// Where the default configuration lives, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/dissuade.toml";

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{path}: invalid configuration:\n  - {}", problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub rules: RulesConfig,
    pub grid: GridConfig,
    #[serde(default)]
    pub input: InputConfig,
    #[serde(default)]
    pub dispatch: DispatchConfig,
    #[serde(default)]
    pub scripts: ScriptsConfig,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    #[serde(default)]
    pub lifecycle: LifecycleConfig,
    #[serde(default)]
    pub web: WebConfig,
    /// Directory of the config file: relative paths inside it resolve against this.
    #[serde(skip)]
    pub base_dir: PathBuf,
    /// Where the values came from, so that problems found after loading (script keys
    /// checked against the rules) blame the file or the environment variable.
    #[serde(skip)]
    pub source: Source,
}

/// The file a [`Config`] was loaded from and the keys the environment overrode.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub path: PathBuf,
    overrides: Vec<Override>,
}

/// One `DISSUADE__…` variable: the key path it set (lower case) and its name. The value is
/// not kept: it may be a secret, and no message may show it.
#[derive(Debug, Clone)]
struct Override {
    key: Vec<String>,
    var: String,
}

impl Source {
    /// The variable that set `key` (dotted) or a table above it; the last one wins, as it
    /// was applied last.
    fn var_for(&self, key: &str) -> Option<&str> {
        let key: Vec<&str> = key.split('.').collect();
        self.overrides
            .iter()
            .rev()
            .find(|o| o.key.len() <= key.len() && o.key.iter().zip(&key).all(|(a, b)| a == b))
            .map(|o| o.var.as_str())
    }

    /// Blames a `key: message` problem on the environment variable that set the key, if one
    /// did: `environment variable DISSUADE__… (key): message`.
    fn attribute(&self, problem: String) -> String {
        let Some((key, message)) = problem.split_once(": ") else {
            return problem;
        };
        match self.var_for(key) {
            Some(var) => format!("environment variable {var} ({key}): {message}"),
            None => problem,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    pub path: PathBuf,
    /// How often the rules file, its list files, the grid map, stations, roster and cell
    /// table are checked for changes; a change reloads them all (as SIGHUP does). Zero: only
    /// SIGHUP (and the rules topic) reload.
    #[serde(default = "default_watch_interval", with = "humantime_serde")]
    pub watch_interval: Duration,
    /// A candidate rule file scored beside the live rules on every event, making nothing:
    /// what it would do differently is counted (`crate::shadow`).
    #[serde(default)]
    pub shadow: Option<PathBuf>,
}

fn default_watch_interval() -> Duration {
    Duration::from_secs(2)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridConfig {
    pub cells: PathBuf,
    pub stations: PathBuf,
    pub roster: PathBuf,
    /// Base-station cell id → location, used when an event has `cell_id` but no coordinates.
    pub cell_table: Option<PathBuf>,
    #[serde(default = "default_snap_distance_m")]
    pub snap_distance_m: f64,
    /// Reject invalid polygons instead of repairing them.
    #[serde(default)]
    pub strict: bool,
}

fn default_snap_distance_m() -> f64 {
    500.0
}

/// Bounds on input records and on the clocks that stamp them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Largest record accepted; larger ones are dead-lettered, cut to this size.
    pub max_record_bytes: usize,
    /// Longest string field (ids, numbers, cell id, fraud type) accepted.
    pub max_field_bytes: usize,
    /// How far ahead of this service's clock an event may be dated. Later events are
    /// dead-lettered: one wrongly dated record must not move event time by years.
    #[serde(with = "humantime_serde")]
    pub max_future_skew: Duration,
    /// Events older than this are dead-lettered; unset keeps backlogs of any age (replays).
    #[serde(with = "humantime_serde")]
    pub max_event_age: Option<Duration>,
}

impl Default for InputConfig {
    fn default() -> Self {
        let limits = crate::event::Limits::default();
        InputConfig {
            max_record_bytes: limits.max_record_bytes,
            max_field_bytes: limits.max_field_bytes,
            max_future_skew: Duration::from_secs(5 * 60),
            max_event_age: None,
        }
    }
}

impl InputConfig {
    pub fn limits(&self) -> crate::event::Limits {
        crate::event::Limits {
            max_record_bytes: self.max_record_bytes,
            max_field_bytes: self.max_field_bytes,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// The lowest level that becomes a task; lower levels are only counted.
    pub min_level: Level,
    /// A further event for the same callee within this window creates no new task unless
    /// its level is higher.
    #[serde(with = "humantime_serde")]
    pub suppression_window: Duration,
    /// Upper bound on remembered open tasks (one entry per person at risk).
    pub max_open: usize,
    /// Who receives tasks that match no grid cell.
    pub fallback_desk: String,
    /// Time allowed to reach the person, counted from the call, per level.
    pub sla: SlaConfig,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            min_level: Level::Medium,
            suppression_window: Duration::from_secs(30 * 60),
            max_open: 2_000_000,
            fallback_desk: "anti-fraud-centre-duty-desk".into(),
            sla: SlaConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaConfig {
    #[serde(with = "humantime_serde")]
    pub low: Duration,
    #[serde(with = "humantime_serde")]
    pub medium: Duration,
    #[serde(with = "humantime_serde")]
    pub high: Duration,
    #[serde(with = "humantime_serde")]
    pub critical: Duration,
}

impl Default for SlaConfig {
    fn default() -> Self {
        SlaConfig {
            low: Duration::from_secs(24 * 3600),
            medium: Duration::from_secs(4 * 3600),
            high: Duration::from_secs(30 * 60),
            critical: Duration::from_secs(10 * 60),
        }
    }
}

impl SlaConfig {
    pub fn for_level(&self, level: Level) -> Duration {
        match level {
            Level::None | Level::Low => self.low,
            Level::Medium => self.medium,
            Level::High => self.high,
            Level::Critical => self.critical,
        }
    }
}

/// Suggested dissuasion scripts by fraud type (`fraud_type_hint`), with a default.
/// Every other key is a fraud type; the rule set knows which exist, so the keys are checked
/// against it once both are loaded ([`Config::check_scripts`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ScriptsConfig {
    pub default: String,
    #[serde(flatten)]
    pub by_fraud_type: BTreeMap<String, String>,
}

impl Default for ScriptsConfig {
    fn default() -> Self {
        ScriptsConfig {
            default: "You just received a suspected fraud call. Do not transfer any money. \
                      Your community officer is on the way."
                .into(),
            by_fraud_type: BTreeMap::new(),
        }
    }
}

impl ScriptsConfig {
    pub fn for_fraud_type(&self, hint: Option<&str>) -> &str {
        hint.and_then(|h| self.by_fraud_type.get(h))
            .unwrap_or(&self.default)
    }

    /// One problem for each key that is not one of the `known` fraud types (a typo would
    /// otherwise give victims the generic script), naming the closest known type.
    pub fn check_fraud_types(&self, known: &[&str]) -> Vec<String> {
        self.by_fraud_type
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .map(|k| {
                let hint = match closest(k, known) {
                    Some(c) => format!("did you mean `{c}`? "),
                    None => String::new(),
                };
                format!(
                    "scripts.{k}: `{k}` is not a fraud type the rules know ({hint}known: {}; \
                     declare others in the rule file's `fraud_types`)",
                    known.join(", ")
                )
            })
            .collect()
    }
}

/// The candidate with the smallest edit distance to `word`, if any is close enough to be a
/// likely typo (at most a third of the word's length, and at least 2, edits away).
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `embedded` starts an in-process broker; anything else is a bootstrap server list.
    pub brokers: String,
    /// Port of the embedded broker (loopback only).
    pub embedded_port: u16,
    /// What the embedded broker keeps of each partition (it keeps records in memory): at most
    /// this many bytes, and nothing older than `embedded_retention`. It does not compact, so
    /// the state topic is bounded by age only. A consumer further behind loses the oldest
    /// records, as on Kafka.
    pub embedded_retention_bytes: u64,
    #[serde(with = "humantime_serde")]
    pub embedded_retention: Duration,
    pub group_id: String,
    pub input_topic: String,
    pub task_topic: String,
    pub dlq_topic: String,
    /// The open-task state changelog (compacted; one partition per input partition, keyed
    /// by a hash of the callee): restored whenever a partition is assigned.
    pub state_topic: String,
    /// Officers' and desks' feedback on tasks, keyed like the task topic (by the task's
    /// assignee id); created with the task topic's partition count when missing.
    pub feedback_topic: String,
    /// Feedback that cannot be applied, with the reason in headers.
    pub feedback_dlq_topic: String,
    /// The task-lifecycle state changelog (compacted; one partition per task partition,
    /// keyed by task id): restored whenever a task partition is assigned.
    pub lifecycle_topic: String,
    /// Additions to and removals from the rule set's number lists while running, read by
    /// every instance from the beginning (see `kafka::lists`).
    /// Rule files published to a fleet (`dissuade rules --publish`): every instance reads
    /// it from the beginning and runs the latest valid one in place of its rules file.
    pub rules_topic: String,
    pub lists_topic: String,
    /// Used only when an enabled rule reads a caller-side window: the input rekeyed by the
    /// caller's number, so that all of a caller's calls meet in one partition (see
    /// `kafka::by_caller`).
    pub by_caller_topic: String,
    /// The input with each call's caller-side figures in a header, keyed and partitioned as
    /// the input; the processor reads it in place of the input when caller windows are used.
    pub with_caller_figures_topic: String,
    /// Partitions for topics the service creates itself (embedded broker, `--create-topics`).
    pub partitions: i32,
    /// Replication factor of topics the service creates; absent: the cluster's default
    /// (`default.replication.factor`), or 1 on the embedded broker.
    pub replication_factor: Option<i32>,
    /// How long reading a partition's open tasks back from the state topic may take when it
    /// is assigned; after that its records are processed with what was read.
    #[serde(with = "humantime_serde")]
    pub restore_timeout: Duration,
    /// Tasks and dead letters produced but not yet acknowledged by the broker: production
    /// (and so consumption) waits at this bound.
    pub max_in_flight: usize,
    /// Pipeline worker threads; input partitions are spread over them, each partition on
    /// one worker so its order is kept. 0 means one per two cores.
    pub workers: usize,
    /// How often processed offsets are committed (with `exactly-once`: how often the
    /// transaction holding the outputs and the offsets is committed).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// `at-least-once` (a crash may repeat a task, with the same task id) or `exactly-once`
    /// (Kafka transactions: a read_committed reader of the outputs never sees a repeat).
    pub delivery: Delivery,
    /// The producer's `transactional.id` with `exactly-once`: unique to this instance and
    /// the same across its restarts (a restart then fences its predecessor and aborts what
    /// it left open). Required with `exactly-once`.
    pub transactional_id: Option<String>,
    /// How long a graceful shutdown may take to deliver in-flight work and commit.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Passed untouched to librdkafka for both consumer and producer
    /// (`security.protocol`, `sasl.*`, `ssl.*`, ...).
    pub properties: BTreeMap<String, String>,
    pub consumer_properties: BTreeMap<String, String>,
    pub producer_properties: BTreeMap<String, String>,
}

pub const EMBEDDED: &str = "embedded";

/// The processor's delivery guarantee for its outputs (tasks, dead letters, open-task state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Outputs are acknowledged before their input offsets are committed: nothing is lost,
    /// and a crash may produce an output again (with the same task id).
    AtLeastOnce,
    /// Outputs and input offsets are committed together in one Kafka transaction
    /// (consume-transform-produce, KIP-447): a read_committed reader sees each output once.
    ExactlyOnce,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: EMBEDDED.into(),
            embedded_port: 9092,
            embedded_retention_bytes: 64 * 1024 * 1024,
            embedded_retention: Duration::from_secs(3600),
            group_id: "dissuade".into(),
            input_topic: "suspicious-calls".into(),
            task_topic: "dissuasion-tasks".into(),
            dlq_topic: "suspicious-calls.dlq".into(),
            state_topic: "dissuade.open-tasks".into(),
            feedback_topic: "dissuasion-feedback".into(),
            feedback_dlq_topic: "dissuasion-feedback.dlq".into(),
            lifecycle_topic: "dissuade.task-lifecycle".into(),
            lists_topic: "dissuade.number-lists".into(),
            rules_topic: "dissuade.rules".into(),
            by_caller_topic: "dissuade.by-caller".into(),
            with_caller_figures_topic: "dissuade.with-caller-figures".into(),
            partitions: 4,
            replication_factor: None,
            restore_timeout: Duration::from_secs(60),
            max_in_flight: 100_000,
            workers: 0,
            commit_interval: Duration::from_secs(1),
            delivery: Delivery::AtLeastOnce,
            transactional_id: None,
            shutdown_timeout: Duration::from_secs(20),
            properties: BTreeMap::new(),
            consumer_properties: BTreeMap::new(),
            producer_properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    pub fn is_embedded(&self) -> bool {
        self.brokers == EMBEDDED
    }

    /// The replication factor to create topics with: -1 asks the cluster for its default.
    pub fn topic_replication(&self) -> i32 {
        match self.replication_factor {
            Some(n) => n,
            None if self.is_embedded() => 1,
            None => -1,
        }
    }
}

/// The task lifecycle: feedback, deadlines and escalations (see [`crate::lifecycle`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Track tasks, apply feedback and escalate overdue tasks in this process.
    pub enabled: bool,
    /// After a task's deadline, how long until an unclosed task goes to the centre's desk.
    #[serde(with = "humantime_serde")]
    pub second_escalation_after: Duration,
    /// The anti-fraud centre's desk (tier 2); unset: `dispatch.fallback_desk`.
    pub centre_desk: Option<String>,
    /// How long a closed task is remembered, to recognise late or repeated feedback.
    #[serde(with = "humantime_serde")]
    pub closed_retention: Duration,
    /// After its last escalation, how long an unclosed task is still watched.
    #[serde(with = "humantime_serde")]
    pub unclosed_retention: Duration,
    /// Most tasks remembered per task partition, closed ones included.
    pub max_tracked: usize,
    /// How long feedback naming a task not yet seen on its partition waits for the task.
    #[serde(with = "humantime_serde")]
    pub unknown_task_grace: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            enabled: true,
            second_escalation_after: Duration::from_secs(3600),
            centre_desk: None,
            closed_retention: Duration::from_secs(7 * 24 * 3600),
            unclosed_retention: Duration::from_secs(7 * 24 * 3600),
            max_tracked: 1_000_000,
            unknown_task_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address of the `/metrics`, `/healthz` and `/readyz` endpoint; empty disables it.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: "127.0.0.1:9898".into(),
        }
    }
}

/// The desk and officer views (see `docs/web.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Address the views and their API are served on; empty turns them off.
    pub listen: String,
    /// How long a sign-in lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Mark the session cookie `Secure` (serve behind HTTPS).
    pub secure_cookie: bool,
    /// Who may sign in: each token's SHA-256 and the scope it opens.
    pub tokens: Vec<WebToken>,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            listen: "127.0.0.1:8080".into(),
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookie: false,
            tokens: Vec::new(),
        }
    }
}

/// One sign-in token, stored as its hash: `dissuade token` makes one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebToken {
    /// `centre`, `station` or `officer`.
    pub scope: String,
    /// The station id or officer id; none for the centre.
    #[serde(default)]
    pub id: Option<String>,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
}

impl Config {
    /// Loads the file, applies `DISSUADE__…` environment overrides, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut doc: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_owned(),
                    message: with_line(&text, &e),
                })?;
        let mut overrides = Vec::new();
        let mut values = Vec::new();
        for (var, value) in env {
            if let Some((key, value)) = apply_env_override(&mut doc, &var, &value)? {
                overrides.push(Override { key, var });
                values.push(value);
            }
        }
        let source = Source {
            path: path.to_owned(),
            overrides,
        };
        let mut config: Config = serde_path_to_error::deserialize(doc)
            .map_err(|e| deserialize_error(e, &source, &values, &text))?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let problems: Vec<String> = config
            .problems()
            .into_iter()
            .map(|p| redact(&source.attribute(p), &values))
            .collect();
        config.source = source;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Checks the `[scripts]` keys against the fraud types the rule set knows (the rules
    /// load after the configuration, so this is a separate step).
    pub fn check_scripts(&self, known_fraud_types: &[&str]) -> Result<(), ConfigError> {
        let problems: Vec<String> = self
            .scripts
            .check_fraud_types(known_fraud_types)
            .into_iter()
            .map(|p| self.source.attribute(p))
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: self.source.path.clone(),
                problems,
            })
        }
    }

    /// The lifecycle's settings, the centre's desk resolved.
    pub fn lifecycle_settings(&self) -> crate::lifecycle::LifecycleSettings {
        let l = &self.lifecycle;
        crate::lifecycle::LifecycleSettings {
            second_escalation_after: l.second_escalation_after,
            centre_desk: l
                .centre_desk
                .clone()
                .unwrap_or_else(|| self.dispatch.fallback_desk.clone()),
            closed_retention: l.closed_retention,
            unclosed_retention: l.unclosed_retention,
            max_tracked: l.max_tracked,
        }
    }

    /// Resolves a path from the config file against the file's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base_dir.join(p)
        }
    }

    /// Every problem, as `key: message`.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut must_exist = |what: &str, p: &Path| {
            let full = self.resolve(p);
            if !full.is_file() {
                problems.push(format!("{what}: file {} does not exist", full.display()));
            }
        };
        must_exist("rules.path", &self.rules.path);
        must_exist("grid.cells", &self.grid.cells);
        must_exist("grid.stations", &self.grid.stations);
        must_exist("grid.roster", &self.grid.roster);
        if let Some(t) = &self.grid.cell_table {
            must_exist("grid.cell_table", t);
        }
        if !(self.grid.snap_distance_m.is_finite() && self.grid.snap_distance_m >= 0.0) {
            problems.push(format!(
                "grid.snap_distance_m: `{}` is not a distance in metres",
                self.grid.snap_distance_m
            ));
        }
        let d = &self.dispatch;
        if d.min_level == Level::None {
            problems.push("dispatch.min_level: `none` would make a task of every call".into());
        }
        if d.suppression_window.is_zero() {
            problems.push("dispatch.suppression_window: must be longer than zero".into());
        }
        if d.max_open == 0 {
            problems.push("dispatch.max_open: must be at least 1".into());
        }
        if d.fallback_desk.trim().is_empty() {
            problems.push("dispatch.fallback_desk: must name the desk for unmatched tasks".into());
        }
        for (level, sla) in [
            ("low", d.sla.low),
            ("medium", d.sla.medium),
            ("high", d.sla.high),
            ("critical", d.sla.critical),
        ] {
            if sla.is_zero() {
                problems.push(format!("dispatch.sla.{level}: must be longer than zero"));
            }
        }
        // A higher level is more urgent: its deadline may not be later.
        for ((higher, h), (lower, l)) in [
            (("critical", d.sla.critical), ("high", d.sla.high)),
            (("high", d.sla.high), ("medium", d.sla.medium)),
            (("medium", d.sla.medium), ("low", d.sla.low)),
        ] {
            if h > l {
                problems.push(format!(
                    "dispatch.sla.{higher}: `{}` is later than dispatch.sla.{lower} (`{}`): \
                     a higher level must not get a later deadline",
                    humantime::format_duration(h),
                    humantime::format_duration(l)
                ));
            }
        }
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            problems.push("kafka.brokers: `embedded` or a bootstrap server list".into());
        }
        if k.embedded_retention_bytes < 1024 * 1024 {
            problems.push("kafka.embedded_retention_bytes: at least 1 MiB (1048576)".into());
        }
        // The open-task state is read back for two suppression windows (see dispatch).
        if k.is_embedded() && k.embedded_retention < 2 * self.dispatch.suppression_window {
            problems.push(format!(
                "kafka.embedded_retention ({}) is shorter than two dispatch.suppression_window \
                 ({}): the embedded broker would drop open-task state still in use",
                humantime::format_duration(k.embedded_retention),
                humantime::format_duration(2 * self.dispatch.suppression_window)
            ));
        }
        for (name, topic) in [
            ("kafka.input_topic", &k.input_topic),
            ("kafka.task_topic", &k.task_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
            ("kafka.state_topic", &k.state_topic),
            ("kafka.feedback_topic", &k.feedback_topic),
            ("kafka.feedback_dlq_topic", &k.feedback_dlq_topic),
            ("kafka.lifecycle_topic", &k.lifecycle_topic),
            ("kafka.lists_topic", &k.lists_topic),
            ("kafka.rules_topic", &k.rules_topic),
            ("kafka.by_caller_topic", &k.by_caller_topic),
            (
                "kafka.with_caller_figures_topic",
                &k.with_caller_figures_topic,
            ),
        ] {
            if topic.trim().is_empty() {
                problems.push(format!("{name}: must not be empty"));
            }
        }
        let topics = [
            &k.input_topic,
            &k.task_topic,
            &k.dlq_topic,
            &k.state_topic,
            &k.feedback_topic,
            &k.feedback_dlq_topic,
            &k.lifecycle_topic,
            &k.lists_topic,
            &k.rules_topic,
            &k.by_caller_topic,
            &k.with_caller_figures_topic,
        ];
        if (1..topics.len()).any(|i| topics[..i].contains(&topics[i])) {
            problems.push(
                "kafka: input, task, dead-letter, state, feedback, feedback dead-letter, \
                 lifecycle, lists, rules, by-caller and with-caller-figures topics must differ"
                    .into(),
            );
        }
        let l = &self.lifecycle;
        for (key, d) in [
            (
                "lifecycle.second_escalation_after",
                l.second_escalation_after,
            ),
            ("lifecycle.closed_retention", l.closed_retention),
            ("lifecycle.unclosed_retention", l.unclosed_retention),
            ("lifecycle.unknown_task_grace", l.unknown_task_grace),
        ] {
            if d.is_zero() {
                problems.push(format!("{key}: must be longer than zero"));
            }
        }
        if l.max_tracked == 0 {
            problems.push("lifecycle.max_tracked: must be at least 1".into());
        }
        if l.centre_desk
            .as_deref()
            .is_some_and(|d| d.trim().is_empty())
        {
            problems.push(
                "lifecycle.centre_desk: must name the centre's desk, or be left out to use \
                 dispatch.fallback_desk"
                    .into(),
            );
        }
        let i = &self.input;
        if i.max_record_bytes < 1024 {
            problems.push("input.max_record_bytes: must be at least 1024".into());
        }
        if i.max_field_bytes < 32 || i.max_field_bytes > i.max_record_bytes {
            problems.push(
                "input.max_field_bytes: must be at least 32 and at most max_record_bytes".into(),
            );
        }
        if k.group_id.trim().is_empty() {
            problems.push("kafka.group_id: must not be empty".into());
        }
        if k.partitions < 1 {
            problems.push("kafka.partitions: must be at least 1".into());
        }
        if k.replication_factor.is_some_and(|n| n < 1) {
            problems.push("kafka.replication_factor: must be at least 1 when given".into());
        }
        if k.max_in_flight == 0 {
            problems.push("kafka.max_in_flight: must be at least 1".into());
        }
        if k.delivery == Delivery::ExactlyOnce
            && k.transactional_id
                .as_deref()
                .is_none_or(|id| id.trim().is_empty())
        {
            problems.push(
                "kafka.transactional_id: required with delivery = \"exactly-once\": a name \
                 unique to this instance and the same across its restarts (a pod name of a \
                 StatefulSet, for example)"
                    .into(),
            );
        }
        if !self.metrics.listen.is_empty()
            && self.metrics.listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(format!(
                "metrics.listen: `{}` is not an address like 127.0.0.1:9898",
                self.metrics.listen
            ));
        }
        let w = &self.web;
        if !w.listen.is_empty() && w.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "web.listen: `{}` is not an address like 127.0.0.1:8080",
                w.listen
            ));
        }
        if w.session_ttl.is_zero() {
            problems.push("web.session_ttl: must be longer than zero".into());
        }
        for (i, t) in w.tokens.iter().enumerate() {
            let at = format!("web.tokens[{i}]");
            match (t.scope.as_str(), &t.id) {
                ("centre", None) | ("station" | "officer", Some(_)) => {}
                ("centre", Some(_)) => {
                    problems.push(format!("{at}.id: the centre's token has no id"))
                }
                ("station" | "officer", None) => problems.push(format!(
                    "{at}.id: a {} token names its {} id",
                    t.scope, t.scope
                )),
                (other, _) => problems.push(format!(
                    "{at}.scope: `{other}` is not one of centre, station, officer"
                )),
            }
            if t.sha256.len() != 64
                || !t
                    .sha256
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            {
                problems.push(format!(
                    "{at}.sha256: not 64 lowercase hex digits (`dissuade token` prints one)"
                ));
            }
        }
        problems
    }
}

/// Applies `DISSUADE__KAFKA__BROKERS=host:9092` as `kafka.brokers = "host:9092"` and returns
/// the key path it set and the value as set, without quotes (`None` for other variables). A value that parses as a TOML scalar
/// (number, bool) keeps that type; anything else is a string. Values of the string maps
/// (`kafka.properties`, `kafka.consumer_properties`, `kafka.producer_properties`, `scripts`)
/// are always strings, taken as written (a password of digits stays a string); surrounding
/// double quotes, if any, are removed.
fn apply_env_override(
    doc: &mut toml::Table,
    var: &str,
    value: &str,
) -> Result<Option<(Vec<String>, String)>, ConfigError> {
    let Some(rest) = var.strip_prefix("DISSUADE__") else {
        return Ok(None);
    };
    let keys: Vec<String> = rest.split("__").map(|k| k.to_ascii_lowercase()).collect();
    if keys.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.into(),
            message: "empty key segment".into(),
        });
    }
    let as_toml = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"));
    let parsed = match as_toml {
        Some(v @ toml::Value::String(_)) => v,
        Some(v) if !in_string_map(&keys) => v,
        _ => toml::Value::String(value.to_owned()),
    };
    let shown = match &parsed {
        toml::Value::String(s) => s.clone(),
        _ => value.to_owned(),
    };
    let (last, parents) = keys.split_last().expect("at least one key");
    let mut table = doc;
    for key in parents {
        let entry = table
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.into(),
            message: format!("`{key}` is not a table"),
        })?;
    }
    table.insert(last.clone(), parsed);
    Ok(Some((keys, shown)))
}

/// Whether `keys` names an entry of a map whose values are all strings.
fn in_string_map(keys: &[String]) -> bool {
    match keys {
        [section, _] => section == "scripts",
        [section, map, _] => {
            section == "kafka"
                && matches!(
                    map.as_str(),
                    "properties" | "consumer_properties" | "producer_properties"
                )
        }
        _ => false,
    }
}

/// Turns a deserialisation error into a message that blames its source: the environment
/// variable that set the key (without quoting its value), or the file with its line.
fn deserialize_error(
    e: serde_path_to_error::Error<toml::de::Error>,
    source: &Source,
    values: &[String],
    text: &str,
) -> ConfigError {
    use serde_path_to_error::Segment;
    let key: Vec<String> = e
        .path()
        .iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(key.clone()),
            Segment::Seq { index } => Some(index.to_string()),
            Segment::Enum { variant } => Some(variant.clone()),
            Segment::Unknown => None,
        })
        .collect();
    let message = e.inner().message().to_owned();
    // The variable that set this key or a table above it; or, for an unknown key, the
    // variable that added it.
    let blamed = source.overrides.iter().zip(values).rev().find(|(o, _)| {
        let above = o.key.len() <= key.len() && o.key.iter().zip(&key).all(|(a, b)| a == b);
        let added = o.key.len() > key.len()
            && o.key.iter().zip(&key).all(|(a, b)| a == b)
            && message.contains(&format!("`{}`", o.key[key.len()]));
        above || added
    });
    if let Some((o, value)) = blamed {
        let message =
            if message.starts_with("unknown field") || message.starts_with("missing field") {
                message
            } else if let Some(at) = message.find("expected ") {
                format!("invalid value (not shown), {}", &message[at..])
            } else {
                redact(&message, std::slice::from_ref(value))
            };
        return ConfigError::Env {
            var: o.var.clone(),
            message: format!("{}: {message}", o.key.join(".")),
        };
    }
    // From the file: deserialising its text alone gives the line.
    let message = match toml::from_str::<Config>(text) {
        Err(e) if e.span().is_some() => with_line(text, &e),
        _ if key.is_empty() => message,
        _ => format!("{}: {message}", key.join(".")),
    };
    ConfigError::Parse {
        path: source.path.clone(),
        message: redact(&message, values),
    }
}

/// Replaces environment values quoted in `message` (and longer ones anywhere in it).
fn redact(message: &str, values: &[String]) -> String {
    let mut out = message.to_owned();
    for v in values.iter().filter(|v| !v.is_empty()) {
        for quoted in [format!("`{v}`"), format!("\"{v}\"")] {
            out = out.replace(&quoted, "(value from the environment, not shown)");
        }
        if v.len() >= 6 {
            out = out.replace(v.as_str(), "(value from the environment, not shown)");
        }
    }
    out
}

/// Formats a TOML error with the 1-based line it points at.
pub(crate) fn with_line(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_config(dir: &Path, body: &str) -> PathBuf {
        for f in ["rules.toml", "cells.geojson", "stations.csv", "roster.csv"] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let path = dir.join("dissuade.toml");
        let mut f = std::fs::File::create(&path).unwrap();
        write!(
            f,
            "[rules]\npath = \"rules.toml\"\n[grid]\ncells = \"cells.geojson\"\n\
             stations = \"stations.csv\"\nroster = \"roster.csv\"\n{body}"
        )
        .unwrap();
        path
    }

    #[test]
    fn defaults_fill_everything_not_given() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load_with_env(&write_config(dir.path(), ""), []).unwrap();
        assert_eq!(cfg.dispatch.min_level, Level::Medium);
        assert_eq!(cfg.dispatch.suppression_window, Duration::from_secs(1800));
        assert_eq!(cfg.grid.snap_distance_m, 500.0);
        assert!(cfg.kafka.is_embedded());
        assert_eq!(cfg.kafka.input_topic, "suspicious-calls");
        assert_eq!(
            cfg.resolve(Path::new("rules.toml")),
            dir.path().join("rules.toml")
        );
    }

    #[test]
    fn environment_overrides_file_values_with_types() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "[kafka]\nbrokers = \"a:9092\"\n");
        let cfg = Config::load_with_env(
            &path,
            [
                ("DISSUADE__KAFKA__BROKERS".into(), "kafka-1:9093".into()),
                ("DISSUADE__KAFKA__PARTITIONS".into(), "12".into()),
                (
                    "DISSUADE__KAFKA__PROPERTIES__SECURITY.PROTOCOL".into(),
                    "SASL_SSL".into(),
                ),
                ("UNRELATED".into(), "x".into()),
            ],
        )
        .unwrap();
        assert_eq!(cfg.kafka.brokers, "kafka-1:9093");
        assert_eq!(cfg.kafka.partitions, 12);
        assert_eq!(cfg.kafka.properties["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn unknown_key_is_rejected_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "[dispatch]\nsuppresion_window = \"10m\"\n");
        let err = Config::load_with_env(&path, []).unwrap_err().to_string();
        assert!(err.contains("suppresion_window"), "{err}");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "[dispatch\n");
        let err = Config::load_with_env(&path, []).unwrap_err().to_string();
        assert!(err.contains("dissuade.toml: line 7"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            "[dispatch]\nsuppression_window = \"0s\"\nfallback_desk = \"\"\n\
             [kafka]\ntask_topic = \"suspicious-calls\"\n[metrics]\nlisten = \"nowhere\"\n",
        );
        std::fs::remove_file(dir.path().join("roster.csv")).unwrap();
        let err = Config::load_with_env(&path, []).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(problems.len(), 5, "{problems:#?}");
        assert!(problems[0].starts_with("grid.roster: file"));
        assert!(problems.iter().any(|p| p.starts_with("metrics.listen")));
    }

    fn load_err(body: &str, env: &[(&str, &str)]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), body);
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::load_with_env(&path, env).unwrap_err().to_string()
    }

    #[test]
    fn replication_factor_defaults_to_the_cluster_and_must_be_positive() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::load_with_env(
            &write_config(dir.path(), "[kafka]\nbrokers = \"kafka-1:9092\"\n"),
            [],
        )
        .unwrap();
        assert_eq!(cfg.kafka.replication_factor, None);
        assert_eq!(cfg.kafka.topic_replication(), -1, "the broker's default");
        let cfg = Config::load_with_env(&write_config(dir.path(), ""), []).unwrap();
        assert_eq!(cfg.kafka.topic_replication(), 1, "embedded: one broker");
        let cfg = Config::load_with_env(
            &write_config(dir.path(), "[kafka]\nreplication_factor = 3\n"),
            [],
        )
        .unwrap();
        assert_eq!(cfg.kafka.topic_replication(), 3);
        let err = load_err("[kafka]\nreplication_factor = 0\n", &[]);
        assert!(
            err.contains("kafka.replication_factor: must be at least 1 when given"),
            "{err}"
        );
    }

    #[test]
    fn an_inverted_sla_is_rejected_naming_both_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            "[dispatch.sla]\ncritical = \"1h\"\nmedium = \"48h\"\n",
        );
        let err = Config::load_with_env(&path, []).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            problems,
            &[
                "dispatch.sla.critical: `1h` is later than dispatch.sla.high (`30m`): \
                 a higher level must not get a later deadline",
                "dispatch.sla.medium: `2days` is later than dispatch.sla.low (`1day`): \
                 a higher level must not get a later deadline",
            ]
        );
        // Equal deadlines are fine.
        let path = write_config(dir.path(), "[dispatch.sla]\ncritical = \"30m\"\n");
        Config::load_with_env(&path, []).unwrap();
    }

    #[test]
    fn bad_web_tokens_are_rejected_naming_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let hash = "a".repeat(64);
        let body = format!(
            "[web]\nlisten = \"nowhere\"\n\
             [[web.tokens]]\nscope = \"station\"\nsha256 = \"{hash}\"\n\
             [[web.tokens]]\nscope = \"centre\"\nid = \"x\"\nsha256 = \"{hash}\"\n\
             [[web.tokens]]\nscope = \"desk\"\nid = \"x\"\nsha256 = \"{hash}\"\n\
             [[web.tokens]]\nscope = \"officer\"\nid = \"po-1\"\nsha256 = \"ABC\"\n\
             [[web.tokens]]\nscope = \"officer\"\nid = \"po-1\"\nsha256 = \"{hash}\"\n"
        );
        let path = write_config(dir.path(), &body);
        let err = Config::load_with_env(&path, []).unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            problems,
            &[
                "web.listen: `nowhere` is not an address like 127.0.0.1:8080",
                "web.tokens[0].id: a station token names its station id",
                "web.tokens[1].id: the centre's token has no id",
                "web.tokens[2].scope: `desk` is not one of centre, station, officer",
                "web.tokens[3].sha256: not 64 lowercase hex digits (`dissuade token` prints one)",
            ]
        );
    }

    #[test]
    fn string_maps_from_the_environment_stay_strings() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "");
        let cfg = Config::load_with_env(
            &path,
            [
                (
                    "DISSUADE__KAFKA__PROPERTIES__SASL.PASSWORD".into(),
                    "123456".into(),
                ),
                (
                    "DISSUADE__KAFKA__CONSUMER_PROPERTIES__SESSION.TIMEOUT.MS".into(),
                    "\"6000\"".into(),
                ),
                (
                    "DISSUADE__KAFKA__PRODUCER_PROPERTIES__ENABLE.IDEMPOTENCE".into(),
                    "true".into(),
                ),
                ("DISSUADE__SCRIPTS__LOAN".into(), "110".into()),
            ],
        )
        .unwrap();
        assert_eq!(cfg.kafka.properties["sasl.password"], "123456");
        assert_eq!(cfg.kafka.consumer_properties["session.timeout.ms"], "6000");
        assert_eq!(cfg.kafka.producer_properties["enable.idempotence"], "true");
        assert_eq!(cfg.scripts.by_fraud_type["loan"], "110");
    }

    #[test]
    fn environment_mistakes_name_the_variable_and_never_show_its_value() {
        for (var, value, key) in [
            ("DISSUADE__DISPATCH__MAX_OPEN", "lots", "dispatch.max_open"),
            (
                "DISSUADE__KAFKA__PROPERTIES",
                "982451653",
                "kafka.properties",
            ),
            (
                "DISSUADE__KAFKA__PARTITIONS",
                "\"s3cr3t\"",
                "kafka.partitions",
            ),
            (
                "DISSUADE__DISPATCH__SUPPRESSION_WINDOW",
                "7654321",
                "dispatch.suppression_window",
            ),
            (
                "DISSUADE__DISPATCH__SURPRESSION_WINDOW",
                "\"30m\"",
                "dispatch.surpression_window",
            ),
        ] {
            let err = load_err("", &[(var, value)]);
            assert!(
                err.starts_with(&format!("environment variable {var}: {key}: ")),
                "{err}"
            );
            let shown = value.trim_matches('"');
            assert!(!err.contains(shown) || shown == "30m", "{err}");
            assert!(!err.contains("dissuade.toml"), "{err}");
        }
        // Found by validation: the problem names the variable, and hides the value.
        let err = load_err(
            "",
            &[
                ("DISSUADE__METRICS__LISTEN", "\"my-secret-host\""),
                ("DISSUADE__DISPATCH__MAX_OPEN", "0"),
            ],
        );
        assert!(
            err.contains(
                "environment variable DISSUADE__METRICS__LISTEN (metrics.listen): \
                 (value from the environment, not shown) is not an address"
            ),
            "{err}"
        );
        assert!(
            err.contains(
                "environment variable DISSUADE__DISPATCH__MAX_OPEN (dispatch.max_open): \
                 must be at least 1"
            ),
            "{err}"
        );
        assert!(!err.contains("my-secret-host"), "{err}");
    }

    #[test]
    fn file_mistakes_name_the_file_and_line() {
        let err = load_err("[dispatch]\nmax_open = \"lots\"\n", &[]);
        assert!(err.contains("dissuade.toml: line 8: "), "{err}");
        // An unrelated override does not take the blame.
        let err = load_err(
            "[dispatch]\nmax_open = \"lots\"\n",
            &[("DISSUADE__DISPATCH__MIN_LEVEL", "\"high\"")],
        );
        assert!(err.contains("dissuade.toml: line 8: "), "{err}");
    }

    #[test]
    fn script_keys_must_be_known_fraud_types() {
        let known = ["impersonate_police", "investment", "loan"];
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(
            dir.path(),
            "[scripts]\nimpersonate_polise = \"Hang up.\"\nloan = \"No fee.\"\n",
        );
        let cfg = Config::load_with_env(&path, []).unwrap();
        let err = cfg.check_scripts(&known).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: invalid configuration:\n  - scripts.impersonate_polise: \
                 `impersonate_polise` is not a fraud type the rules know (did you mean \
                 `impersonate_police`? known: impersonate_police, investment, loan; declare \
                 others in the rule file's `fraud_types`)",
                path.display()
            )
        );
        // No suggestion when nothing is close; set from the environment, the variable is named.
        let cfg = Config::load_with_env(
            &write_config(dir.path(), ""),
            [("DISSUADE__SCRIPTS__ROMANCE".into(), "Hang up.".into())],
        )
        .unwrap();
        let err = cfg.check_scripts(&known).unwrap_err().to_string();
        assert!(
            err.contains(
                "environment variable DISSUADE__SCRIPTS__ROMANCE (scripts.romance): `romance` \
                 is not a fraud type the rules know (known: "
            ),
            "{err}"
        );
        assert!(cfg.check_scripts(&["romance"]).is_ok());
    }

    #[test]
    fn lifecycle_defaults_and_the_centre_desk_follow_the_fallback_desk() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), "[dispatch]\nfallback_desk = \"centre\"\n");
        let cfg = Config::load_with_env(&path, []).unwrap();
        assert!(cfg.lifecycle.enabled);
        assert_eq!(cfg.kafka.feedback_topic, "dissuasion-feedback");
        assert_eq!(cfg.kafka.feedback_dlq_topic, "dissuasion-feedback.dlq");
        assert_eq!(cfg.kafka.lifecycle_topic, "dissuade.task-lifecycle");
        let s = cfg.lifecycle_settings();
        assert_eq!(s.centre_desk, "centre");
        assert_eq!(s.second_escalation_after, Duration::from_secs(3600));
        assert_eq!(cfg.lifecycle.unknown_task_grace, Duration::from_secs(30));
        let cfg = Config::load_with_env(
            &path,
            [
                ("DISSUADE__LIFECYCLE__CENTRE_DESK".into(), "desk-0".into()),
                (
                    "DISSUADE__LIFECYCLE__SECOND_ESCALATION_AFTER".into(),
                    "15m".into(),
                ),
                ("DISSUADE__LIFECYCLE__ENABLED".into(), "false".into()),
            ],
        )
        .unwrap();
        assert!(!cfg.lifecycle.enabled);
        assert_eq!(cfg.lifecycle_settings().centre_desk, "desk-0");
        assert_eq!(
            cfg.lifecycle.second_escalation_after,
            Duration::from_secs(900)
        );
    }

    #[test]
    fn lifecycle_problems_name_their_keys() {
        let err = load_err(
            "[lifecycle]\nunknown_task_grace = \"0s\"\nmax_tracked = 0\ncentre_desk = \" \"\n\
             [kafka]\nfeedback_topic = \"dissuasion-tasks\"\n",
            &[],
        );
        for key in [
            "lifecycle.unknown_task_grace: must be longer than zero",
            "lifecycle.max_tracked: must be at least 1",
            "lifecycle.centre_desk: must name",
            "by-caller and with-caller-figures topics must differ",
        ] {
            assert!(err.contains(key), "{key} in {err}");
        }
    }

    #[test]
    fn exactly_once_needs_a_transactional_id() {
        let err = load_err("[kafka]\ndelivery = \"exactly-once\"\n", &[]);
        assert!(
            err.contains("kafka.transactional_id: required with delivery = \"exactly-once\""),
            "{err}"
        );
        let err = load_err("[kafka]\ndelivery = \"exactly_once\"\n", &[]);
        assert!(err.contains("exactly-once"), "{err}");
    }

    #[test]
    fn scripts_fall_back_to_default() {
        let mut s = ScriptsConfig::default();
        s.by_fraud_type.insert(
            "investment".into(),
            "No real investment promises this.".into(),
        );
        assert_eq!(
            s.for_fraud_type(Some("investment")),
            "No real investment promises this."
        );
        assert_eq!(s.for_fraud_type(Some("unknown")), s.default);
        assert_eq!(s.for_fraud_type(None), s.default);
    }
}
