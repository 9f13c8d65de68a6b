use std::borrow::Cow;
use std::path::PathBuf;

use super::compile::version_of;
use super::*;
use crate::event::{CallerFlag, CallerFlags, Location};

const LEVELS: &str = "[levels]\nlow = 20\nmedium = 40\nhigh = 60\ncritical = 90\n";

/// A plain domestic call: no flags, 120 s, a 35-year-old, nothing else known.
fn plain() -> Event<'static> {
    Event {
        event_id: Cow::Borrowed("e-1"),
        occurred_at_ms: 1_795_998_600_000,
        caller_number: Cow::Borrowed("13900001111"),
        callee_number: Cow::Borrowed("13812345678"),
        callee_location: Some(Location {
            lon: 117.2,
            lat: 39.13,
        }),
        cell_id: None,
        call_duration_s: 120.0,
        caller_flags: CallerFlags::default(),
        callee_age: Some(35),
        callee_prior_victim: None,
        sms_with_link: None,
        fraud_type_hint: None,
    }
}

fn flags(list: &[CallerFlag]) -> CallerFlags {
    list.iter().fold(CallerFlags::default(), |f, x| f.with(*x))
}

/// A set with one rule `r` (score 10) whose `when` line is `when`.
fn one_rule(when: &str) -> RuleSet {
    let text = format!(
        "{LEVELS}\n[[rule]]\nid = \"r\"\ndescription = \"d\"\nreason = \"x\"\nscore = 10\n{when}\n"
    );
    RuleSet::from_toml_str(&text, "t.toml").unwrap_or_else(|e| panic!("{when}: {e}"))
}

fn fires(when: &str, e: &Event<'_>) -> bool {
    let set = one_rule(when);
    let s = set.score(e);
    assert_eq!(s.fired.is_empty(), s.total == 0);
    !s.fired.is_empty()
}

/// A compact condition `cond` (e.g. `callee_age >= 60`) on `e`, checked in both forms where
/// the table form is given.
fn holds(cond: &str, e: &Event<'_>) -> bool {
    fires(&format!("when = {cond:?}"), e)
}

fn load_err(text: &str) -> RulesError {
    match RuleSet::from_toml_str(text, "bad.toml") {
        Ok(_) => panic!("loaded:\n{text}"),
        Err(e) => e,
    }
}

/// One rule `r` around `body` (the lines after `id`), expected to fail with one problem.
fn rule_problem(body: &str) -> (Problem, String) {
    let text = format!("{LEVELS}\n[[rule]]\nid = \"r\"\n{body}\n");
    let err = load_err(&text);
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    (problems[0].clone(), err.to_string())
}

const OK_RULE: &str = "description = \"d\"\nreason = \"x\"\nscore = 10";

fn sample_path() -> PathBuf {
    config_dir().join("rules.toml")
}

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

// ---------------------------------------------------------------------------------------
// Levels and thresholds

#[test]
fn level_names_round_trip() {
    for level in Level::ALL {
        assert_eq!(level.as_str().parse::<Level>(), Ok(level));
        assert_eq!(level.to_string(), level.as_str());
        assert_eq!(
            serde_json::to_string(&level).unwrap(),
            format!("\"{}\"", level.as_str())
        );
        assert_eq!(
            serde_json::from_str::<Level>(&format!("\"{level}\"")).unwrap(),
            level
        );
    }
    assert_eq!(
        "urgent".parse::<Level>().unwrap_err().to_string(),
        "unknown risk level `urgent`; expected one of none, low, medium, high, critical"
    );
    assert!(Level::None < Level::Low && Level::High < Level::Critical);
}

#[test]
fn levels_at_exact_threshold_boundaries() {
    let t = Thresholds::new(20, 40, 60, 90).unwrap();
    let cases = [
        (i32::MIN, Level::None),
        (-20, Level::None),
        (0, Level::None),
        (19, Level::None),
        (20, Level::Low),
        (39, Level::Low),
        (40, Level::Medium),
        (59, Level::Medium),
        (60, Level::High),
        (89, Level::High),
        (90, Level::Critical),
        (i32::MAX, Level::Critical),
    ];
    for (score, level) in cases {
        assert_eq!(t.level_for(score), level, "score {score}");
    }
    assert_eq!(
        t.to_string(),
        "low >= 20, medium >= 40, high >= 60, critical >= 90"
    );
    assert_eq!(t.min_score(Level::None), None);
    assert_eq!(t.min_score(Level::High), Some(60));
    assert_eq!(Thresholds::new(0, 40, 60, 90), None);
    assert_eq!(Thresholds::new(20, 20, 60, 90), None);
    assert_eq!(Thresholds::new(20, 40, 90, 60), None);
}

// ---------------------------------------------------------------------------------------
// Operators and fields

#[test]
fn number_comparisons() {
    let e = plain(); // 120 s, age 35
    let cases = [
        ("call_duration_s == 120", true),
        ("call_duration_s == 121", false),
        ("call_duration_s != 120", false),
        ("call_duration_s != 121", true),
        ("call_duration_s < 120", false),
        ("call_duration_s < 120.5", true),
        ("call_duration_s <= 120", true),
        ("call_duration_s <= 119.9", false),
        ("call_duration_s > 119", true),
        ("call_duration_s > 120", false),
        ("call_duration_s >= 120", true),
        ("call_duration_s >= 121", false),
        ("call_minutes == 2", true),
        ("call_minutes >= 2.5", false),
        ("call_minutes<2.5", true),
        ("callee_age >= 35", true),
        ("callee_age > 35", false),
        ("callee_age != 60", true),
        ("callee_age < 60", true),
        ("callee_age <= 34", false),
        ("callee_age exists", true),
        ("callee_age exists false", false),
    ];
    for (cond, want) in cases {
        assert_eq!(holds(cond, &e), want, "{cond}");
    }
}

