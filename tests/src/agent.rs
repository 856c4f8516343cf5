//! Running the real `xcnf-agent` binary in a namespace, and reading its pins.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray};
use xcnf_common::{
    IfCounters, IfaceConfig, maps,
    nat::{self, NatStats, Session, SessionKey},
};

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

/// How a test starts the agent process: the command (in the namespace) that
/// the agent's own arguments (`--config …`, `--instance …`) are appended to.
pub type Launcher<'a> = &'a dyn Fn(&Netns, &Scratch) -> Command;

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
        Self::command_via(scratch, config_yaml, args, Self::plain(ns, scratch))
    }

    /// The agent binary under test, run directly in `ns`: the default
    /// [`Launcher`].
    pub fn plain(ns: &Netns, _scratch: &Scratch) -> Command {
        let mut cmd = ns.command(agent_binary());
        if std::env::var_os("XCNF_EBPF_OBJECT").is_none() {
            cmd.env("XCNF_EBPF_OBJECT", crate::ebpf_object());
        }
        cmd
    }

    /// `launch` (see [`Launcher`]) with the config file (written to
    /// `scratch`) and `args` appended.
    pub fn command_via(
        scratch: &Scratch,
        config_yaml: &str,
        args: &[&str],
        mut launch: Command,
    ) -> Command {
        let config = scratch.path().join("config.yaml");
        std::fs::write(&config, config_yaml).unwrap_or_else(|e| panic!("write config: {e}"));
        launch.arg("--config").arg(&config).args(args);
        launch
    }

    /// Starts the agent and waits until it reports the datapath attached.
    ///
    /// Its output goes to a log file rather than the terminal, so tests
    /// running in parallel do not interleave it; the log is printed when the
    /// agent fails to start and when a test panics with the agent running.
    pub fn start(ns: &Netns, instance: &str, config_yaml: &str, args: &[&str]) -> Self {
        Self::start_via(ns, instance, config_yaml, args, &Self::plain)
    }

    /// [`Agent::start`] with the process started by `launch`: under
    /// dropped capabilities, or from an unpacked image's root filesystem.
    /// The launched process must become the agent (exec, not fork), so the
    /// signals a test sends reach it.
    pub fn start_via(
        ns: &Netns,
        instance: &str,
        config_yaml: &str,
        args: &[&str],
        launch: Launcher<'_>,
    ) -> Self {
        let scratch = Scratch::new(instance);
        let cmd = Self::command_via(&scratch, config_yaml, args, launch(ns, &scratch));
        Self::spawn_until_ready(
            scratch,
            cmd,
            instance,
            &format!("--- config ---\n{config_yaml}"),
        )
    }

    /// The command that runs the agent in `ns` with its config from the
    /// `CNFConfiguration` named `cr_name`, through the API server that
    /// `kubeconfig` points at: `--kubernetes`, the kubeconfig in
    /// `KUBECONFIG` (read by kube's `Client::try_default`), the resource's
    /// name in `XCNF_CR_NAME`, and the namespace from the kubeconfig's
    /// context (`POD_NAMESPACE` is removed, so a test never picks up the
    /// caller's).
    pub fn kubernetes_command(
        ns: &Netns,
        kubeconfig: &Path,
        cr_name: &str,
        args: &[&str],
    ) -> Command {
        let mut cmd = ns.command(agent_binary());
        cmd.arg("--kubernetes")
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("XCNF_CR_NAME", cr_name)
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .env_remove("XCNF_CONFIG");
        if std::env::var_os("XCNF_EBPF_OBJECT").is_none() {
            cmd.env("XCNF_EBPF_OBJECT", crate::ebpf_object());
        }
        cmd
    }

    /// [`Agent::start`] for an agent configured through Kubernetes (see
    /// [`Agent::kubernetes_command`]): waits until the datapath of the
    /// resource's config is attached.
    pub fn start_kubernetes(
        ns: &Netns,
        instance: &str,
        kubeconfig: &Path,
        cr_name: &str,
        args: &[&str],
    ) -> Self {
        let scratch = Scratch::new(instance);
        let cmd = Self::kubernetes_command(ns, kubeconfig, cr_name, args);
        Self::spawn_until_ready(
            scratch,
            cmd,
            instance,
            &format!(
                "--- config ---\nCNFConfiguration {cr_name} through {}",
                kubeconfig.display()
            ),
        )
    }

    /// Spawns `cmd` (an agent command for `instance`) and waits until it
    /// reports the datapath attached; `describe` goes into the panic message.
    fn spawn_until_ready(
        scratch: Scratch,
        mut cmd: Command,
        instance: &str,
        describe: &str,
    ) -> Self {
        let ready = scratch.path().join("ready");
        let log_path = scratch.path().join("agent.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let log2 = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup agent log: {e}"));
        cmd.arg("--instance")
            .arg(instance)
            .arg("--ready-file")
            .arg(&ready)
            .env("NO_COLOR", "1")
            .stdout(log)
            .stderr(log2);
        let mut proc = Proc::spawn(cmd, "xcnf-agent");
        // Loading runs the verifier over the NAT programs, slow on a busy
        // two-core machine.
        if let Err(e) = proc.try_wait_until(Duration::from_secs(60), || ready.exists()) {
            drop(proc);
            let _ = std::fs::remove_dir_all(pin_dir(instance));
            let _ = std::fs::remove_dir_all(state_dir(instance));
            panic!(
                "{e}\n--- agent log ---\n{}\n{describe}",
                abridged(&std::fs::read_to_string(&log_path).unwrap_or_default())
            );
        }
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
        Self::run_to_exit_via(ns, instance, config_yaml, args, &Self::plain)
    }

    /// [`Agent::run_to_exit`] with the process started by `launch`.
    pub fn run_to_exit_via(
        ns: &Netns,
        instance: &str,
        config_yaml: &str,
        args: &[&str],
        launch: Launcher<'_>,
    ) -> Output {
        let scratch = Scratch::new(instance);
        let mut cmd = Self::command_via(&scratch, config_yaml, args, launch(ns, &scratch));
        cmd.arg("--instance").arg(instance).stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run agent: {e}"));
        let _ = std::fs::remove_dir_all(pin_dir(instance));
        let _ = std::fs::remove_dir_all(state_dir(instance));
        out
    }

    pub fn pin_dir(&self) -> PathBuf {
        pin_dir(&self.instance)
    }

    /// Runs an agent for `instance` to completion with its config and output
    /// in `scratch`, removing nothing afterwards: for an agent that must fail
    /// next to a running one of the same instance, whose pins and state
    /// directory must survive. Killed if it has not exited after `timeout`.
    pub fn run_beside(
        ns: &Netns,
        scratch: &Scratch,
        instance: &str,
        config_yaml: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Output {
        let out_path = scratch.path().join("stdout");
        let err_path = scratch.path().join("stderr");
        let file = |p: &Path| {
            std::fs::File::create(p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()))
        };
        let mut cmd = Self::command(ns, scratch, config_yaml, args);
        cmd.arg("--instance")
            .arg(instance)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file(&out_path))
            .stderr(file(&err_path));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run agent: {e}"));
        let deadline = std::time::Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child
                .try_wait()
                .unwrap_or_else(|e| panic!("wait for agent: {e}"))
            {
                break st;
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the agent was still running after {timeout:?}:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read(&err_path).unwrap_or_default(),
        }
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

    /// What the agent printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.path().join("agent.log")).unwrap_or_default()
    }

    /// Replaces the config file the way an editor saves: the new content is
    /// written to a sibling file that is then renamed over the old one, so
    /// the agent never reads a half-written file.
    pub fn replace_config(&self, yaml: &str) {
        let tmp = self.config.with_extension("yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &self.config).unwrap_or_else(|e| {
            panic!("rename {} to {}: {e}", tmp.display(), self.config.display())
        });
    }

    /// Waits until the agent's log has a line for which `pred` holds and
    /// returns it, or fails with the log once `timeout` passes.
    pub fn wait_for_log_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let log = self.log();
            if let Some(l) = log.lines().find(|l| pred(l)) {
                return Ok(l.to_owned());
            }
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "no such line in the agent log after {timeout:?}:\n{}",
                    abridged(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The API socket of this agent (the default under its state directory).
    pub fn api_socket(&self) -> PathBuf {
        state_dir(&self.instance).join("api.sock")
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
        if std::thread::panicking() {
            eprintln!(
                "--- agent {} log ---\n{}",
                self.instance,
                abridged(&self.log())
            );
        }
        if self.remove_pins {
            let _ = std::fs::remove_dir_all(self.pin_dir());
            let _ = std::fs::remove_dir_all(state_dir(&self.instance));
        }
    }
}

