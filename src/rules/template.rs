//! Reason templates: `"call of {call_minutes} min from {caller_number}"`, parsed at load.

use std::fmt::Write;

use crate::event::Event;
use crate::privacy::{mask_digits, mask_phone_into};

use super::{ProblemKind, Rule};
use crate::features::Figures;

/// Placeholder names a reason may use. None of them shows a full phone number.
pub(crate) const PLACEHOLDERS: [&str; 12] = [
    "caller_number",
    "call_duration_s",
    "call_minutes",
    "callee_age",
    "caller_flags",
    "fraud_type_hint",
    "sms_with_link",
    "callee_prior_victim",
    "has_location",
    "has_cell_id",
    "score",
    "rule_id",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    CallerNumber,
    CallDurationS,
    CallMinutes,
    CalleeAge,
    CallerFlags,
    FraudTypeHint,
    SmsWithLink,
    CalleePriorVictim,
    HasLocation,
    HasCellId,
    Score,
    RuleId,
    /// A windowed feature's figure, by feature index.
    Feature(u8),
}

impl Placeholder {
    fn from_name(name: &str, features: &[&str]) -> Option<Placeholder> {
        if let Some(i) = features.iter().position(|f| *f == name) {
            return Some(Placeholder::Feature(i as u8));
        }
        Some(match name {
            "caller_number" => Placeholder::CallerNumber,
            "call_duration_s" => Placeholder::CallDurationS,
            "call_minutes" => Placeholder::CallMinutes,
            "callee_age" => Placeholder::CalleeAge,
            "caller_flags" => Placeholder::CallerFlags,
            "fraud_type_hint" => Placeholder::FraudTypeHint,
            "sms_with_link" => Placeholder::SmsWithLink,
            "callee_prior_victim" => Placeholder::CalleePriorVictim,
            "has_location" => Placeholder::HasLocation,
            "has_cell_id" => Placeholder::HasCellId,
            "score" => Placeholder::Score,
            "rule_id" => Placeholder::RuleId,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Piece {
    Text(Box<str>),
    Field(Placeholder),
}

/// A parsed reason template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `{name}` placeholders (event fields and the ids of `features`); `{{` and `}}`
    /// are literal braces. Reports every unknown placeholder.
    pub(crate) fn parse(
        text: &str,
        features: &[&str],
    ) -> Result<Template, Vec<(ProblemKind, String)>> {
        let mut problems = Vec::new();
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        if text.trim().is_empty() {
            problems.push((ProblemKind::BadTemplate, "the reason is empty".to_owned()));
        }
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let brace = rest.as_bytes()[i];
            let after = &rest[i + 1..];
            if after.as_bytes().first() == Some(&brace) {
                literal.push(brace as char);
                rest = &after[1..];
                continue;
            }
            if brace == b'}' {
                problems.push((
                    ProblemKind::BadTemplate,
                    "a `}` without its `{` (write `}}` for a literal brace)".to_owned(),
                ));
                rest = after;
                continue;
            }
            let Some(end) = after.find('}') else {
                problems.push((
                    ProblemKind::BadTemplate,
                    "a `{` that is never closed (write `{{` for a literal brace)".to_owned(),
                ));
                rest = "";
                break;
            };
            let name = after[..end].trim();
            match Placeholder::from_name(name, features) {
                Some(p) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal).into()));
                    }
                    pieces.push(Piece::Field(p));
                }
                None => problems.push((
                    ProblemKind::UnknownPlaceholder,
                    format!(
                        "unknown placeholder `{{{name}}}` in the reason; known placeholders: {}",
                        PLACEHOLDERS
                            .iter()
                            .chain(features)
                            .copied()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal.into()));
        }
        if problems.is_empty() {
            Ok(Template { pieces })
        } else {
            Err(problems)
        }
    }

    /// Bit `i`: the template shows feature `i`.
    pub(crate) fn features(&self) -> u16 {
        self.pieces.iter().fold(0, |m, p| match p {
            Piece::Field(Placeholder::Feature(i)) => m | 1 << i,
            _ => m,
        })
    }

    /// Renders the reason for `e`; `figures` are the event's feature figures.
    pub(crate) fn render(&self, e: &Event<'_>, rule: &Rule, figures: &Figures) -> String {
        let mut out = String::with_capacity(96);
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(Placeholder::Feature(i)) => {
                    render_figure(&mut out, figures[*i as usize])
                }
                Piece::Field(p) => render_field(&mut out, *p, e, rule),
            }
        }
        out
    }
}

