//! What the double records, and the checks VPP's handlers make before they
//! change anything (with the `VNET_API_ERROR_*` codes they answer).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

// VNET_API_ERROR_* codes (src/vnet/error.h) the handlers below answer.
pub const INVALID_SW_IF_INDEX: i32 = -2;
pub const NO_SUCH_FIB: i32 = -3;
pub const NO_SUCH_ENTRY: i32 = -6;
pub const INVALID_VALUE: i32 = -7;
pub const SYSCALL_ERROR_2: i32 = -12;
pub const NO_PATHS_IN_ROUTE: i32 = -52;
pub const ADDRESS_NOT_FOUND_FOR_INTERFACE: i32 = -60;
pub const SUBIF_ALREADY_EXISTS: i32 = -68;
pub const INVALID_ARGUMENT: i32 = -73;
pub const UNEXPECTED_INTF_STATE: i32 = -74;
pub const VALUE_EXIST: i32 = -81;
pub const INVALID_ADDRESS_FAMILY: i32 = -97;
pub const ADDRESS_IN_USE: i32 = -105;
pub const ENTRY_ALREADY_EXISTS: i32 = -116;
pub const UNSUPPORTED: i32 = -126;
pub const DUPLICATE_IF_ADDRESS: i32 = -127;
pub const FEATURE_ALREADY_DISABLED: i32 = -169;
pub const FEATURE_ALREADY_ENABLED: i32 = -170;

/// The memif socket VPP always has (id 0).
pub const DEFAULT_MEMIF_SOCKET: &str = "/run/vpp/memif.sock";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Master,
    Slave,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Ethernet,
    Ip,
    PuntInject,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memif {
    pub role: Role,
    pub mode: Mode,
    pub id: u32,
    pub socket_id: u32,
    pub ring_size: u32,
    pub buffer_size: u16,
}

/// A software interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub mac: [u8; 6],
    pub admin_up: bool,
    pub addresses: BTreeSet<(Ipv4Addr, u8)>,
    /// `None` for local0.
    pub memif: Option<Memif>,
}

/// One IPv4 route path as received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RoutePath {
    pub sw_if_index: u32,
    pub next_hop: Ipv4Addr,
    pub weight: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nat44 {
    /// Sessions per thread (0 in the request means 63 × 1024).
    pub sessions: u32,
    pub inside_vrf: u32,
    pub outside_vrf: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatIfSides {
    pub inside: bool,
    pub outside: bool,
}

/// A static mapping as `nat44_add_del_static_mapping_v2` gave it. Ports are
/// 0 for address-only mappings.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StaticMap {
    pub addr_only: bool,
    pub protocol: u8,
    pub local: Ipv4Addr,
    pub local_port: u16,
    pub external: Ipv4Addr,
    pub external_port: u16,
    pub vrf_id: u32,
    pub flags: u8,
    pub tag: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdentityMap {
    pub addr_only: bool,
    pub addr: Ipv4Addr,
    pub protocol: u8,
    pub port: u16,
    pub vrf_id: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub udp: u32,
    pub tcp_established: u32,
    pub tcp_transitory: u32,
    pub icmp: u32,
}

impl Default for Timeouts {
    /// nat44-ed's defaults.
    fn default() -> Self {
        Self {
            udp: 300,
            tcp_established: 7440,
            tcp_transitory: 240,
            icmp: 60,
        }
    }
}

/// Everything VPP was told, as the double recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VppState {
    pub memif_sockets: BTreeMap<u32, String>,
    pub interfaces: BTreeMap<u32, Iface>,
    /// (table_id, prefix address, prefix length) → paths.
    pub routes: BTreeMap<(u32, Ipv4Addr, u8), Vec<RoutePath>>,
    /// `Some` while nat44-ed is enabled.
    pub nat44: Option<Nat44>,
    /// Pool addresses (VPP keeps a range as single addresses).
    pub nat_addresses: BTreeSet<Ipv4Addr>,
    pub nat_interfaces: BTreeMap<u32, NatIfSides>,
    pub static_mappings: BTreeSet<StaticMap>,
    pub identity_mappings: BTreeSet<IdentityMap>,
    pub timeouts: Timeouts,
    pub cli_commands: Vec<String>,
}

