//! The spatial index: an R-tree over the envelopes of every polygon part of every cell, an
//! exact point-in-polygon test, and the snapping search. No allocation per lookup: the R-tree
//! is walked with its recursive visitor API.

use std::ops::ControlFlow;

use geo::coordinate_position::CoordPos;
use geo::kernels::{Kernel, Orientation, RobustKernel};
use geo::{BoundingRect, Coord, Distance, Haversine, MultiPolygon, Point};
use rstar::{RStarInsertionStrategy, RTree, RTreeObject, RTreeParams, AABB};

use super::{GridMatch, MatchKind};

/// The first snapping search radius (metres); it grows fourfold up to the snap distance.
const FIRST_SNAP_RADIUS_M: f64 = 60.0;

/// Two snap distances closer than this (metres) are a tie, won by the smaller grid_id.
const TIE_M: f64 = 1e-6;

/// Wider nodes than rstar's default (6): a shallower tree means fewer dependent memory loads
/// per lookup on large maps.
struct Params;

impl RTreeParams for Params {
    const MIN_SIZE: usize = 4;
    const MAX_SIZE: usize = 16;
    const REINSERTION_COUNT: usize = 2;
    type DefaultInsertionStrategy = RStarInsertionStrategy;
}

/// One polygon part of one cell: its envelope and where its rings are in the flat arrays. The
/// exterior ring's range is kept in the entry itself (one memory load fewer per lookup).
#[derive(Clone, Debug)]
struct Entry {
    env: AABB<[f64; 2]>,
    cell: u32,
    /// The exterior ring is `coords[ext_start..ext_end]`.
    ext_start: u32,
    ext_end: u32,
    /// Index of the part's first ring (the exterior) in `ring_start`; holes follow it.
    first_ring: u32,
    rings: u32,
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.env
    }
}

/// The R-tree plus every ring's coordinates in one flat array, so that a lookup touches the
/// tree nodes and then one contiguous run of coordinates.
pub(crate) struct SpatialIndex {
    tree: RTree<Entry, Params>,
    /// Ring r is `coords[ring_start[r]..ring_start[r + 1]]` (closed: first == last).
    ring_start: Vec<u32>,
    coords: Vec<Coord<f64>>,
}

impl SpatialIndex {
    pub(crate) fn build(shapes: &[MultiPolygon<f64>]) -> SpatialIndex {
        let mut entries = Vec::with_capacity(shapes.len());
        let mut ring_start = vec![0u32];
        let mut coords = Vec::new();
        for (cell, mp) in shapes.iter().enumerate() {
            for poly in &mp.0 {
                let Some(r) = poly.bounding_rect() else {
                    continue;
                };
                let first_ring = (ring_start.len() - 1) as u32;
                let ext_start = coords.len() as u32;
                let ext_end = ext_start + poly.exterior().0.len() as u32;
                for ring in std::iter::once(poly.exterior()).chain(poly.interiors()) {
                    coords.extend_from_slice(&ring.0);
                    ring_start.push(coords.len() as u32);
                }
                entries.push(Entry {
                    env: AABB::from_corners([r.min().x, r.min().y], [r.max().x, r.max().y]),
                    cell: cell as u32,
                    ext_start,
                    ext_end,
                    first_ring,
                    rings: 1 + poly.interiors().len() as u32,
                });
            }
        }
        assert!(
            coords.len() < u32::MAX as usize,
            "grid map too large for u32 coordinate offsets"
        );
        SpatialIndex {
            tree: RTree::bulk_load_with_params(entries),
            ring_start,
            coords,
        }
    }

    fn ring(&self, r: u32) -> &[Coord<f64>] {
        &self.coords[self.ring_start[r as usize] as usize..self.ring_start[r as usize + 1] as usize]
    }

    fn rings(&self, e: &Entry) -> impl Iterator<Item = &[Coord<f64>]> {
        (e.first_ring..e.first_ring + e.rings).map(|r| self.ring(r))
    }

    /// Inside or on the boundary of this polygon part.
    fn intersects(&self, e: &Entry, c: Coord<f64>) -> bool {
        match ring_position(&self.coords[e.ext_start as usize..e.ext_end as usize], c) {
            CoordPos::Outside => false,
            CoordPos::OnBoundary => true,
            CoordPos::Inside => {
                for h in e.first_ring + 1..e.first_ring + e.rings {
                    match ring_position(self.ring(h), c) {
                        CoordPos::Outside => {}
                        CoordPos::OnBoundary => return true,
                        CoordPos::Inside => return false,
                    }
                }
                true
            }
        }
    }

    pub(crate) fn locate(&self, snap_m: f64, lon: f64, lat: f64) -> GridMatch {
        if !(lon.is_finite() && lat.is_finite()) {
            return GridMatch::UNMATCHED;
        }
        let coord = Coord { x: lon, y: lat };
        let mut best = u32::MAX;
        let _ = self
            .tree
            .locate_in_envelope_intersecting_int(&AABB::from_point([lon, lat]), |e| {
                if e.cell < best && self.intersects(e, coord) {
                    best = e.cell;
                }
                ControlFlow::<()>::Continue(())
            });
        if best != u32::MAX {
            return GridMatch {
                cell: Some(best as usize),
                kind: MatchKind::Inside,
                distance_m: 0.0,
            };
        }
        self.snap(snap_m, lon, lat)
    }

