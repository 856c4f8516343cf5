//! The real backend: Linux over rtnetlink and the eBPF datapath.
//!
//! Ownership is explicit, because ligato deleted addresses NSM had put on
//! interfaces it merely used: the agent removes only what it created. Routes
//! carry [`XCNF_RTPROT`]; addresses, neighbours and the original MTU and
//! admin state of links it changed are recorded in a small state file next
//! to the API socket, so a restarted agent still knows what is its own.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::PathBuf,
};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::{
    backend::{Backend, Outcome, StepError},
    item::{AttachSpec, Item, ItemKey, Items, LinkSpec, RouteVia},
    vpp::{SharedVppApi, Vpp},
};
use crate::{
    config::{Ipv4Prefix, MacAddr},
    datapath::{self, Datapath, Pins, Target},
    linux::{
        self, Address, Link, LinuxError, Neighbor, NeighborState, Netlink, Route, XCNF_RTPROT,
    },
    nat::{NatPlan, sweep, tables::SessionMaps},
};

/// Link settings as they were before the agent changed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Original {
    mtu: u32,
    up: bool,
}

/// What the agent created, by host interface name (ifindexes change when
/// an interface is re-created).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Owned {
    addresses: BTreeSet<(String, Ipv4Addr, u8)>,
    neighbors: BTreeSet<(String, Ipv4Addr)>,
    links: BTreeMap<String, Original>,
}

/// How to load the datapath when the config first needs it.
#[derive(Clone, Debug)]
pub struct DatapathSettings {
    pub object: PathBuf,
    pub pins: Pins,
    pub log_level: u8,
}

/// The kernel state one pass works from, read once per pass.
#[derive(Default)]
struct Snapshot {
    links: BTreeMap<String, Link>,
    addresses: BTreeSet<(u32, Ipv4Prefix)>,
    routes: Vec<Route>,
    neighbors: Vec<Neighbor>,
}

/// Called with a freshly loaded datapath.
type OnLoad = Box<dyn FnMut(&mut Datapath) + Send + Sync>;

pub struct System {
    nl: Netlink,
    snap: Snapshot,
    owned: Owned,
    owned_path: Option<PathBuf>,
    settings: DatapathSettings,
    dp: Option<Datapath>,
    /// Logical interface → host interface, as the applied Link items say.
    hosts: BTreeMap<String, String>,
    /// What is attached, to re-attach after a datapath reload.
    targets: BTreeMap<String, Target>,
    nat: Option<NatPlan>,
    sweeper: Option<Sweeper>,
    on_load: Option<OnLoad>,
    /// Opens the VPP connection when the config first has VPP items.
    vpp_connect: Option<VppConnect>,
    vpp: Option<Vpp>,
}

/// The running session sweeper (`nat::sweep::run`).
struct Sweeper {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Sweeper {
    /// Tells it to stop after the sweep in progress, if any.
    fn retire(self) -> tokio::task::JoinHandle<()> {
        let _ = self.stop.send(());
        self.task
    }
}

/// Opens a connection to VPP's binary API; it connects (and reconnects) in
/// the background and reports itself unreachable until it has.
pub type VppConnect = Box<dyn FnMut() -> SharedVppApi + Send + Sync>;

const NO_VPP: &str = "this agent has no VPP API socket configured (--vpp-api-socket)";

fn step(e: impl std::fmt::Display) -> StepError {
    StepError::new(e)
}

impl System {
    pub fn new(nl: Netlink, settings: DatapathSettings, owned_path: Option<PathBuf>) -> Self {
        let owned = owned_path
            .as_ref()
            .and_then(|p| match std::fs::read(p) {
                Ok(b) => match serde_json::from_slice(&b) {
                    Ok(o) => Some(o),
                    Err(e) => {
                        warn!(path = %p.display(), error = %e, "ignoring an unreadable ownership record");
                        None
                    }
                },
                Err(_) => None,
            })
            .unwrap_or_default();
        Self {
            nl,
            snap: Snapshot::default(),
            owned,
            owned_path,
            settings,
            dp: None,
            hosts: BTreeMap::new(),
            targets: BTreeMap::new(),
            nat: None,
            sweeper: None,
            on_load: None,
            vpp_connect: None,
            vpp: None,
        }
    }

