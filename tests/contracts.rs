//! The published contracts (schemas/*.schema.json) against what the service writes and
//! reads, with a real JSON Schema validator: tasks from the pipeline on the sample city,
//! escalations, synthetic events, feedback of every outcome, the README's examples, and
//! invalid records, which the schema and the service must both refuse.

use std::path::Path;

use dissuade::config::Config;
use dissuade::grid::cell_table::CellTable;
use dissuade::lifecycle::{Escalation, Feedback};
use dissuade::pipeline::{Action, Outcome, Pipeline};
use dissuade::rules::Level;
use dissuade::synth::{Synth, SynthConfig};
use dissuade::task::TaskId;
use jsonschema::Validator;
use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema_json(name: &str) -> Value {
    let path = root().join(format!("schemas/{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn schema(name: &str) -> Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema_json(name))
        .unwrap_or_else(|e| panic!("{name} schema: {e}"))
}

#[track_caller]
fn assert_valid(v: &Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what}: {errors:#?}\n{instance:#}");
}

#[track_caller]
fn assert_invalid(v: &Validator, instance: &Value, what: &str) {
    assert!(
        !v.is_valid(instance),
        "{what}: the schema accepts it\n{instance:#}"
    );
}

fn sample_config() -> Config {
    Config::load(&root().join("config/dissuade.toml")).expect("sample config loads")
}

const T0: i64 = 1_795_480_200_000;

fn event(callee: &str, extra: Value) -> Value {
    let mut e = json!({
        "event_id": format!("contract-{callee}-{}", extra),
        "occurred_at": "2026-11-24T08:30:00+08:00",
        "caller_number": "+85251234567",
        "callee_number": callee,
        "call_duration_s": 1500,
        "caller_flags": ["overseas", "spoofed_official"],
        "callee_age": 76,
        "fraud_type_hint": "impersonate_police",
    });
    e.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    e
}

#[test]
fn the_schemas_are_valid_draft_2020_12_schemas() {
    for name in ["event", "task", "feedback"] {
        let s = schema_json(name);
        jsonschema::draft202012::meta::validate(&s)
            .unwrap_or_else(|e| panic!("{name} schema is not a 2020-12 schema: {e}"));
        assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    }
}

#[test]
fn every_kind_of_task_the_pipeline_writes_matches_the_schema() {
    let cfg = sample_config();
    let (pipeline, _) = Pipeline::load(&cfg).expect("pipeline loads");
    let task_schema = schema("task");
    let event_schema = schema("event");
    let mut events: Vec<Vec<u8>> = Vec::new();

    // Synthetic traffic over the sample city: repeats make upgrades.
    let cells = CellTable::load(&cfg.resolve(cfg.grid.cell_table.as_ref().unwrap())).unwrap();
    let mut synth = Synth::new(
        &cells,
        SynthConfig {
            seed: 11,
            victims: 200,
            risky_share: 0.6,
            ..SynthConfig::default()
        },
    )
    .with_run_id("contract");
    for i in 0..3000 {
        let mut buf = Vec::new();
        synth.next_event(T0 + i * 1000, &mut buf);
        events.push(buf);
    }
    // No location at all, and one far outside the city: unmatched, to the fallback desk.
    events.push(serde_json::to_vec(&event("13900000001", json!({}))).unwrap());
    events.push(
        serde_json::to_vec(&event(
            "+852 5123 4567",
            json!({"callee_location": {"lon": 114.17, "lat": 22.3}}),
        ))
        .unwrap(),
    );
    // Inside a cell whose community-officer post is vacant: the station's duty desk.
    let grid = pipeline.grid();
    let vacant = (0..grid.cells().len())
        .find(|&i| grid.community_officer(i).is_none())
        .expect("the sample map has vacant cells");
    let p = geo::InteriorPoint::interior_point(grid.geometry(vacant)).unwrap();
    events.push(
        serde_json::to_vec(&event(
            "022-2345 6789",
            json!({"callee_location": {"lon": p.x(), "lat": p.y()}, "callee_age": null,
                   "cell_id": null, "sms_with_link": true}),
        ))
        .unwrap(),
    );

    let mut seen = std::collections::BTreeSet::new();
    let mut buf = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let value: Value = serde_json::from_slice(e).unwrap();
        assert_valid(&event_schema, &value, &format!("event {i}"));
        buf.clear();
        let Outcome::Scored(s) = pipeline.process(e, 0, T0 + 3_600_000, &mut buf) else {
            panic!("event {i} is valid for the service too");
        };
        if let Action::Task(_) = s.action {
            let task: Value = serde_json::from_slice(&buf).unwrap();
            assert_valid(&task_schema, &task, &format!("task of event {i}"));
            seen.insert(task["kind"].as_str().unwrap().to_string());
            seen.insert(format!("match:{}", task["grid"]["match"].as_str().unwrap()));
            seen.insert(format!(
                "assignee:{}",
                task["assignee"]["kind"].as_str().unwrap()
            ));
            if task["victim"]["location"].is_null() {
                seen.insert("no location".into());
            }
        }
    }
    for case in [
        "new",
        "upgrade",
        "match:inside",
        "match:snapped",
        "match:unmatched",
        "assignee:officer",
        "assignee:duty_desk",
        "no location",
    ] {
        assert!(seen.contains(case), "no task with {case}: {seen:?}");
    }
}

#[test]
fn escalations_match_the_task_schema() {
    let v = schema("task");
    let root = TaskId::for_event("e-1", "13912345678");
    for (tier, acknowledged, station) in
        [(1, None, Some("120101-01")), (2, Some(T0 + 60_000), None)]
    {
        let e = Escalation {
            escalation_id: Escalation::id_for(root, tier),
            of: root,
            tier,
            to_desk: "desk-120101-01".into(),
            created_at_ms: T0,
            deadline_ms: T0 + 600_000,
            overdue_since_ms: T0 + 600_000,
            not_responded: vec!["po-120101-01-006".into(), "gw-120101-01-006-1".into()],
            acknowledged_at_ms: acknowledged,
            attempts: 2,
            original_key: "po-120101-01-006".into(),
            station_id: station.map(String::from),
            level: Level::Critical,
        };
        let mut out = Vec::new();
        e.encode_into(&mut out);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_valid(&v, &value, &format!("tier {tier} escalation"));
    }
}

fn feedback(outcome_fields: Value) -> Value {
    let mut f = json!({
        "task_id": "1c29ae8e748e24e88057003578a1188f",
        "actor_id": "po-120101-01-006",
        "at": "2026-11-24T08:45:00+08:00",
    });
    f.as_object_mut()
        .unwrap()
        .extend(outcome_fields.as_object().unwrap().clone());
    f
}

#[test]
fn feedback_of_every_outcome_matches_the_schema() {
    let v = schema("feedback");
    let cases = [
        json!({"outcome": "acknowledged"}),
        json!({"outcome": "reached_in_person", "note": "已上门劝阻", "photos": ["s3://fb/1.jpg", "s3://fb/2.jpg"],
               "location": {"lon": 117.2, "lat": 39.13}}),
        json!({"outcome": "reached_by_phone", "at": 1_795_481_100_000_i64}),
        json!({"outcome": "not_reached", "reason": "no_answer"}),
        json!({"outcome": "not_reached", "reason": "wrong_address", "note": null, "photos": null}),
        json!({"outcome": "not_reached", "reason": "refused"}),
        json!({"outcome": "not_reached", "reason": "moved"}),
        json!({"outcome": "not_reached", "reason": "other", "note": "劝".repeat(500)}),
        json!({"outcome": "already_defrauded", "loss_cny": 38000.5}),
        json!({"outcome": "already_defrauded"}),
        json!({"outcome": "false_alarm", "app_version": "2.1", "photos": (0..9).map(|i| format!("p{i}")).collect::<Vec<_>>()}),
    ];
    for c in cases {
        let f = feedback(c);
        assert_valid(&v, &f, "feedback");
        let bytes = serde_json::to_vec(&f).unwrap();
        Feedback::decode(&bytes).unwrap_or_else(|e| panic!("the service refuses {f}: {e}"));
    }
}

#[test]
fn invalid_feedback_is_refused_by_the_schema_and_the_service() {
    let v = schema("feedback");
    let mut cases: Vec<(&str, Value)> = vec![
        ("unknown outcome", feedback(json!({"outcome": "dissuaded"}))),
        (
            "not_reached without a reason",
            feedback(json!({"outcome": "not_reached"})),
        ),
        (
            "an unknown reason",
            feedback(json!({"outcome": "not_reached", "reason": "asleep"})),
        ),
        (
            "a reason with another outcome",
            feedback(json!({"outcome": "false_alarm", "reason": "no_answer"})),
        ),
        (
            "a negative loss",
            feedback(json!({"outcome": "already_defrauded", "loss_cny": -5})),
        ),
        (
            "a note of 501 characters",
            feedback(json!({"outcome": "acknowledged", "note": "劝".repeat(501)})),
        ),
        (
            "ten photos",
            feedback(
                json!({"outcome": "acknowledged", "photos": (0..10).map(|i| format!("p{i}")).collect::<Vec<_>>()}),
            ),
        ),
        (
            "an empty photo reference",
            feedback(json!({"outcome": "acknowledged", "photos": [""]})),
        ),
        (
            "photo bytes",
            feedback(json!({"outcome": "acknowledged", "photos": [[255, 216]]})),
        ),
        (
            "a latitude of 91",
            feedback(json!({"outcome": "acknowledged", "location": {"lon": 117, "lat": 91}})),
        ),
        (
            "a bad time",
            feedback(json!({"outcome": "acknowledged", "at": "soon"})),
        ),
        (
            "a phone number for a task id",
            feedback(json!({"outcome": "acknowledged", "task_id": "13812345678"})),
        ),
        (
            "an empty actor",
            feedback(json!({"outcome": "acknowledged", "actor_id": ""})),
        ),
        (
            "an actor of 65 characters",
            feedback(json!({"outcome": "acknowledged", "actor_id": "a".repeat(65)})),
        ),
        ("not an object", json!(["acknowledged"])),
    ];
    for field in ["task_id", "actor_id", "at", "outcome"] {
        let mut f = feedback(json!({"outcome": "acknowledged"}));
        f.as_object_mut().unwrap().remove(field);
        cases.push(("a missing required field", f));
    }
    for (what, f) in cases {
        assert_invalid(&v, &f, what);
        let bytes = serde_json::to_vec(&f).unwrap();
        assert!(
            Feedback::decode(&bytes).is_err(),
            "{what}: the service accepts it"
        );
    }
}

#[test]
fn invalid_events_are_refused_by_the_schema_and_the_service() {
    let v = schema("event");
    let good = event(
        "13912345678",
        json!({"callee_location": {"lon": 117.2, "lat": 39.13}}),
    );
    assert_valid(&v, &good, "good event");
    let with = |patch: Value| {
        let mut e = good.clone();
        e.as_object_mut()
            .unwrap()
            .extend(patch.as_object().unwrap().clone());
        e
    };
    let mut cases = vec![
        ("an empty event id", with(json!({"event_id": ""}))),
        ("a negative duration", with(json!({"call_duration_s": -1}))),
        ("an age of 131", with(json!({"callee_age": 131}))),
        (
            "a latitude of 95",
            with(json!({"callee_location": {"lon": 117, "lat": 95}})),
        ),
        (
            "a location without lat",
            with(json!({"callee_location": {"lon": 117}})),
        ),
        ("a bad time", with(json!({"occurred_at": "yesterday"}))),
        ("a number for a flag list", with(json!({"caller_flags": 3}))),
        (
            "an event id of 257 bytes",
            with(json!({"event_id": "e".repeat(257)})),
        ),
    ];
    for field in [
        "event_id",
        "occurred_at",
        "caller_number",
        "callee_number",
        "call_duration_s",
    ] {
        let mut e = good.clone();
        e.as_object_mut().unwrap().remove(field);
        cases.push(("a missing required field", e));
    }
    for (what, e) in cases {
        assert_invalid(&v, &e, what);
        let bytes = serde_json::to_vec(&e).unwrap();
        assert!(
            dissuade::event::Event::decode(&bytes).is_err(),
            "{what}: the service accepts it"
        );
    }
}

#[test]
fn invalid_task_records_are_refused_by_the_schema() {
    let v = schema("task");
    let readme = readme_examples("task");
    let good = readme[0].clone();
    assert_valid(&v, &good, "the README's task");
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut t = good.clone();
        f(&mut t);
        t
    };
    let cases = [
        (
            "no victim",
            edit(&|t| {
                t.as_object_mut().unwrap().remove("victim");
            }),
        ),
        ("level none", edit(&|t| t["level"] = json!("none"))),
        (
            "an upgrade without upgrade_of",
            edit(&|t| t["kind"] = json!("upgrade")),
        ),
        (
            "upgrade_of on a new task",
            edit(&|t| t["upgrade_of"] = json!("0".repeat(32))),
        ),
        (
            "an upper-case task id",
            edit(&|t| t["task_id"] = json!("1C29AE8E748E24E88057003578A1188F")),
        ),
        (
            "a field the contract does not name",
            edit(&|t| t["priority"] = json!(1)),
        ),
        (
            "an unmatched task with a grid id",
            edit(&|t| t["grid"]["match"] = json!("unmatched")),
        ),
        (
            "a snapped task without a distance",
            edit(&|t| t["grid"]["match"] = json!("snapped")),
        ),
        (
            "a victim number not in canonical form",
            edit(&|t| t["victim"]["number"] = json!("+86 138 0000 0001")),
        ),
        (
            "a time without milliseconds",
            edit(&|t| t["deadline"] = json!("2026-11-24T00:10:00Z")),
        ),
        ("no reasons", edit(&|t| t["reasons"] = json!([]))),
        (
            "an officer without a phone",
            edit(&|t| {
                t["assignee"].as_object_mut().unwrap().remove("phone");
            }),
        ),
        (
            "an escalation of nothing",
            json!({"task_id": "0".repeat(32), "kind": "escalation"}),
        ),
    ];
    for (what, t) in cases {
        assert_invalid(&v, &t, what);
    }
}

