//! The VPP API messages xcnf uses, one file per VPP `.api` file.
//!
//! Each message states its name and the CRC it was written for exactly once
//! (in its `message!` line); [`USED`] lists them all so the client can check
//! every one against VPP's message table at connect and refuse a VPP whose
//! API differs, instead of sending bytes it would misread.

pub mod interface;
pub mod ip;
pub mod memclnt;
pub mod memif;
pub mod nat44;
pub mod vpe;

#[cfg(test)]
mod encoding_tests;

use super::{
    error::VppError,
    wire::{Reader, Writer},
};

/// A message as VPP's table names it: `<name>_<crc as %08x>`.
pub trait Message {
    const NAME: &'static str;
    const CRC: u32;
    /// The `.api` file (and plugin) it comes from, for "is the plugin loaded?".
    const API: &'static str;
}

/// A request: header `{u16 id; u32 client_index; u32 context}`, then the
/// fields [`Request::encode`] writes.
pub trait Request: Message {
    /// The reply, or for a dump the details message.
    type Reply: Reply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError>;
}

/// A reply or details message: header `{u16 id; u32 context}`, then the
/// fields [`Reply::decode`] reads (a reply's start with `i32 retval`).
pub trait Reply: Message + Sized {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError>;
    /// 0 on success; details messages have none.
    fn retval(&self) -> i32 {
        0
    }
}

/// Request header length: id, client_index, context.
pub const REQUEST_HEADER: usize = 10;
/// Reply/details header length: id, context.
pub const REPLY_HEADER: usize = 6;

/// One entry of [`USED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgRef {
    pub name: &'static str,
    pub crc: u32,
    pub api: &'static str,
}

impl MsgRef {
    pub const fn of<M: Message>() -> Self {
        Self {
            name: M::NAME,
            crc: M::CRC,
            api: M::API,
        }
    }

    /// The key in VPP's message table.
    pub fn name_crc(&self) -> String {
        format!("{}_{:08x}", self.name, self.crc)
    }
}

/// Every message the client sends or parses. The handshake checks them all.
pub const USED: &[MsgRef] = &[
    MsgRef::of::<memclnt::SockclntCreate>(),
    MsgRef::of::<memclnt::SockclntCreateReply>(),
    MsgRef::of::<memclnt::SockclntDelete>(),
    MsgRef::of::<memclnt::SockclntDeleteReply>(),
    MsgRef::of::<memclnt::ControlPing>(),
    MsgRef::of::<memclnt::ControlPingReply>(),
    MsgRef::of::<vpe::ShowVersion>(),
    MsgRef::of::<vpe::ShowVersionReply>(),
    MsgRef::of::<vpe::CliInband>(),
    MsgRef::of::<vpe::CliInbandReply>(),
    MsgRef::of::<memif::MemifSocketFilenameAddDelV2>(),
    MsgRef::of::<memif::MemifSocketFilenameAddDelV2Reply>(),
    MsgRef::of::<memif::MemifCreateV2>(),
    MsgRef::of::<memif::MemifCreateV2Reply>(),
    MsgRef::of::<memif::MemifDelete>(),
    MsgRef::of::<memif::MemifDeleteReply>(),
    MsgRef::of::<memif::MemifSocketFilenameDump>(),
    MsgRef::of::<memif::MemifSocketFilenameDetails>(),
    MsgRef::of::<memif::MemifDump>(),
    MsgRef::of::<memif::MemifDetails>(),
    MsgRef::of::<interface::SwInterfaceSetFlags>(),
    MsgRef::of::<interface::SwInterfaceSetFlagsReply>(),
    MsgRef::of::<interface::SwInterfaceAddDelAddress>(),
    MsgRef::of::<interface::SwInterfaceAddDelAddressReply>(),
    MsgRef::of::<interface::SwInterfaceDump>(),
    MsgRef::of::<interface::SwInterfaceDetails>(),
    MsgRef::of::<ip::IpRouteAddDel>(),
    MsgRef::of::<ip::IpRouteAddDelReply>(),
    MsgRef::of::<nat44::Nat44EdPluginEnableDisable>(),
    MsgRef::of::<nat44::Nat44EdPluginEnableDisableReply>(),
    MsgRef::of::<nat44::Nat44AddDelAddressRange>(),
    MsgRef::of::<nat44::Nat44AddDelAddressRangeReply>(),
    MsgRef::of::<nat44::Nat44InterfaceAddDelFeature>(),
    MsgRef::of::<nat44::Nat44InterfaceAddDelFeatureReply>(),
    MsgRef::of::<nat44::Nat44AddDelStaticMappingV2>(),
    MsgRef::of::<nat44::Nat44AddDelStaticMappingV2Reply>(),
    MsgRef::of::<nat44::Nat44AddDelIdentityMapping>(),
    MsgRef::of::<nat44::Nat44AddDelIdentityMappingReply>(),
    MsgRef::of::<nat44::NatSetTimeouts>(),
    MsgRef::of::<nat44::NatSetTimeoutsReply>(),
    MsgRef::of::<nat44::Nat44UserDump>(),
    MsgRef::of::<nat44::Nat44UserDetails>(),
    MsgRef::of::<nat44::Nat44UserSessionV3Dump>(),
    MsgRef::of::<nat44::Nat44UserSessionV3Details>(),
];

