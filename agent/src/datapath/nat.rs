//! Writing the NAT44 configuration maps, all or nothing.
//!
//! A restart adopts the pinned maps, so the previous configuration may still
//! be in them while the datapath runs. The new one is written on top (new
//! entries first, stale ones removed last, so a mapping that stays never
//! disappears in between) and the previous contents are kept until the whole
//! start succeeded, to be written back if it did not.

use std::collections::HashMap as StdHashMap;

use aya::maps::{Array, HashMap};
use xcnf_common::{
    maps,
    nat::{MAX_POOL_RANGES, NatAddr, NatConfig, PoolRange, StaticKey, StaticMapping},
};

use super::{Datapath, DatapathError, map_err, remove_if_present};
use crate::nat::NatPlan;

/// The contents of the NAT configuration maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct NatTables {
    config: NatConfig,
    /// All `MAX_POOL_RANGES` slots.
    pools: Vec<PoolRange>,
    statics: StdHashMap<StaticKey, StaticMapping>,
    addrs: StdHashMap<[u8; 4], NatAddr>,
}

impl NatTables {
    pub(super) fn from_plan(plan: &NatPlan) -> Self {
        let mut pools = plan.pools.clone();
        pools.resize(MAX_POOL_RANGES as usize, PoolRange::default());
        Self {
            config: plan.config,
            pools,
            statics: plan.statics.iter().copied().collect(),
            addrs: plan.addrs.iter().copied().collect(),
        }
    }
}

impl Datapath {
    /// What the maps hold now.
    pub(super) fn read_nat(&mut self) -> Result<NatTables, DatapathError> {
        let config = {
            let m: Array<_, NatConfig> = self.map_mut(maps::NAT_CONFIG)?;
            m.get(&0, 0).map_err(|s| map_err(maps::NAT_CONFIG, s))?
        };
        let pools = {
            let m: Array<_, PoolRange> = self.map_mut(maps::NAT_POOLS)?;
            m.iter()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|s| map_err(maps::NAT_POOLS, s))?
        };
        let statics = {
            let m: HashMap<_, StaticKey, StaticMapping> = self.map_mut(maps::NAT_STATIC)?;
            m.iter()
                .collect::<Result<_, _>>()
                .map_err(|s| map_err(maps::NAT_STATIC, s))?
        };
        let addrs = {
            let m: HashMap<_, [u8; 4], NatAddr> = self.map_mut(maps::NAT_ADDRS)?;
            m.iter()
                .collect::<Result<_, _>>()
                .map_err(|s| map_err(maps::NAT_ADDRS, s))?
        };
        Ok(NatTables {
            config,
            pools,
            statics,
            addrs,
        })
    }

    /// Makes the maps hold `want`, given that they hold `have`.
    ///
    /// Lookup tables are filled before the config entry that refers to them
    /// is written, and entries only `have` has are removed last.
    pub(super) fn write_nat(
        &mut self,
        want: &NatTables,
        have: &NatTables,
    ) -> Result<(), DatapathError> {
        {
            let mut m: HashMap<_, [u8; 4], NatAddr> = self.map_mut(maps::NAT_ADDRS)?;
            for (k, v) in &want.addrs {
                if have.addrs.get(k) != Some(v) {
                    m.insert(k, v, 0).map_err(|s| map_err(maps::NAT_ADDRS, s))?;
                }
            }
        }
        {
            let mut m: HashMap<_, StaticKey, StaticMapping> = self.map_mut(maps::NAT_STATIC)?;
            for (k, v) in &want.statics {
                if have.statics.get(k) != Some(v) {
                    m.insert(k, v, 0)
                        .map_err(|s| map_err(maps::NAT_STATIC, s))?;
                }
            }
        }
        {
            let mut m: Array<_, PoolRange> = self.map_mut(maps::NAT_POOLS)?;
            for (i, r) in want.pools.iter().enumerate() {
                if have.pools.get(i) != Some(r) {
                    m.set(i as u32, r, 0)
                        .map_err(|s| map_err(maps::NAT_POOLS, s))?;
                }
            }
        }
        {
            let mut m: Array<_, NatConfig> = self.map_mut(maps::NAT_CONFIG)?;
            m.set(0, want.config, 0)
                .map_err(|s| map_err(maps::NAT_CONFIG, s))?;
        }
        {
            let mut m: HashMap<_, StaticKey, StaticMapping> = self.map_mut(maps::NAT_STATIC)?;
            for k in have
                .statics
                .keys()
                .filter(|k| !want.statics.contains_key(*k))
            {
                // Absent if never written: a restore after a write that
                // stopped early.
                remove_if_present(&mut m, k).map_err(|s| map_err(maps::NAT_STATIC, s))?;
            }
        }
        {
            let mut m: HashMap<_, [u8; 4], NatAddr> = self.map_mut(maps::NAT_ADDRS)?;
            for k in have.addrs.keys().filter(|k| !want.addrs.contains_key(*k)) {
                remove_if_present(&mut m, k).map_err(|s| map_err(maps::NAT_ADDRS, s))?;
            }
        }
        Ok(())
    }

    /// Puts `old` back after a failed start, whatever part of `new` made it
    /// into the maps. Best effort: the start already failed, so a second
    /// error is only logged.
    pub(super) fn restore_nat(&mut self, old: &NatTables, new: &NatTables) {
        // First every old entry, whether or not the failed write got to it
        // (an empty "have" differs from everything); then, measured against
        // `new` (a superset of what may have been added), the removals.
        let result = self.write_nat(old, &NatTables::default()).and_then(|()| {
            let have = NatTables {
                pools: old.pools.clone(),
                ..new.clone()
            };
            self.write_nat(old, &have)
        });
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not restore the previous NAT44 configuration");
        }
    }
}