    /// How to reach VPP for `backend: vpp` interfaces.
    pub fn with_vpp(&mut self, connect: VppConnect) {
        self.vpp_connect = Some(connect);
    }

    /// Runs `f` on the datapath right after it is loaded (the eBPF log forwarder).
    pub fn on_load(&mut self, f: impl FnMut(&mut Datapath) + Send + Sync + 'static) {
        self.on_load = Some(Box::new(f));
    }

    /// The loaded datapath, if the config needed one.
    pub fn datapath(&self) -> Option<&Datapath> {
        self.dp.as_ref()
    }

    /// Stops the sweeper and detaches (or, with `keep`, leaves everything
    /// pinned so forwarding continues without the agent).
    pub async fn shutdown(mut self, keep: bool) -> Result<(), StepError> {
        self.stop_sweeper().await;
        // Nothing left that is the agent's: no record to keep either.
        if !keep
            && self.owned == Owned::default()
            && let Some(p) = &self.owned_path
        {
            let _ = std::fs::remove_file(p);
        }
        match self.dp.take() {
            Some(dp) => dp.shutdown(keep).map_err(step),
            None if !keep && self.settings.pins.dir().exists() => {
                self.settings.pins.remove_all().map_err(step)
            }
            None => Ok(()),
        }
    }

    fn save_owned(&self) {
        let Some(p) = &self.owned_path else { return };
        let r = serde_json::to_vec_pretty(&self.owned)
            .map_err(std::io::Error::other)
            .and_then(|b| super::record::write_atomically(p, &b));
        if let Err(e) = r {
            warn!(path = %p.display(), error = %e, "cannot record what the agent created; a restarted agent will leave it in place");
        }
    }

    async fn refresh(&mut self) -> Result<(), StepError> {
        let links = self.nl.links().await.map_err(step)?;
        let addresses = self.nl.addresses(None).await.map_err(step)?;
        self.snap = Snapshot {
            links: links.into_iter().map(|l| (l.name.clone(), l)).collect(),
            addresses: addresses
                .into_iter()
                .map(|a: Address| (a.index, a.prefix))
                .collect(),
            routes: self.nl.routes().await.map_err(step)?,
            neighbors: self.nl.neighbors(None).await.map_err(step)?,
        };
        Ok(())
    }

    fn host_of(&self, logical: &str) -> Result<&str, StepError> {
        self.hosts
            .get(logical)
            .map(String::as_str)
            .ok_or_else(|| StepError(format!("interface {logical:?} has no host interface yet")))
    }

    /// Keeps an attached interface's `IFACES` entry in step with its link
    /// (see `Datapath::refresh_iface`); the attachment itself is in place.
    fn refresh_iface(&mut self, link: Link) {
        let (Some(t), Some(dp)) = (self.targets.get_mut(&link.name), self.dp.as_mut()) else {
            return;
        };
        if t.link == link {
            return;
        }
        let old = std::mem::replace(&mut t.link, link);
        match dp.refresh_iface(t) {
            Ok(true) => info!(
                interface = %t.name,
                host_if = %t.link.name,
                peer_redirect = t.iface_flags() != 0,
                "the link changed (MAC, or its peer's namespace): datapath entry updated"
            ),
            Ok(false) => {}
            Err(e) => {
                // Not recorded as done, so the next resync tries again.
                t.link = old;
                warn!(interface = %t.name, error = %e, "cannot update the interface's datapath entry")
            }
        }
    }

