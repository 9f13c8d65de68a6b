//! Hand-computed geometry and load-error tests for the grid map.
//!
//! Cells are small squares near Tianjin: one "unit" is 0.01 degree (≈ 1112 m north-south,
//! ≈ 864 m east-west at 39°N). Expected distances are computed with the haversine formula
//! written out here, independently of the code under test.

use std::path::{Path, PathBuf};

use geo::{polygon, MultiPolygon, Polygon};

use super::*;

const LON0: f64 = 117.0;
const LAT0: f64 = 39.0;
const U: f64 = 0.01;
/// Mean earth radius used by geo's haversine (GRS80).
const R: f64 = 6_371_008.8;

/// A scratch directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("dissuade-grid-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Haversine distance between two lon/lat points, written out by hand.
fn haversine_m(lon1: f64, lat1: f64, lon2: f64, lat2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * R * a.sqrt().asin()
}

/// Lon/lat of a point given in units from (LON0, LAT0).
fn at(x: f64, y: f64) -> (f64, f64) {
    (LON0 + x * U, LAT0 + y * U)
}

/// An axis-aligned rectangle in units.
fn rect(x0: f64, y0: f64, x1: f64, y1: f64) -> Polygon<f64> {
    let (a, b) = (at(x0, y0), at(x1, y1));
    polygon![(x: a.0, y: a.1), (x: b.0, y: a.1), (x: b.0, y: b.1), (x: a.0, y: b.1), (x: a.0, y: a.1)]
}

fn spec(grid_id: &str, geometry: impl Into<MultiPolygon<f64>>) -> CellSpec {
    CellSpec {
        grid_id: grid_id.to_string(),
        name: format!("cell {grid_id}"),
        station_id: "s1".to_string(),
        geometry: geometry.into(),
    }
}

fn station(id: &str) -> Station {
    Station {
        station_id: id.to_string(),
        name: format!("{id} station"),
        district_code: "120101".to_string(),
        duty_desk_id: format!("desk-{id}"),
    }
}

