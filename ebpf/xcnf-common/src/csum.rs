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

/// Replaces one 16-bit word `old` by `new` under checksum `check`
/// (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
///
/// All values are the big-endian (network) numeric values of the words.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}

/// Whether a 20-byte IPv4 header (no options) carries a correct checksum:
/// the one's-complement sum of all its words, checksum included, is 0xffff.
///
/// Fixed-size and loop-bounded so the verifier accepts it on packet data.
#[inline(always)]
pub fn ipv4_header_valid(h: &[u8; crate::wire::IPV4_HLEN]) -> bool {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i < h.len() {
        sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        i += 2;
    }
    fold(sum) == 0xffff
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

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(checksum(&[0x01]), !0x0100);
        assert_eq!(checksum(&[0x01, 0x00]), checksum(&[0x01]));
    }
}
