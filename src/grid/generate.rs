//! `gen-grid`: a synthetic but realistic police-grid map built from district boundaries.
//!
//! Each district polygon is repaired (real boundary files have self-intersecting rings and
//! neighbours that overlap or leave gaps), overlaps with districts earlier in code order are
//! removed, and the district is cut by a square lattice (denser in the six central districts,
//! 120101..120106). Each lattice square is clipped to the district (i_overlay intersection);
//! slivers below a minimum share of a square are dropped. Lattice squares are grouped into
//! police-station areas by B × B blocks of the lattice (small edge blocks are merged into their
//! nearest neighbour block). Every cell gets a roster (a community officer except for a small
//! seeded share of vacancies, 0–1 auxiliary, 1–2 grid workers) and every station a few
//! base-station cell ids located inside its cells. The output is byte-for-byte reproducible
//! for a given seed.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use geo::coordinate_position::CoordPos;
use geo::{
    Area, BooleanOps, BoundingRect, Coord, CoordinatePosition, InteriorPoint, LineString,
    MultiPolygon, Orient, Polygon, Rect, RemoveRepeatedPoints,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::geometry;
use super::load::{convert, read_features, string_property, ROSTER_HEADER, STATIONS_HEADER};
use super::{
    CellSpec, CellTable, GridError, GridMap, GridOptions, GridWarning, Officer, Role, RosterEntry,
    Station,
};

/// District codes of the six central districts (和平 河东 河西 南开 河北 红桥), which get the dense
/// lattice.
pub const CENTRAL_DISTRICTS: [&str; 6] =
    ["120101", "120102", "120103", "120104", "120105", "120106"];

/// Kilometres per degree of latitude (haversine mean radius).
const KM_PER_DEG: f64 = 6371.0088 * std::f64::consts::PI / 180.0;

#[derive(Clone, Debug, PartialEq)]
pub struct GenOptions {
    /// RNG seed (names, phones, vacancies, auxiliaries, base-station locations).
    pub seed: u64,
    /// Lattice square side in the central districts, km.
    pub central_cell_km: f64,
    /// Lattice square side elsewhere, km.
    pub outer_cell_km: f64,
    /// A station area is a block of `station_block` × `station_block` lattice squares.
    pub station_block: i64,
    /// Edge blocks with fewer cells than this are merged into the nearest larger block.
    pub min_station_cells: usize,
    /// Clipped pieces smaller than this share of a full lattice square are dropped.
    pub min_cell_fraction: f64,
    /// Share of cells without a community officer (vacancies).
    pub vacancy_rate: f64,
    /// Probability that a cell has an auxiliary officer.
    pub auxiliary_rate: f64,
    /// Base-station cell ids per station in the cell table.
    pub cell_ids_per_station: usize,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: 2026,
            central_cell_km: 0.6,
            outer_cell_km: 2.2,
            station_block: 4,
            min_station_cells: 4,
            min_cell_fraction: 0.15,
            vacancy_rate: 0.02,
            auxiliary_rate: 0.6,
            cell_ids_per_station: 3,
        }
    }
}

/// The generated map, in memory. `cells` are sorted by grid_id, `stations` by station_id,
/// `roster` by cell then role.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratedMap {
    pub cells: Vec<CellSpec>,
    pub stations: Vec<Station>,
    pub roster: Vec<RosterEntry>,
    /// Base-station cell id, lon, lat.
    pub cell_table: Vec<(String, f64, f64)>,
    /// What was repaired in the district file (invalid polygons, overlaps), one line each.
    pub district_notes: Vec<String>,
}