fn map_of(cells: Vec<CellSpec>) -> GridMap {
    let (map, warnings) =
        GridMap::from_parts(cells, vec![station("s1")], vec![], GridOptions::default()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    map
}

fn located(map: &GridMap, p: (f64, f64)) -> (Option<&str>, MatchKind, f64) {
    let m = map.locate(p.0, p.1);
    (
        m.cell.map(|i| map.cell(i).grid_id.as_str()),
        m.kind,
        m.distance_m,
    )
}

// ---------------------------------------------------------------------------------------------
// Lookup semantics

#[test]
fn point_inside_each_of_two_adjacent_squares_matches_that_square() {
    let map = map_of(vec![
        spec("g-2", rect(0., 0., 1., 1.)),
        spec("g-1", rect(1., 0., 2., 1.)),
    ]);
    assert_eq!(
        located(&map, at(0.5, 0.5)),
        (Some("g-2"), MatchKind::Inside, 0.0)
    );
    assert_eq!(
        located(&map, at(1.5, 0.5)),
        (Some("g-1"), MatchKind::Inside, 0.0)
    );
}

#[test]
fn cells_are_sorted_by_grid_id_at_load() {
    let map = map_of(vec![
        spec("g-2", rect(0., 0., 1., 1.)),
        spec("g-1", rect(1., 0., 2., 1.)),
    ]);
    let ids: Vec<&str> = map.cells().iter().map(|c| c.grid_id.as_str()).collect();
    assert_eq!(ids, ["g-1", "g-2"]);
    assert_eq!(map.find_cell("g-2"), Some(1));
    assert_eq!(map.find_cell("g-3"), None);
}

#[test]
fn point_on_shared_edge_goes_to_smaller_grid_id() {
    // g-2 is west of the edge x = 1, g-1 east of it: the edge point goes to g-1.
    let map = map_of(vec![
        spec("g-2", rect(0., 0., 1., 1.)),
        spec("g-1", rect(1., 0., 2., 1.)),
    ]);
    assert_eq!(
        located(&map, at(1.0, 0.5)),
        (Some("g-1"), MatchKind::Inside, 0.0)
    );
    // The same with the ids swapped.
    let map = map_of(vec![
        spec("g-1", rect(0., 0., 1., 1.)),
        spec("g-2", rect(1., 0., 2., 1.)),
    ]);
    assert_eq!(
        located(&map, at(1.0, 0.5)),
        (Some("g-1"), MatchKind::Inside, 0.0)
    );
    // An outer edge point belongs to its only cell.
    assert_eq!(
        located(&map, at(2.0, 0.5)),
        (Some("g-2"), MatchKind::Inside, 0.0)
    );
}

#[test]
fn vertex_shared_by_four_cells_goes_to_smallest_grid_id() {
    // 2 × 2 squares around the vertex (1, 1); the smallest id is the north-east square.
    let map = map_of(vec![
        spec("v-4", rect(0., 0., 1., 1.)),
        spec("v-2", rect(1., 0., 2., 1.)),
        spec("v-3", rect(0., 1., 1., 2.)),
        spec("v-1", rect(1., 1., 2., 2.)),
    ]);
    assert_eq!(
        located(&map, at(1.0, 1.0)),
        (Some("v-1"), MatchKind::Inside, 0.0)
    );
    // On the edge between v-4 and v-3 (y = 1, x < 1): v-3.
    assert_eq!(
        located(&map, at(0.5, 1.0)),
        (Some("v-3"), MatchKind::Inside, 0.0)
    );
    assert_eq!(
        located(&map, at(0.5, 0.5)),
        (Some("v-4"), MatchKind::Inside, 0.0)
    );
}

#[test]
fn overlap_region_goes_to_smaller_grid_id() {
    let map = map_of(vec![
        spec("ov-b", rect(0., 0., 2., 2.)),
        spec("ov-a", rect(1., 1., 3., 3.)),
    ]);
    assert_eq!(
        located(&map, at(1.5, 1.5)),
        (Some("ov-a"), MatchKind::Inside, 0.0)
    );
    assert_eq!(
        located(&map, at(0.5, 0.5)),
        (Some("ov-b"), MatchKind::Inside, 0.0)
    );
    assert_eq!(
        located(&map, at(2.5, 2.5)),
        (Some("ov-a"), MatchKind::Inside, 0.0)
    );
}

#[test]
fn point_in_hole_is_not_inside_and_snaps_to_the_hole_ring() {
    // Exterior 3 × 3 units, hole [1, 2] × [1, 2].
    let outer = rect(0., 0., 3., 3.);
    let hole = rect(1., 1., 2., 2.).exterior().clone();
    let donut = Polygon::new(outer.exterior().clone(), vec![hole]);
    let map = map_of(vec![spec("h", donut)]);
    // Ring interior, away from the hole.
    assert_eq!(
        located(&map, at(0.5, 0.5)),
        (Some("h"), MatchKind::Inside, 0.0)
    );
    // On the hole's ring: inside (the boundary belongs to the cell).
    assert_eq!(
        located(&map, at(1.0, 1.5)),
        (Some("h"), MatchKind::Inside, 0.0)
    );
    // Centre of the hole: the nearest boundary is the west/east hole edge, 0.5 unit of
    // longitude away at the same latitude (≈ 432 m, nearer than the 556 m to north/south).
    let (lon, lat) = at(1.5, 1.5);
    let expected = haversine_m(lon, lat, lon - 0.5 * U, lat);
    assert!((expected - 432.0).abs() < 1.0, "{expected}");
    let (id, kind, d) = located(&map, (lon, lat));
    assert_eq!((id, kind), (Some("h"), MatchKind::Snapped));
    assert!((d - expected).abs() < 1.0, "{d} vs {expected}");
    // With a 400 m snap distance the hole centre matches nothing.
    let (map, _) = GridMap::from_parts(
        vec![spec(
            "h",
            Polygon::new(
                outer.exterior().clone(),
                vec![rect(1., 1., 2., 2.).exterior().clone()],
            ),
        )],
        vec![station("s1")],
        vec![],
        GridOptions {
            snap_distance_m: 400.0,
            strict: false,
        },
    )
    .unwrap();
    assert_eq!(map.locate(lon, lat), GridMatch::UNMATCHED);
}

#[test]
fn multipolygon_cell_matches_in_either_part() {
    let mp = MultiPolygon::new(vec![rect(0., 0., 1., 1.), rect(5., 0., 6., 1.)]);
    let map = map_of(vec![spec("mp", mp), spec("other", rect(2., 0., 3., 1.))]);
    assert_eq!(
        located(&map, at(0.5, 0.5)),
        (Some("mp"), MatchKind::Inside, 0.0)
    );
    assert_eq!(
        located(&map, at(5.5, 0.5)),
        (Some("mp"), MatchKind::Inside, 0.0)
    );
    assert_eq!(
        located(&map, at(2.5, 0.5)),
        (Some("other"), MatchKind::Inside, 0.0)
    );
    // Between the parts, 1 unit (≈ 864 m) from everything: unmatched.
    assert_eq!(located(&map, at(4.0, 0.5)).1, MatchKind::Unmatched);
}

#[test]
fn point_300m_east_of_a_cell_is_snapped_with_haversine_distance() {
    let map = map_of(vec![spec("s", rect(0., 0., 1., 1.))]);
    // 0.00347° of longitude east of the east edge, at mid-height.
    let (edge_lon, lat) = at(1.0, 0.5);
    let lon = edge_lon + 0.00347;
    // By hand: d = 2 R asin(cos φ · sin(Δλ / 2)) for two points on the same parallel.
    let expected =
        2.0 * R * (lat.to_radians().cos() * (0.00347f64.to_radians() / 2.0).sin()).asin();
    assert!((expected - 299.8).abs() < 0.5, "{expected}");
    let m = map.locate(lon, lat);
    assert_eq!(m.cell, Some(0));
    assert_eq!(m.kind, MatchKind::Snapped);
    assert!(
        (m.distance_m - expected).abs() < 1.0,
        "{} vs {expected}",
        m.distance_m
    );
}

#[test]
fn point_300m_south_of_a_cell_is_snapped_with_haversine_distance() {
    let map = map_of(vec![spec("s", rect(0., 0., 1., 1.))]);
    let (lon, edge_lat) = at(0.5, 0.0);
    let lat = edge_lat - 0.0027;
    // Along a meridian: d = R · Δφ.
    let expected = R * 0.0027f64.to_radians();
    assert!((expected - 300.2).abs() < 0.5, "{expected}");
    let m = map.locate(lon, lat);
    assert_eq!((m.cell, m.kind), (Some(0), MatchKind::Snapped));
    assert!(
        (m.distance_m - expected).abs() < 1.0,
        "{} vs {expected}",
        m.distance_m
    );
}

#[test]
fn point_near_a_corner_snaps_with_distance_to_the_corner() {
    let map = map_of(vec![spec("s", rect(0., 0., 1., 1.))]);
    let (clon, clat) = at(1.0, 1.0);
    let (lon, lat) = (clon + 0.002, clat + 0.002);
    let expected = haversine_m(lon, lat, clon, clat);
    let m = map.locate(lon, lat);
    assert_eq!(m.kind, MatchKind::Snapped);
    assert!(
        (m.distance_m - expected).abs() < 1.0,
        "{} vs {expected}",
        m.distance_m
    );
}

#[test]
fn point_800m_away_is_unmatched() {
    let map = map_of(vec![spec("s", rect(0., 0., 1., 1.))]);
    let (edge_lon, lat) = at(1.0, 0.5);
    let lon = edge_lon + 0.00925;
    let d = 2.0 * R * (lat.to_radians().cos() * (0.00925f64.to_radians() / 2.0).sin()).asin();
    assert!((d - 799.2).abs() < 1.0, "{d}");
    let m = map.locate(lon, lat);
    assert_eq!(m, GridMatch::UNMATCHED);
    assert_eq!(m.cell, None);
    assert_eq!(m.distance_m, f64::INFINITY);
}

#[test]
fn snap_distance_option_is_respected() {
    let cells = || vec![spec("s", rect(0., 0., 1., 1.))];
    let (edge_lon, lat) = at(1.0, 0.5);
    let lon = edge_lon + 0.00347; // ≈ 300 m
    for (snap, kind) in [
        (200.0, MatchKind::Unmatched),
        (0.0, MatchKind::Unmatched),
        (1000.0, MatchKind::Snapped),
    ] {
        let opts = GridOptions {
            snap_distance_m: snap,
            strict: false,
        };
        let (map, _) = GridMap::from_parts(cells(), vec![station("s1")], vec![], opts).unwrap();
        assert_eq!(map.locate(lon, lat).kind, kind, "snap {snap}");
    }
}

#[test]
fn snap_tie_goes_to_smaller_grid_id() {
    // Two cells 0.6 unit apart; the point is halfway, ≈ 259 m from both.
    let (west, east) = (rect(0., 0., 1., 1.), rect(1.6, 0., 2.6, 1.));
    let p = at(1.3, 0.5);
    let map = map_of(vec![spec("t-2", west.clone()), spec("t-1", east.clone())]);
    let (id, kind, d) = located(&map, p);
    assert_eq!((id, kind), (Some("t-1"), MatchKind::Snapped));
    assert!((d - haversine_m(p.0, p.1, p.0 - 0.3 * U, p.1)).abs() < 1.0);
    let map = map_of(vec![spec("t-1", west), spec("t-2", east)]);
    assert_eq!(located(&map, p).0, Some("t-1"));
    // Off the midpoint the nearer cell wins regardless of id.
    assert_eq!(located(&map, at(1.45, 0.5)).0, Some("t-2"));
}

#[test]
fn non_finite_location_is_unmatched() {
    let map = map_of(vec![spec("s", rect(0., 0., 1., 1.))]);
    assert_eq!(map.locate(f64::NAN, 39.0), GridMatch::UNMATCHED);
    assert_eq!(map.locate(117.0, f64::INFINITY), GridMatch::UNMATCHED);
}

// ---------------------------------------------------------------------------------------------
// Repair

fn bow_tie() -> Polygon<f64> {
    // (0,0) → (2,2) → (2,0) → (0,2): two triangles touching at (1,1).
    let p = |x, y| at(x, y);
    let (a, b, c, d) = (p(0., 0.), p(2., 2.), p(2., 0.), p(0., 2.));
    polygon![(x: a.0, y: a.1), (x: b.0, y: b.1), (x: c.0, y: c.1), (x: d.0, y: d.1)]
}

#[test]
fn self_intersecting_bow_tie_is_repaired_and_reported() {
    let (map, warnings) = GridMap::from_parts(
        vec![spec("bow", bow_tie())],
        vec![station("s1")],
        vec![],
        GridOptions::default(),
    )
    .unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].grid_id, "bow");
    assert!(
        warnings[0].problem.contains("self-intersection"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].problem.contains("repaired (2 polygon part(s)"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].to_string().starts_with("grid bow: "));
    assert_eq!(map.geometry(0).0.len(), 2);
    // Inside the west and the east triangle; the south gap between them is outside.
    assert_eq!(
        located(&map, at(0.3, 1.0)),
        (Some("bow"), MatchKind::Inside, 0.0)
    );
    assert_eq!(
        located(&map, at(1.7, 1.0)),
        (Some("bow"), MatchKind::Inside, 0.0)
    );
    assert_eq!(located(&map, at(1.0, 0.3)).1, MatchKind::Snapped);
}

