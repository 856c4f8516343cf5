//! `xcnfctl`: inspects a running (or kept) xcnf datapath through its pinned
//! maps, so it needs no agent and no API, only read access to the bpffs.

use std::{
    ffi::CStr,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap};
use clap::{Parser, Subcommand};
use xcnf_agent::{
    datapath::{BPFFS_DEFAULT, Pins},
    nat::{
        show::{self, IfaceView},
        tables::{SessionMaps, monotonic_ns, open_pinned, read_all},
    },
};
use xcnf_common::{
    IfCounters, IfaceConfig, maps,
    nat::{NatConfig, NatStats},
};

/// Inspect an xcnf datapath: NAT sessions, NAT statistics, interface counters.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Where bpffs is mounted.
    #[arg(long, env = "XCNF_BPFFS", default_value = BPFFS_DEFAULT, global = true)]
    bpffs: PathBuf,
    /// The instance (pin directory name); defaults to the only one there is.
    #[arg(long, env = "XCNF_INSTANCE", global = true)]
    instance: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// NAT44 sessions and statistics.
    Nat {
        #[command(subcommand)]
        what: NatCommand,
    },
    /// Per-interface packet counters, with every non-zero pass and drop reason.
    Counters,
}

#[derive(Debug, Subcommand)]
enum NatCommand {
    /// One line per session: endpoints, kind, state, age, idle time, traffic.
    Sessions,
    /// Configuration summary, active sessions and event counters.
    Stats,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("xcnfctl: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<String> {
    let instance = match &args.instance {
        Some(i) => i.clone(),
        None => only_instance(&args.bpffs)?,
    };
    let pins = Pins::new(&args.bpffs, &instance);
    if !pins.dir().is_dir() {
        bail!(
            "{}: no such instance (is the agent running with --instance {instance} --bpffs {}?)",
            pins.dir().display(),
            args.bpffs.display()
        );
    }
    match args.command {
        Command::Nat {
            what: NatCommand::Sessions,
        } => sessions(&pins),
        Command::Nat {
            what: NatCommand::Stats,
        } => stats(&pins),
        Command::Counters => counters(&pins),
    }
}

/// The instance to show when none is named: the only directory under `<bpffs>/xcnf`.
fn only_instance(bpffs: &Path) -> anyhow::Result<String> {
    let dir = bpffs.join("xcnf");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| {
            format!(
                "{}: no xcnf instances (is an agent running?)",
                dir.display()
            )
        })?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{}: no xcnf instances (is an agent running?)",
            dir.display()
        ),
        many => bail!(
            "{}: several instances ({}); choose one with --instance",
            dir.display(),
            many.join(", ")
        ),
    }
}

fn sessions(pins: &Pins) -> anyhow::Result<String> {
    let maps = SessionMaps::open(pins)?;
    let halves = maps.read_sessions()?;
    let now = monotonic_ns()?;
    let rows = show::session_rows(&halves, now);
    let mut out = show::table(&show::SESSION_HEADERS, &rows);
    out.push_str(&format!(
        "{} sessions ({} map entries)\n",
        rows.iter().filter(|r| r[5] != "half").count(),
        halves.len()
    ));
    Ok(out)
}

fn stats(pins: &Pins) -> anyhow::Result<String> {
    let config: Array<MapData, NatConfig> = open_pinned(pins, maps::NAT_CONFIG)?;
    let cfg = config
        .get(&0, 0)
        .with_context(|| pins.map(maps::NAT_CONFIG).display().to_string())?;
    let active = SessionMaps::open(pins)?.active_sessions()?;
    let stats: PerCpuArray<MapData, NatStats> = open_pinned(pins, maps::NAT_STATS)?;
    let per_cpu = stats
        .get(&0, 0)
        .with_context(|| pins.map(maps::NAT_STATS).display().to_string())?;
    Ok(show::stats_text(&cfg, active, &per_cpu))
}

fn counters(pins: &Pins) -> anyhow::Result<String> {
    let ifaces: HashMap<MapData, u32, IfaceConfig> = open_pinned(pins, maps::IFACES)?;
    let counters: PerCpuHashMap<MapData, u32, IfCounters> = open_pinned(pins, maps::COUNTERS)?;
    let mut views = Vec::new();
    for (ifindex, cfg) in read_all(&ifaces, || pins.map(maps::IFACES))? {
        let mut sum = IfCounters::default();
        if let Ok(per_cpu) = counters.get(&ifindex, 0) {
            for c in per_cpu.iter() {
                sum.accumulate(c);
            }
        }
        views.push(IfaceView {
            name: ifname(ifindex),
            ifindex,
            role: cfg.role,
            counters: sum,
        });
    }
    views.sort_by_key(|v| v.ifindex);
    Ok(show::counters_text(&views))
}

/// The interface's name in this network namespace, or `#<ifindex>` if it
/// has none here (the agent runs in another namespace, or it was deleted).
fn ifname(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("#{ifindex}");
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}