/// Builds a grid map from a district FeatureCollection (properties `district_code`, `name`).
pub fn generate(districts_geojson: &Path, opts: GenOptions) -> Result<GeneratedMap, GridError> {
    let file = || districts_geojson.to_path_buf();
    if !(opts.central_cell_km > 0.0 && opts.outer_cell_km > 0.0 && opts.station_block > 0) {
        return Err(GridError::Generate {
            file: file(),
            message: "cell sizes and station block must be positive".into(),
        });
    }
    let mut districts = read_districts(districts_geojson)?;
    let mut notes = Vec::new();
    repair_districts(districts_geojson, &mut districts, &mut notes)?;

    // One lattice for the whole city per cell size, aligned on multiples of the step.
    let (mut ymin, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY);
    for d in &districts {
        if let Some(r) = d.shape.bounding_rect() {
            ymin = ymin.min(r.min().y);
            ymax = ymax.max(r.max().y);
        }
    }
    let cos_ref = ((ymin + ymax) / 2.0).to_radians().cos();

    let mut cells = Vec::new();
    let mut stations = Vec::new();
    for d in &districts {
        let km = if CENTRAL_DISTRICTS.contains(&d.code.as_str()) {
            opts.central_cell_km
        } else {
            opts.outer_cell_km
        };
        let lattice = Lattice {
            dlat: km / KM_PER_DEG,
            dlon: km / KM_PER_DEG / cos_ref,
        };
        let pieces = clip_district(d, &lattice, &opts, &mut notes);
        if pieces.is_empty() {
            notes.push(format!(
                "{} {}: no cell above the minimum area; district skipped",
                d.code, d.name
            ));
            continue;
        }
        group_into_stations(d, pieces, &opts, &mut cells, &mut stations);
    }
    if cells.is_empty() {
        return Err(GridError::Generate {
            file: file(),
            message: "no grid cells generated".into(),
        });
    }
    cells.sort_by(|a, b| a.grid_id.cmp(&b.grid_id));
    stations.sort_by(|a, b| a.station_id.cmp(&b.station_id));

    let mut rng = SmallRng::seed_from_u64(opts.seed);
    let roster = make_roster(&cells, &opts, &mut rng);
    let cell_table = make_cell_table(&cells, &stations, &opts, &mut rng);
    Ok(GeneratedMap {
        cells,
        stations,
        roster,
        cell_table,
        district_notes: notes,
    })
}

impl GeneratedMap {
    /// Writes `cells.geojson`, `stations.csv`, `roster.csv` and `cell-table.csv` into `dir`
    /// (created if missing).
    pub fn write(&self, dir: &Path) -> Result<(), GridError> {
        std::fs::create_dir_all(dir).map_err(|source| GridError::Io {
            file: dir.to_path_buf(),
            source,
        })?;
        let put = |name: &str, bytes: Vec<u8>| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).map_err(|source| GridError::Io { file: p, source })
        };
        put("cells.geojson", self.cells_geojson().into_bytes())?;
        put(
            "stations.csv",
            csv_bytes(
                &STATIONS_HEADER,
                self.stations.iter().map(|s| {
                    vec![
                        s.station_id.clone(),
                        s.name.clone(),
                        s.district_code.clone(),
                        s.duty_desk_id.clone(),
                    ]
                }),
            ),
        )?;
        put(
            "roster.csv",
            csv_bytes(
                &ROSTER_HEADER,
                self.roster.iter().map(|r| {
                    let o = &r.officer;
                    vec![
                        r.grid_id.clone(),
                        o.officer_id.clone(),
                        o.name.clone(),
                        o.role.as_str().to_string(),
                        o.phone.clone(),
                    ]
                }),
            ),
        )?;
        put(
            "cell-table.csv",
            csv_bytes(
                &super::cell_table::HEADER,
                self.cell_table
                    .iter()
                    .map(|(id, lon, lat)| vec![id.clone(), lon.to_string(), lat.to_string()]),
            ),
        )?;
        Ok(())
    }

    /// A few lines for the command line: counts, and what was repaired in the district file.
    pub fn summary(&self) -> String {
        let officers = self
            .roster
            .iter()
            .filter(|r| r.officer.role == Role::CommunityOfficer)
            .count();
        let mut without: HashSet<&str> = self.cells.iter().map(|c| c.grid_id.as_str()).collect();
        for r in &self.roster {
            if r.officer.role == Role::CommunityOfficer {
                without.remove(r.grid_id.as_str());
            }
        }
        let mut districts: Vec<&str> = self
            .stations
            .iter()
            .map(|s| s.district_code.as_str())
            .collect();
        districts.dedup();
        let mut s = format!(
            "{} districts, {} stations, {} grid cells ({} without a community officer), {} roster entries \
             ({} community officers), {} base-station cell ids",
            districts.len(),
            self.stations.len(),
            self.cells.len(),
            without.len(),
            self.roster.len(),
            officers,
            self.cell_table.len()
        );
        for n in &self.district_notes {
            s.push_str("\nrepaired: ");
            s.push_str(n);
        }
        s
    }

    /// The cells as a GeoJSON FeatureCollection, one feature per line.
    pub fn cells_geojson(&self) -> String {
        let mut out = String::from("{\"type\":\"FeatureCollection\",\"features\":[\n");
        for (i, c) in self.cells.iter().enumerate() {
            let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
            let _ = write!(
                out,
                "{{\"type\":\"Feature\",\"properties\":{{\"grid_id\":{},\"name\":{},\"station_id\":{}}},\"geometry\":",
                q(&c.grid_id),
                q(&c.name),
                q(&c.station_id)
            );
            write_geometry(&mut out, &c.geometry);
            out.push('}');
            out.push_str(if i + 1 < self.cells.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        out.push_str("]}\n");
        out
    }

    /// Builds the [`GridMap`] directly (what loading the written files gives).
    pub fn to_grid_map(&self, opts: GridOptions) -> Result<(GridMap, Vec<GridWarning>), GridError> {
        GridMap::from_parts(
            self.cells.clone(),
            self.stations.clone(),
            self.roster.clone(),
            opts,
        )
    }

    pub fn to_cell_table(&self) -> Result<CellTable, GridError> {
        CellTable::from_rows(
            self.cell_table
                .iter()
                .map(|(id, lon, lat)| (id.clone(), *lon, *lat)),
        )
    }
}

fn csv_bytes(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Vec<u8> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(header).expect("write to memory");
    for r in rows {
        w.write_record(&r).expect("write to memory");
    }
    w.into_inner().expect("flush to memory")
}

fn write_geometry(out: &mut String, mp: &MultiPolygon<f64>) {
    let ring = |out: &mut String, r: &LineString<f64>| {
        out.push('[');
        for (i, c) in r.0.iter().enumerate() {
            let _ = write!(out, "{}[{},{}]", if i > 0 { "," } else { "" }, c.x, c.y);
        }
        out.push(']');
    };
    let polygon = |out: &mut String, p: &Polygon<f64>| {
        out.push('[');
        ring(out, p.exterior());
        for h in p.interiors() {
            out.push(',');
            ring(out, h);
        }
        out.push(']');
    };
    if mp.0.len() == 1 {
        out.push_str("{\"type\":\"Polygon\",\"coordinates\":");
        polygon(out, &mp.0[0]);
    } else {
        out.push_str("{\"type\":\"MultiPolygon\",\"coordinates\":[");
        for (i, p) in mp.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            polygon(out, p);
        }
        out.push(']');
    }
    out.push('}');
}

