//! `memclnt.api`: the socket client registration and the control ping.

use super::{Message, Reply, Request, empty_request, message};
use crate::vpp::{
    error::VppError,
    wire::{Reader, Writer},
};

/// memclnt is registered first in every VPP, so its ids are fixed; this is
/// the only id the client may use before it has the message table.
pub const SOCKCLNT_CREATE_ID: u16 = 15;

/// Registers the client: `{u16 id; u32 context; string name[64]}`. Unlike
/// every other request it has no `client_index` (the client has none yet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockclntCreate {
    pub name: String,
}
message!(SockclntCreate, "sockclnt_create", 0x455fb9c4, "memclnt");

impl SockclntCreate {
    pub fn encode(&self, context: u32) -> Result<Vec<u8>, VppError> {
        let mut w = Writer::new(Self::NAME);
        w.u16(SOCKCLNT_CREATE_ID).u32(context);
        w.fixed_str("name", &self.name, 64)?;
        Ok(w.into_bytes())
    }
}

/// One `message_table_entry`: `{u16 index; string name[64]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableEntry {
    pub id: u16,
    /// `<name>_<crc %08x>`.
    pub name_crc: String,
}

/// `{u16 id; u32 client_index; u32 context; i32 response; u32 index;
/// u16 count; message_table_entry[count]}`: context sits at 6 here, not 2.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SockclntCreateReply {
    pub context: u32,
    pub response: i32,
    /// The client_index of every later request.
    pub index: u32,
    pub table: Vec<TableEntry>,
}
message!(
    SockclntCreateReply,
    "sockclnt_create_reply",
    0x35166268,
    "memclnt"
);

impl SockclntCreateReply {
    pub fn decode(payload: &[u8]) -> Result<Self, VppError> {
        let mut r = Reader::new(Self::NAME, payload, 2);
        let _client_index = r.u32()?;
        let context = r.u32()?;
        let response = r.i32()?;
        let index = r.u32()?;
        let count = r.u16()?;
        let table = (0..count)
            .map(|_| {
                let id = r.u16()?;
                // govpp trims a stray trailing 0x13 some VPP builds leave.
                let name_crc = r.fixed_str(64)?.trim_end_matches('\x13').to_owned();
                Ok(TableEntry { id, name_crc })
            })
            .collect::<Result<_, VppError>>()?;
        Ok(Self {
            context,
            response,
            index,
            table,
        })
    }
}

/// Unregisters: `{u32 index}` after the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockclntDelete {
    pub index: u32,
}
message!(SockclntDelete, "sockclnt_delete", 0x8ac76db6, "memclnt");

impl Request for SockclntDelete {
    type Reply = SockclntDeleteReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.u32(self.index);
        Ok(())
    }
}

/// `{i32 response}`: VPP answers 1 when it deleted the registration
/// ("non-negative = success"), -1 for an unknown one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockclntDeleteReply {
    pub response: i32,
}
message!(
    SockclntDeleteReply,
    "sockclnt_delete_reply",
    0x8f38b1ee,
    "memclnt"
);

impl Reply for SockclntDeleteReply {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self { response: r.i32()? })
    }
    fn retval(&self) -> i32 {
        self.response.min(0)
    }
}

empty_request!(
    ControlPing,
    ControlPingReply,
    "control_ping",
    0x51077d14,
    "memclnt"
);

/// `{i32 retval; u32 client_index; u32 vpe_pid}`: also the end marker of
/// every dump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPingReply {
    pub retval: i32,
    pub client_index: u32,
    pub vpe_pid: u32,
}
message!(
    ControlPingReply,
    "control_ping_reply",
    0xf6b0b8ca,
    "memclnt"
);

impl Reply for ControlPingReply {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self {
            retval: r.i32()?,
            client_index: r.u32()?,
            vpe_pid: r.u32()?,
        })
    }
    fn retval(&self) -> i32 {
        self.retval
    }
}
