//! Control plane: the agent with a large NAT44 config.
//!
//! One cnf namespace of the example chain runs the real `xcnf-agent` with
//! `--mappings` static mappings (10 000 by default). Measured:
//!
//! - start to datapath ready: from spawning the agent to its `--ready-file`
//!   appearing, with fresh pins (cold: maps created, programs verified) and
//!   with the pins a previous run kept (warm: maps adopted and compared);
//! - memory: VmRSS and VmHWM of the agent after it has idled;
//! - one changed mapping: a gRPC `Apply` of the whole config (replace) and of
//!   a one-mapping patch (merge), timed round trip from an in-process client,
//!   and a config file edit, timed until the datapath's map holds it.
//!
//! Every number is checked to measure what it claims: the change must show in
//! the pinned `nat_static` map, and the transaction must have touched only the
//! NAT tables (no reload, no interface step).

use std::{
    fmt::Write as _,
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use aya::maps::{HashMap, Map, MapData};
use xcnf_common::{
    maps,
    nat::{StaticKey, StaticMapping, proto, role},
};
use xcnf_proto::v1alpha1 as pb;

use super::{
    BenchError, check_interrupt, failed, guarded,
    report::{Align, Table, median, quantile, verdict},
    sleep,
};
use crate::{
    agent::{Nat44, PinGuard, Scratch, nat_chain_config, pin_dir, state_dir},
    netns::{Chain, Netns, Proc},
};

/// Namespace prefix; fixed so a run killed with SIGKILL is cleaned up by the next.
pub const PREFIX: &str = "xcnf-bctl";
/// Agent instance (pin and state directories).
pub const INSTANCE: &str = "xcnf-bench-ctl";
/// Every mapping forwards a port of this address...
const EXTERNAL: [u8; 4] = [80, 80, 80, 100];
/// ...to the same port of this inside host; mapping 0 moves to [`ALT_LOCAL`]
/// and back, the one-mapping change.
const LOCAL: [u8; 4] = [192, 168, 100, 10];
const ALT_LOCAL: [u8; 4] = [192, 168, 100, 11];
/// Mapping `i` uses port `FIRST_PORT + i` on both sides.
const FIRST_PORT: u32 = 10_000;
/// The most mappings distinct ports on one address allow.
pub const MAX_MAPPINGS: u32 = 65_535 - FIRST_PORT + 1;
/// The agent's log filter: info, plus the reconciler's per-step lines that
/// the start-up timeline is read from.
const LOG_FILTER: &str = "info,xcnf_agent=debug";
/// File edits timed (alternating, like the API applies).
const FILE_EDITS: u32 = 6;

/// Targets of issue 4.
const TARGET_START: Duration = Duration::from_secs(1);
const TARGET_RSS_KIB: u64 = 30 * 1024;
const TARGET_APPLY: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub struct Options {
    /// Static mappings in the config.
    pub mappings: u32,
    /// Cold starts, and as many warm ones.
    pub starts: u32,
    /// gRPC applies per mode (rounded up to an even count).
    pub applies: u32,
    /// Idle time before memory is read.
    pub idle: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            mappings: 10_000,
            starts: 5,
            applies: 20,
            idle: Duration::from_secs(3),
        }
    }
}

/// The agent binary measured: `$XCNF_BENCH_AGENT` (`cargo xtask bench` sets
/// the release build), else the one the tests run.
pub fn agent_binary() -> PathBuf {
    std::env::var_os("XCNF_BENCH_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(crate::agent::agent_binary)
}

/// Memory of a process, from `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
    pub anon: u64,
    pub file: u64,
}

/// Milestones of a start, read from the agent's log: the first line matching
/// each, in this order.
const MILESTONES: [(&str, &[&str]); 4] = [
    (
        "config parsed and validated, API socket bound: `loading datapath`",
        &["loading datapath"],
    ),
    (
        "programs loaded (verifier), first item applied",
        &[" applied "],
    ),
    ("NAT44 tables written", &[" applied ", "item=nat44"]),
    (
        "programs attached, config stored: `datapath ready`",
        &["datapath ready"],
    ),
];

