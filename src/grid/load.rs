//! Reading the three grid files and assembling a [`GridMap`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use geo::MultiPolygon;

use super::geometry::{self, ConvertError};
use super::index::SpatialIndex;
use super::{
    Cell, CellSpec, GridError, GridMap, GridOptions, GridWarning, Officer, Role, RosterEntry,
    Station,
};

pub(crate) const STATIONS_HEADER: [&str; 4] =
    ["station_id", "name", "district_code", "duty_desk_id"];
pub(crate) const ROSTER_HEADER: [&str; 5] = ["grid_id", "officer_id", "name", "role", "phone"];

/// A cell as read, before validation.
struct RawCell {
    grid_id: String,
    name: String,
    station_id: String,
    geometry: MultiPolygon<f64>,
    unclosed_rings: usize,
    /// Feature index in the file (or position in the in-memory list).
    feature: usize,
}

/// A roster row as read, before the grid_id and role are checked.
struct RawRoster {
    line: u64,
    grid_id: String,
    officer_id: String,
    name: String,
    role: String,
    phone: String,
}

struct Sources<'a> {
    cells: &'a Path,
    stations: &'a Path,
    roster: &'a Path,
}

pub(crate) fn load(
    cells_geojson: &Path,
    stations_csv: &Path,
    roster_csv: &Path,
    opts: GridOptions,
) -> Result<(GridMap, Vec<GridWarning>), GridError> {
    let stations = read_stations(stations_csv)?;
    let cells = read_cells(cells_geojson)?;
    let roster = read_roster(roster_csv)?;
    build(
        Sources {
            cells: cells_geojson,
            stations: stations_csv,
            roster: roster_csv,
        },
        cells,
        stations,
        roster,
        opts,
    )
}

pub(crate) fn from_parts(
    cells: Vec<CellSpec>,
    stations: Vec<Station>,
    roster: Vec<RosterEntry>,
    opts: GridOptions,
) -> Result<(GridMap, Vec<GridWarning>), GridError> {
    let src = Sources {
        cells: Path::new("<cells>"),
        stations: Path::new("<stations>"),
        roster: Path::new("<roster>"),
    };
    let mut stations_out = Vec::with_capacity(stations.len());
    for (i, s) in stations.into_iter().enumerate() {
        let line = i as u64 + 2;
        for (field, value) in
            STATIONS_HEADER
                .iter()
                .zip([&s.station_id, &s.name, &s.district_code, &s.duty_desk_id])
        {
            if value.trim().is_empty() {
                return Err(GridError::MissingField {
                    file: src.stations.into(),
                    line,
                    field,
                });
            }
        }
        stations_out.push((line, s));
    }
    let mut raw = Vec::with_capacity(cells.len());
    for (feature, c) in cells.into_iter().enumerate() {
        for (property, value) in [
            ("grid_id", &c.grid_id),
            ("name", &c.name),
            ("station_id", &c.station_id),
        ] {
            if value.trim().is_empty() {
                let id = (property != "grid_id").then(|| c.grid_id.clone());
                return Err(GridError::MissingProperty {
                    file: src.cells.into(),
                    feature,
                    id,
                    property,
                });
            }
        }
        if c.geometry.0.is_empty() {
            return Err(GridError::EmptyGeometry {
                file: src.cells.into(),
                id: c.grid_id,
            });
        }
        if let Err(detail) = geometry::check_coords(&c.geometry) {
            return Err(GridError::BadCoordinate {
                file: src.cells.into(),
                id: c.grid_id,
                detail,
            });
        }
        raw.push(RawCell {
            grid_id: c.grid_id,
            name: c.name,
            station_id: c.station_id,
            geometry: c.geometry,
            unclosed_rings: 0,
            feature,
        });
    }
    let roster = roster
        .into_iter()
        .enumerate()
        .map(|(i, r)| RawRoster {
            line: i as u64 + 2,
            grid_id: r.grid_id,
            officer_id: r.officer.officer_id,
            name: r.officer.name,
            role: r.officer.role.as_str().to_string(),
            phone: r.officer.phone,
        })
        .collect();
    build(src, raw, stations_out, roster, opts)
}

