//! Why a rule file does not load.

use std::fmt;

use thiserror::Error;

/// A rule file that cannot be used. Every message names the file; rule problems name the rule
/// (by id, or by its position when the id itself is missing or bad) and its line.
#[derive(Debug, Error)]
pub enum RulesError {
    #[error("{file}: cannot read the rule file: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or a top-level key of the wrong shape (`[levels]`, `name`, ...).
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// Valid TOML that is not a valid rule set: every problem found, in file order.
    #[error(
        "{file}: {} in the rule set:{}",
        count(problems),
        ListProblems(problems)
    )]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

impl RulesError {
    /// The problems of an [`RulesError::Invalid`]; empty for the other variants.
    pub fn problems(&self) -> &[Problem] {
        match self {
            RulesError::Invalid { problems, .. } => problems,
            _ => &[],
        }
    }
}

fn count(problems: &[Problem]) -> String {
    match problems.len() {
        1 => "1 problem".into(),
        n => format!("{n} problems"),
    }
}

struct ListProblems<'a>(&'a [Problem]);

impl fmt::Display for ListProblems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

/// The class of a [`Problem`], for code that reacts to it; the message says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// A key the format does not know (`scroe`), in a rule or a condition.
    UnknownKey,
    /// A required key is missing, or a key's value has the wrong TOML type.
    BadKey,
    /// The rule `id` is not 1-64 characters of `[a-z0-9_-]`.
    BadId,
    DuplicateId,
    /// A condition names a field the rules cannot test.
    UnknownField,
    UnknownOperator,
    /// A known operator that does not apply to the field (`in` on a number).
    OperatorNotApplicable,
    /// A value of the wrong type for the field or operator (a string for `call_duration_s`).
    WrongValueType,
    UnknownFlag,
    UnknownFraudType,
    /// A malformed condition: not `{ field, op, value }` nor exactly one of `all`/`any`/`not`.
    BadCondition,
    /// `all = []`, `any = []`, or an empty value list.
    EmptyGroup,
    UnknownPlaceholder,
    /// A reason template with an unbalanced `{` or `}`, or empty.
    BadTemplate,
    /// A score outside -10000..=10000.
    BadScore,
    /// `[levels]` missing, or thresholds not strictly increasing from at least 1.
    BadLevels,
    NoRules,
    TooManyRules,
    /// A bad entry in the top-level `fraud_types` list.
    BadFraudTypes,
    /// A `[[feature]]` that cannot be kept: unknown key side or aggregate, a bad window, a
    /// `where` an aggregate cannot use, or too many features.
    BadFeature,
    /// `[windows]` settings out of range.
    BadWindows,
    /// A `[[list]]` whose file cannot be read or has lines that are not numbers.
    BadList,
    /// `in_list` names no declared list.
    UnknownList,
}

/// Which rule (or `[[feature]]`) a problem is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// `"rule"` or `"feature"`: the kind of table.
    pub table: &'static str,
    /// 1-based position among the file's `[[rule]]` entries.
    pub number: usize,
    /// The rule's id where it has a usable one.
    pub id: Option<String>,
    /// The line of the rule's `[[rule]]` header, where known.
    pub line: Option<usize>,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.id, self.line) {
            (Some(id), Some(line)) => {
                write!(f, "{} `{id}` (#{}, line {line})", self.table, self.number)
            }
            (Some(id), None) => write!(f, "{} `{id}` (#{})", self.table, self.number),
            (None, Some(line)) => write!(f, "{} #{} (line {line})", self.table, self.number),
            (None, None) => write!(f, "{} #{}", self.table, self.number),
        }
    }
}

/// One thing wrong with a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The rule it is about; `None` for file-level problems (levels, no rules).
    pub rule: Option<RuleRef>,
    /// Where in the rule, e.g. `when.all[1]`; empty when the whole rule or file is meant.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(rule) = &self.rule {
            write!(f, "{rule}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// 1-based line and column of the end of `before`.
pub(crate) fn line_col(before: &[u8]) -> (usize, usize) {
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}
