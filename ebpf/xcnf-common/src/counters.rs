//! Per-interface, per-CPU datapath counters.
//!
//! Every packet the programs see is counted in `rx` and in exactly one of
//! `forwarded`, one `passed` reason or one `dropped` reason, so the reasons
//! add up to `rx.packets`. Fields are named so `bpftool map dump` is readable.

/// A packet and byte count.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketBytes {
    pub packets: u64,
    pub bytes: u64,
}

/// Packets handed to the kernel stack, by reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReasons {
    /// Not IPv4 by ethertype (ARP, IPv6, VLAN-tagged, ...).
    pub not_ipv4: u64,
    /// Not addressed to this interface at L2 (other host, broadcast, multicast).
    pub not_for_us: u64,
    /// IPv4 header with options; the kernel handles those.
    pub ip_options: u64,
    /// TTL ≤ 1: the kernel sends ICMP time-exceeded.
    pub ttl_expired: u64,
    /// The FIB does not forward it: a local, broadcast or multicast
    /// destination, or no route at all. `bpf_fib_lookup` answers all of these
    /// with one code (NOT_FWDED), so one counter holds them; the kernel then
    /// delivers locally or sends ICMP unreachable.
    pub not_forwarded: u64,
    /// An unreachable or prohibit route: the kernel sends the ICMP error.
    pub no_route: u64,
    /// Forwarding is disabled on the ingress interface (sysctl).
    pub fwd_disabled: u64,
    /// Packet larger than the egress MTU: the kernel fragments or sends frag-needed.
    pub frag_needed: u64,
    /// Next hop has no resolved neighbour yet (XDP only; TC uses `bpf_redirect_neigh`).
    pub no_neigh: u64,
    /// The route leaves through an interface xcnf does not manage.
    pub unmanaged_egress: u64,
    /// Any other FIB result (lightweight tunnels and future codes).
    pub other: u64,
}

/// Packets dropped by the datapath, by reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropReasons {
    /// Truncated Ethernet or IPv4 header, bad version, IHL, total length or
    /// header checksum (RFC 1812 5.2.2: a router must not forward those).
    pub malformed: u64,
    /// The route is a blackhole.
    pub blackhole: u64,
    /// The redirect helper refused the packet after it was rewritten.
    pub redirect_failed: u64,
    /// To a NAT address (pool or static external, not local) with no
    /// session or mapping, or an ICMP error quoting no known session.
    pub nat_no_mapping: u64,
    /// New flow refused: no free port on its paired pool address.
    pub nat_pool_exhausted: u64,
    /// New flow refused: the session table holds `maxSessions` sessions.
    pub nat_table_full: u64,
    /// Non-first fragment of NAT traffic whose first fragment was not seen.
    pub nat_fragment_untracked: u64,
    /// Translated inbound packet larger than the inside MTU, or with no
    /// route inside: passing it untranslated would hand the CNF's own stack a
    /// packet for a NAT address.
    pub nat_unroutable: u64,
    /// IPv4 with options (not translated) to a NAT address, or from inside
    /// towards an outside interface: handed to the kernel it would reach
    /// the CNF's own stack or leave with the inside address.
    pub nat_ip_options: u64,
}

/// The value of the `COUNTERS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfCounters {
    /// Every packet the program saw on this interface.
    pub rx: PacketBytes,
    /// Packets redirected to their egress interface by the datapath.
    pub forwarded: PacketBytes,
    pub passed: PassReasons,
    pub dropped: DropReasons,
}

impl PassReasons {
    /// Sum of all pass reasons.
    pub fn total(&self) -> u64 {
        let Self {
            not_ipv4,
            not_for_us,
            ip_options,
            ttl_expired,
            not_forwarded,
            no_route,
            fwd_disabled,
            frag_needed,
            no_neigh,
            unmanaged_egress,
            other,
        } = *self;
        not_ipv4
            + not_for_us
            + ip_options
            + ttl_expired
            + not_forwarded
            + no_route
            + fwd_disabled
            + frag_needed
            + no_neigh
            + unmanaged_egress
            + other
    }
}

impl DropReasons {
    /// Sum of all drop reasons.
    pub fn total(&self) -> u64 {
        let Self {
            malformed,
            blackhole,
            redirect_failed,
            nat_no_mapping,
            nat_pool_exhausted,
            nat_table_full,
            nat_fragment_untracked,
            nat_unroutable,
            nat_ip_options,
        } = *self;
        malformed
            + blackhole
            + redirect_failed
            + nat_no_mapping
            + nat_pool_exhausted
            + nat_table_full
            + nat_fragment_untracked
            + nat_unroutable
            + nat_ip_options
    }
}

