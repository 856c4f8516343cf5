//! The agent in Network Service Mesh, against the NSM manager double
//! (nsmgr + forwarder, real veth pairs between namespaces): as a client, as
//! an endpoint, refreshing, healing after the manager restarts, and closing
//! when the interface leaves the config.
//!
//! Most tests run insecure (`--nsm-insecure`) to look at one NSM mechanism
//! at a time; the `secure_*` ones run as NSM does in production: mTLS with
//! SVIDs from SPIFFE Workload API doubles of one trust domain (the agent's
//! and the manager double's) and signed path tokens, and show that an
//! untrusted certificate and forged or expired tokens are refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use xcnf_agent::nsm::security::token;
use xcnf_tests::{
    agent::{Agent, Scratch, paired_address_in_maps},
    netns::{CLIENT_IP, Netns, unique_prefix},
    nsm_chain::{self, ChainSecurity, ChainSpiffe, NsmChain},
    nsm_double::{NsmDouble, TokenFault},
};

const WAIT: Duration = Duration::from_secs(30);

/// Retries `f` until it succeeds; fails with its last error after `timeout`.
fn poll<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline => panic!("timed out waiting for {what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn addresses(ns: &Netns, ifname: &str) -> Result<String, String> {
    let out = ns.output("ip", &["-o", "-4", "addr", "show", "dev", ifname]);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn has_link(ns: &Netns, ifname: &str) -> bool {
    ns.output("ip", &["link", "show", "dev", ifname])
        .status
        .success()
}

fn ping(ns: &Netns, ip: &str) -> Result<(), String> {
    let out = ns.output("ping", &["-c", "1", "-W", "1", ip]);
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// An agent with `interfaces` (YAML list items, indented) against `double`.
fn start_agent(ns: &Netns, instance: &str, interfaces: &str, double: &NsmDouble) -> Agent {
    Agent::start(
        ns,
        instance,
        &config(instance, interfaces),
        &["--nsm-socket", &double.url(), "--nsm-insecure"],
    )
}

fn config(instance: &str, interfaces: &str) -> String {
    format!(
        "apiVersion: xcnf.io/v1alpha1\nkind: CNFConfiguration\nmetadata: {{name: {instance}}}\nspec:\n  interfaces:\n{interfaces}"
    )
}

/// The agent's log, printed when a test fails with it running.
struct LogOnPanic<'a>(&'a Agent);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.0.log());
        }
    }
}

struct Setup {
    _scratch: Scratch,
    socket: PathBuf,
}

fn setup(prefix: &str) -> Setup {
    let scratch = Scratch::new(&format!("{prefix}-nsm"));
    let socket = scratch.path().join("nsm.io.sock");
    Setup {
        _scratch: scratch,
        socket,
    }
}

const CLIENT_ITF: &str = "    - name: mesh
      nsm: {networkService: svc, role: client, interfaceName: nsm1, labels: {app: nat44}}
      ipAddresses: [172.16.9.1/24]
      datapath: {hook: tc}
";

/// The agent as NSM client of a built-in endpoint in another namespace:
/// the interface appears under the requested name, the forwarder's /32 and
/// the config's address are on it, the datapath is attached, and the
/// endpoint answers across.
#[test]
fn client_connects_binds_and_reaches_the_endpoint() {
    let p = unique_prefix("nsc");
    let s = setup(&p);
    let (cnf, ep) = (Netns::new(&format!("{p}c")), Netns::new(&format!("{p}e")));
    let double = NsmDouble::start(&s.socket, Duration::from_secs(600));
    double.add_endpoint(
        "ep",
        "svc",
        &[("app", "nat44")],
        &ep.path(),
        "nse",
        Ipv4Addr::new(10, 70, 0, 0),
    );
    let agent = start_agent(&cnf, &p, CLIENT_ITF, &double);
    let _log = LogOnPanic(&agent);

    let addrs = poll(WAIT, "the config address on nsm1", || {
        let a = addresses(&cnf, "nsm1")?;
        a.contains("172.16.9.1/24").then_some(a.clone()).ok_or(a)
    });
    assert!(addrs.contains("10.70.0.1/32"), "{addrs}");
    assert!(addresses(&ep, "nse0").unwrap().contains("10.70.0.2/32"));
    poll(WAIT, "ping across", || ping(&cnf, "10.70.0.2"));
    poll(WAIT, "the datapath on nsm1", || {
        let progs = cnf.attached_programs("nsm1");
        (!progs.is_empty())
            .then_some(())
            .ok_or(format!("{progs:?}"))
    });
    let conn = double.last(&format!("{p}-mesh")).unwrap();
    assert_eq!(conn.client.network_service, "svc");
    assert_eq!(
        conn.client.labels.get("app").map(String::as_str),
        Some("nat44")
    );
    assert_eq!(conn.client_end.ifname, "nsm1");
}

