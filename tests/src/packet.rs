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
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_GRE: u8 = 47;

/// TCP flag bits (the 13th byte of the header).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// ICMP types and codes the fixtures send (RFC 792).
pub mod icmp {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACH: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAM_PROBLEM: u8 = 12;
    /// Codes of DEST_UNREACH.
    pub const PORT_UNREACH: u8 = 3;
    pub const FRAG_NEEDED: u8 = 4;
    /// Code of TIME_EXCEEDED: TTL reached zero in transit.
    pub const TTL_EXCEEDED: u8 = 0;
}

/// The IPv4 "don't fragment" and "more fragments" bits of the
/// flags/fragment-offset word.
pub const IP_DF: u16 = 0x4000;
pub const IP_MF: u16 = 0x2000;

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
    pub id: u16,
    /// Flags and fragment offset (in 8-byte units), as on the wire.
    pub frag: u16,
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
            id: 0x1c46,
            frag: IP_DF,
            options: Vec::new(),
        }
    }

    #[must_use]
    pub fn protocol(mut self, protocol: u8) -> Self {
        self.protocol = protocol;
        self
    }

    #[must_use]
    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    /// A fragment at byte `offset` of the original datagram (a multiple of
    /// 8), with "more fragments" set if `more`; DF is cleared.
    #[must_use]
    pub fn fragment(mut self, offset: usize, more: bool) -> Self {
        assert!(
            offset.is_multiple_of(8),
            "fragment offset {offset} not a multiple of 8"
        );
        let units = u16::try_from(offset / 8).expect("fragment offset fits 13 bits");
        assert!(units < 0x2000, "fragment offset {offset} too large");
        self.frag = units | if more { IP_MF } else { 0 };
        self
    }

    /// The same header with source and destination replaced.
    #[must_use]
    pub fn addresses(mut self, src: Ip4, dst: Ip4) -> Self {
        self.src = src;
        self.dst = dst;
        self
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

    /// The header alone, with a correct checksum, claiming a total length of
    /// `tot_len` (which is what an ICMP error quotes: the header of a packet
    /// longer than the quote).
    pub fn header(&self, tot_len: usize) -> Vec<u8> {
        let hlen = IPV4_HLEN + self.options.len();
        let tot_len = u16::try_from(tot_len).expect("IPv4 packet over 64 KiB");
        let ihl = u8::try_from(hlen / 4).expect("IHL fits a nibble");
        let mut p = Vec::with_capacity(hlen);
        p.push(0x40 | ihl);
        p.push(self.tos);
        p.extend_from_slice(&tot_len.to_be_bytes());
        p.extend_from_slice(&self.id.to_be_bytes());
        p.extend_from_slice(&self.frag.to_be_bytes());
        p.push(self.ttl);
        p.push(self.protocol);
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(&self.src);
        p.extend_from_slice(&self.dst);
        p.extend_from_slice(&self.options);
        let c = checksum(&p);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// The header (with a correct checksum) followed by `payload`.
    pub fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let hlen = IPV4_HLEN + self.options.len();
        let mut p = self.header(hlen + payload.len());
        p.extend_from_slice(payload);
        p
    }
}

/// The transport checksum of `segment` (checksum field zeroed) over the IPv4
/// pseudo-header, as TCP and UDP define it.
pub fn l4_checksum(src: Ip4, dst: Ip4, proto: u8, segment: &[u8]) -> u16 {
    let len = u16::try_from(segment.len()).expect("segment over 64 KiB");
    let mut pseudo = Vec::with_capacity(12 + segment.len());
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&len.to_be_bytes());
    pseudo.extend_from_slice(segment);
    checksum(&pseudo)
}

/// A UDP datagram with a correct checksum over the IPv4 pseudo-header, so the
/// payload is one a real receiver would accept; forwarding must not touch it.
pub fn udp(src: Ip4, dst: Ip4, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = udp_without_checksum(sport, dport, payload);
    // RFC 768: a computed zero is sent as all ones, zero means "no checksum".
    let c = match l4_checksum(src, dst, IPPROTO_UDP, &d) {
        0 => 0xffff,
        c => c,
    };
    d[6..8].copy_from_slice(&c.to_be_bytes());
    d
}