impl IfCounters {
    /// One interface's counters over all CPUs: the per-CPU values of its
    /// `counters` slot, as every reader (agent, API, tests) needs them.
    pub fn summed<'a>(per_cpu: impl IntoIterator<Item = &'a Self>) -> Self {
        let mut sum = Self::default();
        for c in per_cpu {
            sum.accumulate(c);
        }
        sum
    }

    /// Adds another CPU's counters into this one (wrapping, like the kernel's).
    pub fn accumulate(&mut self, o: &Self) {
        fn pb(a: &mut PacketBytes, b: &PacketBytes) {
            a.packets = a.packets.wrapping_add(b.packets);
            a.bytes = a.bytes.wrapping_add(b.bytes);
        }
        pb(&mut self.rx, &o.rx);
        pb(&mut self.forwarded, &o.forwarded);
        let p = &mut self.passed;
        let q = &o.passed;
        p.not_ipv4 = p.not_ipv4.wrapping_add(q.not_ipv4);
        p.not_for_us = p.not_for_us.wrapping_add(q.not_for_us);
        p.ip_options = p.ip_options.wrapping_add(q.ip_options);
        p.ttl_expired = p.ttl_expired.wrapping_add(q.ttl_expired);
        p.not_forwarded = p.not_forwarded.wrapping_add(q.not_forwarded);
        p.no_route = p.no_route.wrapping_add(q.no_route);
        p.fwd_disabled = p.fwd_disabled.wrapping_add(q.fwd_disabled);
        p.frag_needed = p.frag_needed.wrapping_add(q.frag_needed);
        p.no_neigh = p.no_neigh.wrapping_add(q.no_neigh);
        p.unmanaged_egress = p.unmanaged_egress.wrapping_add(q.unmanaged_egress);
        p.other = p.other.wrapping_add(q.other);
        let d = &mut self.dropped;
        let e = &o.dropped;
        d.malformed = d.malformed.wrapping_add(e.malformed);
        d.blackhole = d.blackhole.wrapping_add(e.blackhole);
        d.redirect_failed = d.redirect_failed.wrapping_add(e.redirect_failed);
        d.nat_no_mapping = d.nat_no_mapping.wrapping_add(e.nat_no_mapping);
        d.nat_pool_exhausted = d.nat_pool_exhausted.wrapping_add(e.nat_pool_exhausted);
        d.nat_table_full = d.nat_table_full.wrapping_add(e.nat_table_full);
        d.nat_fragment_untracked = d
            .nat_fragment_untracked
            .wrapping_add(e.nat_fragment_untracked);
        d.nat_unroutable = d.nat_unroutable.wrapping_add(e.nat_unroutable);
        d.nat_ip_options = d.nat_ip_options.wrapping_add(e.nat_ip_options);
    }
}

#[cfg(feature = "user")]
// SAFETY: `repr(C)`, only u64 fields, no padding.
unsafe impl aya::Pod for IfCounters {}

const _: () = assert!(core::mem::size_of::<IfCounters>() == 8 * (2 + 2 + 11 + 9));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_accumulate_cover_every_field() {
        // Fill every field with a distinct value through raw u64 view, so a field
        // forgotten in `total`/`accumulate` shows up as a wrong sum.
        const N: usize = core::mem::size_of::<IfCounters>() / 8;
        let mut raw = [0u64; N];
        for (i, v) in raw.iter_mut().enumerate() {
            *v = 1 << i;
        }
        // SAFETY: IfCounters is repr(C) with N u64 fields.
        let c: IfCounters = unsafe { core::mem::transmute(raw) };
        assert_eq!(c.passed.total(), ((1u64 << 15) - 1) & !0b1111);
        assert_eq!(c.dropped.total(), ((1u64 << 24) - 1) & !((1u64 << 15) - 1));
        let acc = IfCounters::summed([&c, &c]);
        // SAFETY: as above.
        let back: [u64; N] = unsafe { core::mem::transmute(acc) };
        for (i, v) in back.iter().enumerate() {
            assert_eq!(*v, 2 << i, "field {i} not accumulated");
        }
    }
}
