//! Frames to feed the datapath through `BPF_PROG_TEST_RUN`, and the frames a
//! correct router would hand back.
//!
//! Expected frames are built here from first principles (full checksum
//! recomputation with [`xcnf_common::csum::checksum`]) rather than by the
//! incremental update the datapath uses, so a wrong RFC 1624 step cannot hide
//! behind an identical wrong expectation.

use xcnf_common::csum::checksum;

/// An Ethernet MAC address.
pub type Mac = [u8; 6];
/// An IPv4 address in wire order.
pub type Ip4 = [u8; 4];

pub use xcnf_common::wire::{ETH_HLEN, ETH_P_IP, IPV4_HLEN};
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_UDP: u8 = 17;

/// Offsets into a frame that carries IPv4 right after the Ethernet header.
const TTL_OFF: usize = ETH_HLEN + 8;
const CHECK_OFF: usize = ETH_HLEN + 10;

/// An Ethernet frame: header followed by `payload`, no FCS (the kernel never
/// shows one to BPF).
pub fn ethernet(dst: Mac, src: Mac, ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_HLEN + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 header to encode. Fields the datapath never interprets (id, DF)
/// have fixed, non-zero values so a stray write to them shows in the output.
#[derive(Clone, Debug)]
pub struct Ipv4 {
    pub src: Ip4,
    pub dst: Ip4,
    pub ttl: u8,
    pub tos: u8,
    pub protocol: u8,
    /// Raw option bytes; their length must be a multiple of 4.
    pub options: Vec<u8>,
}

impl Ipv4 {
    pub fn new(src: Ip4, dst: Ip4) -> Self {
        Self {
            src,
            dst,
            ttl: 64,
            tos: 0,
            protocol: IPPROTO_UDP,
            options: Vec::new(),
        }
    }

    #[must_use]
    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    #[must_use]
    pub fn options(mut self, options: &[u8]) -> Self {
        assert!(
            options.len().is_multiple_of(4) && options.len() <= 40,
            "IPv4 options must be padded to 32-bit words, at most 40 bytes"
        );
        self.options = options.to_vec();
        self
    }

    /// The header (with a correct checksum) followed by `payload`.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let hlen = IPV4_HLEN + self.options.len();
        let tot_len = u16::try_from(hlen + payload.len()).expect("IPv4 packet over 64 KiB");
        let ihl = u8::try_from(hlen / 4).expect("IHL fits a nibble");
        let mut p = Vec::with_capacity(usize::from(tot_len));
        p.push(0x40 | ihl);
        p.push(self.tos);
        p.extend_from_slice(&tot_len.to_be_bytes());
        p.extend_from_slice(&0x1c46u16.to_be_bytes()); // id
        p.extend_from_slice(&0x4000u16.to_be_bytes()); // DF, offset 0
        p.push(self.ttl);
        p.push(self.protocol);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src);
        p.extend_from_slice(&self.dst);
        p.extend_from_slice(&self.options);
        let c = checksum(&p[..hlen]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }
}

/// A UDP datagram with a correct checksum over the IPv4 pseudo-header, so the
/// payload is one a real receiver would accept; forwarding must not touch it.
pub fn udp(src: Ip4, dst: Ip4, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("UDP datagram over 64 KiB");
    let mut d = Vec::with_capacity(usize::from(len));
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12 + d.len());
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, IPPROTO_UDP]);
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(&d);
    // RFC 768: a computed zero is sent as all ones, zero means "no checksum".
    let c = match checksum(&pseudo) {
        0 => 0xffff,
        c => c,
    };
    d[6..8].copy_from_slice(&c.to_be_bytes());
    d
}

/// A recognisable, non-repeating payload of `len` bytes.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// An Ethernet frame carrying `ip` with a UDP datagram whose IPv4 total
/// length is exactly `ip_len` bytes.
pub fn udp_frame(dst: Mac, src: Mac, ip: &Ipv4, ip_len: usize) -> Vec<u8> {
    let hlen = IPV4_HLEN + ip.options.len();
    let data_len = ip_len
        .checked_sub(hlen + 8)
        .expect("ip_len leaves no room for the IPv4 and UDP headers");
    let dgram = udp(ip.src, ip.dst, 40000, 4789, &payload(data_len));
    ethernet(dst, src, ETH_P_IP, &ip.encode(&dgram))
}

