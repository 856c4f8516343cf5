//! NAT44 map layouts shared by the datapath, the agent and `xcnfctl`.
//!
//! Addresses are `[u8; 4]` in wire order and ports are host-order `u16`, so
//! `bpftool map dump` prints `[192,168,100,10]` and `8080` instead of opaque
//! big-endian integers.
//!
//! # Sessions
//!
//! A session is two entries in the `nat_sessions` LRU map, one per direction.
//! Each is keyed by the 5-tuple exactly as a packet of that direction arrives
//! (plus the role of the interface it arrives on) and holds the complete
//! rewritten tuple. The peer entry's key is therefore always the swapped
//! rewritten tuple, which is how the sweeper finds and deletes both halves
//! together, and how ICMP errors find the session of the packet they quote.
//!
//! For ICMP queries the identifier takes the place of the inside host's port:
//! an echo request is keyed with `sport = id, dport = 0`, an echo reply with
//! `sport = 0, dport = id`.

/// Interface roles, as written into [`crate::IfaceConfig::role`] and used as
/// [`SessionKey::dir`]: the role of the interface a packet arrived on.
pub mod role {
    /// Not part of NAT44: forwarded unchanged.
    pub const NONE: u8 = 0;
    pub const INSIDE: u8 = 1;
    pub const OUTSIDE: u8 = 2;
}

/// IP protocol numbers the translator treats specially.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
}

/// Key of one session half.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// [`role`] of the interface this direction arrives on.
    pub dir: u8,
    pub _pad: [u8; 2],
}

/// [`Session::flags`]: TCP flags seen in this half's direction. The datapath
/// only records them; the sweeper derives the state and its timeout.
pub mod tcp_seen {
    pub const SYN: u8 = 1;
    pub const FIN: u8 = 2;
    pub const RST: u8 = 4;
}

/// [`Session::kind`] bits: how the session was created.
pub mod kind {
    /// Source translated from a pool (dynamic SNAT).
    pub const SNAT: u8 = 1;
    /// Destination translated by a static mapping.
    pub const DNAT: u8 = 2;
    /// Source translated by a static mapping (outbound from a mapped host).
    pub const STATIC_SNAT: u8 = 4;
    /// Inside to inside through an external address (RFC 4787 REQ-9).
    pub const HAIRPIN: u8 = 8;
    /// Address-only translation of a protocol without ports.
    pub const ADDR_ONLY: u8 = 16;
}

/// Value of one session half: the tuple after translation, and bookkeeping.
///
/// Exactly 64 bytes, so that with the kernel's 48-byte element header and
/// the 16-byte key a hash element is 128 bytes: two cache lines, the second
/// of them all an established packet reads and writes. At 80 bytes an
/// element straddled three lines, one more miss per packet once the table
/// outgrows the caches. Hence the narrow fields: `created_s` in seconds, the
/// ingress as a counter slot, a 16-bit generation, no source MAC (see
/// `route_oif`), and the initiator as a [`Session::flags`] bit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// Rewritten source address, destination address and ports.
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    /// [`role`] of the interface the peer half arrives on.
    pub peer_dir: u8,
    /// [`tcp_seen`] bits, and [`INITIATOR`] in the half created by the
    /// flow's first packet.
    pub flags: u8,
    /// [`kind`] bits, the same in both halves.
    pub kind: u8,
    /// The route cache (see [`RouteCtl`]): the FIB's answer for this half's
    /// translated packets. `route_tos`, `route_islot` (the ingress
    /// interface's `IfaceConfig::slot`) and `route_gen` (the low 16 bits of
    /// [`RouteCtl::generation`]) are what it was looked up for and under;
    /// `route_at_ms` is when (milliseconds of the session clock, wrapping);
    /// `route_mtu` is the largest IPv4 total length it accepted. The answer
    /// is a redirect out of `route_oif` (0: nothing cached) to `route_dmac`,
    /// from the egress's own MAC: it is cached only when the FIB's source MAC
    /// is the one registered in `ifaces`, and a hit takes it from there.
    pub route_tos: u8,
    pub route_oif: u32,
    pub route_at_ms: u32,
    pub route_gen: u16,
    pub route_islot: u16,
    pub route_mtu: u16,
    pub route_dmac: [u8; 6],
    /// Seconds of `CLOCK_MONOTONIC` (the `bpf_ktime_get_coarse_ns` clock).
    pub created_s: u32,
    /// Nanoseconds of the same clock.
    pub last_seen_ns: u64,
    /// Packets and bytes in this direction. Updated without atomics, so two
    /// CPUs serving the same direction at once can lose an increment.
    pub packets: u64,
    pub bytes: u64,
}

