//! `xcnf-agent --kubernetes` on the NAT44 chain, configured through its
//! `CNFConfiguration` on the API-server double (which listens inside the
//! cnf's namespace, where the agent runs): the resource's spec is applied
//! and its status reported, edits apply live, an invalid spec is refused in
//! the status while the running config keeps forwarding, and the agent
//! rides out a compaction (410 Gone, re-list) and an API-server restart.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{path::Path, time::Duration};

use serde_json::Value;
use xcnf_tests::{
    agent::{Agent, Nat44, ReportOnPanic, Scratch, nat_chain_config},
    kube_double::KubeDouble,
    netns::{CLIENT_IP, CNF_OUTSIDE_IP, Chain, ChainSpec, SERVER_IP, unique_prefix},
};

const HTTP_ECHO: &str = env!("CARGO_BIN_EXE_xcnf-http-echo");
const TC: &str = "{hook: tc}";
/// Guards against a hang, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(60);

fn http_echo() -> &'static Path {
    Path::new(HTTP_ECHO)
}

/// A pool of just the cnf's own outside address, so the translated source
/// is known.
fn own_address_pool() -> Nat44 {
    Nat44::default().pool(CNF_OUTSIDE_IP, CNF_OUTSIDE_IP, None)
}

/// The resource for the chain's cnf with `nat`, as a user would write it.
fn resource(name: &str, nat: &Nat44) -> Value {
    serde_yaml::from_str(&nat_chain_config(name, TC, nat))
        .unwrap_or_else(|e| panic!("test resource: {e}"))
}

fn spec(name: &str, nat: &Nat44) -> Value {
    resource(name, nat)["spec"].clone()
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// Waits until the resource's status describes its current generation with
/// `Ready` = `ready`, and returns the resource.
fn wait_ready(double: &KubeDouble, name: &str, ready: &str) -> Value {
    double
        .wait_for(name, PATIENCE, |o| {
            o["status"]["observedGeneration"] == o["metadata"]["generation"]
                && condition(o, "Ready").is_some_and(|c| c["status"] == ready)
        })
        .unwrap_or_else(|e| panic!("waiting for Ready={ready}: {e}"))
}

/// The client's request through the NAT: the server sees the pool address.
fn assert_translated(chain: &Chain, what: &str) {
    let seen = chain
        .client
        .curl(&format!("http://{SERVER_IP}:8080/"), &[])
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(seen, CNF_OUTSIDE_IP, "{what}: the server saw {seen}");
}

/// The server's request to the static mapping reaches the client.
fn assert_forwarded(chain: &Chain, what: &str) {
    let seen = chain
        .server
        .curl(&format!("http://{CNF_OUTSIDE_IP}:8080/"), &[])
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(seen, SERVER_IP, "{what}: the client saw {seen}");
}

fn lists(double: &KubeDouble) -> usize {
    double
        .requests()
        .iter()
        .filter(|r| {
            r.starts_with("GET ") && r.contains("/cnfconfigurations") && !r.contains("watch=")
        })
        .count()
}

#[test]
fn agent_follows_its_cnfconfiguration_through_the_api_server() {
    let prefix = unique_prefix("k8s");
    let chain = Chain::build(&prefix, &ChainSpec::nat());
    let double = KubeDouble::start_in_netns(&chain.cnf.path());
    let scratch = Scratch::new(&format!("{prefix}-kube"));
    let kubeconfig = scratch.path().join("kubeconfig");
    double.kubeconfig(&kubeconfig);
    let name = prefix.as_str();
    double.create(resource(name, &own_address_pool()));

    let agent = Agent::start_kubernetes(&chain.cnf, &prefix, &kubeconfig, name, &[]);
    let _report = ReportOnPanic {
        agent: &agent,
        cnf: &chain.cnf,
        ifnames: vec!["c0", "c1"],
        namespaces: chain.namespaces(),
    };
    let _server_http = chain.server.start_http_echo(http_echo(), "0.0.0.0:8080");
    let _client_http = chain.client.start_http_echo(http_echo(), "0.0.0.0:80");

    // The resource's spec is in force and reported.
    let first = wait_ready(&double, name, "True");
    assert_eq!(first["metadata"]["generation"], 1);
    assert_translated(&chain, "generation 1");

    // An edit applies live: a static mapping appears.
    let with_mapping = own_address_pool().static_mapping(
        "tcp",
        &format!("{CNF_OUTSIDE_IP}:8080"),
        &format!("{CLIENT_IP}:80"),
    );
    double.update_spec(name, spec(name, &with_mapping));
    let second = wait_ready(&double, name, "True");
    assert_eq!(second["metadata"]["generation"], 2);
    assert_forwarded(&chain, "generation 2");

    // An invalid spec is refused with its field path; generation 2 stays.
    let invalid = with_mapping.clone().inside("lan");
    double.update_spec(name, spec(name, &invalid));
    let refused = wait_ready(&double, name, "False");
    assert_eq!(refused["metadata"]["generation"], 3);
    let message = condition(&refused, "Ready")
        .and_then(|c| c["message"].as_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("spec.nat44.inside[1]"),
        "the Ready message does not name the field: {message}"
    );
    assert_translated(&chain, "with an invalid spec refused");
    assert_forwarded(&chain, "with an invalid spec refused");

    // Fixed again.
    double.update_spec(
        name,
        spec(name, &with_mapping.clone().timeout("udp", "60s")),
    );
    wait_ready(&double, name, "True");

    // Compaction: the agent's watch ends, its resume gets 410 Expired, and
    // it re-lists; an edit made after that still applies.
    let lists_before = lists(&double);
    double.compact();
    double.update_spec(name, spec(name, &own_address_pool()));
    let after_compaction = wait_ready(&double, name, "True");
    assert_eq!(after_compaction["metadata"]["generation"], 5);
    assert!(
        lists(&double) > lists_before,
        "the agent did not re-list after compaction: {:#?}",
        double.requests()
    );
    assert_translated(&chain, "after compaction");
    assert!(
        chain
            .server
            .curl(
                &format!("http://{CNF_OUTSIDE_IP}:8080/"),
                &["--max-time", "2"]
            )
            .is_err(),
        "the static mapping removed in generation 5 still forwards"
    );

    // An API-server restart: an edit made while it is down applies once
    // the agent is back in touch.
    double.restart_for(Duration::from_secs(2));
    double.update_spec(name, spec(name, &with_mapping));
    let after_restart = wait_ready(&double, name, "True");
    assert_eq!(after_restart["metadata"]["generation"], 6);
    assert_forwarded(&chain, "after the API-server restart");
    assert_translated(&chain, "after the API-server restart");
}