#[test]
fn table_form_matches_compact_form() {
    let e = plain();
    let cases = [
        (
            r#"{ field = "call_duration_s", op = ">=", value = 120 }"#,
            true,
        ),
        (
            r#"{ field = "call_duration_s", op = ">", value = 120.0 }"#,
            false,
        ),
        (r#"{ field = "callee_age", op = "==", value = 35 }"#, true),
        (r#"{ field = "callee_age", op = "exists" }"#, true),
        (
            r#"{ field = "callee_age", op = "exists", value = false }"#,
            false,
        ),
        (
            r#"{ field = "has_location", op = "==", value = true }"#,
            true,
        ),
        (
            r#"{ field = "caller_flags", op = "has_none", value = ["blacklisted"] }"#,
            true,
        ),
        (
            r#"{ field = "caller_flags", op = "has", value = "voip" }"#,
            false,
        ),
        (
            r#"{ field = "caller_number", op = "starts_with", value = ["139", "+"] }"#,
            true,
        ),
        (
            r#"{ field = "caller_number", op = "starts_with", value = "00" }"#,
            false,
        ),
        (
            r#"{ field = "fraud_type_hint", op = "in", value = ["loan"] }"#,
            false,
        ),
    ];
    for (cond, want) in cases {
        assert_eq!(fires(&format!("when = {cond}"), &e), want, "{cond}");
    }
}

#[test]
fn absent_optional_fields_make_every_comparison_false() {
    let mut e = plain();
    e.callee_age = None;
    for cond in [
        "callee_age == 35",
        "callee_age != 35",
        "callee_age < 200",
        "callee_age <= 200",
        "callee_age > -1",
        "callee_age >= 0",
        "callee_age exists",
        "fraud_type_hint == other",
        "fraud_type_hint != other",
        "fraud_type_hint in [loan, other]",
        "fraud_type_hint not_in [loan, other]",
        "fraud_type_hint exists",
        "sms_with_link == true",
        "sms_with_link == false",
        "sms_with_link != true",
        "sms_with_link exists",
        "callee_prior_victim == false",
        "callee_prior_victim != false",
    ] {
        assert!(!holds(cond, &e), "{cond} holds on an absent field");
        let negated = format!("when.not = {cond:?}");
        assert!(
            fires(&negated, &e),
            "not {cond} should hold on an absent field"
        );
    }
    assert!(holds("callee_age exists false", &e));
}

#[test]
fn boolean_fields() {
    let mut e = plain();
    e.sms_with_link = Some(true);
    e.callee_prior_victim = Some(false);
    e.cell_id = Some(Cow::Borrowed("460-00-4123-1001"));
    let cases = [
        ("sms_with_link == true", true),
        ("sms_with_link == false", false),
        ("sms_with_link != false", true),
        ("sms_with_link != true", false),
        ("callee_prior_victim == false", true),
        ("callee_prior_victim != true", true),
        ("callee_prior_victim == true", false),
        ("callee_prior_victim exists", true),
        ("has_location == true", true),
        ("has_location != true", false),
        ("has_cell_id == true", true),
        ("has_cell_id == false", false),
    ];
    for (cond, want) in cases {
        assert_eq!(holds(cond, &e), want, "{cond}");
    }
    e.callee_location = None;
    e.cell_id = None;
    assert!(holds("has_location == false", &e));
    assert!(holds("has_cell_id != true", &e));
}

#[test]
fn fraud_type_hint_equality_and_membership() {
    let mut e = plain();
    e.fraud_type_hint = Some(Cow::Borrowed("investment"));
    let cases = [
        ("fraud_type_hint == investment", true),
        ("fraud_type_hint == 'investment'", true),
        ("fraud_type_hint == romance", false),
        ("fraud_type_hint != romance", true),
        ("fraud_type_hint != investment", false),
        ("fraud_type_hint in [investment, romance]", true),
        ("fraud_type_hint in [\"loan\", 'romance']", false),
        ("fraud_type_hint not_in [loan, romance]", true),
        ("fraud_type_hint not_in [investment]", false),
        ("fraud_type_hint exists", true),
    ];
    for (cond, want) in cases {
        assert_eq!(holds(cond, &e), want, "{cond}");
    }
    // A hint no rule knows is present but equal to nothing.
    e.fraud_type_hint = Some(Cow::Borrowed("crypto_mining"));
    assert!(!holds("fraud_type_hint == investment", &e));
    assert!(holds("fraud_type_hint != investment", &e));
    assert!(!holds("fraud_type_hint in [investment, other]", &e));
    assert!(holds("fraud_type_hint not_in [investment, other]", &e));
    assert!(holds("fraud_type_hint exists", &e));
}

#[test]
fn declared_fraud_types_can_be_used() {
    let text = format!(
        "fraud_types = [\"crypto_mining\"]\n{LEVELS}\n[[rule]]\nid = \"r\"\n{OK_RULE}\n\
         when = \"fraud_type_hint in [crypto_mining, other]\"\n"
    );
    let set = RuleSet::from_toml_str(&text, "t.toml").unwrap();
    let mut e = plain();
    e.fraud_type_hint = Some(Cow::Borrowed("crypto_mining"));
    assert_eq!(set.score(&e).total, 10);
    e.fraud_type_hint = Some(Cow::Borrowed("loan"));
    assert_eq!(set.score(&e).total, 0);
}

#[test]
fn caller_flag_operators() {
    let mut e = plain();
    e.caller_flags = flags(&[CallerFlag::Overseas, CallerFlag::SpoofedOfficial]);
    let cases = [
        ("caller_flags has overseas", true),
        ("caller_flags has voip", false),
        ("caller_flags has_any [voip, spoofed_official]", true),
        ("caller_flags has_any [voip, blacklisted]", false),
        ("caller_flags has_all [overseas, spoofed_official]", true),
        ("caller_flags has_all [overseas, voip]", false),
        ("caller_flags has_none [voip, blacklisted]", true),
        ("caller_flags has_none [voip, overseas]", false),
    ];
    for (cond, want) in cases {
        assert_eq!(holds(cond, &e), want, "{cond}");
    }
    e.caller_flags = CallerFlags::default();
    assert!(!holds("caller_flags has_any [overseas, voip]", &e));
    assert!(holds("caller_flags has_none [blacklisted, overseas, voip, spoofed_official, spoofed_bank, new_sim, high_frequency, forwarded]", &e));
}

#[test]
fn caller_number_prefixes() {
    let overseas = r#"when.all = ["caller_number starts_with [00, '+']", { not = "caller_number starts_with '+86'" }]"#;
    let mut e = plain();
    for (number, want) in [
        ("+85251234567", true),
        ("0085251234567", true),
        ("+8613812345678", false),
        ("13900001111", false),
        ("02212345678", false),
    ] {
        e.caller_number = Cow::Borrowed(number);
        assert_eq!(fires(overseas, &e), want, "{number}");
    }
}

#[test]
fn all_any_not_nest() {
    let mut e = plain();
    e.callee_age = Some(71);
    e.call_duration_s = 742.0;
    e.caller_flags = flags(&[CallerFlag::Voip]);
    let cases = [
        (
            r#"when.all = ["callee_age >= 60", "call_minutes >= 10"]"#,
            true,
        ),
        (
            r#"when.all = ["callee_age >= 60", "call_minutes >= 13"]"#,
            false,
        ),
        (
            r#"when.any = ["callee_age >= 80", "call_minutes >= 13"]"#,
            false,
        ),
        (
            r#"when.any = ["callee_age >= 80", "call_minutes >= 12"]"#,
            true,
        ),
        (r#"when.not = "callee_age >= 60""#, false),
        (r#"when.not = { not = "callee_age >= 60" }"#, true),
        (
            r#"when.all = ["caller_flags has voip", { any = ["sms_with_link == true", { not = "callee_age < 65" }] }]"#,
            true,
        ),
        (
            r#"when.all = ["caller_flags has voip", { any = ["sms_with_link == true", { not = "callee_age < 75" }] }]"#,
            false,
        ),
        (
            r#"when = { any = [{ all = ["callee_age > 70", { not = { any = ["caller_flags has overseas", "fraud_type_hint exists"] } }] }] }"#,
            true,
        ),
        (r#"when.any = ["callee_age >= 60"]"#, true),
    ];
    for (when, want) in cases {
        assert_eq!(fires(when, &e), want, "{when}");
    }
    // The same nesting with TOML sub-tables instead of inline tables.
    let text = format!(
        "{LEVELS}\n[[rule]]\nid = \"r\"\n{OK_RULE}\n\n[[rule.when.all]]\nfield = \"callee_age\"\n\
         op = \">=\"\nvalue = 60\n\n[[rule.when.all]]\n[rule.when.all.not]\nfield = \"call_minutes\"\n\
         op = \"<\"\nvalue = 10\n"
    );
    let set = RuleSet::from_toml_str(&text, "t.toml").unwrap();
    assert_eq!(set.score(&e).total, 10);
    e.call_duration_s = 300.0;
    assert_eq!(set.score(&e).total, 0);
}

#[test]
fn scores_add_up_in_file_order_and_disabled_rules_never_fire() {
    let text = format!(
        "{LEVELS}
[[rule]]
id = \"a\"
{OK_RULE}
when = \"callee_age >= 30\"

[[rule]]
id = \"b\"
description = \"d\"
reason = \"x\"
score = 50
enabled = false
when = \"callee_age >= 30\"

[[rule]]
id = \"c\"
description = \"d\"
reason = \"x\"
score = 35
when = \"call_duration_s > 60\"

[[rule]]
id = \"mitigate\"
description = \"d\"
reason = \"x\"
score = -5
when = \"has_location == true\"
"
    );
    let set = RuleSet::from_toml_str(&text, "t.toml").unwrap();
    assert_eq!(set.rules().len(), 4);
    assert!(!set.rules()[1].enabled);
    assert_eq!(set.rules()[3].score, -5);
    let s = set.score(&plain());
    assert_eq!(
        s,
        Score {
            total: 40,
            level: Level::Medium,
            fired: Fired::from_slice(&[0, 2, 3]),
        }
    );
    assert_eq!(set.name(), "t.toml");
}

// ---------------------------------------------------------------------------------------
// Reasons

#[test]
fn reason_renders_placeholders_and_masks_the_caller() {
    let text = format!(
        "{LEVELS}\n[[rule]]\nid = \"long-call\"\ndescription = \"d\"\nscore = 30\n\
         when = \"call_minutes >= 10\"\nreason = \"{{rule_id}} (+{{score}}): {{call_minutes}} min \
         ({{call_duration_s}} s) from {{caller_number}} to a {{callee_age}}-year-old; flags \
         {{caller_flags}}; hint {{fraud_type_hint}}; link {{sms_with_link}}; victim before \
         {{callee_prior_victim}}; located {{has_location}}/{{has_cell_id}} {{{{ok}}}}\"\n"
    );
    let set = RuleSet::from_toml_str(&text, "t.toml").unwrap();
    let mut e = plain();
    e.caller_number = Cow::Borrowed("+85251234567");
    e.call_duration_s = 742.0;
    e.callee_age = Some(71);
    e.caller_flags = flags(&[CallerFlag::Overseas, CallerFlag::SpoofedOfficial]);
    e.fraud_type_hint = Some(Cow::Borrowed("impersonate_police"));
    e.sms_with_link = Some(true);
    e.callee_prior_victim = Some(false);
    let s = set.score(&e);
    assert_eq!(s.fired.as_slice(), &[0]);
    assert_eq!(
        set.reason(0, &e, &NO_FIGURES),
        "long-call (+30): 12.4 min (742 s) from +85****4567 to a 71-year-old; flags overseas, \
         spoofed_official; hint impersonate_police; link yes; victim before no; located yes/no {ok}"
    );
    assert!(!set.reason(0, &e, &NO_FIGURES).contains("51234567"));

    // Absent values, fractional seconds, no flags.
    let mut e = plain();
    e.call_duration_s = 61.5;
    e.callee_age = None;
    assert_eq!(
        set.reason(0, &e, &NO_FIGURES),
        "long-call (+30): 1.0 min (61.5 s) from 139****1111 to a unknown-year-old; flags none; \
         hint unknown; link unknown; victim before unknown; located yes/no {ok}"
    );
    assert_eq!(set.reason(7, &e, &NO_FIGURES), "");
}

#[test]
fn reason_masks_digit_runs_in_the_hint() {
    let text = format!(
        "{LEVELS}\n[[rule]]\nid = \"r\"\ndescription = \"d\"\nscore = 1\n\
         when = \"fraud_type_hint exists\"\nreason = \"hint {{fraud_type_hint}}\"\n"
    );
    let set = RuleSet::from_toml_str(&text, "t.toml").unwrap();
    assert_eq!(set.rules()[0].reason_template, "hint {fraud_type_hint}");
    let mut e = plain();
    e.fraud_type_hint = Some(Cow::Borrowed("call back 13812345678"));
    assert_eq!(set.reason(0, &e, &NO_FIGURES), "hint call back 138****5678");
}

// ---------------------------------------------------------------------------------------
// Version

#[test]
fn version_is_a_content_hash() {
    // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
    assert_eq!(version_of(b"abc"), "sha256:ba7816bf8f01cfea");
    let text = std::fs::read_to_string(sample_path()).unwrap();
    let a = RuleSet::from_toml_str_in(&text, "a.toml", &config_dir()).unwrap();
    let b = RuleSet::from_toml_str_in(&text, "b.toml", &config_dir()).unwrap();
    assert_eq!(a.version(), b.version());
    assert_eq!(a.version(), version_of(text.as_bytes()));
    assert_eq!(a.version().len(), "sha256:".len() + 16);
    let changed = text.replacen("score = 60", "score = 61", 1);
    let c = RuleSet::from_toml_str_in(&changed, "a.toml", &config_dir()).unwrap();
    assert_ne!(a.version(), c.version());
    let comment = format!("{text}#\n");
    let d = RuleSet::from_toml_str_in(&comment, "a.toml", &config_dir()).unwrap();
    assert_ne!(a.version(), d.version());
    assert_eq!(
        RuleSet::load(&sample_path()).unwrap().version(),
        a.version()
    );
}

// ---------------------------------------------------------------------------------------
// Errors

#[test]
fn toml_syntax_error_names_file_line_and_column() {
    let text = format!("{LEVELS}\n[[rule]]\nid = \"r\"\nscore = = 10\n");
    let err = load_err(&text);
    match &err {
        RulesError::Syntax {
            file, line, column, ..
        } => {
            assert_eq!(file, "bad.toml");
            assert_eq!(*line, 9);
            assert_eq!(*column, 9);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().starts_with("bad.toml:9:9: "), "{err}");
}

#[test]
fn unknown_top_level_key_and_bad_levels_type_are_syntax_errors() {
    let err = load_err(&format!("{LEVELS}\n[[rules]]\nid = \"r\"\n"));
    assert_eq!(
        err.to_string(),
        "bad.toml:7:3: unknown field `rules`, expected one of `name`, `fraud_types`, `levels`, `windows`, `list`, `feature`, `rule`"
    );
    let err = load_err("[levels]\nlow = 20\nmedium = \"forty\"\nhigh = 60\ncritical = 90\n");
    assert!(matches!(err, RulesError::Syntax { line: 3, .. }), "{err:?}");
    let err = load_err("[levels]\nlow = 20\nmedium = 40\nhigh = 60\ncritical = 90\nlowest = 1\n");
    assert!(err.to_string().contains("unknown field `lowest`"), "{err}");
}

#[test]
fn misspelt_rule_key_is_rejected() {
    let (p, msg) = rule_problem(
        "description = \"d\"\nreason = \"x\"\nscroe = 10\nwhen = \"callee_age >= 60\"",
    );
    assert_eq!(p.kind, ProblemKind::UnknownKey);
    assert_eq!(
        p.rule,
        Some(RuleRef {
            table: "rule",
            number: 1,
            id: Some("r".into()),
            line: Some(7)
        })
    );
    assert_eq!(
        msg,
        "bad.toml: 1 problem in the rule set:\n  rule `r` (#1, line 7): unknown key `scroe`, \
         expected one of `id`, `description`, `reason`, `score`, `enabled`, `when`"
    );
}

#[test]
fn missing_and_mistyped_rule_keys() {
    let (p, msg) = rule_problem("description = \"d\"\nreason = \"x\"\nwhen = \"callee_age >= 60\"");
    assert_eq!(p.kind, ProblemKind::BadKey);
    assert!(
        msg.contains("rule `r` (#1, line 7): missing field `score`"),
        "{msg}"
    );
    let (p, msg) = rule_problem(
        "description = \"d\"\nreason = \"x\"\nscore = \"high\"\nwhen = \"callee_age >= 60\"",
    );
    assert_eq!(p.kind, ProblemKind::BadKey);
    assert_eq!(p.path, "score");
    assert!(
        msg.contains("rule `r` (#1, line 7): score: invalid type: string \"high\""),
        "{msg}"
    );
    let (p, _) = rule_problem(&format!(
        "{OK_RULE}\nwhen = \"callee_age >= 60\"\nenabled = \"yes\""
    ));
    assert_eq!((p.kind, p.path.as_str()), (ProblemKind::BadKey, "enabled"));
    let (p, msg) =
        rule_problem("description = \" \"\nreason = \"x\"\nscore = 1\nwhen = \"callee_age >= 60\"");
    assert_eq!(
        (p.kind, p.path.as_str()),
        (ProblemKind::BadKey, "description")
    );
    assert!(
        msg.ends_with("rule `r` (#1, line 7): description: the description is empty"),
        "{msg}"
    );
}

#[test]
fn unknown_field_lists_the_known_ones() {
    let (p, msg) = rule_problem(&format!(
        "{OK_RULE}\nwhen.all = [\"call_minutes >= 10\", \"calle_age >= 60\"]"
    ));
    assert_eq!(p.kind, ProblemKind::UnknownField);
    assert_eq!(p.path, "when.all[1]");
    assert_eq!(
        msg,
        "bad.toml: 1 problem in the rule set:\n  rule `r` (#1, line 7): when.all[1]: unknown field \
         `calle_age`; known fields: call_duration_s, call_minutes, callee_age, fraud_type_hint, \
         callee_prior_victim, sms_with_link, has_location, has_cell_id, caller_flags, caller_number"
    );
    let (p, _) = rule_problem(&format!(
        "{OK_RULE}\nwhen = {{ field = \"callee_number\", op = \"==\", value = \"1\" }}"
    ));
    assert_eq!(p.kind, ProblemKind::UnknownField);
}

#[test]
fn unknown_and_inapplicable_operators() {
    let (p, msg) = rule_problem(&format!(
        "{OK_RULE}\nwhen = {{ field = \"callee_age\", op = \"=>\", value = 60 }}"
    ));
    assert_eq!(p.kind, ProblemKind::UnknownOperator);
    assert!(
        msg.ends_with(
            "rule `r` (#1, line 7): when: unknown operator `=>` (did you mean `>=`?); \
                       operators for callee_age: ==, !=, <, <=, >, >=, exists"
        ),
        "{msg}"
    );
    let (p, msg) = rule_problem(&format!("{OK_RULE}\nwhen = \"callee_age = 60\""));
    assert_eq!(p.kind, ProblemKind::UnknownOperator);
    assert!(
        msg.contains("unknown operator `=` (did you mean `==`?)"),
        "{msg}"
    );
    let (p, msg) = rule_problem(&format!("{OK_RULE}\nwhen = \"call_duration_s in [1, 2]\""));
    assert_eq!(p.kind, ProblemKind::OperatorNotApplicable);
    assert!(
        msg.ends_with(
            "when: operator `in` does not apply to call_duration_s (a number); \
                       its operators: ==, !=, <, <=, >, >="
        ),
        "{msg}"
    );
    let (p, _) = rule_problem(&format!("{OK_RULE}\nwhen = \"has_location exists\""));
    assert_eq!(p.kind, ProblemKind::OperatorNotApplicable);
    let (p, _) = rule_problem(&format!("{OK_RULE}\nwhen = \"caller_flags == overseas\""));
    assert_eq!(p.kind, ProblemKind::OperatorNotApplicable);
}

#[test]
fn wrong_value_types() {
    let cases = [
        (
            "when = { field = \"call_duration_s\", op = \">=\", value = \"long\" }",
            "when: `call_duration_s >=` needs a number, but the value is the string \"long\"",
        ),
        (
            "when = \"call_duration_s >= long\"",
            "when: `call_duration_s >=` needs a number, but the value is `long`",
        ),
        (
            "when = \"sms_with_link == yes\"",
            "when: `sms_with_link ==` needs true or false, but the value is `yes`",
        ),
        (
            "when = { field = \"fraud_type_hint\", op = \"in\", value = [1, 2] }",
            "when: `fraud_type_hint in` needs a list of fraud type names, but the value is the list [1, 2]",
        ),
        (
            "when = \"callee_age >= 60 years\"",
            "when: `callee_age >=` needs a number, but the value is `60 years`",
        ),
        (
            "when = \"callee_age >=\"",
            "when: `callee_age >=` needs a number, but the value is no value",
        ),
        (
            "when = \"caller_number starts_with [overseas]\"",
            "when: `overseas` is not a number prefix: use digits after an optional `+`, e.g. \"00\", \"+\" or \"+852\"",
        ),
        (
            "when = \"caller_flags has [overseas, voip]\"",
            "when: `caller_flags has` needs one flag (use has_any or has_all for several), but the value is the list [overseas, voip]",
        ),
    ];
    for (when, want) in cases {
        let (p, msg) = rule_problem(&format!("{OK_RULE}\n{when}"));
        assert_eq!(p.kind, ProblemKind::WrongValueType, "{when}");
        assert!(msg.ends_with(want), "{when}:\n{msg}\nwanted: {want}");
    }
}

#[test]
fn unknown_flag_and_fraud_type_list_the_known_ones() {
    let (p, msg) = rule_problem(&format!(
        "{OK_RULE}\nwhen = \"caller_flags has_any [overseas, spoofed]\""
    ));
    assert_eq!(p.kind, ProblemKind::UnknownFlag);
    assert!(
        msg.ends_with(
            "when: unknown caller flag `spoofed`; known flags: blacklisted, overseas, \
                       voip, spoofed_official, spoofed_bank, new_sim, high_frequency, forwarded"
        ),
        "{msg}"
    );
    let (p, msg) = rule_problem(&format!(
        "{OK_RULE}\nwhen = \"fraud_type_hint == impersonate_polce\""
    ));
    assert_eq!(p.kind, ProblemKind::UnknownFraudType);
    assert!(
        msg.ends_with(
            "when: unknown fraud type `impersonate_polce`; known fraud types: \
                       impersonate_bank, impersonate_customer_service, impersonate_police, \
                       investment, loan, other, part_time_job, romance (declare others in the \
                       top-level `fraud_types` list)"
        ),
        "{msg}"
    );
}

#[test]
fn reason_template_problems() {
    let body = "description = \"d\"\nscore = 1\nwhen = \"callee_age >= 60\"";
    let (p, msg) = rule_problem(&format!("{body}\nreason = \"call from {{callee_number}}\""));
    assert_eq!(p.kind, ProblemKind::UnknownPlaceholder);
    assert_eq!(p.path, "reason");
    assert!(
        msg.ends_with(
            "rule `r` (#1, line 7): reason: unknown placeholder `{callee_number}` in the \
                       reason; known placeholders: caller_number, call_duration_s, call_minutes, \
                       callee_age, caller_flags, fraud_type_hint, sms_with_link, \
                       callee_prior_victim, has_location, has_cell_id, score, rule_id"
        ),
        "{msg}"
    );
    let (p, _) = rule_problem(&format!("{body}\nreason = \"call of {{call_minutes min\""));
    assert_eq!(p.kind, ProblemKind::BadTemplate);
    let (p, _) = rule_problem(&format!("{body}\nreason = \"a }} b\""));
    assert_eq!(p.kind, ProblemKind::BadTemplate);
    let (p, _) = rule_problem(&format!("{body}\nreason = \"\""));
    assert_eq!(p.kind, ProblemKind::BadTemplate);
}

#[test]
fn malformed_conditions() {
    let cases = [
        ("when.all = []", ProblemKind::EmptyGroup, "when.all: `all` is empty; give it at least one condition"),
        ("when.any = []", ProblemKind::EmptyGroup, "when.any: `any` is empty; give it at least one condition"),
        ("when = \"caller_flags has_any []\"", ProblemKind::EmptyGroup, "when: `caller_flags has_any` has an empty list of flags"),
        ("when.not = [\"callee_age > 1\"]", ProblemKind::BadCondition, "when.not: `not` takes one condition; wrap several in `all` or `any`"),
        ("when = [\"callee_age > 1\"]", ProblemKind::BadCondition, "when: a list is not a condition; write `all = [...]` or `any = [...]`"),
        ("when = 5", ProblemKind::BadCondition, "when: the integer 5 is not a condition; write \"<field> <operator> <value>\", { field = ..., op = ..., value = ... }, or one of all/any/not"),
        ("when = { all = [\"callee_age > 1\"], not = \"callee_age > 2\" }", ProblemKind::BadCondition, "when: a condition is either `{ field, op, value }` or exactly one of `all`, `any`, `not`; this one has all and not: nest them instead"),
        ("when = { field = \"callee_age\", op = \">\", value = 1, unit = \"years\" }", ProblemKind::UnknownKey, "when: unknown key `unit` in a condition; a condition has `field`, `op` and `value`, or exactly one of `all`, `any`, `not`"),
        ("when = { field = \"callee_age\", value = 1 }", ProblemKind::BadCondition, "when: the condition on `callee_age` has no `op`"),
        ("when = \">= 60\"", ProblemKind::BadCondition, "when: cannot read the condition \">= 60\": write `<field> <operator> <value>`, e.g. \"callee_age >= 60\""),
        ("when = \"fraud_type_hint in [loan\"", ProblemKind::BadCondition, "when: cannot read the condition \"fraud_type_hint in [loan\": a list must end with `]`"),
    ];
    for (when, kind, want) in cases {
        let (p, msg) = rule_problem(&format!("{OK_RULE}\n{when}"));
        assert_eq!(p.kind, kind, "{when}: {msg}");
        assert!(msg.ends_with(want), "{when}:\n{msg}\nwanted: {want}");
    }
}

#[test]
fn duplicate_and_bad_ids() {
    let text = format!(
        "{LEVELS}\n[[rule]]\nid = \"same\"\n{OK_RULE}\nwhen = \"callee_age > 1\"\n\n\
         [[rule]]\nid = \"same\"\n{OK_RULE}\nwhen = \"callee_age > 2\"\n\n\
         [[rule]]\nid = \"Bad Id\"\n{OK_RULE}\nwhen = \"callee_age > 3\"\n\n\
         [[rule]]\n{OK_RULE}\nwhen = \"callee_age > 4\"\n"
    );
    let err = load_err(&text);
    assert_eq!(
        err.to_string(),
        "bad.toml: 3 problems in the rule set:\n  \
         rule `same` (#2, line 14): id: duplicate rule id `same`: rule #1 (line 7) already uses it\n  \
         rule #3 (line 21): id: bad rule id \"Bad Id\": use 1-64 characters of a-z, 0-9, `_` and `-`\n  \
         rule #4 (line 28): missing field `id`"
    );
    let kinds: Vec<_> = err.problems().iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        [
            ProblemKind::DuplicateId,
            ProblemKind::BadId,
            ProblemKind::BadKey
        ]
    );
}

#[test]
fn every_rule_problem_is_reported_at_once() {
    let text = format!(
        "{LEVELS}\n[[rule]]\nid = \"a\"\ndescription = \"d\"\nreason = \"{{nope}}\"\nscore = 1\n\
         when.all = [\"calle_age > 1\", \"caller_flags has spoofd\", \"call_minutes => 3\"]\n\n\
         [[rule]]\nid = \"b\"\n{OK_RULE}\nwhen.any = []\n\n\
         [[rule]]\nid = \"c\"\n{OK_RULE}\nscroe = 3\nwhen = \"callee_age > 1\"\n\n\
         [[rule]]\nid = \"d\"\n{OK_RULE}\nwhen = \"callee_age > 1\"\n"
    );
    let err = load_err(&text);
    let got: Vec<(Option<String>, ProblemKind)> = err
        .problems()
        .iter()
        .map(|p| (p.rule.as_ref().and_then(|r| r.id.clone()), p.kind))
        .collect();
    let a = Some("a".to_owned());
    assert_eq!(
        got,
        [
            (a.clone(), ProblemKind::UnknownPlaceholder),
            (a.clone(), ProblemKind::UnknownField),
            (a.clone(), ProblemKind::UnknownFlag),
            (a, ProblemKind::UnknownOperator),
            (Some("b".into()), ProblemKind::EmptyGroup),
            (Some("c".into()), ProblemKind::UnknownKey),
        ],
        "{err}"
    );
    assert!(err
        .to_string()
        .starts_with("bad.toml: 6 problems in the rule set:\n"));
}

#[test]
fn level_and_file_level_problems() {
    let rule = format!("[[rule]]\nid = \"r\"\n{OK_RULE}\nwhen = \"callee_age > 1\"\n");
    let err = load_err(&format!(
        "[levels]\nlow = 20\nmedium = 60\nhigh = 60\ncritical = 90\n{rule}"
    ));
    assert_eq!(
        err.to_string(),
        "bad.toml: 1 problem in the rule set:\n  levels: thresholds must increase strictly from at \
         least 1, but low = 20, medium = 60, high = 60, critical = 90"
    );
    assert_eq!(err.problems()[0].kind, ProblemKind::BadLevels);
    let err = load_err(&format!(
        "[levels]\nlow = 0\nmedium = 40\nhigh = 60\ncritical = 90\n{rule}"
    ));
    assert_eq!(err.problems()[0].kind, ProblemKind::BadLevels);
    let err = load_err(&rule);
    assert_eq!(err.problems()[0].kind, ProblemKind::BadLevels);
    assert!(
        err.to_string()
            .contains("levels: the `[levels]` table is missing"),
        "{err}"
    );
    let err = load_err(LEVELS);
    assert_eq!(
        err.to_string(),
        "bad.toml: 1 problem in the rule set:\n  the file defines no rules; add at least one `[[rule]]`"
    );
    assert_eq!(err.problems()[0].kind, ProblemKind::NoRules);
    let err = load_err(&format!(
        "fraud_types = [\"Crypto Mining\"]\n{LEVELS}{rule}"
    ));
    assert_eq!(err.problems()[0].kind, ProblemKind::BadFraudTypes);
    let (p, _) = rule_problem(
        "description = \"d\"\nreason = \"x\"\nscore = 20000\nwhen = \"callee_age > 1\"",
    );
    assert_eq!(p.kind, ProblemKind::BadScore);
}

#[test]
fn load_names_the_file_and_reads_it() {
    let dir = std::env::temp_dir().join(format!("dissuade-rules-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.toml");
    let err = RuleSet::load(&missing).unwrap_err();
    assert!(matches!(err, RulesError::Io { .. }));
    assert!(
        err.to_string().starts_with(&format!(
            "{}: cannot read the rule file: ",
            missing.display()
        )),
        "{err}"
    );
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!("{LEVELS}\n[[rule]]\nid = \"r\"\n{OK_RULE}\nwhen = \"age > 1\"\n"),
    )
    .unwrap();
    let err = RuleSet::load(&bad).unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "{}: 1 problem in the rule set:\n  rule `r` (#1, line 7): when: unknown field `age`",
            bad.display()
        )),
        "{err}"
    );
    std::fs::write(&bad, b"name = \"\xff\"\n").unwrap();
    let err = RuleSet::load(&bad).unwrap_err();
    assert!(
        matches!(
            err,
            RulesError::Syntax {
                line: 1,
                column: 9,
                ..
            }
        ),
        "{err:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// The sample rule file

fn sample() -> RuleSet {
    RuleSet::load(&sample_path()).unwrap_or_else(|e| panic!("{e}"))
}

fn fired_ids(set: &RuleSet, s: &Score) -> Vec<String> {
    s.fired
        .iter()
        .map(|i| set.rules()[*i as usize].id.clone())
        .collect()
}

#[test]
fn sample_rules_load() {
    let set = sample();
    assert_eq!(set.name(), "Tianjin anti-fraud centre: baseline rules");
    assert!(set.version().starts_with("sha256:"));
    assert_eq!(set.rules().len(), 18);
    assert_eq!(set.lists().len(), 2);
    assert_eq!(set.features().len(), 3);
    assert_eq!(set.thresholds(), &Thresholds::new(20, 40, 60, 90).unwrap());
    assert!(set.rules().iter().any(|r| r.score < 0));
    assert!(
        !set.rules()
            .iter()
            .find(|r| r.id == "forwarded_call")
            .unwrap()
            .enabled
    );
}

#[test]
fn sample_rules_give_the_expected_levels() {
    let set = sample();

    let e = plain();
    let s = set.score(&e);
    assert_eq!((s.total, s.level), (0, Level::None), "plain call");

    let mut e = plain();
    e.caller_flags = flags(&[CallerFlag::Overseas]);
    e.caller_number = Cow::Borrowed("+85251234567");
    let s = set.score(&e);
    assert_eq!((s.total, s.level), (20, Level::Low), "overseas alone");
    assert_eq!(fired_ids(&set, &s), ["overseas_caller"]);

    // An overseas number without the flag is recognised by its prefix; +86 is not overseas.
    e.caller_flags = CallerFlags::default();
    assert_eq!(set.score(&e).level, Level::Low);
    e.caller_number = Cow::Borrowed("+8613900001111");
    assert_eq!(set.score(&e).level, Level::None);

    let mut e = plain();
    e.caller_flags = flags(&[CallerFlag::Blacklisted]);
    let s = set.score(&e);
    assert!(s.level >= Level::High, "blacklisted alone: {s:?}");
    assert_eq!(fired_ids(&set, &s), ["blacklisted_caller"]);

    let mut e = plain();
    e.caller_flags = flags(&[CallerFlag::SpoofedOfficial]);
    e.call_duration_s = 600.0;
    e.callee_age = Some(60);
    let s = set.score(&e);
    assert_eq!(
        (s.total, s.level),
        (90, Level::Critical),
        "spoofed official + long call to elderly"
    );
    assert_eq!(
        fired_ids(&set, &s),
        ["impersonates_official", "long_call_to_elderly"]
    );
    // The same call a second shorter, or to a younger callee, is only high.
    e.call_duration_s = 599.0;
    assert_eq!(set.score(&e).level, Level::High);

    // The worked example at the top of the file.
    let mut e = plain();
    e.caller_number = Cow::Borrowed("+85251234567");
    e.caller_flags = flags(&[CallerFlag::Overseas, CallerFlag::SpoofedOfficial]);
    e.call_duration_s = 742.0;
    e.callee_age = Some(71);
    e.sms_with_link = Some(true);
    e.fraud_type_hint = Some(Cow::Borrowed("impersonate_police"));
    let s = set.score(&e);
    assert_eq!((s.total, s.level), (140, Level::Critical));
    assert_eq!(
        fired_ids(&set, &s),
        [
            "impersonates_official",
            "overseas_caller",
            "long_call_to_elderly",
            "payment_link_sms"
        ]
    );
    assert_eq!(
        set.reason(s.fired[0], &e, &NO_FIGURES),
        "Caller +85****4567 posed as police, procuratorate or court (flags: overseas, \
         spoofed_official; hint: impersonate_police)."
    );

    // Bank impersonation by hint alone: medium.
    let mut e = plain();
    e.fraud_type_hint = Some(Cow::Borrowed("impersonate_customer_service"));
    assert_eq!(set.score(&e).level, Level::Medium);

    // Investment fraud on a long call with a payment link: high.
    let mut e = plain();
    e.fraud_type_hint = Some(Cow::Borrowed("investment"));
    e.call_duration_s = 900.0;
    e.sms_with_link = Some(true);
    let s = set.score(&e);
    assert_eq!((s.total, s.level), (65, Level::High));

    // Mitigation: an 8-second overseas call with nothing else is not worth a visit.
    let mut e = plain();
    e.caller_flags = flags(&[CallerFlag::Overseas]);
    e.call_duration_s = 8.0;
    let s = set.score(&e);
    assert_eq!((s.total, s.level), (0, Level::None));
    assert_eq!(
        fired_ids(&set, &s),
        ["overseas_caller", "short_call_without_strong_signals"]
    );
    // ...but a short call from a blacklisted number is not mitigated.
    e.caller_flags = flags(&[CallerFlag::Blacklisted]);
    assert_eq!(set.score(&e).total, 60);

    // The disabled forwarded-call rule never fires.
    let mut e = plain();
    e.caller_flags = flags(&[CallerFlag::Forwarded]);
    assert_eq!(set.score(&e).total, 0);
}

#[test]
fn synthetic_rule_sets_load_and_score() {
    for n in [1, 10, 50, 200] {
        let text = synthetic_rule_set(n);
        let set = RuleSet::from_toml_str(&text, "synthetic").unwrap_or_else(|e| panic!("{n}: {e}"));
        assert_eq!(set.rules().len(), n);
        assert_eq!(set.name(), format!("synthetic-{n}"));
        let mut e = plain();
        e.callee_age = Some(70);
        e.call_duration_s = 900.0;
        let s = set.score(&e);
        assert!(s.fired.iter().all(|i| (*i as usize) < n));
        for i in &s.fired {
            assert!(set
                .reason(*i, &e, &NO_FIGURES)
                .starts_with("rule synthetic-"));
        }
    }
    assert_eq!(
        RuleSet::from_toml_str(&synthetic_rule_set(50), "s")
            .unwrap()
            .rules()
            .len(),
        50
    );
}

// ---------------------------------------------------------------------------------------
// The compiled evaluator against a plain one, on random conditions and events

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())].clone()
    }
}

