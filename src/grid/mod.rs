//! Police grid (警格) map: which grid cell contains a location, and who is responsible for it.
//!
//! A [`GridMap`] is built from three files: the grid cells (a GeoJSON FeatureCollection of
//! Polygon / MultiPolygon features with properties `grid_id`, `name`, `station_id`), the police
//! stations (`station_id,name,district_code,duty_desk_id`) and the roster
//! (`grid_id,officer_id,name,role,phone`). [`GridMap::locate`] answers "which cell contains
//! this lon/lat" with an R-tree over polygon envelopes followed by an exact point-in-polygon
//! test; it allocates nothing.
//!
//! Matching rules, in order:
//! * inside (or on the boundary of) one or more cells: the cell with the lexicographically
//!   smallest `grid_id` wins ([`MatchKind::Inside`], distance 0);
//! * outside every cell but within [`GridOptions::snap_distance_m`] metres (haversine distance to
//!   the nearest point of a cell's boundary): the nearest cell, ties to the smallest `grid_id`
//!   ([`MatchKind::Snapped`]);
//! * otherwise [`MatchKind::Unmatched`]: the caller routes the task to a fallback desk.
//!
//! Invalid polygons are repaired (unclosed rings closed, self-intersections resolved with an
//! even-odd self-union) and reported as [`GridWarning`]s; with [`GridOptions::strict`] they are
//! errors instead.
//!
//! [`cell_table`] maps base-station cell ids to locations; [`generate`] builds a synthetic
//! city-wide grid map from district boundaries (`dissuade gen-grid`).

pub mod cell_table;
mod derived;
pub mod generate;
mod geometry;
mod index;
mod load;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use derived::GridDerived;

pub use cell_table::CellTable;
pub use generate::{generate, GenOptions, GeneratedMap};

/// Options for building a [`GridMap`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridOptions {
    /// A point outside every cell is snapped to the nearest cell if its boundary is at most this
    /// many metres away (haversine distance). 0 disables snapping.
    pub snap_distance_m: f64,
    /// Refuse invalid polygons (self-intersecting, unclosed rings, ...) instead of repairing them.
    pub strict: bool,
}

impl Default for GridOptions {
    fn default() -> Self {
        GridOptions {
            snap_distance_m: 500.0,
            strict: false,
        }
    }
}

/// One police grid cell (警格).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cell {
    pub grid_id: String,
    pub name: String,
    /// Index into [`GridMap::stations`].
    pub station: usize,
}

/// A police station (派出所); its duty desk (综合指挥室) takes escalations and the tasks of cells
/// without a community officer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Station {
    pub station_id: String,
    pub name: String,
    pub district_code: String,
    pub duty_desk_id: String,
}

/// The role of a person on a grid cell's roster.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 社区民警: the officer who receives the cell's dissuasion tasks.
    CommunityOfficer,
    /// 辅警
    Auxiliary,
    /// 网格员
    GridWorker,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::CommunityOfficer, Role::Auxiliary, Role::GridWorker];

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::CommunityOfficer => "community_officer",
            Role::Auxiliary => "auxiliary",
            Role::GridWorker => "grid_worker",
        }
    }

    /// Parses the roster spelling (`community_officer`, `auxiliary`, `grid_worker`).
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person on a cell's roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Officer {
    pub officer_id: String,
    pub name: String,
    pub role: Role,
    pub phone: String,
}

/// How a location was matched to a cell.
#[derive(Serialize, Clone, Copy, PartialEq, Eq, Debug, Hash)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// Inside the cell or on its boundary.
    Inside,
    /// Outside every cell, within the snap distance of this one.
    Snapped,
    /// No cell within the snap distance.
    Unmatched,
}

impl MatchKind {
    pub const ALL: [MatchKind; 3] = [MatchKind::Inside, MatchKind::Snapped, MatchKind::Unmatched];

    pub fn as_str(&self) -> &'static str {
        match self {
            MatchKind::Inside => "inside",
            MatchKind::Snapped => "snapped",
            MatchKind::Unmatched => "unmatched",
        }
    }
}