// ---------------------------------------------------------------------------------------------
// Districts

struct District {
    code: String,
    name: String,
    shape: MultiPolygon<f64>,
}

fn read_districts(path: &Path) -> Result<Vec<District>, GridError> {
    let features = read_features(path)?;
    let mut out: Vec<District> = Vec::with_capacity(features.len());
    let mut seen = HashSet::new();
    for (feature, f) in features.iter().enumerate() {
        let code = string_property(f, "district_code").ok_or(GridError::MissingProperty {
            file: path.to_path_buf(),
            feature,
            id: None,
            property: "district_code",
        })?;
        let name = string_property(f, "name").ok_or_else(|| GridError::MissingProperty {
            file: path.to_path_buf(),
            feature,
            id: Some(code.clone()),
            property: "name",
        })?;
        if !seen.insert(code.clone()) {
            return Err(GridError::Generate {
                file: path.to_path_buf(),
                message: format!("duplicate district_code {code}"),
            });
        }
        let shape = convert(path, &code, f.geometry.as_ref())?.geometry;
        out.push(District { code, name, shape });
    }
    out.sort_by(|a, b| a.code.cmp(&b.code));
    Ok(out)
}

/// Makes every district valid and removes overlaps with districts earlier in code order.
fn repair_districts(
    path: &Path,
    districts: &mut [District],
    notes: &mut Vec<String>,
) -> Result<(), GridError> {
    let mut taken = MultiPolygon::<f64>::new(vec![]);
    for d in districts.iter_mut() {
        let shape = std::mem::replace(&mut d.shape, MultiPolygon::new(vec![]));
        let (shape, problem) =
            geometry::validate_or_repair(shape).map_err(|problem| GridError::EmptyAfterRepair {
                file: path.to_path_buf(),
                id: d.code.clone(),
                problem,
            })?;
        if let Some(p) = problem {
            notes.push(format!(
                "{} {}: invalid polygon ({p}); repaired by even-odd self-union",
                d.code, d.name
            ));
        }
        let own = shape.unsigned_area();
        let trimmed = if taken.0.is_empty() {
            shape
        } else {
            shape.difference(&taken)
        };
        let lost = own - trimmed.unsigned_area();
        if lost > own * 1e-9 {
            notes.push(format!(
                "{} {}: overlapped earlier districts by {:.3} km²; overlap removed",
                d.code,
                d.name,
                lost * KM_PER_DEG * KM_PER_DEG * centre_cos(&trimmed)
            ));
        }
        taken = if taken.0.is_empty() {
            trimmed.clone()
        } else {
            taken.union(&trimmed)
        };
        if trimmed.0.is_empty() {
            return Err(GridError::EmptyAfterRepair {
                file: path.to_path_buf(),
                id: d.code.clone(),
                problem: "entirely covered by earlier districts".into(),
            });
        }
        d.shape = trimmed;
    }
    Ok(())
}