fn io_err(file: &Path) -> impl FnOnce(std::io::Error) -> GridError + '_ {
    move |source| GridError::Io {
        file: file.to_path_buf(),
        source,
    }
}

fn read_cells(path: &Path) -> Result<Vec<RawCell>, GridError> {
    let features = read_features(path)?;
    let file = || path.to_path_buf();
    let mut out = Vec::with_capacity(features.len());
    for (feature, f) in features.iter().enumerate() {
        let grid_id = string_property(f, "grid_id").ok_or(GridError::MissingProperty {
            file: file(),
            feature,
            id: None,
            property: "grid_id",
        })?;
        let prop = |property: &'static str| {
            string_property(f, property).ok_or_else(|| GridError::MissingProperty {
                file: file(),
                feature,
                id: Some(grid_id.clone()),
                property,
            })
        };
        let name = prop("name")?;
        let station_id = prop("station_id")?;
        let converted = convert(path, &grid_id, f.geometry.as_ref())?;
        out.push(RawCell {
            grid_id,
            name,
            station_id,
            geometry: converted.geometry,
            unclosed_rings: converted.unclosed_rings,
            feature,
        });
    }
    Ok(out)
}

/// Reads a GeoJSON FeatureCollection (shared with the generator's district reader).
pub(crate) fn read_features(path: &Path) -> Result<Vec<geojson::Feature>, GridError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let gj: geojson::GeoJson = text
        .parse()
        .map_err(|e: geojson::Error| GridError::GeoJson {
            file: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let features = match gj {
        geojson::GeoJson::FeatureCollection(fc) => fc.features,
        geojson::GeoJson::Feature(_) => {
            return Err(GridError::NotFeatureCollection {
                file: path.to_path_buf(),
                found: "a Feature".into(),
            })
        }
        geojson::GeoJson::Geometry(_) => {
            return Err(GridError::NotFeatureCollection {
                file: path.to_path_buf(),
                found: "a Geometry".into(),
            })
        }
    };
    if features.is_empty() {
        return Err(GridError::NoFeatures {
            file: path.to_path_buf(),
        });
    }
    Ok(features)
}

/// A non-empty string property (surrounding whitespace trimmed).
pub(crate) fn string_property(f: &geojson::Feature, name: &str) -> Option<String> {
    match f.properties.as_ref()?.get(name)? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

/// Converts a feature's geometry, mapping conversion failures to errors naming `id`.
pub(crate) fn convert(
    path: &Path,
    id: &str,
    g: Option<&geojson::Geometry>,
) -> Result<geometry::Converted, GridError> {
    let file = path.to_path_buf();
    let id = id.to_string();
    geometry::from_geojson(g).map_err(|e| match e {
        ConvertError::Missing | ConvertError::Empty => GridError::EmptyGeometry { file, id },
        ConvertError::NotPolygon(found) => GridError::NonPolygonGeometry {
            file,
            id,
            found: found.to_string(),
        },
        ConvertError::BadCoordinate(detail) => GridError::BadCoordinate { file, id, detail },
    })
}

/// Opens a CSV file and checks its header. Fields are trimmed; the field count is checked.
pub(crate) fn csv_reader(
    path: &Path,
    expected: &[&str],
) -> Result<csv::Reader<std::fs::File>, GridError> {
    let f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(f);
    let headers = rdr.headers().map_err(|e| csv_err(path, e))?;
    if headers.iter().ne(expected.iter().copied()) {
        return Err(GridError::BadHeader {
            file: path.to_path_buf(),
            expected: expected.join(","),
            found: headers.iter().collect::<Vec<_>>().join(","),
        });
    }
    Ok(rdr)
}

pub(crate) fn csv_err(path: &Path, e: csv::Error) -> GridError {
    let line = e.position().map(|p| p.line()).unwrap_or(0);
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("expected {expected_len} fields, found {len}")
        }
        csv::ErrorKind::Io(io) => io.to_string(),
        csv::ErrorKind::Utf8 { .. } => "invalid UTF-8".to_string(),
        _ => e.to_string(),
    };
    GridError::Csv {
        file: path.to_path_buf(),
        line,
        message,
    }
}