/// [`Session::flags`] bit of the half the flow's first packet created (the
/// [`tcp_seen`] bits are the low ones).
pub const INITIATOR: u8 = 0x80;

impl Session {
    /// Whether the flow's first packet created this half.
    pub fn is_initiator(&self) -> bool {
        self.flags & INITIATOR != 0
    }

    /// `created_s` on `last_seen_ns`'s scale: the start of the second the
    /// session was created in.
    pub fn created_ns(&self) -> u64 {
        u64::from(self.created_s) * 1_000_000_000
    }
}

/// The single entry of `route_ctl`: what decides whether a session's cached
/// route (the FIB's answer for its translated packets) may be used.
///
/// The datapath asks the FIB once per session half and then reuses the
/// answer, because the lookup was a quarter of a translated packet's cost.
/// The agent bumps `generation` on every change that can alter an answer
/// (routes, rules, addresses, links, neighbours, its own interface maps), so
/// a stale entry is never used after the agent has seen the change; an
/// entry older than `max_age_ms` is looked up again anyway, which bounds
/// staleness when no agent runs (`--keep-datapath`) or notifications were
/// lost. `max_age_ms` 0 turns the cache off. The same two fields govern the
/// programs' per-CPU cache of `ifaces` entries (`ebpf/xcnf-ebpf/src/iface.rs`),
/// which is why the agent bumps after every change to its interface maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteCtl {
    pub generation: u32,
    pub max_age_ms: u32,
}

/// The age bound the agent writes into [`RouteCtl::max_age_ms`].
pub const ROUTE_MAX_AGE_MS: u32 = 1000;

impl SessionKey {
    /// Key of the peer half of the session whose half `(self, v)` is.
    pub fn peer(&self, v: &Session) -> SessionKey {
        SessionKey {
            saddr: v.daddr,
            daddr: v.saddr,
            sport: v.dport,
            dport: v.sport,
            proto: self.proto,
            dir: v.peer_dir,
            _pad: [0; 2],
        }
    }
}

/// Key of an endpoint-independent mapping (RFC 4787 REQ-1) in `nat_bindings`.
///
/// Each binding is two entries: `dir = INSIDE` maps the inside endpoint to
/// its external endpoint, `dir = OUTSIDE` maps back. The `OUTSIDE` entry is
/// inserted first with `BPF_NOEXIST`: it is the atomic reservation of the
/// external port, so two CPUs can never hand out the same one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BindingKey {
    pub addr: [u8; 4],
    pub port: u16,
    pub proto: u8,
    pub dir: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    pub addr: [u8; 4],
    pub port: u16,
    pub _pad: [u8; 2],
    /// Last time a session was created on this binding; the sweeper keeps a
    /// binding without sessions for a grace period after it.
    pub last_used_ns: u64,
}

/// [`NatConfig::flags`].
pub mod config_flags {
    /// NAT44 is configured; without it every role is ignored.
    pub const ENABLED: u32 = 1;
    /// Endpoint-dependent mapping: the external port is reserved per
    /// destination instead of per inside endpoint.
    pub const ENDPOINT_DEPENDENT: u32 = 2;
}

/// The single entry of `nat_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatConfig {
    /// [`config_flags`].
    pub flags: u32,
    /// Number of valid entries at the start of `nat_pools`.
    pub pool_ranges: u32,
    /// Sum of `count` over those ranges: the paired-pooling hash picks one of
    /// these addresses for each inside host.
    pub pool_addrs: u32,
    /// New sessions are refused once this many are active.
    pub max_sessions: u32,
}

