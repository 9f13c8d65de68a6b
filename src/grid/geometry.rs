//! Geometry plumbing shared by the loader and the generator: GeoJSON → geo conversion with
//! coordinate checks, validation and repair.

use geo::{
    Area, BooleanOps, Coord, InteriorPoint, Intersects, LineString, MultiPolygon, Orient, Polygon,
    Validation,
};

/// Why a GeoJSON geometry could not be turned into a MultiPolygon.
#[derive(Debug, PartialEq)]
pub(crate) enum ConvertError {
    Missing,
    NotPolygon(&'static str),
    Empty,
    BadCoordinate(String),
}

/// A MultiPolygon read from GeoJSON, plus how many of its rings were not closed in the file
/// (geo-types closes them on construction).
pub(crate) struct Converted {
    pub geometry: MultiPolygon<f64>,
    pub unclosed_rings: usize,
}

pub(crate) fn from_geojson(
    geometry: Option<&geojson::Geometry>,
) -> Result<Converted, ConvertError> {
    let value = &geometry.ok_or(ConvertError::Missing)?.value;
    let mut unclosed_rings = 0;
    let polygons: Vec<&geojson::PolygonType> = match value {
        geojson::Value::Polygon(p) => vec![p],
        geojson::Value::MultiPolygon(ps) => ps.iter().collect(),
        other => return Err(ConvertError::NotPolygon(other.type_name())),
    };
    let mut out = Vec::with_capacity(polygons.len());
    for (pi, rings) in polygons.into_iter().enumerate() {
        if rings.is_empty() || rings[0].is_empty() {
            continue; // an empty part; an entirely empty geometry is reported below
        }
        let mut converted = Vec::with_capacity(rings.len());
        for (ri, ring) in rings.iter().enumerate() {
            let mut coords = Vec::with_capacity(ring.len() + 1);
            for (ci, pos) in ring.iter().enumerate() {
                let c = position(pos).map_err(|why| {
                    ConvertError::BadCoordinate(format!(
                        "polygon {pi}, ring {ri}, position {ci}: {why}"
                    ))
                })?;
                coords.push(c);
            }
            if coords.first() != coords.last() {
                unclosed_rings += 1;
            }
            converted.push(LineString::new(coords));
        }
        let exterior = converted.remove(0);
        out.push(Polygon::new(exterior, converted)); // closes every ring
    }
    if out.is_empty() {
        return Err(ConvertError::Empty);
    }
    Ok(Converted {
        geometry: MultiPolygon::new(out),
        unclosed_rings,
    })
}

fn position(pos: &[f64]) -> Result<Coord<f64>, String> {
    if pos.len() < 2 {
        return Err(format!(
            "expected [lon, lat], found {} number(s)",
            pos.len()
        ));
    }
    let c = Coord {
        x: pos[0],
        y: pos[1],
    };
    check_coord(c)?;
    Ok(c)
}

/// A finite WGS84 lon/lat.
pub(crate) fn check_coord(c: Coord<f64>) -> Result<(), String> {
    if !(c.x.is_finite() && c.y.is_finite()) {
        return Err(format!("non-finite coordinate ({}, {})", c.x, c.y));
    }
    if !(-180.0..=180.0).contains(&c.x) || !(-90.0..=90.0).contains(&c.y) {
        return Err(format!("({}, {}) is not a WGS84 lon/lat", c.x, c.y));
    }
    Ok(())
}

pub(crate) fn check_coords(mp: &MultiPolygon<f64>) -> Result<(), String> {
    for (pi, p) in mp.0.iter().enumerate() {
        for (ri, ring) in std::iter::once(p.exterior())
            .chain(p.interiors())
            .enumerate()
        {
            for (ci, c) in ring.0.iter().enumerate() {
                check_coord(*c)
                    .map_err(|why| format!("polygon {pi}, ring {ri}, position {ci}: {why}"))?;
            }
        }
    }
    Ok(())
}

/// The validation problems of a geometry, joined; `None` when valid.
pub(crate) fn problems(mp: &MultiPolygon<f64>) -> Option<String> {
    let mut text: Vec<String> = mp
        .validation_errors()
        .iter()
        .map(|e| e.to_string())
        .collect();
    text.dedup();
    // geo accepts collinear rings; a cell without area is no cell. (Only checked on otherwise
    // valid input: a bow-tie's signed halves cancel out.)
    let otherwise_valid = text.is_empty();
    for (i, p) in mp.0.iter().enumerate() {
        if otherwise_valid && p.unsigned_area() == 0.0 {
            text.push(format!("polygon at index {i} has zero area"));
        }
    }
    if text.is_empty() {
        return None;
    }
    Some(text.join("; "))
}

/// Repairs an invalid MultiPolygon: every part is unioned with nothing under the even-odd fill
/// rule (i_overlay), which splits self-intersecting rings (a bow-tie becomes two triangles),
/// drops degenerate rings and keeps holes; the repaired parts are then unioned together so
/// overlapping parts merge instead of cancelling out. i_overlay may return a ring that touches
/// itself at a vertex (an "inverted hole", invalid in OGC terms); such rings are split into a
/// hole or a separate part. Output rings follow the GeoJSON orientation (exterior
/// counter-clockwise).
pub(crate) fn repair(mp: &MultiPolygon<f64>) -> MultiPolygon<f64> {
    let overlaid = overlay_repair(mp);
    let split = MultiPolygon::new(overlaid.0.iter().flat_map(split_self_touching).collect());
    split.orient(geo::orient::Direction::Default)
}

fn overlay_repair(mp: &MultiPolygon<f64>) -> MultiPolygon<f64> {
    let empty = MultiPolygon::<f64>::new(vec![]);
    let parts: Vec<MultiPolygon<f64>> = mp.0.iter().map(|p| p.union(&empty)).collect();
    let merged = if parts.len() == 1 {
        parts
            .into_iter()
            .next()
            .unwrap_or_else(|| MultiPolygon::new(vec![]))
    } else {
        parts
            .iter()
            .fold(MultiPolygon::new(vec![]), |acc, p| acc.union(p))
    };
    merged
}

/// Splits rings that pass through the same vertex twice. A loop cut out of the exterior ring
/// becomes a hole when it lies inside the rest of the ring, a separate polygon otherwise; loops
/// cut out of holes stay holes.
fn split_self_touching(p: &Polygon<f64>) -> Vec<Polygon<f64>> {
    let mut outer_rings = split_ring(p.exterior());
    let main = Polygon::new(outer_rings.remove(0), vec![]);
    let main_ok = main.exterior().0.len() >= 4 && main.unsigned_area() > 0.0;
    let mut exteriors = Vec::new();
    let mut holes = Vec::new();
    for r in outer_rings {
        let probe = Polygon::new(r.clone(), vec![]).interior_point();
        if main_ok && probe.is_some_and(|pt| main.intersects(&pt)) {
            holes.push(r);
        } else {
            exteriors.push(r);
        }
    }
    if main_ok {
        exteriors.insert(0, main.exterior().clone());
    }
    for h in p.interiors() {
        holes.extend(split_ring(h).into_iter().filter(|r| r.0.len() >= 4));
    }
    if exteriors.len() <= 1 {
        return exteriors
            .into_iter()
            .map(|e| Polygon::new(e, holes.clone()))
            .collect();
    }
    let mut polys: Vec<(LineString<f64>, Vec<LineString<f64>>)> =
        exteriors.into_iter().map(|e| (e, vec![])).collect();
    for h in holes {
        let probe = Polygon::new(h.clone(), vec![]).interior_point();
        let owner = polys
            .iter()
            .position(|(e, _)| {
                probe.is_some_and(|pt| Polygon::new(e.clone(), vec![]).intersects(&pt))
            })
            .unwrap_or(0);
        polys[owner].1.push(h);
    }
    polys
        .into_iter()
        .map(|(e, hs)| Polygon::new(e, hs))
        .collect()
}

/// Cuts a closed ring into simple loops at repeated vertices; the first ring returned is what
/// remains of the original ring (possibly degenerate).
fn split_ring(ring: &LineString<f64>) -> Vec<LineString<f64>> {
    let pts = &ring.0[..ring.0.len().saturating_sub(1)];
    let mut stack: Vec<Coord<f64>> = Vec::with_capacity(pts.len() + 1);
    let mut loops = Vec::new();
    for &c in pts {
        if let Some(at) = stack.iter().rposition(|q| *q == c) {
            let mut l: Vec<Coord<f64>> = stack.drain(at..).collect();
            l.push(c);
            if l.len() >= 4 {
                loops.push(LineString::new(l));
            }
            stack.push(c);
        } else {
            stack.push(c);
        }
    }
    if let Some(&first) = stack.first() {
        stack.push(first);
    }
    let mut out = vec![LineString::new(stack)];
    out.extend(loops);
    out
}

/// Validates and, when needed, repairs. `Ok((geometry, None))` when valid; `Ok((repaired,
/// Some(problem)))` after a repair; `Err(problem)` when the repair leaves nothing.
pub(crate) fn validate_or_repair(
    mp: MultiPolygon<f64>,
) -> Result<(MultiPolygon<f64>, Option<String>), String> {
    match problems(&mp) {
        None => Ok((mp, None)),
        Some(problem) => {
            let repaired = repair(&mp);
            if repaired.0.is_empty() {
                Err(problem)
            } else {
                Ok((repaired, Some(problem)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use geo::polygon;

    #[test]
    fn bow_tie_repairs_into_two_triangles_of_the_right_area() {
        // (0,0) → (2,2) → (2,0) → (0,2): two triangles meeting at (1,1), each of area 1.
        let bow = MultiPolygon::new(vec![
            polygon![(x: 0., y: 0.), (x: 2., y: 2.), (x: 2., y: 0.), (x: 0., y: 2.)],
        ]);
        assert!(problems(&bow).unwrap().contains("self-intersection"));
        let fixed = repair(&bow);
        assert!(fixed.is_valid(), "{:?}", fixed.validation_errors());
        assert_eq!(fixed.0.len(), 2);
        assert!((fixed.unsigned_area() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn ring_touching_itself_is_split_into_a_hole() {
        // A 4 × 4 square whose ring detours from (0, 2) round a diamond and back to (0, 2):
        // the detour winds the other way, so it is an inverted hole.
        let p = polygon![
            (x: 0., y: 0.), (x: 4., y: 0.), (x: 4., y: 4.), (x: 0., y: 4.), (x: 0., y: 2.),
            (x: 1., y: 3.), (x: 2., y: 2.), (x: 1., y: 1.), (x: 0., y: 2.)
        ];
        let mp = MultiPolygon::new(vec![p]);
        assert!(problems(&mp).is_some());
        let fixed = repair(&mp);
        assert!(fixed.is_valid(), "{:?}", fixed.validation_errors());
        assert_eq!(fixed.0.len(), 1);
        assert_eq!(fixed.0[0].interiors().len(), 1);
        assert!((fixed.unsigned_area() - 14.0).abs() < 1e-9);
        // A loop outside the rest of the ring is a separate lobe.
        let lobe = polygon![
            (x: 0., y: 0.), (x: 4., y: 0.), (x: 4., y: 4.), (x: 0., y: 4.), (x: 0., y: 2.),
            (x: -1., y: 3.), (x: -2., y: 2.), (x: -1., y: 1.), (x: 0., y: 2.)
        ];
        let parts = split_self_touching(&lobe);
        assert_eq!(parts.len(), 2);
        assert!((MultiPolygon::new(parts).unsigned_area() - 18.0).abs() < 1e-9);
    }

    #[test]
    fn overlapping_parts_merge_rather_than_cancel() {
        let a = polygon![(x: 0., y: 0.), (x: 2., y: 0.), (x: 2., y: 2.), (x: 0., y: 2.)];
        let b = polygon![(x: 1., y: 1.), (x: 3., y: 1.), (x: 3., y: 3.), (x: 1., y: 3.)];
        let fixed = repair(&MultiPolygon::new(vec![a, b]));
        assert_eq!(fixed.0.len(), 1);
        assert!((fixed.unsigned_area() - 7.0).abs() < 1e-9);
    }

    #[test]
    fn geojson_conversion_counts_unclosed_rings_and_rejects_bad_positions() {
        let g = geojson::Geometry::new(geojson::Value::Polygon(vec![vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![1.0, 1.0],
        ]]));
        let c = from_geojson(Some(&g)).unwrap();
        assert_eq!(c.unclosed_rings, 1);
        assert_eq!(c.geometry.0[0].exterior().0.len(), 4);
        let bad = geojson::Geometry::new(geojson::Value::Polygon(vec![vec![
            vec![0.0],
            vec![1.0, 0.0],
        ]]));
        assert!(
            matches!(from_geojson(Some(&bad)), Err(ConvertError::BadCoordinate(m)) if m.contains("position 0"))
        );
        let far = geojson::Geometry::new(geojson::Value::Polygon(vec![vec![
            vec![200.0, 0.0],
            vec![1.0, 0.0],
        ]]));
        assert!(matches!(
            from_geojson(Some(&far)),
            Err(ConvertError::BadCoordinate(_))
        ));
        let pt = geojson::Geometry::new(geojson::Value::Point(vec![1.0, 2.0]));
        assert_eq!(
            from_geojson(Some(&pt)).err(),
            Some(ConvertError::NotPolygon("Point"))
        );
        let empty = geojson::Geometry::new(geojson::Value::MultiPolygon(vec![]));
        assert_eq!(from_geojson(Some(&empty)).err(), Some(ConvertError::Empty));
        assert_eq!(from_geojson(None).err(), Some(ConvertError::Missing));
    }
}
