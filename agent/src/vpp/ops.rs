//! The typed operations the reconciler and `xcnfctl` use, on top of the
//! raw messages: they take the agent's own types, fill in the fields VPP
//! needs but xcnf never varies (`~0` "no interface" markers, default VRF,
//! zeroed label stacks), and return what the caller needs.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{
    client::Client,
    error::VppError,
    msg::{
        interface::{
            IF_STATUS_ADMIN_UP, IF_STATUS_LINK_UP, SwInterfaceAddDelAddress, SwInterfaceDetails,
            SwInterfaceDump, SwInterfaceSetFlags,
        },
        ip::{
            FIB_PATH_FLAG_NONE, FIB_PATH_NH_PROTO_IP4, FIB_PATH_TYPE_NORMAL, FibPath, IpRouteAddDel,
        },
        memif::{
            self, MemifCreateV2, MemifDelete, MemifDetails, MemifDump, MemifSocketFilenameAddDelV2,
            MemifSocketFilenameDump, SOCKET_ID_AUTO,
        },
        nat44::{
            self, Nat44AddDelAddressRange, Nat44AddDelIdentityMapping, Nat44AddDelStaticMappingV2,
            Nat44EdPluginEnableDisable, Nat44InterfaceAddDelFeature, Nat44UserDump,
            Nat44UserSessionV3Details, Nat44UserSessionV3Dump, NatSetTimeouts,
        },
        vpe::{CliInband, ShowVersion},
    },
};
use crate::config::{Ipv4Prefix, MacAddr, NatTimeouts, Protocol};

/// "No interface" / "any VRF" in VPP's API.
const NONE: u32 = u32::MAX;

/// A VPP software interface index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SwIfIndex(pub u32);

impl std::fmt::Display for SwIfIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sw_if_index {}", self.0)
    }
}

/// What `show_version` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub program: String,
    pub version: String,
    pub build_date: String,
    pub build_directory: String,
}

/// Which end of the memif: the master owns the shared memory and listens
/// on the socket, the slave connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemifRole {
    Master,
    Slave,
}

/// IP mode carries bare IP packets (NSM payload IP), Ethernet mode frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemifMode {
    Ethernet,
    Ip,
}

/// A memif interface to create. `None`/0 fields take VPP's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifSpec {
    pub role: MemifRole,
    pub mode: MemifMode,
    /// The memif id, unique per socket (both ends must use the same).
    pub id: u32,
    /// From [`Client::memif_socket_add`].
    pub socket_id: u32,
    /// Queues are negotiated by the slave; 0 means one.
    pub rx_queues: u8,
    pub tx_queues: u8,
    /// Power of two; 0 means 1024.
    pub ring_size: u32,
    /// 0 means 2048.
    pub buffer_size: u16,
    /// `None`: VPP picks a random MAC (Ethernet mode only matters).
    pub hw_addr: Option<MacAddr>,
    /// At most 23 bytes.
    pub secret: Option<String>,
}

impl MemifSpec {
    pub fn new(role: MemifRole, mode: MemifMode, id: u32, socket_id: u32) -> Self {
        Self {
            role,
            mode,
            id,
            socket_id,
            rx_queues: 0,
            tx_queues: 0,
            ring_size: 0,
            buffer_size: 0,
            hw_addr: None,
            secret: None,
        }
    }
}

/// A memif as VPP reports it, for adoption: which socket, id, role and
/// mode an existing interface has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifInfo {
    pub sw_if_index: SwIfIndex,
    pub name: String,
    pub role: MemifRole,
    pub mode: MemifMode,
    pub id: u32,
    pub socket_id: u32,
    pub mac: MacAddr,
    pub admin_up: bool,
    pub link_up: bool,
}

impl MemifInfo {
    /// `None` for a mode xcnf does not create (punt/inject).
    fn from_details(d: MemifDetails) -> Option<Self> {
        Some(Self {
            sw_if_index: SwIfIndex(d.sw_if_index),
            name: d.if_name,
            role: match d.role {
                memif::ROLE_MASTER => MemifRole::Master,
                _ => MemifRole::Slave,
            },
            mode: match d.mode {
                memif::MODE_ETHERNET => MemifMode::Ethernet,
                memif::MODE_IP => MemifMode::Ip,
                _ => return None,
            },
            id: d.id,
            socket_id: d.socket_id,
            mac: MacAddr(d.hw_addr),
            admin_up: d.flags & IF_STATUS_ADMIN_UP != 0,
            link_up: d.flags & IF_STATUS_LINK_UP != 0,
        })
    }
}

