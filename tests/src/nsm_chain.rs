//! The classic NAT44 chain with the cnf's interfaces from NSM, against the
//! NSM manager double: the client and the web server are NSM peers, the cnf
//! an NSM endpoint (inside) and an NSM client (outside), with the network
//! service and labels of the cnf-examples NAT44 demo
//! (deploy/examples/nat44-nsm.yaml). Shared by tests/tests/nsm.rs and
//! `cargo xtask demo --nsm`.

use std::{
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

use xcnf_agent::config::Config;
use xcnf_proto::nsm::connection::Connection;

use crate::{
    agent::{Agent, Scratch, abridged},
    netns::{CLIENT_IP, Netns, Proc, SERVER_IP},
    nsm_double::NsmDouble,
    spiffe_double::{SpiffeDouble, TestCa},
    workspace_root,
};

/// How the chain's NSM runs.
pub enum ChainSecurity<'a> {
    /// `--nsm-insecure`: no mTLS, no path tokens (a lab without SPIRE).
    Insecure,
    /// As NSM runs: the manager double with mTLS and NSM's token policies,
    /// its SVID from `nsm`; the agent's from the Workload API at
    /// `agent_endpoint`.
    Spiffe {
        nsm: &'a SpiffeDouble,
        agent_endpoint: String,
    },
}

/// SPIFFE for the chain: Workload API doubles of one trust domain, one for
/// the agent and one for the NSM manager double (each workload its own SVID,
/// as under SPIRE), on a runtime of their own.
pub struct ChainSpiffe {
    pub agent: SpiffeDouble,
    pub nsm: SpiffeDouble,
    /// Runs the two Workload API servers; dropped after them.
    _rt: tokio::runtime::Runtime,
}

/// The identities the chain's workloads get.
pub const AGENT_SPIFFE_ID: &str = "spiffe://example.org/ns/cnf/sa/xcnf";
pub const NSMGR_SPIFFE_ID: &str = "spiffe://example.org/ns/nsm-system/sa/nsmgr";

/// How long the issued SVIDs last.
pub const SVID_LIFETIME: Duration = Duration::from_secs(24 * 3600);

impl ChainSpiffe {
    pub fn start() -> Self {
        let s = Self::without_agent_svid();
        s.agent.issue(AGENT_SPIFFE_ID, SVID_LIFETIME);
        s
    }

    /// The agent's Workload API has no identity for it yet (as while SPIRE
    /// has not attested the pod); the manager's has.
    pub fn without_agent_svid() -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
        let ca = std::sync::Arc::new(TestCa::new("example.org"));
        let (agent, nsm) = rt.block_on(async {
            (
                SpiffeDouble::with_ca(ca.clone()).await,
                SpiffeDouble::with_ca(ca).await,
            )
        });
        nsm.issue(NSMGR_SPIFFE_ID, SVID_LIFETIME);
        Self {
            agent,
            nsm,
            _rt: rt,
        }
    }

    /// The NSM manager double with mTLS and tokens, its SVID from `nsm`.
    pub fn double(&self, socket: &Path, expiry: Duration) -> NsmDouble {
        NsmDouble::start_secure(socket, expiry, &self.nsm)
    }

    pub fn security(&self) -> ChainSecurity<'_> {
        ChainSecurity::Spiffe {
            nsm: &self.nsm,
            agent_endpoint: self.agent.endpoint(),
        }
    }
}

/// The cnf's config, relative to the workspace root.
pub const CONFIG: &str = "deploy/examples/nat44-nsm.yaml";
/// The one network service of the classic example.
pub const SERVICE: &str = "cnf-nat-example";
/// What the client asks for and the web server advertises.
pub const CLIENT_LABELS: &[(&str, &str)] = &[("app", "client")];
pub const WEBSERVER_LABELS: &[(&str, &str)] = &[("app", "webserver")];
/// The cnf's labels, as its outside requests and its inside advertises.
pub const NAT_LABELS: &[(&str, &str)] = &[("app", "nat44")];
/// The cnf's interfaces, as the example names them.
pub const INSIDE_IF: &str = "nsm-in0";
pub const OUTSIDE_IF: &str = "nsm-out0";
/// The client's NSM interface and the web server's.
pub const CLIENT_IF: &str = "nsc0";
pub const WEBSERVER_IF: &str = "nse0";
/// The built-in endpoint hands out pair `n` as base+4n+1 (the cnf's side)
/// and base+4n+2 (its own): the web server's first pair puts it at
/// 80.80.80.80, as in the classic example.
const WEBSERVER_BASE: Ipv4Addr = Ipv4Addr::new(80, 80, 80, 78);
/// Guards against a hang, not a timing assertion.
const WAIT: Duration = Duration::from_secs(60);

/// The running chain. Fields drop in order: the agent first (it closes its
/// connections and withdraws its registration), then the web server, the
/// double (which deletes the pairs it made), the namespaces, the socket.
pub struct NsmChain {
    pub agent: Agent,
    pub http: Proc,
    pub double: NsmDouble,
    /// The client's connection as the double returned it.
    pub client_conn: Connection,
    pub client: Netns,
    pub cnf: Netns,
    pub web: Netns,
    pub instance: String,
    _scratch: Scratch,
}

