use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::grid::{GridMap, MatchKind};
use crate::pipeline::load_grid;
use crate::privacy::mask_digits;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Longitude (WGS84 degrees).
    #[arg(allow_negative_numbers = true, required_unless_present = "jsonl")]
    lon: Option<f64>,
    /// Latitude (WGS84 degrees).
    #[arg(allow_negative_numbers = true, required_unless_present = "jsonl")]
    lat: Option<f64>,
    /// Read `{"lon":..,"lat":..}` lines on stdin, write one result line per input line.
    #[arg(long, conflicts_with_all = ["lon", "lat"])]
    jsonl: bool,
}

#[derive(Deserialize)]
struct Point {
    lon: f64,
    lat: f64,
}

#[derive(Serialize)]
struct Located<'a> {
    grid_id: Option<&'a str>,
    #[serde(rename = "match")]
    match_kind: MatchKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    station_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    distance_m: Option<f64>,
}

pub fn run(config: &Config, args: Args) -> anyhow::Result<ExitCode> {
    let (grid, _) = load_grid(config).context("loading the grid map")?;
    let mut out = super::stdout();
    if !args.jsonl {
        let (lon, lat) = (args.lon.unwrap_or_default(), args.lat.unwrap_or_default());
        check_point(lon, lat)?;
        write_located(&mut out, &grid, lon, lat)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    // Exactly one output line per input line, so that results line up with the input: a
    // blank, malformed or non-UTF-8 line gives an `{"error":..}` line.
    let mut bad = 0usize;
    for (n, line) in std::io::stdin().lock().split(b'\n').enumerate() {
        let mut line = line.context("reading stdin")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        let point = if line.iter().all(u8::is_ascii_whitespace) {
            Err(anyhow::anyhow!(
                "empty line, expected {{\"lon\":..,\"lat\":..}}"
            ))
        } else {
            serde_json::from_slice::<Point>(&line)
                .map_err(anyhow::Error::from)
                .and_then(|p| check_point(p.lon, p.lat).map(|_| p))
        };
        match point {
            Ok(p) => write_located(&mut out, &grid, p.lon, p.lat)?,
            Err(e) => {
                bad += 1;
                // The message may quote the input: a number in it may be a phone number.
                let message = mask_digits(&e.to_string()).into_owned();
                eprintln!("line {}: {message}", n + 1);
                let json = serde_json::json!({ "error": message });
                serde_json::to_writer(&mut out, &json).map_err(std::io::Error::from)?;
                out.write_all(b"\n")?;
            }
        }
    }
    out.flush()?;
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

fn check_point(lon: f64, lat: f64) -> anyhow::Result<()> {
    if !(lon.is_finite() && (-180.0..=180.0).contains(&lon)) {
        bail!("lon {lon} is not a longitude in [-180, 180]");
    }
    if !(lat.is_finite() && (-90.0..=90.0).contains(&lat)) {
        bail!("lat {lat} is not a latitude in [-90, 90]");
    }
    Ok(())
}

fn write_located(out: &mut impl Write, grid: &GridMap, lon: f64, lat: f64) -> anyhow::Result<()> {
    let m = grid.locate(lon, lat);
    let cell = m.cell.map(|i| grid.cell(i));
    let located = Located {
        grid_id: cell.map(|c| c.grid_id.as_str()),
        match_kind: m.kind,
        station_id: m.cell.map(|i| grid.station_of(i).station_id.as_str()),
        distance_m: (m.kind == MatchKind::Snapped).then(|| (m.distance_m * 10.0).round() / 10.0),
    };
    serde_json::to_writer(&mut *out, &located).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}
