//! NSM's memif mechanism with the VPP backend: the agent as NSM client
//! (a memif slave on the forwarder's socket) and as NSM endpoint (a memif
//! master on a socket it names), with the IP contexts programmed into VPP
//! and the NAT44 domain over both, against the NSM manager double and the
//! VPP API double. The double plays the forwarder's signalling only: no
//! packets cross a memif here (docs/vpp.md has the run against a real VPP).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use xcnf_tests::{
    agent::{Agent, Scratch, xcnfctl_output},
    netns::{Netns, unique_prefix},
    nsm_double::{NsmDouble, SOCKETFILE},
    vpp_double::{Role, VppDoubleHost, VppState},
};

/// Guards against a hang, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// The NSM and VPP doubles of one test.
struct Doubles {
    nsm: NsmDouble,
    vpp: VppDoubleHost,
    _scratch: Scratch,
}

impl Doubles {
    fn start(prefix: &str) -> Self {
        let scratch = Scratch::new(&format!("{prefix}-memif"));
        let nsm = NsmDouble::start(
            &scratch.path().join("nsm.io.sock"),
            Duration::from_secs(600),
        );
        Self {
            nsm,
            vpp: VppDoubleHost::start("nsm-memif"),
            _scratch: scratch,
        }
    }

    fn agent(&self, ns: &Netns, instance: &str, config: &str) -> Agent {
        Agent::start(
            ns,
            instance,
            config,
            &[
                "--nsm-socket",
                &self.nsm.url(),
                "--nsm-insecure",
                "--vpp-api-socket",
                &self.vpp.socket_arg(),
            ],
        )
    }
}

/// The CNF of the classic chain over NSM memifs: the inside is an endpoint
/// of `nat44-svc` handing out 10.60.0.0/24 pairs, the outside a client of
/// `web`, and the NAT44 domain in VPP over both.
fn config(instance: &str) -> String {
    format!(
        r#"apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {{name: {instance}}}
spec:
  interfaces:
    - name: inside
      nsm: {{networkService: nat44-svc, role: endpoint, mechanism: memif, labels: {{app: nat44}}, ipam: {{cidr: 10.60.0.0/24}}}}
      backend: vpp
      ipAddresses: [192.168.100.1/24]
    - name: outside
      nsm: {{networkService: web, role: client, mechanism: memif, labels: {{app: web}}}}
      backend: vpp
      ipAddresses: [80.80.80.100/24]
  nat44:
    inside: [inside]
    outside: [outside]
    pools:
      - {{first: 80.80.80.100, last: 80.80.80.100}}
"#
    )
}

