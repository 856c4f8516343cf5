//! `cargo xtask bench`: builds what the benchmark loads and runs, then runs
//! `xcnf-bench` (tests/src/bin) with the options given here.
//!
//! Not a test and never run by `cargo xtask test`: it takes minutes, needs
//! the machine to itself, and its numbers are reported against targets
//! rather than asserted.

use std::{
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context as _, Result, bail};

use crate::{build, setup};

/// Options of the benchmark; unset ones take xcnf-bench's defaults.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only the BPF_PROG_TEST_RUN part (`prog`), the end-to-end part
    /// (`e2e`) or the agent's control plane (`control`).
    #[arg(long, value_parser = ["prog", "e2e", "control"])]
    only: Option<String>,
    /// End-to-end rounds; every mode runs once per round, interleaved [default: 5].
    #[arg(long)]
    rounds: Option<u32>,
    /// Measured seconds per end-to-end run [default: 5].
    #[arg(long)]
    seconds: Option<f64>,
    /// Seconds of traffic before each end-to-end measurement [default: 1].
    #[arg(long)]
    warmup: Option<f64>,
    /// UDP flows trafgen cycles through [default: 59000].
    #[arg(long)]
    flows: Option<u32>,
    /// End-to-end modes, comma-separated
    /// [default: drop,kernel,nft,xcnf-tc,xcnf-tc-nat,xcnf-xdp-nat].
    #[arg(long)]
    modes: Option<String>,
    /// Session table sizes of the test-run part, comma-separated [default: 1000,1000000].
    #[arg(long)]
    sessions: Option<String>,
    /// Test-run calls per measurement [default: 4000].
    #[arg(long)]
    calls: Option<u32>,
    /// Repetitions per test-run call, at most 250 [default: 200].
    #[arg(long)]
    repeat: Option<u32>,
    /// First packets measured per hook and table size [default: 10000].
    #[arg(long)]
    new_flows: Option<u32>,
    /// Sessions in the cycle of the different-session case, and its packets [default: 200000].
    #[arg(long)]
    spread: Option<u32>,
    /// Test-run rounds, table sizes alternating [default: 3].
    #[arg(long)]
    prog_rounds: Option<u32>,
    /// Static mappings in the control-plane config [default: 10000].
    #[arg(long)]
    mappings: Option<u32>,
    /// Cold and warm agent starts each [default: 5].
    #[arg(long)]
    starts: Option<u32>,
    /// gRPC applies per mode, rounded up to an even count [default: 20].
    #[arg(long)]
    applies: Option<u32>,
    /// Seconds the agent idles before its memory is read [default: 3].
    #[arg(long)]
    idle: Option<f64>,
}

impl Args {
    fn to_argv(&self) -> Vec<String> {
        let mut v = Vec::new();
        let mut opt = |flag: &str, val: Option<String>| {
            if let Some(val) = val {
                v.push(format!("--{flag}"));
                v.push(val);
            }
        };
        opt("only", self.only.clone());
        opt("rounds", self.rounds.map(|x| x.to_string()));
        opt("seconds", self.seconds.map(|x| x.to_string()));
        opt("warmup", self.warmup.map(|x| x.to_string()));
        opt("flows", self.flows.map(|x| x.to_string()));
        opt("modes", self.modes.clone());
        opt("sessions", self.sessions.clone());
        opt("calls", self.calls.map(|x| x.to_string()));
        opt("repeat", self.repeat.map(|x| x.to_string()));
        opt("new-flows", self.new_flows.map(|x| x.to_string()));
        opt("spread", self.spread.map(|x| x.to_string()));
        opt("prog-rounds", self.prog_rounds.map(|x| x.to_string()));
        opt("mappings", self.mappings.map(|x| x.to_string()));
        opt("starts", self.starts.map(|x| x.to_string()));
        opt("applies", self.applies.map(|x| x.to_string()));
        opt("idle", self.idle.map(|x| x.to_string()));
        v
    }

    fn runs_control(&self) -> bool {
        self.only.as_deref().is_none_or(|p| p == "control")
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn run(args: &Args) -> Result<()> {
    if !setup::is_root() {
        bail!("cargo xtask bench needs root: it creates network namespaces and loads eBPF");
    }
    setup::ensure_tools()?;
    let object = build::ebpf(true)?;
    build::userspace()?;
    let root = setup::root();
    // The control plane is measured as shipped: a debug agent parses and
    // plans several times slower and holds more memory.
    let control_agent = root.join("target/release/xcnf-agent");
    if args.runs_control() {
        setup::run(Command::new(env!("CARGO")).current_dir(&root).args([
            "build",
            "--release",
            "--package",
            "xcnf-agent",
            "--bin",
            "xcnf-agent",
        ]))?;
    }
    // The benchmark is also the control plane's gRPC client, so it is built
    // like a user's client: a debug build's protobuf encoding of the 10 000
    // mappings alone added 10–20 ms to each timed replace.
    setup::run(Command::new(env!("CARGO")).current_dir(&root).args([
        "build",
        "--release",
        "--package",
        "xcnf-tests",
        "--bin",
        "xcnf-bench",
    ]))?;
    let bin = root.join("target/release/xcnf-bench");
    // Ctrl-C reaches xcnf-bench too (same process group), which stops and
    // cleans up; this process only has to outlive it to report.
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let status = Command::new(&bin)
        .args(args.to_argv())
        .env("XCNF_EBPF_OBJECT", &object)
        .env("XCNF_AGENT_BIN", root.join("target/debug/xcnf-agent"))
        .env("XCNF_BENCH_AGENT", &control_agent)
        .env("PATH", setup::path_with_sbin())
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    if !status.success() {
        bail!("{} failed: {status}", bin.display());
    }
    Ok(())
}
