//! Parsing and validating a rule file, and compiling its conditions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::{Spanned, Table, Value};

use crate::event::CallerFlag;
use crate::features::{Aggregate, FeatureSpec, KeySide, WindowLimits, MAX_FEATURES};

use super::error::line_col;
use super::template::{Template, PLACEHOLDERS};
use super::{
    bool_bit, head8, list_bit, Arena, BoolField, Compiled, FraudTypes, Node, NumField, NumberList,
    Problem, ProblemKind, Rule, RuleRef, RuleSet, RulesError, Thresholds, AGE_PRESENT, MAX_LISTS,
    WORD_FACTS, WORD_HINT,
};

/// Fraud types a rule may name without declaring them in `fraud_types`.
pub(crate) const BUILTIN_FRAUD_TYPES: [&str; 8] = [
    "impersonate_police",
    "impersonate_bank",
    "impersonate_customer_service",
    "investment",
    "romance",
    "loan",
    "part_time_job",
    "other",
];

/// Scores are bounded so that no rule set can overflow the total.
const MAX_ABS_SCORE: i64 = 10_000;
/// Bit 63 of the hint mask is reserved for "a hint no rule names".
const MAX_FRAUD_TYPES: usize = 63;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: Option<String>,
    #[serde(default)]
    fraud_types: Vec<String>,
    levels: Option<RawLevels>,
    windows: Option<RawWindows>,
    #[serde(default)]
    list: Vec<Spanned<Table>>,
    #[serde(default)]
    feature: Vec<Spanned<Table>>,
    #[serde(default)]
    rule: Vec<Spanned<Table>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindows {
    #[serde(default, with = "humantime_serde")]
    allowed_lateness: Option<std::time::Duration>,
    max_calls_per_key: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawList {
    id: String,
    description: String,
    file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    id: String,
    description: String,
    key: String,
    aggregate: String,
    window: String,
    #[serde(rename = "where")]
    filter: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLevels {
    low: i32,
    medium: i32,
    high: i32,
    critical: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    description: String,
    reason: String,
    score: i64,
    #[serde(default = "enabled_by_default")]
    enabled: bool,
    when: Value,
}

fn enabled_by_default() -> bool {
    true
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(crate) fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    format!("sha256:{}", hex::encode(&digest[..8]))
}

pub(crate) fn compile(text: &str, origin: &str, dir: &Path) -> Result<RuleSet, RulesError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let (line, column) = match e.span() {
            Some(span) => line_col(&text.as_bytes()[..span.start.min(text.len())]),
            None => (0, 0),
        };
        RulesError::Syntax {
            file: origin.to_owned(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })?;

    let mut problems: Vec<Problem> = Vec::new();
    let file_problem = |kind, message: String| Problem {
        kind,
        rule: None,
        path: String::new(),
        message,
    };

    let mut fraud_types: Vec<Box<str>> = BUILTIN_FRAUD_TYPES.iter().map(|t| (*t).into()).collect();
    for t in &raw.fraud_types {
        if !valid_id(t) {
            problems.push(file_problem(
                ProblemKind::BadFraudTypes,
                format!("fraud_types: `{t}` is not a fraud type name (1-64 of a-z, 0-9, _ and -)"),
            ));
        } else if !fraud_types.iter().any(|k| **k == **t) {
            fraud_types.push(t.as_str().into());
        }
    }
    if fraud_types.len() > MAX_FRAUD_TYPES {
        problems.push(file_problem(
            ProblemKind::BadFraudTypes,
            format!(
                "fraud_types: {} fraud types in all; at most {MAX_FRAUD_TYPES} are supported",
                fraud_types.len()
            ),
        ));
        fraud_types.truncate(MAX_FRAUD_TYPES);
    }
    fraud_types.sort();

    let thresholds = match &raw.levels {
        None => {
            problems.push(file_problem(
                ProblemKind::BadLevels,
                "levels: the `[levels]` table is missing; e.g. `[levels]` with \
                 `low = 20`, `medium = 40`, `high = 60`, `critical = 90`"
                    .into(),
            ));
            None
        }
        Some(l) => {
            let t = Thresholds::new(l.low, l.medium, l.high, l.critical);
            if t.is_none() {
                problems.push(file_problem(
                    ProblemKind::BadLevels,
                    format!(
                        "levels: thresholds must increase strictly from at least 1, \
                         but low = {}, medium = {}, high = {}, critical = {}",
                        l.low, l.medium, l.high, l.critical
                    ),
                ));
            }
            t
        }
    };

    if raw.rule.is_empty() {
        problems.push(file_problem(
            ProblemKind::NoRules,
            "the file defines no rules; add at least one `[[rule]]`".into(),
        ));
    }
    if raw.rule.len() > usize::from(u16::MAX) {
        problems.push(file_problem(
            ProblemKind::TooManyRules,
            format!(
                "{} rules; at most {} are supported",
                raw.rule.len(),
                u16::MAX
            ),
        ));
    }

    let mut arena = Arena::default();
    let window_limits = compile_windows(raw.windows.as_ref(), &mut problems);
    let mut features = compile_features(raw.feature, text, &fraud_types, &mut arena, &mut problems);
    let feature_ids: Vec<&str> = features.specs.iter().map(|f| f.id.as_str()).collect();
    let (lists, declared_lists) = load_lists(raw.list, text, dir, &mut problems);
    // Every well-named list, loaded or not, so that a list whose file is bad is reported
    // once, not again by every rule that tests it. (Any problem fails the whole load, so on
    // success these are exactly the loaded lists, in order.)
    let list_ids: Vec<&str> = declared_lists.iter().map(String::as_str).collect();

    let mut rules: Vec<Rule> = Vec::with_capacity(raw.rule.len());
    let mut program: Vec<Compiled> = Vec::new();
    // Features an enabled rule reads: only those are kept (see `FeatureSpec::used`); lists
    // an enabled rule tests: only those are looked up.
    let mut used_features = 0u16;
    let mut used_lists = 0u16;
    #[cfg(test)]
    let mut reference = Vec::new();
    // id -> (number, line) of its first definition
    let mut seen: HashMap<String, (usize, Option<usize>)> = HashMap::new();

    for (i, spanned) in raw.rule.into_iter().enumerate() {
        let span = spanned.span();
        let line = (span.start < span.end && span.end <= text.len())
            .then(|| line_col(&text.as_bytes()[..span.start]).0);
        let table = spanned.into_inner();
        let id_guess = table
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| valid_id(id))
            .map(str::to_owned);
        let rref = RuleRef {
            table: "rule",
            number: i + 1,
            id: id_guess,
            line,
        };
        let mut problem = |kind, path: &str, message: String| {
            problems.push(Problem {
                kind,
                rule: Some(rref.clone()),
                path: path.to_owned(),
                message,
            })
        };

        let raw_rule: RawRule = match serde_path_to_error::deserialize(Value::Table(table)) {
            Ok(r) => r,
            Err(e) => {
                let path = e.path().to_string();
                let message = e.inner().message().trim_end().to_owned();
                let kind = if message.starts_with("unknown field") {
                    ProblemKind::UnknownKey
                } else {
                    ProblemKind::BadKey
                };
                // An unknown key names itself; a missing one has the path ".".
                let path = if kind == ProblemKind::UnknownKey || path == "." {
                    ""
                } else {
                    &path
                };
                let message = match message.strip_prefix("unknown field") {
                    Some(rest) => format!("unknown key{rest}"),
                    None => message,
                };
                problem(kind, path, message);
                continue;
            }
        };

        if !valid_id(&raw_rule.id) {
            problem(
                ProblemKind::BadId,
                "id",
                format!(
                    "bad rule id {:?}: use 1-64 characters of a-z, 0-9, `_` and `-`",
                    raw_rule.id
                ),
            );
        } else if let Some((number, first_line)) = seen.get(&raw_rule.id) {
            let at = match first_line {
                Some(l) => format!("rule #{number} (line {l})"),
                None => format!("rule #{number}"),
            };
            problem(
                ProblemKind::DuplicateId,
                "id",
                format!("duplicate rule id `{}`: {at} already uses it", raw_rule.id),
            );
        } else {
            seen.insert(raw_rule.id.clone(), (i + 1, line));
        }

        if raw_rule.description.trim().is_empty() {
            problem(
                ProblemKind::BadKey,
                "description",
                "the description is empty".into(),
            );
        }
        if !(-MAX_ABS_SCORE..=MAX_ABS_SCORE).contains(&raw_rule.score) {
            problem(
                ProblemKind::BadScore,
                "score",
                format!(
                    "score {} is outside -{MAX_ABS_SCORE}..={MAX_ABS_SCORE}",
                    raw_rule.score
                ),
            );
        }

        let template = match Template::parse(&raw_rule.reason, &feature_ids) {
            Ok(t) => Some(t),
            Err(errs) => {
                for (kind, message) in errs {
                    problem(kind, "reason", message);
                }
                None
            }
        };

        let mut cx = CondCx {
            fraud_types: &fraud_types,
            features: &feature_ids,
            lists: &list_ids,
            in_filter: false,
            used: 0,
            used_lists: 0,
            problems: Vec::new(),
        };
        let cond = cx.cond(&raw_rule.when, "when");
        for (kind, path, message) in cx.problems {
            problem(kind, &path, message);
        }

        if let (Some(template), Some(cond)) = (template, cond) {
            let score = raw_rule.score.clamp(-MAX_ABS_SCORE, MAX_ABS_SCORE) as i32;
            if raw_rule.enabled {
                used_features |= cx.used | template.features();
                used_lists |= cx.used_lists;
                let root = lower(&cond, &mut arena);
                #[cfg(test)]
                reference.push((i as u16, score, cond.clone()));
                program.push(Compiled {
                    pre: prefilter(&root, &arena),
                    root,
                    score,
                    index: i.min(usize::from(u16::MAX)) as u16,
                });
            }
            rules.push(Rule {
                id: raw_rule.id,
                description: raw_rule.description,
                score,
                enabled: raw_rule.enabled,
                reason_template: raw_rule.reason,
                reason: template,
            });
        }
    }

    for (i, spec) in features.specs.iter_mut().enumerate() {
        spec.used = used_features & (1 << i) != 0;
    }
    match thresholds {
        Some(thresholds) if problems.is_empty() => Ok(RuleSet {
            name: raw.name.unwrap_or_else(|| origin.to_owned()),
            version: version_of(text.as_bytes()),
            rules,
            thresholds,
            program,
            arena,
            fraud_types: FraudTypes::new(fraud_types),
            features: features.specs,
            filters: features.filters,
            window_limits,
            used_lists: (0..lists.len() as u8)
                .filter(|i| used_lists & (1 << i) != 0)
                .collect(),
            lists: std::sync::Arc::new(lists),
            #[cfg(test)]
            reference,
        }),
        _ => Err(RulesError::Invalid {
            file: origin.to_owned(),
            problems,
        }),
    }
}

