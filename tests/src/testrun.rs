//! Running the datapath through `BPF_PROG_TEST_RUN`: one object, one thread,
//! one private network namespace.
//!
//! The kernel runs test programs against the calling thread's namespace: its
//! loopback is the ingress device and its routes and neighbours answer
//! `bpf_fib_lookup`. So every fixture runs on its own thread after
//! `unshare(CLONE_NEWNET)` ([`isolated`]); tests then run in parallel and need
//! no cleanup, because the namespace dies with the thread and the maps and
//! programs with the [`Datapath`].
//!
//! The fixture tests and the benchmark share this module, so both measure and
//! check the same loading and map programming.

use std::{error::Error, fmt::Write as _, process::Command, time::Duration};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, DevMapHash, HashMap, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::{ProgramError, SchedClassifier, TestRun as _, TestRunOptions, Xdp},
    util::nr_cpus,
};
use xcnf_common::{
    DropReasons, IfCounters, IfaceConfig, PassReasons, maps,
    nat::{
        Binding, BindingKey, FragKey, FragXlate, HostPairing, NatAddr, NatConfig, NatStats,
        PoolRange, ROUTE_MAX_AGE_MS, RouteCtl, Session, SessionKey, StaticKey, StaticMapping,
        active, lru_entries,
    },
};

use crate::packet::{Ip4, Mac, parse_mac};

/// Loopback is the ingress device of every test run, and the first device of
/// a fresh namespace.
pub const LO: u32 = 1;

// ---------------------------------------------------------------- isolation

/// Runs `f` on a new thread inside a new network namespace and re-raises its
/// panic here, so the test fails with the fixture's own message.
pub fn isolated<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let thread = std::thread::spawn(move || {
        // SAFETY: plain syscall; CLONE_NEWNET only changes this thread's
        // namespace, which is why everything after it stays on this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {} (these tests need root)",
            std::io::Error::last_os_error()
        );
        f()
    });
    match thread.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `ip` in the calling thread's namespace (children inherit it) and
/// returns its standard output.
pub fn ip(args: &[&str]) -> String {
    let out = crate::netns::run(Command::new("ip").args(args));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sets net.ipv4.ip_forward. /proc/sys/net resolves to the opening thread's
/// namespace, so this never touches the host's setting.
pub fn set_ip_forward(on: bool) {
    let path = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(path, if on { "1" } else { "0" })
        .unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

/// An interface's ifindex and MAC, asked of `ip` because /sys/class/net shows
/// the host's namespace, not this thread's.
pub fn link(name: &str) -> (u32, Mac) {
    let brief = ip(&["-br", "link", "show", "dev", name]);
    let mac = brief
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no MAC in `ip -br link show {name}`: {brief:?}"));
    let oneline = ip(&["-o", "link", "show", "dev", name]);
    let ifindex = oneline
        .split(':')
        .next()
        .and_then(|i| i.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in `ip -o link show {name}`: {oneline:?}"));
    (ifindex, parse_mac(mac))
}

pub fn dotted(a: Ip4) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

pub fn mac_str(m: Mac) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// Creates veth `dev` (peer `peer`), both up, with `cidr` on `dev` and
/// permanent neighbour entries, so `bpf_fib_lookup` resolves those next hops
/// without any traffic. Returns `dev`'s ifindex and MAC.
pub fn veth(dev: &str, peer: &str, cidr: &str, neighbours: &[(Ip4, Mac)]) -> (u32, Mac) {
    ip(&["link", "add", dev, "type", "veth", "peer", "name", peer]);
    ip(&["link", "set", dev, "up"]);
    ip(&["link", "set", peer, "up"]);
    ip(&["addr", "add", cidr, "dev", dev]);
    for &(addr, mac) in neighbours {
        ip(&[
            "neigh",
            "replace",
            &dotted(addr),
            "lladdr",
            &mac_str(mac),
            "dev",
            dev,
            "nud",
            "permanent",
        ]);
    }
    let (ifindex, mac) = link(dev);
    assert_ne!(ifindex, LO, "{dev} got loopback's ifindex");
    (ifindex, mac)
}

// ---------------------------------------------------------------- verdicts

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    Xdp,
    Tc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    Redirect,
    /// Sent back out of the interface it came in on: XDP_TX, or for TC a
    /// redirect to the ingress ifindex (TC has no separate code for it).
    Tx,
}

impl Hook {
    pub const BOTH: [Hook; 2] = [Hook::Xdp, Hook::Tc];

    pub fn program(self) -> &'static str {
        match self {
            Hook::Xdp => maps::programs::XDP,
            Hook::Tc => maps::programs::TC,
        }
    }

    /// The hook's numeric return code for a verdict (XDP_* or TC_ACT_*).
    pub fn code(self, v: Verdict) -> u32 {
        match (self, v) {
            (Hook::Xdp, Verdict::Pass) => 2,
            (Hook::Xdp, Verdict::Drop) => 1,
            (Hook::Xdp, Verdict::Tx) => 3,
            (Hook::Xdp, Verdict::Redirect) => 4,
            (Hook::Tc, Verdict::Pass) => 0,
            (Hook::Tc, Verdict::Drop) => 2,
            (Hook::Tc, Verdict::Redirect | Verdict::Tx) => 7,
        }
    }

    pub fn name_code(self, code: u32) -> String {
        [Verdict::Pass, Verdict::Drop, Verdict::Redirect, Verdict::Tx]
            .into_iter()
            .find(|&v| self.code(v) == code)
            .map_or_else(
                || format!("{code} (unexpected)"),
                |v| format!("{code} ({v:?})"),
            )
    }
}

/// Renders an error with its whole source chain, which is where aya keeps
/// the verifier log.
pub fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        let _ = write!(s, ": {e}");
        src = e.source();
    }
    s
}