    /// The live link of a logical interface, or why it is pending.
    async fn live(&self, logical: &str) -> Result<Result<Link, String>, StepError> {
        let host = self.host_of(logical)?;
        match self.nl.link(host).await {
            Ok(l) => Ok(Ok(l)),
            Err(LinuxError::NoSuchInterface { .. }) => Ok(Err(format!(
                "host interface {host:?} does not exist in the agent's network namespace"
            ))),
            Err(e) => Err(step(e)),
        }
    }

    // ---- datapath ----

    fn ensure_dp(&mut self, nat: Option<&NatPlan>) -> Result<&mut Datapath, StepError> {
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| step(e))?;
        let disabled = NatPlan::disabled();
        let want = datapath::session_table_size(nat.unwrap_or(&disabled), nr_cpus);
        let reload = match &self.dp {
            None => true,
            // A maxSessions change needs session tables of another size, so
            // the programs are loaded again with new ones and swapped into
            // the existing links: forwarding goes on, sessions are dropped.
            Some(dp) => want.max_sessions.is_some() && dp.sessions() != want,
        };
        if reload {
            let restart_sweeper = self.sweeper.is_some();
            if let Some(dp) = self.dp.take() {
                info!(
                    entries = want.entries,
                    "session table size changes: reloading the datapath with new session tables"
                );
                drop(dp);
            }
            let opts = datapath::Options {
                object: self.settings.object.clone(),
                pins: self.settings.pins.clone(),
                log_level: self.settings.log_level,
                sessions: want,
            };
            info!(object = %opts.object.display(), pins = %opts.pins.dir().display(), "loading datapath");
            let mut dp = Datapath::load(&opts).map_err(step)?;
            if let Some(f) = &mut self.on_load {
                f(&mut dp);
            }
            for t in self.targets.values() {
                dp.attach(t).map_err(step)?;
            }
            self.dp = Some(dp);
            if restart_sweeper && let Some(plan) = self.nat.clone() {
                self.restart_sweeper(&plan);
            }
        }
        self.dp
            .as_mut()
            .ok_or_else(|| StepError("datapath not loaded".into()))
    }

    fn restart_sweeper(&mut self, plan: &NatPlan) {
        // Not awaited here (this runs inside a synchronous step): the new
        // sweeper waits for the old one before its first sweep.
        let previous = self.sweeper.take().map(Sweeper::retire);
        match SessionMaps::open(&self.settings.pins) {
            Ok(maps) => {
                let (stop, stopped) = tokio::sync::oneshot::channel();
                info!(
                    interval_ms = sweep::interval(&plan.timeouts).as_millis() as u64,
                    "NAT session sweeper started"
                );
                let task = tokio::spawn(sweep::run(maps, plan.timeouts, stopped, previous));
                self.sweeper = Some(Sweeper { stop, task });
            }
            Err(e) => {
                warn!(error = %e, "cannot open the session tables: NAT sessions will not expire")
            }
        }
    }

    async fn stop_sweeper(&mut self) {
        if let Some(old) = self.sweeper.take() {
            // Let a sweep in progress finish before the pins may go.
            let _ = old.retire().await;
        }
    }

    async fn set_nat(&mut self, plan: &NatPlan) -> Result<Outcome, StepError> {
        self.ensure_dp(Some(plan))?.set_nat(plan).map_err(step)?;
        let timeouts_changed = self.nat.as_ref().map(|p| p.timeouts) != Some(plan.timeouts);
        self.nat = Some(plan.clone());
        if timeouts_changed || self.sweeper.is_none() {
            self.restart_sweeper(plan);
        }
        Ok(Outcome::Done)
    }

