//! The pinned NAT maps, opened by path: the sweeper and `xcnfctl` read them
//! without the agent's loaded object, so both work on a kept datapath too.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::PathBuf,
};

use aya::maps::{Array, HashMap, IterableMap as _, Map, MapData, MapError};

/// `bpf(2)` command: look an element up and delete it atomically.
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
/// Map update flag: only if the key is not there.
const BPF_NOEXIST: u64 = 1;
use xcnf_common::{
    maps::{self, MapName},
    nat::{Binding, BindingKey, HostPairing, Session, SessionKey, active},
};

use super::NatError;
use crate::datapath::{Pins, is_absent};

/// Opens one pinned map as the typed aya map `T` (which checks key and value sizes).
pub fn open_pinned<T>(pins: &Pins, m: MapName) -> Result<T, NatError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let path = pins.map(m);
    let open = || -> Result<T, MapError> {
        let data = MapData::from_pin(&path)?;
        T::try_from(Map::from_map_data(data)?)
    };
    open().map_err(|source| NatError::Open { path, source })
}

/// Reads every entry of a hash map. Entries deleted while the walk runs (the
/// datapath and the sweeper both delete) are skipped, not errors.
pub fn read_all<K, V>(
    map: &HashMap<MapData, K, V>,
    path: impl Fn() -> PathBuf,
) -> Result<Vec<(K, V)>, NatError>
where
    K: aya::Pod,
    V: aya::Pod,
{
    let mut out = Vec::new();
    for entry in map.iter() {
        match entry {
            Ok(kv) => out.push(kv),
            Err(MapError::KeyNotFound) => {}
            Err(source) => {
                return Err(NatError::Map {
                    path: path(),
                    source,
                });
            }
        }
    }
    Ok(out)
}

/// `k`'s value in `map`, `None` if it is not there (never written, or
/// deleted meanwhile by the datapath or the sweeper).
pub fn get_present<K, V>(
    map: &HashMap<MapData, K, V>,
    k: &K,
    path: impl FnOnce() -> PathBuf,
) -> Result<Option<V>, NatError>
where
    K: aya::Pod,
    V: aya::Pod,
{
    match map.get(k, 0) {
        Ok(v) => Ok(Some(v)),
        Err(e) if is_absent(&e) => Ok(None),
        Err(source) => Err(NatError::Map {
            path: path(),
            source,
        }),
    }
}

/// The maps the sweeper works on.
pub struct SessionMaps {
    pins: Pins,
    pub sessions: HashMap<MapData, SessionKey, Session>,
    pub bindings: HashMap<MapData, BindingKey, Binding>,
    pub hosts: HashMap<MapData, [u8; 4], HostPairing>,
    pub active: Array<MapData, u64>,
}

impl SessionMaps {
    pub fn open(pins: &Pins) -> Result<Self, NatError> {
        Ok(Self {
            pins: pins.clone(),
            sessions: open_pinned(pins, maps::NAT_SESSIONS)?,
            bindings: open_pinned(pins, maps::NAT_BINDINGS)?,
            hosts: open_pinned(pins, maps::NAT_HOSTS)?,
            active: open_pinned(pins, maps::NAT_ACTIVE)?,
        })
    }

    pub fn path(&self, m: MapName) -> PathBuf {
        self.pins.map(m)
    }

    pub fn read_sessions(&self) -> Result<Vec<(SessionKey, Session)>, NatError> {
        read_all(&self.sessions, || self.path(maps::NAT_SESSIONS))
    }

    pub fn read_bindings(&self) -> Result<Vec<(BindingKey, Binding)>, NatError> {
        read_all(&self.bindings, || self.path(maps::NAT_BINDINGS))
    }

    pub fn read_hosts(&self) -> Result<Vec<([u8; 4], HostPairing)>, NatError> {
        read_all(&self.hosts, || self.path(maps::NAT_HOSTS))
    }

    /// Removes `host`'s pairing and returns it, in one step
    /// (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`): a lookup then a delete would leave
    /// a syscall's time in which a new flow of the host could use the
    /// pairing the delete then removes. `None` if it was not there.
    pub fn take_host(&mut self, host: &[u8; 4]) -> Result<Option<HostPairing>, NatError> {
        let fd = self.hosts.map().fd().as_fd().as_raw_fd();
        let mut value = HostPairing::default();
        // `union bpf_attr` for map element commands: map_fd, key, value, flags.
        #[repr(C)]
        struct ElemAttr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let mut attr = ElemAttr {
            map_fd: u32::try_from(fd).unwrap_or(u32::MAX),
            _pad: 0,
            key: host.as_ptr() as u64,
            value: (&raw mut value) as u64,
            flags: 0,
        };
        // SAFETY: `attr` points at a live key of the map's key size and a
        // value of its value size; the kernel writes only `value`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_ELEM,
                &raw mut attr,
                std::mem::size_of::<ElemAttr>(),
            )
        };
        if rc == 0 {
            return Ok(Some(value));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        Err(NatError::Map {
            path: self.path(maps::NAT_HOSTS),
            source: MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_and_delete_elem",
                io_error: e,
            }),
        })
    }

    /// Puts a pairing back unless the host has one again by now.
    pub fn restore_host(&mut self, host: &[u8; 4], p: HostPairing) -> Result<(), NatError> {
        match self.hosts.insert(host, p, BPF_NOEXIST) {
            Ok(()) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(())
            }
            Err(source) => Err(NatError::Map {
                path: self.path(maps::NAT_HOSTS),
                source,
            }),
        }
    }

    pub fn active(&self, index: u32) -> Result<u64, NatError> {
        self.active.get(&index, 0).map_err(|source| NatError::Map {
            path: self.path(maps::NAT_ACTIVE),
            source,
        })
    }

    pub fn set_active(&mut self, index: u32, value: u64) -> Result<(), NatError> {
        let path = self.path(maps::NAT_ACTIVE);
        self.active
            .set(index, value, 0)
            .map_err(|source| NatError::Map { path, source })
    }

    /// Active sessions as the datapath's admission check sees them.
    pub fn active_sessions(&self) -> Result<u64, NatError> {
        Ok(self
            .active(active::CREATED)?
            .wrapping_add(self.active(active::BASE)?))
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock behind the datapath's
/// `bpf_ktime_get_coarse_ns` (its coarse variant only lags by a tick).
pub fn monotonic_ns() -> Result<u64, NatError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer to a timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return Err(NatError::Clock(std::io::Error::last_os_error()));
    }
    Ok((ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64))
}