// ---------------------------------------------------------------- datapath

/// How to load the object.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// aya-log level written into `AYA_LOG_LEVEL`, as the agent does with
    /// its configured level; 0 lets the verifier prune every log statement.
    pub log_level: u8,
    /// Sizes `nat_sessions`, `nat_bindings` and `nat_hosts` the way the
    /// agent does for this `maxSessions`. `None` keeps the compiled-in size.
    pub max_sessions: Option<u32>,
    /// Overrides the size of `nat_hosts`, to fill it in a test.
    pub max_hosts: Option<u32>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            log_level: 0,
            // Small, so parallel tests do not each preallocate the
            // compiled-in half-million LRU entries.
            max_sessions: Some(1024),
            max_hosts: None,
        }
    }
}

/// The loaded object with both programs and its maps.
pub struct Datapath {
    pub ebpf: Ebpf,
}

/// Opens map `$name` of `$self.ebpf` as `$ty`, or panics naming it.
macro_rules! typed_map {
    ($self:expr, $name:expr, $ty:ty) => {{
        let name: &str = $name;
        <$ty>::try_from(
            $self
                .ebpf
                .map_mut(name)
                .unwrap_or_else(|| panic!("no map {name}")),
        )
        .unwrap_or_else(|e| panic!("map {name} as {}: {}", stringify!($ty), chain(&e)))
    }};
    (ref $self:expr, $name:expr, $ty:ty) => {{
        let name: &str = $name;
        <$ty>::try_from(
            $self
                .ebpf
                .map(name)
                .unwrap_or_else(|| panic!("no map {name}")),
        )
        .unwrap_or_else(|e| panic!("map {name} as {}: {}", stringify!($ty), chain(&e)))
    }};
}

impl Datapath {
    /// Loads both programs; see [`LoadOptions`].
    pub fn load(opts: LoadOptions) -> Self {
        let path = crate::ebpf_object();
        let mut loader = EbpfLoader::new();
        loader.override_global("AYA_LOG_LEVEL", &opts.log_level, true);
        if let Some(n) = opts.max_sessions {
            let cpus = nr_cpus().unwrap_or_else(|(what, e)| panic!("{what}: {e}"));
            let entries = lru_entries(n, u32::try_from(cpus).unwrap_or(u32::MAX));
            loader.map_max_entries(maps::NAT_SESSIONS.object, entries);
            loader.map_max_entries(maps::NAT_BINDINGS.object, entries);
            loader.map_max_entries(maps::NAT_HOSTS.object, entries);
        }
        if let Some(n) = opts.max_hosts {
            loader.map_max_entries(maps::NAT_HOSTS.object, n);
        }
        let mut ebpf = loader
            .load_file(&path)
            .unwrap_or_else(|e| panic!("loading {}: {}", path.display(), chain(&e)));
        let xdp: &mut Xdp = ebpf
            .program_mut(Hook::Xdp.program())
            .unwrap_or_else(|| panic!("object has no program {}", Hook::Xdp.program()))
            .try_into()
            .unwrap_or_else(|e| panic!("XDP program type: {}", chain(&e)));
        retry_eagain(|| xdp.load()).unwrap_or_else(|e| panic!("loading xcnf_xdp: {}", chain(&e)));
        let tc: &mut SchedClassifier = ebpf
            .program_mut(Hook::Tc.program())
            .unwrap_or_else(|| panic!("object has no program {}", Hook::Tc.program()))
            .try_into()
            .unwrap_or_else(|e| panic!("TC program type: {}", chain(&e)));
        retry_eagain(|| tc.load()).unwrap_or_else(|e| panic!("loading xcnf_tc: {}", chain(&e)));
        let mut dp = Datapath { ebpf };
        // The route cache on, as the agent runs it.
        dp.set_route_ctl(RouteCtl {
            generation: 0,
            max_age_ms: ROUTE_MAX_AGE_MS,
        });
        dp
    }