    async fn attach(&mut self, logical: &str, a: &AttachSpec) -> Result<Outcome, StepError> {
        let link = match self.nl.link(&a.host_if_name).await {
            Ok(l) => l,
            Err(LinuxError::NoSuchInterface { .. }) => {
                return Ok(Outcome::Pending(format!(
                    "host interface {:?} does not exist in the agent's network namespace",
                    a.host_if_name
                )));
            }
            Err(e) => return Err(step(e)),
        };
        let (hook, why) = datapath::choose_hook(&link, a.datapath.as_ref());
        info!(interface = %logical, host_if = %link.name, kind = link.kind.as_deref().unwrap_or("device"), %hook, why, "hook chosen");
        if link.is_veth() && hook == datapath::HookChoice::Xdp(datapath::XdpAttach::Native) {
            warn!(
                interface = %logical,
                host_if = %link.name,
                "native XDP on veth: the peer needs GRO on (or its own XDP program) to receive redirected frames, \
                 and senders need TX checksum offload off, because XDP frames lose CHECKSUM_PARTIAL; hook auto uses TC here"
            );
        }
        match linux::ipv4_forwarding(&link.name) {
            Ok(true) => {}
            Ok(false) => warn!(
                interface = %logical,
                host_if = %link.name,
                "IPv4 forwarding is off on this interface (net.ipv4.conf.{}.forwarding=0): \
                 traffic through the CNF is dropped; enable it in the pod's network namespace \
                 (pod securityContext.sysctls net.ipv4.ip_forward=1)",
                link.name
            ),
            Err(e) => {
                warn!(interface = %logical, error = %e, "cannot tell whether IPv4 forwarding is on")
            }
        }
        let t = Target {
            name: logical.to_owned(),
            link,
            hook,
            role: a.role,
            peer_redirect: a.datapath.and_then(|d| d.peer_redirect).unwrap_or(true),
        };
        let nat = self.nat.clone();
        let dp = self.ensure_dp(nat.as_ref())?;
        // A re-created interface or a hook change: the old attachment goes first.
        if let Some(old) = dp.attachment(&a.host_if_name)
            && (old.ifindex != t.link.index || old.hook.tag() != t.hook.tag())
        {
            dp.detach(&a.host_if_name);
        }
        dp.attach(&t).map_err(step)?;
        self.targets.insert(a.host_if_name.clone(), t);
        Ok(Outcome::Done)
    }

    // ---- links ----

    async fn apply_link(&mut self, logical: &str, l: &LinkSpec) -> Result<Outcome, StepError> {
        if let Some(reason) = &l.waiting {
            self.hosts.remove(logical);
            return Ok(Outcome::Pending(reason.clone()));
        }
        self.hosts
            .insert(logical.to_owned(), l.host_if_name.clone());
        let link = match self.live(logical).await? {
            Ok(link) => link,
            Err(reason) => return Ok(Outcome::Pending(reason)),
        };
        let needs_change = l.mtu.is_some_and(|m| m != link.mtu) || l.up != link.up;
        if needs_change && !self.owned.links.contains_key(&link.name) {
            self.owned.links.insert(
                link.name.clone(),
                Original {
                    mtu: link.mtu,
                    up: link.up,
                },
            );
            self.save_owned();
        }
        if let Some(m) = l.mtu
            && m != link.mtu
        {
            self.nl.set_mtu(link.index, m).await.map_err(step)?;
        }
        if l.up != link.up {
            self.nl.set_up(link.index, l.up).await.map_err(step)?;
        }
        Ok(Outcome::Done)
    }

    /// Puts back the MTU and admin state the link had before the agent.
    async fn restore_link(&mut self, host: &str) -> Result<(), StepError> {
        let Some(orig) = self.owned.links.get(host).copied() else {
            return Ok(());
        };
        match self.nl.link(host).await {
            Ok(link) => {
                if link.mtu != orig.mtu {
                    self.nl.set_mtu(link.index, orig.mtu).await.map_err(step)?;
                }
                if link.up != orig.up {
                    self.nl.set_up(link.index, orig.up).await.map_err(step)?;
                }
            }
            Err(LinuxError::NoSuchInterface { .. }) => {}
            Err(e) => return Err(step(e)),
        }
        self.owned.links.remove(host);
        self.save_owned();
        Ok(())
    }

    // ---- addresses, routes, neighbours ----

