//! The agent's netlink layer against the real kernel, each test in its own
//! namespace: links, IPv4 addresses, routes and neighbours are changed
//! through `xcnf_agent::linux` and checked with `ip -j`, the error variants a
//! reconciler branches on come back for the right causes, and change
//! notifications arrive, survive a burst and report an overrun.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail by panicking"
)]

use std::{
    future::Future,
    net::Ipv4Addr,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use xcnf_agent::{
    config::Ipv4Prefix,
    linux::{
        Address, Events, Iface, LinuxError, LinuxEvent, NeighborState, Netlink, Route, XCNF_RTPROT,
    },
};
use xcnf_tests::netns::{Netns, run, unique_prefix};

/// Long enough that only a broken subscription hits it; never a timing check.
const EVENT_DEADLINE: Duration = Duration::from_secs(60);

/// An ifindex no test namespace reaches.
const NO_IFINDEX: u32 = 999_999;

/// Runs `f` (given the namespace's name) on a current-thread runtime on a
/// thread inside `ns`, so the netlink sockets it opens belong to `ns`.
/// While `f` runs a blocking command the runtime polls nothing else, which
/// lets a test pile notifications up in the socket on purpose.
fn in_ns<T, Fut>(ns: &Netns, f: impl FnOnce(String) -> Fut + Send + 'static) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T>,
{
    let name = ns.name().to_owned();
    ns.within(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f(name))
    })
}

/// `ip -n ns args...`, asserting success.
fn ip(ns: &str, args: &[&str]) {
    run(Command::new("ip").arg("-n").arg(ns).args(args));
}

/// `ip -n ns -j args...`, parsed.
fn ip_json(ns: &str, args: &[&str]) -> Vec<Value> {
    let out = run(Command::new("ip").args(["-n", ns, "-j"]).args(args));
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return Vec::new();
    }
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ip -j {args:?}: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn ifindex(ns: &str, ifname: &str) -> u32 {
    let links = ip_json(ns, &["link", "show", "dev", ifname]);
    links[0]["ifindex"].as_u64().unwrap() as u32
}

fn veth(ns: &str, a: &str, b: &str) {
    ip(ns, &["link", "add", a, "type", "veth", "peer", "name", b]);
}

fn prefix(s: &str) -> Ipv4Prefix {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The routes `ip` shows for `dst` in the main table.
fn ip_routes(ns: &str, dst: &str) -> Vec<Value> {
    ip_json(ns, &["route", "show", "table", "main"])
        .into_iter()
        .filter(|r| r["dst"] == dst)
        .collect()
}

/// Waits for the first event `pick` accepts, failing on an overrun (which
/// would mean the test lost what it checks) or a dead subscription.
async fn wait_for<T>(events: &mut Events, mut pick: impl FnMut(&LinuxEvent) -> Option<T>) -> T {
    let deadline = Instant::now() + EVENT_DEADLINE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Some(LinuxEvent::Overrun)) => panic!("overrun while waiting; seen {seen:?}"),
            Ok(Some(ev)) => {
                if let Some(t) = pick(&ev) {
                    return t;
                }
                seen.push(ev);
            }
            Ok(None) => panic!("the event subscription ended; seen {seen:?}"),
            Err(_) => panic!("no matching event within {EVENT_DEADLINE:?}; seen {seen:?}"),
        }
    }
}