    /// Writes the `route_ctl` entry: a new generation is what the agent
    /// writes when routes or neighbours change.
    pub fn set_route_ctl(&mut self, ctl: RouteCtl) {
        let mut m = typed_map!(self, maps::ROUTE_CTL.object, Array<_, RouteCtl>);
        m.set(0, ctl, 0)
            .unwrap_or_else(|e| panic!("ROUTE_CTL[0]: {}", chain(&e)));
    }

    /// Makes `ifindex` a managed interface without a NAT role.
    pub fn manage(&mut self, ifindex: u32, mac: Mac) {
        self.manage_role(ifindex, mac, xcnf_common::nat::role::NONE);
    }

    /// Makes `ifindex` a managed interface with NAT44 `role`; writing it
    /// again changes the role. Its counter slot is assigned as the agent
    /// assigns it: kept if the interface had one, else the lowest free.
    pub fn manage_role(&mut self, ifindex: u32, mac: Mac, role: u8) {
        let mut m = typed_map!(self, maps::IFACES.object, HashMap<_, u32, IfaceConfig>);
        let slot = match m.get(&ifindex, 0) {
            Ok(old) => old.slot,
            Err(_) => {
                let used = m.iter().map(|r| {
                    r.unwrap_or_else(|e| panic!("reading IFACES: {}", chain(&e)))
                        .1
                        .slot
                });
                xcnf_common::free_slot(used).unwrap_or_else(|| panic!("no free counter slot"))
            }
        };
        let cfg = IfaceConfig {
            mac,
            role,
            flags: 0,
            slot,
        };
        m.insert(ifindex, cfg, 0)
            .unwrap_or_else(|e| panic!("IFACES[{ifindex}]: {}", chain(&e)));
        // As the agent does after changing its interface maps: the
        // programs' per-CPU interface caches must not keep the old entry.
        self.bump_generation();
    }

    /// Changes the NAT44 role in `ifindex`'s `IFACES` entry without moving
    /// the generation: what the programs' interface caches must not see
    /// until the generation moves or their entry ages out.
    pub fn set_role_unannounced(&mut self, ifindex: u32, role: u8) {
        let mut m = typed_map!(self, maps::IFACES.object, HashMap<_, u32, IfaceConfig>);
        let mut cfg = m
            .get(&ifindex, 0)
            .unwrap_or_else(|e| panic!("IFACES[{ifindex}]: {}", chain(&e)));
        cfg.role = role;
        m.insert(ifindex, cfg, 0)
            .unwrap_or_else(|e| panic!("IFACES[{ifindex}]: {}", chain(&e)));
    }

    /// Moves `route_ctl`'s generation on, as the agent does on a change.
    pub fn bump_generation(&mut self) {
        let mut m = typed_map!(self, maps::ROUTE_CTL.object, Array<_, RouteCtl>);
        let mut ctl = m
            .get(&0, 0)
            .unwrap_or_else(|e| panic!("ROUTE_CTL[0]: {}", chain(&e)));
        ctl.generation = ctl.generation.wrapping_add(1);
        m.set(0, ctl, 0)
            .unwrap_or_else(|e| panic!("ROUTE_CTL[0]: {}", chain(&e)));
    }

