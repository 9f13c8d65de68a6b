//! Risk rules: the analysts' declarative rule file, compiled once at load into a fast
//! evaluator that scores each suspicious-call event.
//!
//! * [`RuleSet::load`] / [`RuleSet::from_toml_str`] parse and validate a TOML rule file (see
//!   `config/rules.toml` for the documented format) and report every rule-level problem at
//!   once in a [`RulesError`].
//! * [`RuleSet::score`] is the hot path: it resolves the event's fields once into a small
//!   context (numbers, tri-state booleans, the caller-flag bitmask, the fraud-type hint as a
//!   bit) and walks each enabled rule's pre-compiled condition tree. No string field-name
//!   lookups, no JSON values and no heap allocation (unless more than 8 rules fire, when the
//!   [`Fired`] list spills to the heap).
//! * [`RuleSet::reason`] renders a rule's reason template for a task; phone numbers only
//!   ever appear masked.

mod compile;
mod error;
mod lists;
mod synthetic;
mod template;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::event::Event;
use crate::features::{
    CallFacts, FeatureSpec, Figures, KeySide, WindowLimits, Windows, MAX_FEATURES, NO_FIGURES,
};
use crate::task::EventKeys;

pub use error::{Problem, ProblemKind, RuleRef, RulesError};
pub use lists::NumberList;
pub use synthetic::synthetic_rule_set;

use template::Template;

/// How urgently a person at risk needs a community officer.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    None,
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::None,
        Level::Low,
        Level::Medium,
        Level::High,
        Level::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Level`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown risk level `{0}`; expected one of none, low, medium, high, critical")]
pub struct ParseLevelError(pub String);

impl FromStr for Level {
    type Err = ParseLevelError;

    fn from_str(s: &str) -> Result<Level, ParseLevelError> {
        Level::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| ParseLevelError(s.to_owned()))
    }
}

/// The minimum total score of each level above `none` (strictly increasing, `low` >= 1, so a
/// call on which no rule fired is always `none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    low: i32,
    medium: i32,
    high: i32,
    critical: i32,
}

impl Thresholds {
    /// `None` unless `1 <= low < medium < high < critical`.
    pub fn new(low: i32, medium: i32, high: i32, critical: i32) -> Option<Thresholds> {
        (low >= 1 && low < medium && medium < high && high < critical).then_some(Thresholds {
            low,
            medium,
            high,
            critical,
        })
    }

    #[inline]
    pub fn level_for(&self, score: i32) -> Level {
        if score >= self.critical {
            Level::Critical
        } else if score >= self.high {
            Level::High
        } else if score >= self.medium {
            Level::Medium
        } else if score >= self.low {
            Level::Low
        } else {
            Level::None
        }
    }

    /// The lowest total score that reaches `level` (`None` for [`Level::None`], which is
    /// everything below `low`).
    pub fn min_score(&self, level: Level) -> Option<i32> {
        match level {
            Level::None => None,
            Level::Low => Some(self.low),
            Level::Medium => Some(self.medium),
            Level::High => Some(self.high),
            Level::Critical => Some(self.critical),
        }
    }
}

/// `low >= 20, medium >= 40, high >= 60, critical >= 90`
impl fmt::Display for Thresholds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "low >= {}, medium >= {}, high >= {}, critical >= {}",
            self.low, self.medium, self.high, self.critical
        )
    }
}

/// One rule of the set, as the analysts wrote it (compiled).
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    /// Added to the total when the rule fires; negative for mitigating rules.
    pub score: i32,
    /// Disabled rules are validated and listed but never fire.
    pub enabled: bool,
    /// The reason template as written, e.g. `"call of {call_minutes} min"`.
    pub reason_template: String,
    reason: Template,
}

/// Indexes into [`RuleSet::rules`] of the rules that fired, in file order.
pub type Fired = smallvec::SmallVec<[u16; 8]>;

/// The result of scoring one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub total: i32,
    pub level: Level,
    pub fired: Fired,
}