/// A UDP datagram whose checksum field is zero: "no checksum" (RFC 768),
/// which a translator must leave zero.
pub fn udp_without_checksum(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("UDP datagram over 64 KiB");
    let mut d = Vec::with_capacity(usize::from(len));
    d.extend_from_slice(&sport.to_be_bytes());
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&len.to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// The fields of a TCP header the fixtures vary; the header has no options
/// (data offset 5) and urgent pointer 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcp {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    /// [`tcp_flags`] bits.
    pub flags: u8,
    pub window: u16,
}

impl Tcp {
    /// A segment with arbitrary but fixed sequence numbers and window, so a
    /// stray write to them shows in the output.
    pub fn new(sport: u16, dport: u16, flags: u8) -> Self {
        Self {
            sport,
            dport,
            seq: 0x1122_3344,
            ack: if flags & tcp_flags::ACK != 0 {
                0x5566_7788
            } else {
                0
            },
            flags,
            window: 64240,
        }
    }

    /// The segment with `payload` and a correct checksum for `src` → `dst`.
    pub fn encode(&self, src: Ip4, dst: Ip4, payload: &[u8]) -> Vec<u8> {
        let mut t = Vec::with_capacity(20 + payload.len());
        t.extend_from_slice(&self.sport.to_be_bytes());
        t.extend_from_slice(&self.dport.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack.to_be_bytes());
        t.push(5 << 4);
        t.push(self.flags);
        t.extend_from_slice(&self.window.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        t.extend_from_slice(payload);
        let c = l4_checksum(src, dst, IPPROTO_TCP, &t);
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }
}

/// An ICMP message: type, code, the 4 type-specific header bytes and the
/// body, with its checksum (over the message only, no pseudo-header).
pub fn icmp_message(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + body.len());
    m.extend_from_slice(&[kind, code, 0, 0]);
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An echo request (`reply` false) or echo reply with identifier `id`.
pub fn icmp_echo(reply: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let kind = if reply {
        icmp::ECHO_REPLY
    } else {
        icmp::ECHO_REQUEST
    };
    let [i0, i1] = id.to_be_bytes();
    let [s0, s1] = seq.to_be_bytes();
    icmp_message(kind, 0, [i0, i1, s0, s1], payload)
}

/// An ICMP error (destination unreachable, time exceeded, ...) quoting
/// `quoted`; `rest` is the 4-byte field after the checksum (unused, or the
/// next-hop MTU of fragmentation-needed in its low half).
pub fn icmp_error(kind: u8, code: u8, rest: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    icmp_message(kind, code, rest, quoted)
}

/// Fragmentation needed (RFC 1191) with next-hop MTU `mtu`.
pub fn frag_needed(mtu: u16, quoted: &[u8]) -> Vec<u8> {
    let [m0, m1] = mtu.to_be_bytes();
    icmp_error(
        icmp::DEST_UNREACH,
        icmp::FRAG_NEEDED,
        [0, 0, m0, m1],
        quoted,
    )
}

/// What an ICMP error quotes of `packet` (a whole IPv4 packet): its header
/// and the first `n` bytes after it (RFC 792 asks for 8; Linux sends more).
pub fn quote(packet: &[u8], n: usize) -> Vec<u8> {
    let hlen = usize::from(packet[0] & 0x0f) * 4;
    packet[..(hlen + n).min(packet.len())].to_vec()
}

/// A minimal GRE header (RFC 2784: no checksum, version 0) carrying
/// `payload` of ethertype `proto`. GRE has no pseudo-header, so only the IP
/// header changes when its addresses are translated.
pub fn gre(proto: u16, payload: &[u8]) -> Vec<u8> {
    let mut g = Vec::with_capacity(4 + payload.len());
    g.extend_from_slice(&[0, 0]);
    g.extend_from_slice(&proto.to_be_bytes());
    g.extend_from_slice(payload);
    g
}

/// Splits a transport datagram into IPv4 fragments of at most `chunk` bytes
/// of data each (a multiple of 8), all with `ip`'s header fields.
pub fn fragments(ip: &Ipv4, datagram: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    assert!(
        chunk > 0 && chunk.is_multiple_of(8),
        "fragment size {chunk}"
    );
    datagram
        .chunks(chunk)
        .enumerate()
        .map(|(i, data)| {
            let offset = i * chunk;
            let more = offset + data.len() < datagram.len();
            ip.clone().fragment(offset, more).encode(data)
        })
        .collect()
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

/// ARP operation codes.
pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// An Ethernet/IPv4 ARP packet (RFC 826), without the Ethernet header.
pub fn arp(op: u16, sha: Mac, spa: Ip4, tha: Mac, tpa: Ip4) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&1u16.to_be_bytes()); // Ethernet
    a.extend_from_slice(&ETH_P_IP.to_be_bytes());
    a.extend_from_slice(&[6, 4]);
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa);
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa);
    a
}

