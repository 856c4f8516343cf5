//! End-to-end forwarding through the cnf namespace with the real agent, real
//! eBPF programs, and real ping/curl traffic, in TC and XDP modes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{path::Path, process::Command};

use xcnf_tests::{
    agent::{Agent, chain_config, read_counters},
    netns::{CLIENT_IP, Chain, SERVER_IP, unique_prefix},
};

fn curl(chain: &Chain) -> String {
    let out = chain.client.run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            &format!("http://{SERVER_IP}:8080/"),
        ],
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Drives ping and curl through the chain with the given datapath and checks
/// that the eBPF program, not the kernel, forwarded them, and whether to the
/// veths' peers directly (`peer`) or through their transmit path.
fn forwards(tag: &str, datapath: &str, expect_hook: &str, peer: bool) {
    let prefix = unique_prefix(tag);
    let chain = Chain::new(&prefix);
    if datapath.contains("native") {
        chain.disable_peer_tx_checksum();
    }
    let agent = Agent::start(&chain.cnf, &prefix, &chain_config(&prefix, datapath), &[]);
    let _http = chain.start_http_server(Path::new(env!("CARGO_BIN_EXE_xcnf-http-echo")));

    // The right kind of link is pinned for both interfaces.
    for ifname in ["c0", "c1"] {
        let pin = agent
            .pin_dir()
            .join("links")
            .join(format!("{expect_hook}-{ifname}"));
        assert!(pin.exists(), "{} missing", pin.display());
    }

    let tx = |dev: &str| chain.cnf.link_stat(dev, "tx_packets");
    let tx_before = (tx("c0"), tx("c1"));
    chain.ping(5);
    assert_eq!(curl(&chain), CLIENT_IP, "server saw the client's address");
    let tx_sent = (tx("c0") - tx_before.0, tx("c1") - tx_before.1);

    let inside = chain.cnf.ifindex("c0");
    let outside = chain.cnf.ifindex("c1");
    let c_in = read_counters(&agent.pin_dir(), inside).expect("counters for c0");
    let c_out = read_counters(&agent.pin_dir(), outside).expect("counters for c1");
    // 5 echo requests + the TCP connection's client→server segments went
    // through c0; their replies came back through c1.
    assert!(c_in.forwarded.packets >= 5 + 3, "c0 counters: {c_in:#?}");
    assert!(c_out.forwarded.packets >= 5 + 3, "c1 counters: {c_out:#?}");
    for c in [c_in, c_out] {
        assert_eq!(
            c.rx.packets,
            c.forwarded.packets + c.passed.total() + c.dropped.total(),
            "every packet has exactly one outcome: {c:#?}"
        );
        assert_eq!(c.dropped.total(), 0, "{c:#?}");
    }
    if peer {
        // Both are veths whose peers are in other namespaces, so TC hands
        // forwarded packets to the peer directly (bpf_redirect_peer): they
        // never pass c0's or c1's own transmit path, which counts only what
        // the cnf's kernel sends itself (ARP).
        assert!(
            tx_sent.1 * 2 < c_in.forwarded.packets && tx_sent.0 * 2 < c_out.forwarded.packets,
            "transmitted (c0, c1) {tx_sent:?}, forwarded {} and {}",
            c_in.forwarded.packets,
            c_out.forwarded.packets
        );
    } else {
        // XDP's devmap redirect, and TC with peerRedirect off, transmit.
        assert!(
            tx_sent.1 >= c_in.forwarded.packets && tx_sent.0 >= c_out.forwarded.packets,
            "transmitted (c0, c1) {tx_sent:?}, forwarded {} and {}",
            c_in.forwarded.packets,
            c_out.forwarded.packets
        );
    }

    // bpftool prints the BTF field names of the pinned counters map.
    let dump = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(agent.pin_dir().join("counters"))
        .output()
        .expect("bpftool");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    for field in [
        "\"rx\"",
        "\"forwarded\"",
        "\"packets\"",
        "\"ttl_expired\"",
        "\"malformed\"",
    ] {
        assert!(text.contains(field), "bpftool dump lacks {field}: {text}");
    }
}

#[test]
fn tc_forwards_ping_and_curl() {
    forwards("tc", "{hook: auto}", "tc", true);
}

#[test]
fn tc_without_peer_redirect_transmits_on_the_cnf_interfaces() {
    forwards("tp", "{hook: tc, peerRedirect: false}", "tc", false);
}

#[test]
fn xdp_native_forwards_ping_and_curl() {
    forwards("xn", "{hook: xdp, xdpMode: native}", "xdp", false);
}

#[test]
fn xdp_generic_forwards_ping_and_curl() {
    forwards("xg", "{hook: xdp, xdpMode: generic}", "xdp", false);
}

/// TTL 1 packets are left to the kernel, which answers time-exceeded from the
/// cnf: traceroute keeps working through the datapath.
#[test]
fn ttl_expiry_is_answered_by_the_kernel() {
    let prefix = unique_prefix("ttl");
    let chain = Chain::new(&prefix);
    let agent = Agent::start(
        &chain.cnf,
        &prefix,
        &chain_config(&prefix, "{hook: tc}"),
        &[],
    );
    let out = chain
        .client
        .output("ping", &["-c", "1", "-t", "1", "-W", "2", SERVER_IP]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Time to live exceeded") && text.contains("192.168.100.1"),
        "no time-exceeded from the cnf: {text}"
    );
    let c = read_counters(&agent.pin_dir(), chain.cnf.ifindex("c0")).expect("counters");
    assert_eq!(c.passed.ttl_expired, 1, "{c:#?}");
}