fn centre_cos(mp: &MultiPolygon<f64>) -> f64 {
    mp.bounding_rect()
        .map(|r| r.center().y.to_radians().cos())
        .unwrap_or(1.0)
}

// ---------------------------------------------------------------------------------------------
// Lattice and stations

struct Lattice {
    dlat: f64,
    dlon: f64,
}

/// A lattice square clipped to a district.
struct Piece {
    ix: i64,
    iy: i64,
    shape: MultiPolygon<f64>,
}

fn clip_district(
    d: &District,
    lat: &Lattice,
    opts: &GenOptions,
    notes: &mut Vec<String>,
) -> Vec<Piece> {
    let Some(bb) = d.shape.bounding_rect() else {
        return vec![];
    };
    let (x0, x1) = (
        (bb.min().x / lat.dlon).floor() as i64,
        (bb.max().x / lat.dlon).ceil() as i64,
    );
    let (y0, y1) = (
        (bb.min().y / lat.dlat).floor() as i64,
        (bb.max().y / lat.dlat).ceil() as i64,
    );
    let full = lat.dlon * lat.dlat;
    let mut out = Vec::new();
    for iy in y0..y1 {
        for ix in x0..x1 {
            let square = Rect::new(
                Coord {
                    x: ix as f64 * lat.dlon,
                    y: iy as f64 * lat.dlat,
                },
                Coord {
                    x: (ix + 1) as f64 * lat.dlon,
                    y: (iy + 1) as f64 * lat.dlat,
                },
            )
            .to_polygon();
            let clipped = d.shape.intersection(&square);
            // Drop crumbs, then the whole piece if what is left is a sliver.
            let parts: Vec<Polygon<f64>> = clipped
                .0
                .into_iter()
                .filter(|p| p.unsigned_area() >= full * 0.02)
                .collect();
            let piece = MultiPolygon::new(parts);
            if piece.unsigned_area() < full * opts.min_cell_fraction {
                continue;
            }
            match finish_shape(piece) {
                Ok(shape) => out.push(Piece { ix, iy, shape }),
                Err(problem) => notes.push(format!(
                    "{} {}: lattice square ({ix}, {iy}) is invalid after rounding ({problem}); dropped",
                    d.code, d.name
                )),
            }
        }
    }
    out
}

/// Rounds to 6 decimals (≈ 0.1 m), removes repeated points, orients rings; repairs and rounds
/// once more if rounding broke validity.
fn finish_shape(mp: MultiPolygon<f64>) -> Result<MultiPolygon<f64>, String> {
    let mut shape = round(&mp);
    if geometry::problems(&shape).is_some() {
        shape = round(&geometry::repair(&shape));
        if let Some(p) = geometry::problems(&shape) {
            return Err(p);
        }
    }
    Ok(shape.orient(geo::orient::Direction::Default))
}

fn round(mp: &MultiPolygon<f64>) -> MultiPolygon<f64> {
    let r = |c: &Coord<f64>| Coord {
        x: (c.x * 1e6).round() / 1e6,
        y: (c.y * 1e6).round() / 1e6,
    };
    let ring =
        |l: &LineString<f64>| LineString::new(l.0.iter().map(r).collect()).remove_repeated_points();
    MultiPolygon::new(
        mp.0.iter()
            .map(|p| {
                Polygon::new(
                    ring(p.exterior()),
                    p.interiors()
                        .iter()
                        .map(ring)
                        .filter(|h| h.0.len() >= 4)
                        .collect(),
                )
            })
            .filter(|p| p.exterior().0.len() >= 4)
            .collect(),
    )
}

