//! End to end: trafgen → cnf → sink in network namespaces.
//!
//! The topology is the NAT44 example chain ([`Chain`]): the generator runs in
//! its `client` namespace, the cnf forwards (and translates) between `c0`
//! and `c1`, and the `server` namespace is the sink, which drops every IPv4
//! packet at its own TC ingress so its stack does no work. Each run builds the
//! chain afresh, so no conntrack entry, session or attachment of one mode
//! survives into the next.
//!
//! The generator shares the machine's cores with the datapath (all of it runs
//! in softirq on the generator's CPU), so the raw rate at the sink mostly
//! shows the generator. What compares datapaths is the cost of the cnf hop:
//! the time per packet delivered with the cnf doing X, minus the time per
//! packet when the cnf drops everything at its TC ingress.

use std::{
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aya::maps::{Map, MapData, PerCpuArray};
use xcnf_common::{IfCounters, maps, nat::NatStats};

use super::{
    BenchError, check_interrupt, failed, guarded,
    report::{Align, Table, median, or_dash, rate, ratio, verdict},
    sleep,
};
use crate::{
    agent::{Agent, Scratch, chain_config, pin_dir, read_counters},
    netns::{CLIENT_IP, Chain, Netns, Proc, SERVER_IP},
};

/// Namespace prefix; fixed so a run killed with SIGKILL is cleaned up by the next.
pub const PREFIX: &str = "xcnf-bench";
/// Agent instance (pin directory) of the xcnf modes.
pub const INSTANCE: &str = "xcnf-bench";
/// Frame size on the wire without FCS: the minimum Ethernet frame.
pub const FRAME_LEN: usize = 60;
/// First UDP source port; flows are `FIRST_PORT..FIRST_PORT + flows`.
const FIRST_PORT: u32 = 1024;
/// Ports a single-address pool offers (1024-65535): with paired pooling the
/// generator's one address maps to one pool address, so this bounds the flows.
pub const MAX_FLOWS: u32 = 65535 - FIRST_PORT + 1;
/// The CPU trafgen (and with it every softirq of the path) runs on.
const GEN_CPU: usize = 0;
/// A classic BPF program of one instruction, `ret #2`: with `da` that is
/// TC_ACT_SHOT. This kernel has neither cls_matchall nor act_gact, but
/// cls_bpf runs classic BPF in direct-action mode.
const TC_DROP_BYTECODE: &str = "1,6 0 0 2,";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The baseline: the cnf drops everything at c0's TC ingress.
    Drop,
    Kernel,
    Nft,
    XcnfTc,
    XcnfTcNat,
    XcnfXdpNat,
}

impl Mode {
    pub const ALL: [Mode; 6] = [
        Mode::Drop,
        Mode::Kernel,
        Mode::Nft,
        Mode::XcnfTc,
        Mode::XcnfTcNat,
        Mode::XcnfXdpNat,
    ];

    /// The name `--modes` takes.
    pub fn id(self) -> &'static str {
        match self {
            Mode::Drop => "drop",
            Mode::Kernel => "kernel",
            Mode::Nft => "nft",
            Mode::XcnfTc => "xcnf-tc",
            Mode::XcnfTcNat => "xcnf-tc-nat",
            Mode::XcnfXdpNat => "xcnf-xdp-nat",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Mode::Drop => "cnf drops at TC ingress (baseline)",
            Mode::Kernel => "kernel forwarding",
            Mode::Nft => "kernel forwarding + nftables masquerade",
            Mode::XcnfTc => "xcnf TC, forwarding only",
            Mode::XcnfTcNat => "xcnf TC + NAT44",
            Mode::XcnfXdpNat => "xcnf XDP + NAT44",
        }
    }

    pub fn from_id(s: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.id() == s)
    }

    /// The agent's `datapath:` and whether NAT44 is configured.
    fn xcnf(self) -> Option<(&'static str, bool)> {
        match self {
            Mode::XcnfTc => Some(("{hook: tc}", false)),
            Mode::XcnfTcNat => Some(("{hook: tc}", true)),
            Mode::XcnfXdpNat => Some(("{hook: xdp, xdpMode: native}", true)),
            Mode::Drop | Mode::Kernel | Mode::Nft => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub rounds: u32,
    /// Measured time per run.
    pub seconds: Duration,
    /// Traffic before the measurement starts: sessions and conntrack
    /// entries are created, queues fill.
    pub warmup: Duration,
    pub flows: u32,
    pub modes: Vec<Mode>,
}

/// One run's rates.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Packets per second counted at the sink's interface.
    sink_pps: f64,
    /// Packets per second entering the cnf's ingress (c0).
    ingress_pps: f64,
}