    async fn add_address(&mut self, logical: &str, p: Ipv4Prefix) -> Result<Outcome, StepError> {
        let link = match self.live(logical).await? {
            Ok(l) => l,
            Err(reason) => return Ok(Outcome::Pending(reason)),
        };
        match self.nl.add_address(link.index, p).await {
            Ok(()) => {
                self.owned.addresses.insert((link.name, p.addr, p.len));
                self.save_owned();
                Ok(Outcome::Done)
            }
            // Already there, put by someone else (NSM): used, never removed.
            Err(LinuxError::Exists { .. }) => {
                debug!(address = %p, host_if = %link.name, "address already present, not owned");
                Ok(Outcome::Done)
            }
            Err(e) => Err(step(e)),
        }
    }

    async fn del_address(&mut self, logical: &str, p: Ipv4Prefix) -> Result<(), StepError> {
        let host = self.host_of(logical)?.to_owned();
        if !self
            .owned
            .addresses
            .contains(&(host.clone(), p.addr, p.len))
        {
            debug!(address = %p, host_if = %host, "address not created by the agent, leaving it");
            return Ok(());
        }
        match self.nl.link(&host).await {
            Ok(link) => match self.nl.del_address(link.index, p).await {
                Ok(()) | Err(LinuxError::NotFound { .. } | LinuxError::NoSuchInterface { .. }) => {}
                Err(e) => return Err(step(e)),
            },
            Err(LinuxError::NoSuchInterface { .. }) => {}
            Err(e) => return Err(step(e)),
        }
        self.owned.addresses.remove(&(host, p.addr, p.len));
        self.save_owned();
        Ok(())
    }

    async fn route(
        &mut self,
        dst: Ipv4Prefix,
        metric: u32,
        r: &RouteVia,
        replace: bool,
    ) -> Result<Outcome, StepError> {
        let link = match self.live(&r.interface).await? {
            Ok(l) => l,
            Err(reason) => return Ok(Outcome::Pending(reason)),
        };
        let route = Route::xcnf(dst.addr, dst.len, r.via, Some(link.index), metric);
        let res = if replace {
            self.nl.replace_route(&route).await
        } else {
            self.nl.add_route(&route).await
        };
        match res {
            Ok(()) => Ok(Outcome::Done),
            Err(LinuxError::Unreachable { .. }) => Ok(Outcome::Pending(format!(
                "gateway {} is not on a connected subnet of {}",
                r.via.map(|v| v.to_string()).unwrap_or_default(),
                r.interface
            ))),
            Err(LinuxError::Exists { .. }) => {
                let theirs = self
                    .nl
                    .routes()
                    .await
                    .map_err(step)?
                    .into_iter()
                    .find(|x| x.dst == route.dst && x.len == route.len && x.metric == metric);
                match theirs {
                    Some(x) if x.protocol == XCNF_RTPROT => {
                        self.nl.replace_route(&route).await.map_err(step)?;
                        Ok(Outcome::Done)
                    }
                    Some(x) if x.via == route.via && x.oif == route.oif => Ok(Outcome::Done),
                    _ => Err(StepError(format!(
                        "{route}: a route to {dst} with metric {metric} already exists and was not created by xcnf; \
                         remove it or give this route another metric"
                    ))),
                }
            }
            Err(e) => Err(step(e)),
        }
    }

    async fn del_route(&mut self, dst: Ipv4Prefix, metric: u32) -> Result<(), StepError> {
        let mut route = Route::xcnf(dst.addr, dst.len, None, None, metric);
        route.protocol = XCNF_RTPROT;
        match self.nl.del_route(&route).await {
            Ok(()) | Err(LinuxError::NotFound { .. }) => Ok(()),
            Err(e) => Err(step(e)),
        }
    }

