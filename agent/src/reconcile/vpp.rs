//! The VPP side of the reconciler: memifs, their addresses, routes and
//! nat44-ed, programmed over VPP's binary API.
//!
//! VPP forgets everything when it restarts, so every item remembers the
//! connection epoch it was applied in; an item from an older epoch is not
//! in place, and the resync the epoch change triggers applies it again.
//! While VPP is unreachable, VPP items are Pending, never Failed: VPP
//! coming up is an event outside the agent's control, like an interface
//! appearing.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    net::Ipv4Addr,
    pin::Pin,
};

use tracing::info;

use super::{
    backend::{Outcome, StepError},
    item::{Item, ItemKey, MemifSpec, RouteVia},
};
use crate::config::{
    IdentitySpec, Interface, Ipv4Prefix, MemifMode, MemifRole, Nat44Spec, NatTimeouts, StaticSpec,
};

/// `spec.nat44` as VPP's nat44-ed takes it: ranges rather than pools (the
/// port range is VPP's own), roles by logical interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VppNatPlan {
    pub inside: Vec<String>,
    pub outside: Vec<String>,
    pub ranges: Vec<(Ipv4Addr, Ipv4Addr)>,
    pub statics: Vec<StaticSpec>,
    pub identities: Vec<IdentitySpec>,
    pub timeouts: NatTimeouts,
    /// nat44-ed's session limit, per worker thread.
    pub max_sessions: u32,
}

impl VppNatPlan {
    pub fn from_spec(interfaces: &[Interface], spec: &Nat44Spec) -> Self {
        let names = |ix: &[usize]| ix.iter().map(|&i| interfaces[i].name.clone()).collect();
        Self {
            inside: names(&spec.inside),
            outside: names(&spec.outside),
            ranges: spec.pools.iter().map(|p| (p.first, p.last)).collect(),
            statics: spec.statics.clone(),
            identities: spec.identities.clone(),
            timeouts: spec.timeouts,
            max_sessions: spec.max_sessions,
        }
    }
}

/// Why a VPP call did not succeed, sorted by what the reconciler does next.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VppFault {
    /// No connection to VPP: the item waits (Pending) for VPP to come up.
    #[error("VPP API socket not reachable: {0}")]
    Unreachable(String),
    /// VPP answered with an error: the step failed.
    #[error("{0}")]
    Refused(String),
    /// VPP already has it (an earlier agent made it in this VPP).
    #[error("{0}: already exists")]
    Exists(String),
}

/// A memif to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifCreate {
    pub socket_id: u32,
    pub role: MemifRole,
    pub id: u32,
    pub mode: MemifMode,
}

type R<T> = Result<T, VppFault>;
/// A boxed call, so the API can be a trait object ([`SharedVppApi`]).
pub type Call<'a, T> = Pin<Box<dyn Future<Output = R<T>> + Send + 'a>>;

/// What the VPP backend needs from a VPP connection, one call per VPP
/// message (or dump). Implemented over the binary-API client; a trait so
/// the reconciler does not depend on the wire client's types.
pub trait VppApi: Send + Sync {
    /// The connection's generation, bumped on every (re)connect; `None`
    /// while VPP is unreachable.
    fn epoch(&self) -> Option<u64>;
    fn memif_socket<'a>(&'a self, socket_id: u32, path: &'a str, add: bool) -> Call<'a, ()>;
    /// Returns the new sw_if_index.
    fn memif_create<'a>(&'a self, m: &'a MemifCreate) -> Call<'a, u32>;
    fn memif_delete(&self, sw_if_index: u32) -> Call<'_, ()>;
    fn set_flags(&self, sw_if_index: u32, up: bool) -> Call<'_, ()>;
    fn address(&self, sw_if_index: u32, p: Ipv4Prefix, add: bool) -> Call<'_, ()>;
    fn route(
        &self,
        dst: Ipv4Prefix,
        via: Option<Ipv4Addr>,
        sw_if_index: u32,
        add: bool,
    ) -> Call<'_, ()>;
    /// (sw_if_index, name) of every interface, for adoption.
    fn interfaces(&self) -> Call<'_, Vec<(u32, String)>>;
    fn nat_enable(&self, max_sessions: u32, enable: bool) -> Call<'_, ()>;
    fn nat_range(&self, first: Ipv4Addr, last: Ipv4Addr, add: bool) -> Call<'_, ()>;
    fn nat_feature(&self, sw_if_index: u32, inside: bool, add: bool) -> Call<'_, ()>;
    fn nat_static<'a>(&'a self, s: &'a StaticSpec, add: bool) -> Call<'a, ()>;
    fn nat_identity<'a>(&'a self, i: &'a IdentitySpec, add: bool) -> Call<'a, ()>;
    fn nat_timeouts<'a>(&'a self, t: &'a NatTimeouts) -> Call<'a, ()>;
}