impl Default for VppState {
    /// A freshly started VPP: local0 and the default memif socket.
    fn default() -> Self {
        let local0 = Iface {
            name: "local0".to_owned(),
            mac: [0; 6],
            admin_up: false,
            addresses: BTreeSet::new(),
            memif: None,
        };
        Self {
            memif_sockets: BTreeMap::from([(0, DEFAULT_MEMIF_SOCKET.to_owned())]),
            interfaces: BTreeMap::from([(0, local0)]),
            routes: BTreeMap::new(),
            nat44: None,
            nat_addresses: BTreeSet::new(),
            nat_interfaces: BTreeMap::new(),
            static_mappings: BTreeSet::new(),
            identity_mappings: BTreeSet::new(),
            timeouts: Timeouts::default(),
            cli_commands: Vec::new(),
        }
    }
}

type Rv<T = ()> = Result<T, i32>;

fn prefix_contains(net: Ipv4Addr, len: u8, a: Ipv4Addr) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    };
    u32::from(net) & mask == u32::from(a) & mask
}

impl VppState {
    fn iface(&mut self, sw_if_index: u32) -> Rv<&mut Iface> {
        self.interfaces
            .get_mut(&sw_if_index)
            .ok_or(INVALID_SW_IF_INDEX)
    }

    fn nat_enabled(&self) -> Rv {
        self.nat44.map(|_| ()).ok_or(UNSUPPORTED)
    }

    /// memif.c `memif_socket_filename_add_del` (after the API handler
    /// turned `~0` on add into an unused id).
    pub fn memif_socket(&mut self, is_add: bool, id: u32, filename: &str) -> Rv<u32> {
        if id == 0 {
            return Err(INVALID_ARGUMENT);
        }
        if !is_add {
            if !self.memif_sockets.contains_key(&id) {
                return Err(INVALID_ARGUMENT);
            }
            let in_use = self
                .interfaces
                .values()
                .any(|i| i.memif.is_some_and(|m| m.socket_id == id));
            if in_use {
                return Err(UNEXPECTED_INTF_STATE);
            }
            self.memif_sockets.remove(&id);
            return Ok(id);
        }
        if filename.is_empty() {
            return Err(INVALID_ARGUMENT);
        }
        let id = if id == u32::MAX {
            (1..)
                .find(|i| !self.memif_sockets.contains_key(i))
                .unwrap_or(u32::MAX)
        } else {
            id
        };
        match self.memif_sockets.get(&id) {
            Some(f) if f == filename => Ok(id),
            Some(_) => Err(ENTRY_ALREADY_EXISTS),
            None => {
                self.memif_sockets.insert(id, filename.to_owned());
                Ok(id)
            }
        }
    }

    /// memif_api.c + memif.c `memif_create_if`.
    pub fn memif_create(&mut self, m: Memif, hw_addr: [u8; 6]) -> Rv<u32> {
        if !m.ring_size.is_power_of_two() {
            return Err(INVALID_ARGUMENT);
        }
        if !self.memif_sockets.contains_key(&m.socket_id) {
            return Err(INVALID_ARGUMENT);
        }
        for other in self.interfaces.values().filter_map(|i| i.memif) {
            if other.socket_id == m.socket_id && (other.role != m.role || other.id == m.id) {
                return Err(SUBIF_ALREADY_EXISTS);
            }
        }
        if m.mode == Mode::PuntInject {
            return Err(SYSCALL_ERROR_2);
        }
        // VPP reuses the indexes of deleted interfaces (a pool free list).
        let sw_if_index = (1..)
            .find(|i| !self.interfaces.contains_key(i))
            .unwrap_or(u32::MAX);
        // memif.c: without hw_addr, 02:fe and four bytes of random_u32
        // seeded from the clock, so every create gets another MAC.
        let mac = if hw_addr == [0; 6] {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let r = nanos.wrapping_mul(1_664_525).wrapping_add(sw_if_index);
            let b = r.to_le_bytes();
            [0x02, 0xfe, b[0], b[1], b[2], b[3]]
        } else {
            hw_addr
        };
        self.interfaces.insert(
            sw_if_index,
            Iface {
                name: format!("memif{}/{}", m.socket_id, m.id),
                mac,
                admin_up: false,
                addresses: BTreeSet::new(),
                memif: Some(m),
            },
        );
        Ok(sw_if_index)
    }