/// A whole request payload (without the socket header).
pub fn encode_request<R: Request>(
    req: &R,
    id: u16,
    client_index: u32,
    context: u32,
) -> Result<Vec<u8>, VppError> {
    let mut w = Writer::new(R::NAME);
    w.u16(id).u32(client_index).u32(context);
    req.encode(&mut w)?;
    Ok(w.into_bytes())
}

/// A reply or details payload, header included (the id was already matched).
pub fn decode_reply<R: Reply>(payload: &[u8]) -> Result<R, VppError> {
    let mut r = Reader::new(R::NAME, payload, REPLY_HEADER);
    if payload.len() < REPLY_HEADER {
        return Err(r.error(format!("{} bytes, shorter than its header", payload.len())));
    }
    R::decode(&mut r)
}

/// Implements [`Message`]: the one place a message's name and CRC are stated.
macro_rules! message {
    ($t:ident, $name:literal, $crc:literal, $api:literal) => {
        impl $crate::vpp::msg::Message for $t {
            const NAME: &'static str = $name;
            const CRC: u32 = $crc;
            const API: &'static str = $api;
        }
    };
}

/// A request whose body is only the header (dumps without filters, pings).
macro_rules! empty_request {
    ($t:ident, $reply:ident, $name:literal, $crc:literal, $api:literal) => {
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $t;
        $crate::vpp::msg::message!($t, $name, $crc, $api);
        impl $crate::vpp::msg::Request for $t {
            type Reply = $reply;
            fn encode(
                &self,
                _: &mut $crate::vpp::wire::Writer,
            ) -> Result<(), $crate::vpp::error::VppError> {
                Ok(())
            }
        }
    };
}

/// A reply that is only `i32 retval` (VPP's `autoreply`).
macro_rules! retval_reply {
    ($t:ident, $name:literal, $crc:literal, $api:literal) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $t {
            pub retval: i32,
        }
        $crate::vpp::msg::message!($t, $name, $crc, $api);
        impl $crate::vpp::msg::Reply for $t {
            fn decode(
                r: &mut $crate::vpp::wire::Reader<'_>,
            ) -> Result<Self, $crate::vpp::error::VppError> {
                Ok(Self { retval: r.i32()? })
            }
            fn retval(&self) -> i32 {
                self.retval
            }
        }
    };
}

pub(crate) use {empty_request, message, retval_reply};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_used_message_is_listed_once() {
        let mut names: Vec<_> = USED.iter().map(|m| m.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn name_crc_is_the_table_key_form() {
        assert_eq!(
            MsgRef::of::<memif::MemifCreateV2>().name_crc(),
            "memif_create_v2_8c7de5f7"
        );
    }
}