impl fmt::Display for MatchKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer of [`GridMap::locate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GridMatch {
    /// Index into [`GridMap::cells`]; `None` when unmatched.
    pub cell: Option<usize>,
    pub kind: MatchKind,
    /// Metres to the matched cell: 0 when inside, the haversine distance to the nearest point of
    /// the cell's boundary when snapped, `f64::INFINITY` when unmatched.
    pub distance_m: f64,
}

impl GridMatch {
    pub const UNMATCHED: GridMatch = GridMatch {
        cell: None,
        kind: MatchKind::Unmatched,
        distance_m: f64::INFINITY,
    };
}

/// A problem found (and repaired) while loading a cell's geometry; `dissuade check` lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridWarning {
    pub grid_id: String,
    pub problem: String,
}

impl fmt::Display for GridWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grid {}: {}", self.grid_id, self.problem)
    }
}

/// Everything that can go wrong loading (or generating) a grid map. Every variant names the
/// file; CSV variants name the line (1 = header) and GeoJSON variants the feature index
/// (0-based) and/or the grid id. In-memory inputs ([`GridMap::from_parts`]) use the pseudo
/// file names `<cells>`, `<stations>`, `<roster>` and `<rows>`, with rows numbered as if the
/// CSV had a header line (first row = line 2).
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid GeoJSON: {message}", file.display())]
    GeoJson { file: PathBuf, message: String },
    #[error("{}: expected a GeoJSON FeatureCollection, found {found}", file.display())]
    NotFeatureCollection { file: PathBuf, found: String },
    #[error("{}: contains no features", file.display())]
    NoFeatures { file: PathBuf },
    #[error("{}: feature #{feature}{}: property `{property}` is missing, empty or not a string",
        file.display(), id.as_deref().map(|i| format!(" ({i})")).unwrap_or_default())]
    MissingProperty {
        file: PathBuf,
        feature: usize,
        id: Option<String>,
        property: &'static str,
    },
    #[error("{}: duplicate grid_id {grid_id} (features #{first_feature} and #{feature})", file.display())]
    DuplicateGridId {
        file: PathBuf,
        grid_id: String,
        first_feature: usize,
        feature: usize,
    },
    #[error("{}: grid {grid_id} references unknown station_id {station_id}", file.display())]
    UnknownStation {
        file: PathBuf,
        grid_id: String,
        station_id: String,
    },
    #[error("{}: {id}: geometry must be a Polygon or MultiPolygon, found {found}", file.display())]
    NonPolygonGeometry {
        file: PathBuf,
        id: String,
        found: String,
    },
    #[error("{}: {id}: geometry is missing or empty", file.display())]
    EmptyGeometry { file: PathBuf, id: String },
    #[error("{}: {id}: bad coordinate: {detail}", file.display())]
    BadCoordinate {
        file: PathBuf,
        id: String,
        detail: String,
    },
    #[error("{}: {id}: invalid polygon (strict mode): {problem}", file.display())]
    InvalidPolygon {
        file: PathBuf,
        id: String,
        problem: String,
    },
    #[error("{}: {id}: polygon is empty after repair ({problem})", file.display())]
    EmptyAfterRepair {
        file: PathBuf,
        id: String,
        problem: String,
    },
    #[error("{}: line {line}: {message}", file.display())]
    Csv {
        file: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{}: line 1: bad header: expected `{expected}`, found `{found}`", file.display())]
    BadHeader {
        file: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{}: line {line}: field `{field}` is empty", file.display())]
    MissingField {
        file: PathBuf,
        line: u64,
        field: &'static str,
    },
    #[error("{}: line {line}: duplicate station_id {station_id} (first on line {first_line})", file.display())]
    DuplicateStationId {
        file: PathBuf,
        line: u64,
        station_id: String,
        first_line: u64,
    },
    #[error("{}: line {line}: unknown grid_id {grid_id}", file.display())]
    UnknownGridId {
        file: PathBuf,
        line: u64,
        grid_id: String,
    },
    #[error("{}: line {line}: duplicate roster entry: officer {officer_id} in grid {grid_id} (first on line {first_line})", file.display())]
    DuplicateRosterEntry {
        file: PathBuf,
        line: u64,
        grid_id: String,
        officer_id: String,
        first_line: u64,
    },
    #[error("{}: line {line}: grid {grid_id} has a second community officer, {officer_id} (the first, {first_officer_id}, is on line {first_line}); tasks go to exactly one", file.display())]
    SecondCommunityOfficer {
        file: PathBuf,
        line: u64,
        grid_id: String,
        officer_id: String,
        first_officer_id: String,
        first_line: u64,
    },
    #[error("{}: line {line}: bad role `{role}` (expected community_officer, auxiliary or grid_worker)", file.display())]
    BadRole {
        file: PathBuf,
        line: u64,
        role: String,
    },
    #[error("{}: line {line}: cell {cell_id}: bad coordinates: {detail}", file.display())]
    BadCellCoordinate {
        file: PathBuf,
        line: u64,
        cell_id: String,
        detail: String,
    },
    #[error("{}: line {line}: duplicate cell_id {cell_id} (first on line {first_line})", file.display())]
    DuplicateCellId {
        file: PathBuf,
        line: u64,
        cell_id: String,
        first_line: u64,
    },
    #[error("{}: {message}", file.display())]
    Generate { file: PathBuf, message: String },
}

/// A cell given in memory to [`GridMap::from_parts`]. geo-types rings are always closed.
#[derive(Clone, Debug, PartialEq)]
pub struct CellSpec {
    pub grid_id: String,
    pub name: String,
    pub station_id: String,
    pub geometry: geo::MultiPolygon<f64>,
}

/// One roster row given in memory to [`GridMap::from_parts`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RosterEntry {
    pub grid_id: String,
    pub officer: Officer,
}

/// The police grid map. Cheap to share (`Send + Sync`, immutable after load).
pub struct GridMap {
    /// Sorted by `grid_id`, so "lowest index wins" means "smallest grid_id wins".
    cells: Vec<Cell>,
    stations: Vec<Station>,
    /// Parallel to `cells`: the (repaired) geometry.
    shapes: Vec<geo::MultiPolygon<f64>>,
    index: index::SpatialIndex,
    /// All roster entries, grouped by cell (in cell order), community officers first.
    officers: Vec<Officer>,
    /// `officers[roster_start[i]..roster_start[i + 1]]` is cell i's roster.
    roster_start: Vec<usize>,
    cells_without_officer: usize,
    opts: GridOptions,
}

impl GridMap {
    /// Loads the cells GeoJSON, the stations CSV and the roster CSV. Returns the map and the
    /// repaired-geometry warnings.
    pub fn load(
        cells_geojson: &std::path::Path,
        stations_csv: &std::path::Path,
        roster_csv: &std::path::Path,
        opts: GridOptions,
    ) -> Result<(GridMap, Vec<GridWarning>), GridError> {
        load::load(cells_geojson, stations_csv, roster_csv, opts)
    }

    /// Builds a map from in-memory parts (tests, the generator). The same checks as
    /// [`GridMap::load`] apply; errors use the pseudo file names `<cells>`, `<stations>`,
    /// `<roster>`, and the n-th station / roster row (0-based) is reported as line n + 2.
    pub fn from_parts(
        cells: Vec<CellSpec>,
        stations: Vec<Station>,
        roster: Vec<RosterEntry>,
        opts: GridOptions,
    ) -> Result<(GridMap, Vec<GridWarning>), GridError> {
        load::from_parts(cells, stations, roster, opts)
    }

    /// Finds the cell containing (or nearest to) a WGS84 location. Never allocates.
    pub fn locate(&self, lon: f64, lat: f64) -> GridMatch {
        self.index.locate(self.opts.snap_distance_m, lon, lat)
    }

    pub fn cells(&self) -> &[Cell] {
        &self.cells
    }

    pub fn stations(&self) -> &[Station] {
        &self.stations
    }

    pub fn cell(&self, idx: usize) -> &Cell {
        &self.cells[idx]
    }

    /// The index of the cell with this grid_id (binary search: cells are sorted by grid_id).
    pub fn find_cell(&self, grid_id: &str) -> Option<usize> {
        self.cells
            .binary_search_by(|c| c.grid_id.as_str().cmp(grid_id))
            .ok()
    }

    /// The (repaired) geometry of a cell.
    pub fn geometry(&self, idx: usize) -> &geo::MultiPolygon<f64> {
        &self.shapes[idx]
    }

    pub fn station_of(&self, cell_idx: usize) -> &Station {
        &self.stations[self.cells[cell_idx].station]
    }

    /// The cell's roster: community officer(s) first, then auxiliaries, then grid workers
    /// (file order within a role).
    pub fn roster(&self, cell_idx: usize) -> &[Officer] {
        &self.officers[self.roster_start[cell_idx]..self.roster_start[cell_idx + 1]]
    }

    /// The cell's (first) community officer; `None` means the station duty desk takes the
    /// cell's tasks.
    pub fn community_officer(&self, cell_idx: usize) -> Option<&Officer> {
        self.roster(cell_idx)
            .first()
            .filter(|o| o.role == Role::CommunityOfficer)
    }

    /// Number of roster entries (all roles, all cells).
    pub fn officer_count(&self) -> usize {
        self.officers.len()
    }

    /// Number of cells with no community officer.
    pub fn cells_without_officer(&self) -> usize {
        self.cells_without_officer
    }

    pub fn options(&self) -> &GridOptions {
        &self.opts
    }
}

impl fmt::Debug for GridMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GridMap")
            .field("cells", &self.cells.len())
            .field("stations", &self.stations.len())
            .field("officers", &self.officers.len())
            .field("cells_without_officer", &self.cells_without_officer)
            .field("opts", &self.opts)
            .finish()
    }
}

#[cfg(test)]
mod tests;
