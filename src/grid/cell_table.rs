//! Base-station cell table: CSV `cell_id,lon,lat`, mapping a mobile network cell id (as carried
//! by a suspicious-call event without coordinates) to the location of that cell.

use std::collections::HashMap;
use std::path::Path;

use super::geometry::check_coord;
use super::load::csv_rows;
use super::GridError;

pub(crate) const HEADER: [&str; 3] = ["cell_id", "lon", "lat"];

/// Cell id → (lon, lat). Lookups by `&str` do not allocate.
#[derive(Clone, Debug, Default)]
pub struct CellTable {
    cells: HashMap<String, (f64, f64)>,
    /// The rows in file order, for deterministic iteration.
    rows: Vec<(String, (f64, f64))>,
}

impl CellTable {
    /// Loads a `cell_id,lon,lat` CSV. Errors name the file and line: bad header, empty cell id,
    /// unparsable / non-finite / out-of-range coordinates, duplicate cell id.
    pub fn load(path: &Path) -> Result<CellTable, GridError> {
        let mut b = Builder::new(path);
        csv_rows(path, &HEADER, &[0, 1, 2], |line, r| {
            b.add(line, &r[0], Coords::Text(&r[1], &r[2]))
        })?;
        Ok(b.finish())
    }

    /// Builds a table from in-memory rows (`cell_id`, lon, lat). Errors use the pseudo file name
    /// `<rows>`, the n-th row (0-based) being line n + 2.
    pub fn from_rows<S: Into<String>>(
        rows: impl IntoIterator<Item = (S, f64, f64)>,
    ) -> Result<CellTable, GridError> {
        let path = Path::new("<rows>");
        let mut b = Builder::new(path);
        for (i, (id, lon, lat)) in rows.into_iter().enumerate() {
            let id: String = id.into();
            let line = i as u64 + 2;
            if id.trim().is_empty() {
                return Err(GridError::MissingField {
                    file: path.into(),
                    line,
                    field: "cell_id",
                });
            }
            b.add(line, &id, Coords::Num(lon, lat))?;
        }
        Ok(b.finish())
    }

    /// The location (lon, lat) of a cell id.
    pub fn get(&self, cell_id: &str) -> Option<(f64, f64)> {
        self.cells.get(cell_id).copied()
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// All rows in file (or `from_rows`) order: deterministic, unlike the hash map.
    pub fn iter(&self) -> impl Iterator<Item = (&str, (f64, f64))> + '_ {
        self.rows.iter().map(|(id, loc)| (id.as_str(), *loc))
    }
}

enum Coords<'a> {
    Text(&'a str, &'a str),
    Num(f64, f64),
}

struct Builder<'a> {
    path: &'a Path,
    cells: HashMap<String, (f64, f64)>,
    lines: HashMap<String, u64>,
    rows: Vec<(String, (f64, f64))>,
}

impl<'a> Builder<'a> {
    fn new(path: &'a Path) -> Self {
        Builder {
            path,
            cells: HashMap::new(),
            lines: HashMap::new(),
            rows: Vec::new(),
        }
    }

    fn add(&mut self, line: u64, cell_id: &str, coords: Coords<'_>) -> Result<(), GridError> {
        let bad = |detail: String| GridError::BadCellCoordinate {
            file: self.path.into(),
            line,
            cell_id: cell_id.to_string(),
            detail,
        };
        let (lon, lat) = match coords {
            Coords::Num(lon, lat) => (lon, lat),
            Coords::Text(lon, lat) => {
                let parse = |what: &str, s: &str| {
                    s.parse::<f64>()
                        .map_err(|_| bad(format!("{what} `{s}` is not a number")))
                };
                (parse("lon", lon)?, parse("lat", lat)?)
            }
        };
        check_coord(geo::Coord { x: lon, y: lat }).map_err(bad)?;
        if let Some(&first_line) = self.lines.get(cell_id) {
            return Err(GridError::DuplicateCellId {
                file: self.path.into(),
                line,
                cell_id: cell_id.to_string(),
                first_line,
            });
        }
        self.lines.insert(cell_id.to_string(), line);
        self.cells.insert(cell_id.to_string(), (lon, lat));
        self.rows.push((cell_id.to_string(), (lon, lat)));
        Ok(())
    }

