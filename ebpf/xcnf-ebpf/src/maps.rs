//! Map definitions. Names and sizes come from `xcnf_common::maps`; the agent
//! pins every map under `/sys/fs/bpf/xcnf/<instance>/`.

use aya_ebpf::{
    btf_maps::{DevMapHash, HashMap, PerCpuHashMap},
    macros::btf_map,
};
use xcnf_common::{IfCounters, IfaceConfig, maps::MAX_IFACES};

/// Managed interfaces, keyed by ifindex.
#[btf_map]
pub static IFACES: HashMap<u32, IfaceConfig, MAX_IFACES> = HashMap::new();

/// Per-interface counters, keyed by ifindex. Per-CPU so the fast path never
/// contends on a cache line; the agent sums the CPUs when it reads them.
#[btf_map]
pub static COUNTERS: PerCpuHashMap<u32, IfCounters, MAX_IFACES> = PerCpuHashMap::new();

/// XDP redirect targets keyed by ifindex, so the FIB's egress ifindex is the
/// key and no index translation is needed.
#[btf_map]
pub static TX_PORTS: DevMapHash<MAX_IFACES> = DevMapHash::new();