    /// Deleting an interface takes its addresses, NAT features and routes
    /// through it along.
    pub fn memif_delete(&mut self, sw_if_index: u32) -> Rv {
        if self.iface(sw_if_index)?.memif.is_none() {
            return Err(INVALID_SW_IF_INDEX);
        }
        self.interfaces.remove(&sw_if_index);
        self.nat_interfaces.remove(&sw_if_index);
        for paths in self.routes.values_mut() {
            paths.retain(|p| p.sw_if_index != sw_if_index);
        }
        self.routes.retain(|_, p| !p.is_empty());
        Ok(())
    }

    pub fn set_flags(&mut self, sw_if_index: u32, flags: u32) -> Rv {
        self.iface(sw_if_index)?.admin_up = flags & 1 != 0;
        Ok(())
    }

    /// ip4_forward.c `ip4_add_del_interface_address_internal`.
    pub fn address(
        &mut self,
        sw_if_index: u32,
        is_add: bool,
        del_all: bool,
        af: u8,
        addr: Ipv4Addr,
        len: u8,
    ) -> Rv {
        self.iface(sw_if_index)?;
        if del_all {
            self.iface(sw_if_index)?.addresses.clear();
            return Ok(());
        }
        if af != 0 {
            return Err(INVALID_ADDRESS_FAMILY);
        }
        if len > 32 {
            return Err(INVALID_VALUE);
        }
        if !is_add {
            return if self.iface(sw_if_index)?.addresses.remove(&(addr, len)) {
                Ok(())
            } else {
                Err(ADDRESS_NOT_FOUND_FOR_INTERFACE)
            };
        }
        for (idx, i) in &self.interfaces {
            for (a, l) in &i.addresses {
                // VPP 26.06 answers a repeated add of an interface's own
                // address with "address in use" (seen against the real one).
                if (*a, *l) == (addr, len) && *idx == sw_if_index {
                    return Err(ADDRESS_IN_USE);
                }
                if (*a, *l) == (addr, len) {
                    return Err(DUPLICATE_IF_ADDRESS);
                }
                let overlaps = prefix_contains(*a, *l, addr) || prefix_contains(addr, len, *a);
                // An interface may have several addresses of one prefix.
                let same_prefix_here = *idx == sw_if_index && *l == len;
                if overlaps && !same_prefix_here {
                    return Err(ADDRESS_IN_USE);
                }
            }
        }
        self.iface(sw_if_index)?.addresses.insert((addr, len));
        Ok(())
    }

    /// fib_api.c: paths name existing interfaces; an add needs a path; a
    /// non-multipath add replaces the entry's paths.
    pub fn route(
        &mut self,
        is_add: bool,
        table_id: u32,
        addr: Ipv4Addr,
        len: u8,
        paths: Vec<RoutePath>,
    ) -> Rv {
        if table_id != 0 {
            // Only the default table exists: no VRF is ever created.
            return Err(NO_SUCH_FIB);
        }
        for p in &paths {
            if p.sw_if_index != u32::MAX && !self.interfaces.contains_key(&p.sw_if_index) {
                return Err(INVALID_SW_IF_INDEX);
            }
        }
        let key = (table_id, addr, len);
        if is_add {
            if paths.is_empty() {
                return Err(NO_PATHS_IN_ROUTE);
            }
            self.routes.insert(key, paths);
        } else {
            // Removing a route that is not there is not an error in VPP.
            self.routes.remove(&key);
        }
        Ok(())
    }

