//! Fixture tests of the datapath through `BPF_PROG_TEST_RUN`.
//!
//! Each test runs on its own thread inside its own network namespace, because
//! the kernel runs test programs against the calling thread's namespace: its
//! loopback is the ingress device and its routes and neighbours answer
//! `bpf_fib_lookup`. Private namespaces let the tests run in parallel and
//! need no cleanup: the namespace dies with the thread, the maps and programs
//! with the `Ebpf` object.
//!
//! Every fixture pins down the verdict, the whole output frame and the whole
//! counter record, so a stray write or a miscounted reason fails as loudly as
//! a wrong verdict.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup step must abort the test loudly"
)]

use std::{error::Error, fmt::Write as _, process::Command};

use aya::{
    Ebpf, EbpfLoader,
    maps::{DevMapHash, HashMap, PerCpuHashMap, PerCpuValues},
    programs::{ProgramError, SchedClassifier, TestRun as _, TestRunOptions, Xdp},
    util::nr_cpus,
};
use xcnf_common::{DropReasons, IfCounters, IfaceConfig, PassReasons, maps};
use xcnf_tests::packet::{
    ETH_HLEN, ETH_P_IP, IPV4_HLEN, Ip4, Ipv4, Mac, arp_request, ethernet, ipv6_frame, parse_mac,
    routed, ttl_decremented, udp_frame,
};

/// Loopback is the ingress device of every test run, and the first device of
/// a fresh namespace.
const LO: u32 = 1;
/// Loopback's MAC: frames addressed to it count as "for us".
const LO_MAC: Mac = [0; 6];
/// The sender on the ingress side. Only its MAC and address appear in frames.
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0, 0xaa];
const CLIENT_IP: Ip4 = [10, 8, 0, 10];

/// v0's own address: traffic to it is for the CNF itself.
const LOCAL_IP: Ip4 = [10, 9, 0, 1];
/// The resolved next hop on v0, and its MAC.
const NEXT_HOP: Ip4 = [10, 9, 0, 2];
const NEXT_HOP_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
/// On v0's subnet, never resolved.
const UNRESOLVED: Ip4 = [10, 9, 0, 3];
/// Reached through NEXT_HOP as a gateway.
const BEHIND_GATEWAY: Ip4 = [10, 20, 0, 5];
/// The resolved next hop on u0, an interface xcnf does not manage.
const UNMANAGED: Ip4 = [10, 9, 1, 2];
const UNMANAGED_MAC: Mac = [0x02, 0, 0, 0, 1, 0x02];
/// On u0's subnet, never resolved.
const UNMANAGED_UNRESOLVED: Ip4 = [10, 9, 1, 3];
/// Inside the blackhole route.
const BLACKHOLED: Ip4 = [198, 51, 100, 1];
/// Inside an `unreachable` route, and inside a `prohibit` route.
const UNREACHABLE: Ip4 = [192, 0, 2, 1];
const PROHIBITED: Ip4 = [198, 18, 0, 1];
/// Covered by no route at all (the namespace has no default route).
const NOWHERE: Ip4 = [203, 0, 113, 1];

/// The MTU forced onto v0 by the fragmentation fixtures.
const SMALL_MTU: usize = 1280;

// ---------------------------------------------------------------- isolation

