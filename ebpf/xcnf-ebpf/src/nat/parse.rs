//! What the translator needs to know about a packet, read once up front so
//! the rewrite that follows needs no packet pointers kept across helpers.

use xcnf_common::nat::proto;

use crate::{
    headers::{INNER_IP_OFF, INNER_L4_OFF, IPV4_HLEN, L4_OFF},
    pkt::{Fault, Pkt, load},
};

/// A connection tuple; ports in host order, 0 where the protocol has none.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Tuple {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// Where the ports of a packet live and which checksum covers them.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP: ports at +0/+2, checksum at +16 (covers the pseudo-header).
    Tcp,
    /// UDP: ports at +0/+2, checksum at +6 (0 = none).
    Udp,
    /// ICMP echo request: identifier at +4 is the tuple's `sport`.
    EchoRequest,
    /// ICMP echo reply: identifier at +4 is the tuple's `dport`.
    EchoReply,
    /// An ICMP error quoting a packet (RFC 5508): see [`Inner`].
    IcmpError,
    /// No ports: another protocol, another ICMP type, or a later fragment.
    None,
}

/// The packet quoted by an ICMP error.
#[derive(Clone, Copy)]
pub struct Inner {
    /// The quoted packet's own tuple, as it was sent.
    pub tuple: Tuple,
    pub l4: L4,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Frag {
    /// Not fragmented.
    No,
    /// Offset 0, more fragments: carries the L4 header.
    First,
    /// Offset > 0: no L4 header.
    Later,
}

#[derive(Clone, Copy)]
pub struct Parsed {
    pub tuple: Tuple,
    pub l4: L4,
    pub frag: Frag,
    pub ip_id: u16,
    /// TCP flags byte (0 for other protocols).
    pub tcp_flags: u8,
    pub inner: Option<Inner>,
}

const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;

/// Parses a validated IPv4 packet (20-byte header, checksum good).
/// `Err` means the L4 header the protocol promises is truncated.
#[inline(always)]
pub fn parse<P: Pkt>(p: &P) -> Result<Parsed, Fault> {
    let ip = load::<P, IPV4_HLEN>(p, L4_OFF - IPV4_HLEN)?;
    let frag_off = u16::from_be_bytes([ip[6], ip[7]]);
    let frag = if frag_off & 0x1fff != 0 {
        Frag::Later
    } else if frag_off & 0x2000 != 0 {
        Frag::First
    } else {
        Frag::No
    };
    let mut out = Parsed {
        tuple: Tuple {
            saddr: [ip[12], ip[13], ip[14], ip[15]],
            daddr: [ip[16], ip[17], ip[18], ip[19]],
            sport: 0,
            dport: 0,
            proto: ip[9],
        },
        l4: L4::None,
        frag,
        ip_id: u16::from_be_bytes([ip[4], ip[5]]),
        tcp_flags: 0,
        inner: None,
    };
    if frag == Frag::Later {
        return Ok(out);
    }
    // The L4 header must lie within the IPv4 total length, not just within
    // the frame: a frame padded to Ethernet's 60 bytes would otherwise give
    // a truncated segment a "header" read from the padding.
    let l4_len = usize::from(u16::from_be_bytes([ip[2], ip[3]])).saturating_sub(IPV4_HLEN);
    let need = match out.tuple.proto {
        proto::TCP => 20,
        proto::UDP | proto::ICMP => 8,
        _ => 0,
    };
    if l4_len < need {
        return Err(Fault);
    }
    match out.tuple.proto {
        proto::TCP => {
            let h = load::<P, 20>(p, L4_OFF)?;
            out.tuple.sport = u16::from_be_bytes([h[0], h[1]]);
            out.tuple.dport = u16::from_be_bytes([h[2], h[3]]);
            out.tcp_flags = h[13];
            out.l4 = L4::Tcp;
        }
        proto::UDP => {
            let h = load::<P, 8>(p, L4_OFF)?;
            out.tuple.sport = u16::from_be_bytes([h[0], h[1]]);
            out.tuple.dport = u16::from_be_bytes([h[2], h[3]]);
            out.l4 = L4::Udp;
        }
        proto::ICMP => {
            let h = load::<P, 8>(p, L4_OFF)?;
            let id = u16::from_be_bytes([h[4], h[5]]);
            match h[0] {
                ICMP_ECHO => {
                    out.tuple.sport = id;
                    out.l4 = L4::EchoRequest;
                }
                ICMP_ECHO_REPLY => {
                    out.tuple.dport = id;
                    out.l4 = L4::EchoReply;
                }
                ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB => {
                    // An error whose quote cannot be read has no session to
                    // belong to; `inner` stays `None` and it is unmatched.
                    // Its quote, too, within the total length.
                    out.inner = if l4_len >= 8 + IPV4_HLEN + 8 {
                        parse_inner(p)
                    } else {
                        None
                    };
                    out.l4 = L4::IcmpError;
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Reads the quoted packet of an ICMP error: an IPv4 header without options
/// and the 8 bytes after it, a non-first-fragment quote has no ports.
#[inline(always)]
fn parse_inner<P: Pkt>(p: &P) -> Option<Inner> {
    let ip = load::<P, IPV4_HLEN>(p, INNER_IP_OFF).ok()?;
    if ip[0] != 0x45 || u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff != 0 {
        return None;
    }
    let h = load::<P, 8>(p, INNER_L4_OFF).ok()?;
    let mut t = Tuple {
        saddr: [ip[12], ip[13], ip[14], ip[15]],
        daddr: [ip[16], ip[17], ip[18], ip[19]],
        sport: 0,
        dport: 0,
        proto: ip[9],
    };
    let l4 = match t.proto {
        proto::TCP | proto::UDP => {
            t.sport = u16::from_be_bytes([h[0], h[1]]);
            t.dport = u16::from_be_bytes([h[2], h[3]]);
            if t.proto == proto::TCP {
                L4::Tcp
            } else {
                L4::Udp
            }
        }
        proto::ICMP => {
            let id = u16::from_be_bytes([h[4], h[5]]);
            match h[0] {
                ICMP_ECHO => {
                    t.sport = id;
                    L4::EchoRequest
                }
                ICMP_ECHO_REPLY => {
                    t.dport = id;
                    L4::EchoReply
                }
                _ => return None,
            }
        }
        _ => L4::None,
    };
    Some(Inner { tuple: t, l4 })
}
