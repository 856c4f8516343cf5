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
    /// [`flags`] bits.
    pub flags: u8,
    /// Index of the interface's entry in the `COUNTERS` per-CPU array,
    /// chosen by the agent (the lowest one no other interface holds). An
    /// array rather than a hash keyed by ifindex because its lookup is
    /// inlined: one hash lookup fewer on every packet.
    pub slot: u32,
}

/// Bits of [`IfaceConfig::flags`].
pub mod flags {
    /// Redirects to this interface go to its peer's ingress
    /// (`bpf_redirect_peer`): set for a veth or netkit whose peer is in
    /// another network namespace. The packet skips this interface's
    /// transmit path and the peer's backlog queue, which is most of a
    /// veth hop's cost, exactly as a veth transmit would deliver it
    /// otherwise (same MTU check, same scrubbing) but without this
    /// interface's egress qdisc, TC egress hooks and packet taps.
    pub const PEER_REDIRECT: u8 = 1;
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, only integer arrays, no implicit padding.
unsafe impl aya::Pod for IfaceConfig {}

const _: () = assert!(core::mem::size_of::<IfaceConfig>() == 12);

/// The lowest counter slot (see [`IfaceConfig::slot`]) not in `used`, or
/// `None` when all [`crate::maps::MAX_IFACES`] are taken. The agent and
/// the tests' loader both assign slots with it.
pub fn free_slot(used: impl IntoIterator<Item = u32>) -> Option<u32> {
    const WORDS: usize = crate::maps::MAX_IFACES / 64;
    let mut taken = [0u64; WORDS];
    for s in used {
        let s = s as usize;
        if s < crate::maps::MAX_IFACES {
            taken[s / 64] |= 1 << (s % 64);
        }
    }
    let (w, bits) = taken.iter().enumerate().find(|(_, b)| **b != u64::MAX)?;
    Some((w * 64) as u32 + bits.trailing_ones())
}

#[cfg(test)]
mod tests {
    use super::free_slot;
    use crate::maps::MAX_IFACES;

    #[test]
    fn lowest_free_slot_fills_holes_and_ends_at_capacity() {
        assert_eq!(free_slot([]), Some(0));
        assert_eq!(free_slot([0, 1, 3]), Some(2));
        assert_eq!(free_slot((0..64).chain([65])), Some(64));
        // Out-of-range slots (never assigned) do not take a real one.
        assert_eq!(free_slot([u32::MAX, 5000]), Some(0));
        let all = 0..MAX_IFACES as u32;
        assert_eq!(free_slot(all.clone()), None);
        assert_eq!(free_slot(all.filter(|s| *s != 1000)), Some(1000));
    }
}
