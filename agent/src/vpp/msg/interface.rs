//! `interface.api`: admin state, addresses and the interface dump.

use super::{Reply, Request, message, retval_reply};
use crate::{
    config::Ipv4Prefix,
    vpp::{
        error::VppError,
        wire::{Reader, Writer},
    },
};

/// `if_status_flags` bits.
pub const IF_STATUS_ADMIN_UP: u32 = 1;
pub const IF_STATUS_LINK_UP: u32 = 2;

/// `{u32 sw_if_index; u32 flags}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwInterfaceSetFlags {
    pub sw_if_index: u32,
    pub flags: u32,
}
message!(
    SwInterfaceSetFlags,
    "sw_interface_set_flags",
    0xf5aec1b8,
    "interface"
);

impl Request for SwInterfaceSetFlags {
    type Reply = SwInterfaceSetFlagsReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.u32(self.sw_if_index).u32(self.flags);
        Ok(())
    }
}

retval_reply!(
    SwInterfaceSetFlagsReply,
    "sw_interface_set_flags_reply",
    0xe8d4e804,
    "interface"
);

/// `address_family` (u8) of `ip_types.api`.
pub const AF_IP4: u8 = 0;

/// `prefix`: `{u8 af; u8 un[16]; u8 len}`, IPv4 in the first 4 bytes.
pub fn write_prefix(w: &mut Writer, p: &Ipv4Prefix) {
    let mut un = [0u8; 16];
    un[..4].copy_from_slice(&p.addr.octets());
    w.u8(AF_IP4).bytes(&un).u8(p.len);
}

/// `{u32 sw_if_index; bool is_add; bool del_all; prefix prefix}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwInterfaceAddDelAddress {
    pub sw_if_index: u32,
    pub is_add: bool,
    pub del_all: bool,
    pub prefix: Ipv4Prefix,
}
message!(
    SwInterfaceAddDelAddress,
    "sw_interface_add_del_address",
    0x5463d73b,
    "interface"
);

impl Request for SwInterfaceAddDelAddress {
    type Reply = SwInterfaceAddDelAddressReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.u32(self.sw_if_index).bool(self.is_add).bool(self.del_all);
        write_prefix(w, &self.prefix);
        Ok(())
    }
}

retval_reply!(
    SwInterfaceAddDelAddressReply,
    "sw_interface_add_del_address_reply",
    0xe8d4e804,
    "interface"
);

/// `{u32 sw_if_index (~0 = all); bool name_filter_valid; string name_filter[]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwInterfaceDump {
    pub sw_if_index: u32,
    pub name_filter: Option<String>,
}
message!(
    SwInterfaceDump,
    "sw_interface_dump",
    0xaa610c27,
    "interface"
);

impl Default for SwInterfaceDump {
    fn default() -> Self {
        Self {
            sw_if_index: u32::MAX,
            name_filter: None,
        }
    }
}

impl Request for SwInterfaceDump {
    type Reply = SwInterfaceDetails;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.u32(self.sw_if_index).bool(self.name_filter.is_some());
        w.var_str("name_filter", self.name_filter.as_deref().unwrap_or(""))?;
        Ok(())
    }
}

/// The fields of `sw_interface_details` the agent uses; the VLAN and PBB
/// rewrite fields between them are skipped (sub-interfaces are not managed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwInterfaceDetails {
    pub sw_if_index: u32,
    pub sup_sw_if_index: u32,
    pub l2_address: [u8; 6],
    pub flags: u32,
    pub if_type: u32,
    pub link_mtu: u16,
    /// Per-protocol MTUs: L3, IP4, IP6, MPLS.
    pub mtu: [u32; 4],
    pub interface_name: String,
    pub interface_dev_type: String,
    pub tag: String,
}
message!(
    SwInterfaceDetails,
    "sw_interface_details",
    0x6c221fc7,
    "interface"
);

impl Reply for SwInterfaceDetails {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        let sw_if_index = r.u32()?;
        let sup_sw_if_index = r.u32()?;
        let l2_address = r.array()?;
        let flags = r.u32()?;
        let if_type = r.u32()?;
        let _link_duplex = r.u32()?;
        let _link_speed = r.u32()?;
        let link_mtu = r.u16()?;
        let mtu = [r.u32()?, r.u32()?, r.u32()?, r.u32()?];
        // sub_id .. i_sid: 4+1+2+2+4 + 4*4 + 2+6+6+2+4 = 49 bytes.
        r.take(49)?;
        Ok(Self {
            sw_if_index,
            sup_sw_if_index,
            l2_address,
            flags,
            if_type,
            link_mtu,
            mtu,
            interface_name: r.fixed_str(64)?,
            interface_dev_type: r.fixed_str(64)?,
            tag: r.fixed_str(64)?,
        })
    }
}