/// The connection the system backend holds.
pub type SharedVppApi = std::sync::Arc<dyn VppApi>;

/// The name VPP gives a memif: `memif<socket id>/<id>`.
pub fn memif_name(socket_id: u32, id: u32) -> String {
    format!("memif{socket_id}/{id}")
}

/// The VPP items' state: which memif is which sw_if_index, which socket
/// filename has which socket id, and the epoch everything was applied in.
pub struct Vpp {
    api: SharedVppApi,
    /// Socket filenames registered in this epoch.
    sockets: BTreeSet<String>,
    /// Logical interface → sw_if_index.
    ifaces: BTreeMap<String, u32>,
    /// Items applied in this epoch.
    applied: BTreeSet<ItemKey>,
    /// The epoch the state above belongs to.
    epoch: Option<u64>,
}

/// The VPP socket id for a memif socket filename. VPP has no lookup by
/// filename, so the id is derived from it: a restarted agent finds the
/// socket, and the memifs on it (named after the id), where it left them.
/// Id 0 is VPP's built-in default socket.
pub fn socket_id(path: &str) -> u32 {
    let mut h = xcnf_common::maps::Fnv1a::default();
    h.write(path.as_bytes());
    // 31 bits keep it clear of VPP's ~0 "unset"; +1 keeps it off 0.
    (h.finish() as u32 & 0x7fff_ffff) + 1
}

fn pending(f: VppFault) -> Result<Outcome, StepError> {
    match f {
        VppFault::Unreachable(_) => Ok(Outcome::Pending(f.to_string())),
        VppFault::Refused(_) | VppFault::Exists(_) => Err(StepError(f.to_string())),
    }
}

/// Runs a VPP call inside a step: unreachable → Pending, refused → error.
macro_rules! vpp {
    ($e:expr) => {
        match $e.await {
            Ok(v) => v,
            Err(f) => return pending(f),
        }
    };
}

impl Vpp {
    pub fn new(api: SharedVppApi) -> Self {
        Self {
            api,
            sockets: BTreeSet::new(),
            ifaces: BTreeMap::new(),
            applied: BTreeSet::new(),
            epoch: None,
        }
    }

    pub fn api(&self) -> &SharedVppApi {
        &self.api
    }

    /// Forgets state from an earlier connection: after a VPP restart none of
    /// it exists any more.
    fn sync_epoch(&mut self) -> Option<u64> {
        let now = self.api.epoch();
        if now != self.epoch {
            if self.epoch.is_some() {
                info!(
                    old = ?self.epoch,
                    new = ?now,
                    "VPP connection changed: re-applying every VPP item"
                );
            }
            self.sockets.clear();
            self.ifaces.clear();
            self.applied.clear();
            self.epoch = now;
        }
        now
    }

    fn sw_if_index(&self, logical: &str) -> Result<u32, Outcome> {
        self.ifaces.get(logical).copied().ok_or_else(|| {
            Outcome::Pending(format!("VPP interface {logical:?} is not created yet"))
        })
    }

    async fn register_socket(&mut self, path: &str) -> R<u32> {
        let id = socket_id(path);
        if !self.sockets.contains(path) {
            match self.api.memif_socket(id, path, true).await {
                Ok(()) | Err(VppFault::Exists(_)) => {}
                Err(f) => return Err(f),
            }
            self.sockets.insert(path.to_owned());
        }
        Ok(id)
    }

