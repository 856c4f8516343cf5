//! Names of the maps in the eBPF object, and of their pins.
//!
//! The object names are what `aya` looks maps up by; the pin names are what
//! users type after `bpftool map dump pinned /sys/fs/bpf/xcnf/<instance>/`.

use core::mem::size_of;

use crate::nat;

/// One map of the datapath: its name in the object and its pin file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapName {
    /// The symbol name in the eBPF object (also the kernel's map name).
    pub object: &'static str,
    /// The file name under the instance's pin directory.
    pub pin: &'static str,
    /// Key and value sizes and capacity, checked against an existing pin
    /// before it is reused: aya adopts whatever is pinned at a path, and a
    /// map left by an older, differently laid out build must not be.
    pub key_size: u32,
    pub value_size: u32,
    /// 0 for maps sized at load time from the configuration.
    pub max_entries: u32,
}

/// Interfaces the datapath manages: ifindex → [`crate::IfaceConfig`].
pub const IFACES: MapName = MapName {
    object: "IFACES",
    pin: "ifaces",
    key_size: 4,
    value_size: core::mem::size_of::<crate::IfaceConfig>() as u32,
    max_entries: MAX_IFACES as u32,
};

/// Per-interface, per-CPU counters: [`crate::IfaceConfig::slot`] →
/// [`crate::IfCounters`] (a per-CPU array).
pub const COUNTERS: MapName = MapName {
    object: "COUNTERS",
    pin: "counters",
    key_size: 4,
    value_size: core::mem::size_of::<crate::IfCounters>() as u32,
    max_entries: MAX_IFACES as u32,
};

/// XDP redirect targets: ifindex → ifindex (a `DEVMAP_HASH`).
pub const TX_PORTS: MapName = MapName {
    object: "TX_PORTS",
    pin: "tx_ports",
    key_size: 4,
    // struct bpf_devmap_val: target ifindex and an optional program fd/id.
    value_size: 8,
    max_entries: MAX_IFACES as u32,
};

/// NAT44 settings: the single [`crate::nat::NatConfig`] at index 0.
pub const NAT_CONFIG: MapName = MapName {
    object: "NAT_CONFIG",
    pin: "nat_config",
    key_size: 4,
    value_size: size_of::<nat::NatConfig>() as u32,
    max_entries: 1,
};

/// Pool address ranges: index → [`crate::nat::PoolRange`].
pub const NAT_POOLS: MapName = MapName {
    object: "NAT_POOLS",
    pin: "nat_pools",
    key_size: 4,
    value_size: size_of::<nat::PoolRange>() as u32,
    max_entries: nat::MAX_POOL_RANGES,
};

/// Static and identity mappings: [`crate::nat::StaticKey`] → [`crate::nat::StaticMapping`].
pub const NAT_STATIC: MapName = MapName {
    object: "NAT_STATIC",
    pin: "nat_static",
    key_size: size_of::<nat::StaticKey>() as u32,
    value_size: size_of::<nat::StaticMapping>() as u32,
    max_entries: nat::MAX_STATIC,
};

/// Addresses the NAT owns: `[u8; 4]` → [`crate::nat::NatAddr`].
pub const NAT_ADDRS: MapName = MapName {
    object: "NAT_ADDRS",
    pin: "nat_addrs",
    key_size: 4,
    value_size: size_of::<nat::NatAddr>() as u32,
    max_entries: nat::NAT_ADDRS_ENTRIES,
};

/// Session halves (LRU): [`crate::nat::SessionKey`] → [`crate::nat::Session`].
/// `max_entries` here is the compiled-in size; the agent sets the real one
/// from `maxSessions` with [`crate::nat::lru_entries`].
pub const NAT_SESSIONS: MapName = MapName {
    object: "NAT_SESSIONS",
    pin: "nat_sessions",
    key_size: size_of::<nat::SessionKey>() as u32,
    value_size: size_of::<nat::Session>() as u32,
    max_entries: 0,
};

/// Endpoint-independent bindings (LRU): [`crate::nat::BindingKey`] →
/// [`crate::nat::Binding`]; sized like `nat_sessions`.
pub const NAT_BINDINGS: MapName = MapName {
    object: "NAT_BINDINGS",
    pin: "nat_bindings",
    key_size: size_of::<nat::BindingKey>() as u32,
    value_size: size_of::<nat::Binding>() as u32,
    max_entries: 0,
};

