//! The eBPF datapath: finding, loading and pinning the object, attaching it to
//! interfaces and taking it down again.
//!
//! Pins live under `<bpffs>/xcnf/<instance>/`: the maps by their pin names and
//! the links under `links/`. Pinned links keep forwarding alive when the agent
//! exits with `--keep-datapath` or is killed; the next start adopts them by
//! swapping the program inside the existing link, so traffic never stops.

mod bpffs;
mod hook;
mod nat;
mod object;
pub mod route_ctl;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{DevMapHash, HashMap, MapError, MapInfo, PerCpuArray, PerCpuValues},
    programs::{
        ProgramError, SchedClassifier, TcAttachType, Xdp,
        links::{FdLink, LinkError, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};
pub use bpffs::{BPFFS_DEFAULT, Pins};
pub use hook::{HookChoice, XdpAttach, choose_hook};
pub use object::find_object;
use tracing::{debug, info, warn};
use xcnf_common::{IfCounters, IfaceConfig, maps};

use crate::{linux::Link, nat::NatPlan};

/// Errors from the datapath. Each names the file, map or interface involved.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "eBPF object not found (looked for {}): build it with `cargo xtask build-ebpf --release`, or pass --ebpf-object",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    ObjectNotFound { searched: Vec<PathBuf> },
    #[error("eBPF object {}: {source} (build it with `cargo xtask build-ebpf --release`)", .path.display())]
    ObjectUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bpffs at {}: {message}", .path.display())]
    Bpffs { path: PathBuf, message: String },
    #[error("pin directory {}: {source}", .path.display())]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pinned map {} is incompatible with this build ({reason}); remove it with `xcnf-agent --cleanup --instance <name>`",
        .path.display()
    )]
    IncompatiblePin { path: PathBuf, reason: String },
    #[error(
        "permission denied {what}: the agent needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (or root): {source}"
    )]
    Permission {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("loading eBPF object {}: {source}", .path.display())]
    Load {
        path: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error(
        "eBPF object has no {what} (stale object? rebuild with `cargo xtask build-ebpf --release`)"
    )]
    MissingInObject { what: String },
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("interface {ifname}: attaching {hook}: {source}")]
    Attach {
        ifname: String,
        hook: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map TX_PORTS: {0}")]
    TxPorts(#[source] aya::maps::xdp::XdpMapError),
    #[error("cannot count the possible CPUs: {0}")]
    Cpus(#[source] std::io::Error),
    #[error("map COUNTERS: all {} counter slots are taken", maps::MAX_IFACES)]
    NoCounterSlot,
    #[error("link pin {}: {message}", .path.display())]
    Link { path: PathBuf, message: String },
}

/// How the agent should load the datapath.
#[derive(Clone, Debug)]
pub struct Options {
    pub object: PathBuf,
    pub pins: Pins,
    /// aya-log level written into the object's `AYA_LOG_LEVEL` global before
    /// load: 0 (off) lets the verifier remove every log statement.
    pub log_level: u8,
    /// Capacity of the session tables, fixed for the life of the maps.
    pub sessions: SessionTableSize,
}

/// An interface to attach to, with the hook already chosen.
#[derive(Clone, Debug)]
pub struct Target {
    /// The logical name from the config, for logs.
    pub name: String,
    pub link: Link,
    pub hook: HookChoice,
    /// `xcnf_common::nat::role` of the interface.
    pub role: u8,
    /// The config allows redirects to the interface's peer
    /// (`datapath.peerRedirect`, default true); they happen only where
    /// [`Link::can_redirect_to_peer`] also holds.
    pub peer_redirect: bool,
}

impl Target {
    /// `IfaceConfig::flags` for this interface as its link is now.
    pub fn iface_flags(&self) -> u8 {
        if self.peer_redirect && self.link.can_redirect_to_peer() {
            xcnf_common::iface::flags::PEER_REDIRECT
        } else {
            0
        }
    }
}

/// A live attachment, owned through its link pin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub ifindex: u32,
    pub hook: HookChoice,
    pin: PathBuf,
}

/// The loaded datapath and what it is attached to.
pub struct Datapath {
    ebpf: Ebpf,
    pins: Pins,
    sessions: SessionTableSize,
    attached: BTreeMap<String, Attachment>,
    /// Programs verified by an earlier start, reused from their pins.
    tc_pinned: Option<SchedClassifier>,
    xdp_pinned: Option<Xdp>,
    /// Fingerprint of the object, log level, session table size and map
    /// layout: a pinned program is reused only under the same key.
    prog_key: u64,
    /// What the NAT tables hold, as this process last wrote them. Read from
    /// the maps once (adopting a previous run's), then kept, because reading
    /// 20 000 entries back costs one syscall each and made a one-mapping
    /// change take 80 ms. Only this process writes these maps.
    nat: Option<nat::NatTables>,
}

impl Datapath {
    /// Loads the object with its maps pinned (adopting pins of a previous
    /// run, so sessions and counters survive a restart), attaching nothing.
    ///
    /// A pinned map whose layout differs from this build's is never reused:
    /// it is removed and created anew, and the log says what was lost. If
    /// loading fails and the pin directory did not exist before, it is
    /// removed again.
    pub fn load(opts: &Options) -> Result<Self, DatapathError> {
        let existed = opts.pins.dir().exists();
        let result = Self::try_load(opts);
        if result.is_err()
            && !existed
            && let Err(e) = opts.pins.remove_all()
        {
            warn!(error = %e, "could not remove pins after a failed load");
        }
        result
    }

    fn try_load(opts: &Options) -> Result<Self, DatapathError> {
        bpffs::ensure_mounted(opts.pins.root())?;
        opts.pins.create()?;
        let lru = opts.sessions;
        let fingerprint = maps::layout_fingerprint();
        let marker = opts.pins.layout_marker(fingerprint);
        let same_layout = marker.exists();
        for m in maps::ALL {
            let pin = opts.pins.map(m);
            if !same_layout && pin.exists() {
                recreate_pin(
                    &pin,
                    m,
                    "the pins were made by a build with another map layout".into(),
                )?;
            }
            check_pinned_map(&pin, m, lru)?;
        }
        // A pinned program refers to the maps it was loaded with: reusable
        // only if every map it will run with is already pinned (none is
        // about to be created anew by the load below).
        // Read once: hashed for the program pins and handed to the loader.
        let object =
            std::fs::read(&opts.object).map_err(|source| DatapathError::ObjectUnreadable {
                path: opts.object.clone(),
                source,
            })?;
        let prog_key = program_key(&object, opts, fingerprint);
        if maps::ALL.iter().any(|m| !opts.pins.map(*m).exists()) {
            let _ = std::fs::remove_dir_all(opts.pins.progs_dir());
        }

        let mut loader = EbpfLoader::new();
        for m in maps::ALL {
            loader.map_pin_path(m.object, opts.pins.map(m));
            if m.max_entries == 0 {
                loader.map_max_entries(m.object, lru.entries);
            }
        }
        loader.override_global(aya_log::LEVEL, &opts.log_level, true);
        let ebpf = loader.load(&object).map_err(|source| {
            if is_permission(&source) {
                DatapathError::Permission {
                    what: format!("loading eBPF object {}", opts.object.display()),
                    source: Box::new(source),
                }
            } else {
                DatapathError::Load {
                    path: opts.object.clone(),
                    source: Box::new(source),
                }
            }
        })?;
        if !same_layout {
            for old in opts.pins.layout_markers() {
                let _ = std::fs::remove_dir(old);
            }
            std::fs::create_dir_all(&marker).map_err(|source| DatapathError::PinDir {
                path: marker.clone(),
                source,
            })?;
        }
        // Programs are verified when an interface first needs them (see
        // `program`): the verifier is most of the start-up time, and a
        // config of veths only never needs the XDP program.
        let dp = Self {
            ebpf,
            pins: opts.pins.clone(),
            sessions: lru,
            attached: BTreeMap::new(),
            tc_pinned: None,
            xdp_pinned: None,
            prog_key,
            nat: None,
        };
        // Adopted sessions may have cached routes while no agent watched.
        dp.routes_changed();
        Ok(dp)
    }

    /// The session table capacity the maps were created with.
    pub fn sessions(&self) -> SessionTableSize {
        self.sessions
    }

    /// Makes the NAT tables hold `plan`, writing only what differs, so the
    /// sessions and every unchanged mapping stay untouched. All or nothing.
    pub fn set_nat(&mut self, plan: &NatPlan) -> Result<(), DatapathError> {
        let old = match self.nat.take() {
            Some(t) => t,
            None => self.read_nat()?,
        };
        let new = nat::NatTables::from_plan(plan);
        if let Err(e) = self.write_nat(&new, &old) {
            self.restore_nat(&old, &new);
            // Restoring is best effort: read what is really there next time.
            return Err(e);
        }
        self.nat = Some(new);
        Ok(())
    }

    /// Registers the target in the maps and attaches (or adopts) its link.
    /// All or nothing: on failure the maps and links are as they were.
    pub fn attach(&mut self, t: &Target) -> Result<(), DatapathError> {
        let mut undo = Undo::default();
        let r = self.try_attach(t, &mut undo);
        if r.is_err() {
            self.rollback(&undo);
        }
        self.routes_changed();
        r
    }

    /// Rewrites an attached interface's `IFACES` entry (MAC and flags) for
    /// its link as it is now, leaving the attachment alone: both can change
    /// under a running agent. A stale MAC makes XDP take frames for the new
    /// one as not for the CNF; a veth whose peer moved into the program's
    /// own namespace must lose `PEER_REDIRECT`, since `bpf_redirect_peer`
    /// drops packets for such a peer. Returns whether anything changed.
    pub fn refresh_iface(&mut self, t: &Target) -> Result<bool, DatapathError> {
        let changed = {
            let mut ifaces: HashMap<_, u32, IfaceConfig> = self.map_mut(maps::IFACES)?;
            let ifindex = t.link.index;
            match ifaces.get(&ifindex, 0) {
                Ok(old) if old.mac != t.link.mac || old.flags != t.iface_flags() => {
                    let cfg = IfaceConfig {
                        mac: t.link.mac,
                        flags: t.iface_flags(),
                        ..old
                    };
                    ifaces
                        .insert(ifindex, cfg, 0)
                        .map_err(|source| map_err(maps::IFACES, source))?;
                    true
                }
                _ => false,
            }
        };
        if changed {
            // The programs' per-CPU interface caches must drop the old entry.
            self.routes_changed();
        }
        Ok(changed)
    }

    /// Tells the datapath's route cache that FIB answers may have changed
    /// (see `route_ctl`). Failing only delays the change by the cache's
    /// age bound, so it is logged, not returned.
    pub fn routes_changed(&self) {
        if let Err(e) = route_ctl::bump(&self.pins) {
            warn!(error = %e, "cannot invalidate the datapath's cached routes; they expire within a second");
        }
    }

    fn try_attach(&mut self, t: &Target, undo: &mut Undo) -> Result<(), DatapathError> {
        let nr_cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Cpus(e))?;
        let ifindex = t.link.index;
        // Redirect target first: an interface in IFACES is a valid
        // egress for the programs, so it must already be in TX_PORTS.
        {
            let mut tx: DevMapHash<_> = self.map_mut(maps::TX_PORTS)?;
            tx.insert(ifindex, ifindex, None, 0)
                .map_err(DatapathError::TxPorts)?;
        }
        let (known, slot) = {
            let ifaces: HashMap<_, u32, IfaceConfig> = self.map_mut(maps::IFACES)?;
            match ifaces.get(&ifindex, 0) {
                // Kept across restarts and role changes, and so are the counts.
                Ok(old) => (Some(old), old.slot),
                Err(_) => {
                    let used = ifaces.iter().filter_map(Result::ok).map(|(_, c)| c.slot);
                    let slot = xcnf_common::free_slot(used).ok_or(DatapathError::NoCounterSlot)?;
                    (None, slot)
                }
            }
        };
        if known.is_none() {
            // A new interface starts from zero, whatever the slot's last
            // holder counted; before IFACES points the programs at it.
            let zero = PerCpuValues::try_from(vec![IfCounters::default(); nr_cpus])
                .map_err(DatapathError::Cpus)?;
            let mut counters: PerCpuArray<_, IfCounters> = self.map_mut(maps::COUNTERS)?;
            counters
                .set(slot, zero, 0)
                .map_err(|source| map_err(maps::COUNTERS, source))?;
        }
        {
            let mut ifaces: HashMap<_, u32, IfaceConfig> = self.map_mut(maps::IFACES)?;
            let cfg = IfaceConfig {
                mac: t.link.mac,
                role: t.role,
                flags: t.iface_flags(),
                slot,
            };
            ifaces
                .insert(ifindex, cfg, 0)
                .map_err(|source| map_err(maps::IFACES, source))?;
            match known {
                None => undo.written.push(ifindex),
                Some(old) if old != cfg => undo.changed.push((ifindex, old)),
                Some(_) => {}
            }
        }
        let before = self.attached.get(&t.link.name).cloned();
        let adopted = self.attach_link(t)?;
        if !adopted && before.is_none() {
            undo.fresh.push(t.link.name.clone());
        }
        Ok(())
    }

    /// What is attached to this host interface, if anything.
    pub fn attachment(&self, host_if: &str) -> Option<&Attachment> {
        self.attached.get(host_if)
    }

    /// Detaches the program from a host interface and forgets its map
    /// entries. Nothing attached is not an error.
    pub fn detach(&mut self, host_if: &str) {
        let a = self.attached.remove(host_if);
        for hook in [HookChoice::Tc, HookChoice::Xdp(XdpAttach::Native)] {
            let pin = self.pins.link(host_if, hook);
            if pin.exists() {
                unpin_link(&pin);
            }
        }
        if let Some(a) = a {
            info!(host_if, ifindex = a.ifindex, "datapath detached");
            self.forget_ifindex(a.ifindex);
            self.routes_changed();
        }
    }

    /// Attaches the target's program, adopting a pinned link of the same hook
    /// if one exists. Returns whether an existing link was adopted.
    fn attach_link(&mut self, t: &Target) -> Result<bool, DatapathError> {
        let ifname = &t.link.name;
        let pin = self.pins.link(ifname, t.hook);
        let other = self.pins.link(ifname, t.hook.other());
        let mut adopted = false;
        if pin.exists() {
            match self.adopt(t, &pin) {
                Ok(()) => adopted = true,
                Err(e) => {
                    // A link whose interface went away is defunct; replace it.
                    warn!(interface = %ifname, error = %e, "pinned link not adoptable, attaching anew");
                    unpin_link(&pin);
                }
            }
        }
        if !adopted {
            let link = self.attach_new(t)?;
            link.pin(&pin).map_err(|e| DatapathError::Link {
                path: pin.clone(),
                message: e.to_string(),
            })?;
        }
        accept_local(ifname);
        // A hook change: the new link is in place, so the old one can go.
        if other.exists() {
            info!(interface = %ifname, "removing link of the previously configured hook");
            unpin_link(&other);
        }
        info!(
            interface = %t.name,
            host_if = %ifname,
            ifindex = t.link.index,
            hook = %t.hook,
            adopted,
            "datapath attached"
        );
        self.attached.insert(
            ifname.clone(),
            Attachment {
                ifindex: t.link.index,
                hook: t.hook,
                pin,
            },
        );
        Ok(adopted)
    }

    fn attach_new(&mut self, t: &Target) -> Result<FdLink, DatapathError> {
        let ifname = t.link.name.as_str();
        let attach_err = |hook, source| DatapathError::Attach {
            ifname: ifname.to_owned(),
            hook,
            source,
        };
        match t.hook {
            HookChoice::Tc => {
                let prog = self.tc()?;
                if !tcx_supported() {
                    // Pre-6.6 kernels attach through a clsact qdisc; an
                    // existing one is fine.
                    let _ = aya::programs::tc::qdisc_add_clsact(ifname);
                }
                let id = prog
                    .attach(ifname, TcAttachType::Ingress)
                    .map_err(|e| attach_err("tc ingress", e))?;
                let link = prog
                    .take_link(id)
                    .map_err(|e| attach_err("tc ingress", e))?;
                FdLink::try_from(link).map_err(|e| DatapathError::Link {
                    path: self.pins.link(ifname, t.hook),
                    message: format!(
                        "tc link cannot be pinned (netlink attachment, kernel < 6.6?): {e}"
                    ),
                })
            }
            HookChoice::Xdp(mode) => {
                let prog = self.xdp()?;
                let id = match prog.attach(ifname, mode.into()) {
                    Ok(id) => id,
                    Err(e) if mode == hook::XdpAttach::Native => {
                        warn!(interface = %ifname, error = %e, "native XDP refused, falling back to generic XDP");
                        prog.attach(ifname, aya::programs::XdpMode::Skb)
                            .map_err(|e| attach_err("xdp (generic)", e))?
                    }
                    Err(e) => return Err(attach_err("xdp", e)),
                };
                let link = prog.take_link(id).map_err(|e| attach_err("xdp", e))?;
                FdLink::try_from(link).map_err(|e| DatapathError::Link {
                    path: self.pins.link(ifname, t.hook),
                    message: format!("xdp link cannot be pinned: {e}"),
                })
            }
        }
    }

    /// Swaps this build's program into an existing pinned link (BPF_LINK_UPDATE),
    /// which replaces the program atomically without a gap in forwarding.
    fn adopt(&mut self, t: &Target, pin: &Path) -> Result<(), DatapathError> {
        let link_err = |message: String| DatapathError::Link {
            path: pin.to_path_buf(),
            message,
        };
        let fd: FdLink = PinnedLink::from_pin(pin)
            .map_err(|e: LinkError| link_err(e.to_string()))?
            .into();
        match t.hook {
            HookChoice::Tc => {
                let link =
                    SchedClassifierLink::try_from(fd).map_err(|e| link_err(e.to_string()))?;
                let prog = self.tc()?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| link_err(format!("updating program: {e}")))?;
                // Dropping our fd leaves the pinned link in place.
                drop(prog.take_link(id));
            }
            HookChoice::Xdp(_) => {
                let link = XdpLink::try_from(fd).map_err(|e| link_err(e.to_string()))?;
                let prog = self.xdp()?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| link_err(format!("updating program: {e}")))?;
                drop(prog.take_link(id));
            }
        }
        Ok(())
    }

    /// Undoes what a failed `attach` did: a fresh link goes, map entries
    /// written for an interface that was not there before go.
    fn rollback(&mut self, undo: &Undo) {
        for ifname in &undo.fresh {
            if let Some(a) = self.attached.remove(ifname) {
                unpin_link(&a.pin);
            }
        }
        for ifindex in &undo.written {
            self.forget_ifindex(*ifindex);
        }
        if let Ok(mut m) = self.map_mut::<HashMap<_, u32, IfaceConfig>>(maps::IFACES) {
            for (ifindex, old) in &undo.changed {
                let _ = m.insert(ifindex, old, 0);
            }
        }
    }

    /// Detaches links and map entries of host interfaces not in `wanted`:
    /// what an earlier run attached to interfaces the config has dropped.
    pub fn remove_stale(&mut self, wanted: &BTreeSet<String>) -> Result<(), DatapathError> {
        for pin in self.pins.link_pins() {
            let ifname = Pins::link_ifname(&pin);
            if !ifname.is_some_and(|n| wanted.contains(n)) {
                info!(pin = %pin.display(), "detaching link of an interface no longer configured");
                unpin_link(&pin);
            }
        }
        let keep: BTreeSet<u32> = self
            .attached
            .iter()
            .filter(|(n, _)| wanted.contains(*n))
            .map(|(_, a)| a.ifindex)
            .collect();
        let stale: Vec<u32> = {
            let ifaces: HashMap<_, u32, IfaceConfig> = self.map_mut(maps::IFACES)?;
            ifaces
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !keep.contains(k))
                .collect()
        };
        for ifindex in stale {
            self.forget_ifindex(ifindex);
        }
        self.attached.retain(|n, _| wanted.contains(n));
        self.routes_changed();
        Ok(())
    }

    fn forget_ifindex(&mut self, ifindex: u32) {
        if let Ok(mut m) = self.map_mut::<HashMap<_, u32, IfaceConfig>>(maps::IFACES) {
            let _ = m.remove(&ifindex);
        }
        if let Ok(mut m) = self.map_mut::<DevMapHash<_>>(maps::TX_PORTS) {
            let _ = m.remove(ifindex);
        }
    }

    /// Per-interface counters summed over CPUs, keyed by host interface name.
    pub fn counters(&self) -> Result<BTreeMap<String, IfCounters>, DatapathError> {
        let map = |m: maps::MapName| self.ebpf.map(m.object).ok_or_else(|| missing(m.object));
        let ifaces: HashMap<_, u32, IfaceConfig> =
            HashMap::try_from(map(maps::IFACES)?).map_err(|s| map_err(maps::IFACES, s))?;
        let counters: PerCpuArray<_, IfCounters> =
            PerCpuArray::try_from(map(maps::COUNTERS)?).map_err(|s| map_err(maps::COUNTERS, s))?;
        let mut out = BTreeMap::new();
        for (name, a) in &self.attached {
            let slot = ifaces
                .get(&a.ifindex, 0)
                .map_err(|s| map_err(maps::IFACES, s))?
                .slot;
            let per_cpu = counters
                .get(&slot, 0)
                .map_err(|s| map_err(maps::COUNTERS, s))?;
            out.insert(name.clone(), IfCounters::summed(per_cpu.iter()));
        }
        Ok(out)
    }

    /// The eBPF object, for the log forwarder.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }

    /// Detaches everything and removes the instance's pins, or, with `keep`,
    /// leaves links and maps pinned so forwarding continues without the agent.
    pub fn shutdown(self, keep: bool) -> Result<(), DatapathError> {
        if keep {
            info!(pins = %self.pins.dir().display(), "keeping the datapath: links and maps stay pinned");
            return Ok(());
        }
        for (ifname, a) in &self.attached {
            debug!(interface = %ifname, hook = %a.hook, "detaching");
            unpin_link(&a.pin);
        }
        self.pins.remove_all()?;
        info!("datapath detached and pins removed");
        Ok(())
    }

    fn map_mut<'a, M>(&'a mut self, m: maps::MapName) -> Result<M, DatapathError>
    where
        M: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
    {
        let map = self
            .ebpf
            .map_mut(m.object)
            .ok_or_else(|| missing(m.object))?;
        M::try_from(map).map_err(|source| map_err(m, source))
    }

    /// The XDP program: reused from its pin if an earlier start with the
    /// same object and maps verified it, else loaded (verified) and pinned.
    fn xdp(&mut self) -> Result<&mut Xdp, DatapathError> {
        let pin = self.pins.prog(maps::programs::XDP, self.prog_key);
        let loaded = self
            .ebpf
            .program(maps::programs::XDP)
            .is_some_and(|p| p.fd().is_ok());
        // First use in this process: reuse an earlier start's pin, or verify
        // the program and pin it for the next start.
        if self.xdp_pinned.is_none() && !loaded {
            match Xdp::from_pin(&pin, aya_obj::programs::XdpAttachType::Interface) {
                Ok(p) if pin.exists() => {
                    info!(pin = %pin.display(), "reusing the XDP program an earlier start verified");
                    self.xdp_pinned = Some(p);
                }
                _ => {
                    let _ = std::fs::create_dir_all(self.pins.progs_dir());
                    let prog: &mut Xdp = self.program(maps::programs::XDP)?;
                    pin_program(prog.pin(&pin), &pin);
                }
            }
        }
        if self.xdp_pinned.is_some() {
            return self
                .xdp_pinned
                .as_mut()
                .ok_or_else(|| missing(maps::programs::XDP));
        }
        self.program(maps::programs::XDP)
    }

    /// The TC program, like [`Self::xdp`].
    fn tc(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        let pin = self.pins.prog(maps::programs::TC, self.prog_key);
        let loaded = self
            .ebpf
            .program(maps::programs::TC)
            .is_some_and(|p| p.fd().is_ok());
        // First use in this process: reuse an earlier start's pin, or verify
        // the program and pin it for the next start.
        if self.tc_pinned.is_none() && !loaded {
            match SchedClassifier::from_pin(&pin) {
                Ok(p) if pin.exists() => {
                    info!(pin = %pin.display(), "reusing the TC program an earlier start verified");
                    self.tc_pinned = Some(p);
                }
                _ => {
                    let _ = std::fs::create_dir_all(self.pins.progs_dir());
                    let prog: &mut SchedClassifier = self.program(maps::programs::TC)?;
                    pin_program(prog.pin(&pin), &pin);
                }
            }
        }
        if self.tc_pinned.is_some() {
            return self
                .tc_pinned
                .as_mut()
                .ok_or_else(|| missing(maps::programs::TC));
        }
        self.program(maps::programs::TC)
    }

    /// The program, loaded into the kernel on first use.
    fn program<'a, P>(&'a mut self, name: &'static str) -> Result<&'a mut P, DatapathError>
    where
        &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    {
        let loaded = self
            .ebpf
            .program(name)
            .ok_or_else(|| missing(name))?
            .fd()
            .is_ok();
        if !loaded {
            load_program(&mut self.ebpf, name)?;
        }
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| missing(name))?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })
    }
}

