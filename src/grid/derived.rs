//! Values derived from the grid map in use, for the parts of the service that read the map
//! away from the pipeline (the views, the lifecycle's station desks): a reload swaps the
//! pipeline's map, and each is rebuilt on its next use.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::GridMap;

type Live = Box<dyn Fn() -> Arc<GridMap> + Send + Sync>;

/// A value and the map it was derived from.
struct Built<T> {
    grid: Arc<GridMap>,
    value: Arc<T>,
}

/// `T` derived from the grid map that `live` gives, rebuilt when that map is another one.
/// Reading it takes no lock (the lifecycle reads it for every task).
pub struct GridDerived<T> {
    live: Live,
    derive: fn(&GridMap) -> T,
    built: ArcSwap<Built<T>>,
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
            built: ArcSwap::from_pointee(Built { grid, value }),
        }
    }

    /// The value for the map in use now, and whether this call rebuilt it (a reload swapped
    /// the map since the last call; two callers at once may both rebuild, to the same value).
    pub fn current(&self) -> (Arc<T>, bool) {
        let grid = (self.live)();
        let built = self.built.load();
        if Arc::ptr_eq(&built.grid, &grid) {
            return (built.value.clone(), false);
        }
        let value = Arc::new((self.derive)(&grid));
        self.built.store(Arc::new(Built {
            grid,
            value: value.clone(),
        }));
        (value, true)
    }

    /// The map in use now.
    pub fn grid(&self) -> Arc<GridMap> {
        (self.live)()
    }
}
