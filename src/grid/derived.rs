//! Values derived from the grid map in use, for the parts of the service that read the map
//! away from the pipeline (the views, the lifecycle's station desks): a reload swaps the
//! pipeline's map, and each is rebuilt on its next use.

use std::sync::{Arc, Mutex};

use super::GridMap;

type Live = Box<dyn Fn() -> Arc<GridMap> + Send + Sync>;

/// `T` derived from the grid map that `live` gives, rebuilt when that map is another one.
pub struct GridDerived<T> {
    live: Live,
    derive: fn(&GridMap) -> T,
    built: Mutex<(Arc<GridMap>, Arc<T>)>,
}

impl<T> GridDerived<T> {
    pub fn new(
        live: impl Fn() -> Arc<GridMap> + Send + Sync + 'static,
        derive: fn(&GridMap) -> T,
    ) -> GridDerived<T> {
        let grid = live();
        let value = Arc::new(derive(&grid));
        GridDerived {
            live: Box::new(live),
            derive,
            built: Mutex::new((grid, value)),
        }
    }

    /// The value for the map in use now, and whether this call rebuilt it (a reload swapped
    /// the map since the last call).
    pub fn current(&self) -> (Arc<T>, bool) {
        let grid = (self.live)();
        let mut built = self.built.lock().expect("grid-derived lock");
        if Arc::ptr_eq(&built.0, &grid) {
            return (built.1.clone(), false);
        }
        let value = Arc::new((self.derive)(&grid));
        *built = (grid, value.clone());
        (value, true)
    }

    /// The map in use now.
    pub fn grid(&self) -> Arc<GridMap> {
        (self.live)()
    }
}