const LEAVES: [&str; 32] = [
    "call_duration_s >= 600",
    "call_duration_s < 20",
    "call_duration_s == 120",
    "call_minutes > 10",
    "call_minutes <= 2",
    "callee_age >= 60",
    "callee_age != 35",
    "callee_age < 18",
    "callee_age exists",
    "fraud_type_hint == investment",
    "fraud_type_hint != loan",
    "fraud_type_hint in [romance, investment]",
    "fraud_type_hint not_in [other, loan]",
    "fraud_type_hint exists",
    "sms_with_link == true",
    "sms_with_link != true",
    "sms_with_link == false",
    "sms_with_link exists",
    "callee_prior_victim == true",
    "callee_prior_victim != false",
    "has_location == true",
    "has_cell_id == false",
    "caller_flags has overseas",
    "caller_flags has blacklisted",
    "caller_flags has_any [voip, blacklisted]",
    "caller_flags has_any [overseas]",
    "caller_flags has_all [overseas, spoofed_official]",
    "caller_flags has_none [new_sim, voip]",
    "caller_flags has_none [overseas]",
    "caller_number starts_with [00, '+']",
    "caller_number starts_with '+86'",
    "caller_number starts_with [1390, '+8525']",
];

const FEATURES: &str = r#"
[[feature]]
id = "f_count"
description = "calls of the caller"
key = "caller"
aggregate = "count"
window = "10m"