fn group_into_stations(
    d: &District,
    pieces: Vec<Piece>,
    opts: &GenOptions,
    cells: &mut Vec<CellSpec>,
    stations: &mut Vec<Station>,
) {
    let b = opts.station_block;
    // Block key (north first, then west first): (-block_y, block_x).
    let mut blocks: BTreeMap<(i64, i64), Vec<Piece>> = BTreeMap::new();
    for p in pieces {
        blocks
            .entry((-p.iy.div_euclid(b), p.ix.div_euclid(b)))
            .or_default()
            .push(p);
    }
    // Merge small edge blocks into the nearest block that is big enough (ties: key order).
    let big: Vec<(i64, i64)> = blocks
        .iter()
        .filter(|(_, v)| v.len() >= opts.min_station_cells)
        .map(|(k, _)| *k)
        .collect();
    if !big.is_empty() {
        let small: Vec<(i64, i64)> = blocks
            .keys()
            .filter(|k| !big.contains(k))
            .copied()
            .collect();
        for k in small {
            let target = *big
                .iter()
                .min_by_key(|t| ((t.0 - k.0).pow(2) + (t.1 - k.1).pow(2), **t))
                .expect("big is not empty");
            let moved = blocks.remove(&k).unwrap_or_default();
            blocks
                .get_mut(&target)
                .expect("target block exists")
                .extend(moved);
        }
    }
    for (si, (_, mut members)) in blocks.into_iter().enumerate() {
        let s = si + 1;
        let station_id = format!("{}-{s:02}", d.code);
        members.sort_by_key(|p| (-p.iy, p.ix));
        for (ci, p) in members.into_iter().enumerate() {
            let c = ci + 1;
            cells.push(CellSpec {
                grid_id: format!("{station_id}-{c:03}"),
                name: format!("{}{s}所第{c}警格", d.name),
                station_id: station_id.clone(),
                geometry: p.shape,
            });
        }
        stations.push(Station {
            station_id: station_id.clone(),
            name: format!("{}第{s}派出所", d.name),
            district_code: d.code.clone(),
            duty_desk_id: format!("desk-{station_id}"),
        });
    }
}

// ---------------------------------------------------------------------------------------------
// People and base stations

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高", "林",
    "何", "郭", "马", "罗", "梁", "宋", "郑", "谢", "韩", "唐", "冯", "于", "董", "萧",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀", "霞", "平", "刚", "英", "华", "建", "国", "志", "海", "鹏", "宇", "欣", "婷", "博",
    "浩", "晨", "雪", "春", "立", "红", "文", "凯",
];

fn person_name(rng: &mut SmallRng) -> String {
    let mut s = String::from(SURNAMES[rng.random_range(0..SURNAMES.len())]);
    for _ in 0..rng.random_range(1..=2) {
        s.push_str(GIVEN[rng.random_range(0..GIVEN.len())]);
    }
    s
}

/// A fake Tianjin landline: `022-2xxxxxxx` (never a mobile-looking number).
fn landline(rng: &mut SmallRng) -> String {
    format!("022-2{:07}", rng.random_range(0..10_000_000u32))
}

fn make_roster(cells: &[CellSpec], opts: &GenOptions, rng: &mut SmallRng) -> Vec<RosterEntry> {
    let mut out = Vec::with_capacity(cells.len() * 4);
    for c in cells {
        let mut add = |officer_id: String, role: Role, rng: &mut SmallRng| {
            let officer = Officer {
                officer_id,
                name: person_name(rng),
                role,
                phone: landline(rng),
            };
            out.push(RosterEntry {
                grid_id: c.grid_id.clone(),
                officer,
            });
        };
        if !rng.random_bool(opts.vacancy_rate.clamp(0.0, 1.0)) {
            add(format!("po-{}", c.grid_id), Role::CommunityOfficer, rng);
        }
        if rng.random_bool(opts.auxiliary_rate.clamp(0.0, 1.0)) {
            add(format!("aux-{}", c.grid_id), Role::Auxiliary, rng);
        }
        for k in 1..=rng.random_range(1..=2) {
            add(format!("gw-{}-{k}", c.grid_id), Role::GridWorker, rng);
        }
    }
    out
}

