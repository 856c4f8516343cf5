//! The API's datapath reads: counters, NAT sessions and NAT statistics from
//! the instance's pinned maps.

use std::ffi::CStr;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use xcnf_common::{
    IfCounters, IfaceConfig, maps,
    nat::{NatConfig, NatStats},
};

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use crate::{
    datapath::Pins,
    nat::{
        NatError,
        show::{SessionView, session_views},
        tables::{SessionMaps, monotonic_ns, open_pinned, read_all},
    },
    vpp::{Client, NatSession, VppConnection, VppError},
};

/// One interface the datapath manages, with its counters summed over CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfaceCounters {
    pub ifindex: u32,
    /// The kernel name in the agent's network namespace, or `#<ifindex>`
    /// when the interface is gone.
    pub host_if_name: String,
    /// `xcnf_common::nat::role`.
    pub role: u8,
    pub counters: IfCounters,
}

/// The NAT tables' summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatSummary {
    pub config: NatConfig,
    pub active: u64,
    /// Summed over CPUs.
    pub stats: NatStats,
}

/// The agent's VPP connection, once the config has needed one.
pub type VppSlot = Arc<OnceLock<Arc<VppConnection>>>;

/// Reads the pinned maps of one instance. Each call opens the pins afresh,
/// so a datapath that was (re)created since the last call is seen as it is.
/// For a NAT44 domain in VPP, the sessions come from VPP.
#[derive(Clone, Debug)]
pub struct DatapathReads {
    pins: Pins,
    vpp: VppSlot,
}

impl DatapathReads {
    pub fn new(pins: Pins) -> Self {
        Self {
            pins,
            vpp: VppSlot::default(),
        }
    }

    /// Reads VPP through the connection the reconciler opens in `slot`.
    pub fn with_vpp(mut self, slot: VppSlot) -> Self {
        self.vpp = slot;
        self
    }

    fn vpp_client(&self) -> Result<Client, VppError> {
        match self.vpp.get() {
            Some(c) => c.client(),
            None => Err(VppError::NotConnected {
                path: PathBuf::new(),
                reason: "this agent's config has no VPP interfaces".into(),
            }),
        }
    }

    /// One VPP debug CLI command's output.
    pub async fn vpp_cli(&self, command: &str) -> Result<String, VppError> {
        self.vpp_client()?.cli(command).await
    }

    /// VPP's NAT44 sessions, in the form the eBPF sessions are listed in.
    pub async fn vpp_sessions(&self) -> Result<Vec<SessionView>, VppError> {
        let sessions = self.vpp_client()?.nat44_sessions().await?;
        Ok(sessions.iter().map(vpp_session_view).collect())
    }

    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// Every interface in the `IFACES` map, by ifindex.
    pub fn counters(&self) -> Result<Vec<IfaceCounters>, NatError> {
        let pins = &self.pins;
        let ifaces: HashMap<MapData, u32, IfaceConfig> = open_pinned(pins, maps::IFACES)?;
        let counters: PerCpuArray<MapData, IfCounters> = open_pinned(pins, maps::COUNTERS)?;
        let mut out = Vec::new();
        for (ifindex, cfg) in read_all(&ifaces, || pins.map(maps::IFACES))? {
            // A slot past the array (never assigned) counts nothing.
            let sum = counters
                .get(&cfg.slot, 0)
                .map(|per_cpu| IfCounters::summed(per_cpu.iter()))
                .unwrap_or_default();
            out.push(IfaceCounters {
                ifindex,
                host_if_name: ifname(ifindex),
                role: cfg.role,
                counters: sum,
            });
        }
        out.sort_by_key(|i| i.ifindex);
        Ok(out)
    }

    /// Every session, sorted as listed, and the number of map entries.
    pub fn sessions(&self) -> Result<(Vec<SessionView>, u64), NatError> {
        let halves = SessionMaps::open(&self.pins)?.read_sessions()?;
        let now = monotonic_ns()?;
        Ok((session_views(&halves, now), halves.len() as u64))
    }

    pub fn nat_summary(&self) -> Result<NatSummary, NatError> {
        let pins = &self.pins;
        let config: Array<MapData, NatConfig> = open_pinned(pins, maps::NAT_CONFIG)?;
        let config = config.get(&0, 0).map_err(|source| NatError::Map {
            path: pins.map(maps::NAT_CONFIG),
            source,
        })?;
        let active = SessionMaps::open(pins)?.active_sessions()?;
        let stats: PerCpuArray<MapData, NatStats> = open_pinned(pins, maps::NAT_STATS)?;
        let per_cpu = stats.get(&0, 0).map_err(|source| NatError::Map {
            path: pins.map(maps::NAT_STATS),
            source,
        })?;
        let sum = NatStats::summed(per_cpu.iter());
        Ok(NatSummary {
            config,
            active,
            stats: sum,
        })
    }
}

/// The interface's name in this network namespace (the agent's), or
/// `#<ifindex>` if it has none (deleted since it was attached).
pub fn ifname(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("#{ifindex}");
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// A VPP nat44-ed session as a listing row. VPP reports one entry per
/// session, seen from inside, with its traffic in both directions summed,
/// and no age; the TCP state is not in the dump either.
fn vpp_session_view(s: &NatSession) -> SessionView {
    let ep = |a: std::net::SocketAddrV4| (*a.ip(), a.port());
    let unspecified = std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0);
    SessionView {
        proto: u8::try_from(s.protocol).unwrap_or(u8::MAX),
        inside: ep(s.inside),
        external: ep(s.outside),
        remote: ep(s.ext_host.unwrap_or(unspecified)),
        remote_translated: None,
        kind: if s.is_static {
            xcnf_common::nat::kind::STATIC_SNAT
        } else {
            xcnf_common::nat::kind::SNAT
        },
        state: if s.is_timed_out { "expired" } else { "active" }.to_owned(),
        age_ns: None,
        idle_ns: s.seconds_since_last_heard.saturating_mul(1_000_000_000),
        outbound: xcnf_common::PacketBytes {
            packets: u64::from(s.total_pkts),
            bytes: s.total_bytes,
        },
        inbound: None,
        side: xcnf_common::nat::role::INSIDE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pins_are_an_open_error_naming_the_pin() {
        let reads = DatapathReads::new(Pins::new("/nonexistent-bpffs", "nobody"));
        for e in [
            reads.counters().err(),
            reads.sessions().err(),
            reads.nat_summary().err(),
        ] {
            match e {
                Some(NatError::Open { path, .. }) => {
                    assert!(
                        path.starts_with("/nonexistent-bpffs/xcnf/nobody"),
                        "{path:?}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn loopback_has_its_name_and_unknown_indexes_do_not() {
        assert_eq!(ifname(1), "lo");
        assert_eq!(ifname(u32::MAX), format!("#{}", u32::MAX));
    }
}
