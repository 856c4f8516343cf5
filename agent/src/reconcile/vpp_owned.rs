//! What the agent made in VPP, kept on disk across agent restarts, as the
//! kernel side keeps `owned.json`: VPP keeps its configuration when only the
//! agent restarts, so a new config that no longer has a memif, an address,
//! a route or the NAT44 section must have them removed, and only the
//! agent's own objects may be. Recorded in VPP's terms (socket filename and
//! memif id), since logical names may differ in the new config.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::item::{Item, ItemKey, Items};
use super::vpp::VppNatPlan;

/// A memif by its socket filename (as in the config) and id.
pub type MemifRef = (String, u32);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VppOwned {
    pub memifs: BTreeSet<MemifRef>,
    /// (memif, address, prefix length).
    pub addresses: BTreeSet<(MemifRef, Ipv4Addr, u8)>,
    /// (destination, length, next hop, memif).
    pub routes: BTreeSet<(Ipv4Addr, u8, Option<Ipv4Addr>, MemifRef)>,
    /// The NAT44 plan's fingerprint while nat44-ed is the agent's.
    pub nat: Option<u64>,
}

impl VppOwned {
    /// The record at `path`; an unreadable one is ignored (nothing is
    /// removed that the agent cannot prove it made).
    pub fn load(path: &Path) -> Self {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "ignoring an unreadable VPP ownership record");
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    pub fn save(&self, path: &Path) {
        let r = serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|b| super::record::write_atomically(path, &b));
        if let Err(e) = r {
            warn!(path = %path.display(), error = %e, "cannot record what the agent made in VPP; a restarted agent will leave it in place");
        }
    }

    /// What `items` want in VPP, in the same terms. NSM memifs still
    /// waiting for their socket want nothing yet.
    pub fn wanted(items: &Items) -> Self {
        let memif_of = |logical: &str| match items.get(&ItemKey::VppInterface(logical.to_owned())) {
            Some(Item::Memif(m)) if m.waiting.is_none() => Some((m.socket.clone(), m.id)),
            _ => None,
        };
        let mut out = Self::default();
        for (k, i) in items {
            match (k, i) {
                (ItemKey::VppInterface(n), _) => {
                    if let Some(m) = memif_of(n) {
                        out.memifs.insert(m);
                    }
                }
                (ItemKey::VppAddress(n, p), _) => {
                    if let Some(m) = memif_of(n) {
                        out.addresses.insert((m, p.addr, p.len));
                    }
                }
                (ItemKey::VppRoute(dst), Item::Route(r)) => {
                    if let Some(m) = memif_of(&r.interface) {
                        out.routes.insert((dst.addr, dst.len, r.via, m));
                    }
                }
                (ItemKey::VppNat, Item::VppNat(p)) => out.nat = Some(fingerprint(p)),
                _ => {}
            }
        }
        out
    }
}

/// Tells one NAT44 plan from another across agent restarts: a plan changed
/// while the agent was down is programmed anew.
pub fn fingerprint(p: &VppNatPlan) -> u64 {
    let mut h = xcnf_common::maps::Fnv1a::default();
    h.write(format!("{p:?}").as_bytes());
    h.finish()
}

/// Where the VPP record lives: next to the kernel side's.
pub fn path_next_to(owned: &Path) -> PathBuf {
    owned.with_file_name("vpp-owned.json")
}
