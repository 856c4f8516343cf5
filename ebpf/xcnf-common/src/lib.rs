//! Types shared by the xcnf eBPF programs and the agent.
//!
//! Everything that crosses the kernel/user boundary is defined once, here: map
//! names, key and value layouts, and the checksum arithmetic both sides must
//! agree on. Every map value is `#[repr(C)]` with explicit padding fields, so
//! the kernel's view (read through BTF by `bpftool`) and Rust's view are
//! byte-identical and no uninitialised padding ever reaches a map.
#![no_std]

pub mod counters;
pub mod csum;
pub mod iface;
pub mod maps;
pub mod nat;
pub mod wire;

pub use counters::{DropReasons, IfCounters, PacketBytes, PassReasons};
pub use iface::{IfaceConfig, free_slot};
