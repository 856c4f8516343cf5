//! `vpe.api` and `vlib.api`: the version query and the debug CLI.

use super::{Reply, Request, empty_request, message};
use crate::vpp::{
    error::VppError,
    wire::{Reader, Writer},
};

empty_request!(
    ShowVersion,
    ShowVersionReply,
    "show_version",
    0x51077d14,
    "vpe"
);

/// `{i32 retval; string program[32]; string version[32];
/// string build_date[32]; string build_directory[256]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShowVersionReply {
    pub retval: i32,
    pub program: String,
    pub version: String,
    pub build_date: String,
    pub build_directory: String,
}
message!(ShowVersionReply, "show_version_reply", 0xc919bde1, "vpe");

impl Reply for ShowVersionReply {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self {
            retval: r.i32()?,
            program: r.fixed_str(32)?,
            version: r.fixed_str(32)?,
            build_date: r.fixed_str(32)?,
            build_directory: r.fixed_str(256)?,
        })
    }
    fn retval(&self) -> i32 {
        self.retval
    }
}

/// `{string cmd[]}`: one debug CLI command, answered with its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliInband {
    pub cmd: String,
}
message!(CliInband, "cli_inband", 0xf8377302, "vlib");

impl Request for CliInband {
    type Reply = CliInbandReply;
    fn encode(&self, w: &mut Writer) -> Result<(), VppError> {
        w.var_str("cmd", &self.cmd)?;
        Ok(())
    }
}

/// `{i32 retval; string reply[]}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CliInbandReply {
    pub retval: i32,
    pub reply: String,
}
message!(CliInbandReply, "cli_inband_reply", 0x05879051, "vlib");

impl Reply for CliInbandReply {
    fn decode(r: &mut Reader<'_>) -> Result<Self, VppError> {
        Ok(Self {
            retval: r.i32()?,
            reply: r.var_str()?,
        })
    }
    fn retval(&self) -> i32 {
        self.retval
    }
}