/// One contiguous range of pool addresses sharing a port range, in
/// `nat_pools`. The agent splits configured pools around addresses that a
/// 1:1 static mapping owns, so the allocator never has to skip them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolRange {
    pub first: [u8; 4],
    /// Number of addresses from `first` on.
    pub count: u32,
    /// Index of `first` among all pool addresses (sum of earlier counts).
    pub base: u32,
    pub port_min: u16,
    pub port_max: u16,
}

/// Key of `nat_static`. Address-only mappings use `port = 0, proto = 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StaticKey {
    pub addr: [u8; 4],
    pub port: u16,
    pub proto: u8,
    /// `OUTSIDE`: keyed by the external endpoint (inbound lookup);
    /// `INSIDE`: keyed by the local endpoint (outbound lookup).
    pub dir: u8,
}

/// [`StaticMapping::flags`].
pub mod static_flags {
    /// Exempt from translation: the endpoint is forwarded unchanged and its
    /// port is never allocated.
    pub const IDENTITY: u8 = 1;
}

/// Value of `nat_static`: the other side's endpoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StaticMapping {
    pub addr: [u8; 4],
    pub port: u16,
    pub flags: u8,
    pub _pad: u8,
}

/// [`NatAddr::flags`].
pub mod addr_flags {
    pub const POOL: u8 = 1;
    pub const STATIC: u8 = 2;
}

/// Value of `nat_addrs`, keyed by a `[u8; 4]` address the NAT owns: the
/// datapath answers ARP for it and drops traffic to it that matches nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatAddr {
    pub flags: u8,
    pub _pad: [u8; 3],
}

/// Key of `nat_frags`: one IPv4 datagram being fragmented.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub id: u16,
    pub proto: u8,
    pub dir: u8,
}

/// Value of `nat_frags`: the addresses the first fragment was rewritten to,
/// applied to the datagram's later fragments (which carry no ports).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FragXlate {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

/// Indexes of `nat_active` (an array of `u64`). Active sessions are
/// `created + base` (wrapping): the datapath atomically adds to `created`, and
/// only the sweeper writes `base` (live sessions it counted minus `created`
/// as it was when the count began), so neither side ever races the other.
pub mod active {
    pub const CREATED: u32 = 0;
    pub const BASE: u32 = 1;
    /// Round-robin cursor of paired pooling: the next new host's pool index.
    pub const NEXT_ADDR: u32 = 2;
    pub const LEN: usize = 3;
}

/// Global, per-CPU NAT event counters (`nat_stats`). Per-packet outcomes are
/// in the per-interface counters; these say what the translator did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatStats {
    /// Sessions created, by kind.
    pub snat_sessions: u64,
    pub dnat_sessions: u64,
    pub static_snat_sessions: u64,
    pub hairpin_sessions: u64,
    pub addr_only_sessions: u64,
    /// Packets rewritten, by the role of the interface they arrived on.
    pub translated_from_inside: u64,
    pub translated_from_outside: u64,
    /// ICMP errors whose quoted packet was translated (RFC 5508).
    pub icmp_errors_translated: u64,
    /// Non-first fragments translated from a first fragment's record.
    pub fragments_translated: u64,
    /// Packets of exempt endpoints (identity mappings).
    pub identity: u64,
    /// ARP requests for NAT addresses answered by the datapath.
    pub arp_replies: u64,
    /// New flows refused: no free port on the paired pool address.
    pub pool_exhausted: u64,
    /// New flows refused: `max_sessions` active sessions.
    pub table_full: u64,
    /// Packets to a NAT address that match no session or mapping.
    pub no_mapping: u64,
    /// Non-first fragments without a record of their first fragment.
    pub fragment_untracked: u64,
    /// ICMP errors to a NAT address quoting no known session.
    pub icmp_error_unmatched: u64,
    /// Session creation lost a race to another CPU for the same flow (the
    /// packet then used the winner's session; not an error).
    pub create_races: u64,
}

impl NatStats {
    /// Number of counters.
    pub const FIELDS: usize = core::mem::size_of::<NatStats>() / 8;