/// What a failed `attach` has to undo.
#[derive(Debug, Default)]
struct Undo {
    /// Host interfaces whose link this attach created (not adopted).
    fresh: Vec<String>,
    /// Ifindexes this attach added to the maps.
    written: Vec<u32>,
    /// `IFACES` entries this attach changed (a role change), with their old value.
    changed: Vec<(u32, IfaceConfig)>,
}

/// Capacity of the session and binding LRU maps, and whether an existing
/// pin must have exactly that capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionTableSize {
    pub entries: u32,
    /// `maxSessions` the size is derived from; `None` without `nat44`.
    pub max_sessions: Option<u32>,
}

/// With `nat44`, sized for `maxSessions` ([`xcnf_common::nat::lru_entries`]).
/// Without it the maps are unused, so a fresh instance gets the minimum
/// (LRU maps are preallocated: the default size would lock ~100 MiB of
/// kernel memory for nothing) and an existing pin of any size is kept.
pub fn session_table_size(nat: &NatPlan, nr_cpus: usize) -> SessionTableSize {
    let cpus = u32::try_from(nr_cpus).unwrap_or(u32::MAX);
    if nat.enabled() {
        let max = nat.config.max_sessions;
        SessionTableSize {
            entries: xcnf_common::nat::lru_entries(max, cpus),
            max_sessions: Some(max),
        }
    } else {
        SessionTableSize {
            entries: xcnf_common::nat::lru_entries(0, cpus),
            max_sessions: None,
        }
    }
}