/// A broadcast ARP request ("who has `target`? tell `sender`").
pub fn arp_request(src: Mac, sender: Ip4, target: Ip4) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    a.extend_from_slice(&ETH_P_IP.to_be_bytes());
    a.extend_from_slice(&[6, 4]);
    a.extend_from_slice(&1u16.to_be_bytes()); // request
    a.extend_from_slice(&src);
    a.extend_from_slice(&sender);
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target);
    ethernet([0xff; 6], src, ETH_P_ARP, &a)
}

/// An IPv6 frame with a UDP payload (no L4 checksum: only the ethertype
/// matters to an IPv4-only datapath).
pub fn ipv6_frame(dst: Mac, src: Mac, hop_limit: u8) -> Vec<u8> {
    let body = payload(16);
    let udp_len = u16::try_from(8 + body.len()).expect("small");
    let mut p = Vec::new();
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.push(IPPROTO_UDP);
    p.push(hop_limit);
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&4789u16.to_be_bytes());
    p.extend_from_slice(&udp_len.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&body);
    ethernet(dst, src, ETH_P_IPV6, &p)
}

/// `frame` after one router hop that left the MACs alone: TTL minus one and
/// the header checksum recomputed from scratch.
pub fn ttl_decremented(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let hlen = usize::from(f[ETH_HLEN] & 0x0f) * 4;
    assert!(f[TTL_OFF] > 0, "cannot decrement TTL 0");
    f[TTL_OFF] -= 1;
    f[CHECK_OFF..CHECK_OFF + 2].fill(0);
    let c = checksum(&f[ETH_HLEN..ETH_HLEN + hlen]);
    f[CHECK_OFF..CHECK_OFF + 2].copy_from_slice(&c.to_be_bytes());
    f
}

/// `frame` as a router sends it on: TTL decremented and the Ethernet header
/// readdressed from the egress interface (`src`) to the next hop (`dst`).
pub fn routed(frame: &[u8], dst: Mac, src: Mac) -> Vec<u8> {
    let mut f = ttl_decremented(frame);
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Mac {
    let parts: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("bad MAC {s:?}: {e}")))
        .collect();
    parts
        .try_into()
        .unwrap_or_else(|p: Vec<u8>| panic!("MAC {s:?} has {} octets, not 6", p.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_header_checksums_to_zero() {
        let ip = Ipv4::new([10, 0, 0, 1], [10, 0, 0, 2]).options(&[1, 1, 1, 0]);
        let p = ip.encode(&[1, 2, 3]);
        assert_eq!(p[0], 0x46);
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), 27);
        assert_eq!(checksum(&p[..24]), 0);
    }

    #[test]
    fn udp_checksum_verifies() {
        let (s, d) = ([192, 0, 2, 1], [198, 51, 100, 7]);
        let dgram = udp(s, d, 1, 2, &payload(33));
        let mut pseudo = [s.as_slice(), d.as_slice(), &[0, IPPROTO_UDP]].concat();
        pseudo.extend_from_slice(&u16::try_from(dgram.len()).unwrap().to_be_bytes());
        pseudo.extend_from_slice(&dgram);
        assert_eq!(checksum(&pseudo), 0);
    }

    #[test]
    fn udp_frame_has_requested_ip_length() {
        let ip = Ipv4::new([10, 0, 0, 1], [10, 0, 0, 2]);
        let f = udp_frame([1; 6], [2; 6], &ip, 1400);
        assert_eq!(f.len(), ETH_HLEN + 1400);
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 1400);
    }

    #[test]
    fn routed_rewrites_only_macs_ttl_and_checksum() {
        let ip = Ipv4::new([10, 0, 0, 1], [10, 0, 0, 2]).ttl(2);
        let f = udp_frame([0; 6], [2; 6], &ip, 64);
        let r = routed(&f, [3; 6], [4; 6]);
        assert_eq!(&r[..12], &[[3; 6], [4; 6]].concat()[..]);
        assert_eq!(r[TTL_OFF], 1);
        assert_eq!(checksum(&r[ETH_HLEN..ETH_HLEN + IPV4_HLEN]), 0);
        let changed: Vec<usize> = (12..f.len()).filter(|&i| f[i] != r[i]).collect();
        assert!(
            changed
                .iter()
                .all(|&i| i == TTL_OFF || i == CHECK_OFF || i == CHECK_OFF + 1),
            "unexpected bytes changed: {changed:?}"
        );
    }

    #[test]
    fn parses_mac() {
        assert_eq!(parse_mac("02:00:0a:ff:00:9B"), [2, 0, 10, 255, 0, 0x9b]);
    }
}
