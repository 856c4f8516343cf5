//! `cargo xtask demo --nsm`: the classic chain with the cnf's interfaces
//! from Network Service Mesh.
//!
//! The NSM manager is the double in tests/src/nsm_double (nsmgr and a
//! kernel-mechanism forwarder in one, speaking NSM v1 with grpcfd): the
//! only NSM manager that runs without a cluster. The topology, network
//! service (`cnf-nat-example`) and labels are the cnf-examples NAT44 demo's:
//! the client asks for the service with `app=client` and reaches the cnf's
//! inside (the agent as NSM endpoint, `app=nat44`); the cnf's outside (the
//! agent as NSM client, `app=nat44`) reaches the web server
//! (`app=webserver`). The chain is built by tests/src/nsm_chain.rs, which the
//! integration test uses too. NSM runs as it does in a cluster: mTLS with
//! SPIFFE X.509 SVIDs and signed path tokens on every hop, the SVIDs served
//! by Workload API doubles (SPIRE cannot run here) from one test CA.

use std::net::Ipv4Addr;

use anyhow::{Result, anyhow, bail};
use xcnf_tests::{
    agent::{abridged, paired_address_in_maps},
    netns::{CLIENT_IP, SERVER_IP},
    nsm_chain::{self, ChainSpiffe, NsmChain},
};

use crate::{
    demo::{check_interrupt, prepare, print_xcnfctl},
    setup,
};

const PREFIX: &str = "xcnf-demo-nsm";

pub fn run() -> Result<()> {
    prepare("cargo xtask demo --nsm")?;
    remove_leftovers();

    println!(
        "\n== topology: client {CLIENT_IP}/24 ~NSM~ cnf ({} 192.168.100.1 | {} 80.80.80.100) ~NSM~ webserver {SERVER_IP}",
        nsm_chain::INSIDE_IF,
        nsm_chain::OUTSIDE_IF
    );
    println!(
        "   network service {}: app=client -> app=nat44 (the cnf's inside, agent as NSM endpoint),",
        nsm_chain::SERVICE
    );
    println!("   app=nat44 -> app=webserver (the cnf's outside, agent as NSM client)");
    println!(
        "   NSM manager: the test double (tests/src/nsm_double); mTLS with SPIFFE SVIDs ({} for the agent, {} for the manager) and signed path tokens",
        nsm_chain::AGENT_SPIFFE_ID,
        nsm_chain::NSMGR_SPIFFE_ID
    );
    let spiffe = ChainSpiffe::start();
    println!(
        "\n== starting xcnf-agent in {PREFIX}-cnf with {}:",
        nsm_chain::CONFIG
    );
    println!("{}", nsm_chain::cnf_config(PREFIX).trim_end());
    let chain = NsmChain::start(
        PREFIX,
        &setup::root().join("target/debug/xcnf-http-echo"),
        &spiffe.security(),
        &[],
    );
    check_interrupt()?;

    println!("\n== NSM connections (the double's view)");
    for c in chain.double.connections() {
        println!(
            "{}: {} {} in {} -> endpoint {} ({} in {})",
            c.client.id,
            c.client.network_service,
            c.client_end.ifname,
            c.client_end.netns,
            c.nse,
            c.endpoint_end.ifname,
            c.endpoint_end.netns
        );
    }
    println!("\n== the client's path: who signed each hop's token");
    for seg in chain
        .client_conn
        .path
        .iter()
        .flat_map(|p| p.path_segments.iter())
    {
        let signer = xcnf_agent::nsm::security::token::decode(&seg.token)
            .map_or_else(|e| format!("no valid token ({e})"), |c| c.sub);
        println!("{:<28} {signer}", seg.name);
    }
    print_xcnfctl(&chain.cnf, &chain.instance, &["status"])?;
    check_interrupt()?;

    println!("\n== ping -c 3 {SERVER_IP} from client");
    let ping = chain
        .client
        .output("ping", &["-c", "3", "-i", "0.2", SERVER_IP]);
    print!("{}", String::from_utf8_lossy(&ping.stdout));
    check_interrupt()?;

    println!("\n== curl http://{SERVER_IP}:8080/ from client");
    let seen = chain.curl_through().map_err(|e| anyhow!("{e}"))?;
    println!("web server saw source address: {seen}");
    let client_ip: Ipv4Addr = CLIENT_IP.parse()?;
    let expected = paired_address_in_maps(&chain.agent.pin_dir(), client_ip)
        .map_err(|e| anyhow!("reading the pairing from the pinned maps: {e}"))?;
    println!("paired pooling gave {client_ip} the pool address {expected} (nat_hosts)");
    check_interrupt()?;

    print_xcnfctl(&chain.cnf, &chain.instance, &["nat", "sessions"])?;
    print_xcnfctl(&chain.cnf, &chain.instance, &["stats"])?;

    println!("\n== agent log");
    println!("{}", abridged(&chain.agent.log()));

    println!("\n== tearing down");
    drop(chain);
    if seen != expected.to_string() {
        bail!("the web server saw {seen}, not the client's pool address {expected}");
    }
    println!("done: the web server saw {seen}");
    Ok(())
}

/// A demo killed hard can leave its namespaces and pins.
fn remove_leftovers() {
    for ns in ["client", "cnf", "webserver"] {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &format!("{PREFIX}-{ns}")])
            .stderr(std::process::Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(xcnf_tests::agent::pin_dir(PREFIX));
}