#[test]
fn self_intersecting_polygon_is_an_error_in_strict_mode() {
    let opts = GridOptions {
        strict: true,
        ..GridOptions::default()
    };
    let e = GridMap::from_parts(
        vec![spec("bow", bow_tie())],
        vec![station("s1")],
        vec![],
        opts,
    )
    .unwrap_err();
    assert!(matches!(e, GridError::InvalidPolygon { ref id, .. } if id == "bow"));
    assert_eq!(
        e.to_string(),
        "<cells>: bow: invalid polygon (strict mode): polygon at index 0 is invalid: exterior ring has a self-intersection"
    );
    // Valid polygons load fine in strict mode.
    assert!(GridMap::from_parts(
        vec![spec("ok", rect(0., 0., 1., 1.))],
        vec![station("s1")],
        vec![],
        opts
    )
    .is_ok());
}

#[test]
fn polygon_that_repairs_to_nothing_is_an_error_naming_the_grid() {
    let (a, b, c) = (at(0., 0.), at(1., 0.), at(2., 0.));
    let flat = polygon![(x: a.0, y: a.1), (x: b.0, y: b.1), (x: c.0, y: c.1)];
    let e = GridMap::from_parts(
        vec![spec("flat", flat)],
        vec![station("s1")],
        vec![],
        GridOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e, GridError::EmptyAfterRepair { ref id, .. } if id == "flat"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "<cells>: flat: polygon is empty after repair (polygon at index 0 has zero area)"
    );
}