/// The longest window a feature may declare: state grows with the calls inside it.
const MAX_WINDOW: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Reads the `[[list]]` files (relative to `dir`, the rule file's directory). Returns the
/// lists read and the ids of every well-formed `[[list]]`, read or not.
fn load_lists(
    raw: Vec<Spanned<Table>>,
    text: &str,
    dir: &Path,
    problems: &mut Vec<Problem>,
) -> (Vec<NumberList>, Vec<String>) {
    let mut lists: Vec<NumberList> = Vec::new();
    let mut declared: Vec<String> = Vec::new();
    for (i, spanned) in raw.into_iter().enumerate() {
        let span = spanned.span();
        let line = (span.start < span.end && span.end <= text.len())
            .then(|| line_col(&text.as_bytes()[..span.start]).0);
        let table = spanned.into_inner();
        let lref = RuleRef {
            table: "list",
            number: i + 1,
            id: table
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| valid_id(id))
                .map(str::to_owned),
            line,
        };
        let mut problem = |kind, path: &str, message: String| {
            problems.push(Problem {
                kind,
                rule: Some(lref.clone()),
                path: path.to_owned(),
                message,
            })
        };
        let raw: RawList = match serde_path_to_error::deserialize(Value::Table(table)) {
            Ok(r) => r,
            Err(e) => {
                let message = e.inner().message().trim_end().to_owned();
                problem(ProblemKind::BadList, "", message);
                continue;
            }
        };
        if !valid_id(&raw.id) {
            problem(
                ProblemKind::BadId,
                "id",
                format!(
                    "bad list id {:?}: use 1-64 characters of a-z, 0-9, `_` and `-`",
                    raw.id
                ),
            );
            continue;
        }
        if declared.contains(&raw.id) {
            problem(
                ProblemKind::DuplicateId,
                "id",
                format!("duplicate list id `{}`", raw.id),
            );
            continue;
        }
        if declared.len() == MAX_LISTS {
            problem(
                ProblemKind::BadList,
                "",
                format!("at most {MAX_LISTS} lists are supported"),
            );
            continue;
        }
        declared.push(raw.id.clone());
        match NumberList::load(&raw.id, &raw.description, &dir.join(&raw.file)) {
            Ok(list) => lists.push(list),
            Err(messages) => {
                for m in messages {
                    problem(ProblemKind::BadList, "file", m);
                }
            }
        }
    }
    (lists, declared)
}