    /// The nearest cell within `snap_m`. Most points that miss every cell are in a narrow gap
    /// between neighbours, so the search starts with a small box and grows it: once the best
    /// distance found (plus the tie margin) fits inside the searched radius, no cell outside
    /// the box can be nearer, and the answer is the one a single full-size search would give.
    fn snap(&self, snap_m: f64, lon: f64, lat: f64) -> GridMatch {
        if !(snap_m > 0.0 && snap_m.is_finite()) {
            return GridMatch::UNMATCHED;
        }
        let cos_lat = lat.to_radians().cos().max(1e-6);
        let mut radius = snap_m.min(FIRST_SNAP_RADIUS_M);
        loop {
            let (best, best_d) = self.nearest_within(radius, snap_m, lon, lat, cos_lat);
            if best_d + TIE_M <= radius || radius >= snap_m {
                return match best {
                    u32::MAX => GridMatch::UNMATCHED,
                    cell => GridMatch {
                        cell: Some(cell as usize),
                        kind: MatchKind::Snapped,
                        distance_m: best_d,
                    },
                };
            }
            radius = (radius * 4.0).min(snap_m);
        }
    }

    /// The nearest cell (and its distance) within `snap_m` among the cells whose envelope
    /// meets the box of `radius` metres around the point; `u32::MAX` when there is none.
    fn nearest_within(
        &self,
        radius: f64,
        snap_m: f64,
        lon: f64,
        lat: f64,
        cos_lat: f64,
    ) -> (u32, f64) {
        let m_per_deg = Haversine.radius().to_radians();
        // The radius in degrees, with a margin for the sphere.
        let dlat = radius / m_per_deg * 1.01 + 1e-9;
        let dlon = (dlat / cos_lat).min(360.0);
        let env = AABB::from_corners([lon - dlon, lat - dlat], [lon + dlon, lat + dlat]);
        let mut best_d = f64::INFINITY;
        let mut best = u32::MAX;
        let _ = self.tree.locate_in_envelope_intersecting_int(&env, |e| {
            let d = distance_to_rings_m(self.rings(e), lon, lat, cos_lat);
            if d <= snap_m && (d < best_d - TIE_M || (d <= best_d + TIE_M && e.cell < best)) {
                best_d = d;
                best = e.cell;
            }
            ControlFlow::<()>::Continue(())
        });
        (best, best_d)
    }
}

/// Position of a coordinate relative to a closed ring: winding number with an exact
/// on-boundary test (robust orientation predicate), as geo's `coord_pos_relative_to_ring`.
fn ring_position(ring: &[Coord<f64>], c: Coord<f64>) -> CoordPos {
    let mut winding = 0i32;
    for w in ring.windows(2) {
        let (a, b) = (w[0], w[1]);
        if a.y <= c.y {
            if b.y >= c.y {
                let o = RobustKernel::orient2d(a, b, c);
                if o == Orientation::CounterClockwise && b.y != c.y {
                    winding += 1;
                } else if o == Orientation::Collinear && between(c.x, a.x, b.x) {
                    return CoordPos::OnBoundary;
                }
            }
        } else if b.y <= c.y {
            let o = RobustKernel::orient2d(a, b, c);
            if o == Orientation::Clockwise {
                winding -= 1;
            } else if o == Orientation::Collinear && between(c.x, a.x, b.x) {
                return CoordPos::OnBoundary;
            }
        }
    }
    if winding == 0 {
        CoordPos::Outside
    } else {
        CoordPos::Inside
    }
}

fn between(x: f64, a: f64, b: f64) -> bool {
    (a <= x && x <= b) || (b <= x && x <= a)
}

/// Haversine distance in metres from (lon, lat) to the nearest point of the polygon's boundary.
#[cfg(test)]
pub(crate) fn distance_to_boundary_m(
    poly: &geo::Polygon<f64>,
    lon: f64,
    lat: f64,
    cos_lat: f64,
) -> f64 {
    distance_to_rings_m(
        std::iter::once(poly.exterior())
            .chain(poly.interiors())
            .map(|r| &r.0[..]),
        lon,
        lat,
        cos_lat,
    )
}

/// Haversine distance in metres from (lon, lat) to the nearest point of a set of rings. The
/// nearest point is found in a local equirectangular frame centred on the query point (exact
/// enough at snapping distances), then measured with haversine.
fn distance_to_rings_m<'a>(
    rings: impl Iterator<Item = &'a [Coord<f64>]>,
    lon: f64,
    lat: f64,
    cos_lat: f64,
) -> f64 {
    let mut best_d2 = f64::INFINITY;
    let mut best = (0.0, 0.0);
    for pts in rings {
        for w in pts.windows(2) {
            let (ax, ay) = ((w[0].x - lon) * cos_lat, w[0].y - lat);
            let (bx, by) = ((w[1].x - lon) * cos_lat, w[1].y - lat);
            let (dx, dy) = (bx - ax, by - ay);
            let len2 = dx * dx + dy * dy;
            let t = if len2 > 0.0 {
                (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let (cx, cy) = (ax + t * dx, ay + t * dy);
            let d2 = cx * cx + cy * cy;
            if d2 < best_d2 {
                best_d2 = d2;
                best = (cx, cy);
            }
        }
    }
    if !best_d2.is_finite() {
        return f64::INFINITY;
    }
    let nearest = Point::new(lon + best.0 / cos_lat, lat + best.1);
    Haversine.distance(Point::new(lon, lat), nearest)
}