/// A log cut to its first and last lines: a verifier rejection logs up to a
/// million instructions, and only its end says why.
pub fn abridged(log: &str) -> String {
    const HEAD: usize = 40;
    const TAIL: usize = 200;
    let lines: Vec<&str> = log.lines().collect();
    if lines.len() <= HEAD + TAIL {
        return log.to_owned();
    }
    format!(
        "{}\n[... {} lines left out ...]\n{}",
        lines[..HEAD].join("\n"),
        lines.len() - HEAD - TAIL,
        lines[lines.len() - TAIL..].join("\n")
    )
}

/// Removes an instance's pins on drop, whoever created them.
#[derive(Debug)]
pub struct PinGuard(pub String);

impl Drop for PinGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(pin_dir(&self.0));
        let _ = std::fs::remove_dir_all(state_dir(&self.0));
    }
}

/// The agent's runtime state directory (API socket, config in force,
/// ownership record) for an instance.
pub fn state_dir(instance: &str) -> PathBuf {
    PathBuf::from("/run/xcnf").join(instance)
}

/// Reads one interface's counters from the pinned map, summed over CPUs.
pub fn read_counters(pin_dir: &Path, ifindex: u32) -> Option<IfCounters> {
    try_read_counters(pin_dir, ifindex).unwrap_or_else(|e| panic!("{e}"))
}

