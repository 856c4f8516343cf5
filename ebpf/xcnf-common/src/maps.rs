//! Names of the maps in the eBPF object, and of their pins.
//!
//! The object names are what `aya` looks maps up by; the pin names are what
//! users type after `bpftool map dump pinned /sys/fs/bpf/xcnf/<instance>/`.

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

/// Per-interface, per-CPU counters: ifindex → [`crate::IfCounters`].
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

/// Every map the agent pins, in one list so pinning and cleanup cannot diverge.
pub const ALL: [MapName; 3] = [IFACES, COUNTERS, TX_PORTS];

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