    pub async fn create(&mut self, key: &ItemKey, item: &Item) -> Result<Outcome, StepError> {
        if self.sync_epoch().is_none() {
            return Ok(Outcome::Pending(
                VppFault::Unreachable("not connected".into()).to_string(),
            ));
        }
        let outcome = self.create_inner(key, item).await?;
        if outcome == Outcome::Done {
            self.applied.insert(key.clone());
        }
        Ok(outcome)
    }

    async fn create_inner(&mut self, key: &ItemKey, item: &Item) -> Result<Outcome, StepError> {
        match (key, item) {
            (ItemKey::VppInterface(n), Item::Memif(m)) => self.create_memif(n, m).await,
            (ItemKey::VppAddress(n, p), Item::Address) => {
                let sw = match self.sw_if_index(n) {
                    Ok(sw) => sw,
                    Err(o) => return Ok(o),
                };
                vpp!(self.api.address(sw, *p, true));
                Ok(Outcome::Done)
            }
            (ItemKey::VppRoute(dst), Item::Route(r)) => self.route(*dst, r, true).await,
            (ItemKey::VppNat, Item::VppNat(p)) => self.create_nat(p).await,
            _ => Err(StepError(format!("{key}: not a VPP item"))),
        }
    }

    async fn create_memif(&mut self, logical: &str, m: &MemifSpec) -> Result<Outcome, StepError> {
        let socket_id = vpp!(self.register_socket(&m.socket));
        let want = memif_name(socket_id, m.id);
        // Adopt a memif an earlier agent made in this VPP (same socket and
        // id is the same memif): creating it again would be refused.
        let existing = vpp!(self.api.interfaces());
        let sw = match existing.iter().find(|(_, name)| *name == want) {
            Some((sw, _)) => *sw,
            None => vpp!(self.api.memif_create(&MemifCreate {
                socket_id,
                role: m.role,
                id: m.id,
                mode: m.mode,
            })),
        };
        vpp!(self.api.set_flags(sw, m.up));
        self.ifaces.insert(logical.to_owned(), sw);
        Ok(Outcome::Done)
    }

    async fn route(
        &mut self,
        dst: Ipv4Prefix,
        r: &RouteVia,
        add: bool,
    ) -> Result<Outcome, StepError> {
        let sw = match self.sw_if_index(&r.interface) {
            Ok(sw) => sw,
            Err(o) => return Ok(o),
        };
        vpp!(self.api.route(dst, r.via, sw, add));
        Ok(Outcome::Done)
    }

    async fn features(&mut self, p: &VppNatPlan, add: bool) -> Result<Outcome, StepError> {
        for (names, inside) in [(&p.inside, true), (&p.outside, false)] {
            for n in names {
                let sw = match self.sw_if_index(n) {
                    Ok(sw) => sw,
                    Err(o) => return Ok(o),
                };
                vpp!(self.api.nat_feature(sw, inside, add));
            }
        }
        Ok(Outcome::Done)
    }

    async fn create_nat(&mut self, p: &VppNatPlan) -> Result<Outcome, StepError> {
        vpp!(self.api.nat_enable(p.max_sessions, true));
        vpp!(self.api.nat_timeouts(&p.timeouts));
        for &(first, last) in &p.ranges {
            vpp!(self.api.nat_range(first, last, true));
        }
        if let o @ Outcome::Pending(_) = self.features(p, true).await? {
            return Ok(o);
        }
        for s in &p.statics {
            vpp!(self.api.nat_static(s, true));
        }
        for i in &p.identities {
            vpp!(self.api.nat_identity(i, true));
        }
        Ok(Outcome::Done)
    }

