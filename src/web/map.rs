//! The grid as the desk's map: every cell and district outline projected once to SVG path
//! data (north up, metres-proportional), so the browser draws the grid itself, with no tiles.

use std::collections::BTreeMap;

use geo::{BoundingRect, MultiPolygon, Polygon};
use serde::Serialize;

use crate::grid::GridMap;

/// SVG units per degree of latitude: a city of ~100 km spans ~10,000 units.
const SCALE: f64 = 10_000.0;

#[derive(Debug, Clone, Serialize)]
pub struct CellShape {
    pub grid_id: String,
    pub name: String,
    pub station_id: String,
    pub district: String,
    pub path: String,
    #[serde(skip)]
    bbox: [f64; 4],
}

#[derive(Debug, Clone, Serialize)]
pub struct DistrictShape {
    pub code: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StationInfo {
    pub station_id: String,
    pub name: String,
    pub district: String,
}

/// The answer of `GET /api/grid`.
#[derive(Debug, Clone, Serialize)]
pub struct MapView<'a> {
    pub view_box: [f64; 4],
    pub cells: Vec<&'a CellShape>,
    pub districts: Vec<&'a DistrictShape>,
    pub stations: Vec<&'a StationInfo>,
}

pub struct GridShapes {
    cells: Vec<CellShape>,
    districts: Vec<DistrictShape>,
    stations: Vec<StationInfo>,
}

struct Projection {
    lon0: f64,
    lat0: f64,
    kx: f64,
}

impl Projection {
    fn xy(&self, lon: f64, lat: f64) -> (f64, f64) {
        ((lon - self.lon0) * self.kx, (self.lat0 - lat) * SCALE)
    }
}

fn path_of(mp: &MultiPolygon<f64>, p: &Projection, bbox: &mut [f64; 4]) -> String {
    let mut d = String::new();
    let rings = mp
        .0
        .iter()
        .flat_map(|poly: &Polygon<f64>| std::iter::once(poly.exterior()).chain(poly.interiors()));
    for ring in rings {
        for (i, c) in ring.0.iter().enumerate() {
            let (x, y) = p.xy(c.x, c.y);
            bbox[0] = bbox[0].min(x);
            bbox[1] = bbox[1].min(y);
            bbox[2] = bbox[2].max(x);
            bbox[3] = bbox[3].max(y);
            d.push(if i == 0 { 'M' } else { 'L' });
            d.push_str(&format!("{x:.1} {y:.1}"));
        }
        d.push('Z');
    }
    d
}

const EMPTY_BOX: [f64; 4] = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];

impl GridShapes {
    pub fn new(grid: &GridMap) -> GridShapes {
        let mut extent: Option<geo::Rect<f64>> = None;
        for i in 0..grid.cells().len() {
            if let Some(r) = grid.geometry(i).bounding_rect() {
                extent = Some(match extent {
                    None => r,
                    Some(e) => geo::Rect::new(
                        (e.min().x.min(r.min().x), e.min().y.min(r.min().y)),
                        (e.max().x.max(r.max().x), e.max().y.max(r.max().y)),
                    ),
                });
            }
        }
        let extent = extent.unwrap_or(geo::Rect::new((0.0, 0.0), (0.0, 0.0)));
        let mid_lat = (extent.min().y + extent.max().y) / 2.0;
        let p = Projection {
            lon0: extent.min().x,
            lat0: extent.max().y,
            kx: SCALE * mid_lat.to_radians().cos(),
        };
        let mut by_district: BTreeMap<String, Vec<Polygon<f64>>> = BTreeMap::new();
        let cells = grid
            .cells()
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let station = grid.station_of(i);
                by_district
                    .entry(station.district_code.clone())
                    .or_default()
                    .extend(grid.geometry(i).0.iter().cloned());
                let mut bbox = EMPTY_BOX;
                let path = path_of(grid.geometry(i), &p, &mut bbox);
                CellShape {
                    grid_id: c.grid_id.clone(),
                    name: c.name.clone(),
                    station_id: station.station_id.clone(),
                    district: station.district_code.clone(),
                    path,
                    bbox,
                }
            })
            .collect();
        let districts = by_district
            .into_iter()
            .map(|(code, polys)| {
                let outline = geo::unary_union(&polys);
                let path = path_of(&outline, &p, &mut EMPTY_BOX.clone());
                DistrictShape { code, path }
            })
            .collect();
        let stations = grid
            .stations()
            .iter()
            .map(|s| StationInfo {
                station_id: s.station_id.clone(),
                name: s.name.clone(),
                district: s.district_code.clone(),
            })
            .collect();
        GridShapes {
            cells,
            districts,
            stations,
        }
    }

    /// The cells (and their stations and districts) that `keep` selects, with a view box
    /// around them.
    pub fn view(&self, keep: impl Fn(&CellShape) -> bool) -> MapView<'_> {
        let cells: Vec<&CellShape> = self.cells.iter().filter(|c| keep(c)).collect();
        let mut b = EMPTY_BOX;
        for c in &cells {
            b = [
                b[0].min(c.bbox[0]),
                b[1].min(c.bbox[1]),
                b[2].max(c.bbox[2]),
                b[3].max(c.bbox[3]),
            ];
        }
        let view_box = if cells.is_empty() {
            [0.0, 0.0, 1.0, 1.0]
        } else {
            let pad = ((b[2] - b[0]).max(b[3] - b[1]) * 0.02).max(1.0);
            [
                b[0] - pad,
                b[1] - pad,
                b[2] - b[0] + 2.0 * pad,
                b[3] - b[1] + 2.0 * pad,
            ]
        };
        let has = |f: &dyn Fn(&CellShape) -> &str, v: &str| cells.iter().any(|c| f(c) == v);
        MapView {
            view_box: view_box.map(|v| (v * 10.0).round() / 10.0),
            districts: self
                .districts
                .iter()
                .filter(|d| has(&|c| &c.district, &d.code))
                .collect(),
            stations: self
                .stations
                .iter()
                .filter(|s| has(&|c| &c.station_id, &s.station_id))
                .collect(),
            cells,
        }
    }

    /// The station of a cell, if the grid has it.
    pub fn station_of(&self, grid_id: &str) -> Option<&str> {
        self.cells
            .iter()
            .find(|c| c.grid_id == grid_id)
            .map(|c| c.station_id.as_str())
    }
}