impl Sample {
    /// The rate that stands for the mode: what the cnf delivered, or for
    /// the baseline what its ingress consumed.
    fn pps(&self, mode: Mode) -> f64 {
        if mode == Mode::Drop {
            self.ingress_pps
        } else {
            self.sink_pps
        }
    }
}

/// Every run's outcome, by mode and round.
pub struct Results {
    opts: Options,
    runs: Vec<(Mode, Vec<Result<Sample, String>>)>,
}

/// The NAT44 section of the xcnf modes: the example chain's pool on the
/// sink side of the cnf.
const NAT44: &str = "  nat44:
    inside: [inside]
    outside: [outside]
    pools:
      - {first: 80.80.80.100, last: 80.80.80.105}
";

fn agent_config(datapath: &str, nat: bool) -> String {
    let mut c = chain_config(INSTANCE, datapath);
    if nat {
        c.push_str(NAT44);
    }
    c
}

/// Removes what a benchmark killed with SIGKILL left behind.
pub fn remove_leftovers() {
    for ns in ["cnf", "client", "webserver"] {
        let _ = Command::new("ip")
            .args(["netns", "del", &format!("{PREFIX}-{ns}")])
            .stderr(Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(pin_dir(INSTANCE));
}

/// Asks the agent to validate each xcnf mode's config once, so a mode the
/// agent cannot run yet is reported with the agent's own reason instead of
/// failing every round.
fn precheck(mode: Mode) -> Result<(), String> {
    let Some((datapath, nat)) = mode.xcnf() else {
        return Ok(());
    };
    let scratch = Scratch::new(&format!("{INSTANCE}-check"));
    let config = scratch.path().join("config.yaml");
    std::fs::write(&config, agent_config(datapath, nat))
        .map_err(|e| format!("writing {}: {e}", config.display()))?;
    let out = Command::new(crate::agent::agent_binary())
        .arg("--config")
        .arg(&config)
        .arg("--check")
        .output()
        .map_err(|e| format!("running xcnf-agent --check: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "the agent refuses the config: {}",
            err.trim().replace('\n', "; ")
        ))
    }
}

pub fn run(opts: &Options) -> Result<Results, BenchError> {
    remove_leftovers();
    // This process, and what it starts (the agent, `ip`, `nft`), stays off
    // the generator's CPU, where the whole datapath runs.
    let cpus = super::online_cpus();
    if cpus > 1 {
        super::pin_to_cpu(cpus - 1)?;
    }
    let mut runs: Vec<(Mode, Vec<Result<Sample, String>>)> =
        opts.modes.iter().map(|&m| (m, Vec::new())).collect();
    let mut unavailable: Vec<Option<String>> =
        opts.modes.iter().map(|&m| precheck(m).err()).collect();
    for (i, why) in unavailable.iter().enumerate() {
        if let Some(why) = why {
            crate::progress!("{} unavailable: {why}", opts.modes[i].label());
        }
    }
    let n = opts.modes.len();
    for round in 0..opts.rounds {
        // Each round starts one mode later, so no mode always runs first
        // (or right after the same neighbour).
        for k in 0..n {
            let i = (k + round as usize) % n;
            let mode = opts.modes[i];
            if let Some(why) = &unavailable[i] {
                runs[i].1.push(Err(why.clone()));
                continue;
            }
            crate::progress!("round {}/{}: {} ...", round + 1, opts.rounds, mode.label());
            match guarded(|| run_once(mode, opts)) {
                Ok(s) => {
                    crate::progress!(
                        "  {} pps at the sink, {} pps into the cnf",
                        rate(s.sink_pps),
                        rate(s.ingress_pps)
                    );
                    runs[i].1.push(Ok(s));
                }
                Err(BenchError::Interrupted) => return Err(BenchError::Interrupted),
                Err(BenchError::Failed(why)) => {
                    crate::progress!("  failed: {why}");
                    // A mode that failed once is not retried: its failure is
                    // almost always the same (missing feature, wrong path).
                    unavailable[i] = Some(why.clone());
                    runs[i].1.push(Err(why));
                }
            }
        }
    }
    Ok(Results {
        opts: opts.clone(),
        runs,
    })
}

/// `ip -n ns -br link show dev`'s MAC column.
fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = crate::netns::run(Command::new("ip").args([
        "-n",
        ns.name(),
        "-br",
        "link",
        "show",
        "dev",
        dev,
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("no MAC in `ip -br link show {dev}`: {text:?}"))
        .to_owned()
}

/// Drops every IPv4 packet at `dev`'s TC ingress (ARP still passes).
fn tc_drop(ns: &Netns, dev: &str) {
    ns.run("tc", &["qdisc", "add", "dev", dev, "clsact"]);
    ns.run(
        "tc",
        &[
            "filter",
            "add",
            "dev",
            dev,
            "ingress",
            "protocol",
            "ip",
            "pref",
            "1",
            "bpf",
            "bytecode",
            TC_DROP_BYTECODE,
            "da",
        ],
    );
}

/// The trafgen packet: 60-byte UDP frames from the client to the server,
/// the source port counting through `flows` values, checksums recomputed by
/// trafgen for every packet.
fn trafgen_config(dst_mac: &str, src_mac: &str, flows: u32) -> String {
    let payload = FRAME_LEN - 14 - 20 - 8;
    format!(
        "{{\n  eth(da={dst_mac}, sa={src_mac}, type=0x0800),\n  \
         ipv4(saddr={CLIENT_IP}, daddr={SERVER_IP}, ttl=64, df),\n  \
         udp(sport=dinc({FIRST_PORT}, {}), dport=9),\n  fill(0x00, {payload}),\n}}\n",
        FIRST_PORT + flows - 1
    )
}

/// Starts trafgen in `ns` on [`GEN_CPU`].
///
/// trafgen forks its sender and ignores the death of whoever started it, so
/// it runs under `timeout`, which puts both in a process group of their own,
/// relays the SIGTERM that [`Proc`]'s drop sends to the whole group, and ends
/// them by itself should this process be killed without cleaning up.
fn start_trafgen(ns: &Netns, conf: &Path, log: &Path, limit: Duration) -> Proc {
    let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let mut cmd = ns.command("timeout");
    cmd.args(["-s", "INT", &format!("{}", limit.as_secs() + 1)])
        .args([
            "taskset",
            "-c",
            &GEN_CPU.to_string(),
            "trafgen",
            "-o",
            "eth0",
            "-i",
        ])
        .arg(conf)
        // One sender; leave the host's socket memory sysctls and IRQ
        // affinities alone (trafgen changes both by default; the sysctls
        // are global). `-t 0` sends with sendto(2) instead of the TX ring:
        // with XDP on c0, veth queues skbs in its NAPI ring, the socket's
        // default send buffer fills, and the TX ring's non-blocking flush
        // then fails with EAGAIN, which trafgen treats as fatal; sendto
        // blocks until the buffer drains. Every mode uses the same sender.
        .args(["-P", "1", "--no-sock-mem", "-Q", "-t", "0"])
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .unwrap_or_else(|e| panic!("trafgen log: {e}")),
        )
        .stderr(log);
    Proc::spawn(cmd, "trafgen")
}

/// Counter readings at one instant.
struct Reading {
    at_sink: (u64, Instant),
    at_ingress: (u64, Instant),
    /// xcnf's own counters on c0 and its packets translated from inside,
    /// in xcnf modes.
    xcnf: Option<(IfCounters, u64)>,
}

fn read(chain: &Chain, xcnf: Option<(&Path, u32)>) -> Reading {
    let at_sink = (chain.server.link_stat("eth0", "rx_packets"), Instant::now());
    let at_ingress = (chain.cnf.link_stat("c0", "rx_packets"), Instant::now());
    let xcnf = xcnf.map(|(pins, c0)| {
        let c = read_counters(pins, c0)
            .unwrap_or_else(|| panic!("no counters for c0 in {}", pins.display()));
        (c, nat_translated(pins))
    });
    Reading {
        at_sink,
        at_ingress,
        xcnf,
    }
}

/// Packets translated from inside, summed over CPUs; 0 while NAT44 is off.
fn nat_translated(pins: &Path) -> u64 {
    let path = pins.join(maps::NAT_STATS.pin);
    let Ok(data) = MapData::from_pin(&path) else {
        return 0;
    };
    let m: PerCpuArray<_, NatStats> = PerCpuArray::try_from(Map::PerCpuArray(data))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    m.get(&0, 0)
        .map(|v| v.iter().map(|s| s.translated_from_inside).sum())
        .unwrap_or(0)
}

fn per_second(a: (u64, Instant), b: (u64, Instant)) -> f64 {
    let secs = b.1.duration_since(a.1).as_secs_f64();
    b.0.saturating_sub(a.0) as f64 / secs
}

fn run_once(mode: Mode, opts: &Options) -> Result<Sample, BenchError> {
    let chain = Chain::new(PREFIX);
    let scratch = Scratch::new(&format!("{PREFIX}-run"));
    // The sink never answers ARP (it drops at ingress before its stack), so
    // the cnf learns the sink's MAC from a permanent entry.
    let sink_mac = mac_of(&chain.server, "eth0");
    chain.cnf.ip(&[
        "neigh",
        "replace",
        SERVER_IP,
        "lladdr",
        &sink_mac,
        "dev",
        "c1",
        "nud",
        "permanent",
    ]);
    tc_drop(&chain.server, "eth0");

    match mode {
        Mode::Drop => tc_drop(&chain.cnf, "c0"),
        Mode::Kernel | Mode::XcnfTc | Mode::XcnfTcNat | Mode::XcnfXdpNat => {}
        Mode::Nft => {
            let rules = scratch.path().join("masquerade.nft");
            std::fs::write(
                &rules,
                "table ip xcnf_bench {\n  chain postrouting {\n    \
                 type nat hook postrouting priority srcnat; policy accept;\n    \
                 oifname \"c1\" counter masquerade\n  }\n}\n",
            )
            .map_err(|e| failed(format!("{}: {e}", rules.display())))?;
            chain.cnf.run("nft", &["-f", &rules.to_string_lossy()]);
        }
    }
    let agent = mode.xcnf().map(|(datapath, nat)| {
        Agent::start(&chain.cnf, INSTANCE, &agent_config(datapath, nat), &[])
    });
    check_interrupt()?;

    let conf = scratch.path().join("trafgen.cfg");
    let c0_mac = mac_of(&chain.cnf, "c0");
    let gen_mac = mac_of(&chain.client, "eth0");
    std::fs::write(&conf, trafgen_config(&c0_mac, &gen_mac, opts.flows))
        .map_err(|e| failed(format!("{}: {e}", conf.display())))?;
    let log = scratch.path().join("trafgen.log");
    let mut trafgen = start_trafgen(
        &chain.client,
        &conf,
        &log,
        opts.warmup + opts.seconds + Duration::from_secs(10),
    );
    let trafgen_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let xcnf = agent
        .as_ref()
        .map(|a| (a.pin_dir(), chain.cnf.ifindex("c0")));
    let xcnf_ref = xcnf.as_ref().map(|(p, i)| (p.as_path(), *i));
    sleep(opts.warmup)?;
    let a = read(&chain, xcnf_ref);
    sleep(opts.seconds)?;
    let b = read(&chain, xcnf_ref);
    if trafgen
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .is_none()
    {
        return Err(failed("trafgen did not stop within 10 s of SIGTERM"));
    }

    let sample = Sample {
        sink_pps: per_second(a.at_sink, b.at_sink),
        ingress_pps: per_second(a.at_ingress, b.at_ingress),
    };
    // Even a starved generator sends tens of thousands per second here.
    if sample.ingress_pps < 1000.0 {
        let log = trafgen_log();
        return Err(failed(format!(
            "only {:.0} packets per second reached the cnf; trafgen said: {}",
            sample.ingress_pps,
            log.split_whitespace().collect::<Vec<_>>().join(" ")
        )));
    }
    if mode != Mode::Drop && sample.sink_pps <= 0.0 {
        return Err(failed("no packets reached the sink"));
    }
    if mode == Mode::Nft {
        check_masquerade(&chain.cnf)?;
    }
    if let (Some(x0), Some(x1)) = (&a.xcnf, &b.xcnf) {
        let arrived = b.at_ingress.0.saturating_sub(a.at_ingress.0);
        check_xcnf(mode, arrived, x0, x1)?;
    }
    drop(agent);
    Ok(sample)
}

/// The masquerade rule must have seen the flows (NAT rules only see each
/// connection's first packet), or the kernel forwarded untranslated.
fn check_masquerade(cnf: &Netns) -> Result<(), BenchError> {
    let out = cnf.run("nft", &["list", "table", "ip", "xcnf_bench"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let packets: u64 = text
        .split("counter packets ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    crate::progress!("  masquerade rule matched {packets} new connections");
    if packets == 0 {
        return Err(failed(format!(
            "the masquerade rule matched nothing:\n{text}"
        )));
    }
    Ok(())
}

/// xcnf's program must have seen what arrived on c0, and forwarded (and in
/// NAT modes translated) it: packets it missed or passed to the kernel would
/// be forwarded there and measure the kernel instead.
fn check_xcnf(
    mode: Mode,
    arrived: u64,
    before: &(IfCounters, u64),
    after: &(IfCounters, u64),
) -> Result<(), BenchError> {
    let (c0, c1) = (&before.0, &after.0);
    let rx = c1.rx.packets - c0.rx.packets;
    let forwarded = c1.forwarded.packets - c0.forwarded.packets;
    let translated = after.1 - before.1;
    let mostly = |part: u64, whole: u64| whole > 0 && part as f64 >= 0.99 * whole as f64;
    if !mostly(rx, arrived) || !mostly(forwarded, rx) {
        return Err(failed(format!(
            "{arrived} packets arrived on c0, xcnf's program saw {rx} and forwarded {forwarded} \
             (passed {}, dropped {})",
            c1.passed.total() - c0.passed.total(),
            c1.dropped.total() - c0.dropped.total(),
        )));
    }
    let nat = mode.xcnf().is_some_and(|(_, nat)| nat);
    if nat && !mostly(translated, forwarded) {
        return Err(failed(format!(
            "xcnf translated {translated} of the {forwarded} packets it forwarded"
        )));
    }
    Ok(())
}

impl Results {
    /// Whether any run has no number.
    pub fn any_failed(&self) -> bool {
        self.runs.iter().any(|(_, r)| r.iter().any(Result::is_err))
    }

    fn mode(&self, mode: Mode) -> Option<&[Result<Sample, String>]> {
        self.runs
            .iter()
            .find(|(m, _)| *m == mode)
            .map(|(_, r)| r.as_slice())
    }

    /// Median rate of `mode` over the rounds that worked.
    fn median_pps(&self, mode: Mode) -> Option<f64> {
        let v: Vec<f64> = self
            .mode(mode)?
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|s| s.pps(mode)))
            .collect();
        median(&v)
    }

    /// Median over rounds of the cnf hop's cost: 1/pps(mode) − 1/pps(drop)
    /// in the same round, in nanoseconds.
    fn median_cost(&self, mode: Mode) -> Option<f64> {
        if mode == Mode::Drop {
            return None;
        }
        let x = self.mode(mode)?;
        let d = self.mode(Mode::Drop)?;
        let v: Vec<f64> = x
            .iter()
            .zip(d)
            .filter_map(|(x, d)| match (x, d) {
                (Ok(x), Ok(d)) => Some(1e9 / x.sink_pps - 1e9 / d.ingress_pps),
                _ => None,
            })
            .collect();
        median(&v)
    }

    /// The markdown section: main table, targets, per-round rates, method.
    pub fn markdown(&self) -> String {
        let o = &self.opts;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### End to end: trafgen → cnf → sink\n\n\
             {} UDP flows of {FRAME_LEN}-byte frames from one trafgen on CPU {GEN_CPU}; \
             {} round(s) of {} s per mode after {} s of warm-up, modes interleaved; medians over rounds.\n",
            o.flows,
            o.rounds,
            o.seconds.as_secs_f64(),
            o.warmup.as_secs_f64(),
        );
        let nft_cost = self.median_cost(Mode::Nft);
        let kernel_pps = self.median_pps(Mode::Kernel);
        let mut t = Table::new(&[
            ("mode", Align::Left),
            ("pps at sink", Align::Right),
            ("cnf hop ns/pkt", Align::Right),
            ("cost ÷ nft masquerade", Align::Right),
            ("pps ÷ kernel forwarding", Align::Right),
        ]);
        for &(mode, _) in &self.runs {
            let pps = self.median_pps(mode);
            let cost = self.median_cost(mode);
            let pps_cell = match (mode, pps) {
                (Mode::Drop, Some(p)) => format!("{} (consumed at cnf ingress)", rate(p)),
                (_, p) => or_dash(p, rate),
            };
            let cost_ratio = cost.zip(nft_cost).map(|(c, n)| c / n);
            let pps_ratio = match mode {
                Mode::Drop => None,
                _ => pps.zip(kernel_pps).map(|(p, k)| p / k),
            };
            t.row(vec![
                mode.label().to_owned(),
                pps_cell,
                or_dash(cost, super::report::ns),
                or_dash(cost_ratio, ratio),
                or_dash(pps_ratio, ratio),
            ]);
        }
        let _ = writeln!(s, "{t}");

        let nat_modes: Vec<Mode> = [Mode::XcnfTcNat, Mode::XcnfXdpNat]
            .into_iter()
            .filter(|&m| self.mode(m).is_some())
            .collect();
        if !nat_modes.is_empty() {
            let _ = writeln!(s, "Targets:\n");
        }
        for mode in nat_modes {
            let cost_ratio = self.median_cost(mode).zip(nft_cost).map(|(c, n)| c / n);
            let pps_ratio = self.median_pps(mode).zip(kernel_pps).map(|(p, k)| p / k);
            let judged = |v: Option<f64>, ok: fn(f64) -> bool| {
                v.map_or_else(
                    || "n/a (not measured)".to_owned(),
                    |r| format!("{} — {}", ratio(r), verdict(ok(r))),
                )
            };
            let _ = writeln!(
                s,
                "- {}: cnf hop cost ≤ 1/3 of nftables masquerade's: {}",
                mode.label(),
                judged(cost_ratio, |r| r <= 1.0 / 3.0),
            );
            let _ = writeln!(
                s,
                "- {}: pps at sink above kernel forwarding without NAT: {}",
                mode.label(),
                judged(pps_ratio, |r| r > 1.0),
            );
        }

        let _ = writeln!(
            s,
            "\nPackets per second by round (baseline: consumed at the cnf's ingress):\n"
        );
        let mut head: Vec<String> = vec!["mode".to_owned()];
        head.extend((1..=o.rounds).map(|r| format!("round {r}")));
        let head_refs: Vec<(&str, Align)> = head
            .iter()
            .enumerate()
            .map(|(i, h)| (h.as_str(), if i == 0 { Align::Left } else { Align::Right }))
            .collect();
        let mut rounds = Table::new(&head_refs);
        let mut failures = Vec::new();
        for (mode, runs) in &self.runs {
            let mut row = vec![mode.label().to_owned()];
            for r in runs {
                row.push(match r {
                    Ok(s) => rate(s.pps(*mode)),
                    Err(why) => {
                        if !failures.iter().any(|(m, _)| m == mode) {
                            failures.push((*mode, why.clone()));
                        }
                        "failed".to_owned()
                    }
                });
            }
            rounds.row(row);
        }
        let _ = writeln!(s, "{rounds}");
        for (mode, why) in &failures {
            let _ = writeln!(s, "- {} failed: {why}", mode.label());
        }
        if !failures.is_empty() {
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "Method: a fresh client —veth— cnf —veth— server chain per run; trafgen (sendto(2), qdisc \
             bypass) in `client` pinned to CPU {GEN_CPU}, where every softirq of the path runs too. \
             The sink (GRO on, so its veth runs NAPI as XDP redirects into it require, in every mode) \
             drops IPv4 at its TC ingress; its rx_packets delta over the measured seconds is the pps \
             at the sink. The baseline drops at the cnf's c0 TC ingress (cls_bpf running classic BPF \
             `ret #2`), and its rate is c0's rx_packets delta. Cost of the cnf hop = 1/pps(mode) − 1/pps(baseline), per round, then the \
             median. The benchmark itself and the agent run on the last CPU. xcnf modes run the real \
             xcnf-agent; a run counts only if xcnf itself forwarded \
             (and in NAT modes translated) ≥ 99% of what its program saw, and the nftables run only if \
             its masquerade rule matched."
        );
        s
    }
}