// ---------------------------------------------------------------------------------------------
// Roster

fn officer(id: &str, role: Role) -> Officer {
    Officer {
        officer_id: id.to_string(),
        name: format!("name {id}"),
        role,
        phone: "022-23456789".to_string(),
    }
}

fn entry(grid_id: &str, id: &str, role: Role) -> RosterEntry {
    RosterEntry {
        grid_id: grid_id.to_string(),
        officer: officer(id, role),
    }
}

#[test]
fn roster_lists_community_officer_first_then_auxiliary_then_grid_workers() {
    let roster = vec![
        entry("a", "gw-1", Role::GridWorker),
        entry("a", "aux", Role::Auxiliary),
        entry("b", "aux-b", Role::Auxiliary),
        entry("a", "po", Role::CommunityOfficer),
        entry("a", "gw-2", Role::GridWorker),
    ];
    let cells = vec![
        spec("b", rect(1., 0., 2., 1.)),
        spec("a", rect(0., 0., 1., 1.)),
        spec("c", rect(2., 0., 3., 1.)),
    ];
    let stations = vec![station("s0"), station("s1")];
    let (map, _) = GridMap::from_parts(cells, stations, roster, GridOptions::default()).unwrap();
    let a = map.find_cell("a").unwrap();
    let ids: Vec<&str> = map
        .roster(a)
        .iter()
        .map(|o| o.officer_id.as_str())
        .collect();
    assert_eq!(ids, ["po", "aux", "gw-1", "gw-2"]);
    assert_eq!(
        map.community_officer(a).map(|o| o.officer_id.as_str()),
        Some("po")
    );
    let b = map.find_cell("b").unwrap();
    assert_eq!(map.roster(b).len(), 1);
    assert_eq!(map.community_officer(b), None);
    let c = map.find_cell("c").unwrap();
    assert!(map.roster(c).is_empty());
    assert_eq!(map.community_officer(c), None);
    assert_eq!(map.cells_without_officer(), 2);
    assert_eq!(map.officer_count(), 5);
    assert_eq!(map.station_of(a).station_id, "s1");
    assert_eq!(map.stations()[map.cell(a).station].duty_desk_id, "desk-s1");
}