/// A broadcast ARP request ("who has `target`? tell `sender`").
pub fn arp_request(src: Mac, sender: Ip4, target: Ip4) -> Vec<u8> {
    let a = arp(ARP_REQUEST, src, sender, [0; 6], target);
    ethernet([0xff; 6], src, ETH_P_ARP, &a)
}

/// The unicast reply to [`arp_request`]`(requester_mac, requester_ip, addr)`
/// from the owner of `addr` at `mac`.
pub fn arp_reply(mac: Mac, addr: Ip4, requester_mac: Mac, requester_ip: Ip4) -> Vec<u8> {
    let a = arp(ARP_REPLY, mac, addr, requester_mac, requester_ip);
    ethernet(requester_mac, mac, ETH_P_ARP, &a)
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
    fn tcp_checksum_verifies() {
        let (s, d) = ([192, 0, 2, 1], [198, 51, 100, 7]);
        let seg = Tcp::new(40000, 80, tcp_flags::SYN).encode(s, d, &payload(11));
        assert_eq!(seg.len(), 31);
        assert_eq!(seg[13], tcp_flags::SYN);
        assert_eq!(l4_checksum(s, d, IPPROTO_TCP, &seg), 0);
    }

    #[test]
    fn udp_without_checksum_is_zero() {
        let d = udp_without_checksum(1, 2, &payload(3));
        assert_eq!(&d[4..8], &[0, 11, 0, 0]);
    }

    #[test]
    fn icmp_checksums_verify() {
        let echo = icmp_echo(false, 0x1234, 7, &payload(56));
        assert_eq!((echo[0], &echo[4..8]), (8, &[0x12, 0x34, 0, 7][..]));
        assert_eq!(checksum(&echo), 0);
        let ip = Ipv4::new([10, 0, 0, 1], [10, 0, 0, 2]).ttl(1);
        let orig = ip.encode(&udp(ip.src, ip.dst, 33434, 33435, &payload(32)));
        let q = quote(&orig, 8);
        assert_eq!(q.len(), 28);
        // The quoted header still claims the original packet's length.
        assert_eq!(u16::from_be_bytes([q[2], q[3]]), 60);
        let err = frag_needed(1400, &q);
        assert_eq!(&err[..2], &[3, 4]);
        assert_eq!(&err[6..8], &1400u16.to_be_bytes());
        assert_eq!(checksum(&err), 0);
    }

    #[test]
    fn fragments_cover_the_datagram() {
        let ip = Ipv4::new([10, 0, 0, 1], [10, 0, 0, 2]).id(0x4242);
        let dgram = udp(ip.src, ip.dst, 1, 2, &payload(100));
        let frags = fragments(&ip, &dgram, 48);
        assert_eq!(frags.len(), 3);
        let mut joined = Vec::new();
        for (i, f) in frags.iter().enumerate() {
            assert_eq!(checksum(&f[..20]), 0);
            assert_eq!(u16::from_be_bytes([f[4], f[5]]), 0x4242);
            let word = u16::from_be_bytes([f[6], f[7]]);
            assert_eq!(usize::from(word & 0x1fff) * 8, i * 48);
            assert_eq!(word & IP_MF != 0, i < 2);
            assert_eq!(word & IP_DF, 0);
            joined.extend_from_slice(&f[20..]);
        }
        assert_eq!(joined, dgram);
    }

    #[test]
    fn arp_reply_answers_the_request() {
        let (req_mac, me) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let req = arp_request(req_mac, [10, 0, 0, 1], [10, 0, 0, 9]);
        let rep = arp_reply(me, [10, 0, 0, 9], req_mac, [10, 0, 0, 1]);
        assert_eq!(req.len(), rep.len());
        assert_eq!(&rep[..12], &[req_mac, me].concat()[..]);
        assert_eq!(&rep[20..22], &ARP_REPLY.to_be_bytes());
        assert_eq!(&rep[22..28], &me);
        assert_eq!(&rep[28..32], &[10, 0, 0, 9]);
        assert_eq!(&rep[32..42], &req[22..32]);
    }

    #[test]
    fn parses_mac() {
        assert_eq!(parse_mac("02:00:0a:ff:00:9B"), [2, 0, 10, 255, 0, 0x9b]);
    }
}