/// The cnf config of the example, under `instance` (unique per test).
pub fn cnf_config(instance: &str) -> String {
    let path = workspace_root().join(CONFIG);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut cfg = Config::parse(&text).unwrap_or_else(|e| panic!("{CONFIG}: {e}"));
    instance.clone_into(&mut cfg.metadata.name);
    serde_yaml::to_string(&cfg).unwrap_or_else(|e| panic!("{CONFIG}: {e}"))
}

impl NsmChain {
    /// Builds the chain with namespaces `<prefix>-client`, `-cnf` and
    /// `-webserver`, instance `prefix`, NSM secured as `security` says, the
    /// agent run with `agent_args` too, and `http_echo` serving on the web
    /// server; returns once the client's connection stands and both of the
    /// cnf's datapaths are attached.
    pub fn start(
        prefix: &str,
        http_echo: &Path,
        security: &ChainSecurity<'_>,
        agent_args: &[&str],
    ) -> Self {
        let scratch = Scratch::new(&format!("{prefix}-nsm"));
        let socket = scratch.path().join("nsm.io.sock");
        let client = Netns::new(&format!("{prefix}-client"));
        let cnf = Netns::new(&format!("{prefix}-cnf"));
        let web = Netns::new(&format!("{prefix}-webserver"));
        cnf.sysctl("net.ipv4.ip_forward", "1");

        let double = match security {
            ChainSecurity::Insecure => NsmDouble::start(&socket, Duration::from_secs(600)),
            ChainSecurity::Spiffe { nsm, .. } => {
                NsmDouble::start_secure(&socket, Duration::from_secs(600), nsm)
            }
        };
        // The NetworkService resource of the classic example.
        double.add_service(
            SERVICE,
            &[(CLIENT_LABELS, NAT_LABELS), (NAT_LABELS, WEBSERVER_LABELS)],
        );
        double.add_endpoint(
            "webserver",
            SERVICE,
            WEBSERVER_LABELS,
            &web.path(),
            "nse",
            WEBSERVER_BASE,
        );

        let url = double.url();
        let mut args = vec!["--nsm-socket", url.as_str()];
        match security {
            ChainSecurity::Insecure => args.push("--nsm-insecure"),
            ChainSecurity::Spiffe { agent_endpoint, .. } => {
                args.extend(["--spiffe-endpoint-socket", agent_endpoint.as_str()]);
            }
        }
        args.extend_from_slice(agent_args);
        let agent = Agent::start(&cnf, prefix, &cnf_config(prefix), &args);
        let log = || abridged(&agent.log());

        let registration = format!("{prefix}-inside");
        double.wait_for(WAIT, "the cnf's registration", |d| {
            d.endpoints().iter().any(|n| n.name == registration)
        });
        poll(WAIT, "the cnf's outside connection", &log, || {
            has_address(&cnf, OUTSIDE_IF, "80.80.80.100/24")
        });
        // The classic web server had 80.80.80.80/24; the built-in endpoint
        // gives /32s, so the outside subnet (the pool) is routed here.
        web.ip(&["route", "add", "80.80.80.0/24", "dev", WEBSERVER_IF]);

        let client_conn = double
            .request("client", SERVICE, CLIENT_LABELS, &client.path(), CLIENT_IF)
            .unwrap_or_else(|e| panic!("the client's request: {e}\n--- agent log ---\n{}", log()));
        // No IPAM on the cnf's inside: the client brings its own address and
        // the classic client's route to the outside.
        client.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", CLIENT_IF]);
        client.ip(&["route", "add", "80.80.80.0/24", "via", "192.168.100.1"]);

        let http = web.start_http_echo(http_echo, &format!("{SERVER_IP}:8080"));
        poll(WAIT, "both datapaths attached", &log, || {
            let (i, o) = (
                cnf.attached_programs(INSIDE_IF),
                cnf.attached_programs(OUTSIDE_IF),
            );
            (!i.is_empty() && !o.is_empty())
                .then_some(())
                .ok_or(format!("{INSIDE_IF} {i:?}, {OUTSIDE_IF} {o:?}"))
        });
        Self {
            agent,
            http,
            double,
            client_conn,
            client,
            cnf,
            web,
            instance: prefix.to_owned(),
            _scratch: scratch,
        }
    }

    /// curl from the client to the web server until it answers (the first
    /// packets may still meet neighbour resolution): the source address the
    /// web server saw.
    pub fn curl_through(&self) -> Result<String, String> {
        let url = format!("http://{SERVER_IP}:8080/");
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client.curl(&url, &["--max-time", "2"]) {
                Ok(body) if !body.is_empty() => return Ok(body),
                Ok(_) if Instant::now() >= deadline => return Err(format!("{url}: empty answer")),
                Err(e) if Instant::now() >= deadline => return Err(e),
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

fn has_address(ns: &Netns, ifname: &str, addr: &str) -> Result<(), String> {
    let out = ns.output("ip", &["-o", "-4", "addr", "show", "dev", ifname]);
    let text = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && text.contains(addr) {
        Ok(())
    } else {
        Err(format!(
            "{ifname}: {}{}",
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Retries `f` until it succeeds; panics with its last error and `log`
/// after `timeout`.
fn poll(
    timeout: Duration,
    what: &str,
    log: &dyn Fn() -> String,
    mut f: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => {
                panic!(
                    "timed out waiting for {what}: {e}\n--- agent log ---\n{}",
                    log()
                )
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}