    /// The counter slot of managed interface `ifindex`.
    pub fn slot(&self, ifindex: u32) -> u32 {
        let m = typed_map!(ref self, maps::IFACES.object, HashMap<_, u32, IfaceConfig>);
        m.get(&ifindex, 0)
            .unwrap_or_else(|e| {
                panic!(
                    "IFACES[{ifindex}] (counted interfaces must be managed): {}",
                    chain(&e)
                )
            })
            .slot
    }

    /// Zeroes the counters of managed interface `ifindex` on every CPU.
    pub fn count(&mut self, ifindex: u32) {
        let slot = self.slot(ifindex);
        let cpus = nr_cpus().unwrap_or_else(|(what, e)| panic!("{what}: {e}"));
        let mut m = typed_map!(self, maps::COUNTERS.object, PerCpuArray<_, IfCounters>);
        let zero = PerCpuValues::try_from(vec![IfCounters::default(); cpus])
            .unwrap_or_else(|e| panic!("per-CPU zero counters: {e}"));
        m.set(slot, zero, 0)
            .unwrap_or_else(|e| panic!("COUNTERS[{slot}] of ifindex {ifindex}: {}", chain(&e)));
    }

    /// DEVMAP_HASH updates resolve the ifindex in the caller's namespace, so
    /// this must run on the test's thread like everything else.
    pub fn tx_port(&mut self, ifindex: u32) {
        let mut m = typed_map!(self, maps::TX_PORTS.object, DevMapHash<_>);
        m.insert(ifindex, ifindex, None, 0)
            .unwrap_or_else(|e| panic!("TX_PORTS[{ifindex}]: {}", chain(&e)));
    }

    pub fn remove_tx_port(&mut self, ifindex: u32) {
        let mut m = typed_map!(self, maps::TX_PORTS.object, DevMapHash<_>);
        m.remove(ifindex)
            .unwrap_or_else(|e| panic!("removing TX_PORTS[{ifindex}]: {}", chain(&e)));
    }

    /// The size of `hook`'s program after verification, which shrinks when
    /// the verifier removes dead code.
    pub fn translated_size(&self, hook: Hook) -> u32 {
        self.ebpf
            .program(hook.program())
            .unwrap_or_else(|| panic!("no program {}", hook.program()))
            .info()
            .unwrap_or_else(|e| panic!("{hook:?} program info: {}", chain(&e)))
            .size_translated()
            .unwrap_or_else(|| panic!("{hook:?}: translated size not visible (not root?)"))
    }

    /// The counters of `ifindex`, summed over CPUs as the agent reports them.
    pub fn counters(&self, ifindex: u32) -> IfCounters {
        let slot = self.slot(ifindex);
        let m = typed_map!(ref self, maps::COUNTERS.object, PerCpuArray<_, IfCounters>);
        let per_cpu = m
            .get(&slot, 0)
            .unwrap_or_else(|e| panic!("COUNTERS[{slot}] of ifindex {ifindex}: {}", chain(&e)));
        IfCounters::summed(per_cpu.iter())
    }