/// First-fragment records (LRU): [`crate::nat::FragKey`] → [`crate::nat::FragXlate`].
pub const NAT_FRAGS: MapName = MapName {
    object: "NAT_FRAGS",
    pin: "nat_frags",
    key_size: size_of::<nat::FragKey>() as u32,
    value_size: size_of::<nat::FragXlate>() as u32,
    max_entries: nat::MAX_FRAGS,
};

/// Paired pooling (hash, allocated as used): inside host `[u8; 4]` →
/// [`crate::nat::HostPairing`]; sized like `nat_sessions`.
pub const NAT_HOSTS: MapName = MapName {
    object: "NAT_HOSTS",
    pin: "nat_hosts",
    key_size: 4,
    value_size: size_of::<nat::HostPairing>() as u32,
    max_entries: 0,
};

/// Active-session accounting: see [`crate::nat::active`].
pub const NAT_ACTIVE: MapName = MapName {
    object: "NAT_ACTIVE",
    pin: "nat_active",
    key_size: 4,
    value_size: 8,
    max_entries: nat::active::LEN as u32,
};

/// Per-CPU [`crate::nat::NatStats`] at index 0.
pub const NAT_STATS: MapName = MapName {
    object: "NAT_STATS",
    pin: "nat_stats",
    key_size: 4,
    value_size: size_of::<nat::NatStats>() as u32,
    max_entries: 1,
};

/// [`crate::nat::RouteCtl`] at index 0: the sessions' route cache control.
pub const ROUTE_CTL: MapName = MapName {
    object: "ROUTE_CTL",
    pin: "route_ctl",
    key_size: 4,
    value_size: size_of::<nat::RouteCtl>() as u32,
    max_entries: 1,
};

/// The version of what the maps' keys and values mean. Sizes are checked
/// pin by pin; bump this when a layout changes without changing a size (a
/// field moved or reinterpreted, a map's type changed), so that pins of the
/// older build are recreated instead of being read the wrong way.
///
/// 2: `COUNTERS` became a per-CPU array indexed by `IfaceConfig::slot`.
/// 3: `Session` shrank to 64 bytes (its size alone would have caught it).
/// 4: `DropReasons` gained `nat_ip_options` (as did `IfCounters`' size).
/// 5: `nat_hosts` became a plain hash and `HostPairing` records `used_s`.
pub const LAYOUT_VERSION: u32 = 5;

/// FNV-1a, 64 bit: the fingerprints the agent records next to its pins
/// (map layout, verified programs). Not for anything adversarial.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn write(&mut self, bytes: &[u8]) -> &mut Self {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// A fingerprint of every map's name, sizes and [`LAYOUT_VERSION`],
/// recorded next to the pins by the agent that created them.
pub fn layout_fingerprint() -> u64 {
    let mut h = Fnv1a::default();
    h.write(&LAYOUT_VERSION.to_le_bytes());
    for m in ALL {
        h.write(m.object.as_bytes())
            .write(m.pin.as_bytes())
            .write(&m.key_size.to_le_bytes())
            .write(&m.value_size.to_le_bytes())
            .write(&m.max_entries.to_le_bytes());
    }
    h.finish()
}

/// Every map the agent pins, in one list so pinning and cleanup cannot diverge.
pub const ALL: [MapName; 14] = [
    IFACES,
    COUNTERS,
    TX_PORTS,
    NAT_CONFIG,
    NAT_POOLS,
    NAT_STATIC,
    NAT_ADDRS,
    NAT_SESSIONS,
    NAT_BINDINGS,
    NAT_FRAGS,
    NAT_HOSTS,
    NAT_ACTIVE,
    NAT_STATS,
    ROUTE_CTL,
];

/// Upper bound of managed interfaces, shared by all per-interface maps.
///
/// An NSM endpoint creates one interface per connected client, so this is
/// sized well past the handful of interfaces a plain CNF has.
pub const MAX_IFACES: usize = 1024;

/// Names of the programs in the eBPF object.
pub mod programs {
    /// The XDP forwarder.
    pub const XDP: &str = "xcnf_xdp";
    /// The TC (tcx or clsact) ingress forwarder.
    pub const TC: &str = "xcnf_tc";
}
