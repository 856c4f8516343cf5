//! The reconciler's view of a VPP connection ([`VppApi`]) over the
//! supervised client: config types in, VPP types out, and errors sorted into
//! "VPP is not there" (Pending) and "VPP said no" (the step fails).

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{
    VppConnection, VppError,
    error::{ALREADY_GONE, ALREADY_THERE},
    ops::{
        self, IdentityMapping, Ipv4Route, MemifSpec, NatProto, NatSide, StaticMapping, SwIfIndex,
        memif_socket_filename,
    },
};
use crate::{
    config::{IdentitySpec, Ipv4Prefix, MemifMode, MemifRole, NatTimeouts, StaticSpec},
    reconcile::vpp::{Call, MemifCreate, VppApi, VppFault},
};

fn fault(e: VppError) -> VppFault {
    match &e {
        _ if e.is_unreachable() => VppFault::Unreachable(e.to_string()),
        VppError::Retval { retval, .. } if ALREADY_THERE.contains(retval) => {
            VppFault::Exists(e.to_string())
        }
        VppError::Retval { retval, .. } if ALREADY_GONE.contains(retval) => {
            VppFault::Gone(e.to_string())
        }
        _ => VppFault::Refused(e.to_string()),
    }
}

/// VPP's form of a static mapping: validation has made sure a port mapping
/// names tcp or udp and an address-only one has no ports.
fn static_mapping(s: &StaticSpec) -> StaticMapping {
    match (
        s.local.port,
        s.external.port,
        NatProto::from_config(s.protocol),
    ) {
        (Some(lp), Some(ep), Some(protocol)) => StaticMapping::Port {
            protocol,
            local: SocketAddrV4::new(s.local.addr, lp),
            external: SocketAddrV4::new(s.external.addr, ep),
        },
        _ => StaticMapping::AddressOnly {
            local: s.local.addr,
            external: s.external.addr,
        },
    }
}

fn identity_mapping(i: &IdentitySpec) -> IdentityMapping {
    IdentityMapping {
        addr: i.addr,
        port: match (i.port, NatProto::from_config(i.protocol)) {
            (Some(p), Some(proto)) => Some((proto, p)),
            _ => None,
        },
    }
}

impl VppConnection {
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, VppFault>
    where
        F: FnOnce(super::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, VppError>>,
    {
        let client = self.client().map_err(fault)?;
        f(client).await.map_err(fault)
    }
}

impl VppApi for VppConnection {
    fn epoch(&self) -> Option<u64> {
        let s = self.status();
        s.connected.then_some(s.epoch)
    }

    fn unreachable_reason(&self) -> Option<String> {
        self.client().err().map(|e| e.to_string())
    }

    fn memif_socket<'a>(&'a self, socket_id: u32, path: &'a str, add: bool) -> Call<'a, ()> {
        Box::pin(async move {
            self.call(|c| async move {
                if add {
                    c.memif_socket_add(Some(socket_id), &memif_socket_filename(path, None))
                        .await
                        .map(|_| ())
                } else {
                    c.memif_socket_del(socket_id).await
                }
            })
            .await
        })
    }

    fn memif_create<'a>(&'a self, m: &'a MemifCreate) -> Call<'a, u32> {
        Box::pin(async move {
            let mut spec = MemifSpec::new(
                match m.role {
                    MemifRole::Master => ops::MemifRole::Master,
                    MemifRole::Slave => ops::MemifRole::Slave,
                },
                match m.mode {
                    MemifMode::Ethernet => ops::MemifMode::Ethernet,
                    MemifMode::Ip => ops::MemifMode::Ip,
                },
                m.id,
                m.socket_id,
            );
            spec.hw_addr = Some(m.mac);
            self.call(|c| async move { c.memif_create(&spec).await.map(|s| s.0) })
                .await
        })
    }

    fn memif_delete(&self, sw_if_index: u32) -> Call<'_, ()> {
        Box::pin(self.call(move |c| async move { c.memif_delete(SwIfIndex(sw_if_index)).await }))
    }

    fn set_flags(&self, sw_if_index: u32, up: bool) -> Call<'_, ()> {
        Box::pin(self.call(move |c| async move { c.set_flags(SwIfIndex(sw_if_index), up).await }))
    }

    fn address(&self, sw_if_index: u32, p: Ipv4Prefix, add: bool) -> Call<'_, ()> {
        Box::pin(
            self.call(
                move |c| async move { c.add_del_address(SwIfIndex(sw_if_index), p, add).await },
            ),
        )
    }

    fn route(
        &self,
        dst: Ipv4Prefix,
        via: Option<Ipv4Addr>,
        sw_if_index: u32,
        add: bool,
    ) -> Call<'_, ()> {
        let route = Ipv4Route {
            prefix: dst,
            via,
            sw_if_index: Some(SwIfIndex(sw_if_index)),
            table_id: 0,
        };
        Box::pin(self.call(move |c| async move { c.route_add_del(&route, add).await }))
    }

    fn memif_sockets(&self) -> Call<'_, Vec<(u32, String)>> {
        Box::pin(self.call(|c| async move { c.memif_sockets().await }))
    }

    fn vpp_socket_name(&self, socket: &str) -> String {
        memif_socket_filename(socket, None)
    }

    fn interfaces(&self) -> Call<'_, Vec<(u32, String)>> {
        Box::pin(self.call(|c| async move {
            c.interfaces()
                .await
                .map(|v| v.into_iter().map(|d| (d.sw_if_index.0, d.name)).collect())
        }))
    }

    fn nat_enable(&self, max_sessions: u32, enable: bool) -> Call<'_, ()> {
        Box::pin(self.call(move |c| async move {
            if enable {
                c.nat44_enable(max_sessions).await
            } else {
                c.nat44_disable().await
            }
        }))
    }

    fn nat_range(&self, first: Ipv4Addr, last: Ipv4Addr, add: bool) -> Call<'_, ()> {
        Box::pin(self.call(move |c| async move { c.nat44_address_range(first, last, add).await }))
    }

    fn nat_feature(&self, sw_if_index: u32, inside: bool, add: bool) -> Call<'_, ()> {
        let side = if inside {
            NatSide::Inside
        } else {
            NatSide::Outside
        };
        Box::pin(self.call(move |c| async move {
            c.nat44_interface(SwIfIndex(sw_if_index), side, add).await
        }))
    }

    fn nat_static<'a>(&'a self, s: &'a StaticSpec, add: bool) -> Call<'a, ()> {
        let m = static_mapping(s);
        Box::pin(self.call(move |c| async move { c.nat44_static_mapping(&m, add).await }))
    }

    fn nat_identity<'a>(&'a self, i: &'a IdentitySpec, add: bool) -> Call<'a, ()> {
        let m = identity_mapping(i);
        Box::pin(self.call(move |c| async move { c.nat44_identity_mapping(&m, add).await }))
    }

    fn nat_timeouts<'a>(&'a self, t: &'a NatTimeouts) -> Call<'a, ()> {
        let t = *t;
        Box::pin(self.call(move |c| async move { c.nat44_set_timeouts(&t).await }))
    }
}