    /// Runs one frame through `hook` `repeat` times: the verdict, the bytes
    /// the kernel hands back and the kernel's average time per run, or the
    /// kernel's refusal of the input.
    pub fn try_run_repeat(
        &self,
        hook: Hook,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Vec<u8>, Duration), ProgramError> {
        let prog = self
            .ebpf
            .program(hook.program())
            .unwrap_or_else(|| panic!("no program {}", hook.program()));
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        };
        let r = match hook {
            Hook::Xdp => <&Xdp>::try_from(prog)?.test_run(opts),
            Hook::Tc => <&SchedClassifier>::try_from(prog)?.test_run(opts),
        }?;
        let n = usize::try_from(r.data_size_out).unwrap_or(usize::MAX);
        out.truncate(n);
        Ok((r.return_value, out, r.duration))
    }

    /// Runs one frame through `hook` once.
    pub fn try_run(&self, hook: Hook, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        self.try_run_repeat(hook, frame, 1)
            .map(|(code, out, _)| (code, out))
    }

    // ------------------------------------------------------------ NAT44 maps

    /// Writes the single `nat_config` entry.
    pub fn set_nat_config(&mut self, cfg: NatConfig) {
        let mut m = typed_map!(self, maps::NAT_CONFIG.object, Array<_, NatConfig>);
        m.set(0, cfg, 0)
            .unwrap_or_else(|e| panic!("NAT_CONFIG[0]: {}", chain(&e)));
    }

    /// Writes pool ranges from index 0 on and the matching `pool_ranges` and
    /// `pool_addrs` into `cfg`, as the agent does.
    pub fn set_pools(&mut self, mut cfg: NatConfig, ranges: &[PoolRange]) {
        {
            let mut m = typed_map!(self, maps::NAT_POOLS.object, Array<_, PoolRange>);
            for (i, r) in ranges.iter().enumerate() {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                m.set(i, *r, 0)
                    .unwrap_or_else(|e| panic!("NAT_POOLS[{i}]: {}", chain(&e)));
            }
        }
        cfg.pool_ranges = u32::try_from(ranges.len()).unwrap_or(u32::MAX);
        cfg.pool_addrs = ranges.iter().map(|r| r.count).sum();
        self.set_nat_config(cfg);
    }

    pub fn add_static(&mut self, key: StaticKey, value: StaticMapping) {
        let mut m = typed_map!(self, maps::NAT_STATIC.object, HashMap<_, StaticKey, StaticMapping>);
        m.insert(key, value, 0)
            .unwrap_or_else(|e| panic!("NAT_STATIC[{key:?}]: {}", chain(&e)));
    }

    /// Writes one `nat_bindings` entry, as another CPU's reservation would.
    pub fn add_binding(&mut self, key: BindingKey, value: Binding) {
        let mut m = typed_map!(self, maps::NAT_BINDINGS.object, HashMap<_, BindingKey, Binding>);
        m.insert(key, value, 0)
            .unwrap_or_else(|e| panic!("NAT_BINDINGS[{key:?}]: {}", chain(&e)));
    }

    pub fn add_nat_addr(&mut self, addr: Ip4, flags: u8) {
        let mut m = typed_map!(self, maps::NAT_ADDRS.object, HashMap<_, Ip4, NatAddr>);
        m.insert(
            addr,
            NatAddr {
                flags,
                _pad: [0; 3],
            },
            0,
        )
        .unwrap_or_else(|e| panic!("NAT_ADDRS[{addr:?}]: {}", chain(&e)));
    }

    /// Takes `addr` out of `nat_addrs`, as a config change does.
    pub fn remove_nat_addr(&mut self, addr: Ip4) {
        let mut m = typed_map!(self, maps::NAT_ADDRS.object, HashMap<_, Ip4, NatAddr>);
        m.remove(&addr)
            .unwrap_or_else(|e| panic!("NAT_ADDRS[{addr:?}]: {}", chain(&e)));
    }

    /// Every entry of a hash-like map, in the kernel's iteration order.
    fn entries<K: Pod, V: Pod>(&self, name: &str) -> Vec<(K, V)> {
        let m: HashMap<&MapData, K, V> = typed_map!(ref self, name, HashMap<_, K, V>);
        m.iter()
            .collect::<Result<Vec<_>, MapError>>()
            .unwrap_or_else(|e| panic!("iterating {name}: {}", chain(&e)))
    }

    /// Every session half in `nat_sessions`.
    pub fn sessions(&self) -> Vec<(SessionKey, Session)> {
        self.entries(maps::NAT_SESSIONS.object)
    }

    /// Every entry of `nat_bindings`.
    pub fn bindings(&self) -> Vec<(BindingKey, Binding)> {
        self.entries(maps::NAT_BINDINGS.object)
    }

    /// Every entry of `nat_frags`.
    pub fn frags(&self) -> Vec<(FragKey, FragXlate)> {
        self.entries(maps::NAT_FRAGS.object)
    }

    /// Every entry of `nat_hosts`: inside host → paired pool index.
    pub fn host_pairings(&self) -> Vec<(Ip4, HostPairing)> {
        self.entries(maps::NAT_HOSTS.object)
    }

    /// `nat_stats` summed over CPUs.
    pub fn nat_stats(&self) -> NatStats {
        let m = typed_map!(ref self, maps::NAT_STATS.object, PerCpuArray<_, NatStats>);
        let per_cpu = m
            .get(&0, 0)
            .unwrap_or_else(|e| panic!("NAT_STATS[0]: {}", chain(&e)));
        NatStats::summed(per_cpu.iter())
    }

    /// `nat_active[CREATED]`: sessions the datapath has created.
    pub fn sessions_created(&self) -> u64 {
        let m = typed_map!(ref self, maps::NAT_ACTIVE.object, Array<_, u64>);
        m.get(&active::CREATED, 0)
            .unwrap_or_else(|e| panic!("NAT_ACTIVE[CREATED]: {}", chain(&e)))
    }

    /// `nat_active[NEXT_ADDR]`: the paired-pooling cursor, whose value modulo
    /// the pool size is the pool index the next new inside host gets.
    pub fn next_pool_cursor(&self) -> u64 {
        let m = typed_map!(ref self, maps::NAT_ACTIVE.object, Array<_, u64>);
        m.get(&active::NEXT_ADDR, 0)
            .unwrap_or_else(|e| panic!("NAT_ACTIVE[NEXT_ADDR]: {}", chain(&e)))
    }
}