/// A client with no endpoint for its service stays Pending with the
/// reason, and connects once an endpoint appears.
#[test]
fn client_waits_for_an_endpoint_and_reports_why() {
    let p = unique_prefix("nsw");
    let s = setup(&p);
    let (cnf, ep) = (Netns::new(&format!("{p}c")), Netns::new(&format!("{p}e")));
    let double = NsmDouble::start(&s.socket, Duration::from_secs(600));
    let agent = start_agent(&cnf, &p, CLIENT_ITF, &double);
    let _log = LogOnPanic(&agent);
    agent
        .wait_for_log_line(WAIT, |l| {
            l.contains("pending")
                && l.contains("address/mesh/172.16.9.1/24")
                && l.contains("waiting for NSM connection to svc")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    double.add_endpoint(
        "ep",
        "svc",
        &[],
        &ep.path(),
        "nse",
        Ipv4Addr::new(10, 71, 0, 0),
    );
    poll(WAIT, "the config address on nsm1", || {
        let a = addresses(&cnf, "nsm1")?;
        a.contains("172.16.9.1/24").then_some(()).ok_or(a)
    });
    poll(WAIT, "ping across", || ping(&cnf, "10.71.0.2"));
}

/// With short-lived paths the client refreshes on its own, and the
/// connection stays up (the double ends connections that are not refreshed).
#[test]
fn client_refreshes_before_the_path_expires() {
    let p = unique_prefix("nsr");
    let s = setup(&p);
    let (cnf, ep) = (Netns::new(&format!("{p}c")), Netns::new(&format!("{p}e")));
    let double = NsmDouble::start(&s.socket, Duration::from_secs(5));
    double.add_endpoint(
        "ep",
        "svc",
        &[],
        &ep.path(),
        "nse",
        Ipv4Addr::new(10, 72, 0, 0),
    );
    let agent = start_agent(&cnf, &p, CLIENT_ITF, &double);
    let _log = LogOnPanic(&agent);
    let id = format!("{p}-mesh");
    double.wait_for(WAIT, "5 requests (first + refreshes)", |d| {
        d.requests(&id) >= 5
    });
    assert!(double.closes().is_empty(), "expired: {:?}", double.closes());
    assert!(double.last(&id).is_some());
    poll(WAIT, "ping across", || ping(&cnf, "10.72.0.2"));
}

/// The manager restarts (streams, connections and pairs gone): the client
/// notices the lost monitor stream, requests again, and the interface, its
/// config address and connectivity come back.
#[test]
fn client_heals_after_the_manager_restarts() {
    let p = unique_prefix("nsh");
    let s = setup(&p);
    let (cnf, ep) = (Netns::new(&format!("{p}c")), Netns::new(&format!("{p}e")));
    let mut double = NsmDouble::start(&s.socket, Duration::from_secs(600));
    double.add_endpoint(
        "ep",
        "svc",
        &[],
        &ep.path(),
        "nse",
        Ipv4Addr::new(10, 73, 0, 0),
    );
    let agent = start_agent(&cnf, &p, CLIENT_ITF, &double);
    let _log = LogOnPanic(&agent);
    poll(WAIT, "ping across", || ping(&cnf, "10.73.0.2"));
    let id = format!("{p}-mesh");
    let before = double.requests(&id);
    // The restart deletes the pair and forgets the connection: one that is
    // there again was made by a healing request.
    double.restart();
    double.wait_for(WAIT, "a healing request", |d| d.last(&id).is_some());
    assert!(double.requests(&id) > before);
    poll(WAIT, "the config address back on nsm1", || {
        let a = addresses(&cnf, "nsm1")?;
        a.contains("172.16.9.1/24").then_some(()).ok_or(a)
    });
    // A new pair from the built-in endpoint: the next address pair.
    poll(WAIT, "ping across again", || ping(&cnf, "10.73.0.6"));
}

/// Removing the interface from the config closes the connection: the double
/// deletes the pair.
#[test]
fn removing_the_interface_closes_the_connection() {
    let p = unique_prefix("nsx");
    let s = setup(&p);
    let (cnf, ep) = (Netns::new(&format!("{p}c")), Netns::new(&format!("{p}e")));
    let double = NsmDouble::start(&s.socket, Duration::from_secs(600));
    double.add_endpoint(
        "ep",
        "svc",
        &[],
        &ep.path(),
        "nse",
        Ipv4Addr::new(10, 74, 0, 0),
    );
    cnf.ip(&["link", "add", "k0", "type", "veth", "peer", "name", "k1"]);
    let agent = start_agent(
        &cnf,
        &p,
        &format!("{CLIENT_ITF}    - {{name: plain, kernel: {{hostIfName: k0}}}}\n"),
        &double,
    );
    let _log = LogOnPanic(&agent);
    poll(WAIT, "ping across", || ping(&cnf, "10.74.0.2"));
    agent.replace_config(&config(
        &p,
        "    - {name: plain, kernel: {hostIfName: k0}}\n",
    ));
    let id = format!("{p}-mesh");
    double.wait_for(WAIT, "the Close", |d| d.closes().contains(&id));
    poll(WAIT, "nsm1 gone", || {
        (!has_link(&cnf, "nsm1"))
            .then_some(())
            .ok_or("still there".to_string())
    });
    assert!(!has_link(&ep, "nse0"));
}

const ENDPOINT_ITF: &str = "    - name: svc
      nsm: {networkService: svc, role: endpoint, interfaceNamePrefix: nsm, ipam: {cidr: 10.80.0.0/24}, labels: {app: web}}
      ipAddresses: [172.31.0.1/24]
      datapath: {hook: tc}
";

/// The agent as NSM endpoint: it registers, answers two clients with the
/// kernel mechanism in its own namespace and point-to-point pairs (stable
/// across a refresh), binds its logical interface, and a Close from a
/// client takes that client's pair away.
#[test]
fn endpoint_serves_clients_with_stable_addresses() {
    let p = unique_prefix("nse");
    let s = setup(&p);
    let ep = Netns::new(&format!("{p}e"));
    let (c1, c2) = (Netns::new(&format!("{p}1")), Netns::new(&format!("{p}2")));
    let double = NsmDouble::start(&s.socket, Duration::from_secs(600));
    let agent = start_agent(&ep, &p, ENDPOINT_ITF, &double);
    let _log = LogOnPanic(&agent);
    let name = format!("{p}-svc");
    double.wait_for(WAIT, "the registration", |d| {
        d.endpoints().iter().any(|n| n.name == name)
    });
    let nse = double
        .endpoints()
        .into_iter()
        .find(|n| n.name == name)
        .unwrap();
    assert_eq!(nse.network_service_names, ["svc"]);
    // grpc.health.v1 next to the NSM services, as NSM endpoints serve it.
    assert_eq!(double.health(&name, ""), Ok(1), "SERVING");
    assert_eq!(double.health(&name, "networkservice.NetworkService"), Ok(1));
    let unknown = double.health(&name, "no.Such");
    assert!(
        unknown.as_ref().is_err_and(|e| e.starts_with("NotFound")),
        "{unknown:?}"
    );
    assert_eq!(
        nse.network_service_labels["svc"]
            .labels
            .get("app")
            .map(String::as_str),
        Some("web")
    );

    let first = double
        .request("c1", "svc", &[("app", "web")], &c1.path(), "nsc0")
        .unwrap_or_else(|e| panic!("request: {e}"));
    let ipc = first.context.clone().unwrap().ip_context.unwrap();
    assert_eq!(ipc.src_ip_addrs, ["10.80.0.2/32"]);
    assert_eq!(ipc.dst_ip_addrs, ["10.80.0.1/32"]);
    assert_eq!(double.last("c1").unwrap().endpoint_end.ifname, "nsm0");
    poll(WAIT, "ping the endpoint", || ping(&c1, "10.80.0.1"));
    // The agent bound its logical interface to nsm0: the config address is there.
    poll(WAIT, "the config address on nsm0", || {
        let a = addresses(&ep, "nsm0")?;
        a.contains("172.31.0.1/24").then_some(()).ok_or(a)
    });
    // A refresh keeps the pair.
    let again = double
        .request("c1", "svc", &[("app", "web")], &c1.path(), "nsc0")
        .unwrap_or_else(|e| panic!("refresh: {e}"));
    assert_eq!(
        again.context.unwrap().ip_context.unwrap().src_ip_addrs,
        ["10.80.0.2/32"]
    );

    let second = double
        .request("c2", "svc", &[("app", "web")], &c2.path(), "nsc0")
        .unwrap_or_else(|e| panic!("second client: {e}"));
    let ipc2 = second.context.unwrap().ip_context.unwrap();
    assert_eq!(ipc2.src_ip_addrs, ["10.80.0.4/32"]);
    assert_eq!(ipc2.dst_ip_addrs, ["10.80.0.3/32"]);
    assert_eq!(double.last("c2").unwrap().endpoint_end.ifname, "nsm1");
    poll(WAIT, "the second client pings", || ping(&c2, "10.80.0.3"));

    double.close("c1");
    assert!(!has_link(&c1, "nsc0"));
    assert!(!has_link(&ep, "nsm0"));
    poll(WAIT, "the second client still pings", || {
        ping(&c2, "10.80.0.3")
    });
    // A label the endpoint does not match finds no endpoint.
    let refused = double.request("c3", "svc", &[("app", "db")], &c1.path(), "nsc0");
    assert!(refused.is_err(), "{refused:?}");
}

/// Without --nsm-insecure and without a SPIFFE Workload API, NSM interfaces
/// do not connect, and say why.
#[test]
fn without_security_nsm_interfaces_stay_pending_with_the_reason() {
    let p = unique_prefix("nsi");
    let s = setup(&p);
    let cnf = Netns::new(&format!("{p}c"));
    let double = NsmDouble::start(&s.socket, Duration::from_secs(600));
    let agent = Agent::start(
        &cnf,
        &p,
        &config(&p, CLIENT_ITF),
        &["--nsm-socket", &double.url()],
    );
    let _log = LogOnPanic(&agent);
    agent
        .wait_for_log_line(WAIT, |l| {
            l.contains("pending") && l.contains("--nsm-insecure")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(double.requests(&format!("{p}-mesh")), 0);
}

const HTTP_ECHO: &str = env!("CARGO_BIN_EXE_xcnf-http-echo");

/// The classic chain over NSM (tests/src/nsm_chain.rs, the example's
/// network service and labels): the client reaches the cnf's inside
/// endpoint and the cnf's outside reaches the web server only through the
/// service's matches (with plain label matching the cnf's outside would
/// pick its own endpoint), and curl from the client reaches the web server
/// through the cnf's NAT44: the server sees the pool address paired
/// pooling gave the client.
#[test]
fn chain_client_cnf_webserver_through_the_nat() {
    chain_through_the_nat(None);
}

/// The same chain over mTLS with signed path tokens: the cnf's client and
/// endpoint and the manager double verify each other's SVIDs and run NSM's
/// token policies on every Request.
#[test]
fn secure_chain_client_cnf_webserver_through_the_nat() {
    chain_through_the_nat(Some(&Spiffe::start()));
}

fn chain_through_the_nat(spiffe: Option<&Spiffe>) {
    let p = unique_prefix("nsn");
    let security = match spiffe {
        Some(sp) => ChainSecurity::Spiffe {
            nsm: &sp.nsm,
            agent_endpoint: sp.agent.endpoint(),
        },
        None => ChainSecurity::Insecure,
    };
    let chain = NsmChain::start(&p, std::path::Path::new(HTTP_ECHO), &security, &[]);
    let _log = LogOnPanic(&chain.agent);
    if spiffe.is_some() {
        // Both of the cnf's hops signed their segments with its SVID.
        let endpoint_seg = &chain.client_conn.path.as_ref().unwrap().path_segments[3];
        assert_eq!(subject(&endpoint_seg.token), AGENT_ID);
        let out = chain.double.last(&format!("{p}-outside")).unwrap();
        assert_eq!(
            subject(&out.client.path.unwrap().path_segments[0].token),
            AGENT_ID
        );
    }
    assert_eq!(
        chain.client_conn.network_service_endpoint_name,
        format!("{p}-inside"),
        "the client reached the cnf's endpoint"
    );
    let outside: Vec<_> = chain
        .double
        .connections()
        .into_iter()
        .filter(|c| c.client_end.ifname == nsm_chain::OUTSIDE_IF)
        .map(|c| c.nse)
        .collect();
    assert_eq!(
        outside,
        ["webserver"],
        "the cnf's outside reached the web server"
    );
    let seen = chain.curl_through().unwrap_or_else(|e| panic!("{e}"));
    let client_ip: Ipv4Addr = CLIENT_IP.parse().unwrap();
    let expected = paired_address_in_maps(&chain.agent.pin_dir(), client_ip).unwrap();
    assert_eq!(
        seen,
        expected.to_string(),
        "the server sees the client's pool address"
    );
    assert_eq!(
        seen, "80.80.80.100",
        "the first inside host gets the pool's first address"
    );
}

const AGENT_ID: &str = nsm_chain::AGENT_SPIFFE_ID;
const NSMGR_ID: &str = nsm_chain::NSMGR_SPIFFE_ID;
const DAY: Duration = nsm_chain::SVID_LIFETIME;

/// Workload API doubles of one trust domain: the agent's and the NSM
/// manager double's (each workload has its own SVID, as under SPIRE).
type Spiffe = ChainSpiffe;

/// The agent in its default (secure) mode, its SVID from `spiffe`.
fn secure_agent(
    spiffe: &Spiffe,
    ns: &Netns,
    instance: &str,
    interfaces: &str,
    double: &NsmDouble,
) -> Agent {
    Agent::start(
        ns,
        instance,
        &config(instance, interfaces),
        &[
            "--nsm-socket",
            &double.url(),
            "--spiffe-endpoint-socket",
            &spiffe.agent.endpoint(),
        ],
    )
}

/// The `sub` claim of a path token.
fn subject(jwt: &str) -> String {
    token::decode(jwt)
        .unwrap_or_else(|e| panic!("token {jwt:?}: {e}"))
        .sub
}

/// The agent as a client over mTLS with path tokens: it connects, its
/// segment carries a token it signed for nsmgr (the double refuses
/// Requests whose tokens fail NSM's policies), and it accepts the reply
/// only after checking the returned path (the double's segments signed by
/// the nsmgr certificate it verified).
#[test]
fn secure_client_connects_over_mtls_with_tokens() {
    let p = unique_prefix("nss");
    let s = setup(&p);
    let (cnf, ep) = (Netns::new(&format!("{p}c")), Netns::new(&format!("{p}e")));
    let spiffe = Spiffe::start();
    let double = spiffe.double(&s.socket, Duration::from_secs(600));
    double.add_endpoint(
        "ep",
        "svc",
        &[("app", "nat44")],
        &ep.path(),
        "nse",
        Ipv4Addr::new(10, 75, 0, 0),
    );
    let agent = secure_agent(&spiffe, &cnf, &p, CLIENT_ITF, &double);
    let _log = LogOnPanic(&agent);
    poll(WAIT, "the config address on nsm1", || {
        let a = addresses(&cnf, "nsm1")?;
        a.contains("172.16.9.1/24").then_some(()).ok_or(a)
    });
    poll(WAIT, "ping across", || ping(&cnf, "10.75.0.2"));
    let conn = double.last(&format!("{p}-mesh")).unwrap();
    let path = conn.client.path.unwrap();
    let own = token::decode(&path.path_segments[0].token).unwrap();
    assert_eq!(own.sub, AGENT_ID);
    assert_eq!(own.aud, [NSMGR_ID]);
    assert_eq!(subject(&path.path_segments[1].token), NSMGR_ID);
    agent
        .wait_for_log_line(WAIT, |l| {
            l.contains("NSM security: mTLS") && l.contains(AGENT_ID)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// nsmgr presents an SVID from a CA outside the agent's trust bundle: the
/// agent refuses the TLS handshake, so no Request goes out, no veth
/// appears, and the interface stays Pending with the TLS failure.
#[test]
fn secure_client_refuses_an_untrusted_nsmgr_certificate() {
    let p = unique_prefix("nsu");
    let s = setup(&p);
    let (cnf, ep) = (Netns::new(&format!("{p}c")), Netns::new(&format!("{p}e")));
    let spiffe = Spiffe::start();
    spiffe.nsm.serve_untrusted(NSMGR_ID, DAY);
    let double = spiffe.double(&s.socket, Duration::from_secs(600));
    double.add_endpoint(
        "ep",
        "svc",
        &[("app", "nat44")],
        &ep.path(),
        "nse",
        Ipv4Addr::new(10, 76, 0, 0),
    );
    let agent = secure_agent(&spiffe, &cnf, &p, CLIENT_ITF, &double);
    let _log = LogOnPanic(&agent);
    agent
        .wait_for_log_line(WAIT, |l| {
            l.contains("pending")
                && l.contains("waiting for NSM connection to svc")
                && l.contains("TLS handshake")
                && l.contains(NSMGR_ID)
                && l.contains("does not verify")
        })
        .inspect(|l| eprintln!("refused: {l}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(double.requests(&format!("{p}-mesh")), 0);
    assert!(double.connections().is_empty());
    assert!(!has_link(&cnf, "nsm1"));
}

/// SPIRE has no SVID for the agent yet: the NSM interface waits, naming
/// the Workload API, and connects once the SVID is issued (no restart).
#[test]
fn secure_client_starts_when_the_first_svid_arrives() {
    let p = unique_prefix("nsl");
    let s = setup(&p);
    let (cnf, ep) = (Netns::new(&format!("{p}c")), Netns::new(&format!("{p}e")));
    let spiffe = Spiffe::without_agent_svid();
    let double = spiffe.double(&s.socket, Duration::from_secs(600));
    double.add_endpoint(
        "ep",
        "svc",
        &[],
        &ep.path(),
        "nse",
        Ipv4Addr::new(10, 78, 0, 0),
    );
    let agent = secure_agent(&spiffe, &cnf, &p, CLIENT_ITF, &double);
    let _log = LogOnPanic(&agent);
    agent
        .wait_for_log_line(WAIT, |l| {
            l.contains("pending")
                && l.contains("waiting for NSM connection to svc")
                && l.contains(&spiffe.agent.endpoint())
                && l.contains("no identity issued")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(double.requests(&format!("{p}-mesh")), 0);
    spiffe.agent.issue(AGENT_ID, DAY);
    poll(WAIT, "the config address on nsm1", || {
        let a = addresses(&cnf, "nsm1")?;
        a.contains("172.16.9.1/24").then_some(()).ok_or(a)
    });
}

/// nsmgr's token in the reply is forged, then expired: the agent's client
/// refuses the reply (the interface stays Pending with the policy that
/// failed), and takes the connection once the tokens are right again.
#[test]
fn secure_client_refuses_a_reply_with_a_forged_or_expired_token() {
    let p = unique_prefix("nsq");
    let s = setup(&p);
    let (cnf, ep) = (Netns::new(&format!("{p}c")), Netns::new(&format!("{p}e")));
    let spiffe = Spiffe::start();
    let double = spiffe.double(&s.socket, Duration::from_secs(600));
    double.add_endpoint(
        "ep",
        "svc",
        &[],
        &ep.path(),
        "nse",
        Ipv4Addr::new(10, 77, 0, 0),
    );
    double.set_reply_token_fault(TokenFault::Forged);
    let agent = secure_agent(&spiffe, &cnf, &p, CLIENT_ITF, &double);
    let _log = LogOnPanic(&agent);
    agent
        .wait_for_log_line(WAIT, |l| {
            l.contains("pending")
                && l.contains("the reply's path tokens are refused")
                && l.contains("bad signature")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    double.set_reply_token_fault(TokenFault::Expired);
    agent
        .wait_for_log_line(WAIT, |l| {
            l.contains("pending")
                && l.contains("the reply's path tokens are refused")
                && l.contains("expired")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let a = addresses(&cnf, "nsm1").unwrap_or_default();
    assert!(!a.contains("172.16.9.1/24"), "bound despite refusal: {a}");
    double.set_reply_token_fault(TokenFault::None);
    poll(WAIT, "the config address on nsm1", || {
        let a = addresses(&cnf, "nsm1")?;
        a.contains("172.16.9.1/24").then_some(()).ok_or(a)
    });
}

/// The agent as endpoint over mTLS: a Request forwarded with a correct
/// token is served; one whose forwarder token is signed by another key
/// than the forwarder's certificate, or is expired, is refused with
/// PermissionDenied and gets no interface.
#[test]
fn secure_endpoint_refuses_forged_and_expired_tokens() {
    let p = unique_prefix("nsf");
    let s = setup(&p);
    let ep = Netns::new(&format!("{p}e"));
    let (c1, c2) = (Netns::new(&format!("{p}1")), Netns::new(&format!("{p}2")));
    let spiffe = Spiffe::start();
    let double = spiffe.double(&s.socket, Duration::from_secs(600));
    let agent = secure_agent(&spiffe, &ep, &p, ENDPOINT_ITF, &double);
    let _log = LogOnPanic(&agent);
    let name = format!("{p}-svc");
    double.wait_for(WAIT, "the registration", |d| {
        d.endpoints().iter().any(|n| n.name == name)
    });
    let good = double
        .request("c1", "svc", &[("app", "web")], &c1.path(), "nsc0")
        .unwrap_or_else(|e| panic!("request: {e}"));
    let segs = good.path.unwrap().path_segments;
    assert_eq!(subject(&segs[3].token), AGENT_ID);
    poll(WAIT, "ping the endpoint", || ping(&c1, "10.80.0.1"));

    double.set_token_fault(TokenFault::Forged);
    let forged = double.request("c2", "svc", &[("app", "web")], &c2.path(), "nsc0");
    let e = forged.expect_err("a forged token is refused");
    assert!(
        e.contains("PermissionDenied") && e.contains("bad signature"),
        "{e}"
    );
    double.set_token_fault(TokenFault::Expired);
    let expired = double.request("c3", "svc", &[("app", "web")], &c2.path(), "nsc0");
    let e = expired.expect_err("an expired token is refused");
    assert!(
        e.contains("PermissionDenied") && e.contains("expired"),
        "{e}"
    );
    assert!(!has_link(&c2, "nsc0"));
    assert!(!has_link(&ep, "nsm1"));
    assert!(double.last("c2").is_none() && double.last("c3").is_none());

    // The endpoint still serves correct tokens (refusals broke nothing).
    double.set_token_fault(TokenFault::None);
    double
        .request("c2", "svc", &[("app", "web")], &c2.path(), "nsc0")
        .unwrap_or_else(|e| panic!("request after the refusals: {e}"));
    poll(WAIT, "the second client pings", || ping(&c2, "10.80.0.3"));
}

/// The SPIFFE Workload API socket does not exist: the NSM interface stays
/// Pending with the reason naming the socket, the agent keeps running and
/// the rest of the config applies.
#[test]
fn without_a_workload_api_nsm_waits_and_the_rest_applies() {
    let p = unique_prefix("nsv");
    let s = setup(&p);
    let cnf = Netns::new(&format!("{p}c"));
    let double = NsmDouble::start(&s.socket, Duration::from_secs(600));
    cnf.ip(&["link", "add", "k0", "type", "veth", "peer", "name", "k1"]);
    let missing = format!(
        "unix://{}/no-spire.sock",
        s.socket.parent().unwrap().display()
    );
    let agent = Agent::start(
        &cnf,
        &p,
        &config(
            &p,
            &format!(
                "{CLIENT_ITF}    - {{name: plain, kernel: {{hostIfName: k0}}, ipAddresses: [192.0.2.1/24]}}\n"
            ),
        ),
        &[
            "--nsm-socket",
            &double.url(),
            "--spiffe-endpoint-socket",
            &missing,
        ],
    );
    let _log = LogOnPanic(&agent);
    poll(WAIT, "the plain interface's address", || {
        let a = addresses(&cnf, "k0")?;
        a.contains("192.0.2.1/24").then_some(()).ok_or(a)
    });
    agent
        .wait_for_log_line(WAIT, |l| {
            l.contains("pending")
                && l.contains("waiting for NSM connection to svc")
                && l.contains("no-spire.sock")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(double.requests(&format!("{p}-mesh")), 0);
}