/// Runs `f` on a new thread inside a new network namespace and re-raises its
/// panic here, so the test fails with the fixture's own message.
fn isolated(f: impl FnOnce() + Send + 'static) {
    let thread = std::thread::spawn(move || {
        // SAFETY: plain syscall; CLONE_NEWNET only changes this thread's
        // namespace, which is why everything after it stays on this thread.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET): {} (these tests need root)",
            std::io::Error::last_os_error()
        );
        f();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `ip` in the calling thread's namespace (children inherit it).
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`ip {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Sets net.ipv4.ip_forward. /proc/sys/net resolves to the opening thread's
/// namespace, so this never touches the host's setting.
fn set_ip_forward(on: bool) {
    let path = "/proc/sys/net/ipv4/ip_forward";
    std::fs::write(path, if on { "1" } else { "0" })
        .unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

/// An interface's ifindex and MAC, asked of `ip` because /sys/class/net shows
/// the host's namespace, not this thread's.
fn link(name: &str) -> (u32, Mac) {
    let brief = ip(&["-br", "link", "show", "dev", name]);
    let mac = brief
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no MAC in `ip -br link show {name}`: {brief:?}"));
    let oneline = ip(&["-o", "link", "show", "dev", name]);
    let ifindex = oneline
        .split(':')
        .next()
        .and_then(|i| i.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in `ip -o link show {name}`: {oneline:?}"));
    (ifindex, parse_mac(mac))
}

fn dotted(a: Ip4) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// The namespace every fixture runs in:
///
/// ```text
///  lo (ingress, managed)        v0 10.9.0.1/24 (managed) ── 10.9.0.2 resolved
///                                  10.20.0.0/16 via 10.9.0.2, 10.9.0.3 unresolved
///                               u0 10.9.1.1/24 (unmanaged) ── 10.9.1.2 resolved
///  blackhole 198.51.100.0/24, unreachable 192.0.2.0/24, prohibit 198.18.0.0/15,
///  no default route, ip_forward=1
/// ```
struct Net {
    v0: u32,
    v0_mac: Mac,
    u0: u32,
    u0_mac: Mac,
}

impl Net {
    fn new() -> Self {
        ip(&["link", "set", "lo", "up"]);
        for (dev, peer, addr, nh, nh_mac) in [
            ("v0", "v1", "10.9.0.1/24", NEXT_HOP, NEXT_HOP_MAC),
            ("u0", "u1", "10.9.1.1/24", UNMANAGED, UNMANAGED_MAC),
        ] {
            ip(&["link", "add", dev, "type", "veth", "peer", "name", peer]);
            ip(&["link", "set", dev, "up"]);
            ip(&["link", "set", peer, "up"]);
            ip(&["addr", "add", addr, "dev", dev]);
            let mac = nh_mac.map(|b| format!("{b:02x}")).join(":");
            ip(&[
                "neigh",
                "replace",
                &dotted(nh),
                "lladdr",
                &mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        ip(&[
            "route",
            "add",
            "10.20.0.0/16",
            "via",
            &dotted(NEXT_HOP),
            "dev",
            "v0",
        ]);
        ip(&["route", "add", "blackhole", "198.51.100.0/24"]);
        ip(&["route", "add", "unreachable", "192.0.2.0/24"]);
        ip(&["route", "add", "prohibit", "198.18.0.0/15"]);
        // Last, so every interface inherits forwarding=1 as well.
        set_ip_forward(true);
        let (v0, v0_mac) = link("v0");
        let (u0, u0_mac) = link("u0");
        assert_ne!(v0, LO, "v0 got loopback's ifindex");
        Net {
            v0,
            v0_mac,
            u0,
            u0_mac,
        }
    }

    fn set_v0_mtu(&self, mtu: usize) {
        ip(&["link", "set", "dev", "v0", "mtu", &mtu.to_string()]);
    }
}

// ---------------------------------------------------------------- datapath

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Xdp,
    Tc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
    Redirect,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::Xdp => maps::programs::XDP,
            Hook::Tc => maps::programs::TC,
        }
    }

    /// The hook's numeric return code for a verdict (XDP_* or TC_ACT_*).
    fn code(self, v: Verdict) -> u32 {
        match (self, v) {
            (Hook::Xdp, Verdict::Pass) => 2,
            (Hook::Xdp, Verdict::Drop) => 1,
            (Hook::Xdp, Verdict::Redirect) => 4,
            (Hook::Tc, Verdict::Pass) => 0,
            (Hook::Tc, Verdict::Drop) => 2,
            (Hook::Tc, Verdict::Redirect) => 7,
        }
    }

    fn name_code(self, code: u32) -> String {
        [Verdict::Pass, Verdict::Drop, Verdict::Redirect]
            .into_iter()
            .find(|&v| self.code(v) == code)
            .map_or_else(
                || format!("{code} (unexpected)"),
                |v| format!("{code} ({v:?})"),
            )
    }
}

/// Renders an error with its whole source chain, which is where aya keeps
/// the verifier log.
fn chain(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(e) = src {
        let _ = write!(s, ": {e}");
        src = e.source();
    }
    s
}

/// The loaded object with both programs and its maps.
struct Datapath {
    ebpf: Ebpf,
}

impl Datapath {
    /// Loads both programs with aya-log enabled up to `log_level`, as the
    /// agent does with its configured level; 0 lets the verifier prune every
    /// log statement.
    fn load(log_level: u8) -> Self {
        let path = xcnf_tests::ebpf_object();
        let mut ebpf = EbpfLoader::new()
            .override_global("AYA_LOG_LEVEL", &log_level, true)
            .load_file(&path)
            .unwrap_or_else(|e| panic!("loading {}: {}", path.display(), chain(&e)));
        let xdp: &mut Xdp = ebpf
            .program_mut(Hook::Xdp.program())
            .expect("object has the XDP program")
            .try_into()
            .expect("XDP program has type Xdp");
        xdp.load()
            .unwrap_or_else(|e| panic!("loading xcnf_xdp: {}", chain(&e)));
        let tc: &mut SchedClassifier = ebpf
            .program_mut(Hook::Tc.program())
            .expect("object has the TC program")
            .try_into()
            .expect("TC program has type SchedClassifier");
        tc.load()
            .unwrap_or_else(|e| panic!("loading xcnf_tc: {}", chain(&e)));
        Datapath { ebpf }
    }

    /// Loaded and configured the way the agent would for `net`: lo and v0
    /// managed, lo counted, v0 a redirect target; u0 deliberately left out.
    fn for_net(net: &Net, log_level: u8) -> Self {
        let mut dp = Self::load(log_level);
        dp.manage(LO, LO_MAC);
        dp.manage(net.v0, net.v0_mac);
        dp.count(LO);
        dp.tx_port(net.v0);
        dp
    }

    fn manage(&mut self, ifindex: u32, mac: Mac) {
        let mut m: HashMap<_, u32, IfaceConfig> =
            HashMap::try_from(self.ebpf.map_mut(maps::IFACES.object).expect("IFACES map"))
                .expect("IFACES is a hash map of u32 -> IfaceConfig");
        m.insert(
            ifindex,
            IfaceConfig {
                mac,
                role: 0,
                _pad: 0,
            },
            0,
        )
        .unwrap_or_else(|e| panic!("IFACES[{ifindex}]: {}", chain(&e)));
    }

    fn count(&mut self, ifindex: u32) {
        let cpus = nr_cpus().unwrap_or_else(|(what, e)| panic!("{what}: {e}"));
        let mut m: PerCpuHashMap<_, u32, IfCounters> = PerCpuHashMap::try_from(
            self.ebpf
                .map_mut(maps::COUNTERS.object)
                .expect("COUNTERS map"),
        )
        .expect("COUNTERS is a per-CPU hash map of u32 -> IfCounters");
        let zero = PerCpuValues::try_from(vec![IfCounters::default(); cpus])
            .expect("one value per possible CPU");
        m.insert(ifindex, zero, 0)
            .unwrap_or_else(|e| panic!("COUNTERS[{ifindex}]: {}", chain(&e)));
    }

    /// DEVMAP_HASH updates resolve the ifindex in the caller's namespace, so
    /// this must run on the test's thread like everything else.
    fn tx_port(&mut self, ifindex: u32) {
        let mut m = DevMapHash::try_from(
            self.ebpf
                .map_mut(maps::TX_PORTS.object)
                .expect("TX_PORTS map"),
        )
        .expect("TX_PORTS is a DEVMAP_HASH");
        m.insert(ifindex, ifindex, None, 0)
            .unwrap_or_else(|e| panic!("TX_PORTS[{ifindex}]: {}", chain(&e)));
    }

    fn remove_tx_port(&mut self, ifindex: u32) {
        let mut m = DevMapHash::try_from(
            self.ebpf
                .map_mut(maps::TX_PORTS.object)
                .expect("TX_PORTS map"),
        )
        .expect("TX_PORTS is a DEVMAP_HASH");
        m.remove(ifindex)
            .unwrap_or_else(|e| panic!("removing TX_PORTS[{ifindex}]: {}", chain(&e)));
    }

    /// The size of `hook`'s program after verification, which shrinks when
    /// the verifier removes dead code.
    fn translated_size(&self, hook: Hook) -> u32 {
        self.ebpf
            .program(hook.program())
            .expect("program present")
            .info()
            .unwrap_or_else(|e| panic!("{hook:?} program info: {}", chain(&e)))
            .size_translated()
            .expect("translated size is visible to root")
    }

    /// The counters of `ifindex`, summed over CPUs as the agent reports them.
    fn counters(&self, ifindex: u32) -> IfCounters {
        let m: PerCpuHashMap<_, u32, IfCounters> =
            PerCpuHashMap::try_from(self.ebpf.map(maps::COUNTERS.object).expect("COUNTERS map"))
                .expect("COUNTERS is a per-CPU hash map of u32 -> IfCounters");
        let per_cpu = m
            .get(&ifindex, 0)
            .unwrap_or_else(|e| panic!("COUNTERS[{ifindex}]: {}", chain(&e)));
        let mut sum = IfCounters::default();
        for c in per_cpu.iter() {
            sum.accumulate(c);
        }
        sum
    }

    /// Runs one frame through `hook`: the verdict and the bytes the kernel
    /// hands back, or the kernel's refusal of the input.
    fn try_run(&self, hook: Hook, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        let prog = self.ebpf.program(hook.program()).expect("program present");
        let mut out = vec![0u8; frame.len() + 512];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        };
        let r = match hook {
            Hook::Xdp => <&Xdp>::try_from(prog).expect("Xdp").test_run(opts),
            Hook::Tc => <&SchedClassifier>::try_from(prog)
                .expect("SchedClassifier")
                .test_run(opts),
        }?;
        out.truncate(usize::try_from(r.data_size_out).expect("fits"));
        Ok((r.return_value, out))
    }
}

// ---------------------------------------------------------------- fixtures

/// Where the datapath should send a frame, and which counter says so.
#[derive(Clone, Copy)]
enum Fate {
    Forwarded,
    Passed(fn(&mut PassReasons) -> &mut u64),
    Dropped(fn(&mut DropReasons) -> &mut u64),
}

/// The output frame the kernel hands back after the run.
enum Out {
    Unchanged,
    Exact(Vec<u8>),
}

struct Case {
    what: String,
    frame: Vec<u8>,
    fate: Fate,
    out: Out,
    /// The kernel may refuse this input with EINVAL before the program runs
    /// (skb test runs on 6.18 reject IPv4 frames too short for an IPv4
    /// header); the case is then skipped instead of failed.
    refusable: bool,
}

impl Case {
    fn forwarded(what: impl Into<String>, frame: Vec<u8>, out: Vec<u8>) -> Self {
        Case {
            what: what.into(),
            frame,
            fate: Fate::Forwarded,
            out: Out::Exact(out),
            refusable: false,
        }
    }

    fn passed(
        what: impl Into<String>,
        frame: Vec<u8>,
        why: fn(&mut PassReasons) -> &mut u64,
    ) -> Self {
        Case {
            what: what.into(),
            frame,
            fate: Fate::Passed(why),
            out: Out::Unchanged,
            refusable: false,
        }
    }

    fn dropped(
        what: impl Into<String>,
        frame: Vec<u8>,
        why: fn(&mut DropReasons) -> &mut u64,
    ) -> Self {
        Case {
            what: what.into(),
            frame,
            fate: Fate::Dropped(why),
            out: Out::Unchanged,
            refusable: false,
        }
    }
}

/// Fails with the first differing offset and both frames in hex, which is
/// what one needs to see which header field went wrong.
fn assert_frame(ctx: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let hex = |b: &[u8]| {
        b.chunks(16)
            .enumerate()
            .map(|(i, l)| {
                let bytes: Vec<String> = l.iter().map(|x| format!("{x:02x}")).collect();
                format!("  {:04x}: {}", i * 16, bytes.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    // Enough context past the first difference, not a 1400-byte dump.
    let cut = first.max(64) + 32;
    panic!(
        "{ctx}: output frame differs at offset {first} (got {} bytes, want {})\n\
         got:\n{}\nwant:\n{}",
        got.len(),
        want.len(),
        hex(&got[..got.len().min(cut)]),
        hex(&want[..want.len().min(cut)]),
    );
}

/// Runs `case` and checks verdict, output frame and the counter delta.
/// Returns whether it ran (see [`Case::refusable`]).
fn check(dp: &Datapath, hook: Hook, case: &Case) -> bool {
    let ctx = format!("{hook:?}: {}", case.what);
    let before = dp.counters(LO);
    let (code, out) = match dp.try_run(hook, &case.frame) {
        Ok(r) => r,
        Err(ProgramError::SyscallError(e))
            if case.refusable && e.io_error.raw_os_error() == Some(libc::EINVAL) =>
        {
            eprintln!("{ctx}: the kernel refuses this input (EINVAL), skipped");
            assert_eq!(dp.counters(LO), before, "{ctx}: refused yet counted");
            return false;
        }
        Err(e) => panic!("{ctx}: test_run: {}", chain(&e)),
    };

    let verdict = match case.fate {
        Fate::Forwarded => Verdict::Redirect,
        Fate::Passed(_) => Verdict::Pass,
        Fate::Dropped(_) => Verdict::Drop,
    };
    assert_eq!(
        code,
        hook.code(verdict),
        "{ctx}: verdict {}, expected {}",
        hook.name_code(code),
        hook.name_code(hook.code(verdict)),
    );

    let want = match &case.out {
        Out::Unchanged => &case.frame,
        Out::Exact(f) => f,
    };
    assert_frame(&ctx, &out, want);

    let mut expected = before;
    expected.rx.packets += 1;
    expected.rx.bytes += case.frame.len() as u64;
    match case.fate {
        Fate::Forwarded => {
            expected.forwarded.packets += 1;
            expected.forwarded.bytes += case.frame.len() as u64;
        }
        Fate::Passed(why) => *why(&mut expected.passed) += 1,
        Fate::Dropped(why) => *why(&mut expected.dropped) += 1,
    }
    let got = dp.counters(LO);
    assert_eq!(
        got, expected,
        "{ctx}: counters of lo (left: got, right: expected)"
    );
    true
}

/// Checks every case; returns the frames that ran.
fn check_all<'a>(dp: &Datapath, hook: Hook, cases: &'a [Case]) -> Vec<&'a [u8]> {
    cases
        .iter()
        .filter(|c| check(dp, hook, c))
        .map(|c| c.frame.as_slice())
        .collect()
}

/// A UDP frame from the client, addressed to loopback at L2, with an IPv4
/// total length of `ip_len`.
fn client_frame(ip: &Ipv4, ip_len: usize) -> Vec<u8> {
    udp_frame(LO_MAC, CLIENT_MAC, ip, ip_len)
}

fn to(dst: Ip4) -> Ipv4 {
    Ipv4::new(CLIENT_IP, dst)
}

/// Overwrites bytes of the IPv4 header and fixes its 20-byte checksum, so
/// the frame is wrong only in the field under test.
fn with_ip_bytes(mut frame: Vec<u8>, offset: usize, bytes: &[u8]) -> Vec<u8> {
    let at = ETH_HLEN + offset;
    frame[at..at + bytes.len()].copy_from_slice(bytes);
    let check = ETH_HLEN + 10;
    frame[check..check + 2].fill(0);
    let c = xcnf_common::csum::checksum(&frame[ETH_HLEN..ETH_HLEN + IPV4_HLEN]);
    frame[check..check + 2].copy_from_slice(&c.to_be_bytes());
    frame
}

fn udp_case(net: &Net) -> Case {
    let f = client_frame(&to(NEXT_HOP), 128);
    let out = routed(&f, NEXT_HOP_MAC, net.v0_mac);
    Case::forwarded("UDP to the resolved next hop", f, out)
}

fn gateway_case(net: &Net) -> Case {
    let f = client_frame(&to(BEHIND_GATEWAY), 200);
    let out = routed(&f, NEXT_HOP_MAC, net.v0_mac);
    Case::forwarded("UDP to a network behind the gateway", f, out)
}

/// A 28-byte IPv4 packet in a minimum-size (60-byte) Ethernet frame: the
/// trailing padding is not part of the packet and must go out as it came.
fn padded_case(net: &Net) -> Case {
    let mut f = client_frame(&to(NEXT_HOP), 28);
    f.resize(60, 0);
    f[ETH_HLEN + 28..].fill(0x5a);
    let out = routed(&f, NEXT_HOP_MAC, net.v0_mac);
    Case::forwarded("28-byte packet in a padded 60-byte frame", f, out)
}

fn ttl_cases(net: &Net) -> Vec<Case> {
    let mut cases: Vec<Case> = [255u8, 64, 2]
        .into_iter()
        .map(|ttl| {
            let f = client_frame(&to(NEXT_HOP).ttl(ttl), 100);
            let out = routed(&f, NEXT_HOP_MAC, net.v0_mac);
            Case::forwarded(format!("TTL {ttl}"), f, out)
        })
        .collect();
    cases.extend([1u8, 0].map(|ttl| {
        Case::passed(
            format!("TTL {ttl}"),
            client_frame(&to(NEXT_HOP).ttl(ttl), 100),
            |p| &mut p.ttl_expired,
        )
    }));
    cases
}

fn non_ipv4_cases() -> Vec<Case> {
    vec![
        Case::passed(
            "ARP request",
            arp_request(CLIENT_MAC, CLIENT_IP, LOCAL_IP),
            |p| &mut p.not_ipv4,
        ),
        Case::passed("IPv6", ipv6_frame(LO_MAC, CLIENT_MAC, 64), |p| {
            &mut p.not_ipv4
        }),
    ]
}

/// Too short for an IPv4 header, plus the boundary: a bare 20-byte header
/// is a complete (empty) packet and is forwarded.
fn truncated_cases(net: &Net, hook: Hook) -> Vec<Case> {
    let whole = client_frame(&to(NEXT_HOP), 100);
    let mut cases: Vec<Case> = [0usize, 1, 19]
        .into_iter()
        .map(|n| Case {
            refusable: hook == Hook::Tc,
            ..Case::dropped(
                format!("IPv4 ethertype with {n} bytes after Ethernet"),
                whole[..ETH_HLEN + n].to_vec(),
                |d| &mut d.malformed,
            )
        })
        .collect();
    let bare = ethernet(LO_MAC, CLIENT_MAC, ETH_P_IP, &to(NEXT_HOP).encode(&[]));
    let out = routed(&bare, NEXT_HOP_MAC, net.v0_mac);
    cases.push(Case::forwarded("bare 20-byte IPv4 header", bare, out));
    cases
}

fn malformed_cases() -> Vec<Case> {
    let f = client_frame(&to(NEXT_HOP), 100);
    let ipv6_as_ipv4 = {
        let v6 = ipv6_frame(LO_MAC, CLIENT_MAC, 64);
        ethernet(LO_MAC, CLIENT_MAC, ETH_P_IP, &v6[ETH_HLEN..])
    };
    let malformed = |what: &str, frame| Case::dropped(what, frame, |d| &mut d.malformed);
    vec![
        malformed("IHL 4", with_ip_bytes(f.clone(), 0, &[0x44])),
        malformed("IHL 0", with_ip_bytes(f.clone(), 0, &[0x40])),
        malformed("version 6 header", with_ip_bytes(f.clone(), 0, &[0x65])),
        malformed("an IPv6 packet under the IPv4 ethertype", ipv6_as_ipv4),
        malformed(
            "total length one past the frame",
            with_ip_bytes(f.clone(), 2, &101u16.to_be_bytes()),
        ),
        malformed(
            "total length 65535",
            with_ip_bytes(f.clone(), 2, &u16::MAX.to_be_bytes()),
        ),
        malformed(
            "total length 19, under the header size",
            with_ip_bytes(f.clone(), 2, &19u16.to_be_bytes()),
        ),
        malformed("a corrupted header checksum (RFC 1812 5.2.2)", {
            let mut bad = f;
            bad[ETH_HLEN + 10] ^= 0x01;
            bad
        }),
    ]
}

fn ip_options_cases() -> Vec<Case> {
    // Router alert (RFC 2113), a real option routers see.
    let ip = to(NEXT_HOP).options(&[0x94, 0x04, 0x00, 0x00]);
    vec![Case::passed(
        "IHL 6 (router alert option)",
        client_frame(&ip, 100),
        |p| &mut p.ip_options,
    )]
}

fn local_cases() -> Vec<Case> {
    vec![Case::passed(
        "to the CNF's own address",
        client_frame(&to(LOCAL_IP), 100),
        |p| &mut p.not_forwarded,
    )]
}

fn no_route_cases() -> Vec<Case> {
    [
        ("an unreachable route", UNREACHABLE),
        ("a prohibit route", PROHIBITED),
    ]
    .into_iter()
    .map(|(what, dst)| {
        Case::passed(format!("into {what}"), client_frame(&to(dst), 100), |p| {
            &mut p.no_route
        })
    })
    .collect()
}

/// No route at all: the FIB answers NOT_FWDED, the same code as for a local
/// destination, so it is counted with those; the kernel sends unreachable.
fn missing_route_cases() -> Vec<Case> {
    vec![Case::passed(
        "to an address no route covers",
        client_frame(&to(NOWHERE), 100),
        |p| &mut p.not_forwarded,
    )]
}

fn blackhole_cases() -> Vec<Case> {
    vec![Case::dropped(
        "into a blackhole route",
        client_frame(&to(BLACKHOLED), 100),
        |d| &mut d.blackhole,
    )]
}

/// Frames the L2 filter must hand to the kernel: XDP compares the
/// destination MAC with IFACES, TC relies on the skb's `pkt_type`.
fn not_for_us_cases() -> Vec<Case> {
    let ip = to(NEXT_HOP);
    [
        ("another host's MAC", [0x02, 0, 0, 0, 0, 0x99]),
        ("broadcast", [0xff; 6]),
        ("IPv4 multicast MAC", [0x01, 0x00, 0x5e, 0, 0, 1]),
    ]
    .into_iter()
    .map(|(what, dst)| {
        Case::passed(
            format!("IPv4 to {what}"),
            udp_frame(dst, CLIENT_MAC, &ip, 100),
            |p| &mut p.not_for_us,
        )
    })
    .collect()
}

/// XDP cannot resolve neighbours, so it leaves the packet to the kernel; TC
/// hands it to `bpf_redirect_neigh` with the TTL already decremented and the
/// MACs left for the kernel to fill in.
fn unresolved_cases(hook: Hook) -> Vec<Case> {
    let f = client_frame(&to(UNRESOLVED), 100);
    match hook {
        Hook::Xdp => vec![Case::passed("to an unresolved neighbour", f, |p| {
            &mut p.no_neigh
        })],
        Hook::Tc => {
            let out = ttl_decremented(&f);
            vec![Case::forwarded(
                "to an unresolved neighbour (bpf_redirect_neigh)",
                f,
                out,
            )]
        }
    }
}

fn unmanaged_cases(hook: Hook) -> Vec<Case> {
    let unresolved = client_frame(&to(UNMANAGED_UNRESOLVED), 100);
    vec![
        Case::passed(
            "out of an unmanaged interface",
            client_frame(&to(UNMANAGED), 100),
            |p| &mut p.unmanaged_egress,
        ),
        match hook {
            // XDP gives up on the missing neighbour before asking about egress.
            Hook::Xdp => Case::passed(
                "to an unresolved neighbour on an unmanaged interface",
                unresolved,
                |p| &mut p.no_neigh,
            ),
            Hook::Tc => Case::passed(
                "to an unresolved neighbour on an unmanaged interface",
                unresolved,
                |p| &mut p.unmanaged_egress,
            ),
        },
    ]
}

/// Needs v0's MTU at [`SMALL_MTU`].
fn frag_cases(net: &Net) -> Vec<Case> {
    let fits = client_frame(&to(NEXT_HOP), SMALL_MTU);
    let fits_out = routed(&fits, NEXT_HOP_MAC, net.v0_mac);
    vec![
        Case::forwarded(
            format!("{SMALL_MTU}-byte packet, exactly the MTU"),
            fits,
            fits_out,
        ),
        Case::passed(
            format!("{}-byte packet, one over the MTU", SMALL_MTU + 1),
            client_frame(&to(NEXT_HOP), SMALL_MTU + 1),
            |p| &mut p.frag_needed,
        ),
        Case::passed("1400-byte packet", client_frame(&to(NEXT_HOP), 1400), |p| {
            &mut p.frag_needed
        }),
    ]
}

/// Runs `fixture` in a fresh namespace with the standard datapath.
fn with_datapath(hook: Hook, fixture: fn(&Net, &Datapath, Hook)) {
    isolated(move || {
        let net = Net::new();
        let dp = Datapath::for_net(&net, 0);
        fixture(&net, &dp, hook);
    });
}

/// Generates `name::xdp` and `name::tc` tests from a fixture
/// `fn name(&Net, &Datapath, Hook)`.
macro_rules! on_both_hooks {
    ($($(#[$attr:meta])* $name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            $(#[$attr])*
            fn xdp() {
                super::with_datapath(super::Hook::Xdp, super::$name);
            }
            #[test]
            $(#[$attr])*
            fn tc() {
                super::with_datapath(super::Hook::Tc, super::$name);
            }
        }
    )*};
}

on_both_hooks!(
    forwards_udp,
    forwards_via_gateway,
    forwards_padded_frame,
    ttl,
    non_ipv4_passes,
    truncated_ip_drops,
    malformed_ip_drops,
    ip_options_pass,
    local_passes,
    no_route_passes,
    missing_route_passes,
    blackhole_drops,
    not_for_us_passes,
    unresolved_neighbour,
    unmanaged_egress_passes,
    frag_needed_passes,
    forwarding_disabled_passes,
    counters_add_up,
);

fn forwards_udp(net: &Net, dp: &Datapath, hook: Hook) {
    check(dp, hook, &udp_case(net));
    let c = dp.counters(LO);
    assert_eq!((c.rx.packets, c.forwarded.packets), (1, 1), "{hook:?}");
}

fn forwards_via_gateway(net: &Net, dp: &Datapath, hook: Hook) {
    check(dp, hook, &gateway_case(net));
}

fn forwards_padded_frame(net: &Net, dp: &Datapath, hook: Hook) {
    check(dp, hook, &padded_case(net));
}

fn ttl(net: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &ttl_cases(net));
    let c = dp.counters(LO);
    assert_eq!(
        (c.forwarded.packets, c.passed.ttl_expired),
        (3, 2),
        "{hook:?}"
    );
}

fn non_ipv4_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &non_ipv4_cases());
}

fn truncated_ip_drops(net: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &truncated_cases(net, hook));
}