/// Removes a link pin; with the last reference gone the kernel detaches it.
fn unpin_link(pin: &Path) {
    match PinnedLink::from_pin(pin) {
        Ok(l) => {
            if let Err(e) = l.unpin() {
                warn!(pin = %pin.display(), error = %e, "could not unpin link");
            }
        }
        Err(e) => {
            warn!(pin = %pin.display(), error = %e, "could not open link pin, removing the file");
            let _ = std::fs::remove_file(pin);
        }
    }
}

/// Both hooks hand some translated packets to the kernel to forward: XDP
/// those whose next hop is unresolved (it cannot resolve one), both hooks
/// those over the egress MTU without DF (the kernel fragments them). A
/// source-translated packet then carries a pool address, often one of the
/// CNF's own, and the kernel drops packets arriving with a local source
/// unless `accept_local` is set.
fn accept_local(ifname: &str) {
    let path = format!("/proc/sys/net/ipv4/conf/{ifname}/accept_local");
    if let Err(e) = std::fs::write(&path, "1") {
        warn!(
            interface = %ifname,
            error = %e,
            "cannot set {path}: translated packets the kernel must forward (XDP towards an unresolved next hop, oversize without DF) are dropped by it when their source is one of the CNF's addresses"
        );
    }
}

fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), DatapathError> {
    let prog = ebpf.program_mut(name).ok_or_else(|| missing(name))?;
    // The verifier gives up with EAGAIN when a signal is pending on the
    // loading thread; that says nothing about the program, so try again a
    // few times before reporting it.
    let mut tries = 0;
    let res = loop {
        let res = match prog {
            aya::programs::Program::Xdp(p) => p.load(),
            aya::programs::Program::SchedClassifier(p) => p.load(),
            _ => {
                return Err(DatapathError::MissingInObject {
                    what: format!("XDP or TC program named {name}"),
                });
            }
        };
        match res {
            Err(ProgramError::LoadError { ref io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < 5 =>
            {
                tries += 1;
                debug!(
                    program = name,
                    tries, "verifier interrupted by a signal, loading again"
                );
            }
            other => break other,
        }
    };
    res.map_err(|source| {
        if is_permission(&source) {
            DatapathError::Permission {
                what: format!("loading program {name}"),
                source: Box::new(source),
            }
        } else {
            DatapathError::Program { name, source }
        }
    })
}

/// Pins a freshly verified program for the next start, replacing the pins
/// of other builds. Failing to pin only costs the next start the verifier.
fn pin_program(result: Result<(), aya::pin::PinError>, pin: &Path) {
    if let Some(dir) = pin.parent()
        && let Ok(rd) = std::fs::read_dir(dir)
    {
        let name = pin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let prefix = name.rsplit_once('-').map_or(name, |(p, _)| p);
        for e in rd.filter_map(Result::ok) {
            let other = e.file_name();
            let other = other.to_string_lossy();
            if other != name && other.rsplit_once('-').is_some_and(|(p, _)| p == prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    if let Err(e) = result {
        warn!(pin = %pin.display(), error = %e, "cannot pin the verified program; the next start verifies it again");
    }
}

/// What a pinned program depends on: the object's bytes, the log level
/// written into it, the session table size and the map layout.
fn program_key(object: &[u8], opts: &Options, layout: u64) -> u64 {
    maps::Fnv1a::default()
        .write(object)
        .write(&[opts.log_level])
        .write(&opts.sessions.entries.to_le_bytes())
        .write(&layout.to_le_bytes())
        .finish()
}

/// Removes a pin that must not be reused, so the load creates the map anew.
fn recreate_pin(path: &Path, m: maps::MapName, reason: String) -> Result<(), DatapathError> {
    warn!(
        map = m.object,
        pin = %path.display(),
        reason = %reason,
        "pinned map is incompatible with this build: recreating it; its contents are lost"
    );
    std::fs::remove_file(path).map_err(|e| DatapathError::IncompatiblePin {
        path: path.to_path_buf(),
        reason: format!("{reason}, and the pin cannot be removed: {e}"),
    })
}

/// A pinned map is reused only if its key, value and capacity are what this
/// build expects. Otherwise the pin is removed, so the load creates the map
/// anew (and pins it); the programs adopted links run are swapped to the new
/// maps, so forwarding goes on, but what the old map held is lost, which
/// the log line says.
fn check_pinned_map(
    path: &Path,
    m: maps::MapName,
    lru: SessionTableSize,
) -> Result<(), DatapathError> {
    if !path.exists() {
        return Ok(());
    }
    let recreate = |reason: String| recreate_pin(path, m, reason);
    let info = match MapInfo::from_pin(path) {
        Ok(i) => i,
        Err(e) => return recreate(format!("cannot read it: {e}")),
    };
    let mut got = (info.key_size(), info.value_size(), info.max_entries());
    let mut want = (m.key_size, m.value_size, m.max_entries);
    if m.max_entries == 0 {
        match lru.max_sessions {
            Some(max_sessions) if got.2 != lru.entries && (got.0, got.1) == (want.0, want.1) => {
                return recreate(format!(
                    "it holds {} entries, maxSessions {max_sessions} needs {} (the session tables cannot be resized in place, so every NAT session, binding and address pairing is dropped)",
                    got.2, lru.entries
                ));
            }
            Some(_) => want.2 = lru.entries,
            // Unused without nat44: whatever size it has is fine.
            None => got.2 = 0,
        }
    }
    if got != want {
        return recreate(format!(
            "key/value/entries {}/{}/{}, this build needs {}/{}/{}",
            got.0, got.1, got.2, want.0, want.1, want.2
        ));
    }
    Ok(())
}

/// Whether a map operation failed only because the key is not there. aya
/// reports that as `KeyNotFound` from a lookup but as the syscall's ENOENT
/// from a delete; both mean the entry is gone, which a delete wanted anyway.
pub fn is_absent(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Deletes `k` from `m`; a key that is not there (never written, or deleted
/// by someone else meanwhile) is no error.
pub fn remove_if_present<T, K, V>(m: &mut HashMap<T, K, V>, k: &K) -> Result<(), MapError>
where
    T: std::borrow::BorrowMut<aya::maps::MapData>,
    K: aya::Pod,
    V: aya::Pod,
{
    match m.remove(k) {
        Err(e) if !is_absent(&e) => Err(e),
        _ => Ok(()),
    }
}

fn missing(what: &str) -> DatapathError {
    DatapathError::MissingInObject {
        what: what.to_owned(),
    }
}

fn map_err(m: maps::MapName, source: MapError) -> DatapathError {
    DatapathError::Map {
        name: m.object,
        source,
    }
}

/// True when an error chain bottoms out in EPERM or EACCES.
fn is_permission(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// tcx (multi-prog TC links) exists from Linux 6.6; aya uses it there.
fn tcx_supported() -> bool {
    aya::util::KernelVersion::current()
        .map(|v| v >= aya::util::KernelVersion::new(6, 6, 0))
        .unwrap_or(false)
}