/// One start of the agent.
#[derive(Clone, Debug)]
struct Start {
    /// Spawn to the ready file.
    ready: Duration,
    /// Spawn to each of [`MILESTONES`], where the log has it.
    milestones: Vec<Option<Duration>>,
    /// CPU time the agent had used when it was seen ready: user, system
    /// (the verifier runs as system time of the loading thread).
    cpu: Option<(Duration, Duration)>,
}

pub struct Results {
    opts: Options,
    agent: String,
    cold: Vec<Start>,
    warm: Vec<Start>,
    /// After a cold start and after a warm one, idle.
    idle_memory: Vec<(&'static str, Memory)>,
    /// After all the applies, idle again.
    after_applies: Option<Memory>,
    replace: Vec<Duration>,
    replace_pb: Vec<Duration>,
    merge: Vec<Duration>,
    file: Vec<Duration>,
    config_bytes: usize,
    static_entries: usize,
}

/// Removes what a benchmark killed with SIGKILL left behind.
pub fn remove_leftovers() {
    for ns in ["cnf", "client", "webserver"] {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &format!("{PREFIX}-{ns}")])
            .stderr(Stdio::null())
            .status();
    }
    let _ = std::fs::remove_dir_all(pin_dir(INSTANCE));
    let _ = std::fs::remove_dir_all(state_dir(INSTANCE));
}

fn ip(a: [u8; 4]) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(a)
}

/// The benchmark's config: the example chain on TC with NAT44, a pool, an
/// identity mapping and `n` static port mappings; `moved` moves mapping 0.
pub fn config(n: u32, moved: bool) -> String {
    let mut nat = Nat44::default()
        .pool("80.80.80.100", "80.80.80.105", None)
        .identity("udp", "80.80.80.100", Some(53));
    for i in 0..n {
        let port = FIRST_PORT + i;
        let local = if i == 0 && moved { ALT_LOCAL } else { LOCAL };
        nat = nat.static_mapping(
            "tcp",
            &format!("{}:{port}", ip(EXTERNAL)),
            &format!("{}:{port}", ip(local)),
        );
    }
    nat_chain_config(INSTANCE, "{hook: tc}", &nat)
}

/// A merge patch that sets mapping 0 alone.
fn patch(moved: bool) -> String {
    let local = if moved { ALT_LOCAL } else { LOCAL };
    format!(
        "apiVersion: xcnf.io/v1alpha1\nkind: CNFConfiguration\nmetadata:\n  name: {INSTANCE}\nspec:\n  \
         nat44:\n    staticMappings:\n      - {{protocol: tcp, external: \"{}:{FIRST_PORT}\", local: \"{}:{FIRST_PORT}\"}}\n",
        ip(EXTERNAL),
        ip(local)
    )
}

/// Asks the agent to validate the config first, so a config it refuses (a
/// datapath limit) is reported with its own reason.
fn precheck(bin: &Path, config: &Path, mappings: u32) -> Result<(), BenchError> {
    let out = std::process::Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("--check")
        .output()
        .map_err(|e| failed(format!("running {} --check: {e}", bin.display())))?;
    if out.status.success() {
        return Ok(());
    }
    Err(failed(format!(
        "the agent refuses the {mappings}-mapping config: {}",
        String::from_utf8_lossy(&out.stderr)
            .trim()
            .replace('\n', "; ")
    )))
}

pub fn run(opts: &Options) -> Result<Results, BenchError> {
    remove_leftovers();
    guarded(|| run_inner(opts))
}