    async fn set_neighbor(
        &mut self,
        logical: &str,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<Outcome, StepError> {
        let link = match self.live(logical).await? {
            Ok(l) => l,
            Err(reason) => return Ok(Outcome::Pending(reason)),
        };
        self.nl
            .set_neighbor(link.index, ip, mac.0)
            .await
            .map_err(step)?;
        self.owned.neighbors.insert((link.name, ip));
        self.save_owned();
        Ok(Outcome::Done)
    }

    async fn del_neighbor(&mut self, host: &str, ip: Ipv4Addr) -> Result<(), StepError> {
        if !self.owned.neighbors.contains(&(host.to_owned(), ip)) {
            return Ok(());
        }
        match self.nl.link(host).await {
            Ok(link) => match self.nl.del_neighbor(link.index, ip).await {
                Ok(()) | Err(LinuxError::NotFound { .. } | LinuxError::NoSuchInterface { .. }) => {}
                Err(e) => return Err(step(e)),
            },
            Err(LinuxError::NoSuchInterface { .. }) => {}
            Err(e) => return Err(step(e)),
        }
        self.owned.neighbors.remove(&(host.to_owned(), ip));
        self.save_owned();
        Ok(())
    }
}

impl Backend for System {
    async fn prepare(&mut self, items: &Items) -> Result<(), StepError> {
        self.refresh().await?;
        // The VPP connection starts with the first VPP item, like the
        // datapath: a CNF without memifs never looks for VPP.
        if self.vpp.is_none()
            && items.keys().any(ItemKey::is_vpp)
            && let Some(connect) = &mut self.vpp_connect
        {
            let owned = self
                .owned_path
                .as_deref()
                .map(super::vpp_owned::path_next_to);
            self.vpp = Some(Vpp::new(connect(), owned));
        }
        if let Some(v) = &mut self.vpp {
            v.prepare(items).await;
        }
        let nat = items.get(&ItemKey::Nat).and_then(|i| match i {
            Item::Nat(p) => Some(p.as_ref().clone()),
            _ => None,
        });
        let needs_dp = items
            .keys()
            .any(|k| matches!(k, ItemKey::Nat | ItemKey::Attach(_)));
        // Loaded here only if it is not yet: a running datapath is resized
        // for a new maxSessions by the nat44 step itself (`set_nat`), inside
        // the transaction, so a config that fails in an earlier step and is
        // rolled back has not dropped every session on the way.
        if needs_dp && self.dp.is_none() {
            self.ensure_dp(nat.as_ref())?;
        }
        Ok(())
    }

    async fn create(&mut self, key: &ItemKey, item: &Item) -> Result<Outcome, StepError> {
        if key.is_vpp() {
            return match &mut self.vpp {
                Some(v) => v.create(key, item).await,
                None => Ok(Outcome::Pending(NO_VPP.into())),
            };
        }
        match (key, item) {
            (ItemKey::Link(n), Item::Link(l)) => self.apply_link(n, l).await,
            (ItemKey::Address(n, p), Item::Address) => self.add_address(n, *p).await,
            (ItemKey::Route { dst, metric }, Item::Route(r)) => {
                self.route(*dst, *metric, r, false).await
            }
            (ItemKey::Neighbor(n, ip), Item::Neighbor { mac }) => {
                self.set_neighbor(n, *ip, *mac).await
            }
            (ItemKey::Nat, Item::Nat(plan)) => self.set_nat(plan).await,
            (ItemKey::Attach(n), Item::Attach(a)) => self.attach(n, a).await,
            _ => Err(StepError(format!("{key}: item of another kind"))),
        }
    }