/// One interface as VPP reports it, for adoption and reconciliation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceDetails {
    pub sw_if_index: SwIfIndex,
    pub sup_sw_if_index: SwIfIndex,
    /// `memif0/1`, `local0`, ...
    pub name: String,
    /// `memif`, `Local`, ...
    pub dev_type: String,
    pub tag: String,
    pub mac: MacAddr,
    pub admin_up: bool,
    pub link_up: bool,
    pub link_mtu: u16,
    /// The L3 MTU.
    pub mtu: u32,
}

impl From<SwInterfaceDetails> for InterfaceDetails {
    fn from(d: SwInterfaceDetails) -> Self {
        Self {
            sw_if_index: SwIfIndex(d.sw_if_index),
            sup_sw_if_index: SwIfIndex(d.sup_sw_if_index),
            name: d.interface_name,
            dev_type: d.interface_dev_type,
            tag: d.tag,
            mac: MacAddr(d.l2_address),
            admin_up: d.flags & IF_STATUS_ADMIN_UP != 0,
            link_up: d.flags & IF_STATUS_LINK_UP != 0,
            link_mtu: d.link_mtu,
            mtu: d.mtu[0],
        }
    }
}

/// An IPv4 route in the default table: via a gateway, out of an
/// interface, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Route {
    /// Must be a network (no host bits), as VPP stores it.
    pub prefix: Ipv4Prefix,
    pub via: Option<Ipv4Addr>,
    pub sw_if_index: Option<SwIfIndex>,
    pub table_id: u32,
}

/// Which side of the NAT an interface is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatSide {
    Inside,
    Outside,
}

/// A transport protocol of a port mapping (VPP's `ip_protocol` numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatProto {
    Tcp,
    Udp,
    Icmp,
}

impl NatProto {
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Icmp => 1,
        }
    }

    pub fn from_number(n: u16) -> Option<Self> {
        match n {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            1 => Some(Self::Icmp),
            _ => None,
        }
    }

    /// The config's protocol; `any` has no number (VPP port mappings name
    /// one protocol), so it maps to `None`.
    pub fn from_config(p: Protocol) -> Option<Self> {
        match p {
            Protocol::Tcp => Some(Self::Tcp),
            Protocol::Udp => Some(Self::Udp),
            Protocol::Icmp => Some(Self::Icmp),
            Protocol::Any => None,
        }
    }
}

/// A static mapping, in the two shapes `nat44_add_del_static_mapping_v2`
/// takes. Identity mappings are [`IdentityMapping`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StaticMapping {
    /// `external:port` ↔ `local:port` for one protocol.
    Port {
        protocol: NatProto,
        local: SocketAddrV4,
        external: SocketAddrV4,
    },
    /// 1:1: the whole external address ↔ the local address.
    AddressOnly { local: Ipv4Addr, external: Ipv4Addr },
}

/// Traffic to this address (and port) is not translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdentityMapping {
    pub addr: Ipv4Addr,
    /// `None`: the whole address.
    pub port: Option<(NatProto, u16)>,
}

/// One NAT44 session, for `xcnfctl nat sessions`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatSession {
    pub vrf_id: u32,
    pub protocol: u16,
    pub inside: SocketAddrV4,
    pub outside: SocketAddrV4,
    /// The remote host, when VPP tracks it (always with nat44-ed).
    pub ext_host: Option<SocketAddrV4>,
    pub is_static: bool,
    pub is_twice_nat: bool,
    pub total_bytes: u64,
    pub total_pkts: u32,
    pub seconds_since_last_heard: u64,
    pub is_timed_out: bool,
}