[[feature]]
id = "f_since"
description = "since the last task"
key = "callee"
aggregate = "seconds_since_last_task"
window = "1d"
"#;

const FEATURE_LEAVES: [&str; 9] = [
    "caller_number in_list l1",
    "caller_number not_in_list l1",
    "f_count >= 3",
    "f_count < 2",
    "f_count == 5",
    "f_count != 2",
    "f_since exists",
    "f_since <= 60",
    "f_since > 3600",
];

fn random_cond(rng: &mut Lcg, depth: u32) -> String {
    if depth == 0 || rng.below(3) == 0 {
        return format!("\"{}\"", rng.pick(&LEAVES));
    }
    match rng.below(5) {
        0 => format!("{{ not = {} }}", random_cond(rng, depth - 1)),
        k => {
            let n = 1 + rng.below(4);
            let items: Vec<String> = (0..n).map(|_| random_cond(rng, depth - 1)).collect();
            let group = if k % 2 == 0 { "all" } else { "any" };
            format!("{{ {group} = [{}] }}", items.join(", "))
        }
    }
}

fn random_event(rng: &mut Lcg) -> Event<'static> {
    let mut e = plain();
    e.call_duration_s = rng.pick(&[0.0, 8.0, 19.9, 20.0, 120.0, 599.0, 600.0, 601.0, 742.0]);
    e.callee_age = rng.pick(&[
        None,
        Some(17),
        Some(18),
        Some(35),
        Some(59),
        Some(60),
        Some(80),
    ]);
    e.caller_flags = CallerFlags((rng.next() as u16 & rng.next() as u16) & 0xff);
    e.callee_prior_victim = rng.pick(&[None, Some(false), Some(true)]);
    e.sms_with_link = rng.pick(&[None, Some(false), Some(true)]);
    e.fraud_type_hint = rng
        .pick(&[
            None,
            Some("investment"),
            Some("romance"),
            Some("loan"),
            Some("other"),
            Some("nonsense"),
        ])
        .map(Cow::Borrowed);
    e.caller_number = Cow::Borrowed(rng.pick(&[
        "13900001111",
        "+8613900001111",
        "+85251234567",
        "0085251234567",
        "+8",
        "",
        "1390",
    ]));
    e.callee_location = rng.pick(&[
        None,
        Some(Location {
            lon: 117.2,
            lat: 39.1,
        }),
    ]);
    e.cell_id = rng.pick(&[None, Some(Cow::Borrowed("460-00-1-2"))]);
    e
}

