//! `xcnf-agent`: reads the declarative config and runs the eBPF datapath.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use xcnf_agent::{
    config::Config,
    datapath::{self, BPFFS_DEFAULT, Datapath, Pins, Target},
    linux::{LinuxError, Netlink},
    nat::{NatPlan, sweep, tables::SessionMaps},
};

/// xcnf CNF agent: attaches XDP/TC forwarding to the interfaces in its config.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The configuration file (YAML or JSON, schema xcnf.io/v1alpha1).
    #[arg(long, env = "XCNF_CONFIG", required_unless_present = "cleanup")]
    config: Option<PathBuf>,
    /// Instance name for the pin directory; defaults to the config's metadata.name.
    #[arg(long, env = "XCNF_INSTANCE", required_if_eq("cleanup", "true"))]
    instance: Option<String>,
    /// Where bpffs is (or gets) mounted.
    #[arg(long, env = "XCNF_BPFFS", default_value = BPFFS_DEFAULT)]
    bpffs: PathBuf,
    /// The eBPF object; by default searched next to the binary and in the build tree.
    #[arg(long, env = "XCNF_EBPF_OBJECT")]
    ebpf_object: Option<PathBuf>,
    /// On exit, leave links and maps pinned so forwarding continues.
    #[arg(long, env = "XCNF_KEEP_DATAPATH")]
    keep_datapath: bool,
    /// Level of the eBPF programs' own logs; `off` lets the verifier remove them.
    #[arg(long, env = "XCNF_EBPF_LOG_LEVEL", value_enum, default_value_t = EbpfLogLevel::Off)]
    ebpf_log_level: EbpfLogLevel,
    /// Touch this file once the datapath is attached (for readiness probes).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Remove the instance's pins, detaching its datapath, and exit.
    #[arg(long)]
    cleanup: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum EbpfLogLevel {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl EbpfLogLevel {
    /// aya-log's numeric levels: Error = 1 ... Trace = 5, 0 = nothing.
    fn as_u8(self) -> u8 {
        self as u8
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xcnf-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line naming the file, field or interface: the whole cause chain.
            eprintln!("xcnf-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.cleanup {
        let instance = args.instance.as_deref().unwrap_or_default();
        let pins = Pins::new(&args.bpffs, instance);
        pins.remove_all()?;
        info!(pins = %pins.dir().display(), "removed the instance's pins");
        return Ok(());
    }
    let Some(config_path) = args.config.as_deref() else {
        bail!("--config is required");
    };
    let cfg = Config::load(config_path)?;
    let nat =
        NatPlan::compile(&cfg).map_err(|errors| xcnf_agent::config::ConfigError::Invalid {
            path: config_path.to_path_buf(),
            errors,
        })?;
    let instance = args.instance.clone().unwrap_or(cfg.metadata.name.clone());
    if args.check {
        println!("{}: ok", config_path.display());
        return Ok(());
    }

    let netlink = Netlink::connect()?;
    let targets = resolve_targets(&netlink, &cfg, config_path).await?;
    let object = datapath::find_object(args.ebpf_object.as_deref())?;
    let opts = datapath::Options {
        object: object.clone(),
        pins: Pins::new(&args.bpffs, &instance),
        log_level: args.ebpf_log_level.as_u8(),
        nat,
    };
    info!(object = %object.display(), instance = %instance, pins = %opts.pins.dir().display(), "loading datapath");
    let mut dp = Datapath::start(&opts, &targets)?;
    let sweeper = if opts.nat.enabled() {
        match SessionMaps::open(&opts.pins) {
            Ok(maps) => {
                let (stop, stopped) = tokio::sync::oneshot::channel();
                info!(
                    interval_ms = sweep::interval(&opts.nat.timeouts).as_millis() as u64,
                    "NAT session sweeper started"
                );
                let task = tokio::spawn(sweep::run(maps, opts.nat.timeouts, stopped));
                Some((stop, task))
            }
            Err(e) => {
                if let Err(e) = dp.shutdown(args.keep_datapath) {
                    warn!(error = %e, "could not take the datapath down");
                }
                return Err(e.into());
            }
        }
    } else {
        None
    };

    if args.ebpf_log_level.as_u8() > 0 {
        spawn_ebpf_logger(&mut dp);
    }
    if let Some(f) = &args.ready_file {
        std::fs::write(f, b"ready\n").with_context(|| format!("writing {}", f.display()))?;
    }
    info!(interfaces = targets.len(), "datapath ready");

    wait_for_shutdown().await?;
    if let Some((stop, task)) = sweeper {
        let _ = stop.send(());
        // Let a sweep in progress finish before the pins go.
        let _ = task.await;
    }
    match dp.counters() {
        Ok(c) => {
            for (ifname, c) in c {
                info!(
                    interface = %ifname,
                    rx = c.rx.packets,
                    forwarded = c.forwarded.packets,
                    passed = c.passed.total(),
                    dropped = c.dropped.total(),
                    "counters at exit"
                );
            }
        }
        Err(e) => warn!(error = %e, "could not read counters"),
    }
    if let Some(f) = &args.ready_file {
        let _ = std::fs::remove_file(f);
    }
    dp.shutdown(args.keep_datapath)?;
    Ok(())
}

/// Looks up every enabled kernel interface; reports all missing ones at once.
async fn resolve_targets(
    netlink: &Netlink,
    cfg: &Config,
    path: &Path,
) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    let mut problems = Vec::new();
    for (i, itf) in cfg.spec.interfaces.iter().enumerate() {
        let Some(k) = &itf.kernel else { continue };
        if !itf.is_enabled() {
            info!(interface = %itf.name, "disabled in config, not attaching");
            continue;
        }
        match netlink.link(&k.host_if_name).await {
            Ok(link) => {
                let (hook, why) = datapath::choose_hook(&link, itf.datapath.as_ref());
                info!(interface = %itf.name, host_if = %link.name, kind = link.kind.as_deref().unwrap_or("device"), %hook, why, "hook chosen");
                if link.is_veth() && hook == datapath::HookChoice::Xdp(datapath::XdpAttach::Native)
                {
                    warn!(
                        interface = %itf.name,
                        host_if = %link.name,
                        "native XDP on veth: the peer needs GRO on (or its own XDP program) to receive redirected frames, \
                         and senders need TX checksum offload off, because XDP frames lose CHECKSUM_PARTIAL; hook auto uses TC here"
                    );
                }
                if !link.up {
                    warn!(interface = %itf.name, host_if = %link.name, "interface is down");
                }
                targets.push(Target {
                    name: itf.name.clone(),
                    link,
                    hook,
                });
            }
            Err(e @ LinuxError::NoSuchInterface { .. }) => {
                problems.push(format!("spec.interfaces[{i}].kernel.hostIfName: {e}"))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !problems.is_empty() {
        bail!("{}: {}", path.display(), problems.join("; "));
    }
    Ok(targets)
}

/// Forwards the programs' aya-log records into `tracing` (via the `log` bridge).
fn spawn_ebpf_logger(dp: &mut Datapath) {
    let logger = match aya_log::EbpfLogger::init(dp.ebpf_mut()) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "eBPF logging unavailable");
            return;
        }
    };
    // SAFETY: the AsyncFd owns the logger, which owns the ring buffer fd, so
    // the fd stays open exactly as long as it is registered.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            warn!(error = %e, "eBPF logging unavailable");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
}

async fn wait_for_shutdown() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    Ok(())
}
