//! Writes a [`Report`] or a [`StationList`] as an aligned table, CSV, JSON, or the printed
//! per-station list.

use std::io::{self, Write};

use serde_json::json;

use super::aggregate::{Report, Row, StationList, Window};

/// How `report` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    StationList,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::StationList => "station-list",
        }
    }
}

const NUMBER_HEADERS: [&str; 10] = [
    "tasks",
    "people",
    "reached",
    "reach_rate",
    "median_first_contact_s",
    "p90_first_contact_s",
    "overdue",
    "escalated",
    "false_alarms",
    "losses_cny",
];

fn rfc3339(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        None => ms.to_string(),
    }
}

fn opt_number(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// `7m05s`, `1h02m`, `3d04h`: first-contact times at a glance.
fn duration(seconds: Option<f64>) -> String {
    let Some(s) = seconds else {
        return "-".into();
    };
    let s = s.round() as i64;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

pub fn write_csv(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let mut header = vec![report.by.as_str(), "name"];
    header.extend(NUMBER_HEADERS);
    w.write_record(&header)?;
    for row in report.rows.iter().chain([&report.total]) {
        w.write_record([
            row.key.clone(),
            row.name.clone().unwrap_or_default(),
            row.tasks.to_string(),
            row.people.to_string(),
            row.reached.to_string(),
            opt_number(row.reach_rate),
            opt_number(row.median_first_contact_s),
            opt_number(row.p90_first_contact_s),
            row.overdue.to_string(),
            row.escalated.to_string(),
            row.false_alarms.to_string(),
            format!("{:.2}", row.losses_cny),
        ])?;
    }
    w.flush()
}

fn window_json(window: &Window, as_of_ms: i64) -> serde_json::Value {
    json!({
        "from": window.from_ms.map(rfc3339),
        "to": window.to_ms.map(rfc3339),
        "as_of": rfc3339(as_of_ms),
    })
}

pub fn write_json(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut value = serde_json::to_value(report).map_err(io::Error::other)?;
    let object = value.as_object_mut().expect("a report is an object");
    if let serde_json::Value::Object(w) = window_json(&report.window, report.as_of_ms) {
        object.extend(w);
    }
    serde_json::to_writer_pretty(&mut *out, &value).map_err(io::Error::other)?;
    writeln!(out)
}

/// Columns as wide as their widest cell, in terminal cells (a CJK character takes two).
fn write_aligned(
    out: &mut dyn Write,
    indent: &str,
    rows: &[Vec<String>],
    right: &[bool],
) -> io::Result<()> {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| display_width(&r[c])).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::from(indent);
        for (c, cell) in r.iter().enumerate() {
            let pad = " ".repeat(widths[c] - display_width(cell));
            if c > 0 {
                line.push_str("  ");
            }
            if right.get(c).copied().unwrap_or(false) {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if c + 1 < columns {
                    line.push_str(&pad);
                }
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn display_width(s: &str) -> usize {
    s.chars().map(|c| if is_wide(c) { 2 } else { 1 }).sum()
}

/// East Asian wide and full-width characters: enough for Chinese names and full-width
/// punctuation, without a table of every block.
fn is_wide(c: char) -> bool {
    matches!(c as u32,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x20000..=0x3FFFD)
}

fn table_cells(row: &Row) -> Vec<String> {
    vec![
        row.key.clone(),
        row.name.clone().unwrap_or_default(),
        row.tasks.to_string(),
        row.people.to_string(),
        row.reached.to_string(),
        row.reach_rate
            .map(|r| format!("{:.1}%", r * 100.0))
            .unwrap_or_else(|| "-".into()),
        duration(row.median_first_contact_s),
        duration(row.p90_first_contact_s),
        row.overdue.to_string(),
        row.escalated.to_string(),
        row.false_alarms.to_string(),
        format!("{:.2}", row.losses_cny),
    ]
}

pub fn write_table(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let mut rows = vec![[
        report.by.as_str(),
        "name",
        "tasks",
        "people",
        "reached",
        "reach",
        "contact p50",
        "contact p90",
        "overdue",
        "escalated",
        "false alarms",
        "losses CNY",
    ]
    .map(String::from)
    .to_vec()];
    rows.extend(report.rows.iter().chain([&report.total]).map(table_cells));
    let mut right = vec![false, false];
    right.extend([true; 10]);
    write_aligned(out, "", &rows, &right)
}

pub fn write_station_list(list: &StationList, out: &mut dyn Write) -> io::Result<()> {
    let from = list.window.from_ms.map_or("the first task".into(), rfc3339);
    let to = list.window.to_ms.map_or("the last task".into(), rfc3339);
    writeln!(
        out,
        "Tasks created from {from} to {to}; overdue as of {}",
        rfc3339(list.as_of_ms)
    )?;
    for s in &list.stations {
        writeln!(out)?;
        let name = s
            .name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let district = s
            .district
            .as_deref()
            .map(|d| format!(", district {d}"))
            .unwrap_or_default();
        writeln!(
            out,
            "Station {}{name}{district}: {} tasks, {} open, {} overdue",
            s.station_id,
            s.items.len(),
            s.open,
            s.overdue
        )?;
        let mut rows = vec![[
            "task", "created", "level", "grid", "assignee", "victim", "state", "closed",
            "deadline", "overdue",
        ]
        .map(String::from)
        .to_vec()];
        for i in &s.items {
            rows.push(vec![
                i.task_id.to_string(),
                rfc3339(i.created_at_ms),
                i.level.as_str().into(),
                i.grid_id.clone().unwrap_or_else(|| "-".into()),
                i.assignee_id.clone(),
                i.victim.clone(),
                i.state.into(),
                i.closed_at_ms.map_or("-".into(), rfc3339),
                rfc3339(i.deadline_ms),
                if i.overdue { "OVERDUE" } else { "" }.into(),
            ]);
        }
        write_aligned(out, "  ", &rows, &[])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(None), "-");
        assert_eq!(duration(Some(42.0)), "42s");
        assert_eq!(duration(Some(425.0)), "7m05s");
        assert_eq!(duration(Some(3720.0)), "1h02m");
        assert_eq!(duration(Some(273_600.0)), "3d04h");
    }

    #[test]
    fn columns_align_chinese_names() {
        let rows = vec![
            vec!["a".to_string(), "和平区".to_string(), "1".to_string()],
            vec!["bb".to_string(), "x".to_string(), "22".to_string()],
        ];
        let mut out = Vec::new();
        write_aligned(&mut out, "", &rows, &[false, false, true]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a   和平区   1\nbb  x       22\n"
        );
    }
}