/// Opens a pinned map of the instance whose pins are in `pin_dir`.
fn open_pinned(pin_dir: &Path, name: &maps::MapName) -> Result<Map, String> {
    let path = pin_dir.join(name.pin);
    let data = MapData::from_pin(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
    Map::from_map_data(data).map_err(|e| format!("{}: {e}", path.display()))
}

/// The pinned `ifaces` entry of `ifindex`; `Ok(None)` when it has none.
pub fn read_iface(pin_dir: &Path, ifindex: u32) -> Result<Option<IfaceConfig>, String> {
    let ifaces: HashMap<_, u32, IfaceConfig> =
        HashMap::try_from(open_pinned(pin_dir, &maps::IFACES)?)
            .map_err(|e| format!("ifaces map: {e}"))?;
    Ok(ifaces.get(&ifindex, 0).ok())
}

/// [`read_counters`] without panicking (for diagnostics while panicking):
/// `Ok(None)` when the interface has no entry.
pub fn try_read_counters(pin_dir: &Path, ifindex: u32) -> Result<Option<IfCounters>, String> {
    let Some(cfg) = read_iface(pin_dir, ifindex)? else {
        return Ok(None);
    };
    let m: PerCpuArray<_, IfCounters> =
        PerCpuArray::try_from(open_pinned(pin_dir, &maps::COUNTERS)?)
            .map_err(|e| format!("counters map: {e}"))?;
    let per_cpu = m
        .get(&cfg.slot, 0)
        .map_err(|e| format!("counters[{}] of ifindex {ifindex}: {e}", cfg.slot))?;
    Ok(Some(IfCounters::summed(per_cpu.iter())))
}

/// Both halves of every session in the pinned `nat_sessions` map.
pub fn read_sessions(pin_dir: &Path) -> Result<Vec<(SessionKey, Session)>, String> {
    let m: HashMap<_, SessionKey, Session> =
        HashMap::try_from(open_pinned(pin_dir, &maps::NAT_SESSIONS)?)
            .map_err(|e| format!("nat_sessions: {e}"))?;
    m.iter()
        .map(|r| r.map_err(|e| format!("nat_sessions: {e}")))
        .collect()
}

/// The route cache control entry (`route_ctl`).
pub fn read_route_ctl(pin_dir: &Path) -> Result<nat::RouteCtl, String> {
    let m: Array<_, nat::RouteCtl> = Array::try_from(open_pinned(pin_dir, &maps::ROUTE_CTL)?)
        .map_err(|e| format!("route_ctl: {e}"))?;
    m.get(&0, 0).map_err(|e| format!("route_ctl[0]: {e}"))
}

/// The global NAT event counters (`nat_stats`), summed over CPUs.
pub fn read_nat_stats(pin_dir: &Path) -> Result<NatStats, String> {
    let m: PerCpuArray<_, NatStats> =
        PerCpuArray::try_from(open_pinned(pin_dir, &maps::NAT_STATS)?)
            .map_err(|e| format!("nat_stats: {e}"))?;
    let per_cpu = m.get(&0, 0).map_err(|e| format!("nat_stats[0]: {e}"))?;
    Ok(NatStats::summed(per_cpu.iter()))
}

/// The pool address the running datapath has paired `inside` with (its
/// `nat_hosts` entry, resolved through the pinned `nat_pools`): what the
/// host's translated traffic must carry. Only known once the host has sent a
/// translated flow.
pub fn paired_address_in_maps(
    pin_dir: &Path,
    inside: std::net::Ipv4Addr,
) -> Result<std::net::Ipv4Addr, String> {
    let config: Array<_, nat::NatConfig> =
        Array::try_from(open_pinned(pin_dir, &maps::NAT_CONFIG)?)
            .map_err(|e| format!("nat_config: {e}"))?;
    let config = config
        .get(&0, 0)
        .map_err(|e| format!("nat_config[0]: {e}"))?;
    let pools: Array<_, nat::PoolRange> = Array::try_from(open_pinned(pin_dir, &maps::NAT_POOLS)?)
        .map_err(|e| format!("nat_pools: {e}"))?;
    let hosts: aya::maps::HashMap<_, [u8; 4], nat::HostPairing> =
        aya::maps::HashMap::try_from(open_pinned(pin_dir, &maps::NAT_HOSTS)?)
            .map_err(|e| format!("nat_hosts: {e}"))?;
    let index = hosts
        .get(&inside.octets(), 0)
        .map_err(|e| format!("nat_hosts[{inside}]: {e} (has the host sent a translated flow?)"))?
        .index;
    for i in 0..config.pool_ranges {
        let r = pools
            .get(&i, 0)
            .map_err(|e| format!("nat_pools[{i}]: {e}"))?;
        if (r.base..r.base.saturating_add(r.count)).contains(&index) {
            let first = u32::from(std::net::Ipv4Addr::from(r.first));
            return Ok(std::net::Ipv4Addr::from(first + (index - r.base)));
        }
    }
    Err(format!(
        "pool index {index} of {} is in none of the {} ranges",
        config.pool_addrs, config.pool_ranges
    ))
}

/// `inside`'s `nat_hosts` entry, if the datapath has paired it.
pub fn host_pairing(
    pin_dir: &Path,
    inside: std::net::Ipv4Addr,
) -> Result<Option<nat::HostPairing>, String> {
    let hosts: aya::maps::HashMap<_, [u8; 4], nat::HostPairing> =
        aya::maps::HashMap::try_from(open_pinned(pin_dir, &maps::NAT_HOSTS)?)
            .map_err(|e| format!("nat_hosts: {e}"))?;
    match hosts.get(&inside.octets(), 0) {
        Ok(p) => Ok(Some(p)),
        Err(aya::maps::MapError::KeyNotFound) => Ok(None),
        Err(e) => Err(format!("nat_hosts[{inside}]: {e}")),
    }
}

fn ip4(a: [u8; 4]) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::from(a)
}

