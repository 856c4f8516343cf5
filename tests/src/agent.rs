//! Running the real `xcnf-agent` binary in a namespace, and reading its pins.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use aya::maps::{Map, MapData, PerCpuHashMap};
use xcnf_common::{IfCounters, maps};

use crate::{
    netns::{Netns, Proc},
    workspace_root,
};

/// The agent under test: `$XCNF_AGENT_BIN`, else the debug build.
pub fn agent_binary() -> PathBuf {
    let p = std::env::var_os("XCNF_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/debug/xcnf-agent"));
    assert!(
        p.exists(),
        "agent binary {} not found: run `cargo build -p xcnf-agent` (or `cargo xtask test`)",
        p.display()
    );
    p
}

/// The instance's pin directory under the host bpffs.
pub fn pin_dir(instance: &str) -> PathBuf {
    Path::new("/sys/fs/bpf/xcnf").join(instance)
}

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("xcnf-{name}"));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running agent. Dropping it stops the agent and removes the instance's
/// pins even if the agent was told to keep them, so nothing outlives a test.
#[derive(Debug)]
pub struct Agent {
    proc: Option<Proc>,
    pub instance: String,
    pub config: PathBuf,
    scratch: Scratch,
    remove_pins: bool,
}

impl Agent {
    /// The command that runs the agent in `ns` with `config_yaml`.
    pub fn command(ns: &Netns, scratch: &Scratch, config_yaml: &str, args: &[&str]) -> Command {
        let config = scratch.path().join("config.yaml");
        std::fs::write(&config, config_yaml).unwrap_or_else(|e| panic!("write config: {e}"));
        let mut cmd = ns.command(agent_binary());
        cmd.arg("--config").arg(&config).args(args);
        if std::env::var_os("XCNF_EBPF_OBJECT").is_none() {
            cmd.env("XCNF_EBPF_OBJECT", crate::ebpf_object());
        }
        cmd
    }

    /// Starts the agent and waits until it reports the datapath attached.
    pub fn start(ns: &Netns, instance: &str, config_yaml: &str, args: &[&str]) -> Self {
        let scratch = Scratch::new(instance);
        let ready = scratch.path().join("ready");
        let mut cmd = Self::command(ns, &scratch, config_yaml, args);
        cmd.arg("--instance")
            .arg(instance)
            .arg("--ready-file")
            .arg(&ready);
        let mut proc = Proc::spawn(cmd, "xcnf-agent");
        proc.wait_until(Duration::from_secs(30), || ready.exists());
        Self {
            proc: Some(proc),
            instance: instance.to_owned(),
            config: scratch.path().join("config.yaml"),
            scratch,
            remove_pins: true,
        }
    }

    /// Runs the agent to completion (for inputs that must make it fail).
    pub fn run_to_exit(ns: &Netns, instance: &str, config_yaml: &str, args: &[&str]) -> Output {
        let scratch = Scratch::new(instance);
        let mut cmd = Self::command(ns, &scratch, config_yaml, args);
        cmd.arg("--instance").arg(instance).stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run agent: {e}"));
        let _ = std::fs::remove_dir_all(pin_dir(instance));
        out
    }

    pub fn pin_dir(&self) -> PathBuf {
        pin_dir(&self.instance)
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::id)
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut p = self
            .proc
            .take()
            .unwrap_or_else(|| panic!("agent already stopped"));
        p.signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("agent did not exit after SIGTERM"))
    }

    /// `kill -9`: the agent gets no chance to clean up.
    pub fn kill9(&mut self) {
        let mut p = self
            .proc
            .take()
            .unwrap_or_else(|| panic!("agent already stopped"));
        let _ = p.signal_and_wait(libc::SIGKILL, Duration::from_secs(10));
    }

    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// Leaves the pins in place when this handle drops (for a test that hands
    /// the datapath to a later agent; guard it with a [`PinGuard`]).
    pub fn keep_pins(&mut self) {
        self.remove_pins = false;
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        drop(self.proc.take());
        if self.remove_pins {
            let _ = std::fs::remove_dir_all(self.pin_dir());
        }
    }
}

/// Removes an instance's pins on drop, whoever created them.
#[derive(Debug)]
pub struct PinGuard(pub String);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(pin_dir(&self.0));
    }
}

/// Reads one interface's counters from the pinned map, summed over CPUs.
pub fn read_counters(pin_dir: &Path, ifindex: u32) -> Option<IfCounters> {
    let data = MapData::from_pin(pin_dir.join(maps::COUNTERS.pin))
        .unwrap_or_else(|e| panic!("open pinned counters: {e}"));
    let map = Map::PerCpuHashMap(data);
    let m: PerCpuHashMap<_, u32, IfCounters> =
        PerCpuHashMap::try_from(map).unwrap_or_else(|e| panic!("counters map: {e}"));
    let per_cpu = m.get(&ifindex, 0).ok()?;
    let mut sum = IfCounters::default();
    for c in per_cpu.iter() {
        sum.accumulate(c);
    }
    Some(sum)
}

/// A config for the chain's cnf with both interfaces on the given hook.
pub fn chain_config(name: &str, datapath: &str) -> String {
    format!(
        "apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata:
  name: {name}
spec:
  interfaces:
    - name: inside
      kernel: {{hostIfName: c0}}
      datapath: {datapath}
    - name: outside
      kernel: {{hostIfName: c1}}
      datapath: {datapath}
"
    )
}
