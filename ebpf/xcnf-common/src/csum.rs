//! Internet checksum arithmetic (RFC 1071, incremental update per RFC 1624).
//!
//! Used by the eBPF programs on the fast path and by the agent's tests to
//! build expected packets, so both sides compute checksums the same way.

/// Folds a 32-bit one's-complement accumulator to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Folds a 64-bit one's-complement accumulator to 16 bits.
#[inline(always)]
pub fn fold64(sum: u64) -> u16 {
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    fold(sum as u32)
}

/// Replaces one 16-bit word `old` by `new` under checksum `check`
/// (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
///
/// One's-complement sums commute with swapping bytes, so the three values
/// only need to share a byte order, and the result is in that order: the
/// datapath passes words as read from memory and stores the result as is,
/// with no byte swaps.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// As [`replace16`] for a 32-bit field (an address): its two 16-bit words
/// change at once. Same byte-order rule.
#[inline(always)]
pub fn replace32(check: u16, old: u32, new: u32) -> u16 {
    !fold64(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// Whether a 20-byte IPv4 header (no options) carries a correct checksum:
/// the one's-complement sum of all its words, checksum included, is 0xffff.
///
/// Summed as five 32-bit words in memory order: 0xffff reads the same in
/// both byte orders, and the sum needs no swaps (see [`replace16`]).
#[inline(always)]
pub fn ipv4_header_valid(h: &[u8; crate::wire::IPV4_HLEN]) -> bool {
    let w = |i: usize| u64::from(u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    fold64(w(0) + w(4) + w(8) + w(12) + w(16)) == 0xffff
}

/// Full checksum over `data` (RFC 1071), as stored in a header whose
/// checksum field is zero in `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold eagerly so arbitrarily long inputs cannot overflow.
        if sum > 0xffff_0000 {
            sum = u32::from(fold(sum));
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    !fold(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header from RFC 1071-style worked examples (a real IPv4 header).
    const HDR: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn full_checksum_of_known_header() {
        let mut h = HDR;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(checksum(&h), 0xb861);
        // A header with its checksum in place sums to zero.
        assert_eq!(checksum(&HDR), 0);
    }

    #[test]
    fn ttl_decrement_matches_recompute_for_all_ttls_and_protocols() {
        for ttl in 2..=255u8 {
            for proto in [1u8, 6, 17, 47, 255] {
                let mut h = HDR;
                h[8] = ttl;
                h[9] = proto;
                h[10] = 0;
                h[11] = 0;
                let c = checksum(&h);
                let old = u16::from_be_bytes([ttl, proto]);
                let new = u16::from_be_bytes([ttl - 1, proto]);
                let inc = replace16(c, old, new);
                h[8] = ttl - 1;
                assert_eq!(inc, checksum(&h), "ttl {ttl} proto {proto}");
            }
        }
    }

    #[test]
    fn header_validation_accepts_good_and_rejects_every_single_bit_flip() {
        assert!(ipv4_header_valid(&HDR));
        for bit in 0..160 {
            let mut h = HDR;
            h[bit / 8] ^= 1 << (bit % 8);
            assert!(!ipv4_header_valid(&h), "bit {bit} flip accepted");
        }
    }

    /// Addresses and ports as the datapath sees them: read from memory in
    /// native order, updated without swaps, stored back.
    #[test]
    fn memory_order_updates_match_recompute() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut h = HDR;
            let r = next().to_ne_bytes();
            h[12..20].copy_from_slice(&r);
            h[10] = 0;
            h[11] = 0;
            let c = checksum(&h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            assert!(ipv4_header_valid(&h));
            let new = next().to_ne_bytes();
            let field = if new[7] & 1 == 0 { 12 } else { 16 };
            let old = [h[field], h[field + 1], h[field + 2], h[field + 3]];
            let new4 = [new[0], new[1], new[2], new[3]];
            let raw = u16::from_ne_bytes([h[10], h[11]]);
            let up = replace32(raw, u32::from_ne_bytes(old), u32::from_ne_bytes(new4));
            h[field..field + 4].copy_from_slice(&new4);
            h[10..12].copy_from_slice(&up.to_ne_bytes());
            assert!(ipv4_header_valid(&h), "{h:02x?}");
            let mut z = h;
            z[10] = 0;
            z[11] = 0;
            assert_eq!(u16::from_be_bytes([h[10], h[11]]), checksum(&z));
            // A 16-bit word (a port) the same way.
            let (o16, n16) = ([h[12], h[13]], [new[4], new[5]]);
            let up = replace16(
                u16::from_ne_bytes([h[10], h[11]]),
                u16::from_ne_bytes(o16),
                u16::from_ne_bytes(n16),
            );
            h[12..14].copy_from_slice(&n16);
            h[10..12].copy_from_slice(&up.to_ne_bytes());
            assert!(ipv4_header_valid(&h), "{h:02x?}");
        }
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[0x01, 0x00]), checksum(&[0x01]));
    }
}
