//! `nat44_ed.api` (nat plugin, endpoint-dependent NAT44) with the flags of
//! `nat_types.api`.

use std::net::Ipv4Addr;

use super::{Reply, Request, empty_request, message, retval_reply};
use crate::vpp::{
    error::VppError,
    wire::{Reader, Writer},
};

/// `nat_config_flags` (u8).
pub const NAT_IS_TWICE_NAT: u8 = 0x01;
pub const NAT_IS_SELF_TWICE_NAT: u8 = 0x02;
pub const NAT_IS_OUT2IN_ONLY: u8 = 0x04;
pub const NAT_IS_ADDR_ONLY: u8 = 0x08;
pub const NAT_IS_OUTSIDE: u8 = 0x10;
pub const NAT_IS_INSIDE: u8 = 0x20;
pub const NAT_IS_STATIC: u8 = 0x40;
pub const NAT_IS_EXT_HOST_VALID: u8 = 0x80;

/// `{u32 inside_vrf; u32 outside_vrf; u32 sessions; u32 session_memory;
/// bool enable; u8 flags}`. Must come before any other nat44 call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nat44EdPluginEnableDisable {
    pub inside_vrf: u32,
    pub outside_vrf: u32,
    /// Per thread; 0 = VPP's default (63 × 1024).
    pub sessions: u32,
    pub session_memory: u32,
    pub enable: bool,
    pub flags: u8,
}
message!(
    Nat44EdPluginEnableDisable,
    "nat44_ed_plugin_enable_disable",
    0xbe17f8dd,
    "nat44_ed"
);

impl Request for Nat44EdPluginEnableDisable {
    type Reply = Nat44EdPluginEnableDisableReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.u32(self.inside_vrf)
            .u32(self.outside_vrf)
            .u32(self.sessions)
            .u32(self.session_memory)
            .bool(self.enable)
            .u8(self.flags);
        Ok(())
    }
}

retval_reply!(
    Nat44EdPluginEnableDisableReply,
    "nat44_ed_plugin_enable_disable_reply",
    0xe8d4e804,
    "nat44_ed"
);

/// `{ip4 first_ip_address; ip4 last_ip_address; u32 vrf_id; bool is_add; u8 flags}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nat44AddDelAddressRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    /// `~0`: any VRF.
    pub vrf_id: u32,
    pub is_add: bool,
    pub flags: u8,
}
message!(
    Nat44AddDelAddressRange,
    "nat44_add_del_address_range",
    0x6f2b8055,
    "nat44_ed"
);

impl Request for Nat44AddDelAddressRange {
    type Reply = Nat44AddDelAddressRangeReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.bytes(&self.first.octets())
            .bytes(&self.last.octets())
            .u32(self.vrf_id)
            .bool(self.is_add)
            .u8(self.flags);
        Ok(())
    }
}

retval_reply!(
    Nat44AddDelAddressRangeReply,
    "nat44_add_del_address_range_reply",
    0xe8d4e804,
    "nat44_ed"
);

/// `{bool is_add; u8 flags (NAT_IS_INSIDE / NAT_IS_OUTSIDE); u32 sw_if_index}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nat44InterfaceAddDelFeature {
    pub is_add: bool,
    pub flags: u8,
    pub sw_if_index: u32,
}
message!(
    Nat44InterfaceAddDelFeature,
    "nat44_interface_add_del_feature",
    0xf3699b83,
    "nat44_ed"
);

impl Request for Nat44InterfaceAddDelFeature {
    type Reply = Nat44InterfaceAddDelFeatureReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.bool(self.is_add).u8(self.flags).u32(self.sw_if_index);
        Ok(())
    }
}

retval_reply!(
    Nat44InterfaceAddDelFeatureReply,
    "nat44_interface_add_del_feature_reply",
    0xe8d4e804,
    "nat44_ed"
);

/// `{bool is_add; bool match_pool; u8 flags; ip4 pool_ip_address;
/// ip4 local_ip_address; ip4 external_ip_address; u8 protocol;
/// u16 local_port; u16 external_port; u32 external_sw_if_index;
/// u32 vrf_id; string tag[64]}`. VPP keeps the ports in network order, so
/// they are big-endian like every other field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nat44AddDelStaticMappingV2 {
    pub is_add: bool,
    pub match_pool: bool,
    pub flags: u8,
    pub pool_ip: Ipv4Addr,
    pub local_ip: Ipv4Addr,
    pub external_ip: Ipv4Addr,
    pub protocol: u8,
    pub local_port: u16,
    pub external_port: u16,
    /// `~0` unless the external address is taken from an interface (0 is local0).
    pub external_sw_if_index: u32,
    pub vrf_id: u32,
    pub tag: String,
}
message!(
    Nat44AddDelStaticMappingV2,
    "nat44_add_del_static_mapping_v2",
    0x5e205f1a,
    "nat44_ed"
);

impl Request for Nat44AddDelStaticMappingV2 {
    type Reply = Nat44AddDelStaticMappingV2Reply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.bool(self.is_add)
            .bool(self.match_pool)
            .u8(self.flags)
            .bytes(&self.pool_ip.octets())
            .bytes(&self.local_ip.octets())
            .bytes(&self.external_ip.octets())
            .u8(self.protocol)
            .u16(self.local_port)
            .u16(self.external_port)
            .u32(self.external_sw_if_index)
            .u32(self.vrf_id);
        w.fixed_str("tag", &self.tag, 64)?;
        Ok(())
    }
}