fn malformed_ip_drops(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &malformed_cases());
}

fn ip_options_pass(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &ip_options_cases());
}

fn local_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &local_cases());
}

fn no_route_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &no_route_cases());
}

fn missing_route_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &missing_route_cases());
}

fn blackhole_drops(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &blackhole_cases());
}

fn not_for_us_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &not_for_us_cases());
}

fn unresolved_neighbour(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &unresolved_cases(hook));
}

fn unmanaged_egress_passes(_: &Net, dp: &Datapath, hook: Hook) {
    check_all(dp, hook, &unmanaged_cases(hook));
}

fn frag_needed_passes(net: &Net, dp: &Datapath, hook: Hook) {
    net.set_v0_mtu(SMALL_MTU);
    check_all(dp, hook, &frag_cases(net));
}

fn forwarding_disabled_passes(_: &Net, dp: &Datapath, hook: Hook) {
    set_ip_forward(false);
    check(
        dp,
        hook,
        &Case::passed(
            "with net.ipv4.ip_forward=0",
            client_frame(&to(NEXT_HOP), 100),
            |p| &mut p.fwd_disabled,
        ),
    );
}

/// Every case of every fixture through one datapath: each packet must land
/// in exactly one outcome, so the outcomes add up to `rx`.
fn counters_add_up(net: &Net, dp: &Datapath, hook: Hook) {
    let mut cases = vec![udp_case(net), gateway_case(net), padded_case(net)];
    cases.extend(ttl_cases(net));
    cases.extend(non_ipv4_cases());
    cases.extend(truncated_cases(net, hook));
    cases.extend(malformed_cases());
    cases.extend(ip_options_cases());
    cases.extend(local_cases());
    cases.extend(no_route_cases());
    cases.extend(missing_route_cases());
    cases.extend(blackhole_cases());
    cases.extend(not_for_us_cases());
    cases.extend(unresolved_cases(hook));
    cases.extend(unmanaged_cases(hook));
    let mut ran = check_all(dp, hook, &cases);
    // Changes the namespace, so it comes last.
    net.set_v0_mtu(SMALL_MTU);
    let frag = frag_cases(net);
    ran.extend(check_all(dp, hook, &frag));

    let n = ran.len() as u64;
    let bytes: u64 = ran.iter().map(|f| f.len() as u64).sum();
    let c = dp.counters(LO);
    assert_eq!((c.rx.packets, c.rx.bytes), (n, bytes), "{hook:?}: rx");
    assert_eq!(
        c.rx.packets,
        c.forwarded.packets + c.passed.total() + c.dropped.total(),
        "{hook:?}: outcomes do not add up to rx: {c:#?}"
    );
    // Every outcome the fixtures can reach was reached, so the identity above
    // is not satisfied vacuously by a few counters.
    let reached = [
        c.forwarded.packets,
        c.passed.not_ipv4,
        c.passed.not_for_us,
        c.passed.ip_options,
        c.passed.ttl_expired,
        c.passed.not_forwarded,
        c.passed.no_route,
        c.passed.frag_needed,
        c.passed.unmanaged_egress,
        c.dropped.malformed,
        c.dropped.blackhole,
    ];
    assert!(
        reached.iter().all(|&v| v > 0),
        "{hook:?}: an outcome was never reached: {c:#?}"
    );
}

