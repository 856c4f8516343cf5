//! The VPP backend's API client: VPP's binary API over its unix socket
//! (`/run/vpp/api.sock`), on tokio.
//!
//! - [`wire`]: the 16-byte socket header and big-endian field encoding;
//! - [`msg`]: every message xcnf uses, with the CRC it was written for;
//! - [`client`]: one connection: handshake, message-table check, calls
//!   matched by context, dumps ended by `control_ping`, a timeout on each;
//! - [`supervisor`]: reconnects with backoff and counts epochs, so the
//!   reconciler knows when VPP restarted and lost its configuration;
//! - [`ops`]: the typed operations (memif, addresses, routes, NAT44, CLI).

pub mod client;
pub mod error;
pub mod msg;
pub mod ops;
pub mod reconcile;
pub mod supervisor;
pub mod wire;

pub use client::{Client, ClientOptions, DEFAULT_SOCKET};
pub use error::VppError;
pub use ops::{
    IdentityMapping, InterfaceDetails, Ipv4Route, MemifInfo, MemifMode, MemifRole, MemifSpec,
    NatProto, NatSession, NatSide, StaticMapping, SwIfIndex, Version, memif_socket_filename,
};
pub use supervisor::{Backoff, VppConnection, VppStatus};
