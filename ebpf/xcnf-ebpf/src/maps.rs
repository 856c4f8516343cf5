//! Map definitions. Names and sizes come from `xcnf_common::maps` and
//! `xcnf_common::nat`; the agent pins every map under
//! `/sys/fs/bpf/xcnf/<instance>/`.

use crate::{
    clock::Clock,
    iface::{CachedIf, IF_CACHE_ENTRIES},
    nat::{
        alloc::Probe,
        session::{Halves, NewSession},
        slow::SlowIo,
    },
};
use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    btf_maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use xcnf_common::{
    IfCounters, IfaceConfig,
    maps::MAX_IFACES,
    nat::{
        Binding, BindingKey, DEFAULT_MAX_SESSIONS, FragKey, FragXlate, HostPairing, MAX_FRAGS,
        MAX_POOL_RANGES, MAX_STATIC, NAT_ADDRS_ENTRIES, NatAddr, NatConfig, NatStats, PoolRange,
        RouteCtl, Session, SessionKey, StaticKey, StaticMapping, active,
    },
};

/// Managed interfaces, keyed by ifindex.
#[btf_map]
pub static IFACES: HashMap<u32, IfaceConfig, MAX_IFACES> = HashMap::new();

/// Per-interface counters, indexed by the interface's `IfaceConfig::slot`.
/// Per-CPU so the fast path never contends on a cache line; the agent sums
/// the CPUs when it reads them. An array so the lookup is inlined.
#[btf_map]
pub static COUNTERS: PerCpuArray<IfCounters, MAX_IFACES> = PerCpuArray::new();

/// XDP redirect targets keyed by ifindex, so the FIB's egress ifindex is the
/// key and no index translation is needed.
#[btf_map]
pub static TX_PORTS: DevMapHash<MAX_IFACES> = DevMapHash::new();

/// Per-CPU room for `bpf_fib_lookup`'s 64-byte parameter block (see
/// `fib.rs`); `[u64; 8]` gives it the struct's size and alignment.
#[btf_map]
pub static FIB_SCRATCH: PerCpuArray<[u64; 8], 1> = PerCpuArray::new();

const _: () = assert!(
    core::mem::size_of::<aya_ebpf::bindings::bpf_fib_lookup>() == 64
        && core::mem::align_of::<aya_ebpf::bindings::bpf_fib_lookup>() <= 8
);

#[btf_map]
pub static NAT_CONFIG: Array<NatConfig, 1> = Array::new();

#[btf_map]
pub static NAT_POOLS: Array<PoolRange, { MAX_POOL_RANGES as usize }> = Array::new();

#[btf_map]
pub static NAT_STATIC: HashMap<StaticKey, StaticMapping, { MAX_STATIC as usize }> = HashMap::new();

#[btf_map]
pub static NAT_ADDRS: HashMap<[u8; 4], NatAddr, { NAT_ADDRS_ENTRIES as usize }> = HashMap::new();

/// Both halves of every session. The compiled-in size is replaced at load
/// time from `maxSessions`.
#[btf_map]
pub static NAT_SESSIONS: LruHashMap<SessionKey, Session, { 2 * DEFAULT_MAX_SESSIONS as usize }> =
    LruHashMap::new();

#[btf_map]
pub static NAT_BINDINGS: LruHashMap<BindingKey, Binding, { 2 * DEFAULT_MAX_SESSIONS as usize }> =
    LruHashMap::new();

#[btf_map]
pub static NAT_FRAGS: LruHashMap<FragKey, FragXlate, { MAX_FRAGS as usize }> = LruHashMap::new();

/// Paired pooling: a plain hash, never evicting (see `HostPairing`), and
/// allocated as hosts arrive rather than preallocated at the session
/// table's size. The compiled-in size is replaced at load time.
#[btf_map]
pub static NAT_HOSTS: HashMap<
    [u8; 4],
    HostPairing,
    { 2 * DEFAULT_MAX_SESSIONS as usize },
    { BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

#[btf_map]
pub static NAT_ACTIVE: Array<u64, { active::LEN }> = Array::new();

/// Per-CPU room for the NAT global function's inputs and decision (see
/// `nat/slow.rs`). Not pinned: it holds nothing between runs.
#[btf_map]
pub static NAT_SLOW: PerCpuArray<SlowIo, 1> = PerCpuArray::new();

/// Per-CPU state of the allocator's port walk (see `nat/alloc.rs`).
#[btf_map]
pub static NAT_PROBE: PerCpuArray<Probe, 1> = PerCpuArray::new();

/// Per-CPU room for a new session's halves (see `nat/session.rs`).
#[btf_map]
pub static NAT_NEW: PerCpuArray<Halves, 1> = PerCpuArray::new();

/// Per-CPU room for a new flow's description (see `nat/session.rs`).
#[btf_map]
pub static NAT_FLOW: PerCpuArray<NewSession, 1> = PerCpuArray::new();

/// Per-CPU cache of `IFACES` entries (see `iface.rs`). Not pinned.
#[btf_map]
pub static IF_CACHE: PerCpuArray<CachedIf, { IF_CACHE_ENTRIES as usize }> = PerCpuArray::new();

/// Per-CPU last clock read (see `clock.rs`). Not pinned.
#[btf_map]
pub static CLOCK: PerCpuArray<Clock, 1> = PerCpuArray::new();

/// Whether sessions' cached routes may be used (see `nat/route.rs`).
#[btf_map]
pub static ROUTE_CTL: Array<RouteCtl, 1> = Array::new();

#[btf_map]
pub static NAT_STATS: PerCpuArray<NatStats, 1> = PerCpuArray::new();