    fn finish(self) -> CellTable {
        CellTable {
            cells: self.cells,
            rows: self.rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::tests::TempDir;

    #[test]
    fn loads_rows_and_looks_up_by_str() {
        let dir = TempDir::new("cell_table_ok");
        let p = dir.write(
            "cells.csv",
            "cell_id,lon,lat\n460-00-1-1, 117.2 ,39.1\n460-00-1-2,117.3,39.2\n",
        );
        let t = CellTable::load(&p).unwrap();
        assert_eq!(t.len(), 2);
        assert!(!t.is_empty());
        assert_eq!(t.get("460-00-1-1"), Some((117.2, 39.1)));
        assert_eq!(t.get("460-00-1-2"), Some((117.3, 39.2)));
        assert_eq!(t.get("460-00-9-9"), None);
        let rows: Vec<(&str, (f64, f64))> = t.iter().collect();
        assert_eq!(
            rows,
            [("460-00-1-1", (117.2, 39.1)), ("460-00-1-2", (117.3, 39.2))]
        );
        let empty = CellTable::from_rows(Vec::<(String, f64, f64)>::new()).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.iter().count(), 0);
    }

    #[test]
    fn unparsable_coordinate_names_file_line_and_cell() {
        let dir = TempDir::new("cell_table_bad_num");
        let p = dir.write("cells.csv", "cell_id,lon,lat\na,117.2,39.1\nb,east,39.1\n");
        let e = CellTable::load(&p).unwrap_err();
        assert!(
            matches!(e, GridError::BadCellCoordinate { line: 3, ref cell_id, .. } if cell_id == "b")
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{}: line 3: cell b: bad coordinates: lon `east` is not a number",
                p.display()
            )
        );
    }

    #[test]
    fn out_of_range_coordinate_is_rejected() {
        let dir = TempDir::new("cell_table_range");
        let p = dir.write("cells.csv", "cell_id,lon,lat\na,39.1,117.2\n");
        let e = CellTable::load(&p).unwrap_err();
        assert!(
            matches!(e, GridError::BadCellCoordinate { line: 2, .. }),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("(39.1, 117.2) is not a WGS84 lon/lat"),
            "{e}"
        );
        let e = CellTable::from_rows([("x", f64::NAN, 39.0)]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("<rows>: line 2: cell x: bad coordinates: non-finite"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_cell_id_names_both_lines() {
        let dir = TempDir::new("cell_table_dup");
        let p = dir.write(
            "cells.csv",
            "cell_id,lon,lat\na,117.2,39.1\nb,117.2,39.1\na,117.3,39.1\n",
        );
        let e = CellTable::load(&p).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: line 4: duplicate cell_id a (first on line 2)",
                p.display()
            )
        );
        let e = CellTable::from_rows([("a", 117.0, 39.0), ("a", 117.0, 39.0)]).unwrap_err();
        assert!(matches!(
            e,
            GridError::DuplicateCellId {
                line: 3,
                first_line: 2,
                ..
            }
        ));
    }

    #[test]
    fn bad_header_empty_id_and_short_row_are_errors() {
        let dir = TempDir::new("cell_table_hdr");
        let p = dir.write("h.csv", "id,lon,lat\na,117.2,39.1\n");
        let e = CellTable::load(&p).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: line 1: bad header: expected `cell_id,lon,lat`, found `id,lon,lat`",
                p.display()
            )
        );
        let p = dir.write("e.csv", "cell_id,lon,lat\n,117.2,39.1\n");
        assert!(matches!(
            CellTable::load(&p).unwrap_err(),
            GridError::MissingField {
                line: 2,
                field: "cell_id",
                ..
            }
        ));
        let p = dir.write("s.csv", "cell_id,lon,lat\na,117.2\n");
        let e = CellTable::load(&p).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: line 2: expected 3 fields, found 2", p.display())
        );
        assert!(matches!(
            CellTable::from_rows([(" ", 117.0, 39.0)]),
            Err(GridError::MissingField { .. })
        ));
    }
}
