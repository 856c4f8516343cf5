//! Wire-format facts shared by the datapath and the packets tests build.

/// Ethernet header length (no VLAN tag, no FCS: BPF never sees one).
pub const ETH_HLEN: usize = 14;
/// IPv4 header length without options (IHL 5).
pub const IPV4_HLEN: usize = 20;
/// The IPv4 ethertype.
pub const ETH_P_IP: u16 = 0x0800;
/// The ARP ethertype.
pub const ETH_P_ARP: u16 = 0x0806;