    /// The counters in declaration order.
    pub fn fields(&self) -> [u64; Self::FIELDS] {
        // SAFETY: repr(C), only u64 fields, no padding (size asserted below),
        // so the struct is exactly this array.
        unsafe { core::mem::transmute::<NatStats, [u64; Self::FIELDS]>(*self) }
    }

    /// The inverse of [`NatStats::fields`].
    pub fn from_fields(f: [u64; Self::FIELDS]) -> Self {
        // SAFETY: as in `fields`; every bit pattern is a valid NatStats.
        unsafe { core::mem::transmute::<[u64; Self::FIELDS], NatStats>(f) }
    }

    /// The counters over all CPUs, from the per-CPU values of `nat_stats`.
    pub fn summed<'a>(per_cpu: impl IntoIterator<Item = &'a Self>) -> Self {
        let mut sum = Self::default();
        for s in per_cpu {
            sum.accumulate(s);
        }
        sum
    }

    /// Adds another CPU's counters into these (wrapping, like the kernel's).
    pub fn accumulate(&mut self, o: &Self) {
        let mut a = self.fields();
        for (x, y) in a.iter_mut().zip(o.fields()) {
            *x = x.wrapping_add(y);
        }
        *self = Self::from_fields(a);
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (all): `repr(C)`, integer and byte-array fields only, sizes
    // asserted below so no implicit padding exists.
    unsafe impl aya::Pod for super::SessionKey {}
    unsafe impl aya::Pod for super::Session {}
    unsafe impl aya::Pod for super::BindingKey {}
    unsafe impl aya::Pod for super::Binding {}
    unsafe impl aya::Pod for super::NatConfig {}
    unsafe impl aya::Pod for super::PoolRange {}
    unsafe impl aya::Pod for super::StaticKey {}
    unsafe impl aya::Pod for super::StaticMapping {}
    unsafe impl aya::Pod for super::NatAddr {}
    unsafe impl aya::Pod for super::FragKey {}
    unsafe impl aya::Pod for super::FragXlate {}
    unsafe impl aya::Pod for super::NatStats {}
    unsafe impl aya::Pod for super::HostPairing {}
    unsafe impl aya::Pod for super::RouteCtl {}
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<SessionKey>() == 16);
    assert!(size_of::<Session>() == 64);
    assert!(size_of::<RouteCtl>() == 8);
    assert!(size_of::<BindingKey>() == 8);
    assert!(size_of::<Binding>() == 16);
    assert!(size_of::<NatConfig>() == 16);
    assert!(size_of::<PoolRange>() == 16);
    assert!(size_of::<StaticKey>() == 8);
    assert!(size_of::<StaticMapping>() == 8);
    assert!(size_of::<NatAddr>() == 4);
    assert!(size_of::<FragKey>() == 12);
    assert!(size_of::<FragXlate>() == 8);
    assert!(size_of::<NatStats>() == 8 * 17);
    assert!(size_of::<HostPairing>() == 8);
};

/// Upper bounds of the configuration maps.
pub const MAX_POOL_RANGES: u32 = 64;
/// Static plus identity mappings one config may have; each is two
/// `nat_static` entries, one per direction.
pub const MAX_MAPPINGS: u32 = 16_384;
/// Entries of `nat_static`: twice what a config may use, because a change
/// writes the new entries before it removes the stale ones (so a mapping
/// that stays never disappears in between), and one change may replace
/// every mapping. A map sized to the config limit could not take any
/// change to a config at that limit.
pub const MAX_STATIC: u32 = 4 * MAX_MAPPINGS;
/// Addresses one config may own: pool addresses plus static mappings'
/// external addresses.
pub const MAX_NAT_ADDRS: u32 = 65536;
/// Entries of `nat_addrs`: twice what a config may own, for the reason given
/// at [`MAX_STATIC`] (a change writes the new addresses before it removes
/// the stale ones, so replacing a large pool needs room for both).
pub const NAT_ADDRS_ENTRIES: u32 = 2 * MAX_NAT_ADDRS;
pub const MAX_FRAGS: u32 = 8192;
/// Default `maxSessions` (config.md), and the compiled-in map size the agent
/// overrides at load time.
pub const DEFAULT_MAX_SESSIONS: u32 = 262_144;

