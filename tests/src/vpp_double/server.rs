//! One client connection: the handshake, then requests handled one at a
//! time in arrival order (as VPP's main thread does), with the test
//! controls applied.

use std::{net::Ipv4Addr, sync::Arc};

use tokio::net::UnixStream;

use super::{
    Shared,
    codec::{Rd, Short, Wr, read_msg, write_msg},
    state::{IdentityMap, Memif, Mode, Nat44, Role, RoutePath, StaticMap, VppState},
    table::{self, MESSAGES},
};

/// The pid the double reports in control_ping_reply.
const VPE_PID: u32 = 4242;
pub const VERSION: &str = "v25.10-xcnf-double";

pub async fn serve(mut stream: UnixStream, shared: Arc<Shared>) {
    let Ok(Some(first)) = read_msg(&mut stream).await else {
        return;
    };
    // sockclnt_create: {u16 id = 15; u32 context; string name[64]}.
    if first.get(..2) != Some(&15u16.to_be_bytes()[..]) {
        return;
    }
    let mut rd = Rd::new(&first, 2);
    let (Ok(context), Ok(name)) = (rd.u32(), rd.cstr(64)) else {
        return;
    };
    let index = shared.register(&name);
    let reply = handshake_reply(&shared, context, index);
    if write_msg(&mut stream, &reply).await.is_err() {
        return;
    }

    let mut deferred: Vec<Vec<u8>> = Vec::new();
    while let Ok(Some(msg)) = read_msg(&mut stream).await {
        let Some(id) = msg.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
            continue;
        };
        // An id outside the table: VPP logs it and carries on.
        let Some(name) = table::name_of(id) else {
            continue;
        };
        let mut rd = Rd::new(&msg, 2);
        let (Ok(client_index), Ok(context)) = (rd.u32(), rd.u32()) else {
            continue;
        };
        let action = shared.observe(name);
        match action {
            Action::Close => return,
            Action::Ignore => continue,
            Action::Handle(_) | Action::Defer(_) => {}
        }
        // A request with someone else's client_index is dropped silently,
        // as VPP's handlers do when the registration lookup fails.
        if client_index != index {
            continue;
        }
        let forced = match action {
            Action::Handle(f) | Action::Defer(f) => f,
            _ => None,
        };
        let Ok(replies) = handle(&shared, name, &msg, context, index, forced) else {
            continue; // malformed: dropped
        };
        if matches!(action, Action::Defer(_)) {
            deferred.extend(replies);
            continue;
        }
        let held = std::mem::take(&mut deferred);
        for r in replies.iter().chain(&held) {
            if write_msg(&mut stream, r).await.is_err() {
                return;
            }
        }
        if name == "sockclnt_delete" {
            return;
        }
    }
}

/// What the controls say to do with one incoming message.
pub enum Action {
    /// Answer; `Some(retval)` forces a failure without touching state.
    Handle(Option<i32>),
    /// Answer after the next answered message.
    Defer(Option<i32>),
    /// Read it and never answer.
    Ignore,
    /// Drop the connection without answering.
    Close,
}

fn handshake_reply(shared: &Shared, context: u32, index: u32) -> Vec<u8> {
    let ctl = shared.ctl.lock().expect("controls");
    let entries: Vec<(u16, String)> = MESSAGES
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| !ctl.removed.contains(*n))
        .map(|(i, (n, crc))| {
            let crc = ctl
                .crc_override
                .get(*n)
                .cloned()
                .unwrap_or_else(|| (*crc).to_owned());
            (table::FIRST_ID + i as u16, format!("{n}_{crc}"))
        })
        .collect();
    // {u16 id; u32 client_index; u32 context; i32 response; u32 index; u16 count; entries}
    let mut w = Wr(16u16.to_be_bytes().to_vec())
        .u32(0)
        .u32(context)
        .i32(0)
        .u32(index)
        .u16(entries.len() as u16);
    for (id, name) in entries {
        w = w.u16(id).cstr(&name, 64);
    }
    w.0
}

fn reply_to(name: &str, context: u32) -> Wr {
    Wr::reply(table::id_of(&format!("{name}_reply")), context)
}

fn rv_of<T>(r: &Result<T, i32>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(rv) => *rv,
    }
}

/// Runs `f` on the state unless a failure is forced.
fn apply<T>(
    shared: &Shared,
    forced: Option<i32>,
    f: impl FnOnce(&mut VppState) -> Result<T, i32>,
) -> Result<T, i32> {
    match forced {
        Some(rv) => Err(rv),
        None => f(&mut shared.state.lock().expect("state")),
    }
}