fn reference_score(set: &RuleSet, e: &Event<'_>, figures: &Figures) -> (i32, Vec<u16>) {
    let mut total = 0;
    let mut fired = Vec::new();
    for (index, score, cond) in &set.reference {
        if compile::eval_reference(cond, e, &set.fraud_types.names, figures, &set.lists) {
            total += score;
            fired.push(*index);
        }
    }
    (total, fired)
}

#[test]
fn compiled_evaluator_agrees_with_the_reference() {
    let mut rng = Lcg(0x5eed);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("l1.txt");
    std::fs::write(&list, "+852 5123 4567\n13900001111 # a comment\n").unwrap();
    let mut text = format!(
        "{LEVELS}\n{FEATURES}\n[[list]]\nid = \"l1\"\ndescription = \"d\"\nfile = {:?}\n",
        list.display().to_string()
    );
    for i in 0..400 {
        text.push_str(&format!(
            "[[rule]]\nid = \"r{i}\"\n{OK_RULE}\nwhen = {}\n\n",
            random_cond(&mut rng, 4)
        ));
    }
    // Rules on the features' figures, alone and mixed with the event's fields.
    for i in 0..100 {
        let leaf = rng.pick(&FEATURE_LEAVES);
        let when = match rng.below(3) {
            0 => format!("\"{leaf}\""),
            1 => format!("{{ all = [\"{leaf}\", {}] }}", random_cond(&mut rng, 2)),
            _ => format!(
                "{{ any = [{{ not = \"{leaf}\" }}, {}] }}",
                random_cond(&mut rng, 2)
            ),
        };
        text.push_str(&format!(
            "[[rule]]\nid = \"f{i}\"\n{OK_RULE}\nwhen = {when}\n\n"
        ));
    }
    let sets = [
        RuleSet::from_toml_str(&text, "random").unwrap_or_else(|e| panic!("{e}")),
        RuleSet::from_toml_str(&synthetic_rule_set(100), "synthetic").unwrap(),
        sample(),
    ];
    let mut fired_somewhere = 0;
    for set in &sets {
        for _ in 0..3000 {
            let e = random_event(&mut rng);
            let mut figures = NO_FIGURES;
            figures[0] = rng.pick(&[1.0, 2.0, 3.0, 5.0]);
            figures[1] = rng.pick(&[f64::NAN, 30.0, 60.0, 61.0, 7200.0]);
            let s = set.score_figures(&e, &figures);
            let (total, fired) = reference_score(set, &e, &figures);
            assert_eq!(s.fired.as_slice(), fired.as_slice(), "{e:?}");
            assert_eq!(s.total, total);
            fired_somewhere += fired.len();
        }
    }
    assert!(fired_somewhere > 10_000, "{fired_somewhere}");
}