    /// A changed NAT plan as the difference: one mapping more is one call,
    /// and existing sessions survive. A new session limit means re-enabling
    /// the plugin, which drops everything, so then it is re-created whole.
    async fn update_nat(
        &mut self,
        old: &VppNatPlan,
        new: &VppNatPlan,
    ) -> Result<Outcome, StepError> {
        if old.max_sessions != new.max_sessions {
            vpp!(self.api.nat_enable(0, false));
            return self.create_nat(new).await;
        }
        if old.timeouts != new.timeouts {
            vpp!(self.api.nat_timeouts(&new.timeouts));
        }
        for s in old.statics.iter().filter(|s| !new.statics.contains(s)) {
            vpp!(self.api.nat_static(s, false));
        }
        for i in old
            .identities
            .iter()
            .filter(|i| !new.identities.contains(i))
        {
            vpp!(self.api.nat_identity(i, false));
        }
        let roles = |p: &VppNatPlan| -> BTreeSet<(String, bool)> {
            p.inside
                .iter()
                .map(|n| (n.clone(), true))
                .chain(p.outside.iter().map(|n| (n.clone(), false)))
                .collect()
        };
        let (old_roles, new_roles) = (roles(old), roles(new));
        for (n, inside) in old_roles.difference(&new_roles) {
            if let Ok(sw) = self.sw_if_index(n) {
                vpp!(self.api.nat_feature(sw, *inside, false));
            }
        }
        for r in old.ranges.iter().filter(|r| !new.ranges.contains(r)) {
            vpp!(self.api.nat_range(r.0, r.1, false));
        }
        for r in new.ranges.iter().filter(|r| !old.ranges.contains(r)) {
            vpp!(self.api.nat_range(r.0, r.1, true));
        }
        for (n, inside) in new_roles.difference(&old_roles) {
            let sw = match self.sw_if_index(n) {
                Ok(sw) => sw,
                Err(o) => return Ok(o),
            };
            vpp!(self.api.nat_feature(sw, *inside, true));
        }
        for s in new.statics.iter().filter(|s| !old.statics.contains(s)) {
            vpp!(self.api.nat_static(s, true));
        }
        for i in new
            .identities
            .iter()
            .filter(|i| !old.identities.contains(i))
        {
            vpp!(self.api.nat_identity(i, true));
        }
        Ok(Outcome::Done)
    }

    pub async fn update(
        &mut self,
        key: &ItemKey,
        old: &Item,
        new: &Item,
    ) -> Result<Outcome, StepError> {
        let same_epoch = self.epoch.is_some() && self.sync_epoch() == self.epoch;
        match (key, old, new) {
            (ItemKey::VppNat, Item::VppNat(o), Item::VppNat(n)) if same_epoch => {
                self.update_nat(o, n).await
            }
            (ItemKey::VppInterface(name), Item::Memif(o), Item::Memif(n))
                if same_epoch
                    && o.socket == n.socket
                    && o.id == n.id
                    && o.role == n.role
                    && o.mode == n.mode =>
            {
                let sw = match self.sw_if_index(name) {
                    Ok(sw) => sw,
                    Err(o) => return Ok(o),
                };
                vpp!(self.api.set_flags(sw, n.up));
                Ok(Outcome::Done)
            }
            _ => {
                self.delete(key, old).await?;
                self.create(key, new).await
            }
        }
    }

    /// Removes what `create` made. With VPP unreachable there is nothing to
    /// remove from: a VPP that comes back has lost it anyway, or keeps it
    /// until the agent's first resync against it finds it unowned.
    pub async fn delete(&mut self, key: &ItemKey, old: &Item) -> Result<(), StepError> {
        self.applied.remove(key);
        if self.sync_epoch().is_none() {
            return Ok(());
        }
        let refused = |f: VppFault| match f {
            VppFault::Unreachable(_) => Ok(()),
            f => Err(StepError(f.to_string())),
        };
        let r = match (key, old) {
            (ItemKey::VppInterface(n), Item::Memif(_)) => match self.ifaces.remove(n) {
                Some(sw) => self.api.memif_delete(sw).await,
                None => Ok(()),
            },
            (ItemKey::VppAddress(n, p), Item::Address) => match self.ifaces.get(n) {
                Some(&sw) => self.api.address(sw, *p, false).await,
                None => Ok(()),
            },
            (ItemKey::VppRoute(dst), Item::Route(r)) => match self.ifaces.get(&r.interface) {
                Some(&sw) => self.api.route(*dst, r.via, sw, false).await,
                None => Ok(()),
            },
            // Disabling the plugin drops its whole configuration.
            (ItemKey::VppNat, Item::VppNat(_)) => self.api.nat_enable(0, false).await,
            _ => return Err(StepError(format!("{key}: not a VPP item"))),
        };
        r.or_else(refused)
    }

    /// An item is in place if it was applied in the current connection.
    pub fn in_place(&mut self, key: &ItemKey) -> bool {
        self.sync_epoch();
        self.applied.contains(key)
    }
}