/// The replies to one request (several for a dump's details), or `Short`
/// for a request too short to parse.
fn handle(
    shared: &Shared,
    name: &str,
    msg: &[u8],
    context: u32,
    index: u32,
    forced: Option<i32>,
) -> Result<Vec<Vec<u8>>, Short> {
    let mut r = Rd::new(msg, 10);
    let simple = |rv: Result<(), i32>| vec![reply_to(name, context).i32(rv_of(&rv)).0];
    Ok(match name {
        "control_ping" => vec![
            reply_to(name, context)
                .i32(forced.unwrap_or(0))
                .u32(index)
                .u32(VPE_PID)
                .0,
        ],
        "sockclnt_delete" => {
            // VPP answers 1 when it deleted the registration, then closes.
            let _index = r.u32()?;
            vec![reply_to(name, context).i32(forced.unwrap_or(1)).0]
        }
        "show_version" => vec![
            reply_to(name, context)
                .i32(forced.unwrap_or(0))
                .cstr("vpe", 32)
                .cstr(VERSION, 32)
                .cstr("2026-11-21T00:00:00", 32)
                .cstr("/xcnf/tests/vpp_double", 256)
                .0,
        ],
        "cli_inband" => {
            let cmd = r.vstr()?;
            let out = apply(shared, forced, |s| {
                s.cli_commands.push(cmd.clone());
                Ok(match cmd.trim() {
                    "show version" => format!("vpp {VERSION} built by the xcnf tests\n"),
                    _ => format!("unknown input `{}'\n", cmd.trim()),
                })
            });
            vec![
                reply_to(name, context)
                    .i32(rv_of(&out))
                    .vstr(&out.unwrap_or_default())
                    .0,
            ]
        }
        "memif_socket_filename_add_del_v2" => {
            let is_add = r.u8()? != 0;
            let id = r.u32()?;
            let filename = r.vstr()?;
            let rv = apply(shared, forced, |s| s.memif_socket(is_add, id, &filename));
            // VPP answers with the id it used (or was given).
            let out_id = match rv {
                Ok(i) => i,
                Err(_) => id,
            };
            vec![reply_to(name, context).i32(rv_of(&rv)).u32(out_id).0]
        }
        "memif_create_v2" => {
            let role = if r.u32()? == 0 {
                Role::Master
            } else {
                Role::Slave
            };
            let mode = match r.u32()? {
                0 => Mode::Ethernet,
                1 => Mode::Ip,
                _ => Mode::PuntInject,
            };
            let (_rxq, _txq) = (r.u8()?, r.u8()?);
            let id = r.u32()?;
            let socket_id = r.u32()?;
            let ring_size = match r.u32()? {
                0 => 1024,
                n => n,
            };
            let buffer_size = match r.u16()? {
                0 => 2048,
                n => n,
            };
            let (_nzc, _dma) = (r.u8()?, r.u8()?);
            let hw: [u8; 6] = r.bytes(6)?.try_into().map_err(|_| Short)?;
            let _secret = r.cstr(24)?;
            let m = Memif {
                role,
                mode,
                id,
                socket_id,
                ring_size,
                buffer_size,
            };
            let rv = apply(shared, forced, |s| s.memif_create(m, hw));
            vec![
                reply_to(name, context)
                    .i32(rv_of(&rv))
                    .u32(rv.unwrap_or(u32::MAX))
                    .0,
            ]
        }
        "memif_socket_filename_dump" => {
            let state = shared.state.lock().expect("state").clone();
            state
                .memif_sockets
                .iter()
                .map(|(id, f)| {
                    Wr::reply(table::id_of("memif_socket_filename_details"), context)
                        .u32(*id)
                        .cstr(f, 108)
                        .0
                })
                .collect()
        }
        "memif_dump" => {
            let state = shared.state.lock().expect("state").clone();
            state
                .interfaces
                .iter()
                .filter_map(|(idx, i)| i.memif.map(|m| (idx, i, m)))
                .map(|(idx, i, m)| {
                    let mode = match m.mode {
                        Mode::Ethernet => 0,
                        Mode::Ip => 1,
                        Mode::PuntInject => 2,
                    };
                    // No peer ever connects: VPP reports the negotiated
                    // sizes, which are 1 << 0 and 0 until then.
                    Wr::reply(table::id_of("memif_details"), context)
                        .u32(*idx)
                        .raw(&i.mac)
                        .u32(m.id)
                        .u32(u32::from(m.role == Role::Slave))
                        .u32(mode)
                        .u8(0)
                        .u32(m.socket_id)
                        .u32(1)
                        .u16(0)
                        .u32(u32::from(i.admin_up))
                        .cstr(&i.name, 64)
                        .0
                })
                .collect()
        }
        "memif_delete" => {
            let i = r.u32()?;
            simple(apply(shared, forced, |s| s.memif_delete(i)))
        }
        "sw_interface_set_flags" => {
            let (i, flags) = (r.u32()?, r.u32()?);
            simple(apply(shared, forced, |s| s.set_flags(i, flags)))
        }
        "sw_interface_add_del_address" => {
            let i = r.u32()?;
            let (is_add, del_all) = (r.u8()? != 0, r.u8()? != 0);
            let af = r.u8()?;
            let addr = r.ip4()?;
            let _rest = r.bytes(12)?;
            let len = r.u8()?;
            simple(apply(shared, forced, |s| {
                s.address(i, is_add, del_all, af, addr, len)
            }))
        }
        "sw_interface_dump" => {
            let i = r.u32()?;
            let filter_valid = r.u8()? != 0;
            let filter = r.vstr()?;
            let state = shared.state.lock().expect("state").clone();
            let mut out: Vec<Vec<u8>> = state
                .interfaces
                .iter()
                .filter(|(idx, iface)| {
                    if filter_valid {
                        iface.name.contains(&filter)
                    } else {
                        i == u32::MAX || **idx == i
                    }
                })
                .map(|(idx, iface)| {
                    let dev = if iface.memif.is_some() {
                        "memif"
                    } else {
                        "Local"
                    };
                    Wr::reply(table::id_of("sw_interface_details"), context)
                        .u32(*idx)
                        .u32(*idx)
                        .raw(&iface.mac)
                        .u32(u32::from(iface.admin_up))
                        .u32(0) // type: hardware
                        .u32(0) // duplex
                        .u32(0) // speed
                        .u16(9000)
                        .u32(9000)
                        .u32(0)
                        .u32(0)
                        .u32(0)
                        .raw(&[0u8; 49]) // sub-interface and tag-rewrite fields
                        .cstr(&iface.name, 64)
                        .cstr(dev, 64)
                        .cstr("", 64)
                        .0
                })
                .collect();
            if forced.is_some() {
                out.clear();
            }
            out
        }
        "ip_route_add_del" => {
            let (is_add, _multipath) = (r.u8()? != 0, r.u8()?);
            let table_id = r.u32()?;
            let _stats = r.u32()?;
            let _af = r.u8()?;
            let addr = r.ip4()?;
            let _rest = r.bytes(12)?;
            let len = r.u8()?;
            let n = r.u8()?;
            let mut paths = Vec::new();
            for _ in 0..n {
                let sw_if_index = r.u32()?;
                let _table = r.u32()?;
                let _rpf = r.u32()?;
                let weight = r.u8()?;
                let _pref = r.u8()?;
                let (_type, _flags, _proto) = (r.u32()?, r.u32()?, r.u32()?);
                let next_hop = r.ip4()?;
                let _rest = r.bytes(12 + 12 + 1 + 16 * 7)?;
                paths.push(RoutePath {
                    sw_if_index,
                    next_hop,
                    weight,
                });
            }
            let rv = apply(shared, forced, |s| {
                s.route(is_add, table_id, addr, len, paths)
            });
            vec![reply_to(name, context).i32(rv_of(&rv)).u32(0).0]
        }
        "nat44_ed_plugin_enable_disable" => {
            let (inside_vrf, outside_vrf, sessions, _mem) =
                (r.u32()?, r.u32()?, r.u32()?, r.u32()?);
            let (enable, flags) = (r.u8()? != 0, r.u8()?);
            let cfg = Nat44 {
                sessions,
                inside_vrf,
                outside_vrf,
            };
            simple(apply(shared, forced, |s| {
                s.nat44_enable(enable, cfg, flags)
            }))
        }
        "nat44_add_del_address_range" => {
            let (first, last) = (r.ip4()?, r.ip4()?);
            let _vrf = r.u32()?;
            let (is_add, _flags) = (r.u8()? != 0, r.u8()?);
            simple(apply(shared, forced, |s| {
                s.nat44_range(first, last, is_add)
            }))
        }
        "nat44_interface_add_del_feature" => {
            let (is_add, flags) = (r.u8()? != 0, r.u8()?);
            let i = r.u32()?;
            simple(apply(shared, forced, |s| s.nat44_feature(i, is_add, flags)))
        }
        "nat44_add_del_static_mapping_v2" => {
            let (is_add, _match_pool, flags) = (r.u8()? != 0, r.u8()?, r.u8()?);
            let _pool = r.ip4()?;
            let (local, external) = (r.ip4()?, r.ip4()?);
            let protocol = r.u8()?;
            let (local_port, external_port) = (r.u16()?, r.u16()?);
            let ext_sw_if_index = r.u32()?;
            let vrf_id = r.u32()?;
            let tag = r.cstr(64)?;
            let addr_only = flags & 0x08 != 0;
            let m = StaticMap {
                addr_only,
                protocol: if addr_only { 0 } else { protocol },
                local,
                local_port: if addr_only { 0 } else { local_port },
                external,
                external_port: if addr_only { 0 } else { external_port },
                vrf_id,
                flags,
                tag,
            };
            simple(apply(shared, forced, |s| {
                // external_sw_if_index 0 would take local0's address: never valid here.
                if ext_sw_if_index != u32::MAX {
                    return Err(super::state::INVALID_SW_IF_INDEX);
                }
                s.nat44_static(is_add, m)
            }))
        }
        "nat44_add_del_identity_mapping" => {
            let (is_add, flags) = (r.u8()? != 0, r.u8()?);
            let addr = r.ip4()?;
            let protocol = r.u8()?;
            let port = r.u16()?;
            let sw_if_index = r.u32()?;
            let vrf_id = r.u32()?;
            let _tag = r.cstr(64)?;
            let addr_only = flags & 0x08 != 0;
            let m = IdentityMap {
                addr_only,
                addr,
                protocol: if addr_only { 0 } else { protocol },
                port: if addr_only { 0 } else { port },
                vrf_id,
            };
            simple(apply(shared, forced, |s| {
                if sw_if_index != u32::MAX {
                    return Err(super::state::INVALID_SW_IF_INDEX);
                }
                s.nat44_identity(is_add, m)
            }))
        }
        "nat_set_timeouts" => {
            let t = super::state::Timeouts {
                udp: r.u32()?,
                tcp_established: r.u32()?,
                tcp_transitory: r.u32()?,
                icmp: r.u32()?,
            };
            simple(apply(shared, forced, |s| {
                s.timeouts = t;
                Ok(())
            }))
        }
        "nat44_user_dump" => {
            let sessions = shared.ctl.lock().expect("controls").sessions.clone();
            let mut users: Vec<Ipv4Addr> = sessions.iter().map(|s| *s.inside.ip()).collect();
            users.sort();
            users.dedup();
            users
                .into_iter()
                .map(|u| {
                    let mine = sessions.iter().filter(|s| *s.inside.ip() == u);
                    let nstatic = mine.clone().filter(|s| s.is_static).count() as u32;
                    let n = mine.count() as u32 - nstatic;
                    Wr::reply(table::id_of("nat44_user_details"), context)
                        .u32(0)
                        .raw(&u.octets())
                        .u32(n)
                        .u32(nstatic)
                        .0
                })
                .collect()
        }
        "nat44_user_session_v3_dump" => {
            let (ip, _vrf) = (r.ip4()?, r.u32()?);
            let sessions = shared.ctl.lock().expect("controls").sessions.clone();
            sessions
                .iter()
                .filter(|s| *s.inside.ip() == ip)
                .map(|s| {
                    let flags = 0x80 | if s.is_static { 0x40 } else { 0 };
                    Wr::reply(table::id_of("nat44_user_session_v3_details"), context)
                        .raw(&s.outside.ip().octets())
                        .u16(s.outside.port())
                        .raw(&s.inside.ip().octets())
                        .u16(s.inside.port())
                        .u16(s.protocol)
                        .u8(flags)
                        .u64(1000)
                        .u64(s.seconds_since_last_heard)
                        .u64(s.total_bytes)
                        .u32(s.total_pkts)
                        .raw(&s.ext_host.ip().octets())
                        .u16(s.ext_host.port())
                        .raw(&[0, 0, 0, 0])
                        .u16(0)
                        .u8(0)
                        .0
                })
                .collect()
        }
        // Served in the table but not modelled: never answered.
        _ => Vec::new(),
    })
}
