//! What the views take from the grid map and roster, rebuilt when a reload swaps them in the
//! pipeline (see [`GridDerived`]), so that desks and officers see the cells, stations and
//! rosters the new tasks use.

use std::collections::HashMap;
use std::sync::Arc;

use crate::grid::{GridDerived, GridMap};

use super::api::OfficerInfo;
use super::map::GridShapes;

/// The grid as the views show it.
pub struct GridViews {
    pub shapes: GridShapes,
    /// Station id → (name, duty desk id).
    pub stations: HashMap<String, (String, String)>,
    /// Station id → district code.
    pub districts: HashMap<String, String>,
    /// Grid id → its roster.
    pub rosters: HashMap<String, Vec<OfficerInfo>>,
    /// Officer id → (name, station id).
    pub officers: HashMap<String, (String, String)>,
}

impl GridViews {
    pub fn new(grid: &GridMap) -> GridViews {
        let stations = grid
            .stations()
            .iter()
            .map(|s| {
                (
                    s.station_id.clone(),
                    (s.name.clone(), s.duty_desk_id.clone()),
                )
            })
            .collect();
        let districts = grid
            .stations()
            .iter()
            .map(|s| (s.station_id.clone(), s.district_code.clone()))
            .collect();
        let mut rosters = HashMap::new();
        let mut officers = HashMap::new();
        for (i, c) in grid.cells().iter().enumerate() {
            let station = grid.station_of(i).station_id.clone();
            let roster: Vec<OfficerInfo> = grid
                .roster(i)
                .iter()
                .map(|o| {
                    officers
                        .entry(o.officer_id.clone())
                        .or_insert_with(|| (o.name.clone(), station.clone()));
                    OfficerInfo {
                        officer_id: o.officer_id.clone(),
                        name: o.name.clone(),
                        role: o.role.as_str(),
                    }
                })
                .collect();
            rosters.insert(c.grid_id.clone(), roster);
        }
        GridViews {
            shapes: GridShapes::new(grid),
            stations,
            districts,
            rosters,
            officers,
        }
    }

    /// The station of an officer's session.
    pub fn officer_station(&self, officer_id: &str) -> Option<&str> {
        self.officers.get(officer_id).map(|(_, s)| s.as_str())
    }
}

/// The views of the grid map in use (the pipeline's, which a reload replaces).
pub type GridSource = GridDerived<GridViews>;

pub fn grid_source(live: impl Fn() -> Arc<GridMap> + Send + Sync + 'static) -> GridSource {
    GridDerived::new(live, GridViews::new)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::grid::GridOptions;

    fn sample_grid(roster: &Path) -> Arc<GridMap> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grid");
        let (grid, _) = GridMap::load(
            &dir.join("cells.geojson"),
            &dir.join("stations.csv"),
            roster,
            GridOptions::default(),
        )
        .expect("the sample grid loads");
        Arc::new(grid)
    }

    #[test]
    fn views_follow_the_map_a_reload_swaps_in_and_only_then_are_rebuilt() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grid/roster.csv");
        let rows = std::fs::read_to_string(&sample).unwrap();
        // The first officer's row removed: their cell keeps the rest of its roster.
        let removed = rows.lines().nth(1).unwrap();
        let officer = removed.split(',').nth(1).unwrap().to_string();
        let cell = removed.split(',').next().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let shorter = dir.path().join("roster.csv");
        let kept: Vec<&str> = rows.lines().filter(|l| *l != removed).collect();
        std::fs::write(&shorter, kept.join("\n") + "\n").unwrap();

        let live = Arc::new(arc_swap::ArcSwap::new(sample_grid(&sample)));
        let source = {
            let live = live.clone();
            grid_source(move || live.load_full())
        };
        let (before, rebuilt) = source.current();
        assert!(!rebuilt);
        assert!(before.officers.contains_key(&officer));
        let (again, rebuilt) = source.current();
        assert!(!rebuilt && Arc::ptr_eq(&before, &again));

        live.store(sample_grid(&shorter));
        let (after, rebuilt) = source.current();
        assert!(rebuilt);
        assert!(!after.officers.contains_key(&officer));
        let roster = |v: &GridViews| v.rosters[&cell].len();
        assert_eq!(roster(&after), roster(&before) - 1);
    }
}