/// A validated, compiled rule set.
#[derive(Debug, Clone)]
pub struct RuleSet {
    name: String,
    version: String,
    rules: Vec<Rule>,
    thresholds: Thresholds,
    /// The enabled rules, in file order, laid out for the hot loop.
    program: Vec<Compiled>,
    arena: Arena,
    /// Fraud types a rule may name.
    fraud_types: FraudTypes,
    /// The windowed features, in file order (a feature's index is its figure slot).
    features: Vec<FeatureSpec>,
    /// `(feature index, condition)` of each feature's `where`.
    filters: Vec<(u8, Node)>,
    window_limits: WindowLimits,
    /// The number lists, in file order (a list's index is its fact bit).
    lists: std::sync::Arc<Vec<NumberList>>,
    /// Indexes of the lists an enabled rule tests: only those are looked up.
    used_lists: Vec<u8>,
    /// The conditions as checked, before lowering: the tests' reference evaluator.
    #[cfg(test)]
    reference: Vec<(u16, i32, compile::Cond)>,
}

impl RuleSet {
    /// Reads and compiles a rule file; messages name the file as `path` is displayed.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| RulesError::Io {
            file: origin.clone(),
            source,
        })?;
        match std::str::from_utf8(&bytes) {
            Ok(text) => compile::compile(text, &origin, path.parent().unwrap_or(Path::new("."))),
            Err(e) => {
                let (line, column) = error::line_col(&bytes[..e.valid_up_to()]);
                Err(RulesError::Syntax {
                    file: origin,
                    line,
                    column,
                    message: "the file is not valid UTF-8".into(),
                })
            }
        }
    }

    /// Compiles rule-file text; `origin` names it in messages (usually the file name). List
    /// files are read relative to the current directory.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        compile::compile(text, origin, Path::new("."))
    }

    /// [`RuleSet::from_toml_str`] with list files read relative to `dir`.
    pub fn from_toml_str_in(text: &str, origin: &str, dir: &Path) -> Result<RuleSet, RulesError> {
        compile::compile(text, origin, dir)
    }

    /// `sha256:` and the first 16 hex digits of the SHA-256 of the file's bytes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The file's `name`, or its origin when it has none.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every rule in file order, disabled ones included.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every fraud type a hint may name: the built-in ones and the file's `fraud_types`.
    pub fn fraud_types(&self) -> impl Iterator<Item = &str> {
        self.fraud_types.names.iter().map(|n| &**n)
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.thresholds
    }

    /// The number lists, in file order.
    pub fn lists(&self) -> &[NumberList] {
        &self.lists
    }

    /// The list called `id`.
    pub fn list(&self, id: &str) -> Option<&NumberList> {
        self.lists.iter().find(|l| l.id == id)
    }

    #[inline]
    fn context(&self, event: &Event<'_>) -> Ctx {
        let mut ctx = Ctx::new(event, &self.fraud_types);
        // Lists and windows know a caller by the same key: it is worked out once.
        if !self.used_lists.is_empty() || !self.features.is_empty() {
            let list_key = crate::phone::list_key(&event.caller_number);
            ctx.caller = Some(crate::phone::caller_key_with(
                list_key,
                &event.caller_number,
            ));
            if let Some(key) = list_key {
                for &i in &self.used_lists {
                    if self.lists[i as usize].contains(key) {
                        ctx.words[WORD_FACTS as usize] |= list_bit(i);
                    }
                }
            }
        }
        ctx
    }

    /// The windowed features, in file order.
    pub fn features(&self) -> &[FeatureSpec] {
        &self.features
    }

    /// The `[windows]` settings: allowed lateness and the bound on calls per key.
    pub fn window_limits(&self) -> WindowLimits {
        self.window_limits
    }

    /// Scores one event on its own fields: every feature's figure is absent, so rules on
    /// features do not fire. [`RuleSet::score_with`] is the scoring that keeps windows.
    pub fn score(&self, event: &Event<'_>) -> Score {
        self.score_ctx(&self.context(event))
    }

    /// Whether an enabled rule reads a caller-side window: then, on Kafka, the calls are
    /// grouped by caller in a stage of their own (`kafka::by_caller`).
    pub fn keeps_caller_windows(&self) -> bool {
        self.features
            .iter()
            .any(|f| f.used && f.key == KeySide::Caller)
    }

    /// Adds the event to `windows` (the state of this rule set's features; see
    /// [`Windows::new`]) and scores it with the figures it then sees, which are returned
    /// for the reasons. `task` is the id of the task the event would make; `partition` the
    /// input partition it came from. `given` holds figures computed elsewhere (the caller
    /// side, by the by-caller stage); they fill the slots `windows` leaves absent.
    pub fn score_with(
        &self,
        event: &Event<'_>,
        windows: &Windows,
        keys: EventKeys,
        partition: i32,
        given: Option<&Figures>,
    ) -> (Score, Figures) {
        let mut ctx = self.context(event);
        let mut figures = self.observe_ctx(&ctx, event, windows, keys, partition);
        if let Some(given) = given {
            for (mine, theirs) in figures.iter_mut().zip(given) {
                if mine.is_nan() {
                    *mine = *theirs;
                }
            }
        }
        ctx.nums[NumField::EVENT_NUMBERS..].copy_from_slice(&figures);
        (self.score_ctx(&ctx), figures)
    }

    /// Adds the event to the caller windows of the by-caller stage (see
    /// [`Windows::for_callers`]) and returns the caller figures it sees; `partition` is the
    /// by-caller topic's.
    pub fn caller_figures(&self, event: &Event<'_>, windows: &Windows, partition: i32) -> Figures {
        let mut figures = NO_FIGURES;
        if windows.is_empty() {
            return figures;
        }
        let call = self.call_facts(
            &self.context(event),
            event,
            EventKeys::of(&event.event_id, &event.callee_number),
            partition,
        );
        windows.observe_by_caller(&call, &mut figures);
        figures
    }

    /// Adds the event to `windows` without scoring it: rebuilding the windows from history.
    pub fn observe(&self, event: &Event<'_>, windows: &Windows, keys: EventKeys, partition: i32) {
        self.observe_ctx(&self.context(event), event, windows, keys, partition);
    }

    fn observe_ctx(
        &self,
        ctx: &Ctx,
        event: &Event<'_>,
        windows: &Windows,
        keys: EventKeys,
        partition: i32,
    ) -> Figures {
        let mut figures = NO_FIGURES;
        if windows.is_empty() {
            return figures;
        }
        let call = self.call_facts(ctx, event, keys, partition);
        windows.observe(&call, call.event, &mut figures);
        figures
    }

    fn call_facts(
        &self,
        ctx: &Ctx,
        event: &Event<'_>,
        keys: EventKeys,
        partition: i32,
    ) -> CallFacts {
        let mut filters = 0u16;
        for (index, node) in &self.filters {
            if self.arena.eval_root(node, ctx) {
                filters |= 1 << index;
            }
        }
        CallFacts {
            at_ms: event.occurred_at_ms,
            event: keys.task.short(),
            caller: ctx
                .caller
                .unwrap_or_else(|| crate::phone::caller_key(&event.caller_number)),
            callee: keys.callee,
            duration_s: event.call_duration_s,
            filters,
            partition,
        }
    }

    /// Scores with the given figures, keeping no windows: the tests' way to set figures.
    #[cfg(test)]
    fn score_figures(&self, event: &Event<'_>, figures: &Figures) -> Score {
        let mut ctx = self.context(event);
        ctx.nums[NumField::EVENT_NUMBERS..].copy_from_slice(figures);
        self.score_ctx(&ctx)
    }

    #[inline]
    fn score_ctx(&self, ctx: &Ctx) -> Score {
        let mut total: i32 = 0;
        let mut fired = Fired::new();
        for rule in &self.program {
            let [(m0, w0), (m1, w1)] = rule.pre;
            if (ctx.words[0] & m0 != w0) | (ctx.words[1] & m1 != w1) {
                continue;
            }
            if self.arena.eval_root(&rule.root, ctx) {
                total += rule.score;
                fired.push(rule.index);
            }
        }
        Score {
            total,
            level: self.thresholds.level_for(total),
            fired,
        }
    }

    /// Renders the reason of rule `rule_index` (an index from [`Score::fired`]) for `event`,
    /// which saw `figures`. The caller's number only ever appears masked. An index out of
    /// range renders as "".
    pub fn reason(&self, rule_index: u16, event: &Event<'_>, figures: &Figures) -> String {
        match self.rules.get(rule_index as usize) {
            Some(rule) => rule.reason.render(event, rule, figures),
            None => String::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The compiled evaluator.
//
// Every event is first resolved into a `Ctx`: two 64-bit fact words (caller flags, tri-state
// booleans, presence bits; the fraud-type hint as one bit), three numbers (NaN when absent)
// and the first 8 bytes of the caller's number. Each leaf of a condition is then one of three
// branch-light tests: a mask test on a fact word, an interval test on a number, or masked
// 8-byte prefix compares. Groups refer to their children as contiguous slices of one arena;
// at load, mask tests in a group on the same word are merged into one, and a group's cheap
// tests are put before its costly ones.

/// One enabled rule in the hot loop.
#[derive(Debug, Clone)]
struct Compiled {
    /// A necessary condition, `words[i] & mask == want` for each fact word, taken from the
    /// root's mask tests: most rules are rejected by it without walking their condition.
    pre: [(u64, u64); 2],
    root: Node,
    score: i32,
    index: u16,
}

/// Numeric fields, as indexes into [`Ctx::nums`]: the event's numbers, then the windowed
/// features' figures. Absent values are NaN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NumField(u8);

impl NumField {
    const CALL_DURATION_S: NumField = NumField(0);
    const CALL_MINUTES: NumField = NumField(1);
    const CALLEE_AGE: NumField = NumField(2);
    /// Numbers taken from the event itself; features follow.
    const EVENT_NUMBERS: usize = 3;

    fn feature(index: usize) -> NumField {
        NumField((Self::EVENT_NUMBERS + index) as u8)
    }
}

/// Boolean fields. Each has two bits in fact word 0, `false` and `true`; an absent value sets
/// neither, so `==` and `!=` are both false on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum BoolField {
    CalleePriorVictim = 0,
    SmsWithLink = 1,
    HasLocation = 2,
    HasCellId = 3,
}

/// Fact word 0: bits 0-15 caller flags, 16-23 two bits per [`BoolField`], 24 callee age
/// present, 32-47 the caller is on number list 0-15.
const WORD_FACTS: u8 = 0;
/// Fact word 1: the fraud-type hint, one bit (its index among the known types, or 63 when it
/// names none of them); no bit when absent.
const WORD_HINT: u8 = 1;
const BOOL_BASE: u32 = 16;
const AGE_PRESENT: u64 = 1 << 24;
/// Bit of a fraud-type hint that is present but names no known fraud type.
const HINT_UNKNOWN: u64 = 1 << 63;

/// At most this many number lists: one fact bit each.
const MAX_LISTS: usize = 16;
const LIST_BASE: u32 = 32;

fn list_bit(list: u8) -> u64 {
    1 << (LIST_BASE + u32::from(list))
}

fn bool_bit(field: BoolField, value: bool) -> u64 {
    1 << (BOOL_BASE + 2 * field as u32 + u32::from(value))
}

#[derive(Debug, Clone, Copy)]
enum Node {
    /// `word & mask == want`, inverted when `negate`. Fact words have no "absent" state, so
    /// negating is exact. Covers one bit set or clear, all of several set, none set.
    Match {
        word: u8,
        negate: bool,
        mask: u64,
        want: u64,
    },
    /// `word & mask != 0`: at least one of several bits set.
    AnyBit {
        word: u8,
        mask: u64,
    },
    /// `lo <= x <= hi`, or `x < lo || x > hi` when `negate`; false for an absent (NaN) x.
    Num {
        field: NumField,
        negate: bool,
        lo: f64,
        hi: f64,
    },
    /// The number starts with one of `prefixes[start..start + len]`.
    Prefix {
        start: u32,
        len: u32,
    },
    All {
        start: u32,
        len: u32,
    },
    Any {
        start: u32,
        len: u32,
    },
    Not {
        child: u32,
    },
}

/// The arena that group and prefix nodes point into.
#[derive(Debug, Clone, Default)]
struct Arena {
    nodes: Vec<Node>,
    /// (bytes, mask) of each prefix: little-endian, zero-padded to 8 bytes.
    prefixes: Vec<(u64, u64)>,
}

impl Arena {
    /// Tests a leaf inline; only groups cost a call.
    #[inline(always)]
    fn eval(&self, node: &Node, c: &Ctx) -> bool {
        match *node {
            Node::Match {
                word,
                negate,
                mask,
                want,
            } => (c.words[word as usize] & mask == want) != negate,
            Node::AnyBit { word, mask } => c.words[word as usize] & mask != 0,
            Node::Num {
                field,
                negate,
                lo,
                hi,
            } => {
                let x = c.nums[field.0 as usize];
                if negate {
                    x < lo || x > hi
                } else {
                    x >= lo && x <= hi
                }
            }
            Node::Prefix { start, len } => self.prefixes[start as usize..(start + len) as usize]
                .iter()
                .any(|&(bytes, mask)| c.head & mask == bytes),
            _ => self.eval_group(node, c),
        }
    }

    /// A rule's root: a top-level group's loop is inlined into the caller too.
    #[inline(always)]
    fn eval_root(&self, node: &Node, c: &Ctx) -> bool {
        match *node {
            Node::All { start, len } => self.all(start, len, c),
            Node::Any { start, len } => self.any(start, len, c),
            _ => self.eval(node, c),
        }
    }

    #[inline(never)]
    fn eval_group(&self, node: &Node, c: &Ctx) -> bool {
        match *node {
            Node::All { start, len } => self.all(start, len, c),
            Node::Any { start, len } => self.any(start, len, c),
            Node::Not { child } => !self.eval(&self.nodes[child as usize], c),
            _ => self.eval(node, c),
        }
    }

    // Loops written out rather than `Iterator::all`/`any`: with the leaf tests inlined into
    // their closure those stayed calls, one per rule and event.
    #[inline(always)]
    fn all(&self, start: u32, len: u32, c: &Ctx) -> bool {
        for n in self.children(start, len) {
            if !self.eval(n, c) {
                return false;
            }
        }
        true
    }

    #[inline(always)]
    fn any(&self, start: u32, len: u32, c: &Ctx) -> bool {
        for n in self.children(start, len) {
            if self.eval(n, c) {
                return true;
            }
        }
        false
    }

    #[inline(always)]
    fn children(&self, start: u32, len: u32) -> &[Node] {
        &self.nodes[start as usize..(start + len) as usize]
    }
}

/// The first 8 bytes of `s`, zero-padded, little-endian.
#[inline]
fn head8(s: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = s.len().min(8);
    buf[..n].copy_from_slice(&s[..n]);
    u64::from_le_bytes(buf)
}

/// The known fraud types, for a fast lookup of an event's hint.
#[derive(Debug, Clone, Default)]
struct FraudTypes {
    /// Sorted names; a hint's bit is its index here.
    names: Vec<Box<str>>,
    /// (length, first 8 bytes) of each name, to reject mismatches without a string compare.
    keys: Vec<(usize, u64)>,
}

impl FraudTypes {
    fn new(mut names: Vec<Box<str>>) -> FraudTypes {
        names.sort();
        let keys = names
            .iter()
            .map(|n| (n.len(), head8(n.as_bytes())))
            .collect();
        FraudTypes { names, keys }
    }

    #[inline]
    fn bit(&self, hint: &str) -> u64 {
        let key = (hint.len(), head8(hint.as_bytes()));
        for (i, k) in self.keys.iter().enumerate() {
            if *k == key && *self.names[i] == *hint {
                return 1 << i;
            }
        }
        HINT_UNKNOWN
    }
}

/// An event's fields, resolved once per [`RuleSet::score`] call.
struct Ctx {
    words: [u64; 2],
    nums: [f64; NumField::EVENT_NUMBERS + MAX_FEATURES],
    head: u64,
    /// The caller's key ([`crate::phone::caller_key`]), when the rules have lists or
    /// windows.
    caller: Option<u64>,
}

impl Ctx {
    #[inline]
    fn new(e: &Event<'_>, fraud_types: &FraudTypes) -> Ctx {
        fn tri(field: BoolField, b: Option<bool>) -> u64 {
            b.map_or(0, |v| bool_bit(field, v))
        }
        let facts = u64::from(e.caller_flags.0)
            | tri(BoolField::CalleePriorVictim, e.callee_prior_victim)
            | tri(BoolField::SmsWithLink, e.sms_with_link)
            | tri(BoolField::HasLocation, Some(e.callee_location.is_some()))
            | tri(BoolField::HasCellId, Some(e.cell_id.is_some()))
            | if e.callee_age.is_some() {
                AGE_PRESENT
            } else {
                0
            };
        let hint = match e.fraud_type_hint.as_deref() {
            None => 0,
            Some(h) => fraud_types.bit(h),
        };
        let mut nums = [f64::NAN; NumField::EVENT_NUMBERS + MAX_FEATURES];
        nums[..NumField::EVENT_NUMBERS].copy_from_slice(&[
            e.call_duration_s,
            e.call_duration_s / 60.0,
            e.callee_age.map_or(f64::NAN, f64::from),
        ]);
        Ctx {
            words: [facts, hint],
            nums,
            head: head8(e.caller_number.as_bytes()),
            caller: None,
        }
    }
}