retval_reply!(
    Nat44AddDelStaticMappingV2Reply,
    "nat44_add_del_static_mapping_v2_reply",
    0xe8d4e804,
    "nat44_ed"
);

/// `{bool is_add; u8 flags; ip4 ip_address; u8 protocol; u16 port;
/// u32 sw_if_index; u32 vrf_id; string tag[64]}`. The static mapping
/// message has no identity flag, so identity mappings need this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nat44AddDelIdentityMapping {
    pub is_add: bool,
    pub flags: u8,
    pub ip: Ipv4Addr,
    pub protocol: u8,
    pub port: u16,
    /// `~0` unless the address is taken from an interface.
    pub sw_if_index: u32,
    pub vrf_id: u32,
    pub tag: String,
}
message!(
    Nat44AddDelIdentityMapping,
    "nat44_add_del_identity_mapping",
    0x02faaa22,
    "nat44_ed"
);

impl Request for Nat44AddDelIdentityMapping {
    type Reply = Nat44AddDelIdentityMappingReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.bool(self.is_add)
            .u8(self.flags)
            .bytes(&self.ip.octets())
            .u8(self.protocol)
            .u16(self.port)
            .u32(self.sw_if_index)
            .u32(self.vrf_id);
        w.fixed_str("tag", &self.tag, 64)?;
        Ok(())
    }
}

retval_reply!(
    Nat44AddDelIdentityMappingReply,
    "nat44_add_del_identity_mapping_reply",
    0xe8d4e804,
    "nat44_ed"
);

/// `{u32 udp; u32 tcp_established; u32 tcp_transitory; u32 icmp}`, seconds.
/// Marked deprecated in nat44_ed.api but still the only way to set them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NatSetTimeouts {
    pub udp: u32,
    pub tcp_established: u32,
    pub tcp_transitory: u32,
    pub icmp: u32,
}
message!(NatSetTimeouts, "nat_set_timeouts", 0xd4746b16, "nat44_ed");

impl Request for NatSetTimeouts {
    type Reply = NatSetTimeoutsReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.u32(self.udp)
            .u32(self.tcp_established)
            .u32(self.tcp_transitory)
            .u32(self.icmp);
        Ok(())
    }
}

retval_reply!(
    NatSetTimeoutsReply,
    "nat_set_timeouts_reply",
    0xe8d4e804,
    "nat44_ed"
);

empty_request!(
    Nat44UserDump,
    Nat44UserDetails,
    "nat44_user_dump",
    0x51077d14,
    "nat44_ed"
);

/// `{u32 vrf_id; ip4 ip_address; u32 nsessions; u32 nstaticsessions}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nat44UserDetails {
    pub vrf_id: u32,
    pub ip: Ipv4Addr,
    pub nsessions: u32,
    pub nstaticsessions: u32,
}
message!(
    Nat44UserDetails,
    "nat44_user_details",
    0x355896c2,
    "nat44_ed"
);

impl Reply for Nat44UserDetails {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self {
            vrf_id: r.u32()?,
            ip: Ipv4Addr::from(r.array::<4>()?),
            nsessions: r.u32()?,
            nstaticsessions: r.u32()?,
        })
    }
}

/// `{ip4 ip_address; u32 vrf_id}`: the sessions of one user (inside address).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nat44UserSessionV3Dump {
    pub ip: Ipv4Addr,
    pub vrf_id: u32,
}
message!(
    Nat44UserSessionV3Dump,
    "nat44_user_session_v3_dump",
    0xe1899c98,
    "nat44_ed"
);

impl Request for Nat44UserSessionV3Dump {
    type Reply = Nat44UserSessionV3Details;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.bytes(&self.ip.octets()).u32(self.vrf_id);
        Ok(())
    }
}

/// One session (62 bytes after the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nat44UserSessionV3Details {
    pub outside_ip: Ipv4Addr,
    pub outside_port: u16,
    pub inside_ip: Ipv4Addr,
    pub inside_port: u16,
    pub protocol: u16,
    pub flags: u8,
    /// Seconds since VPP started.
    pub last_heard: u64,
    pub time_since_last_heard: u64,
    pub total_bytes: u64,
    pub total_pkts: u32,
    pub ext_host_ip: Ipv4Addr,
    pub ext_host_port: u16,
    pub ext_host_nat_ip: Ipv4Addr,
    pub ext_host_nat_port: u16,
    pub is_timed_out: bool,
}
message!(
    Nat44UserSessionV3Details,
    "nat44_user_session_v3_details",
    0xedae926e,
    "nat44_ed"
);

impl Reply for Nat44UserSessionV3Details {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self {
            outside_ip: Ipv4Addr::from(r.array::<4>()?),
            outside_port: r.u16()?,
            inside_ip: Ipv4Addr::from(r.array::<4>()?),
            inside_port: r.u16()?,
            protocol: r.u16()?,
            flags: r.u8()?,
            last_heard: r.u64()?,
            time_since_last_heard: r.u64()?,
            total_bytes: r.u64()?,
            total_pkts: r.u32()?,
            ext_host_ip: Ipv4Addr::from(r.array::<4>()?),
            ext_host_port: r.u16()?,
            ext_host_nat_ip: Ipv4Addr::from(r.array::<4>()?),
            ext_host_nat_port: r.u16()?,
            is_timed_out: r.bool()?,
        })
    }
}