fn compile_windows(raw: Option<&RawWindows>, problems: &mut Vec<Problem>) -> WindowLimits {
    let mut limits = WindowLimits::default();
    let Some(raw) = raw else {
        return limits;
    };
    let mut problem = |message: String| {
        problems.push(Problem {
            kind: ProblemKind::BadWindows,
            rule: None,
            path: String::new(),
            message,
        })
    };
    if let Some(l) = raw.allowed_lateness {
        if l > MAX_WINDOW {
            problem(format!(
                "windows.allowed_lateness: {} is longer than the longest window allowed ({})",
                humantime::format_duration(l),
                humantime::format_duration(MAX_WINDOW)
            ));
        }
        limits.allowed_lateness = l;
    }
    if let Some(n) = raw.max_calls_per_key {
        if !(1..=1_000_000).contains(&n) {
            problem(format!(
                "windows.max_calls_per_key: {n} is outside 1..=1000000"
            ));
        }
        limits.max_calls_per_key = n;
    }
    limits
}

/// The checked features and the lowered `where` of those that have one.
#[derive(Default)]
struct CompiledFeatures {
    specs: Vec<FeatureSpec>,
    filters: Vec<(u8, Node)>,
}

fn compile_features(
    raw: Vec<Spanned<Table>>,
    text: &str,
    fraud_types: &[Box<str>],
    arena: &mut Arena,
    problems: &mut Vec<Problem>,
) -> CompiledFeatures {
    let mut out = CompiledFeatures::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    // Every declared id, so that a `where` naming a feature is told why it cannot.
    let declared: Vec<String> = raw
        .iter()
        .filter_map(|t| t.get_ref().get("id")?.as_str().map(str::to_owned))
        .collect();
    let declared: Vec<&str> = declared.iter().map(String::as_str).collect();
    for (i, spanned) in raw.into_iter().enumerate() {
        let span = spanned.span();
        let line = (span.start < span.end && span.end <= text.len())
            .then(|| line_col(&text.as_bytes()[..span.start]).0);
        let table = spanned.into_inner();
        let fref = RuleRef {
            table: "feature",
            number: i + 1,
            id: table
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| valid_id(id))
                .map(str::to_owned),
            line,
        };
        let mut problem = |kind, path: &str, message: String| {
            problems.push(Problem {
                kind,
                rule: Some(fref.clone()),
                path: path.to_owned(),
                message,
            })
        };
        let raw: RawFeature = match serde_path_to_error::deserialize(Value::Table(table)) {
            Ok(r) => r,
            Err(e) => {
                let message = e.inner().message().trim_end().to_owned();
                let (kind, message) = match message.strip_prefix("unknown field") {
                    Some(rest) => (ProblemKind::UnknownKey, format!("unknown key{rest}")),
                    None => (ProblemKind::BadKey, message),
                };
                problem(kind, "", message);
                continue;
            }
        };
        let mut ok = true;
        if !valid_id(&raw.id) {
            problem(
                ProblemKind::BadId,
                "id",
                format!(
                    "bad feature id {:?}: use 1-64 characters of a-z, 0-9, `_` and `-`",
                    raw.id
                ),
            );
            ok = false;
        } else if FIELDS.iter().any(|f| f.name == raw.id) || PLACEHOLDERS.contains(&raw.id.as_str())
        {
            problem(
                ProblemKind::BadId,
                "id",
                format!(
                    "feature id `{}` is already the name of an event field",
                    raw.id
                ),
            );
            ok = false;
        } else if let Some(number) = seen.get(&raw.id) {
            problem(
                ProblemKind::DuplicateId,
                "id",
                format!(
                    "duplicate feature id `{}`: feature #{number} already uses it",
                    raw.id
                ),
            );
            ok = false;
        } else {
            seen.insert(raw.id.clone(), i + 1);
        }
        let key = match raw.key.as_str() {
            "caller" => Some(KeySide::Caller),
            "callee" => Some(KeySide::Callee),
            other => {
                problem(
                    ProblemKind::BadFeature,
                    "key",
                    format!("unknown key side `{other}`; use caller or callee"),
                );
                None
            }
        };
        let aggregate = Aggregate::ALL
            .into_iter()
            .find(|a| a.as_str() == raw.aggregate);
        if aggregate.is_none() {
            problem(
                ProblemKind::BadFeature,
                "aggregate",
                format!(
                    "unknown aggregate `{}`; use one of {}",
                    raw.aggregate,
                    Aggregate::ALL.map(Aggregate::as_str).join(", ")
                ),
            );
        }
        let window = match humantime::parse_duration(&raw.window) {
            Ok(w) if w.is_zero() || w > MAX_WINDOW => {
                problem(
                    ProblemKind::BadFeature,
                    "window",
                    format!(
                        "window {} is outside 1s..={}",
                        raw.window,
                        humantime::format_duration(MAX_WINDOW)
                    ),
                );
                None
            }
            Ok(w) => Some(w),
            Err(e) => {
                problem(
                    ProblemKind::BadFeature,
                    "window",
                    format!(
                        "window {:?} is not a duration such as \"10m\" or \"1h\": {e}",
                        raw.window
                    ),
                );
                None
            }
        };
        match (aggregate, key, &raw.filter) {
            (Some(Aggregate::Share), _, None) => {
                problem(
                    ProblemKind::BadFeature,
                    "where",
                    "a share needs a `where`: the share of calls that match it".into(),
                );
                ok = false;
            }
            (Some(Aggregate::SecondsSinceLastTask), Some(KeySide::Caller), _) => {
                problem(
                    ProblemKind::BadFeature,
                    "key",
                    "seconds_since_last_task is about the person at risk: use key = \"callee\""
                        .into(),
                );
                ok = false;
            }
            (Some(Aggregate::SecondsSinceLastTask), _, Some(_)) => {
                problem(
                    ProblemKind::BadFeature,
                    "where",
                    "seconds_since_last_task counts tasks, not calls: it takes no `where`".into(),
                );
                ok = false;
            }
            _ => {}
        }
        let filter = raw.filter.as_ref().map(|v| {
            let mut cx = CondCx {
                fraud_types,
                features: &declared,
                lists: &[],
                in_filter: true,
                used: 0,
                used_lists: 0,
                problems: Vec::new(),
            };
            let cond = cx.cond(v, "where");
            for (kind, path, message) in cx.problems {
                problem(kind, &path, message);
            }
            cond
        });
        let (Some(key), Some(aggregate), Some(window), true) = (key, aggregate, window, ok) else {
            continue;
        };
        let index = out.specs.len();
        if index == MAX_FEATURES {
            problem(
                ProblemKind::BadFeature,
                "",
                format!("at most {MAX_FEATURES} features are supported"),
            );
            continue;
        }
        match filter {
            Some(Some(cond)) => out.filters.push((index as u8, lower(&cond, arena))),
            Some(None) => continue,
            None => {}
        }
        out.specs.push(FeatureSpec {
            id: raw.id,
            description: raw.description,
            key,
            aggregate,
            window,
            used: false,
            filter: raw.filter.map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            }),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------
// Conditions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A condition as written, checked; [`lower`] turns it into evaluator nodes.
#[derive(Debug, Clone)]
pub(super) enum Cond {
    Num {
        field: NumField,
        op: CmpOp,
        value: f64,
    },
    /// `field == value`, or `field != value` when `negate` (false when absent either way).
    Bool {
        field: BoolField,
        value: bool,
        negate: bool,
    },
    /// A number is present (callee_age, or a feature's figure).
    NumExists(NumField),
    BoolExists(BoolField),
    /// The hint's bit is in `mask`; `negate`: a hint is present and its bit is not.
    Hint {
        mask: u64,
        negate: bool,
    },
    FlagsAny(u16),
    FlagsAll(u16),
    FlagsNone(u16),
    Prefix(Vec<String>),
    /// The caller is on list `list` (not on it when `negate`).
    InList {
        list: u8,
        negate: bool,
    },
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

/// Some of the bits in `mask` set.
fn any_bit(word: u8, mask: u64) -> Node {
    if mask.count_ones() == 1 {
        all_bits(word, mask)
    } else {
        Node::AnyBit { word, mask }
    }
}

/// All the bits in `mask` set.
fn all_bits(word: u8, mask: u64) -> Node {
    Node::Match {
        word,
        negate: false,
        mask,
        want: mask,
    }
}

/// None of the bits in `mask` set.
fn no_bits(word: u8, mask: u64) -> Node {
    Node::Match {
        word,
        negate: false,
        mask,
        want: 0,
    }
}

/// Lowers a checked condition to a node whose children live in `arena`.
fn lower(cond: &Cond, arena: &mut Arena) -> Node {
    let u32_len = |n: usize| u32::try_from(n).expect("rule set too large");
    match cond {
        Cond::Num { field, op, value } => {
            let v = *value;
            let (lo, hi, negate) = match op {
                CmpOp::Eq => (v, v, false),
                CmpOp::Ne => (v, v, true),
                CmpOp::Lt => (f64::NEG_INFINITY, v.next_down(), false),
                CmpOp::Le => (f64::NEG_INFINITY, v, false),
                CmpOp::Gt => (v.next_up(), f64::INFINITY, false),
                CmpOp::Ge => (v, f64::INFINITY, false),
            };
            Node::Num {
                field: *field,
                negate,
                lo,
                hi,
            }
        }
        // A present value has exactly one of its two bits set, so `!= v` is `== !v`.
        Cond::Bool {
            field,
            value,
            negate,
        } => all_bits(WORD_FACTS, bool_bit(*field, value != negate)),
        Cond::NumExists(NumField::CALLEE_AGE) => all_bits(WORD_FACTS, AGE_PRESENT),
        // Any number at all: false only for NaN, the absent figure.
        Cond::NumExists(field) => Node::Num {
            field: *field,
            negate: false,
            lo: f64::NEG_INFINITY,
            hi: f64::INFINITY,
        },
        Cond::BoolExists(f) => any_bit(WORD_FACTS, bool_bit(*f, false) | bool_bit(*f, true)),
        // A present hint has exactly one bit set, so "present and not in mask" is "in !mask".
        Cond::Hint { mask, negate } => any_bit(WORD_HINT, if *negate { !mask } else { *mask }),
        Cond::FlagsAny(m) => any_bit(WORD_FACTS, u64::from(*m)),
        Cond::FlagsAll(m) => all_bits(WORD_FACTS, u64::from(*m)),
        Cond::FlagsNone(m) => no_bits(WORD_FACTS, u64::from(*m)),
        Cond::InList {
            list,
            negate: false,
        } => all_bits(WORD_FACTS, list_bit(*list)),
        Cond::InList { list, negate: true } => no_bits(WORD_FACTS, list_bit(*list)),
        Cond::Prefix(prefixes) => {
            let start = u32_len(arena.prefixes.len());
            for p in prefixes {
                let mask = match p.len() {
                    8.. => u64::MAX,
                    n => (1u64 << (8 * n)) - 1,
                };
                arena.prefixes.push((head8(p.as_bytes()), mask));
            }
            Node::Prefix {
                start,
                len: u32_len(prefixes.len()),
            }
        }
        Cond::All(children) | Cond::Any(children) => {
            let all = matches!(cond, Cond::All(_));
            let mut merged: Vec<Node> = Vec::with_capacity(children.len());
            'next: for child in children {
                let node = lower(child, arena);
                for m in merged.iter_mut() {
                    if let Some(both) = merge(all, m, &node) {
                        *m = both;
                        continue 'next;
                    }
                }
                merged.push(node);
            }
            // Cheap tests first; `all`/`any` short-circuit and the tests have no side effects.
            merged.sort_by_key(cost);
            if merged.len() == 1 {
                return merged[0];
            }
            let start = u32_len(arena.nodes.len());
            let len = u32_len(merged.len());
            arena.nodes.extend(merged);
            if all {
                Node::All { start, len }
            } else {
                Node::Any { start, len }
            }
        }
        Cond::Not(inner) => match lower(inner, arena) {
            Node::AnyBit { word, mask } => no_bits(word, mask),
            Node::Match {
                word,
                negate: false,
                mask,
                want,
            } if mask.count_ones() == 1 => Node::Match {
                word,
                negate: false,
                mask,
                want: want ^ mask,
            },
            Node::Match {
                word,
                negate,
                mask,
                want,
            } => Node::Match {
                word,
                negate: !negate,
                mask,
                want,
            },
            node => {
                arena.nodes.push(node);
                Node::Not {
                    child: u32_len(arena.nodes.len() - 1),
                }
            }
        },
    }
}

/// The root's plain mask tests (in an `all`, merged to at most one per word) as a necessary
/// condition per fact word; `(0, 0)` where there is none.
fn prefilter(root: &Node, arena: &Arena) -> [(u64, u64); 2] {
    let mut pre = [(0, 0); 2];
    let mut take = |n: &Node| {
        if let Node::Match {
            word,
            negate: false,
            mask,
            want,
        } = *n
        {
            pre[word as usize] = (mask, want);
        }
    };
    match *root {
        Node::All { start, len } => arena.children(start, len).iter().for_each(take),
        ref node => take(node),
    }
    pre
}

fn cost(node: &Node) -> u8 {
    match node {
        Node::Match { .. } | Node::AnyBit { .. } => 0,
        Node::Num { .. } => 1,
        Node::Prefix { .. } => 2,
        Node::All { .. } | Node::Any { .. } | Node::Not { .. } => 3,
    }
}

/// One mask test equivalent to `a and b` (in `all`) or `a or b` (in `any`), where there is.
fn merge(all: bool, a: &Node, b: &Node) -> Option<Node> {
    if all {
        if let (
            Node::Match {
                word: wa,
                negate: false,
                mask: ma,
                want: va,
            },
            Node::Match {
                word: wb,
                negate: false,
                mask: mb,
                want: vb,
            },
        ) = (a, b)
        {
            // Consistent where both look at the same bits (otherwise never true; left as is).
            if wa == wb && va & mb == vb & ma {
                return Some(Node::Match {
                    word: *wa,
                    negate: false,
                    mask: ma | mb,
                    want: va | vb,
                });
            }
        }
        return None;
    }
    // In `any`: tests "some of these bits set" on one word combine.
    let some_of = |n: &Node| match *n {
        Node::AnyBit { word, mask } => Some((word, mask)),
        Node::Match {
            word,
            negate: false,
            mask,
            want,
        } if mask.count_ones() == 1 && want == mask => Some((word, mask)),
        _ => None,
    };
    match (some_of(a), some_of(b)) {
        (Some((wa, ma)), Some((wb, mb))) if wa == wb => Some(any_bit(wa, ma | mb)),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum FieldKind {
    Num(NumField),
    Bool(BoolField),
    Hint,
    Flags,
    Prefix,
}

struct FieldDef {
    name: &'static str,
    kind: FieldKind,
    /// May be absent from an event (then every comparison on it is false).
    optional: bool,
}

const FIELDS: [FieldDef; 10] = [
    FieldDef {
        name: "call_duration_s",
        kind: FieldKind::Num(NumField::CALL_DURATION_S),
        optional: false,
    },
    FieldDef {
        name: "call_minutes",
        kind: FieldKind::Num(NumField::CALL_MINUTES),
        optional: false,
    },
    FieldDef {
        name: "callee_age",
        kind: FieldKind::Num(NumField::CALLEE_AGE),
        optional: true,
    },
    FieldDef {
        name: "fraud_type_hint",
        kind: FieldKind::Hint,
        optional: true,
    },
    FieldDef {
        name: "callee_prior_victim",
        kind: FieldKind::Bool(BoolField::CalleePriorVictim),
        optional: true,
    },
    FieldDef {
        name: "sms_with_link",
        kind: FieldKind::Bool(BoolField::SmsWithLink),
        optional: true,
    },
    FieldDef {
        name: "has_location",
        kind: FieldKind::Bool(BoolField::HasLocation),
        optional: false,
    },
    FieldDef {
        name: "has_cell_id",
        kind: FieldKind::Bool(BoolField::HasCellId),
        optional: false,
    },
    FieldDef {
        name: "caller_flags",
        kind: FieldKind::Flags,
        optional: false,
    },
    FieldDef {
        name: "caller_number",
        kind: FieldKind::Prefix,
        optional: false,
    },
];

const ALL_OPS: [&str; 16] = [
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "in",
    "not_in",
    "has",
    "has_any",
    "has_all",
    "has_none",
    "starts_with",
    "in_list",
    "not_in_list",
    "exists",
];

impl FieldDef {
    fn kind_name(&self) -> &'static str {
        match self.kind {
            FieldKind::Num(_) => "a number",
            FieldKind::Bool(_) => "true or false",
            FieldKind::Hint => "a fraud type",
            FieldKind::Flags => "a set of caller flags",
            FieldKind::Prefix => "a phone number (tested by prefix)",
        }
    }

    fn ops(&self) -> &'static [&'static str] {
        match (self.kind, self.optional) {
            (FieldKind::Num(_), false) => &ALL_OPS[..6],
            (FieldKind::Num(_), true) => &["==", "!=", "<", "<=", ">", ">=", "exists"],
            (FieldKind::Bool(_), false) => &["==", "!="],
            (FieldKind::Bool(_), true) => &["==", "!=", "exists"],
            (FieldKind::Hint, _) => &["==", "!=", "in", "not_in", "exists"],
            (FieldKind::Flags, _) => &["has", "has_any", "has_all", "has_none"],
            (FieldKind::Prefix, _) => &["starts_with", "in_list", "not_in_list"],
        }
    }
}

fn field_names() -> String {
    FIELDS.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
}

fn flag_names() -> String {
    CallerFlag::ALL
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

fn suggest_op(op: &str) -> Option<&'static str> {
    Some(match op {
        "=" | "eq" | "is" => "==",
        "<>" | "ne" | "=!" => "!=",
        "=>" | "ge" | "gte" => ">=",
        "=<" | "le" | "lte" => "<=",
        "gt" => ">",
        "lt" => "<",
        "contains" | "includes" => "has",
        "any" | "contains_any" => "has_any",
        "all" | "contains_all" => "has_all",
        "none" => "has_none",
        "notin" | "not in" => "not_in",
        "prefix" | "startswith" | "starts" => "starts_with",
        "present" | "exist" => "exists",
        _ => return None,
    })
}

/// A comparison's value: typed when written as `value = ...` in a table, text when written
/// in the compact string form (and then read as the field's type).
enum LeafValue<'v> {
    Absent,
    Toml(&'v Value),
    Text(String),
    List(Vec<String>),
}

impl LeafValue<'_> {
    fn describe(&self) -> String {
        match self {
            LeafValue::Absent => "no value".into(),
            LeafValue::Text(s) => format!("`{s}`"),
            LeafValue::List(items) => format!("the list [{}]", items.join(", ")),
            LeafValue::Toml(v) => {
                let what = match v {
                    Value::String(_) => "the string",
                    Value::Integer(_) => "the integer",
                    Value::Float(_) => "the number",
                    Value::Boolean(_) => "the boolean",
                    Value::Datetime(_) => "the date",
                    Value::Array(_) => "the list",
                    Value::Table(_) => "the table",
                };
                format!("{what} {v}")
            }
        }
    }

    fn number(&self) -> Option<f64> {
        let n = match self {
            LeafValue::Toml(Value::Integer(i)) => *i as f64,
            LeafValue::Toml(Value::Float(f)) => *f,
            LeafValue::Text(s) => s.parse::<f64>().ok()?,
            _ => return None,
        };
        n.is_finite().then_some(n)
    }

    fn boolean(&self) -> Option<bool> {
        match self {
            LeafValue::Toml(Value::Boolean(b)) => Some(*b),
            LeafValue::Text(s) if s == "true" => Some(true),
            LeafValue::Text(s) if s == "false" => Some(false),
            _ => None,
        }
    }

    fn string(&self) -> Option<String> {
        match self {
            LeafValue::Toml(Value::String(s)) => Some(s.clone()),
            LeafValue::Text(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// A list of strings; a single string is a list of one.
    fn strings(&self) -> Option<Vec<String>> {
        match self {
            LeafValue::Toml(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect(),
            LeafValue::List(items) => Some(items.clone()),
            _ => self.string().map(|s| vec![s]),
        }
    }
}

fn unquote(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() >= 2 && (b[0] == b'"' || b[0] == b'\'') && b[b.len() - 1] == b[0] {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// The compact form: `"<field> <operator> [<value>]"`, e.g. `"callee_age >= 60"`,
/// `"caller_flags has_any [overseas, voip]"`, `"callee_age exists"`.
fn parse_leaf_text(s: &str) -> Result<(&str, &str, LeafValue<'static>), String> {
    let text = s.trim();
    let ident_end = |t: &str| {
        t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(t.len())
    };
    let field_end = ident_end(text);
    let field = &text[..field_end];
    let rest = text[field_end..].trim_start();
    let op_end = if rest.starts_with(['=', '!', '<', '>']) {
        rest.find(|c: char| !matches!(c, '=' | '!' | '<' | '>'))
            .unwrap_or(rest.len())
    } else {
        ident_end(rest)
    };
    let op = &rest[..op_end];
    let value = rest[op_end..].trim();
    if field.is_empty() || op.is_empty() {
        return Err(format!(
            "cannot read the condition {s:?}: write `<field> <operator> <value>`, \
             e.g. \"callee_age >= 60\""
        ));
    }
    let value = if value.is_empty() {
        LeafValue::Absent
    } else if let Some(inner) = value.strip_prefix('[') {
        let Some(inner) = inner.strip_suffix(']') else {
            return Err(format!(
                "cannot read the condition {s:?}: a list must end with `]`"
            ));
        };
        LeafValue::List(
            inner
                .split(',')
                .map(|item| unquote(item.trim()).to_owned())
                .filter(|item| !item.is_empty())
                .collect(),
        )
    } else {
        LeafValue::Text(unquote(value).to_owned())
    };
    Ok((field, op, value))
}

struct CondCx<'a> {
    fraud_types: &'a [Box<str>],
    /// Feature ids, usable as numeric fields (index = position).
    features: &'a [&'a str],
    /// Compiling a feature's `where`: features are not allowed there.
    in_filter: bool,
    /// Bit `i`: the condition uses feature `i`.
    used: u16,
    /// Number-list ids, testable with `caller_number in_list <id>` (index = position).
    lists: &'a [&'a str],
    /// Bit `i`: the condition tests list `i`.
    used_lists: u16,
    problems: Vec<(ProblemKind, String, String)>,
}

impl CondCx<'_> {
    fn problem(&mut self, kind: ProblemKind, path: &str, message: String) {
        self.problems.push((kind, path.to_owned(), message));
    }

    /// Compiles one condition; `None` after recording its problems.
    fn cond(&mut self, v: &Value, path: &str) -> Option<Cond> {
        match v {
            Value::String(s) => match parse_leaf_text(s) {
                Ok((field, op, value)) => self.leaf(field, op, value, path),
                Err(message) => {
                    self.problem(ProblemKind::BadCondition, path, message);
                    None
                }
            },
            Value::Table(t) => self.table(t, path),
            Value::Array(_) => {
                self.problem(
                    ProblemKind::BadCondition,
                    path,
                    "a list is not a condition; write `all = [...]` or `any = [...]`".into(),
                );
                None
            }
            other => {
                self.problem(
                    ProblemKind::BadCondition,
                    path,
                    format!(
                        "{} is not a condition; write \"<field> <operator> <value>\", \
                         {{ field = ..., op = ..., value = ... }}, or one of all/any/not",
                        LeafValue::Toml(other).describe()
                    ),
                );
                None
            }
        }
    }

    fn table(&mut self, t: &Table, path: &str) -> Option<Cond> {
        const KEYS: [&str; 6] = ["field", "op", "value", "all", "any", "not"];
        let mut ok = true;
        for key in t.keys() {
            if !KEYS.contains(&key.as_str()) {
                self.problem(
                    ProblemKind::UnknownKey,
                    path,
                    format!(
                        "unknown key `{key}` in a condition; a condition has `field`, `op` \
                         and `value`, or exactly one of `all`, `any`, `not`"
                    ),
                );
                ok = false;
            }
        }
        let groups: Vec<&str> = ["all", "any", "not"]
            .into_iter()
            .filter(|k| t.contains_key(*k))
            .collect();
        let leafy = ["field", "op", "value"].iter().any(|k| t.contains_key(*k));
        match (groups.as_slice(), leafy) {
            ([], false) => {
                if ok {
                    self.problem(
                        ProblemKind::BadCondition,
                        path,
                        "an empty condition; write `field`, `op` and `value`, or one of \
                         `all`, `any`, `not`"
                            .into(),
                    );
                }
                None
            }
            ([], true) => {
                let leaf = self.table_leaf(t, path);
                if ok {
                    leaf
                } else {
                    None
                }
            }
            ([group], false) => {
                let cond = self.group(group, &t[*group], path);
                if ok {
                    cond
                } else {
                    None
                }
            }
            _ => {
                let mut found: Vec<&str> = groups.clone();
                if leafy {
                    found.push("field/op/value");
                }
                self.problem(
                    ProblemKind::BadCondition,
                    path,
                    format!(
                        "a condition is either `{{ field, op, value }}` or exactly one of \
                         `all`, `any`, `not`; this one has {}: nest them instead",
                        found.join(" and ")
                    ),
                );
                None
            }
        }
    }

    fn group(&mut self, group: &str, v: &Value, path: &str) -> Option<Cond> {
        let here = format!("{path}.{group}");
        if group == "not" {
            if let Value::Array(_) = v {
                self.problem(
                    ProblemKind::BadCondition,
                    &here,
                    "`not` takes one condition; wrap several in `all` or `any`".into(),
                );
                return None;
            }
            return self.cond(v, &here).map(|c| Cond::Not(Box::new(c)));
        }
        let Value::Array(items) = v else {
            self.problem(
                ProblemKind::BadCondition,
                &here,
                format!(
                    "`{group}` takes a list of conditions, e.g. `{group} = [\"callee_age >= 60\", \
                     \"call_minutes >= 10\"]`"
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.problem(
                ProblemKind::EmptyGroup,
                &here,
                format!("`{group}` is empty; give it at least one condition"),
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.cond(item, &format!("{here}[{i}]")) {
                Some(c) => out.push(c),
                None => ok = false,
            }
        }
        if !ok {
            return None;
        }
        if out.len() == 1 {
            return out.pop();
        }
        Some(if group == "all" {
            Cond::All(out)
        } else {
            Cond::Any(out)
        })
    }

    fn table_leaf(&mut self, t: &Table, path: &str) -> Option<Cond> {
        let field = match t.get("field") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                self.problem(
                    ProblemKind::BadCondition,
                    path,
                    format!(
                        "`field` must name an event field, not {}",
                        LeafValue::Toml(other).describe()
                    ),
                );
                return None;
            }
            None => {
                self.problem(
                    ProblemKind::BadCondition,
                    path,
                    format!(
                        "the condition has no `field`; known fields: {}",
                        field_names()
                    ),
                );
                return None;
            }
        };
        let op = match t.get("op") {
            Some(Value::String(s)) => s.as_str(),
            Some(other) => {
                self.problem(
                    ProblemKind::BadCondition,
                    path,
                    format!(
                        "`op` must be an operator such as \">=\", not {}",
                        LeafValue::Toml(other).describe()
                    ),
                );
                return None;
            }
            None => {
                self.problem(
                    ProblemKind::BadCondition,
                    path,
                    format!("the condition on `{field}` has no `op`"),
                );
                return None;
            }
        };
        let value = t.get("value").map_or(LeafValue::Absent, LeafValue::Toml);
        self.leaf(field, op, value, path)
    }

    fn leaf(&mut self, field: &str, op: &str, value: LeafValue<'_>, path: &str) -> Option<Cond> {
        let feature = self.features.iter().position(|f| *f == field);
        let def = match (FIELDS.iter().find(|f| f.name == field), feature) {
            (Some(def), _) => def,
            (None, Some(_)) if self.in_filter => {
                self.problem(
                    ProblemKind::UnknownField,
                    path,
                    format!(
                        "a feature's `where` tests the call's own fields, not another \
                         feature (`{field}`); known fields: {}",
                        field_names()
                    ),
                );
                return None;
            }
            (None, Some(i)) => {
                self.used |= 1 << i;
                &FieldDef {
                    name: "",
                    kind: FieldKind::Num(NumField::feature(i)),
                    optional: true,
                }
            }
            (None, None) => {
                let features = if self.features.is_empty() || self.in_filter {
                    String::new()
                } else {
                    format!("; features: {}", self.features.join(", "))
                };
                self.problem(
                    ProblemKind::UnknownField,
                    path,
                    format!(
                        "unknown field `{field}`; known fields: {}{features}",
                        field_names()
                    ),
                );
                return None;
            }
        };
        let ops = def.ops();
        if !ops.contains(&op) {
            let list = ops.join(", ");
            if ALL_OPS.contains(&op) {
                self.problem(
                    ProblemKind::OperatorNotApplicable,
                    path,
                    format!(
                        "operator `{op}` does not apply to {field} ({}); its operators: {list}",
                        def.kind_name()
                    ),
                );
            } else {
                let hint = match suggest_op(op) {
                    Some(s) if ops.contains(&s) => format!(" (did you mean `{s}`?)"),
                    _ => String::new(),
                };
                self.problem(
                    ProblemKind::UnknownOperator,
                    path,
                    format!("unknown operator `{op}`{hint}; operators for {field}: {list}"),
                );
            }
            return None;
        }
        let wrong = |cx: &mut Self, wanted: &str| {
            cx.problem(
                ProblemKind::WrongValueType,
                path,
                format!(
                    "`{field} {op}` needs {wanted}, but the value is {}",
                    value.describe()
                ),
            );
            None
        };

        if op == "exists" {
            let present = match &value {
                LeafValue::Absent => true,
                v => match v.boolean() {
                    Some(b) => b,
                    None => return wrong(self, "no value (or true/false)"),
                },
            };
            let cond = match def.kind {
                FieldKind::Num(f) => Cond::NumExists(f),
                FieldKind::Bool(f) => Cond::BoolExists(f),
                _ => Cond::Hint {
                    mask: u64::MAX,
                    negate: false,
                },
            };
            return Some(if present {
                cond
            } else {
                Cond::Not(Box::new(cond))
            });
        }

        match def.kind {
            FieldKind::Num(f) => {
                let Some(v) = value.number() else {
                    return wrong(self, "a number");
                };
                let op = match op {
                    "==" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    ">" => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                Some(Cond::Num {
                    field: f,
                    op,
                    value: v,
                })
            }
            FieldKind::Bool(f) => {
                let Some(b) = value.boolean() else {
                    return wrong(self, "true or false");
                };
                Some(Cond::Bool {
                    field: f,
                    value: b,
                    negate: op == "!=",
                })
            }
            FieldKind::Hint => {
                let single = op == "==" || op == "!=";
                let names = if single {
                    value.string().map(|s| vec![s])
                } else {
                    value.strings()
                };
                let Some(names) = names else {
                    return wrong(
                        self,
                        if single {
                            "a fraud type name"
                        } else {
                            "a list of fraud type names"
                        },
                    );
                };
                if names.is_empty() {
                    self.problem(
                        ProblemKind::EmptyGroup,
                        path,
                        format!("`{field} {op}` has an empty list"),
                    );
                    return None;
                }
                let mut mask = 0u64;
                let mut ok = true;
                for name in &names {
                    match self.fraud_types.iter().position(|t| **t == **name) {
                        Some(bit) => mask |= 1 << bit,
                        None => {
                            let known = self
                                .fraud_types
                                .iter()
                                .map(|t| &**t)
                                .collect::<Vec<_>>()
                                .join(", ");
                            self.problem(
                                ProblemKind::UnknownFraudType,
                                path,
                                format!(
                                    "unknown fraud type `{name}`; known fraud types: {known} \
                                     (declare others in the top-level `fraud_types` list)"
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(Cond::Hint {
                    mask,
                    negate: op == "!=" || op == "not_in",
                })
            }
            FieldKind::Flags => {
                let Some(names) = value.strings() else {
                    return wrong(self, "caller flag names");
                };
                if names.is_empty() {
                    self.problem(
                        ProblemKind::EmptyGroup,
                        path,
                        format!("`{field} {op}` has an empty list of flags"),
                    );
                    return None;
                }
                if op == "has" && names.len() > 1 {
                    return wrong(self, "one flag (use has_any or has_all for several)");
                }
                let mut mask = 0u16;
                let mut ok = true;
                for name in &names {
                    match CallerFlag::from_name(name) {
                        Some(flag) => mask |= 1 << flag as u8,
                        None => {
                            self.problem(
                                ProblemKind::UnknownFlag,
                                path,
                                format!(
                                    "unknown caller flag `{name}`; known flags: {}",
                                    flag_names()
                                ),
                            );
                            ok = false;
                        }
                    }
                }
                ok.then_some(match op {
                    "has" | "has_any" => Cond::FlagsAny(mask),
                    "has_all" => Cond::FlagsAll(mask),
                    _ => Cond::FlagsNone(mask),
                })
            }
            FieldKind::Prefix if op == "in_list" || op == "not_in_list" => {
                let Some(id) = value.string() else {
                    return wrong(self, "the id of a `[[list]]`");
                };
                match self.lists.iter().position(|l| **l == id) {
                    Some(i) => {
                        self.used_lists |= 1 << i;
                        Some(Cond::InList {
                            list: i as u8,
                            negate: op == "not_in_list",
                        })
                    }
                    None => {
                        let known = if self.lists.is_empty() {
                            "the file declares no `[[list]]`".to_owned()
                        } else {
                            format!("lists: {}", self.lists.join(", "))
                        };
                        self.problem(
                            ProblemKind::UnknownList,
                            path,
                            format!("unknown list `{id}`; {known}"),
                        );
                        None
                    }
                }
            }
            FieldKind::Prefix => {
                let Some(prefixes) = value.strings() else {
                    return wrong(self, "a list of number prefixes such as [\"00\", \"+\"]");
                };
                if prefixes.is_empty() {
                    self.problem(
                        ProblemKind::EmptyGroup,
                        path,
                        format!("`{field} {op}` has an empty list of prefixes"),
                    );
                    return None;
                }
                let mut ok = true;
                for p in &prefixes {
                    let digits = p.strip_prefix('+').unwrap_or(p);
                    if p.len() > 8 {
                        self.problem(
                            ProblemKind::WrongValueType,
                            path,
                            format!("prefix `{p}` is longer than 8 characters"),
                        );
                        ok = false;
                    } else if !digits.bytes().all(|b| b.is_ascii_digit()) || p.is_empty() {
                        self.problem(
                            ProblemKind::WrongValueType,
                            path,
                            format!(
                                "`{p}` is not a number prefix: use digits after an optional \
                                 `+`, e.g. \"00\", \"+\" or \"+852\""
                            ),
                        );
                        ok = false;
                    }
                }
                ok.then_some(Cond::Prefix(prefixes))
            }
        }
    }
}

/// A straightforward evaluator of checked conditions straight from the event, against which
/// the tests check the compiled one.
#[cfg(test)]
pub(super) fn eval_reference(
    cond: &Cond,
    e: &crate::event::Event<'_>,
    fraud_types: &[Box<str>],
    figures: &crate::features::Figures,
    lists: &[NumberList],
) -> bool {
    let number = |f: NumField| match f {
        NumField::CALL_DURATION_S => Some(e.call_duration_s),
        NumField::CALL_MINUTES => Some(e.call_duration_s / 60.0),
        NumField::CALLEE_AGE => e.callee_age.map(f64::from),
        NumField(i) => Some(figures[i as usize - NumField::EVENT_NUMBERS]).filter(|x| !x.is_nan()),
    };
    let bool_field = |f: BoolField| match f {
        BoolField::CalleePriorVictim => e.callee_prior_victim,
        BoolField::SmsWithLink => e.sms_with_link,
        BoolField::HasLocation => Some(e.callee_location.is_some()),
        BoolField::HasCellId => Some(e.cell_id.is_some()),
    };
    match cond {
        Cond::Num { field, op, value } => {
            let Some(x) = number(*field) else {
                return false;
            };
            match op {
                CmpOp::Eq => x == *value,
                CmpOp::Ne => x != *value,
                CmpOp::Lt => x < *value,
                CmpOp::Le => x <= *value,
                CmpOp::Gt => x > *value,
                CmpOp::Ge => x >= *value,
            }
        }
        Cond::Bool {
            field,
            value,
            negate,
        } => match bool_field(*field) {
            None => false,
            Some(v) => (v == *value) != *negate,
        },
        Cond::NumExists(f) => number(*f).is_some(),
        Cond::BoolExists(f) => bool_field(*f).is_some(),
        Cond::Hint { mask, negate } => match e.fraud_type_hint.as_deref() {
            None => false,
            Some(h) => {
                let bit = match fraud_types.iter().position(|t| **t == *h) {
                    Some(i) => 1u64 << i,
                    None => 1 << 63,
                };
                (mask & bit != 0) != *negate
            }
        },
        Cond::FlagsAny(m) => e.caller_flags.0 & m != 0,
        Cond::FlagsAll(m) => e.caller_flags.0 & m == *m,
        Cond::FlagsNone(m) => e.caller_flags.0 & m == 0,
        Cond::Prefix(ps) => ps.iter().any(|p| e.caller_number.starts_with(p.as_str())),
        Cond::InList { list, negate } => {
            let on = crate::phone::list_key(&e.caller_number)
                .is_some_and(|k| lists[*list as usize].contains(k));
            on != *negate
        }
        Cond::All(cs) => cs
            .iter()
            .all(|c| eval_reference(c, e, fraud_types, figures, lists)),
        Cond::Any(cs) => cs
            .iter()
            .any(|c| eval_reference(c, e, fraud_types, figures, lists)),
        Cond::Not(c) => !eval_reference(c, e, fraud_types, figures, lists),
    }
}
