//! Per-interface configuration written by the agent.

/// What the datapath needs to know about an interface it manages.
///
/// Presence in the `IFACES` map is what makes an interface "managed": only
/// managed interfaces are forwarded from and redirected to, everything else
/// is left to the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceConfig {
    /// The interface's own MAC address. XDP has no `pkt_type`, so this is how
    /// it tells frames addressed to the CNF from promiscuous or flooded ones.
    pub mac: [u8; 6],
    /// NAT44 role ([`crate::nat::role`]): whether traffic arriving here is
    /// translated as coming from inside, from outside, or not at all.
    pub role: u8,
    /// Explicit padding, always zero.
    pub _pad: u8,
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, only integer arrays, no implicit padding.
unsafe impl aya::Pod for IfaceConfig {}

const _: () = assert!(core::mem::size_of::<IfaceConfig>() == 8);