#[test]
fn role_and_match_kind_spellings() {
    assert_eq!(
        Role::ALL.map(|r| r.as_str()),
        ["community_officer", "auxiliary", "grid_worker"]
    );
    assert_eq!(Role::parse("auxiliary"), Some(Role::Auxiliary));
    assert_eq!(Role::parse("Auxiliary"), None);
    assert_eq!(
        serde_json::to_string(&Role::CommunityOfficer).unwrap(),
        "\"community_officer\""
    );
    assert_eq!(
        serde_json::from_str::<Role>("\"grid_worker\"").unwrap(),
        Role::GridWorker
    );
    assert_eq!(
        MatchKind::ALL.map(|k| k.as_str()),
        ["inside", "snapped", "unmatched"]
    );
    assert_eq!(
        serde_json::to_string(&MatchKind::Snapped).unwrap(),
        "\"snapped\""
    );
}

// ---------------------------------------------------------------------------------------------
// Files and load errors

const STATIONS: &str = "station_id,name,district_code,duty_desk_id\ns1,和平区第1派出所,120101,desk-s1\ns2,和平区第2派出所,120101,desk-s2\n";
const ROSTER: &str = "grid_id,officer_id,name,role,phone\ng-1,po-1,张伟,community_officer,022-23000001\ng-1,gw-1,李娜,grid_worker,022-23000002\ng-2,aux-2,王芳,auxiliary,022-23000003\n";

fn square_json(x0: f64, y0: f64) -> String {
    let (a, b) = (at(x0, y0), at(x0 + 1.0, y0 + 1.0));
    format!(
        r#"{{"type":"Polygon","coordinates":[[[{},{}],[{},{}],[{},{}],[{},{}],[{},{}]]]}}"#,
        a.0, a.1, b.0, a.1, b.0, b.1, a.0, b.1, a.0, a.1
    )
}

fn feature(grid_id: &str, station_id: &str, geometry: &str) -> String {
    format!(
        r#"{{"type":"Feature","properties":{{"grid_id":"{grid_id}","name":"{grid_id} 警格","station_id":"{station_id}"}},"geometry":{geometry}}}"#
    )
}

fn collection(features: &[String]) -> String {
    format!(
        r#"{{"type":"FeatureCollection","features":[{}]}}"#,
        features.join(",")
    )
}

struct Files {
    dir: TempDir,
    cells: PathBuf,
    stations: PathBuf,
    roster: PathBuf,
}

impl Files {
    fn new(name: &str, cells: &str, stations: &str, roster: &str) -> Files {
        let dir = TempDir::new(name);
        let cells = dir.write("cells.geojson", cells);
        let stations = dir.write("stations.csv", stations);
        let roster = dir.write("roster.csv", roster);
        Files {
            dir,
            cells,
            stations,
            roster,
        }
    }

    fn good(name: &str) -> Files {
        let cells = collection(&[
            feature("g-2", "s2", &square_json(1., 0.)),
            feature("g-1", "s1", &square_json(0., 0.)),
        ]);
        Files::new(name, &cells, STATIONS, ROSTER)
    }

    fn load(&self, opts: GridOptions) -> Result<(GridMap, Vec<GridWarning>), GridError> {
        GridMap::load(&self.cells, &self.stations, &self.roster, opts)
    }

    fn err(&self) -> (GridError, String) {
        let e = self.load(GridOptions::default()).unwrap_err();
        let s = e.to_string();
        (e, s)
    }
}

#[test]
fn loads_cells_stations_and_roster_from_files() {
    let f = Files::good("load_ok");
    let (map, warnings) = f.load(GridOptions::default()).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(map.cells().len(), 2);
    assert_eq!(map.stations().len(), 2);
    assert_eq!(map.officer_count(), 3);
    assert_eq!(map.cells_without_officer(), 1);
    let m = map.locate(at(0.5, 0.5).0, at(0.5, 0.5).1);
    let i = m.cell.unwrap();
    assert_eq!(map.cell(i).grid_id, "g-1");
    assert_eq!(map.cell(i).name, "g-1 警格");
    assert_eq!(map.station_of(i).name, "和平区第1派出所");
    assert_eq!(map.community_officer(i).unwrap().name, "张伟");
    assert_eq!(
        map.station_of(map.find_cell("g-2").unwrap()).duty_desk_id,
        "desk-s2"
    );
    assert!(f.dir.path().exists());
}