fn make_cell_table(
    cells: &[CellSpec],
    stations: &[Station],
    opts: &GenOptions,
    rng: &mut SmallRng,
) -> Vec<(String, f64, f64)> {
    let mut out = Vec::with_capacity(stations.len() * opts.cell_ids_per_station);
    for (si, s) in stations.iter().enumerate() {
        let own: Vec<&CellSpec> = cells
            .iter()
            .filter(|c| c.station_id == s.station_id)
            .collect();
        if own.is_empty() {
            continue;
        }
        for n in 1..=opts.cell_ids_per_station {
            let cell = own[rng.random_range(0..own.len())];
            let (lon, lat) = point_inside(&cell.geometry, rng);
            out.push((format!("460-00-{}-{n}", si + 1), lon, lat));
        }
    }
    out
}

/// A random point strictly inside the shape, rounded to 6 decimals.
fn point_inside(mp: &MultiPolygon<f64>, rng: &mut SmallRng) -> (f64, f64) {
    let r6 = |v: f64| (v * 1e6).round() / 1e6;
    if let Some(bb) = mp.bounding_rect() {
        for _ in 0..1000 {
            let c = Coord {
                x: r6(rng.random_range(bb.min().x..=bb.max().x)),
                y: r6(rng.random_range(bb.min().y..=bb.max().y)),
            };
            if mp.coordinate_position(&c) == CoordPos::Inside {
                return (c.x, c.y);
            }
        }
    }
    let p = mp.interior_point().expect("cells are not empty");
    (r6(p.x()), r6(p.y()))
}

