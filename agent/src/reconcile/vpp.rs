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
    path::PathBuf,
    pin::Pin,
};

use tracing::{info, warn};

use super::{
    backend::{Outcome, StepError},
    item::{Item, ItemKey, Items, MemifSpec, RouteVia},
    vpp_owned::{MemifRef, VppOwned, fingerprint},
};
use crate::config::{
    IdentitySpec, Interface, Ipv4Prefix, MacAddr, MemifMode, MemifRole, Nat44Spec, NatTimeouts,
    StaticSpec,
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
    #[error("{0}")]
    Unreachable(String),
    /// VPP answered with an error: the step failed.
    #[error("{0}")]
    Refused(String),
    /// VPP already has what was to be added.
    #[error("{0}")]
    Exists(String),
    /// VPP no longer has what was to be removed.
    #[error("{0}")]
    Gone(String),
}

/// A memif to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifCreate {
    pub socket_id: u32,
    pub role: MemifRole,
    pub id: u32,
    pub mode: MemifMode,
    pub mac: MacAddr,
}

/// The MAC of a memif, derived from its socket and id. VPP would pick a
/// random one at every create, so after a VPP restart the peers' neighbour
/// entries would point at a MAC that no longer exists and traffic would stop
/// until they expire (seen with VPP 26.06: the client's ARP entry stayed
/// REACHABLE on the old MAC). Locally administered, unicast.
pub fn memif_mac(socket: &str, id: u32) -> MacAddr {
    let mut h = xcnf_common::maps::Fnv1a::default();
    h.write(socket.as_bytes()).write(&id.to_le_bytes());
    let b = h.finish().to_le_bytes();
    MacAddr([0x02, 0xfe, b[0], b[1], b[2], b[3]])
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
    /// Why VPP is unreachable, if it is.
    fn unreachable_reason(&self) -> Option<String>;
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
    /// (socket id, filename) of every memif socket, for adoption.
    fn memif_sockets(&self) -> Call<'_, Vec<(u32, String)>>;
    /// A config socket as VPP names it in [`VppApi::memif_sockets`].
    fn vpp_socket_name(&self, socket: &str) -> String;
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
    /// Socket filename → VPP socket id, for the sockets in use this epoch.
    sockets: BTreeMap<String, u32>,
    /// Logical memif → its socket filename and id, to unregister a socket
    /// with its last memif and to record what is the agent's.
    memif_sockets: BTreeMap<String, MemifRef>,
    /// Logical interface → sw_if_index.
    ifaces: BTreeMap<String, u32>,
    /// Memifs found in VPP rather than created in this epoch: what is on
    /// them may already be there.
    adopted: BTreeSet<String>,
    /// Items applied in this epoch.
    applied: BTreeSet<ItemKey>,
    /// The epoch the state above belongs to.
    epoch: Option<u64>,
    /// What the agent made in VPP, across restarts, and where it is kept.
    owned: VppOwned,
    owned_path: Option<PathBuf>,
    /// Whether what an earlier run made and this config no longer has was
    /// removed yet (once per process, on the first connection).
    swept: bool,
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

/// Why a VPP step stopped before it was done.
enum Halt {
    Fault(VppFault),
    /// Waits for something outside this step (the interface it is on).
    Wait(String),
}

impl From<VppFault> for Halt {
    fn from(f: VppFault) -> Self {
        Self::Fault(f)
    }
}

/// A step's result as the reconciler takes it: VPP unreachable or a missing
/// dependency is Pending, anything else VPP refused is a failed step.
fn outcome(r: Result<(), Halt>) -> Result<Outcome, StepError> {
    match r {
        Ok(()) => Ok(Outcome::Done),
        Err(Halt::Wait(why)) => Ok(Outcome::Pending(why)),
        Err(Halt::Fault(f @ VppFault::Unreachable(_))) => Ok(Outcome::Pending(f.to_string())),
        Err(Halt::Fault(f)) => Err(StepError(f.to_string())),
    }
}

/// An add that finds its object already there (the agent reconnected to a
/// VPP that kept its configuration) has done what it was for.
async fn add(call: Call<'_, ()>) -> R<()> {
    match call.await {
        Err(VppFault::Exists(_)) => Ok(()),
        r => r,
    }
}

/// A delete that finds its object gone has done what it was for.
async fn del(call: Call<'_, ()>) -> R<()> {
    match call.await {
        Err(VppFault::Gone(_)) => Ok(()),
        r => r,
    }
}

impl Vpp {
    /// With `owned_path`, what the agent makes is recorded there, and what
    /// an earlier run recorded is removed when the config no longer has it.
    pub fn new(api: SharedVppApi, owned_path: Option<PathBuf>) -> Self {
        Self {
            api,
            sockets: BTreeMap::new(),
            memif_sockets: BTreeMap::new(),
            ifaces: BTreeMap::new(),
            adopted: BTreeSet::new(),
            applied: BTreeSet::new(),
            epoch: None,
            owned: owned_path
                .as_deref()
                .map(VppOwned::load)
                .unwrap_or_default(),
            owned_path,
            swept: false,
        }
    }

    fn record(&mut self, f: impl FnOnce(&mut VppOwned)) {
        let before = self.owned.clone();
        f(&mut self.owned);
        if self.owned != before
            && let Some(p) = &self.owned_path
        {
            self.owned.save(p);
        }
    }

    fn memif_ref(&self, logical: &str) -> Option<MemifRef> {
        self.memif_sockets.get(logical).cloned()
    }

    /// Before the first pass with VPP connected: removes what an earlier
    /// run made that `items` no longer want. NAT44 changed while the agent
    /// was down is disabled here and made anew by its item (nat44-ed has no
    /// dump of its configuration to diff against).
    pub async fn prepare(&mut self, items: &Items) {
        if self.swept || self.sync_epoch().is_none() {
            return;
        }
        self.swept = true;
        let want = VppOwned::wanted(items);
        if let Err(e) = self.sweep(&want).await {
            warn!(error = %e, "could not remove what an earlier run made in VPP");
        }
    }

    async fn sweep(&mut self, want: &VppOwned) -> R<()> {
        let old = self.owned.clone();
        if old == VppOwned::default() {
            return Ok(());
        }
        let sockets = self.api.memif_sockets().await?;
        let names: BTreeMap<String, u32> = self
            .api
            .interfaces()
            .await?
            .into_iter()
            .map(|(sw, n)| (n, sw))
            .collect();
        let sw_of = |(socket, id): &MemifRef| {
            let vpp_name = self.api.vpp_socket_name(socket);
            let sid = sockets.iter().find(|(_, f)| *f == vpp_name)?.0;
            names.get(&memif_name(sid, *id)).copied()
        };
        if let Some(f) = old.nat
            && want.nat != Some(f)
        {
            info!("removing the NAT44 configuration an earlier run made in VPP");
            del(self.api.nat_enable(0, false)).await?;
        }
        for r @ (dst, len, via, m) in old.routes.difference(&want.routes) {
            if let Some(sw) = sw_of(m) {
                info!(route = %format!("{dst}/{len}"), "removing a VPP route an earlier run made");
                let dst = Ipv4Prefix {
                    addr: *dst,
                    len: *len,
                };
                del(self.api.route(dst, *via, sw, false)).await?;
            }
            self.owned.routes.remove(r);
        }
        for a @ (m, addr, len) in old.addresses.difference(&want.addresses) {
            if want.memifs.contains(m)
                && let Some(sw) = sw_of(m)
            {
                info!(address = %format!("{addr}/{len}"), "removing a VPP address an earlier run made");
                let p = Ipv4Prefix {
                    addr: *addr,
                    len: *len,
                };
                del(self.api.address(sw, p, false)).await?;
            }
            self.owned.addresses.remove(a);
        }
        for m in old.memifs.difference(&want.memifs) {
            if let Some(sw) = sw_of(m) {
                info!(socket = %m.0, id = m.1, "removing a memif an earlier run made");
                del(self.api.memif_delete(sw)).await?;
            }
            let (socket, _) = m;
            let still_used = want.memifs.iter().any(|(s, _)| s == socket);
            let vpp_name = self.api.vpp_socket_name(socket);
            if !still_used && let Some((sid, _)) = sockets.iter().find(|(_, f)| *f == vpp_name) {
                del(self.api.memif_socket(*sid, socket, false)).await?;
            }
            self.owned.memifs.remove(m);
            self.owned.addresses.retain(|(am, ..)| am != m);
        }
        self.owned.nat = old.nat.filter(|f| want.nat == Some(*f));
        if let Some(p) = &self.owned_path {
            self.owned.save(p);
        }
        Ok(())
    }

    /// Forgets what belongs to an earlier connection when a new one is up:
    /// the VPP on the other end may have restarted and lost all of it.
    /// While disconnected nothing is forgotten yet (the same connection
    /// cannot come back, but knowing what was applied until a new one is up
    /// costs nothing).
    fn sync_epoch(&mut self) -> Option<u64> {
        let now = self.api.epoch();
        if let Some(n) = now
            && self.epoch != Some(n)
        {
            if self.epoch.is_some() {
                info!(
                    old = ?self.epoch,
                    new = n,
                    "new VPP connection: re-applying every VPP item"
                );
            }
            self.sockets.clear();
            self.memif_sockets.clear();
            self.ifaces.clear();
            self.adopted.clear();
            self.applied.clear();
            self.epoch = Some(n);
        }
        now
    }

    fn sw_if_index(&self, logical: &str) -> Result<u32, Halt> {
        self.ifaces
            .get(logical)
            .copied()
            .ok_or_else(|| Halt::Wait(format!("waiting for vpp/interface/{logical}")))
    }

    /// The socket's id in VPP: the one it is registered under already (by
    /// an earlier run, or by hand), else [`socket_id`] of its name.
    async fn register_socket(&mut self, path: &str) -> R<u32> {
        if let Some(id) = self.sockets.get(path) {
            return Ok(*id);
        }
        let name = self.api.vpp_socket_name(path);
        let known = self.api.memif_sockets().await?;
        let id = match known.iter().find(|(_, f)| *f == name) {
            Some((id, _)) => *id,
            None => {
                let id = socket_id(path);
                add(self.api.memif_socket(id, path, true)).await?;
                id
            }
        };
        self.sockets.insert(path.to_owned(), id);
        Ok(id)
    }

    pub async fn create(&mut self, key: &ItemKey, item: &Item) -> Result<Outcome, StepError> {
        if self.sync_epoch().is_none() {
            let why = self
                .api
                .unreachable_reason()
                .unwrap_or_else(|| "VPP API socket not reachable yet".into());
            return Ok(Outcome::Pending(why));
        }
        let r = match (key, item) {
            (ItemKey::VppInterface(n), Item::Memif(m)) => self.create_memif(n, m).await,
            (ItemKey::VppAddress(n, p), Item::Address) => self.add_address(n, *p).await,
            (ItemKey::VppRoute(dst), Item::Route(r)) => self.route(*dst, r).await,
            (ItemKey::VppNat, Item::VppNat(p)) => self.create_nat(p).await,
            _ => return Err(StepError(format!("{key}: not a VPP item"))),
        };
        let o = outcome(r)?;
        if o == Outcome::Done {
            self.applied.insert(key.clone());
        }
        Ok(o)
    }

    async fn create_memif(&mut self, logical: &str, m: &MemifSpec) -> Result<(), Halt> {
        if let Some(why) = &m.waiting {
            return Err(Halt::Wait(why.clone()));
        }
        let socket_id = self.register_socket(&m.socket).await?;
        let want = memif_name(socket_id, m.id);
        // Adopt a memif an earlier run made in this VPP (the same socket and
        // id are the same memif): VPP would refuse a second one.
        let existing = self.api.interfaces().await?;
        let (sw, made) = match existing.iter().find(|(_, name)| *name == want) {
            Some((sw, _)) => (*sw, false),
            None => {
                let sw = self
                    .api
                    .memif_create(&MemifCreate {
                        socket_id,
                        role: m.role,
                        id: m.id,
                        mode: m.mode,
                        mac: memif_mac(&m.socket, m.id),
                    })
                    .await?;
                (sw, true)
            }
        };
        if let Err(f) = self.api.set_flags(sw, m.up).await {
            if made {
                // Not half-made: the memif goes with the failed step.
                let _ = self.api.memif_delete(sw).await;
            }
            return Err(f.into());
        }
        self.ifaces.insert(logical.to_owned(), sw);
        if made {
            self.adopted.remove(logical);
        } else {
            self.adopted.insert(logical.to_owned());
        }
        let mref = (m.socket.clone(), m.id);
        self.memif_sockets.insert(logical.to_owned(), mref.clone());
        self.record(|o| {
            o.memifs.insert(mref);
        });
        Ok(())
    }

    /// Deletes a memif, and its socket registration with the last memif on it.
    async fn delete_memif(&mut self, logical: &str) -> R<()> {
        self.adopted.remove(logical);
        if let Some(sw) = self.ifaces.remove(logical) {
            del(self.api.memif_delete(sw)).await?;
        }
        let Some(mref) = self.memif_sockets.remove(logical) else {
            return Ok(());
        };
        self.record(|o| {
            o.memifs.remove(&mref);
            o.addresses.retain(|(m, ..)| *m != mref);
            o.routes.retain(|(.., m)| *m != mref);
        });
        let socket = mref.0;
        if !self.memif_sockets.values().any(|(s, _)| *s == socket)
            && let Some(id) = self.sockets.remove(&socket)
        {
            del(self.api.memif_socket(id, &socket, false)).await?;
        }
        Ok(())
    }

    /// On an adopted memif the address may be there already, and VPP
    /// answers a repeated add with "address in use", the same as for a
    /// clash with another interface. So it is removed first (gone is fine)
    /// and added again: a clash still fails the add.
    async fn add_address(&mut self, logical: &str, p: Ipv4Prefix) -> Result<(), Halt> {
        let sw = self.sw_if_index(logical)?;
        if self.adopted.contains(logical) {
            del(self.api.address(sw, p, false)).await?;
        }
        add(self.api.address(sw, p, true)).await?;
        if let Some(m) = self.memif_ref(logical) {
            self.record(|o| {
                o.addresses.insert((m, p.addr, p.len));
            });
        }
        Ok(())
    }

    async fn route(&mut self, dst: Ipv4Prefix, r: &RouteVia) -> Result<(), Halt> {
        let sw = self.sw_if_index(&r.interface)?;
        add(self.api.route(dst, r.via, sw, true)).await?;
        if let Some(m) = self.memif_ref(&r.interface) {
            self.record(|o| {
                o.routes.insert((dst.addr, dst.len, r.via, m));
            });
        }
        Ok(())
    }

    /// The inside and outside features, by sw_if_index.
    fn roles(&self, p: &VppNatPlan) -> Result<BTreeSet<(u32, bool)>, Halt> {
        let mut out = BTreeSet::new();
        for (names, inside) in [(&p.inside, true), (&p.outside, false)] {
            for n in names {
                out.insert((self.sw_if_index(n)?, inside));
            }
        }
        Ok(out)
    }

    /// Programs nat44-ed from scratch. On failure the plugin is disabled
    /// again, which drops whatever part was made.
    async fn create_nat(&mut self, p: &VppNatPlan) -> Result<(), Halt> {
        let roles = self.roles(p)?;
        add(self.api.nat_enable(p.max_sessions, true)).await?;
        let r = self.program_nat(p, &roles).await;
        if r.is_err() {
            let _ = self.api.nat_enable(0, false).await;
        }
        r.map_err(Halt::from)?;
        self.record(|o| o.nat = Some(fingerprint(p)));
        Ok(())
    }

    async fn program_nat(&self, p: &VppNatPlan, roles: &BTreeSet<(u32, bool)>) -> R<()> {
        self.api.nat_timeouts(&p.timeouts).await?;
        for &(first, last) in &p.ranges {
            add(self.api.nat_range(first, last, true)).await?;
        }
        for &(sw, inside) in roles {
            add(self.api.nat_feature(sw, inside, true)).await?;
        }
        for s in &p.statics {
            add(self.api.nat_static(s, true)).await?;
        }
        for i in &p.identities {
            add(self.api.nat_identity(i, true)).await?;
        }
        Ok(())
    }

    /// A changed NAT plan as the difference: one mapping more is one call,
    /// and existing sessions survive. A new session limit needs the plugin
    /// re-enabled, which drops everything, so then it is made again whole;
    /// so is the old plan when a difference fails halfway, as the step must
    /// not leave a mix of both.
    async fn update_nat(&mut self, old: &VppNatPlan, new: &VppNatPlan) -> Result<(), Halt> {
        let (old_roles, new_roles) = (self.roles(old)?, self.roles(new)?);
        if old.max_sessions != new.max_sessions {
            del(self.api.nat_enable(0, false)).await?;
            return self.create_nat(new).await;
        }
        match self.nat_difference(old, new, &old_roles, &new_roles).await {
            Ok(()) => {
                self.record(|o| o.nat = Some(fingerprint(new)));
                Ok(())
            }
            Err(f @ VppFault::Unreachable(_)) => Err(f.into()),
            Err(f) => {
                let _ = self.api.nat_enable(0, false).await;
                let _ = self.create_nat(old).await;
                Err(f.into())
            }
        }
    }

    async fn nat_difference(
        &self,
        old: &VppNatPlan,
        new: &VppNatPlan,
        old_roles: &BTreeSet<(u32, bool)>,
        new_roles: &BTreeSet<(u32, bool)>,
    ) -> R<()> {
        for s in old.statics.iter().filter(|s| !new.statics.contains(s)) {
            del(self.api.nat_static(s, false)).await?;
        }
        for i in old
            .identities
            .iter()
            .filter(|i| !new.identities.contains(i))
        {
            del(self.api.nat_identity(i, false)).await?;
        }
        for &(sw, inside) in old_roles.difference(new_roles) {
            del(self.api.nat_feature(sw, inside, false)).await?;
        }
        for &(a, b) in old.ranges.iter().filter(|r| !new.ranges.contains(r)) {
            del(self.api.nat_range(a, b, false)).await?;
        }
        if old.timeouts != new.timeouts {
            self.api.nat_timeouts(&new.timeouts).await?;
        }
        for &(a, b) in new.ranges.iter().filter(|r| !old.ranges.contains(r)) {
            add(self.api.nat_range(a, b, true)).await?;
        }
        for &(sw, inside) in new_roles.difference(old_roles) {
            add(self.api.nat_feature(sw, inside, true)).await?;
        }
        for s in new.statics.iter().filter(|s| !old.statics.contains(s)) {
            add(self.api.nat_static(s, true)).await?;
        }
        for i in new
            .identities
            .iter()
            .filter(|i| !old.identities.contains(i))
        {
            add(self.api.nat_identity(i, true)).await?;
        }
        Ok(())
    }

    pub async fn update(
        &mut self,
        key: &ItemKey,
        old: &Item,
        new: &Item,
    ) -> Result<Outcome, StepError> {
        // Only what was applied in this connection can be changed in place;
        // anything else is made anew.
        if self.in_place(key) {
            let r = match (key, old, new) {
                (ItemKey::VppNat, Item::VppNat(o), Item::VppNat(n)) => {
                    Some(self.update_nat(o, n).await)
                }
                (ItemKey::VppInterface(name), Item::Memif(o), Item::Memif(n))
                    if (&o.socket, o.id, o.role, o.mode) == (&n.socket, n.id, n.role, n.mode) =>
                {
                    Some(match self.sw_if_index(name) {
                        Ok(sw) => self.api.set_flags(sw, n.up).await.map_err(Halt::from),
                        Err(h) => Err(h),
                    })
                }
                _ => None,
            };
            if let Some(r) = r {
                let o = outcome(r)?;
                if o != Outcome::Done {
                    self.applied.remove(key);
                }
                return Ok(o);
            }
        }
        self.delete(key, old).await?;
        self.create(key, new).await
    }

    /// Removes what `create` made. With VPP unreachable there is nothing to
    /// remove from: a restarted VPP has lost it, and one that kept it is
    /// brought in line by the first resync after the reconnect.
    pub async fn delete(&mut self, key: &ItemKey, old: &Item) -> Result<(), StepError> {
        let was_applied = self.applied.remove(key);
        if self.sync_epoch().is_none() || !was_applied {
            return Ok(());
        }
        let r = match (key, old) {
            (ItemKey::VppInterface(n), Item::Memif(_)) => self.delete_memif(n).await,
            (ItemKey::VppAddress(n, p), Item::Address) => match self.ifaces.get(n) {
                Some(&sw) => {
                    let r = del(self.api.address(sw, *p, false)).await;
                    if r.is_ok()
                        && let Some(m) = self.memif_ref(n)
                    {
                        self.record(|o| {
                            o.addresses.remove(&(m, p.addr, p.len));
                        });
                    }
                    r
                }
                None => Ok(()),
            },
            (ItemKey::VppRoute(dst), Item::Route(r)) => match self.ifaces.get(&r.interface) {
                Some(&sw) => {
                    let res = del(self.api.route(*dst, r.via, sw, false)).await;
                    if res.is_ok()
                        && let Some(m) = self.memif_ref(&r.interface)
                    {
                        self.record(|o| {
                            o.routes.remove(&(dst.addr, dst.len, r.via, m));
                        });
                    }
                    res
                }
                None => Ok(()),
            },
            // Disabling the plugin drops its whole configuration.
            (ItemKey::VppNat, Item::VppNat(_)) => {
                let r = del(self.api.nat_enable(0, false)).await;
                if r.is_ok() {
                    self.record(|o| o.nat = None);
                }
                r
            }
            _ => return Err(StepError(format!("{key}: not a VPP item"))),
        };
        match r {
            Ok(()) | Err(VppFault::Unreachable(_)) => Ok(()),
            Err(f) => Err(StepError(f.to_string())),
        }
    }

    /// An item is in place if it was applied in the current connection.
    pub fn in_place(&mut self, key: &ItemKey) -> bool {
        self.sync_epoch().is_some() && self.applied.contains(key)
    }
}