// ---------------------------------------------------------------------------------------
// Windowed features

const BURST: &str = r#"
[windows]
allowed_lateness = "30s"

[[feature]]
id = "elderly_callees_10m"
description = "different elderly people called"
key = "caller"
aggregate = "distinct"
window = "10m"
where = "callee_age >= 60"

[[rule]]
id = "burst"
description = "many elderly people called in minutes"
reason = "called {elderly_callees_10m} elderly people in 10 minutes"
score = 45
when = "elderly_callees_10m >= 3"
"#;

#[test]
fn a_rule_on_a_feature_fires_once_the_window_holds_enough_and_names_the_figure() {
    let set = RuleSet::from_toml_str(&format!("{LEVELS}{BURST}"), "burst.toml").unwrap();
    assert_eq!(
        set.window_limits().allowed_lateness,
        std::time::Duration::from_secs(30)
    );
    let windows = crate::features::Windows::new(set.features(), set.window_limits());
    let mut e = plain();
    e.callee_age = Some(75);
    let mut levels = Vec::new();
    for (i, callee) in ["13800000001", "13800000002", "13800000002", "13800000003"]
        .into_iter()
        .enumerate()
    {
        let id = format!("e-{i}");
        e.event_id = Cow::Owned(id.clone());
        e.callee_number = Cow::Borrowed(callee);
        e.occurred_at_ms += 60_000;
        let keys = EventKeys::of(&id, callee);
        let (s, figures) = set.score_with(&e, &windows, keys, 0, None);
        levels.push((figures[0], s.level));
        if s.level != Level::None {
            assert_eq!(
                set.reason(s.fired[0], &e, &figures),
                "called 3 elderly people in 10 minutes"
            );
        }
    }
    // The second call to ...02 is not a new person; the fourth call's callee is the third.
    assert_eq!(
        levels,
        [
            (1.0, Level::None),
            (2.0, Level::None),
            (2.0, Level::None),
            (3.0, Level::Medium)
        ]
    );
    // Scored alone (no windows), the rule cannot fire.
    assert_eq!(set.score(&e).level, Level::None);
}