/// The memif socket filename VPP understands for `socketfile` as NSM and
/// the kernel write abstract sockets: `@name` becomes `abstract:name`, since
/// VPP does not know the `@` form and would read it as a path under its
/// runtime dir. With `netns` (a path, or a name under /var/run/netns) VPP
/// creates or connects the abstract socket in that network namespace; VPP
/// honours that only for abstract sockets, so other names pass unchanged.
pub fn memif_socket_filename(socketfile: &str, netns: Option<&str>) -> String {
    let abstract_name = socketfile
        .strip_prefix('@')
        .or_else(|| socketfile.strip_prefix("abstract:"));
    match (abstract_name, netns) {
        (Some(name), Some(ns)) if !name.contains(",netns_") => {
            format!("abstract:{name},netns_name={ns}")
        }
        (Some(name), _) => format!("abstract:{name}"),
        (None, _) => socketfile.to_owned(),
    }
}

/// The timeouts as VPP takes them: whole seconds, at most `u32::MAX`.
fn secs(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn retag<T>(r: Result<T, VppError>) -> Result<(), VppError> {
    r.map(|_| ())
}

impl Client {
    pub async fn show_version(&self) -> Result<Version, VppError> {
        let r = self.request(&ShowVersion).await?;
        Ok(Version {
            program: r.program,
            version: r.version,
            build_date: r.build_date,
            build_directory: r.build_directory,
        })
    }

    /// Registers a memif socket file under `socket_id` (`None`: VPP picks
    /// an unused one; 0 is VPP's default socket and cannot be added) and
    /// returns the id. `filename` is passed as given: an absolute path, a
    /// name relative to VPP's runtime dir, or
    /// `abstract:<name>[,netns_name=<path>]`.
    pub async fn memif_socket_add(
        &self,
        socket_id: Option<u32>,
        filename: &str,
    ) -> Result<u32, VppError> {
        let r = self
            .request(&MemifSocketFilenameAddDelV2 {
                is_add: true,
                socket_id: socket_id.unwrap_or(SOCKET_ID_AUTO),
                socket_filename: filename.to_owned(),
            })
            .await?;
        Ok(r.socket_id)
    }

    /// Unregisters a socket file (VPP refuses while a memif uses it).
    pub async fn memif_socket_del(&self, socket_id: u32) -> Result<(), VppError> {
        retag(
            self.request(&MemifSocketFilenameAddDelV2 {
                is_add: false,
                socket_id,
                socket_filename: String::new(),
            })
            .await,
        )
    }

    pub async fn memif_create(&self, spec: &MemifSpec) -> Result<SwIfIndex, VppError> {
        let r = self
            .request(&MemifCreateV2 {
                role: match spec.role {
                    MemifRole::Master => memif::ROLE_MASTER,
                    MemifRole::Slave => memif::ROLE_SLAVE,
                },
                mode: match spec.mode {
                    MemifMode::Ethernet => memif::MODE_ETHERNET,
                    MemifMode::Ip => memif::MODE_IP,
                },
                rx_queues: spec.rx_queues,
                tx_queues: spec.tx_queues,
                id: spec.id,
                socket_id: spec.socket_id,
                ring_size: spec.ring_size,
                buffer_size: spec.buffer_size,
                no_zero_copy: false,
                use_dma: false,
                hw_addr: spec.hw_addr.map(|m| m.0).unwrap_or([0; 6]),
                secret: spec.secret.clone().unwrap_or_default(),
            })
            .await?;
        Ok(SwIfIndex(r.sw_if_index))
    }

    pub async fn memif_delete(&self, sw_if_index: SwIfIndex) -> Result<(), VppError> {
        retag(
            self.request(&MemifDelete {
                sw_if_index: sw_if_index.0,
            })
            .await,
        )
    }

    /// The memif socket files VPP knows: id → filename (id 0 is VPP's
    /// default socket, always there).
    pub async fn memif_sockets(&self) -> Result<Vec<(u32, String)>, VppError> {
        let all = self.dump(&MemifSocketFilenameDump).await?;
        Ok(all
            .into_iter()
            .map(|d| (d.socket_id, d.socket_filename))
            .collect())
    }

    /// Every memif interface (punt/inject ones left out). The ring and
    /// buffer sizes are not reported: VPP shows the negotiated ones.
    pub async fn memifs(&self) -> Result<Vec<MemifInfo>, VppError> {
        let all = self.dump(&MemifDump).await?;
        Ok(all
            .into_iter()
            .filter_map(MemifInfo::from_details)
            .collect())
    }

    /// Admin up or down.
    pub async fn set_flags(&self, sw_if_index: SwIfIndex, up: bool) -> Result<(), VppError> {
        retag(
            self.request(&SwInterfaceSetFlags {
                sw_if_index: sw_if_index.0,
                flags: if up { IF_STATUS_ADMIN_UP } else { 0 },
            })
            .await,
        )
    }

    pub async fn add_del_address(
        &self,
        sw_if_index: SwIfIndex,
        prefix: Ipv4Prefix,
        add: bool,
    ) -> Result<(), VppError> {
        retag(
            self.request(&SwInterfaceAddDelAddress {
                sw_if_index: sw_if_index.0,
                is_add: add,
                del_all: false,
                prefix,
            })
            .await,
        )
    }

    /// Every interface VPP has.
    pub async fn interfaces(&self) -> Result<Vec<InterfaceDetails>, VppError> {
        let all = self.dump(&SwInterfaceDump::default()).await?;
        Ok(all.into_iter().map(InterfaceDetails::from).collect())
    }

    pub async fn route_add_del(&self, route: &Ipv4Route, add: bool) -> Result<(), VppError> {
        let path = FibPath {
            sw_if_index: route.sw_if_index.map_or(NONE, |i| i.0),
            table_id: route.table_id,
            weight: 1,
            preference: 0,
            path_type: FIB_PATH_TYPE_NORMAL,
            flags: FIB_PATH_FLAG_NONE,
            proto: FIB_PATH_NH_PROTO_IP4,
            next_hop: route.via.unwrap_or(Ipv4Addr::UNSPECIFIED),
        };
        retag(
            self.request(&IpRouteAddDel {
                is_add: add,
                is_multipath: false,
                table_id: route.table_id,
                prefix: route.prefix,
                paths: vec![path],
            })
            .await,
        )
    }

    /// Enables nat44-ed with room for `max_sessions` per thread (0: VPP's
    /// default). Must precede every other nat44 call.
    pub async fn nat44_enable(&self, max_sessions: u32) -> Result<(), VppError> {
        retag(
            self.request(&Nat44EdPluginEnableDisable {
                sessions: max_sessions,
                enable: true,
                ..Default::default()
            })
            .await,
        )
    }

    /// Disables nat44-ed; VPP drops its whole NAT configuration with it.
    pub async fn nat44_disable(&self) -> Result<(), VppError> {
        retag(
            self.request(&Nat44EdPluginEnableDisable {
                enable: false,
                ..Default::default()
            })
            .await,
        )
    }

    /// A pool range `first..=last`, usable in any VRF.
    pub async fn nat44_address_range(
        &self,
        first: Ipv4Addr,
        last: Ipv4Addr,
        add: bool,
    ) -> Result<(), VppError> {
        retag(
            self.request(&Nat44AddDelAddressRange {
                first,
                last,
                vrf_id: NONE,
                is_add: add,
                flags: 0,
            })
            .await,
        )
    }

    pub async fn nat44_interface(
        &self,
        sw_if_index: SwIfIndex,
        side: NatSide,
        add: bool,
    ) -> Result<(), VppError> {
        retag(
            self.request(&Nat44InterfaceAddDelFeature {
                is_add: add,
                flags: match side {
                    NatSide::Inside => nat44::NAT_IS_INSIDE,
                    NatSide::Outside => nat44::NAT_IS_OUTSIDE,
                },
                sw_if_index: sw_if_index.0,
            })
            .await,
        )
    }

    pub async fn nat44_static_mapping(
        &self,
        mapping: &StaticMapping,
        add: bool,
    ) -> Result<(), VppError> {
        let (flags, protocol, local, external) = match *mapping {
            StaticMapping::Port {
                protocol,
                local,
                external,
            } => (0, protocol.number(), local, external),
            StaticMapping::AddressOnly { local, external } => (
                nat44::NAT_IS_ADDR_ONLY,
                0,
                SocketAddrV4::new(local, 0),
                SocketAddrV4::new(external, 0),
            ),
        };
        retag(
            self.request(&Nat44AddDelStaticMappingV2 {
                is_add: add,
                match_pool: false,
                flags,
                pool_ip: Ipv4Addr::UNSPECIFIED,
                local_ip: *local.ip(),
                external_ip: *external.ip(),
                protocol,
                local_port: local.port(),
                external_port: external.port(),
                external_sw_if_index: NONE,
                vrf_id: 0,
                tag: String::new(),
            })
            .await,
        )
    }

    pub async fn nat44_identity_mapping(
        &self,
        mapping: &IdentityMapping,
        add: bool,
    ) -> Result<(), VppError> {
        let (flags, protocol, port) = match mapping.port {
            Some((proto, port)) => (0, proto.number(), port),
            None => (nat44::NAT_IS_ADDR_ONLY, 0, 0),
        };
        retag(
            self.request(&Nat44AddDelIdentityMapping {
                is_add: add,
                flags,
                ip: mapping.addr,
                protocol,
                port,
                sw_if_index: NONE,
                vrf_id: 0,
                tag: String::new(),
            })
            .await,
        )
    }

    pub async fn nat44_set_timeouts(&self, t: &NatTimeouts) -> Result<(), VppError> {
        retag(
            self.request(&NatSetTimeouts {
                udp: secs(t.udp),
                tcp_established: secs(t.tcp_established),
                tcp_transitory: secs(t.tcp_transitory),
                icmp: secs(t.icmp),
            })
            .await,
        )
    }

    /// Every NAT44 session: the users (inside addresses) first, then each
    /// user's sessions, as VPP only dumps sessions per user.
    pub async fn nat44_sessions(&self) -> Result<Vec<NatSession>, VppError> {
        let mut out = Vec::new();
        for user in self.dump(&Nat44UserDump).await? {
            let sessions = self
                .dump(&Nat44UserSessionV3Dump {
                    ip: user.ip,
                    vrf_id: user.vrf_id,
                })
                .await?;
            out.extend(sessions.iter().map(|s| session(user.vrf_id, s)));
        }
        Ok(out)
    }

    /// Runs one debug CLI command and returns its output.
    pub async fn cli(&self, cmd: &str) -> Result<String, VppError> {
        Ok(self
            .request(&CliInband {
                cmd: cmd.to_owned(),
            })
            .await?
            .reply)
    }
}

fn session(vrf_id: u32, s: &Nat44UserSessionV3Details) -> NatSession {
    NatSession {
        vrf_id,
        protocol: s.protocol,
        inside: SocketAddrV4::new(s.inside_ip, s.inside_port),
        outside: SocketAddrV4::new(s.outside_ip, s.outside_port),
        ext_host: (s.flags & nat44::NAT_IS_EXT_HOST_VALID != 0)
            .then(|| SocketAddrV4::new(s.ext_host_ip, s.ext_host_port)),
        is_static: s.flags & nat44::NAT_IS_STATIC != 0,
        is_twice_nat: s.flags & nat44::NAT_IS_TWICE_NAT != 0,
        total_bytes: s.total_bytes,
        total_pkts: s.total_pkts,
        seconds_since_last_heard: s.time_since_last_heard,
        is_timed_out: s.is_timed_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsm_abstract_socket_names_become_vpp_abstract_names() {
        assert_eq!(
            memif_socket_filename("@/tmp/memif/c1/memif.socket", None),
            "abstract:/tmp/memif/c1/memif.socket"
        );
        assert_eq!(
            memif_socket_filename("@sock", Some("/proc/42/ns/net")),
            "abstract:sock,netns_name=/proc/42/ns/net"
        );
        assert_eq!(
            memif_socket_filename("abstract:sock,netns_name=cli", Some("other")),
            "abstract:sock,netns_name=cli"
        );
        assert_eq!(
            memif_socket_filename("/run/vpp/memif.sock", Some("ignored")),
            "/run/vpp/memif.sock"
        );
        assert_eq!(memif_socket_filename("memif.sock", None), "memif.sock");
    }

    #[test]
    fn config_protocols_map_to_ip_protocol_numbers() {
        assert_eq!(
            NatProto::from_config(Protocol::Tcp).map(NatProto::number),
            Some(6)
        );
        assert_eq!(
            NatProto::from_config(Protocol::Udp).map(NatProto::number),
            Some(17)
        );
        assert_eq!(
            NatProto::from_config(Protocol::Icmp).map(NatProto::number),
            Some(1)
        );
        assert_eq!(NatProto::from_config(Protocol::Any), None);
        assert_eq!(NatProto::from_number(17), Some(NatProto::Udp));
    }
}