/// Number of `u64` fields of [`NatStats`].
pub const STATS_FIELDS: usize = NatStats::FIELDS;

/// The fields of `s` in declaration order.
pub fn stats_fields(s: &NatStats) -> [u64; STATS_FIELDS] {
    s.fields()
}

/// The inverse of [`stats_fields`].
pub fn stats_from_fields(f: [u64; STATS_FIELDS]) -> NatStats {
    NatStats::from_fields(f)
}

// ---------------------------------------------------------------- frames

/// Fails with the first differing offset and both frames in hex, which is
/// what one needs to see which header field went wrong.
pub fn assert_frame(ctx: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let hex = |b: &[u8]| {
        b.chunks(16)
            .enumerate()
            .map(|(i, l)| {
                let bytes: Vec<String> = l.iter().map(|x| format!("{x:02x}")).collect();
                format!("  {:04x}: {}", i * 16, bytes.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    // Enough context past the first difference, not a 1400-byte dump.
    let cut = first.max(64) + 32;
    panic!(
        "{ctx}: output frame differs at offset {first} (got {} bytes, want {})\n\
         got:\n{}\nwant:\n{}",
        got.len(),
        want.len(),
        hex(&got[..got.len().min(cut)]),
        hex(&want[..want.len().min(cut)]),
    );
}

// ---------------------------------------------------------------- cases

/// Generates `name::xdp` and `name::tc` tests that call
/// `runner(Hook, name)`, where `runner` is a function of the invoking module.
#[macro_export]
macro_rules! on_both_hooks {
    ($runner:ident: $($(#[$attr:meta])* $name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            $(#[$attr])*
            fn xdp() {
                super::$runner($crate::testrun::Hook::Xdp, super::$name);
            }
            #[test]
            $(#[$attr])*
            fn tc() {
                super::$runner($crate::testrun::Hook::Tc, super::$name);
            }
        }
    )*};
}

/// Where the datapath should send a frame, and which counter says so.
#[derive(Clone, Copy)]
pub enum Fate {
    /// Redirected to its egress interface, counted as forwarded.
    Forwarded,
    /// Sent back out of the interface it arrived on (an ARP reply made in
    /// place), counted as forwarded.
    Returned,
    Passed(fn(&mut PassReasons) -> &mut u64),
    Dropped(fn(&mut DropReasons) -> &mut u64),
}

impl Fate {
    pub fn verdict(self) -> Verdict {
        match self {
            Fate::Forwarded => Verdict::Redirect,
            Fate::Returned => Verdict::Tx,
            Fate::Passed(_) => Verdict::Pass,
            Fate::Dropped(_) => Verdict::Drop,
        }
    }
}

/// The output frame the kernel hands back after the run.
pub enum Out {
    Unchanged,
    Exact(Vec<u8>),
    /// Exact, but known only after the run: a translation whose port the
    /// datapath chose at random is read back from its maps, and the rest of
    /// the frame is built from it.
    Learned(FrameFromMaps),
}

/// Builds an expected frame from what the datapath wrote into its maps.
pub type FrameFromMaps = Box<dyn Fn(&Datapath) -> Vec<u8>>;

/// One fixture: an input frame, its fate and the exact output.
pub struct Case {
    pub what: String,
    pub frame: Vec<u8>,
    pub fate: Fate,
    pub out: Out,
    /// The kernel may refuse this input with EINVAL before the program runs
    /// (skb test runs on 6.18 reject IPv4 frames too short for an IPv4
    /// header); the case is then skipped instead of failed.
    pub refusable: bool,
}

impl Case {
    pub fn forwarded(what: impl Into<String>, frame: Vec<u8>, out: Vec<u8>) -> Self {
        Case {
            what: what.into(),
            frame,
            fate: Fate::Forwarded,
            out: Out::Exact(out),
            refusable: false,
        }
    }

    pub fn returned(what: impl Into<String>, frame: Vec<u8>, out: Vec<u8>) -> Self {
        Case {
            fate: Fate::Returned,
            ..Case::forwarded(what, frame, out)
        }
    }

    pub fn passed(
        what: impl Into<String>,
        frame: Vec<u8>,
        why: fn(&mut PassReasons) -> &mut u64,
    ) -> Self {
        Case {
            what: what.into(),
            frame,
            fate: Fate::Passed(why),
            out: Out::Unchanged,
            refusable: false,
        }
    }

    pub fn dropped(
        what: impl Into<String>,
        frame: Vec<u8>,
        why: fn(&mut DropReasons) -> &mut u64,
    ) -> Self {
        Case {
            what: what.into(),
            frame,
            fate: Fate::Dropped(why),
            out: Out::Unchanged,
            refusable: false,
        }
    }
}

/// Runs `case` arriving on loopback and checks the verdict, the output frame
/// and the delta of loopback's counters. Returns whether it ran (see
/// [`Case::refusable`]).
pub fn check(dp: &Datapath, hook: Hook, case: &Case) -> bool {
    let ctx = format!("{hook:?}: {}", case.what);
    let before = dp.counters(LO);
    let (code, out) = match dp.try_run(hook, &case.frame) {
        Ok(r) => r,
        Err(ProgramError::SyscallError(e))
            if case.refusable && e.io_error.raw_os_error() == Some(libc::EINVAL) =>
        {
            eprintln!("{ctx}: the kernel refuses this input (EINVAL), skipped");
            assert_eq!(dp.counters(LO), before, "{ctx}: refused yet counted");
            return false;
        }
        Err(e) => panic!("{ctx}: test_run: {}", chain(&e)),
    };

    let verdict = case.fate.verdict();
    assert_eq!(
        code,
        hook.code(verdict),
        "{ctx}: verdict {}, expected {}",
        hook.name_code(code),
        hook.name_code(hook.code(verdict)),
    );

    let learned;
    let want = match &case.out {
        Out::Unchanged => &case.frame,
        Out::Exact(f) => f,
        Out::Learned(f) => {
            learned = f(dp);
            &learned
        }
    };
    assert_frame(&ctx, &out, want);

    let mut expected = before;
    expected.rx.packets += 1;
    expected.rx.bytes += case.frame.len() as u64;
    match case.fate {
        Fate::Forwarded | Fate::Returned => {
            expected.forwarded.packets += 1;
            expected.forwarded.bytes += case.frame.len() as u64;
        }
        Fate::Passed(why) => *why(&mut expected.passed) += 1,
        Fate::Dropped(why) => *why(&mut expected.dropped) += 1,
    }
    let got = dp.counters(LO);
    assert_eq!(
        got, expected,
        "{ctx}: counters of lo (left: got, right: expected)"
    );
    true
}

/// Checks every case; returns the frames that ran.
pub fn check_all<'a>(dp: &Datapath, hook: Hook, cases: &'a [Case]) -> Vec<&'a [u8]> {
    cases
        .iter()
        .filter(|c| check(dp, hook, c))
        .map(|c| c.frame.as_slice())
        .collect()
}

/// Runs a program load with every signal blocked on the loading thread, and
/// again when the verifier still gave up with EAGAIN.
///
/// The verifier abandons a load with EAGAIN whenever a signal is pending on
/// the loading thread, and the NAT programs take seconds to verify while
/// other test threads spawn `ip`. Blocked, a process-directed signal goes to
/// another thread instead; the retries cover whatever still gets through.
/// Neither says anything about the program.
pub fn retry_eagain(
    mut load: impl FnMut() -> Result<(), ProgramError>,
) -> Result<(), ProgramError> {
    let _mask = SignalsBlocked::new();
    let mut tries = 0;
    loop {
        match load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && tries < 5 =>
            {
                tries += 1;
            }
            other => return other,
        }
    }
}

/// Every blockable signal blocked on this thread until dropped, when the
/// previous mask comes back (and with it anything that was held pending).
struct SignalsBlocked {
    old: libc::sigset_t,
}

impl SignalsBlocked {
    fn new() -> Self {
        // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask only
        // write the sets they are given.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
            assert_eq!(rc, 0, "pthread_sigmask: {rc}");
            Self { old }
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new` on this same thread.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}