    /// nat44_ed.c `nat44_plugin_enable`/`_disable`; disabling drops the
    /// whole NAT configuration.
    pub fn nat44_enable(&mut self, enable: bool, cfg: Nat44, flags: u8) -> Rv {
        if enable {
            if self.nat44.is_some() {
                return Err(FEATURE_ALREADY_ENABLED);
            }
            if flags != 0 {
                return Err(UNSUPPORTED);
            }
            let sessions = if cfg.sessions == 0 {
                63 * 1024
            } else {
                cfg.sessions
            };
            self.nat44 = Some(Nat44 { sessions, ..cfg });
        } else {
            if self.nat44.is_none() {
                return Err(FEATURE_ALREADY_DISABLED);
            }
            self.nat44 = None;
            self.nat_addresses.clear();
            self.nat_interfaces.clear();
            self.static_mappings.clear();
            self.identity_mappings.clear();
        }
        Ok(())
    }

    /// One address at a time, stopping at the first failure, as VPP does.
    pub fn nat44_range(&mut self, first: Ipv4Addr, last: Ipv4Addr, is_add: bool) -> Rv {
        self.nat_enabled()?;
        let (a, b) = (u32::from(first), u32::from(last));
        if b < a {
            return Err(INVALID_VALUE);
        }
        for ip in (a..=b).map(Ipv4Addr::from) {
            if is_add {
                if !self.nat_addresses.insert(ip) {
                    return Err(VALUE_EXIST);
                }
            } else if !self.nat_addresses.remove(&ip) {
                return Err(NO_SUCH_ENTRY);
            }
        }
        Ok(())
    }

    /// nat44_ed.c `nat44_ed_add_interface`/`_del_interface`.
    pub fn nat44_feature(&mut self, sw_if_index: u32, is_add: bool, flags: u8) -> Rv {
        if !self.interfaces.contains_key(&sw_if_index) {
            return Err(INVALID_SW_IF_INDEX);
        }
        self.nat_enabled()?;
        let inside = flags & 0x20 != 0;
        let sides = self.nat_interfaces.entry(sw_if_index).or_default();
        let side = if inside {
            &mut sides.inside
        } else {
            &mut sides.outside
        };
        if is_add {
            *side = true;
        } else if !*side {
            if !sides.inside && !sides.outside {
                self.nat_interfaces.remove(&sw_if_index);
            }
            return Err(NO_SUCH_ENTRY);
        } else {
            *side = false;
            if !sides.inside && !sides.outside {
                self.nat_interfaces.remove(&sw_if_index);
            }
        }
        Ok(())
    }

    /// A mapping is a duplicate if its external or its local end is taken.
    pub fn nat44_static(&mut self, is_add: bool, m: StaticMap) -> Rv {
        self.nat_enabled()?;
        let same_ext = |o: &StaticMap| {
            o.external == m.external
                && o.addr_only == m.addr_only
                && (m.addr_only || (o.protocol == m.protocol && o.external_port == m.external_port))
        };
        if is_add {
            let local_taken = |o: &StaticMap| {
                o.local == m.local
                    && o.addr_only == m.addr_only
                    && (m.addr_only || (o.protocol == m.protocol && o.local_port == m.local_port))
            };
            if self
                .static_mappings
                .iter()
                .any(|o| same_ext(o) || local_taken(o))
            {
                return Err(VALUE_EXIST);
            }
            self.static_mappings.insert(m);
            Ok(())
        } else {
            let found = self
                .static_mappings
                .iter()
                .find(|o| same_ext(o) && o.local == m.local)
                .cloned();
            match found {
                Some(o) => {
                    self.static_mappings.remove(&o);
                    Ok(())
                }
                None => Err(NO_SUCH_ENTRY),
            }
        }
    }

    pub fn nat44_identity(&mut self, is_add: bool, m: IdentityMap) -> Rv {
        self.nat_enabled()?;
        if is_add {
            if !self.identity_mappings.insert(m) {
                return Err(VALUE_EXIST);
            }
        } else if !self.identity_mappings.remove(&m) {
            return Err(NO_SUCH_ENTRY);
        }
        Ok(())
    }
}