#[test]
fn unclosed_ring_is_closed_and_reported() {
    let (a, b) = (at(0., 0.), at(1., 1.));
    let open = format!(
        r#"{{"type":"Polygon","coordinates":[[[{},{}],[{},{}],[{},{}],[{},{}]]]}}"#,
        a.0, a.1, b.0, a.1, b.0, b.1, a.0, b.1
    );
    let f = Files::new(
        "unclosed",
        &collection(&[feature("g-1", "s1", &open)]),
        STATIONS,
        ROSTER
            .lines()
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
            .as_str(),
    );
    let (map, warnings) = f.load(GridOptions::default()).unwrap();
    assert_eq!(
        warnings,
        vec![GridWarning {
            grid_id: "g-1".into(),
            problem: "1 ring(s) not closed; closed them".into()
        }]
    );
    let ring = &map.geometry(0).0[0].exterior().0;
    assert_eq!(ring.len(), 5);
    assert_eq!(ring.first(), ring.last());
    assert_eq!(
        map.locate(at(0.5, 0.5).0, at(0.5, 0.5).1).kind,
        MatchKind::Inside
    );
    let e = f
        .load(GridOptions {
            strict: true,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: g-1: invalid polygon (strict mode): 1 ring(s) not closed",
            f.cells.display()
        )
    );
}

