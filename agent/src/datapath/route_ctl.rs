//! The sessions' route cache control (`route_ctl`, see
//! `xcnf_common::nat::RouteCtl`): the agent turns the cache on and moves its
//! generation whenever something that can change a FIB answer changes, so
//! no session keeps forwarding on a route or MAC the kernel has replaced.
//!
//! The entry is reached through its pin on every write: the datapath may be
//! recreated (a new layout, a new session table size) under a watcher that
//! outlives it, and the pin always names the maps the programs use.

use std::sync::Mutex;

use aya::maps::{Array, Map, MapData};
use xcnf_common::{
    maps,
    nat::{ROUTE_MAX_AGE_MS, RouteCtl},
};

use super::{DatapathError, Pins, map_err};

/// Serialises the agent's writers (the reconciler and the change watcher):
/// a read-increment-write racing another could write an older generation
/// back, and a session cached in between would then look current.
static WRITER: Mutex<()> = Mutex::new(());

/// Moves the generation on and keeps the cache on. `Ok(None)` when there is
/// no datapath (no pin) to tell.
pub fn bump(pins: &Pins) -> Result<Option<u32>, DatapathError> {
    let path = pins.map(maps::ROUTE_CTL);
    if !path.exists() {
        return Ok(None);
    }
    let open = || -> Result<Array<MapData, RouteCtl>, aya::maps::MapError> {
        Array::try_from(Map::from_map_data(MapData::from_pin(&path)?)?)
    };
    let mut ctl = open().map_err(|source| map_err(maps::ROUTE_CTL, source))?;
    let _guard = WRITER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let old = ctl
        .get(&0, 0)
        .map_err(|source| map_err(maps::ROUTE_CTL, source))?;
    let generation = old.generation.wrapping_add(1);
    ctl.set(
        0,
        RouteCtl {
            generation,
            max_age_ms: ROUTE_MAX_AGE_MS,
        },
        0,
    )
    .map_err(|source| map_err(maps::ROUTE_CTL, source))?;
    Ok(Some(generation))
}