    async fn update(
        &mut self,
        key: &ItemKey,
        old: &Item,
        new: &Item,
    ) -> Result<Outcome, StepError> {
        if key.is_vpp() {
            return match &mut self.vpp {
                Some(v) => v.update(key, old, new).await,
                None => Ok(Outcome::Pending(NO_VPP.into())),
            };
        }
        match (key, old, new) {
            (ItemKey::Link(n), Item::Link(o), Item::Link(l)) => {
                if o.host_if_name != l.host_if_name {
                    self.restore_link(&o.host_if_name).await?;
                } else if o.mtu.is_some() && l.mtu.is_none() {
                    // The MTU is no longer managed: put the original back.
                    if let Some(orig) = self.owned.links.get(&l.host_if_name).copied()
                        && let Ok(link) = self.nl.link(&l.host_if_name).await
                        && link.mtu != orig.mtu
                    {
                        self.nl.set_mtu(link.index, orig.mtu).await.map_err(step)?;
                    }
                }
                self.apply_link(n, l).await
            }
            (ItemKey::Route { dst, metric }, _, Item::Route(r)) => {
                self.route(*dst, *metric, r, true).await
            }
            (ItemKey::Attach(n), Item::Attach(o), Item::Attach(a)) => {
                if o.host_if_name != a.host_if_name
                    && let Some(dp) = &mut self.dp
                {
                    dp.detach(&o.host_if_name);
                    self.targets.remove(&o.host_if_name);
                }
                self.attach(n, a).await
            }
            _ => self.create(key, new).await,
        }
    }

    async fn delete(&mut self, key: &ItemKey, old: &Item) -> Result<(), StepError> {
        if key.is_vpp() {
            return match &mut self.vpp {
                Some(v) => v.delete(key, old).await,
                None => Ok(()),
            };
        }
        match (key, old) {
            (ItemKey::Link(n), Item::Link(l)) => {
                self.restore_link(&l.host_if_name).await?;
                self.hosts.remove(n);
                Ok(())
            }
            (ItemKey::Address(n, p), _) => self.del_address(n, *p).await,
            (ItemKey::Route { dst, metric }, _) => self.del_route(*dst, *metric).await,
            (ItemKey::Neighbor(n, ip), _) => {
                let host = self.host_of(n)?.to_owned();
                self.del_neighbor(&host, *ip).await
            }
            (ItemKey::Nat, _) => {
                if let Some(dp) = &mut self.dp {
                    dp.set_nat(&NatPlan::disabled()).map_err(step)?;
                }
                self.nat = None;
                self.stop_sweeper().await;
                Ok(())
            }
            (ItemKey::Attach(_), Item::Attach(a)) => {
                if let Some(dp) = &mut self.dp {
                    dp.detach(&a.host_if_name);
                }
                self.targets.remove(&a.host_if_name);
                Ok(())
            }
            _ => Err(StepError(format!("{key}: item of another kind"))),
        }
    }

    async fn in_place(&mut self, key: &ItemKey, item: &Item) -> Result<bool, StepError> {
        if key.is_vpp() {
            return Ok(self.vpp.as_mut().is_some_and(|v| v.in_place(key)));
        }
        let index = |s: &Self, logical: &str| {
            s.hosts
                .get(logical)
                .and_then(|h| s.snap.links.get(h))
                .map(|l| l.index)
        };
        Ok(match (key, item) {
            (ItemKey::Link(_), Item::Link(l)) => self
                .snap
                .links
                .get(&l.host_if_name)
                .is_some_and(|k| k.up == l.up && l.mtu.is_none_or(|m| m == k.mtu)),
            (ItemKey::Address(n, p), _) => {
                index(self, n).is_some_and(|i| self.snap.addresses.contains(&(i, *p)))
            }
            (ItemKey::Route { dst, metric }, Item::Route(r)) => {
                let oif = index(self, &r.interface);
                self.snap.routes.iter().any(|x| {
                    x.dst == dst.addr
                        && x.len == dst.len
                        && x.metric == *metric
                        && x.via == r.via
                        && x.oif == oif
                })
            }
            (ItemKey::Neighbor(n, ip), Item::Neighbor { mac }) => {
                let i = index(self, n);
                self.snap.neighbors.iter().any(|x| {
                    Some(x.index) == i
                        && x.ip == *ip
                        && x.mac == Some(mac.0)
                        && x.state == NeighborState::Permanent
                })
            }
            (ItemKey::Attach(_), Item::Attach(a)) => {
                let live = self.snap.links.get(&a.host_if_name).cloned();
                let attached = self
                    .dp
                    .as_ref()
                    .and_then(|d| d.attachment(&a.host_if_name))
                    .is_some_and(|at| Some(at.ifindex) == live.as_ref().map(|l| l.index));
                if attached && let Some(link) = live {
                    self.refresh_iface(link);
                }
                attached
            }
            _ => true,
        })
    }