#[test]
fn bow_tie_in_a_file_is_repaired_with_warning() {
    let (a, b, c, d) = (at(0., 0.), at(2., 2.), at(2., 0.), at(0., 2.));
    let bow = format!(
        r#"{{"type":"MultiPolygon","coordinates":[[[[{},{}],[{},{}],[{},{}],[{},{}],[{},{}]]]]}}"#,
        a.0, a.1, b.0, b.1, c.0, c.1, d.0, d.1, a.0, a.1
    );
    let f = Files::new(
        "bow_file",
        &collection(&[feature("g-1", "s1", &bow)]),
        STATIONS,
        "grid_id,officer_id,name,role,phone\n",
    );
    let (map, warnings) = f.load(GridOptions::default()).unwrap();
    assert_eq!(warnings.len(), 1);
    assert_eq!(warnings[0].grid_id, "g-1");
    assert!(warnings[0]
        .problem
        .contains("exterior ring has a self-intersection"));
    assert_eq!(map.cells_without_officer(), 1);
    let e = f
        .load(GridOptions {
            strict: true,
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(e, GridError::InvalidPolygon { .. }));
}

#[test]
fn missing_file_is_an_io_error_naming_the_file() {
    let f = Files::good("io");
    std::fs::remove_file(&f.roster).unwrap();
    let (e, s) = f.err();
    assert!(matches!(e, GridError::Io { .. }));
    assert!(s.starts_with(&format!("{}: ", f.roster.display())), "{s}");
}

#[test]
fn malformed_geojson_is_an_error_naming_the_file() {
    let f = Files::new(
        "bad_json",
        "{\"type\": \"FeatureCollection\", \"features\": [",
        STATIONS,
        ROSTER,
    );
    let (e, s) = f.err();
    assert!(matches!(e, GridError::GeoJson { .. }));
    assert!(
        s.starts_with(&format!("{}: not valid GeoJSON: ", f.cells.display())),
        "{s}"
    );
}

#[test]
fn geojson_that_is_not_a_feature_collection_is_rejected() {
    let f = Files::new("not_fc", &square_json(0., 0.), STATIONS, ROSTER);
    let (e, s) = f.err();
    assert!(matches!(e, GridError::NotFeatureCollection { .. }));
    assert_eq!(
        s,
        format!(
            "{}: expected a GeoJSON FeatureCollection, found a Geometry",
            f.cells.display()
        )
    );
}

#[test]
fn empty_feature_collection_is_rejected() {
    let f = Files::new("no_features", &collection(&[]), STATIONS, ROSTER);
    let (e, s) = f.err();
    assert!(matches!(e, GridError::NoFeatures { .. }));
    assert_eq!(s, format!("{}: contains no features", f.cells.display()));
}

#[test]
fn missing_grid_id_names_the_feature() {
    let nameless = feature("", "s1", &square_json(3., 0.));
    let cells = collection(&[feature("g-1", "s1", &square_json(0., 0.)), nameless]);
    let f = Files::new("no_grid_id", &cells, STATIONS, ROSTER);
    let (e, s) = f.err();
    assert!(matches!(
        e,
        GridError::MissingProperty {
            feature: 1,
            property: "grid_id",
            ..
        }
    ));
    assert_eq!(
        s,
        format!(
            "{}: feature #1: property `grid_id` is missing, empty or not a string",
            f.cells.display()
        )
    );
}

#[test]
fn missing_station_id_names_the_feature_and_grid() {
    let cells = collection(&[
        r#"{"type":"Feature","properties":{"grid_id":"g-9","name":"x"},"geometry":null}"#
            .to_string(),
    ]);
    let f = Files::new("no_station_id", &cells, STATIONS, ROSTER);
    let (_, s) = f.err();
    assert_eq!(
        s,
        format!(
            "{}: feature #0 (g-9): property `station_id` is missing, empty or not a string",
            f.cells.display()
        )
    );
}

#[test]
fn duplicate_grid_id_names_both_features() {
    let cells = collection(&[
        feature("g-1", "s1", &square_json(0., 0.)),
        feature("g-2", "s1", &square_json(1., 0.)),
        feature("g-1", "s1", &square_json(2., 0.)),
    ]);
    let f = Files::new("dup_grid", &cells, STATIONS, ROSTER);
    let (e, s) = f.err();
    assert!(matches!(
        e,
        GridError::DuplicateGridId {
            first_feature: 0,
            feature: 2,
            ..
        }
    ));
    assert_eq!(
        s,
        format!(
            "{}: duplicate grid_id g-1 (features #0 and #2)",
            f.cells.display()
        )
    );
}

#[test]
fn unknown_station_id_names_the_grid_and_station() {
    let cells = collection(&[
        feature("g-1", "s1", &square_json(0., 0.)),
        feature("g-2", "s7", &square_json(1., 0.)),
    ]);
    let f = Files::new("unknown_station", &cells, STATIONS, ROSTER);
    let (e, s) = f.err();
    assert!(matches!(e, GridError::UnknownStation { .. }));
    assert_eq!(
        s,
        format!(
            "{}: grid g-2 references unknown station_id s7",
            f.cells.display()
        )
    );
}

#[test]
fn non_polygon_geometry_is_rejected() {
    let cells = collection(&[feature(
        "g-1",
        "s1",
        r#"{"type":"LineString","coordinates":[[117,39],[117.1,39.1]]}"#,
    )]);
    let f = Files::new("non_polygon", &cells, STATIONS, ROSTER);
    let (e, s) = f.err();
    assert!(matches!(e, GridError::NonPolygonGeometry { .. }));
    assert_eq!(
        s,
        format!(
            "{}: g-1: geometry must be a Polygon or MultiPolygon, found LineString",
            f.cells.display()
        )
    );
}

#[test]
fn empty_or_null_geometry_is_rejected() {
    for (name, g) in [
        ("empty_geom", r#"{"type":"MultiPolygon","coordinates":[]}"#),
        ("null_geom", "null"),
    ] {
        let f = Files::new(
            name,
            &collection(&[feature("g-1", "s1", g)]),
            STATIONS,
            ROSTER,
        );
        let (e, s) = f.err();
        assert!(matches!(e, GridError::EmptyGeometry { .. }), "{name}");
        assert_eq!(
            s,
            format!("{}: g-1: geometry is missing or empty", f.cells.display())
        );
    }
}

#[test]
fn bad_coordinate_is_rejected() {
    let g = r#"{"type":"Polygon","coordinates":[[[117,39],[117.1,39],[117.1,139],[117,39]]]}"#;
    let f = Files::new(
        "bad_coord",
        &collection(&[feature("g-1", "s1", g)]),
        STATIONS,
        ROSTER,
    );
    let (e, s) = f.err();
    assert!(matches!(e, GridError::BadCoordinate { .. }));
    assert_eq!(
        s,
        format!("{}: g-1: bad coordinate: polygon 0, ring 0, position 2: (117.1, 139) is not a WGS84 lon/lat", f.cells.display())
    );
    let nan = MultiPolygon::new(vec![
        polygon![(x: 117.0, y: 39.0), (x: f64::NAN, y: 39.0), (x: 117.0, y: 39.1)],
    ]);
    let e = GridMap::from_parts(
        vec![spec("n", nan)],
        vec![station("s1")],
        vec![],
        GridOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(e, GridError::BadCoordinate { ref id, .. } if id == "n"));
}

#[test]
fn bad_csv_header_is_rejected() {
    let f = Files::new(
        "bad_header",
        &collection(&[feature("g-1", "s1", &square_json(0., 0.))]),
        "station_id,name,district,duty_desk_id\n",
        ROSTER,
    );
    let (e, s) = f.err();
    assert!(matches!(e, GridError::BadHeader { .. }));
    assert_eq!(
        s,
        format!(
            "{}: line 1: bad header: expected `station_id,name,district_code,duty_desk_id`, found `station_id,name,district,duty_desk_id`",
            f.stations.display()
        )
    );
}

#[test]
fn csv_row_with_wrong_field_count_names_the_line() {
    let f = Files::good("short_row");
    std::fs::write(&f.roster, format!("{ROSTER}g-2,gw-9,赵磊,grid_worker\n")).unwrap();
    let (e, s) = f.err();
    assert!(matches!(e, GridError::Csv { line: 5, .. }));
    assert_eq!(
        s,
        format!("{}: line 5: expected 5 fields, found 4", f.roster.display())
    );
}

#[test]
fn empty_required_field_names_the_line_and_field() {
    let f = Files::good("empty_field");
    std::fs::write(&f.stations, "station_id,name,district_code,duty_desk_id\ns1,和平区第1派出所,120101,desk-s1\ns2,x,120101,\n").unwrap();
    let (e, s) = f.err();
    assert!(matches!(
        e,
        GridError::MissingField {
            line: 3,
            field: "duty_desk_id",
            ..
        }
    ));
    assert_eq!(
        s,
        format!(
            "{}: line 3: field `duty_desk_id` is empty",
            f.stations.display()
        )
    );
}

#[test]
fn duplicate_station_id_names_both_lines() {
    let f = Files::good("dup_station");
    std::fs::write(&f.stations, format!("{STATIONS}s1,again,120101,desk-x\n")).unwrap();
    let (e, s) = f.err();
    assert!(matches!(
        e,
        GridError::DuplicateStationId {
            line: 4,
            first_line: 2,
            ..
        }
    ));
    assert_eq!(
        s,
        format!(
            "{}: line 4: duplicate station_id s1 (first on line 2)",
            f.stations.display()
        )
    );
}

#[test]
fn roster_row_with_unknown_grid_id_names_the_line() {
    let f = Files::good("roster_unknown_grid");
    std::fs::write(
        &f.roster,
        format!("{ROSTER}g-404,po-9,赵磊,community_officer,022-23000009\n"),
    )
    .unwrap();
    let (e, s) = f.err();
    assert!(matches!(e, GridError::UnknownGridId { line: 5, .. }));
    assert_eq!(
        s,
        format!("{}: line 5: unknown grid_id g-404", f.roster.display())
    );
}

#[test]
fn roster_row_with_bad_role_names_the_line_and_role() {
    let f = Files::good("roster_bad_role");
    std::fs::write(
        &f.roster,
        format!("{ROSTER}g-2,po-9,赵磊,sheriff,022-23000009\n"),
    )
    .unwrap();
    let (e, s) = f.err();
    assert!(matches!(e, GridError::BadRole { line: 5, .. }));
    assert_eq!(
        s,
        format!(
            "{}: line 5: bad role `sheriff` (expected community_officer, auxiliary or grid_worker)",
            f.roster.display()
        )
    );
}

#[test]
fn duplicate_roster_line_names_both_lines_and_the_ids() {
    let f = Files::good("roster_duplicate");
    // The same officer listed twice for g-1 (even with another role) is a mistake.
    std::fs::write(
        &f.roster,
        format!("{ROSTER}g-2,gw-1,李娜,grid_worker,022-23000002\ng-1,gw-1,李娜,auxiliary,022-23000002\n"),
    )
    .unwrap();
    let (e, s) = f.err();
    assert!(matches!(e, GridError::DuplicateRosterEntry { line: 6, .. }));
    assert_eq!(
        s,
        format!(
            "{}: line 6: duplicate roster entry: officer gw-1 in grid g-1 (first on line 3)",
            f.roster.display()
        )
    );
}

#[test]
fn second_community_officer_for_a_grid_names_both() {
    let f = Files::good("roster_two_officers");
    std::fs::write(
        &f.roster,
        format!("{ROSTER}g-2,po-2,赵磊,community_officer,022-23000009\ng-1,po-9,钱敏,community_officer,022-23000010\n"),
    )
    .unwrap();
    let (e, s) = f.err();
    assert!(matches!(
        e,
        GridError::SecondCommunityOfficer { line: 6, .. }
    ));
    assert_eq!(
        s,
        format!(
            "{}: line 6: grid g-1 has a second community officer, po-9 (the first, po-1, is on \
             line 2); tasks go to exactly one",
            f.roster.display()
        )
    );
}

#[test]
fn in_memory_errors_use_pseudo_file_names() {
    let e = GridMap::from_parts(
        vec![spec("a", rect(0., 0., 1., 1.))],
        vec![station("s1"), station("s1")],
        vec![],
        GridOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "<stations>: line 3: duplicate station_id s1 (first on line 2)"
    );
    let e = GridMap::from_parts(
        vec![spec("a", rect(0., 0., 1., 1.))],
        vec![station("s1")],
        vec![
            entry("a", "po", Role::CommunityOfficer),
            entry("zz", "po2", Role::CommunityOfficer),
        ],
        GridOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "<roster>: line 3: unknown grid_id zz");
    let e = GridMap::from_parts(vec![], vec![station("s1")], vec![], GridOptions::default())
        .unwrap_err();
    assert_eq!(e.to_string(), "<cells>: contains no features");
    let e = GridMap::from_parts(
        vec![spec("a", MultiPolygon::new(vec![]))],
        vec![station("s1")],
        vec![],
        GridOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "<cells>: a: geometry is missing or empty");
}

#[test]
fn grid_map_and_cell_table_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<GridMap>();
    assert_send_sync::<CellTable>();
    assert_send_sync::<GridError>();
}