/// One session half in a line: the tuple as it arrives, `=>` as it leaves.
pub fn format_session(k: &SessionKey, v: &Session) -> String {
    let proto = match k.proto {
        nat::proto::TCP => "tcp".to_owned(),
        nat::proto::UDP => "udp".to_owned(),
        nat::proto::ICMP => "icmp".to_owned(),
        p => format!("proto {p}"),
    };
    let dir = match k.dir {
        nat::role::INSIDE => "in ",
        nat::role::OUTSIDE => "out",
        _ => "?  ",
    };
    format!(
        "{proto} {dir} {}:{} -> {}:{} => {}:{} -> {}:{} kind={:#x} flags={:#x} packets={} bytes={}",
        ip4(k.saddr),
        k.sport,
        ip4(k.daddr),
        k.dport,
        ip4(v.saddr),
        v.sport,
        ip4(v.daddr),
        v.dport,
        v.kind,
        v.flags,
        v.packets,
        v.bytes
    )
}

/// `xcnfctl` next to the agent binary, if it has been built.
pub fn xcnfctl_binary() -> Option<PathBuf> {
    let p = agent_binary().with_file_name("xcnfctl");
    p.exists().then_some(p)
}

/// `xcnfctl <args> --instance <instance>` run in the agent's namespace `ns`
/// (where the ifindexes in the maps name the right interfaces): its stdout,
/// or why not.
pub fn xcnfctl(ns: &Netns, instance: &str, args: &[&str]) -> Result<String, String> {
    let bin = xcnfctl_binary().ok_or("xcnfctl is not built")?;
    let out = ns
        .command(&bin)
        .args(args)
        .args(["--instance", instance])
        .output()
        .map_err(|e| format!("run {}: {e}", bin.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} --instance {instance}: {}: {}{}",
            bin.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `xcnfctl <args> --instance <instance>` in `ns` with its whole outcome
/// (exit status, stdout, stderr), for checks of failures and exit codes.
pub fn xcnfctl_output(ns: &Netns, instance: &str, args: &[&str]) -> Output {
    let bin = xcnfctl_binary()
        .unwrap_or_else(|| panic!("xcnfctl is not built: run `cargo build -p xcnf-agent --bins`"));
    ns.command(&bin)
        .args(args)
        .args(["--instance", instance])
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

/// `xcnfctl -o json status` in `ns`: (key, state) of every item, or why not.
pub fn item_states(ns: &Netns, instance: &str) -> Result<Vec<(String, String)>, String> {
    let text = xcnfctl(ns, instance, &["-o", "json", "status"])?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("xcnfctl status: {e}: {text}"))?;
    let items = v
        .as_array()
        .ok_or_else(|| format!("xcnfctl status: not a list: {text}"))?;
    Ok(items
        .iter()
        .map(|s| {
            let text = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
            (text("key"), text("state"))
        })
        .collect())
}

/// Waits until the agent reports every item configured (for items such as
/// VPP's or NSM's, which come after the agent's ready file); on timeout, the
/// items that are not, with their states.
pub fn wait_all_configured(ns: &Netns, instance: &str, timeout: Duration) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let last = item_states(ns, instance);
        if let Ok(s) = &last
            && !s.is_empty()
            && s.iter().all(|(_, state)| state == "configured")
        {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            return Err(match last {
                Ok(s) => format!(
                    "not every item configured after {timeout:?}: {}",
                    s.iter()
                        .filter(|(_, st)| st != "configured")
                        .map(|(k, st)| format!("{k} {st}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Err(e) => e,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `xcnfctl nat sessions --instance <instance>` in `ns`.
pub fn xcnfctl_sessions(ns: &Netns, instance: &str) -> Result<String, String> {
    xcnfctl(ns, instance, &["nat", "sessions"])
}

/// The ifindex of `ifname` in `ns`, without panicking.
fn try_ifindex(ns: &Netns, ifname: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-n", ns.name(), "-o", "link", "show", ifname])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Everything that explains a NAT failure: per-interface counters of
/// `ifnames` in `cnf`, `nat_stats`, the sessions (and `xcnfctl`'s view), and
/// `ip -s link` of every namespace. Never panics.
pub fn nat_report(
    pin_dir: &Path,
    instance: &str,
    cnf: &Netns,
    ifnames: &[&str],
    all: &[&Netns],
) -> String {
    use std::fmt::Write as _;
    let mut r = String::new();
    for ifname in ifnames {
        match try_ifindex(cnf, ifname).map(|i| try_read_counters(pin_dir, i)) {
            Some(Ok(Some(c))) => {
                let _ = writeln!(r, "counters {ifname}: {c:#?}");
            }
            Some(Ok(None)) => {
                let _ = writeln!(r, "counters {ifname}: no entry");
            }
            Some(Err(e)) => {
                let _ = writeln!(r, "counters {ifname}: {e}");
            }
            None => {
                let _ = writeln!(r, "counters {ifname}: no such interface in {}", cnf.name());
            }
        }
    }
    match read_nat_stats(pin_dir) {
        Ok(s) => {
            let _ = writeln!(r, "nat_stats: {s:#?}");
        }
        Err(e) => {
            let _ = writeln!(r, "nat_stats: {e}");
        }
    }
    match read_sessions(pin_dir) {
        Ok(v) => {
            let _ = writeln!(r, "nat_sessions: {} halves", v.len());
            for (k, s) in v.iter().take(64) {
                let _ = writeln!(r, "  {}", format_session(k, s));
            }
        }
        Err(e) => {
            let _ = writeln!(r, "nat_sessions: {e}");
        }
    }
    match xcnfctl_sessions(cnf, instance) {
        Ok(t) => {
            let _ = writeln!(r, "xcnfctl nat sessions:\n{t}");
        }
        Err(e) => {
            let _ = writeln!(r, "xcnfctl nat sessions: {e}");
        }
    }
    for ns in all {
        if let Ok(out) = Command::new("ip")
            .args(["-n", ns.name(), "-s", "link"])
            .output()
        {
            let _ = writeln!(
                r,
                "ip -n {} -s link:\n{}",
                ns.name(),
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
    r
}

/// Prints [`nat_report`] if the test panics while this guard is alive.
/// Declare it after the agent and the chain, so it drops (and reports)
/// before they are torn down.
#[derive(Debug)]
pub struct ReportOnPanic<'a> {
    pub agent: &'a Agent,
    pub cnf: &'a Netns,
    pub ifnames: Vec<&'static str>,
    pub namespaces: Vec<&'a Netns>,
}

impl Drop for ReportOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- NAT state of {} ---\n{}",
                self.agent.instance,
                nat_report(
                    &self.agent.pin_dir(),
                    &self.agent.instance,
                    self.cnf,
                    &self.ifnames,
                    &self.namespaces
                )
            );
        }
    }
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

/// The `nat44` section of a test config, built up call by call.
#[derive(Clone, Debug)]
pub struct Nat44 {
    inside: Vec<String>,
    outside: Vec<String>,
    lines: Vec<String>,
    pools: Vec<String>,
    statics: Vec<String>,
    identities: Vec<String>,
    timeouts: Vec<String>,
}

impl Default for Nat44 {
    /// The chain's roles: `inside` (c0) and `outside` (c1), nothing else.
    fn default() -> Self {
        Self {
            inside: vec!["inside".into()],
            outside: vec!["outside".into()],
            lines: Vec::new(),
            pools: Vec::new(),
            statics: Vec::new(),
            identities: Vec::new(),
            timeouts: Vec::new(),
        }
    }
}

impl Nat44 {
    /// A pool from `first` to `last`, with an optional port range `"a-b"`.
    pub fn pool(mut self, first: &str, last: &str, ports: Option<&str>) -> Self {
        let ports = ports
            .map(|p| format!(", ports: \"{p}\""))
            .unwrap_or_default();
        self.pools
            .push(format!("      - {{first: {first}, last: {last}{ports}}}"));
        self
    }

    /// A static mapping: `protocol` tcp/udp/icmp/any, endpoints `ip[:port]`.
    pub fn static_mapping(mut self, protocol: &str, external: &str, local: &str) -> Self {
        self.statics.push(format!(
            "      - {{protocol: {protocol}, external: \"{external}\", local: \"{local}\"}}"
        ));
        self
    }

    pub fn identity(mut self, protocol: &str, address: &str, port: Option<u16>) -> Self {
        let port = port.map(|p| format!(", port: {p}")).unwrap_or_default();
        self.identities.push(format!(
            "      - {{protocol: {protocol}, address: {address}{port}}}"
        ));
        self
    }

    /// A timeout: `key` is tcpEstablished, tcpTransitory, udp or icmp.
    pub fn timeout(mut self, key: &str, value: &str) -> Self {
        self.timeouts.push(format!("{key}: {value}"));
        self
    }

    pub fn endpoint_dependent(mut self) -> Self {
        self.lines.push("    mapping: endpoint-dependent".into());
        self
    }

    pub fn max_sessions(mut self, n: u32) -> Self {
        self.lines.push(format!("    maxSessions: {n}"));
        self
    }

    /// Adds a logical interface name to the inside role.
    pub fn inside(mut self, logical: &str) -> Self {
        self.inside.push(logical.to_owned());
        self
    }

    /// The section, indented to sit under `spec:`.
    pub fn yaml(&self) -> String {
        let mut y = format!(
            "  nat44:\n    inside: [{}]\n    outside: [{}]\n",
            self.inside.join(", "),
            self.outside.join(", ")
        );
        for (key, items) in [
            ("pools", &self.pools),
            ("staticMappings", &self.statics),
            ("identityMappings", &self.identities),
        ] {
            if !items.is_empty() {
                y.push_str(&format!("    {key}:\n{}\n", items.join("\n")));
            }
        }
        if !self.timeouts.is_empty() {
            y.push_str(&format!("    timeouts: {{{}}}\n", self.timeouts.join(", ")));
        }
        for l in &self.lines {
            y.push_str(l);
            y.push('\n');
        }
        y
    }
}

/// [`chain_config`] with a `nat44` section: c0 is `inside`, c1 `outside`.
pub fn nat_chain_config(name: &str, datapath: &str, nat: &Nat44) -> String {
    format!("{}{}", chain_config(name, datapath), nat.yaml())
}