    async fn remove_leftovers(&mut self, items: &Items) -> Result<(), StepError> {
        // Routes are marked; the rest comes from the ownership record.
        let wanted_routes: BTreeSet<(Ipv4Addr, u8, u32)> = items
            .keys()
            .filter_map(|k| match k {
                ItemKey::Route { dst, metric } => Some((dst.addr, dst.len, *metric)),
                _ => None,
            })
            .collect();
        for r in self.nl.routes().await.map_err(step)? {
            if r.protocol == XCNF_RTPROT && !wanted_routes.contains(&(r.dst, r.len, r.metric)) {
                info!(route = %r, "removing a route an earlier run created");
                if let Err(e) = self.nl.del_route(&r).await {
                    warn!(route = %r, error = %e, "cannot remove");
                }
            }
        }
        let host_of = |n: &str| self.hosts.get(n).cloned();
        let wanted_addrs: BTreeSet<(String, Ipv4Addr, u8)> = items
            .keys()
            .filter_map(|k| match k {
                ItemKey::Address(n, p) => host_of(n).map(|h| (h, p.addr, p.len)),
                _ => None,
            })
            .collect();
        let wanted_neigh: BTreeSet<(String, Ipv4Addr)> = items
            .keys()
            .filter_map(|k| match k {
                ItemKey::Neighbor(n, ip) => host_of(n).map(|h| (h, *ip)),
                _ => None,
            })
            .collect();
        let wanted_hosts: BTreeSet<String> = items
            .values()
            .filter_map(|i| match i {
                Item::Link(l) => Some(l.host_if_name.clone()),
                _ => None,
            })
            .collect();
        for (host, addr, len) in self.owned.addresses.clone() {
            if wanted_addrs.contains(&(host.clone(), addr, len)) {
                continue;
            }
            info!(address = %format!("{addr}/{len}"), host_if = %host, "removing an address an earlier run created");
            if let Ok(link) = self.nl.link(&host).await
                && let Err(e) = self
                    .nl
                    .del_address(link.index, Ipv4Prefix { addr, len })
                    .await
                && !matches!(e, LinuxError::NotFound { .. })
            {
                warn!(error = %e, "cannot remove");
                continue;
            }
            self.owned.addresses.remove(&(host, addr, len));
        }
        for (host, ip) in self.owned.neighbors.clone() {
            if !wanted_neigh.contains(&(host.clone(), ip)) {
                info!(neighbor = %ip, host_if = %host, "removing a neighbour an earlier run created");
                if let Err(e) = self.del_neighbor(&host, ip).await {
                    warn!(error = %e, "cannot remove");
                }
            }
        }
        for host in self.owned.links.keys().cloned().collect::<Vec<_>>() {
            if !wanted_hosts.contains(&host)
                && let Err(e) = self.restore_link(&host).await
            {
                warn!(host_if = %host, error = %e, "cannot restore the link's original settings");
            }
        }
        self.save_owned();
        let attached: BTreeSet<String> = items
            .values()
            .filter_map(|i| match i {
                Item::Attach(a) => Some(a.host_if_name.clone()),
                _ => None,
            })
            .collect();
        match &mut self.dp {
            Some(dp) => dp.remove_stale(&attached).map_err(step)?,
            None if self.settings.pins.dir().exists() => {
                info!(pins = %self.settings.pins.dir().display(), "no datapath in the config: removing the pins an earlier run kept");
                self.settings.pins.remove_all().map_err(step)?;
            }
            None => {}
        }
        Ok(())
    }
}