/// The JSON code blocks of README.md marked `<!-- contract: NAME -->` on the line above.
fn readme_examples(name: &str) -> Vec<Value> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let marker = format!("<!-- contract: {name} -->");
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim() != marker {
            continue;
        }
        assert_eq!(
            lines.get(i + 1).map(|l| l.trim()),
            Some("```json"),
            "README line {}: a contract marker must stand right above a ```json block",
            i + 1
        );
        let body: Vec<&str> = lines[i + 2..]
            .iter()
            .take_while(|l| l.trim() != "```")
            .copied()
            .collect();
        let text = body.join("\n");
        out.push(
            serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("README line {}: {name} example: {e}", i + 1)),
        );
    }
    out
}

#[test]
fn the_readme_examples_match_the_schemas() {
    let mut found = 0;
    for name in ["event", "task", "feedback"] {
        let v = schema(name);
        for example in readme_examples(name) {
            assert_valid(&v, &example, &format!("README {name} example"));
            let bytes = serde_json::to_vec(&example).unwrap();
            match name {
                "event" => {
                    dissuade::event::Event::decode(&bytes).unwrap();
                }
                "task" => {
                    dissuade::lifecycle::TrackedTask::decode(&bytes).unwrap();
                    dissuade::report::TaskTopicRecord::decode(&bytes).unwrap();
                }
                _ => {
                    Feedback::decode(&bytes).unwrap();
                }
            }
            found += 1;
        }
    }
    assert!(
        !readme_examples("task").is_empty() && !readme_examples("feedback").is_empty(),
        "README has marked task and feedback examples"
    );
    assert!(found >= 2);
}