#[test]
fn links_up_down_and_mtu() {
    let ns = Netns::new(&unique_prefix("l3link"));
    in_ns(&ns, |ns| async move {
        veth(&ns, "a0", "a1");
        let (a0, a1) = (ifindex(&ns, "a0"), ifindex(&ns, "a1"));
        let nl = Netlink::connect().unwrap();

        let links = nl.links().await.unwrap();
        let mut names: Vec<(String, u32)> =
            links.iter().map(|l| (l.name.clone(), l.index)).collect();
        names.sort();
        let mut want: Vec<(String, u32)> = ip_json(&ns, &["link", "show"])
            .iter()
            .map(|l| {
                (
                    l["ifname"].as_str().unwrap().to_owned(),
                    l["ifindex"].as_u64().unwrap() as u32,
                )
            })
            .collect();
        want.sort();
        assert_eq!(names, want);

        let by_name = nl.link("a0").await.unwrap();
        let by_index = nl.link_by_index(a0).await.unwrap();
        assert_eq!(by_name, by_index);
        assert_eq!(by_name.index, a0);
        assert!(by_name.is_veth() && !by_name.up);
        let mac = ip_json(&ns, &["link", "show", "dev", "a0"])[0]["address"]
            .as_str()
            .unwrap()
            .to_owned();
        let ours = by_name.mac.map(|b| format!("{b:02x}")).join(":");
        assert_eq!(ours, mac);

        let flags = |dev: &str| -> Vec<String> {
            ip_json(&ns, &["link", "show", "dev", dev])[0]["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_str().unwrap().to_owned())
                .collect()
        };
        nl.set_up(a0, true).await.unwrap();
        assert!(flags("a0").contains(&"UP".to_owned()));
        assert!(!flags("a1").contains(&"UP".to_owned()), "only a0 changed");
        assert!(nl.link_by_index(a0).await.unwrap().up);
        nl.set_up(a0, false).await.unwrap();
        assert!(!flags("a0").contains(&"UP".to_owned()));

        nl.set_mtu(a1, 1400).await.unwrap();
        let mtu = ip_json(&ns, &["link", "show", "dev", "a1"])[0]["mtu"].as_u64();
        assert_eq!(mtu, Some(1400));
        assert_eq!(nl.link_by_index(a1).await.unwrap().mtu, 1400);

        match nl.link_by_index(NO_IFINDEX).await {
            Err(LinuxError::NoSuchInterface {
                iface: Iface::Index(NO_IFINDEX),
            }) => {}
            other => panic!("link_by_index({NO_IFINDEX}): {other:?}"),
        }
        match nl.link("nosuch0").await {
            Err(LinuxError::NoSuchInterface {
                iface: Iface::Name(n),
            }) => assert_eq!(n, "nosuch0"),
            other => panic!("link(nosuch0): {other:?}"),
        }
        for res in [
            nl.set_up(NO_IFINDEX, true).await,
            nl.set_mtu(NO_IFINDEX, 1400).await,
        ] {
            let e = res.unwrap_err();
            assert!(matches!(e, LinuxError::NoSuchInterface { .. }), "{e:?}");
            assert!(e.to_string().contains(&NO_IFINDEX.to_string()), "{e}");
        }
        // An MTU the device refuses is a plain kernel error naming the change.
        let e = nl.set_mtu(a1, 10).await.unwrap_err();
        assert!(matches!(e, LinuxError::Kernel { .. }), "{e:?}");
        assert!(
            e.to_string()
                .contains(&format!("MTU of ifindex {a1} to 10")),
            "{e}"
        );
    });
}

#[test]
fn ipv4_addresses() {
    let ns = Netns::new(&unique_prefix("l3addr"));
    in_ns(&ns, |ns| async move {
        veth(&ns, "b0", "b1");
        let b0 = ifindex(&ns, "b0");
        let nl = Netlink::connect().unwrap();
        let p = prefix("10.1.0.1/24");

        nl.add_address(b0, p).await.unwrap();
        let info = &ip_json(&ns, &["-4", "addr", "show", "dev", "b0"])[0]["addr_info"];
        assert_eq!(info[0]["local"], "10.1.0.1");
        assert_eq!(info[0]["prefixlen"], 24);
        assert_eq!(info[0]["broadcast"], "10.1.0.255");
        assert_eq!(
            nl.addresses(Some(b0)).await.unwrap(),
            vec![Address {
                index: b0,
                prefix: p
            }]
        );
        let all = nl.addresses(None).await.unwrap();
        assert!(all.contains(&Address {
            index: b0,
            prefix: p
        }));
        assert!(
            all.iter().any(|a| a.prefix == prefix("127.0.0.1/8")),
            "lo's address is listed too: {all:?}"
        );

        // A second address on the same subnet, and a /32 (no broadcast).
        nl.add_address(b0, prefix("10.1.0.2/24")).await.unwrap();
        nl.add_address(b0, prefix("192.0.2.9/32")).await.unwrap();
        let mut ours: Vec<String> = nl
            .addresses(Some(b0))
            .await
            .unwrap()
            .iter()
            .map(|a| format!("{}/{}", a.prefix.addr, a.prefix.len))
            .collect();
        ours.sort();
        assert_eq!(ours, ["10.1.0.1/24", "10.1.0.2/24", "192.0.2.9/32"]);

        let e = nl.add_address(b0, p).await.unwrap_err();
        assert!(matches!(e, LinuxError::Exists { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("10.1.0.1/24") && msg.contains(&format!("ifindex {b0}")),
            "{msg}"
        );

        nl.del_address(b0, p).await.unwrap();
        let left: Vec<Value> = ip_json(&ns, &["-4", "addr", "show", "dev", "b0"])[0]["addr_info"]
            .as_array()
            .unwrap()
            .clone();
        // The kernel takes the subnet's secondary 10.1.0.2 with its primary
        // (net.ipv4.conf.*.promote_secondaries is off by default).
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(left[0]["local"], "192.0.2.9");
        let e = nl.del_address(b0, p).await.unwrap_err();
        assert!(matches!(e, LinuxError::NotFound { .. }), "{e:?}");
        assert!(
            e.to_string().contains("deleting address 10.1.0.1/24"),
            "{e}"
        );

        let e = nl
            .add_address(NO_IFINDEX, prefix("10.7.0.1/24"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                LinuxError::NoSuchInterface {
                    iface: Iface::Index(NO_IFINDEX)
                }
            ),
            "{e:?}"
        );
    });
}

#[test]
fn ipv4_routes() {
    let ns = Netns::new(&unique_prefix("l3route"));
    in_ns(&ns, |ns| async move {
        veth(&ns, "r0", "r1");
        let r0 = ifindex(&ns, "r0");
        let nl = Netlink::connect().unwrap();
        nl.add_address(r0, prefix("10.2.0.1/24")).await.unwrap();
        nl.set_up(r0, true).await.unwrap();

        let via = Route::xcnf(v4("10.9.0.0"), 16, Some(v4("10.2.0.254")), Some(r0), 50);
        nl.add_route(&via).await.unwrap();
        let shown = ip_routes(&ns, "10.9.0.0/16");
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown[0]["gateway"], "10.2.0.254");
        assert_eq!(shown[0]["dev"], "r0");
        assert_eq!(shown[0]["metric"], 50);
        assert_eq!(shown[0]["protocol"], XCNF_RTPROT.to_string());

        // Straight out of the interface, no gateway, default metric.
        let direct = Route::xcnf(v4("10.8.0.0"), 24, None, Some(r0), 0);
        nl.add_route(&direct).await.unwrap();
        let shown = ip_routes(&ns, "10.8.0.0/24");
        assert_eq!(shown[0]["scope"], "link", "{shown:?}");
        assert_eq!(shown[0]["dev"], "r0");

        let routes = nl.routes().await.unwrap();
        assert!(routes.contains(&via), "{routes:?}");
        assert!(routes.contains(&direct), "{routes:?}");
        let connected = routes
            .iter()
            .find(|r| r.dst == v4("10.2.0.0") && r.len == 24)
            .unwrap_or_else(|| panic!("no connected route in {routes:?}"));
        assert_eq!(connected.protocol, 2, "the kernel's own (RTPROT_KERNEL)");
        assert_eq!(connected.oif, Some(r0));
        assert!(
            routes.iter().all(|r| r.dst != v4("10.2.0.1")),
            "local-table routes are not listed: {routes:?}"
        );

        let e = nl.add_route(&via).await.unwrap_err();
        assert!(matches!(e, LinuxError::Exists { .. }), "{e:?}");
        assert!(e.to_string().contains("10.9.0.0/16 via 10.2.0.254"), "{e}");

        // Replace swaps the gateway of the route with that metric in place.
        let moved = Route {
            via: Some(v4("10.2.0.253")),
            ..via
        };
        nl.replace_route(&moved).await.unwrap();
        let shown = ip_routes(&ns, "10.9.0.0/16");
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown[0]["gateway"], "10.2.0.253");
        // Replace also creates.
        let fresh = Route::xcnf(v4("10.6.0.0"), 16, Some(v4("10.2.0.254")), None, 7);
        nl.replace_route(&fresh).await.unwrap();
        assert_eq!(ip_routes(&ns, "10.6.0.0/16")[0]["metric"], 7);

        // Ownership: deleting "our" copy of the kernel's connected route
        // finds nothing, so the agent cannot remove routes it did not make.
        let theirs = Route {
            protocol: XCNF_RTPROT,
            ..*connected
        };
        let e = nl.del_route(&theirs).await.unwrap_err();
        assert!(matches!(e, LinuxError::NotFound { .. }), "{e:?}");
        assert_eq!(ip_routes(&ns, "10.2.0.0/24").len(), 1);

        nl.del_route(&moved).await.unwrap();
        assert!(ip_routes(&ns, "10.9.0.0/16").is_empty());
        let e = nl.del_route(&moved).await.unwrap_err();
        assert!(matches!(e, LinuxError::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("deleting route 10.9.0.0/16"), "{e}");

        let far = Route::xcnf(v4("10.5.0.0"), 16, Some(v4("192.0.2.1")), None, 0);
        let e = nl.add_route(&far).await.unwrap_err();
        assert!(matches!(e, LinuxError::Unreachable { .. }), "{e:?}");
        assert!(e.to_string().contains("via 192.0.2.1"), "{e}");
        assert!(ip_routes(&ns, "10.5.0.0/16").is_empty());

        let nowhere = Route::xcnf(v4("10.4.0.0"), 16, None, Some(NO_IFINDEX), 0);
        let e = nl.add_route(&nowhere).await.unwrap_err();
        assert!(
            matches!(
                e,
                LinuxError::NoSuchInterface {
                    iface: Iface::Index(NO_IFINDEX)
                }
            ),
            "{e:?}"
        );

        // Host bits in the destination are bad input, refused as such.
        let sloppy = Route::xcnf(v4("10.3.0.1"), 16, None, Some(r0), 0);
        let e = nl.add_route(&sloppy).await.unwrap_err();
        assert!(matches!(e, LinuxError::Kernel { .. }), "{e:?}");
        assert!(e.to_string().contains("adding route 10.3.0.1/16"), "{e}");
    });
}

#[test]
fn permanent_neighbors() {
    let ns = Netns::new(&unique_prefix("l3neigh"));
    in_ns(&ns, |ns| async move {
        veth(&ns, "n0", "n1");
        let n0 = ifindex(&ns, "n0");
        let nl = Netlink::connect().unwrap();
        nl.add_address(n0, prefix("10.3.0.1/24")).await.unwrap();
        nl.set_up(n0, true).await.unwrap();
        let ip5 = v4("10.3.0.5");

        nl.set_neighbor(n0, ip5, [2, 0, 0, 0, 0, 5]).await.unwrap();
        let shown = ip_json(&ns, &["-4", "neigh", "show", "dev", "n0"]);
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown[0]["dst"], "10.3.0.5");
        assert_eq!(shown[0]["lladdr"], "02:00:00:00:00:05");
        assert_eq!(shown[0]["state"][0], "PERMANENT");

        // Setting again replaces the MAC rather than failing or duplicating.
        nl.set_neighbor(n0, ip5, [2, 0, 0, 0, 0, 6]).await.unwrap();
        let shown = ip_json(&ns, &["-4", "neigh", "show", "dev", "n0"]);
        assert_eq!(shown.len(), 1, "{shown:?}");
        assert_eq!(shown[0]["lladdr"], "02:00:00:00:00:06");
        let ours = nl.neighbors(Some(n0)).await.unwrap();
        assert_eq!(ours.len(), 1, "{ours:?}");
        assert_eq!(ours[0].ip, ip5);
        assert_eq!(ours[0].mac, Some([2, 0, 0, 0, 0, 6]));
        assert_eq!(ours[0].state, NeighborState::Permanent);
        assert!(nl.neighbors(None).await.unwrap().contains(&ours[0]));

        nl.del_neighbor(n0, ip5).await.unwrap();
        assert!(ip_json(&ns, &["-4", "neigh", "show", "dev", "n0"]).is_empty());
        let e = nl.del_neighbor(n0, ip5).await.unwrap_err();
        assert!(matches!(e, LinuxError::NotFound { .. }), "{e:?}");
        assert!(e.to_string().contains("10.3.0.5"), "{e}");

        let e = nl
            .set_neighbor(NO_IFINDEX, ip5, [2, 0, 0, 0, 0, 5])
            .await
            .unwrap_err();
        assert!(matches!(e, LinuxError::NoSuchInterface { .. }), "{e:?}");
    });
}

#[test]
fn events_for_links_addresses_and_routes() {
    let ns = Netns::new(&unique_prefix("l3ev"));
    in_ns(&ns, |ns| async move {
        let mut events = Events::subscribe().unwrap();
        let nl = Netlink::connect().unwrap();

        // Created behind the agent's back, as NSM would.
        veth(&ns, "e0", "e1");
        let e0 = wait_for(&mut events, |ev| match ev {
            LinuxEvent::Link {
                index,
                name,
                removed: false,
                ..
            } if name == "e0" => Some(*index),
            _ => None,
        })
        .await;
        assert_eq!(e0, ifindex(&ns, "e0"));

        nl.add_address(e0, prefix("10.4.0.1/24")).await.unwrap();
        wait_for(&mut events, |ev| {
            (*ev == LinuxEvent::Address {
                index: e0,
                prefix: prefix("10.4.0.1/24"),
                removed: false,
            })
            .then_some(())
        })
        .await;

        ip(&ns, &["link", "set", "e0", "up"]);
        wait_for(&mut events, |ev| match ev {
            LinuxEvent::Link {
                index, up: true, ..
            } if *index == e0 => Some(()),
            _ => None,
        })
        .await;

        let route = Route::xcnf(v4("10.44.0.0"), 16, Some(v4("10.4.0.2")), Some(e0), 9);
        nl.add_route(&route).await.unwrap();
        wait_for(&mut events, |ev| {
            (*ev == LinuxEvent::Route {
                route,
                removed: false,
            })
            .then_some(())
        })
        .await;

        ip(&ns, &["addr", "del", "10.4.0.1/24", "dev", "e0"]);
        wait_for(&mut events, |ev| {
            (*ev == LinuxEvent::Address {
                index: e0,
                prefix: prefix("10.4.0.1/24"),
                removed: true,
            })
            .then_some(())
        })
        .await;

        ip(&ns, &["link", "del", "e0"]);
        wait_for(&mut events, |ev| match ev {
            LinuxEvent::Link {
                index,
                removed: true,
                ..
            } if *index == e0 => Some(()),
            _ => None,
        })
        .await;
    });
}

/// `ip -batch` input creating `pairs` veth pairs `<tag>N`/`<tag>pN`.
fn veth_batch(ns: &str, tag: &str, pairs: usize) {
    let path = std::env::temp_dir().join(format!("{ns}-{tag}.batch"));
    let text: String = (0..pairs)
        .map(|i| format!("link add {tag}{i} type veth peer name {tag}p{i}\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    let out = Command::new("ip")
        .args(["-n", ns, "-batch"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "ip -batch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn events_survive_a_burst() {
    let ns = Netns::new(&unique_prefix("l3burst"));
    in_ns(&ns, |ns| async move {
        let mut events = Events::subscribe().unwrap();
        // 400 links appear while the runtime polls nothing: every
        // notification has to wait in the socket buffer.
        let pairs = 200;
        veth_batch(&ns, "u", pairs);
        let mut missing: std::collections::BTreeSet<String> = (0..pairs)
            .flat_map(|i| [format!("u{i}"), format!("up{i}")])
            .collect();
        while !missing.is_empty() {
            wait_for(&mut events, |ev| match ev {
                LinuxEvent::Link {
                    name,
                    removed: false,
                    ..
                } => {
                    missing.remove(name);
                    Some(())
                }
                _ => None,
            })
            .await;
        }
    });
}

#[test]
fn events_report_an_overrun_and_go_on() {
    let ns = Netns::new(&unique_prefix("l3ovr"));
    in_ns(&ns, |ns| async move {
        // The smallest buffer the kernel allows holds a message or two.
        let mut events = Events::subscribe_with_buffer(0).unwrap();
        veth_batch(&ns, "o", 50);
        let deadline = Instant::now() + EVENT_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, events.recv()).await {
                Ok(Some(LinuxEvent::Overrun)) => break,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the subscription ended instead of reporting an overrun"),
                Err(_) => panic!("no overrun reported within {EVENT_DEADLINE:?}"),
            }
        }
        // The subscription goes on delivering: of the pair made after the
        // overrun, the first notification fits (the second one overflows
        // the tiny buffer again, which is reported, not lost silently).
        veth_batch(&ns, "late", 1);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, events.recv()).await {
                Ok(Some(LinuxEvent::Link { name, .. })) if name.starts_with("late") => break,
                Ok(Some(_)) => {}
                Ok(None) => panic!("the subscription ended after an overrun"),
                Err(_) => panic!("no event for late0/latep0 within {EVENT_DEADLINE:?}"),
            }
        }
    });
}
