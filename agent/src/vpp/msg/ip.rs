//! `ip.api`: IPv4 routes (`ip_route_add_del` with `fib_path`s of `fib_types.api`).

use std::net::Ipv4Addr;

use super::{Message, Reply, Request, interface::write_prefix, message};
use crate::{
    config::Ipv4Prefix,
    vpp::{
        error::VppError,
        wire::{Reader, Writer},
    },
};

/// `fib_path_type` NORMAL; `fib_path_flags` NONE; `fib_path_nh_proto` IP4.
pub const FIB_PATH_TYPE_NORMAL: u32 = 0;
pub const FIB_PATH_FLAG_NONE: u32 = 0;
pub const FIB_PATH_NH_PROTO_IP4: u32 = 0;

/// One `fib_path` (167 bytes on the wire), IPv4 next hop only; no MPLS
/// labels (`n_labels` 0, the 16-entry label stack zeroed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FibPath {
    /// `~0` when the path names no interface (resolved through the next hop).
    pub sw_if_index: u32,
    pub table_id: u32,
    pub weight: u8,
    pub preference: u8,
    pub path_type: u32,
    pub flags: u32,
    pub proto: u32,
    pub next_hop: Ipv4Addr,
}

impl FibPath {
    fn encode(&self, w: &mut Writer) {
        let mut nh = [0u8; 16];
        nh[..4].copy_from_slice(&self.next_hop.octets());
        w.u32(self.sw_if_index)
            .u32(self.table_id)
            .u32(0) // rpf_id
            .u8(self.weight)
            .u8(self.preference)
            .u32(self.path_type)
            .u32(self.flags)
            .u32(self.proto)
            .bytes(&nh)
            .u32(0) // via_label
            .u32(0) // obj_id
            .u32(0) // classify_table_index
            .u8(0) // n_labels
            .bytes(&[0u8; 16 * 7]); // label_stack: {u8, u32, u8, u8} x 16
    }
}

/// `{bool is_add; bool is_multipath; ip_route route}` with
/// `ip_route = {u32 table_id; u32 stats_index; prefix; u8 n_paths; fib_path paths[n_paths]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpRouteAddDel {
    pub is_add: bool,
    pub is_multipath: bool,
    pub table_id: u32,
    pub prefix: Ipv4Prefix,
    pub paths: Vec<FibPath>,
}
message!(IpRouteAddDel, "ip_route_add_del", 0xb8ecfe0d, "ip");

impl Request for IpRouteAddDel {
    type Reply = IpRouteAddDelReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        let n_paths = u8::try_from(self.paths.len()).map_err(|_| VppError::Encode {
            msg: Self::NAME,
            reason: format!("{} paths, at most 255", self.paths.len()),
        })?;
        w.bool(self.is_add)
            .bool(self.is_multipath)
            .u32(self.table_id)
            .u32(0); // stats_index: VPP fills it in
        write_prefix(w, &self.prefix);
        w.u8(n_paths);
        for p in &self.paths {
            p.encode(w);
        }
        Ok(())
    }
}

/// `{i32 retval; u32 stats_index}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRouteAddDelReply {
    pub retval: i32,
    pub stats_index: u32,
}
message!(
    IpRouteAddDelReply,
    "ip_route_add_del_reply",
    0x1992deab,
    "ip"
);

impl Reply for IpRouteAddDelReply {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self {
            retval: r.i32()?,
            stats_index: r.u32()?,
        })
    }
    fn retval(&self) -> i32 {
        self.retval
    }
}