/// Iterates the records of a CSV file with their line numbers, checking that `required` fields
/// (by column index) are not empty.
pub(crate) fn csv_rows(
    path: &Path,
    header: &'static [&'static str],
    required: &[usize],
    mut each: impl FnMut(u64, &csv::StringRecord) -> Result<(), GridError>,
) -> Result<(), GridError> {
    let mut rdr = csv_reader(path, header)?;
    let mut rec = csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => return Err(csv_err(path, e)),
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        for &i in required {
            if rec.get(i).unwrap_or("").is_empty() {
                return Err(GridError::MissingField {
                    file: path.to_path_buf(),
                    line,
                    field: header[i],
                });
            }
        }
        each(line, &rec)?;
    }
}

fn read_stations(path: &Path) -> Result<Vec<(u64, Station)>, GridError> {
    let mut out = Vec::new();
    csv_rows(path, &STATIONS_HEADER, &[0, 1, 2, 3], |line, r| {
        out.push((
            line,
            Station {
                station_id: r[0].to_string(),
                name: r[1].to_string(),
                district_code: r[2].to_string(),
                duty_desk_id: r[3].to_string(),
            },
        ));
        Ok(())
    })?;
    Ok(out)
}

fn read_roster(path: &Path) -> Result<Vec<RawRoster>, GridError> {
    let mut out = Vec::new();
    csv_rows(path, &ROSTER_HEADER, &[0, 1, 2, 3], |line, r| {
        out.push(RawRoster {
            line,
            grid_id: r[0].to_string(),
            officer_id: r[1].to_string(),
            name: r[2].to_string(),
            role: r[3].to_string(),
            phone: r[4].to_string(),
        });
        Ok(())
    })?;
    Ok(out)
}