// ---------------------------------------------------------------- single-hook

/// XDP rewrites the frame before the devmap redirect can fail, so a managed
/// egress missing from TX_PORTS drops the frame (as `redirect_failed`)
/// rather than handing the kernel a half-forwarded one.
#[test]
fn xdp_missing_tx_port_drops() {
    isolated(|| {
        let net = Net::new();
        let mut dp = Datapath::for_net(&net, 0);
        dp.remove_tx_port(net.v0);
        check(
            &dp,
            Hook::Xdp,
            &missing_tx_port_case(&net, "v0 missing from TX_PORTS"),
        );
    });
}

fn missing_tx_port_case(net: &Net, what: &str) -> Case {
    let f = client_frame(&to(NEXT_HOP), 100);
    let out = routed(&f, NEXT_HOP_MAC, net.v0_mac);
    Case {
        out: Out::Exact(out),
        ..Case::dropped(what, f, |d| &mut d.redirect_failed)
    }
}

/// Managing u0 must be all it takes to forward out of it.
#[test]
fn managing_an_interface_enables_egress() {
    for hook in [Hook::Xdp, Hook::Tc] {
        isolated(move || {
            let net = Net::new();
            let mut dp = Datapath::for_net(&net, 0);
            dp.manage(net.u0, net.u0_mac);
            dp.tx_port(net.u0);
            let f = client_frame(&to(UNMANAGED), 100);
            let out = routed(&f, UNMANAGED_MAC, net.u0_mac);
            check(
                &dp,
                hook,
                &Case::forwarded("out of u0 once managed", f, out),
            );
        });
    }
}

/// The agent writes its configured aya-log level into AYA_LOG_LEVEL before
/// loading. Off (0) and debug (4) must both verify and forward alike, and 0
/// must really take the log calls out (smaller translated programs).
#[test]
fn log_level_override() {
    isolated(|| {
        let net = Net::new();
        let mut sizes = Vec::new();
        for level in [0u8, 4] {
            let mut dp = Datapath::for_net(&net, level);
            for hook in [Hook::Xdp, Hook::Tc] {
                check(&dp, hook, &udp_case(&net));
            }
            // Redirect failure is where the XDP program logs at debug level.
            dp.remove_tx_port(net.v0);
            let what = format!("redirect failure at log level {level}");
            check(&dp, Hook::Xdp, &missing_tx_port_case(&net, &what));
            sizes.push([Hook::Xdp, Hook::Tc].map(|h| dp.translated_size(h)));
        }
        for (i, hook) in [Hook::Xdp, Hook::Tc].into_iter().enumerate() {
            assert!(
                sizes[0][i] < sizes[1][i],
                "{hook:?}: AYA_LOG_LEVEL=0 should prune the log calls, yet translated \
                 sizes are {} (level 0) and {} (level 4)",
                sizes[0][i],
                sizes[1][i],
            );
        }
    });
}