fn wait_until(what: &str, agent: &Agent, mut ok: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match ok() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!(
                "{what}: not after {PATIENCE:?}: {e}\n--- agent log ---\n{}",
                agent.log()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The memif VPP holds on `socket` (as VPP names it), with its addresses.
fn memif_on(s: &VppState, socket: &str) -> Result<(u32, Role, Vec<String>), String> {
    let id = s
        .memif_sockets
        .iter()
        .find(|(_, f)| *f == socket)
        .map(|(id, _)| *id)
        .ok_or_else(|| format!("socket {socket} not registered: {:?}", s.memif_sockets))?;
    s.interfaces
        .iter()
        .find_map(|(sw, i)| {
            let m = i.memif.filter(|m| m.socket_id == id)?;
            let addrs = i
                .addresses
                .iter()
                .map(|(a, l)| format!("{a}/{l}"))
                .collect();
            Some((*sw, m.role, addrs))
        })
        .ok_or_else(|| format!("no memif on socket {id} ({socket})"))
}

fn route_via(s: &VppState, dst: Ipv4Addr, len: u8) -> Option<u32> {
    s.routes
        .get(&(0, dst, len))
        .and_then(|p| p.first())
        .map(|p| p.sw_if_index)
}

/// `xcnfctl status` as text (it exits non-zero while anything is pending).
fn status_of(ns: &Netns, instance: &str) -> String {
    String::from_utf8_lossy(&xcnfctl_output(ns, instance, &["status"]).stdout).into_owned()
}

fn abstract_name(socketfile: &str) -> String {
    format!("abstract:{}", socketfile.trim_start_matches('@'))
}

/// Client and endpoint over memif, with NAT44 in VPP between them; the
/// endpoint's memif goes when its only client closes, the client's stays.
#[test]
fn memif_client_and_endpoint_are_made_in_vpp_with_the_ip_context_and_nat() {
    let p = unique_prefix("nmm");
    let d = Doubles::start(&p);
    let (cnf, web, nsc) = (
        Netns::new(&format!("{p}c")),
        Netns::new(&format!("{p}w")),
        Netns::new(&format!("{p}n")),
    );
    d.nsm.add_endpoint(
        "web-ep",
        "web",
        &[("app", "web")],
        &web.path(),
        "nse",
        Ipv4Addr::new(10, 70, 0, 0),
    );
    let agent = d.agent(&cnf, &p, &config(&p));

    // Client side: the forwarder's socket, a slave on it, the context's
    // source address and route.
    let client_id = format!("{p}-outside");
    d.nsm.wait_for(PATIENCE, "the client's connection", |n| {
        n.last(&client_id).is_some()
    });
    let pair = d.nsm.last(&client_id).unwrap().memif.expect("a memif pair");
    let outside_socket = abstract_name(&pair.client_socket);
    wait_until("the outside memif in VPP", &agent, || {
        let s = d.vpp.double.snapshot();
        let (sw, role, addrs) = memif_on(&s, &outside_socket)?;
        if role != Role::Slave {
            return Err(format!("outside is {role:?}"));
        }
        for a in ["10.70.0.1/32", "80.80.80.100/24"] {
            if !addrs.iter().any(|x| x == a) {
                return Err(format!("{a} not on the outside memif: {addrs:?}"));
            }
        }
        (route_via(&s, Ipv4Addr::new(10, 70, 0, 2), 32) == Some(sw))
            .then_some(())
            .ok_or_else(|| format!("no route to 10.70.0.2/32 via sw {sw}: {:?}", s.routes))
    });

    // Endpoint side: nothing until a client connects, and status says why.
    let status = status_of(&cnf, &p);
    assert!(
        status.contains("waiting for an NSM client of nat44-svc"),
        "{status}"
    );
    let reply = d
        .nsm
        .request_memif("c1", "nat44-svc", &[("app", "nat44")], &nsc.path())
        .unwrap_or_else(|e| panic!("request: {e}\n{}", agent.log()));
    let ipc = reply.context.unwrap().ip_context.unwrap();
    assert_eq!(ipc.src_ip_addrs, ["10.60.0.2/32"]);
    assert_eq!(ipc.dst_ip_addrs, ["10.60.0.1/32"]);
    let endpoint_socket = d.nsm.last("c1").unwrap().memif.unwrap().endpoint_socket;
    assert!(
        endpoint_socket.starts_with("@xcnf-memif/"),
        "the endpoint names its socket: {endpoint_socket}"
    );
    assert_eq!(
        reply.mechanism.unwrap().parameters.get(SOCKETFILE).cloned(),
        Some("@nsm-double/c1".to_owned())
    );
    let inside_socket = abstract_name(&endpoint_socket);
    let mut inside_sw = 0;
    wait_until("the inside memif and the NAT in VPP", &agent, || {
        let s = d.vpp.double.snapshot();
        let (sw, role, addrs) = memif_on(&s, &inside_socket)?;
        inside_sw = sw;
        if role != Role::Master {
            return Err(format!("inside is {role:?}"));
        }
        for a in ["10.60.0.1/32", "192.168.100.1/24"] {
            if !addrs.iter().any(|x| x == a) {
                return Err(format!("{a} not on the inside memif: {addrs:?}"));
            }
        }
        if route_via(&s, Ipv4Addr::new(10, 60, 0, 2), 32) != Some(sw) {
            return Err(format!("no route to the client: {:?}", s.routes));
        }
        let (out_sw, _, _) = memif_on(&s, &outside_socket)?;
        let sides = |x: u32| s.nat_interfaces.get(&x).map(|n| (n.inside, n.outside));
        if sides(sw) != Some((true, false)) || sides(out_sw) != Some((false, true)) {
            return Err(format!("NAT sides: {:?}", s.nat_interfaces));
        }
        (s.nat_addresses.iter().collect::<Vec<_>>() == [&Ipv4Addr::new(80, 80, 80, 100)])
            .then_some(())
            .ok_or_else(|| format!("pool {:?}", s.nat_addresses))
    });
    let status = status_of(&cnf, &p);
    assert!(!status.contains("pending"), "{status}");

    // One logical interface is one memif: a second client is refused, and
    // says why.
    let second = d
        .nsm
        .request_memif("c2", "nat44-svc", &[("app", "nat44")], &nsc.path());
    assert!(
        second
            .as_ref()
            .is_err_and(|e| e.contains("one client at a time over memif")),
        "{second:?}"
    );

    // The only client closes: the endpoint's memif and socket go, the
    // client side stays.
    d.nsm.close("c1");
    wait_until("the inside memif removed", &agent, || {
        let s = d.vpp.double.snapshot();
        if s.interfaces.contains_key(&inside_sw) {
            return Err(format!("sw {inside_sw} still there"));
        }
        if s.memif_sockets.values().any(|f| *f == inside_socket) {
            return Err(format!("{inside_socket} still registered"));
        }
        memif_on(&s, &outside_socket).map(|_| ())
    });
    let status = status_of(&cnf, &p);
    assert!(
        status.contains("waiting for an NSM client of nat44-svc"),
        "{status}"
    );
    // With the first one gone, the second client is served.
    d.nsm
        .request_memif("c2", "nat44-svc", &[("app", "nat44")], &nsc.path())
        .unwrap_or_else(|e| panic!("second client after the first closed: {e}"));
    let socket2 = abstract_name(&d.nsm.last("c2").unwrap().memif.unwrap().endpoint_socket);
    assert_ne!(socket2, inside_socket);
    wait_until("the second client's memif", &agent, || {
        memif_on(&d.vpp.double.snapshot(), &socket2).map(|_| ())
    });
}