/// The four files [`GeneratedMap::write`] writes into `dir`: cells, stations, roster, cell table.
pub fn output_files(dir: &Path) -> [PathBuf; 4] {
    [
        "cells.geojson",
        "stations.csv",
        "roster.csv",
        "cell-table.csv",
    ]
    .map(|n| dir.join(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::tests::TempDir;
    use crate::grid::MatchKind;
    use geo::Validation;

    /// Two hand-made districts around (117.2, 39.1):
    /// * 120101 (central, 0.6 km lattice): a 3.6 km × 3.3 km rectangle with a notch;
    /// * 120110 (outer, 2.2 km lattice): a ~13 km × 11 km polygon east of it whose ring crosses
    ///   itself near its north-east corner (invalid), and which overlaps 120101 by a strip.
    const DISTRICTS: &str = r#"{"type":"FeatureCollection","features":[
{"type":"Feature","properties":{"district_code":"120110","name":"测试外区"},"geometry":{"type":"Polygon","coordinates":[[[117.238,39.08],[117.39,39.08],[117.39,39.19],[117.37,39.21],[117.38,39.21],[117.238,39.18],[117.238,39.08]]]}},
{"type":"Feature","properties":{"district_code":"120101","name":"测试中区"},"geometry":{"type":"Polygon","coordinates":[[[117.2,39.09],[117.242,39.09],[117.242,39.12],[117.22,39.12],[117.22,39.11],[117.21,39.11],[117.21,39.12],[117.2,39.12],[117.2,39.09]]]}}
]}"#;

    fn district_file(dir: &TempDir) -> PathBuf {
        dir.write("districts.geojson", DISTRICTS)
    }

    fn districts_repaired(path: &Path) -> Vec<District> {
        let mut d = read_districts(path).unwrap();
        repair_districts(path, &mut d, &mut vec![]).unwrap();
        d
    }

    #[test]
    fn generates_stations_cells_and_rosters_with_expected_counts() {
        let dir = TempDir::new("gen_counts");
        let g = generate(&district_file(&dir), GenOptions::default()).unwrap();
        let central = g
            .cells
            .iter()
            .filter(|c| c.grid_id.starts_with("120101-"))
            .count();
        let outer = g
            .cells
            .iter()
            .filter(|c| c.grid_id.starts_with("120110-"))
            .count();
        // Central: 3.6 × 3.3 km minus a 0.86 × 1.1 km notch ≈ 10.9 km² in 0.36 km² squares
        // (≈ 30 whole ones plus edge pieces); outer: ≈ 160 km² in 4.84 km² squares (≈ 33).
        assert!((25..=45).contains(&central), "central {central}");
        assert!((25..=50).contains(&outer), "outer {outer}");
        assert!(g.stations.len() >= 3, "{}", g.stations.len());
        // Every station has cells, every cell a known station.
        for s in &g.stations {
            assert!(
                g.cells.iter().any(|c| c.station_id == s.station_id),
                "{} has no cells",
                s.station_id
            );
            assert_eq!(s.duty_desk_id, format!("desk-{}", s.station_id));
        }
        assert_eq!(g.stations[0].station_id, "120101-01");
        assert_eq!(g.stations[0].name, "测试中区第1派出所");
        assert_eq!(g.cells[0].grid_id, "120101-01-001");
        assert_eq!(g.cells[0].name, "测试中区1所第1警格");
        // Base-station ids: cell_ids_per_station per station.
        assert_eq!(g.cell_table.len(), g.stations.len() * 3);
        assert_eq!(g.cell_table[0].0, "460-00-1-1");
        let summary = g.summary();
        assert!(
            summary.starts_with(&format!(
                "2 districts, {} stations, {} grid cells (",
                g.stations.len(),
                g.cells.len()
            )),
            "{summary}"
        );
        assert!(
            summary.contains("\nrepaired: 120110 测试外区: invalid polygon"),
            "{summary}"
        );
        // The invalid outer district was repaired and its overlap removed.
        assert!(
            g.district_notes
                .iter()
                .any(|n| n.starts_with("120110 测试外区: invalid polygon")),
            "{:?}",
            g.district_notes
        );
        assert!(
            g.district_notes
                .iter()
                .any(|n| n.contains("overlapped earlier districts")),
            "{:?}",
            g.district_notes
        );
    }

    #[test]
    fn same_seed_gives_identical_bytes_and_another_seed_does_not() {
        let dir = TempDir::new("gen_repro");
        let path = district_file(&dir);
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        generate(&path, GenOptions::default())
            .unwrap()
            .write(&a)
            .unwrap();
        generate(&path, GenOptions::default())
            .unwrap()
            .write(&b)
            .unwrap();
        generate(
            &path,
            GenOptions {
                seed: 7,
                ..GenOptions::default()
            },
        )
        .unwrap()
        .write(&c)
        .unwrap();
        for name in [
            "cells.geojson",
            "stations.csv",
            "roster.csv",
            "cell-table.csv",
        ] {
            let (x, y) = (
                std::fs::read(a.join(name)).unwrap(),
                std::fs::read(b.join(name)).unwrap(),
            );
            assert!(!x.is_empty());
            assert!(x == y, "{name} differs between two runs with the same seed");
        }
        assert_ne!(
            std::fs::read(a.join("roster.csv")).unwrap(),
            std::fs::read(c.join("roster.csv")).unwrap()
        );
        // Geometry does not depend on the seed.
        assert_eq!(
            std::fs::read(a.join("cells.geojson")).unwrap(),
            std::fs::read(c.join("cells.geojson")).unwrap()
        );
    }

    #[test]
    fn generated_cells_are_valid_and_inside_their_district() {
        let dir = TempDir::new("gen_valid");
        let path = district_file(&dir);
        let g = generate(&path, GenOptions::default()).unwrap();
        let districts = districts_repaired(&path);
        for c in &g.cells {
            assert!(
                c.geometry.is_valid(),
                "{}: {:?}",
                c.grid_id,
                c.geometry.validation_errors()
            );
            let d = districts
                .iter()
                .find(|d| c.grid_id.starts_with(&d.code))
                .unwrap();
            // Every vertex lies in the district or within 0.2 m of its boundary (6-decimal rounding).
            for p in &c.geometry.0 {
                for v in p
                    .exterior()
                    .0
                    .iter()
                    .chain(p.interiors().iter().flat_map(|h| h.0.iter()))
                {
                    if d.shape.coordinate_position(v) != CoordPos::Outside {
                        continue;
                    }
                    let cos = v.y.to_radians().cos();
                    let dist = d
                        .shape
                        .0
                        .iter()
                        .map(|dp| crate::grid::index::distance_to_boundary_m(dp, v.x, v.y, cos))
                        .fold(f64::INFINITY, f64::min);
                    assert!(
                        dist < 0.2,
                        "{}: vertex {v:?} is {dist} m outside {}",
                        c.grid_id,
                        d.code
                    );
                }
            }
            // And no area outside it.
            let outside = c.geometry.difference(&d.shape).unsigned_area();
            assert!(
                outside < c.geometry.unsigned_area() * 1e-3,
                "{}: {outside}",
                c.grid_id
            );
        }
        // Cells cover most of each district (only slivers dropped).
        for d in &districts {
            let covered: f64 = g
                .cells
                .iter()
                .filter(|c| c.grid_id.starts_with(&d.code))
                .map(|c| c.geometry.unsigned_area())
                .sum();
            let share = covered / d.shape.unsigned_area();
            assert!((0.93..=1.0001).contains(&share), "{}: {share}", d.code);
        }
    }

    #[test]
    fn every_cell_has_a_roster_and_phones_are_landlines() {
        let dir = TempDir::new("gen_roster");
        let g = generate(
            &district_file(&dir),
            GenOptions {
                vacancy_rate: 0.1,
                ..GenOptions::default()
            },
        )
        .unwrap();
        let (map, warnings) = g.to_grid_map(GridOptions::default()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        for i in 0..map.cells().len() {
            let roster = map.roster(i);
            let gw = roster.iter().filter(|o| o.role == Role::GridWorker).count();
            assert!((1..=2).contains(&gw), "{}", map.cell(i).grid_id);
            assert!(roster.iter().filter(|o| o.role == Role::Auxiliary).count() <= 1);
            if let Some(po) = map.community_officer(i) {
                assert_eq!(po.officer_id, format!("po-{}", map.cell(i).grid_id));
            }
        }
        let vacancies = map.cells_without_officer();
        assert!(
            vacancies >= 1 && vacancies * 4 < map.cells().len(),
            "{vacancies} of {}",
            map.cells().len()
        );
        for r in &g.roster {
            let p = r.officer.phone.as_bytes();
            assert_eq!(p.len(), 12, "{}", r.officer.phone);
            assert!(r.officer.phone.starts_with("022-2") && p[4..].iter().all(u8::is_ascii_digit));
            let chars = r.officer.name.chars().count();
            assert!((2..=3).contains(&chars), "{}", r.officer.name);
        }
    }

    #[test]
    fn written_files_load_without_warnings_and_base_stations_locate_in_their_station() {
        let dir = TempDir::new("gen_load");
        let g = generate(&district_file(&dir), GenOptions::default()).unwrap();
        let out = dir.path().join("out");
        g.write(&out).unwrap();
        let [cells, stations, roster, table] = output_files(&out);
        let (map, warnings) =
            GridMap::load(&cells, &stations, &roster, GridOptions::default()).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(map.cells().len(), g.cells.len());
        assert_eq!(map.stations().len(), g.stations.len());
        assert_eq!(map.officer_count(), g.roster.len());
        let t = CellTable::load(&table).unwrap();
        assert_eq!(t.len(), g.cell_table.len());
        for (si, s) in g.stations.iter().enumerate() {
            for n in 1..=3 {
                let (lon, lat) = t.get(&format!("460-00-{}-{n}", si + 1)).unwrap();
                let m = map.locate(lon, lat);
                assert_eq!(m.kind, MatchKind::Inside);
                assert_eq!(map.station_of(m.cell.unwrap()).station_id, s.station_id);
            }
        }
        // Lattice neighbours share edges exactly: the centre of every cell's bounding box that
        // lies inside the cell finds that cell.
        for (i, c) in map.cells().iter().enumerate() {
            let p = geo::InteriorPoint::interior_point(map.geometry(i)).unwrap();
            let m = map.locate(p.x(), p.y());
            assert_eq!(m.cell.map(|j| &map.cell(j).grid_id), Some(&c.grid_id));
        }
    }

    #[test]
    fn district_file_errors_name_the_file_and_district() {
        let dir = TempDir::new("gen_errors");
        let p = dir.write(
            "d.geojson",
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"name":"x"},"geometry":null}]}"#,
        );
        let e = generate(&p, GenOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: feature #0: property `district_code` is missing, empty or not a string",
                p.display()
            )
        );
        let p = dir.write(
            "p.geojson",
            r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"district_code":"120101","name":"x"},"geometry":{"type":"Point","coordinates":[117,39]}}]}"#,
        );
        let e = generate(&p, GenOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: 120101: geometry must be a Polygon or MultiPolygon, found Point",
                p.display()
            )
        );
        let twice = DISTRICTS.replace("120110", "120101");
        let p = dir.write("dup.geojson", &twice);
        let e = generate(&p, GenOptions::default()).unwrap_err();
        assert!(matches!(e, GridError::Generate { .. }));
        assert_eq!(
            e.to_string(),
            format!("{}: duplicate district_code 120101", p.display())
        );
        // A district too small for any cell above the minimum area: nothing generated.
        let tiny = r#"{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"district_code":"120120","name":"x"},"geometry":{"type":"Polygon","coordinates":[[[117.0,39.0],[117.0001,39.0],[117.0001,39.0001],[117.0,39.0]]]}}]}"#;
        let p = dir.write("tiny.geojson", tiny);
        let e = generate(&p, GenOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: no grid cells generated", p.display())
        );
    }
}