fn build(
    src: Sources<'_>,
    mut raw: Vec<RawCell>,
    stations: Vec<(u64, Station)>,
    roster: Vec<RawRoster>,
    opts: GridOptions,
) -> Result<(GridMap, Vec<GridWarning>), GridError> {
    // Stations, in file order.
    let mut station_idx: HashMap<String, (usize, u64)> = HashMap::with_capacity(stations.len());
    let mut station_list = Vec::with_capacity(stations.len());
    for (line, s) in stations {
        if let Some(&(_, first_line)) = station_idx.get(&s.station_id) {
            return Err(GridError::DuplicateStationId {
                file: src.stations.into(),
                line,
                station_id: s.station_id,
                first_line,
            });
        }
        station_idx.insert(s.station_id.clone(), (station_list.len(), line));
        station_list.push(s);
    }

    // Cells: unique ids, known stations, then sorted by grid_id.
    if raw.is_empty() {
        return Err(GridError::NoFeatures {
            file: src.cells.into(),
        });
    }
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(raw.len());
    for c in &raw {
        if let Some(&first_feature) = seen.get(c.grid_id.as_str()) {
            return Err(GridError::DuplicateGridId {
                file: src.cells.into(),
                grid_id: c.grid_id.clone(),
                first_feature,
                feature: c.feature,
            });
        }
        seen.insert(&c.grid_id, c.feature);
        if !station_idx.contains_key(&c.station_id) {
            return Err(GridError::UnknownStation {
                file: src.cells.into(),
                grid_id: c.grid_id.clone(),
                station_id: c.station_id.clone(),
            });
        }
    }
    drop(seen);
    raw.sort_by(|a, b| a.grid_id.cmp(&b.grid_id));

    // Geometry: close, validate, repair (or refuse in strict mode).
    let mut warnings = Vec::new();
    let mut cells = Vec::with_capacity(raw.len());
    let mut shapes = Vec::with_capacity(raw.len());
    for c in raw {
        let file = || PathBuf::from(src.cells);
        let mut notes = Vec::new();
        if c.unclosed_rings > 0 {
            notes.push(format!("{} ring(s) not closed", c.unclosed_rings));
        }
        let (geometry, problem) = if opts.strict {
            let problem = geometry::problems(&c.geometry);
            if let Some(p) = problem {
                notes.push(p);
            }
            if !notes.is_empty() {
                return Err(GridError::InvalidPolygon {
                    file: file(),
                    id: c.grid_id,
                    problem: notes.join("; "),
                });
            }
            (c.geometry, None)
        } else {
            geometry::validate_or_repair(c.geometry).map_err(|problem| {
                GridError::EmptyAfterRepair {
                    file: file(),
                    id: c.grid_id.clone(),
                    problem,
                }
            })?
        };
        if let Some(p) = problem {
            notes.push(format!(
                "{p}; repaired ({} polygon part(s) after repair)",
                geometry.0.len()
            ));
        } else if c.unclosed_rings > 0 {
            notes.push("closed them".to_string());
        }
        if !notes.is_empty() {
            warnings.push(GridWarning {
                grid_id: c.grid_id.clone(),
                problem: notes.join("; "),
            });
        }
        cells.push(Cell {
            grid_id: c.grid_id,
            name: c.name,
            station: station_idx[&c.station_id].0,
        });
        shapes.push(geometry);
    }

    // Roster: known grid ids, valid roles, no line twice and one community officer per cell
    // (tasks go to exactly one); grouped by cell, community officers first.
    let mut rows: Vec<(usize, Role, u64, Officer)> = Vec::with_capacity(roster.len());
    let mut listed: HashMap<(usize, String), u64> = HashMap::with_capacity(roster.len());
    let mut community: HashMap<usize, (String, u64)> = HashMap::with_capacity(cells.len());
    for r in roster {
        for (field, value) in [
            ("grid_id", &r.grid_id),
            ("officer_id", &r.officer_id),
            ("name", &r.name),
        ] {
            if value.trim().is_empty() {
                return Err(GridError::MissingField {
                    file: src.roster.into(),
                    line: r.line,
                    field,
                });
            }
        }
        let Ok(cell) = cells.binary_search_by(|c: &Cell| c.grid_id.as_str().cmp(&r.grid_id)) else {
            return Err(GridError::UnknownGridId {
                file: src.roster.into(),
                line: r.line,
                grid_id: r.grid_id,
            });
        };
        let Some(role) = Role::parse(&r.role) else {
            return Err(GridError::BadRole {
                file: src.roster.into(),
                line: r.line,
                role: r.role,
            });
        };
        if let Some(&first_line) = listed.get(&(cell, r.officer_id.clone())) {
            return Err(GridError::DuplicateRosterEntry {
                file: src.roster.into(),
                line: r.line,
                grid_id: r.grid_id,
                officer_id: r.officer_id,
                first_line,
            });
        }
        listed.insert((cell, r.officer_id.clone()), r.line);
        if role == Role::CommunityOfficer {
            if let Some((first, first_line)) = community.get(&cell) {
                return Err(GridError::SecondCommunityOfficer {
                    file: src.roster.into(),
                    line: r.line,
                    grid_id: r.grid_id,
                    officer_id: r.officer_id,
                    first_officer_id: first.clone(),
                    first_line: *first_line,
                });
            }
            community.insert(cell, (r.officer_id.clone(), r.line));
        }
        rows.push((
            cell,
            role,
            r.line,
            Officer {
                officer_id: r.officer_id,
                name: r.name,
                role,
                phone: r.phone,
            },
        ));
    }
    rows.sort_by_key(|&(cell, role, line, _)| (cell, role, line));
    let mut roster_start = Vec::with_capacity(cells.len() + 1);
    let mut officers = Vec::with_capacity(rows.len());
    let mut next = 0;
    for (cell, _, _, officer) in rows {
        while roster_start.len() <= cell {
            roster_start.push(next);
        }
        officers.push(officer);
        next += 1;
    }
    while roster_start.len() <= cells.len() {
        roster_start.push(next);
    }

    let index = SpatialIndex::build(&shapes);
    let mut map = GridMap {
        cells,
        stations: station_list,
        shapes,
        index,
        officers,
        roster_start,
        cells_without_officer: 0,
        opts,
    };
    map.cells_without_officer = (0..map.cells.len())
        .filter(|&i| map.community_officer(i).is_none())
        .count();
    tracing::debug!(
        cells = map.cells.len(),
        stations = map.stations.len(),
        officers = map.officers.len(),
        repaired = warnings.len(),
        "grid map built"
    );
    Ok((map, warnings))
}
