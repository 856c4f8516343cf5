//! The forwarder's data plane for the kernel mechanism: one veth pair with
//! an end in each namespace, named as the mechanisms say, addressed from the
//! IP context. Namespaces are reached by path (`/proc/<pid>/fd/<n>` of a
//! received descriptor, or `/run/netns/<name>`).

use std::process::Command;

use xcnf_proto::nsm::connectioncontext::IpContext;

/// One end of the pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    pub netns: String,
    pub ifname: String,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_in(netns: &str, args: &[&str]) -> Result<(), String> {
    run(Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .arg("--")
        .arg("ip")
        .args(args))
}

/// Creates the pair directly in the two namespaces (no name ever exists in
/// the double's own namespace, so parallel tests cannot clash), then sets
/// the client side's `src` addresses and routes and the endpoint side's
/// `dst` ones.
pub fn create(client: &End, endpoint: &End, ipc: &IpContext) -> Result<(), String> {
    run(Command::new("ip").args([
        "link",
        "add",
        &client.ifname,
        "netns",
        &client.netns,
        "type",
        "veth",
        "peer",
        "name",
        &endpoint.ifname,
        "netns",
        &endpoint.netns,
    ]))?;
    let sides = [
        (client, &ipc.src_ip_addrs, &ipc.src_routes),
        (endpoint, &ipc.dst_ip_addrs, &ipc.dst_routes),
    ];
    for (end, addrs, routes) in sides {
        for a in addrs {
            ip_in(&end.netns, &["addr", "add", a, "dev", &end.ifname])?;
        }
        ip_in(&end.netns, &["link", "set", &end.ifname, "up"])?;
        for r in routes {
            let mut args = vec!["route", "replace", r.prefix.as_str(), "dev", &end.ifname];
            if !r.next_hop.is_empty() {
                args.extend(["via", r.next_hop.as_str()]);
            }
            ip_in(&end.netns, &args)?;
        }
    }
    Ok(())
}

/// Whether the client end is still there.
pub fn exists(end: &End) -> bool {
    ip_in(&end.netns, &["link", "show", &end.ifname]).is_ok()
}

/// Deletes the pair (both ends go with one).
pub fn delete(client: &End) {
    let _ = ip_in(&client.netns, &["link", "del", &client.ifname]);
}