/// A caller whose number reaches us written two ways is one caller to its windows, as to
/// the lists: the burst is seen across both.
#[test]
fn a_caller_written_two_ways_keeps_one_window() {
    let set = RuleSet::from_toml_str(&format!("{LEVELS}{BURST}"), "burst.toml").unwrap();
    let windows = crate::features::Windows::new(set.features(), set.window_limits());
    let mut e = plain();
    e.callee_age = Some(75);
    let mut seen = Vec::new();
    for (i, caller) in ["13912345678", "+86 139 1234 5678", "0086-139-1234-5678"]
        .into_iter()
        .enumerate()
    {
        let id = format!("e-{i}");
        let callee = format!("1380000000{i}");
        e.event_id = Cow::Owned(id.clone());
        e.caller_number = Cow::Borrowed(caller);
        e.callee_number = Cow::Owned(callee.clone());
        e.occurred_at_ms += 60_000;
        let (s, figures) = set.score_with(&e, &windows, EventKeys::of(&id, &callee), 0, None);
        seen.push((figures[0], s.level));
    }
    assert_eq!(
        seen,
        [(1.0, Level::None), (2.0, Level::None), (3.0, Level::Medium)]
    );
    // A service number is known by its digits, as the lists know it; a number with no
    // canonical form by what was written.
    assert_eq!(
        crate::phone::caller_key("95 588"),
        crate::phone::caller_key("95588")
    );
    assert_ne!(
        crate::phone::caller_key("not a number"),
        crate::phone::caller_key("not a numbe")
    );
}