const UNKNOWN: &str = "unknown";

fn yes_no(out: &mut String, b: Option<bool>) {
    out.push_str(match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => UNKNOWN,
    });
}

/// A figure as an analyst would write it: whole numbers without decimals, others with up
/// to two; "unknown" when there is none.
fn render_figure(out: &mut String, x: f64) {
    if !x.is_finite() {
        out.push_str(UNKNOWN);
    } else if x.fract() == 0.0 {
        write_whole(out, x);
    } else {
        let s = format!("{x:.2}");
        out.push_str(s.trim_end_matches('0'));
    }
}

/// A whole `x` as `{x:.0}` writes it: through itoa where it fits an integer exactly, through
/// `fmt` for -0 and the rest. The figures of reasons are mostly counts, and `{x:.0}` took
/// about 250 ns for a count where itoa took 10 (a loop over 0-99, 2026-11-26).
fn write_whole(out: &mut String, x: f64) {
    if x.abs() < 1e15 && !(x == 0.0 && x.is_sign_negative()) {
        out.push_str(itoa::Buffer::new().format(x as i64));
    } else {
        let _ = write!(out, "{x:.0}");
    }
}

fn render_field(out: &mut String, p: Placeholder, e: &Event<'_>, rule: &Rule) {
    match p {
        Placeholder::CallerNumber => mask_phone_into(out, &e.caller_number),
        Placeholder::CallDurationS => {
            let d = e.call_duration_s;
            if d.fract() == 0.0 {
                write_whole(out, d);
            } else {
                let _ = write!(out, "{d:.1}");
            }
        }
        Placeholder::CallMinutes => {
            let _ = write!(out, "{:.1}", e.call_duration_s / 60.0);
        }
        Placeholder::CalleeAge => match e.callee_age {
            Some(age) => {
                let _ = write!(out, "{age}");
            }
            None => out.push_str(UNKNOWN),
        },
        Placeholder::CallerFlags => {
            let mut any = false;
            for flag in e.caller_flags.iter() {
                if any {
                    out.push_str(", ");
                }
                out.push_str(flag.name());
                any = true;
            }
            if !any {
                out.push_str("none");
            }
        }
        // Free text from the event producer: mask anything that looks like a phone number.
        Placeholder::FraudTypeHint => match e.fraud_type_hint.as_deref() {
            Some(h) => out.push_str(&mask_digits(h)),
            None => out.push_str(UNKNOWN),
        },
        Placeholder::SmsWithLink => yes_no(out, e.sms_with_link),
        Placeholder::CalleePriorVictim => yes_no(out, e.callee_prior_victim),
        Placeholder::HasLocation => yes_no(out, Some(e.callee_location.is_some())),
        Placeholder::HasCellId => yes_no(out, Some(e.cell_id.is_some())),
        Placeholder::Score => {
            let _ = write!(out, "{}", rule.score);
        }
        Placeholder::RuleId => out.push_str(&rule.id),
        Placeholder::Feature(_) => unreachable!("figures are rendered by render_figure"),
    }
}

#[cfg(test)]
mod tests {
    use super::write_whole;

    #[test]
    fn whole_numbers_read_as_fmt_writes_them() {
        let mut cases = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            34.0,
            999_999_999_999_999.0,
            1e15,
            -1e15,
            1e300,
        ];
        cases.extend((0..2_000).map(|i| f64::from(i) * 7.0 - 3_000.0));
        for x in cases {
            let mut out = String::new();
            write_whole(&mut out, x);
            assert_eq!(out, format!("{x:.0}"), "{x}");
        }
    }
}