fn run_inner(opts: &Options) -> Result<Results, BenchError> {
    let bin = agent_binary();
    let scratch = Scratch::new(PREFIX);
    // The agent watches the config file's directory: its logs (and the
    // ready file) live elsewhere, so their writes do not wake the watcher
    // and the file edits are timed from a quiet watch.
    let cfg_dir = scratch.path().join("config");
    std::fs::create_dir_all(&cfg_dir)
        .map_err(|e| failed(format!("creating {}: {e}", cfg_dir.display())))?;
    let cfg_path = cfg_dir.join("config.yaml");
    let base = config(opts.mappings, false);
    write(&cfg_path, &base)?;
    precheck(&bin, &cfg_path, opts.mappings)?;
    let chain = Chain::new(PREFIX);
    let _pins = PinGuard(INSTANCE.to_owned());
    let agent = Launcher {
        ns: &chain.cnf,
        bin: &bin,
        config: &cfg_path,
        dir: scratch.path(),
    };

    let mut cold = Vec::new();
    let mut idle_memory = Vec::new();
    for i in 0..opts.starts {
        check_interrupt()?;
        // Fresh: no pins, no stored config, no ownership record.
        let _ = std::fs::remove_dir_all(pin_dir(INSTANCE));
        let _ = std::fs::remove_dir_all(state_dir(INSTANCE));
        // The last cold agent keeps its pins for the warm starts.
        let last = i + 1 == opts.starts;
        let (mut proc, start) = agent.start(&format!("cold-{i}"), last)?;
        crate::progress!(
            "cold start {}/{}: ready after {:.0} ms",
            i + 1,
            opts.starts,
            ms(start.ready)
        );
        cold.push(start);
        if last {
            sleep(opts.idle)?;
            idle_memory.push(("after a cold start", memory(proc.id())?));
        }
        stop(&mut proc)?;
    }

    let mut warm = Vec::new();
    let mut running = None;
    for i in 0..opts.starts {
        check_interrupt()?;
        if !pin_dir(INSTANCE).exists() {
            return Err(failed(format!(
                "{} is gone: the agent did not keep its pins for the warm start",
                pin_dir(INSTANCE).display()
            )));
        }
        let (mut proc, start) = agent.start(&format!("warm-{i}"), true)?;
        crate::progress!(
            "warm start {}/{}: ready after {:.0} ms",
            i + 1,
            opts.starts,
            ms(start.ready)
        );
        warm.push(start);
        if i + 1 == opts.starts {
            running = Some(proc);
        } else {
            stop(&mut proc)?;
        }
    }
    let Some(mut proc) = running else {
        return Err(failed("--starts must be at least 1"));
    };
    sleep(opts.idle)?;
    idle_memory.push(("after a warm start", memory(proc.id())?));

    let probe = Probe::open()?;
    let mut moved = false;
    probe.expect(moved, Duration::ZERO)?;
    let socket = state_dir(INSTANCE).join(xcnf_agent::api::SOCKET_NAME);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(format!("tokio runtime: {e}")))?;
    let docs = [config(opts.mappings, false), config(opts.mappings, true)];
    let patches = [patch(false), patch(true)];
    // The same two configs as protobuf messages, the API's native form.
    let messages = docs
        .iter()
        .map(|d| {
            xcnf_agent::config::Config::parse(d)
                .map(|c| pb::Config::from(&c))
                .map_err(|e| failed(format!("bench config: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut replace = Vec::new();
    let mut replace_pb = Vec::new();
    let mut merge = Vec::new();
    rt.block_on(async {
        let mut api = xcnf_agent::api::client::connect(&socket)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let as_yaml = |texts: &[String; 2]| -> [pb::config_document::Format; 2] {
            texts.clone().map(pb::config_document::Format::Yaml)
        };
        let as_message = [
            pb::config_document::Format::Config(messages[0].clone()),
            pb::config_document::Format::Config(messages[1].clone()),
        ];
        for (mode, formats, out) in [
            (
                pb::apply_request::Mode::Replace,
                as_yaml(&docs),
                &mut replace,
            ),
            (
                pb::apply_request::Mode::Replace,
                as_message,
                &mut replace_pb,
            ),
            (
                pb::apply_request::Mode::Merge,
                as_yaml(&patches),
                &mut merge,
            ),
        ] {
            // An even count per mode: each mode then ends with the mapping
            // where it began (unmoved), which the file edits below rely on.
            for _ in 0..opts.applies.next_multiple_of(2) {
                check_interrupt()?;
                moved = !moved;
                let req = pb::ApplyRequest {
                    document: Some(pb::ConfigDocument {
                        format: Some(formats[usize::from(moved)].clone()),
                    }),
                    mode: mode.into(),
                    dry_run: false,
                };
                let t = Instant::now();
                let r = api.apply(req).await;
                let took = t.elapsed();
                let report = r
                    .map_err(|s| failed(format!("Apply ({mode:?}): {}", s.message())))?
                    .into_inner()
                    .report
                    .unwrap_or_default();
                check_report(&report, mode)?;
                probe.expect(moved, Duration::ZERO)?;
                out.push(took);
            }
            crate::progress!(
                "gRPC Apply {mode:?}, one mapping changed: median {:.1} ms over {}",
                ms_median(out),
                out.len()
            );
        }
        Ok::<(), BenchError>(())
    })?;
    // Closes the connection: the client's tasks live on this runtime, and
    // an open connection holds up the agent's graceful stop.
    drop(rt);

    // The watcher compares with the file's last content, which is the
    // unmoved config: write the other one first so every edit is a change.
    let mut file = Vec::new();
    for _ in 0..FILE_EDITS {
        check_interrupt()?;
        moved = !moved;
        let t = Instant::now();
        write(&cfg_path, &docs[usize::from(moved)])?;
        probe.expect(moved, Duration::from_secs(10))?;
        file.push(t.elapsed());
    }
    crate::progress!(
        "config file edit to map: median {:.1} ms over {}",
        ms_median(&file),
        file.len()
    );
    sleep(opts.idle)?;
    let after_applies = Some(memory(proc.id())?);
    stop(&mut proc)?;

    Ok(Results {
        opts: opts.clone(),
        agent: describe_binary(&bin),
        cold,
        warm,
        idle_memory,
        after_applies,
        replace,
        replace_pb,
        merge,
        file,
        config_bytes: base.len(),
        static_entries: probe.entries(),
    })
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|e| failed(format!("writing {}: {e}", path.display())))
}

/// The change must have been one NAT44 update: anything else (an interface
/// step, a reload) would make the number measure something else.
fn check_report(
    report: &pb::TransactionReport,
    mode: pb::apply_request::Mode,
) -> Result<(), BenchError> {
    let keys: Vec<&str> = report.plan.iter().map(|o| o.key.as_str()).collect();
    if !report.applied || keys != ["nat44"] {
        return Err(failed(format!(
            "Apply ({mode:?}) of one changed mapping: applied={}, steps {keys:?} (want one nat44 step)",
            report.applied
        )));
    }
    Ok(())
}

/// The binary's path, relative to the workspace (which says its profile).
fn describe_binary(bin: &Path) -> String {
    let root = crate::workspace_root();
    let shown = bin.strip_prefix(&root).unwrap_or(bin);
    shown.display().to_string()
}

/// Starts agents in the cnf namespace.
struct Launcher<'a> {
    ns: &'a Netns,
    bin: &'a Path,
    config: &'a Path,
    dir: &'a Path,
}

impl Launcher<'_> {
    /// Spawns the agent and waits for its ready file, polling every
    /// millisecond; returns the running agent and the timings.
    fn start(&self, tag: &str, keep: bool) -> Result<(Proc, Start), BenchError> {
        let ready = self.dir.join("ready");
        let _ = std::fs::remove_file(&ready);
        let log_path = self.dir.join(format!("agent-{tag}.log"));
        let log = File::create(&log_path)
            .map_err(|e| failed(format!("creating {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| failed(format!("agent log: {e}")))?;
        let mut cmd = self.ns.command(self.bin);
        cmd.arg("--config")
            .arg(self.config)
            .args(["--instance", INSTANCE, "--ready-file"])
            .arg(&ready)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", LOG_FILTER)
            .env("XCNF_EBPF_OBJECT", crate::ebpf_object())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        if keep {
            cmd.arg("--keep-datapath");
        }
        let spawned = SystemTime::now();
        let t0 = Instant::now();
        let proc = Proc::spawn(cmd, "xcnf-agent");
        let deadline = t0 + Duration::from_secs(60);
        let mut polls = 0u32;
        let took = loop {
            if ready.exists() {
                break t0.elapsed();
            }
            polls += 1;
            if polls.is_multiple_of(50) {
                check_interrupt()?;
                if exited(proc.id()) || Instant::now() > deadline {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let what = if exited(proc.id()) {
                        "exited before it was ready"
                    } else {
                        "not ready after 60 s"
                    };
                    return Err(failed(format!(
                        "xcnf-agent ({tag}) {what}\n{}",
                        crate::agent::abridged(&log)
                    )));
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let cpu = cpu_times(proc.id());
        // The lines up to `datapath ready` are written before or right
        // after the ready file.
        let mut milestones = Vec::new();
        for _ in 0..100 {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            milestones = timeline(&log, spawned);
            if milestones.last().is_some_and(Option::is_some) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok((
            proc,
            Start {
                ready: took,
                milestones,
                cpu,
            },
        ))
    }
}

/// Whether the process has exited (a zombie not yet reaped, or gone).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// User and system CPU time of a process, summed over its threads, from
/// `/proc/<pid>/stat` (clock-tick resolution, 10 ms on most kernels).
fn cpu_times(pid: u32) -> Option<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name start at field 3 (state); utime and
    // stime are fields 14 and 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| rest.get(i)?.parse::<u64>().ok();
    let (utime, stime) = (ticks(11)?, ticks(12)?);
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|&h| h > 0)?;
    let d = |t: u64| Duration::from_micros(t * 1_000_000 / hz);
    Some((d(utime), d(stime)))
}

fn stop(proc: &mut Proc) -> Result<(), BenchError> {
    match proc.signal_and_wait(libc::SIGTERM, Duration::from_secs(30)) {
        Some(st) if st.success() => Ok(()),
        Some(st) => Err(failed(format!("xcnf-agent exited with {st} on SIGTERM"))),
        None => Err(failed("xcnf-agent did not exit within 30 s of SIGTERM")),
    }
}

/// The agent's memory now.
fn memory(pid: u32) -> Result<Memory, BenchError> {
    let path = format!("/proc/{pid}/status");
    let text =
        std::fs::read_to_string(&path).map_err(|e| failed(format!("reading {path}: {e}")))?;
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("Name:"))
        .map(str::trim);
    if name != Some("xcnf-agent") {
        return Err(failed(format!(
            "{path} is {name:?}, not the agent (did nsenter fork?)"
        )));
    }
    let kib = |key: &str| -> Result<u64, BenchError> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| failed(format!("no {key} in {path}")))
    };
    Ok(Memory {
        rss: kib("VmRSS:")?,
        hwm: kib("VmHWM:")?,
        anon: kib("RssAnon:")?,
        file: kib("RssFile:")?,
    })
}

/// Reads the pinned `nat_static` map: where mapping 0 points now.
struct Probe {
    map: HashMap<MapData, StaticKey, StaticMapping>,
}

impl Probe {
    fn open() -> Result<Self, BenchError> {
        let path = pin_dir(INSTANCE).join(maps::NAT_STATIC.pin);
        let data = MapData::from_pin(&path)
            .map_err(|e| failed(format!("opening {}: {e}", path.display())))?;
        let map = HashMap::try_from(Map::HashMap(data))
            .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        Ok(Self { map })
    }

    /// Waits up to `within` (polling every millisecond) until mapping 0's
    /// inbound entry points at the moved or the original local address.
    fn expect(&self, moved: bool, within: Duration) -> Result<(), BenchError> {
        let key = StaticKey {
            addr: EXTERNAL,
            port: FIRST_PORT as u16,
            proto: proto::TCP,
            dir: role::OUTSIDE,
        };
        let want = if moved { ALT_LOCAL } else { LOCAL };
        let deadline = Instant::now() + within;
        loop {
            let got = self.map.get(&key, 0).map(|v| v.addr);
            if got.as_ref().is_ok_and(|a| *a == want) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(failed(format!(
                    "nat_static[{}:{FIRST_PORT} tcp outside] is {}, want {}",
                    ip(EXTERNAL),
                    got.map_or_else(|e| e.to_string(), |a| ip(a).to_string()),
                    ip(want)
                )));
            }
            check_interrupt()?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn entries(&self) -> usize {
        self.map.keys().filter(Result::is_ok).count()
    }
}

/// When each of [`MILESTONES`] was logged, after `spawned`. Each is looked
/// for after the previous one's line; one that is missing leaves the search
/// where it was.
fn timeline(log: &str, spawned: SystemTime) -> Vec<Option<Duration>> {
    let lines: Vec<&str> = log.lines().collect();
    let mut from = 0;
    let mut out = Vec::new();
    for (_, needles) in MILESTONES {
        let hit = lines[from..]
            .iter()
            .position(|l| needles.iter().all(|n| l.contains(n)));
        out.push(hit.and_then(|i| {
            from += i + 1;
            let stamp = lines[from - 1].split_whitespace().next()?;
            parse_rfc3339(stamp)?.duration_since(spawned).ok()
        }));
    }
    out
}

/// `2025-06-01T12:34:56.123456Z` (tracing-subscriber's UTC timestamps).
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(str::parse::<i64>);
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(str::parse::<u64>);
    let (h, min, sec) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: u64 = format!("{frac:0<9}").get(..9)?.parse().ok()?;
    let days = u64::try_from(days_from_civil(y, m, day)).ok()?;
    let secs = days * 86_400 + h * 3600 + min * 60 + sec;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn ms_all(v: &[Duration]) -> Vec<f64> {
    v.iter().copied().map(ms).collect()
}

fn ms_median(v: &[Duration]) -> f64 {
    median(&ms_all(v)).unwrap_or(f64::NAN)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn fmt_ms(v: f64) -> String {
    if v < 10.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// Median, p90, min and max cells of `v` in milliseconds.
fn spread(v: &[Duration]) -> [String; 4] {
    let v = ms_all(v);
    let cell = |x: Option<f64>| x.map_or_else(|| "—".to_owned(), fmt_ms);
    [
        cell(median(&v)),
        cell(quantile(&v, 0.9)),
        cell(v.iter().copied().reduce(f64::min)),
        cell(v.iter().copied().reduce(f64::max)),
    ]
}

impl Results {
    pub fn markdown(&self) -> String {
        let o = &self.opts;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "### Control plane: agent with {} static mappings\n\n\
             `{}` in the example chain's cnf namespace (TC, NAT44: one pool of 6 addresses, \
             one identity mapping, {} TCP port mappings = {} `nat_static` entries; config file {} KiB). \
             {} cold and {} warm starts; {} gRPC applies per mode; memory read after {} s idle.\n",
            o.mappings,
            self.agent,
            o.mappings,
            self.static_entries,
            self.config_bytes / 1024,
            self.cold.len(),
            self.warm.len(),
            o.applies,
            o.idle.as_secs_f64(),
        );
        let mut t = Table::new(&[
            ("measurement", Align::Left),
            ("n", Align::Right),
            ("median", Align::Right),
            ("p90", Align::Right),
            ("min", Align::Right),
            ("max", Align::Right),
            ("target", Align::Left),
            ("", Align::Left),
        ]);
        let timed = |t: &mut Table, label: &str, v: &[Duration], target: Option<Duration>| {
            let [med, p90, min, max] = spread(v);
            let (target_cell, verdict_cell) = match target {
                Some(limit) => (
                    format!("median ≤ {}", fmt_ms(ms(limit))),
                    median(&ms_all(v))
                        .map_or("—", |m| verdict(m <= ms(limit)))
                        .to_owned(),
                ),
                None => ("—".to_owned(), String::new()),
            };
            t.row(vec![
                label.to_owned(),
                v.len().to_string(),
                med,
                p90,
                min,
                max,
                target_cell,
                verdict_cell,
            ]);
        };
        let ready = |v: &[Start]| v.iter().map(|s| s.ready).collect::<Vec<_>>();
        timed(
            &mut t,
            "start → datapath ready, cold (no pins: maps created, programs verified)",
            &ready(&self.cold),
            Some(TARGET_START),
        );
        timed(
            &mut t,
            "start → datapath ready, warm (adopts the kept pins)",
            &ready(&self.warm),
            Some(TARGET_START),
        );
        for (when, m) in &self.idle_memory {
            t.row(vec![
                format!("VmRSS idle, {when} (VmHWM {})", mib(m.hwm)),
                "1".to_owned(),
                mib(m.rss),
                String::new(),
                String::new(),
                String::new(),
                format!("≤ {}", mib(TARGET_RSS_KIB)),
                verdict(m.rss <= TARGET_RSS_KIB).to_owned(),
            ]);
        }
        timed(
            &mut t,
            "one mapping changed: gRPC Apply, replace (whole config sent)",
            &self.replace,
            Some(TARGET_APPLY),
        );
        timed(
            &mut t,
            "one mapping changed: gRPC Apply, replace (whole config as protobuf messages)",
            &self.replace_pb,
            Some(TARGET_APPLY),
        );
        timed(
            &mut t,
            "one mapping changed: gRPC Apply, merge (one-mapping patch)",
            &self.merge,
            Some(TARGET_APPLY),
        );
        timed(
            &mut t,
            "one mapping changed: config file edit → map (includes the watcher's 100 ms settle)",
            &self.file,
            None,
        );
        if let Some(m) = &self.after_applies {
            t.row(vec![
                format!("VmRSS idle after the applies (VmHWM {})", mib(m.hwm)),
                "1".to_owned(),
                mib(m.rss),
                String::new(),
                String::new(),
                String::new(),
                "—".to_owned(),
                String::new(),
            ]);
        }
        let _ = writeln!(s, "{t}");

        let _ = writeln!(
            s,
            "Start-up timeline, median ms after spawn (from the agent's log timestamps):\n"
        );
        let mut tl = Table::new(&[
            ("milestone", Align::Left),
            ("cold", Align::Right),
            ("warm", Align::Right),
        ]);
        let at = |v: &[Start], i: usize| {
            let xs: Vec<f64> = v
                .iter()
                .filter_map(|s| s.milestones.get(i).copied().flatten().map(ms))
                .collect();
            median(&xs).map_or_else(|| "—".to_owned(), |m| format!("{m:.0}"))
        };
        for (i, (label, _)) in MILESTONES.iter().enumerate() {
            tl.row(vec![
                (*label).to_owned(),
                at(&self.cold, i),
                at(&self.warm, i),
            ]);
        }
        let file_seen = |v: &[Start]| {
            median(&ms_all(&ready(v))).map_or_else(|| "—".to_owned(), |m| format!("{m:.0}"))
        };
        tl.row(vec![
            "ready file seen by the benchmark".to_owned(),
            file_seen(&self.cold),
            file_seen(&self.warm),
        ]);
        let cpu = |v: &[Start], pick: fn(&(Duration, Duration)) -> Duration| {
            let xs: Vec<f64> = v
                .iter()
                .filter_map(|s| s.cpu.as_ref())
                .map(|c| ms(pick(c)))
                .collect();
            median(&xs).map_or_else(|| "—".to_owned(), |m| format!("{m:.0}"))
        };
        tl.row(vec![
            "agent CPU time by then: user (ms)".to_owned(),
            cpu(&self.cold, |c| c.0),
            cpu(&self.warm, |c| c.0),
        ]);
        tl.row(vec![
            "agent CPU time by then: system, mostly the verifier (ms)".to_owned(),
            cpu(&self.cold, |c| c.1),
            cpu(&self.warm, |c| c.1),
        ]);
        let _ = writeln!(s, "{tl}");
        let mut memories: Vec<(&str, Memory)> = self.idle_memory.clone();
        memories.extend(self.after_applies.map(|m| ("after the applies", m)));
        for (when, m) in memories {
            let _ = writeln!(
                s,
                "- memory {when}: VmRSS {} (anonymous {}, file-backed {}), VmHWM {}",
                mib(m.rss),
                mib(m.anon),
                mib(m.file),
                mib(m.hwm)
            );
        }
        let _ = writeln!(
            s,
            "\nMethod: the agent is spawned (`nsenter` into the cnf namespace, which execs it) with \
             `--config`, `--ready-file` and `RUST_LOG={LOG_FILTER}`; the benchmark polls for the ready \
             file every millisecond. Cold starts remove the pin and state directories first; the last \
             one runs with `--keep-datapath`, and each warm start adopts what the previous agent kept. \
             Memory is `/proc/<pid>/status` of the agent. Applies alternate mapping 0's local address \
             between {} and {} through one gRPC connection from the benchmark (round trip of `Apply`, \
             which returns once the transaction is done, including the client's encoding; the \
             benchmark is a {} build); each must report exactly one step (`nat44`) \
             and the pinned `nat_static` map must hold the new value afterwards. File edits rewrite the \
             config file and are timed until the map holds the change.",
            ip(LOCAL),
            ip(ALT_LOCAL),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps() {
        let t = parse_rfc3339("2024-03-01T00:00:01.500000Z").unwrap_or(UNIX_EPOCH);
        // 2024-03-01 is day 19783 after the epoch.
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap_or_default(),
            Duration::from_millis(19_783 * 86_400_000 + 1_500)
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert!(parse_rfc3339("not a time").is_none());
    }

    #[test]
    fn timeline_takes_milestones_in_order() {
        let spawned = parse_rfc3339("2024-03-01T00:00:00Z").unwrap_or(UNIX_EPOCH);
        let log = "\
2024-03-01T00:00:00.010000Z  INFO xcnf_agent::reconcile::system: loading datapath object=x
2024-03-01T00:00:00.300000Z DEBUG xcnf_agent::reconcile::engine: applied op=create item=interface/inside
2024-03-01T00:00:00.400000Z DEBUG xcnf_agent::reconcile::engine: applied op=create item=nat44
2024-03-01T00:00:00.450000Z  INFO xcnf_agent: datapath ready items=5 not_configured=0
";
        let got: Vec<Option<u128>> = timeline(log, spawned)
            .into_iter()
            .map(|d| d.map(|d| d.as_millis()))
            .collect();
        assert_eq!(got, vec![Some(10), Some(300), Some(400), Some(450)]);
        assert_eq!(timeline("", spawned), vec![None; 4]);
    }

    #[test]
    fn configs_differ_in_mapping_zero_only() {
        let (a, b) = (config(3, false), config(3, true));
        assert_eq!(a.matches("protocol: tcp").count(), 3);
        let diff: Vec<(&str, &str)> = a.lines().zip(b.lines()).filter(|(x, y)| x != y).collect();
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].1.contains("192.168.100.11:10000"), "{diff:?}");
        assert!(patch(true).contains("192.168.100.11:10000"));
    }
}