#[test]
fn bad_features_are_named_with_their_line() {
    let text = format!(
        r#"{LEVELS}
[[feature]]
id = "a"
description = "d"
key = "caller"
aggregate = "share"
window = "10m"

[[feature]]
id = "b"
description = "d"
key = "caller"
aggregate = "seconds_since_last_task"
window = "1d"

[[feature]]
id = "callee_age"
description = "d"
key = "callee"
aggregate = "average"
window = "ten minutes"

[[feature]]
id = "c"
description = "d"
key = "callee"
aggregate = "count"
window = "1h"
where = "c >= 2"

[[rule]]
id = "r"
{OK_RULE}
when = "d >= 2"
"#
    );
    let err = RuleSet::from_toml_str(&text, "bad.toml").unwrap_err();
    let msg = err.to_string();
    for expected in [
        "feature `a` (#1, line 7): where: a share needs a `where`",
        "feature `b` (#2, line 14): key: seconds_since_last_task is about the person at risk",
        "feature `callee_age` (#3, line 21): id: feature id `callee_age` is already the name of an event field",
        "feature `callee_age` (#3, line 21): aggregate: unknown aggregate `average`; use one of count, distinct, sum_duration_s, share, seconds_since_last_task",
        "feature `callee_age` (#3, line 21): window: window \"ten minutes\" is not a duration",
        "feature `c` (#4, line 28): where: a feature's `where` tests the call's own fields, not another feature (`c`)",
        "rule `r` (#1, line 36): when: unknown field `d`",
    ] {
        assert!(msg.contains(expected), "missing {expected:?} in:\n{msg}");
    }
    assert!(err
        .problems()
        .iter()
        .any(|p| p.kind == ProblemKind::BadFeature));
}

// ---------------------------------------------------------------------------------------
// Number lists

fn with_list(dir: &std::path::Path, entries: &str, rules: &str) -> Result<RuleSet, RulesError> {
    std::fs::write(dir.join("fraud.txt"), entries).unwrap();
    std::fs::write(
        dir.join("rules.toml"),
        format!(
            "{LEVELS}\n[[list]]\nid = \"known_fraud\"\ndescription = \"d\"\nfile = \"fraud.txt\"\n\n{rules}"
        ),
    )
    .unwrap();
    RuleSet::load(&dir.join("rules.toml"))
}

#[test]
fn a_listed_caller_is_found_however_its_number_is_written_and_lists_change_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let set = with_list(
        dir.path(),
        "# known fraud numbers\n+852 5123 4567\n\n022-1234-5678\n95588\n",
        "[[rule]]\nid = \"listed\"\ndescription = \"d\"\nreason = \"x\"\nscore = 60\nwhen = \"caller_number in_list known_fraud\"\n\n\
         [[rule]]\nid = \"unlisted\"\ndescription = \"d\"\nreason = \"x\"\nscore = 1\nwhen = \"caller_number not_in_list known_fraud\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.lists()[0].len(), 3);
    let mut e = plain();
    for (caller, listed) in [
        ("0085251234567", true),
        ("+85251234567", true),
        ("02212345678", true),
        ("955 88", true),
        ("13900001111", false),
        ("", false),
    ] {
        e.caller_number = Cow::Borrowed(caller);
        assert_eq!(set.score(&e).total, if listed { 60 } else { 1 }, "{caller}");
    }
    let list = set.list("known_fraud").unwrap();
    assert!(list.apply("139 0000 1111", true));
    assert!(list.apply("+852 5123 4567", false));
    assert!(!list.apply("not a number", true));
    e.caller_number = Cow::Borrowed("13900001111");
    assert_eq!(set.score(&e).total, 60, "added while running");
    e.caller_number = Cow::Borrowed("+85251234567");
    assert_eq!(set.score(&e).total, 1, "removed while running");
    assert_eq!(list.len(), 3);
}

#[test]
fn bad_list_lines_and_unknown_lists_are_named_without_quoting_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let err = with_list(
        dir.path(),
        "13900001111\n139-0000-111x\n",
        "[[rule]]\nid = \"r\"\ndescription = \"d\"\nreason = \"x\"\nscore = 1\nwhen = \"caller_number in_list official\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("list `known_fraud` (#1, line 7): file: ")
            && err.contains("fraud.txt:2: not a phone number or service number"),
        "{err}"
    );
    assert!(
        err.contains("rule `r` (#1, line 12): when: unknown list `official`"),
        "{err}"
    );
    assert!(!err.contains("0000"), "{err}");
}
