//! `memif.api` (memif plugin): socket files and memif interfaces.

use super::{Reply, Request, empty_request, message, retval_reply};
use crate::vpp::{
    error::VppError,
    wire::{Reader, Writer},
};

/// Asks VPP to pick an unused socket id (`socket_id = ~0` on add).
pub const SOCKET_ID_AUTO: u32 = u32::MAX;

/// `{bool is_add; u32 socket_id; string socket_filename[]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifSocketFilenameAddDelV2 {
    pub is_add: bool,
    pub socket_id: u32,
    pub socket_filename: String,
}
message!(
    MemifSocketFilenameAddDelV2,
    "memif_socket_filename_add_del_v2",
    0x34223bdf,
    "memif"
);

impl Request for MemifSocketFilenameAddDelV2 {
    type Reply = MemifSocketFilenameAddDelV2Reply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.bool(self.is_add).u32(self.socket_id);
        w.var_str("socket_filename", &self.socket_filename)?;
        Ok(())
    }
}

/// `{i32 retval; u32 socket_id}`: the id VPP chose when asked to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemifSocketFilenameAddDelV2Reply {
    pub retval: i32,
    pub socket_id: u32,
}
message!(
    MemifSocketFilenameAddDelV2Reply,
    "memif_socket_filename_add_del_v2_reply",
    0x9f29bdb9,
    "memif"
);

impl Reply for MemifSocketFilenameAddDelV2Reply {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self {
            retval: r.i32()?,
            socket_id: r.u32()?,
        })
    }
    fn retval(&self) -> i32 {
        self.retval
    }
}

/// `memif_role` (u32): which side owns the shared memory and listens.
pub const ROLE_MASTER: u32 = 0;
pub const ROLE_SLAVE: u32 = 1;
/// `memif_mode` (u32).
pub const MODE_ETHERNET: u32 = 0;
pub const MODE_IP: u32 = 1;

/// `{u32 role; u32 mode; u8 rx_queues; u8 tx_queues; u32 id;
/// u32 socket_id; u32 ring_size; u16 buffer_size; bool no_zero_copy;
/// bool use_dma; u8 hw_addr[6]; string secret[24]}`. Zeroes mean VPP's
/// defaults (1 queue, 1024 slots, 2048-byte buffers, random MAC).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemifCreateV2 {
    pub role: u32,
    pub mode: u32,
    pub rx_queues: u8,
    pub tx_queues: u8,
    pub id: u32,
    pub socket_id: u32,
    pub ring_size: u32,
    pub buffer_size: u16,
    pub no_zero_copy: bool,
    pub use_dma: bool,
    pub hw_addr: [u8; 6],
    pub secret: String,
}
message!(MemifCreateV2, "memif_create_v2", 0x8c7de5f7, "memif");

impl Request for MemifCreateV2 {
    type Reply = MemifCreateV2Reply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.u32(self.role)
            .u32(self.mode)
            .u8(self.rx_queues)
            .u8(self.tx_queues)
            .u32(self.id)
            .u32(self.socket_id)
            .u32(self.ring_size)
            .u16(self.buffer_size)
            .bool(self.no_zero_copy)
            .bool(self.use_dma)
            .bytes(&self.hw_addr);
        w.fixed_str("secret", &self.secret, 24)?;
        Ok(())
    }
}

/// `{i32 retval; u32 sw_if_index}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemifCreateV2Reply {
    pub retval: i32,
    pub sw_if_index: u32,
}
message!(
    MemifCreateV2Reply,
    "memif_create_v2_reply",
    0x5383d31f,
    "memif"
);

impl Reply for MemifCreateV2Reply {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self {
            retval: r.i32()?,
            sw_if_index: r.u32()?,
        })
    }
    fn retval(&self) -> i32 {
        self.retval
    }
}

/// `{u32 sw_if_index}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemifDelete {
    pub sw_if_index: u32,
}
message!(MemifDelete, "memif_delete", 0xf9e6675e, "memif");

impl Request for MemifDelete {
    type Reply = MemifDeleteReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.u32(self.sw_if_index);
        Ok(())
    }
}

retval_reply!(MemifDeleteReply, "memif_delete_reply", 0xe8d4e804, "memif");

empty_request!(
    MemifSocketFilenameDump,
    MemifSocketFilenameDetails,
    "memif_socket_filename_dump",
    0x51077d14,
    "memif"
);

/// `{u32 socket_id; string socket_filename[108]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifSocketFilenameDetails {
    pub socket_id: u32,
    pub socket_filename: String,
}
message!(
    MemifSocketFilenameDetails,
    "memif_socket_filename_details",
    0x7ff326f7,
    "memif"
);

impl Reply for MemifSocketFilenameDetails {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self {
            socket_id: r.u32()?,
            socket_filename: r.fixed_str(108)?,
        })
    }
}

empty_request!(MemifDump, MemifDetails, "memif_dump", 0x51077d14, "memif");

/// `{u32 sw_if_index; u8 hw_addr[6]; u32 id; u32 role; u32 mode;
/// bool zero_copy; u32 socket_id; u32 ring_size; u16 buffer_size;
/// u32 flags; string if_name[64]}`. VPP reports the ring and buffer sizes
/// negotiated with the peer (ring 1, buffer 0 before any peer connected),
/// not the ones requested at create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemifDetails {
    pub sw_if_index: u32,
    pub hw_addr: [u8; 6],
    pub id: u32,
    pub role: u32,
    pub mode: u32,
    pub zero_copy: bool,
    pub socket_id: u32,
    pub ring_size: u32,
    pub buffer_size: u16,
    pub flags: u32,
    pub if_name: String,
}
message!(MemifDetails, "memif_details", 0xda34feb9, "memif");

impl Reply for MemifDetails {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self {
            sw_if_index: r.u32()?,
            hw_addr: r.array()?,
            id: r.u32()?,
            role: r.u32()?,
            mode: r.u32()?,
            zero_copy: r.bool()?,
            socket_id: r.u32()?,
            ring_size: r.u32()?,
            buffer_size: r.u16()?,
            flags: r.u32()?,
            if_name: r.fixed_str(64)?,
        })
    }
}