/// Entries of `nat_sessions` (and `nat_bindings`) for `max_sessions`
/// sessions: two halves each, plus slack. The kernel's LRU evicts before the
/// map is nominally full (each CPU holds a local free list), so admission is
/// enforced by counting and the slack keeps the LRU from ever evicting a live
/// half (Cilium #29305/#34833 were exactly such half-evictions).
pub fn lru_entries(max_sessions: u32, cpus: u32) -> u32 {
    let halves = max_sessions.saturating_mul(2);
    let slack = (halves / 8).max(cpus.saturating_mul(512)).max(4096);
    halves.saturating_add(slack)
}

/// Tries per new flow before it is refused with `pool_exhausted`: the source
/// port itself, then [`PORT_RANDOM_TRIES`] random ports, then a linear probe.
pub const PORT_TRIES: u32 = 64;
pub const PORT_RANDOM_TRIES: u32 = 8;
/// Default port range of a pool (config.md).
pub const DEFAULT_PORT_MIN: u16 = 1024;
pub const DEFAULT_PORT_MAX: u16 = 65535;

/// Value of `nat_hosts`, keyed by an inside host's `[u8; 4]` address:
/// paired pooling (RFC 4787 REQ-2). A host's first translated flow takes the
/// next pool address in turn (`nat_active[NEXT_ADDR]`, so the first host gets
/// the pool's first address, as in VPP), and every later flow of that host
/// uses the same address.
///
/// `nat_hosts` is a plain hash, not an LRU: evicting the pairing of a host
/// whose long-lived sessions open nothing new would pair it again, to
/// another address, while they last. It is sized like `nat_sessions` (a
/// paired host has at least one session or binding) and allocated as used;
/// the agent's sweeper removes a pairing once no session or binding of the
/// host is left. A new host that finds it full is refused like a flow that
/// finds the session table full.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostPairing {
    /// Index among all pool addresses (see [`PoolRange::base`]).
    pub index: u32,
    /// When a new flow last used the pairing, in seconds of the datapath's
    /// clock (`CLOCK_MONOTONIC`): the sweeper keeps a pairing that was used
    /// after its snapshot began, whose flow it may not have seen.
    pub used_s: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_of_peer_is_self() {
        let k = SessionKey {
            saddr: [192, 168, 100, 10],
            daddr: [80, 80, 80, 80],
            sport: 40000,
            dport: 80,
            proto: proto::TCP,
            dir: role::INSIDE,
            _pad: [0; 2],
        };
        let v = Session {
            saddr: [80, 80, 80, 100],
            daddr: [80, 80, 80, 80],
            sport: 1024,
            dport: 80,
            peer_dir: role::OUTSIDE,
            ..Default::default()
        };
        let p = k.peer(&v);
        assert_eq!(
            (p.saddr, p.daddr, p.sport, p.dport, p.dir),
            ([80, 80, 80, 80], [80, 80, 80, 100], 80, 1024, role::OUTSIDE)
        );
        let pv = Session {
            saddr: k.daddr,
            daddr: k.saddr,
            sport: k.dport,
            dport: k.sport,
            peer_dir: k.dir,
            ..Default::default()
        };
        assert_eq!(p.peer(&pv), k);
    }

    #[test]
    fn stats_accumulate_every_field() {
        let mut f = [0u64; NatStats::FIELDS];
        for (i, v) in f.iter_mut().enumerate() {
            *v = 1 << i;
        }
        let s = NatStats::from_fields(f);
        assert_eq!(s.snat_sessions, 1);
        assert_eq!(s.create_races, 1 << 16);
        let acc = NatStats::summed([&s, &s]);
        for (i, v) in acc.fields().iter().enumerate() {
            assert_eq!(*v, 2 << i, "field {i} not accumulated");
        }
    }

    #[test]
    fn lru_has_room_for_both_halves() {
        assert!(lru_entries(262_144, 2) >= 2 * 262_144 + 4096);
        assert!(lru_entries(16, 64) >= 32 + 64 * 512);
        assert_eq!(lru_entries(u32::MAX, 2), u32::MAX);
    }
}
