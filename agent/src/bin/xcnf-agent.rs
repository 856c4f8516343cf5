//! `xcnf-agent`: reads the declarative config and runs the eBPF datapath.

use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context as _, bail};
use clap::{Parser, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};
use xcnf_agent::{
    api,
    config::{Config, ConfigError},
    datapath::{self, BPFFS_DEFAULT, Pins, route_ctl},
    k8s,
    linux::{Events, FibChanges, Netlink},
    nsm,
    reconcile::{
        self,
        system::{DatapathSettings, System},
    },
    source, vpp,
};

/// xcnf CNF agent: attaches XDP/TC forwarding to the interfaces in its config.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The configuration file (YAML or JSON, schema xcnf.io/v1alpha1),
    /// watched for changes. Without it, the config comes over the API (and
    /// the one in force before a restart is restored).
    #[arg(long, env = "XCNF_CONFIG", conflicts_with = "kubernetes")]
    config: Option<PathBuf>,
    /// Take the config from the CNFConfiguration bound to this pod (in-cluster
    /// config, or KUBECONFIG), apply every new generation and report in its
    /// status. The resource is named by --cr-name, or else by the pod
    /// annotation xcnf.io/config read from the pod POD_NAME.
    #[arg(long, env = "XCNF_KUBERNETES")]
    kubernetes: bool,
    /// With --kubernetes: the CNFConfiguration's name (downward API).
    #[arg(long, env = "XCNF_CR_NAME")]
    cr_name: Option<String>,
    /// With --kubernetes: the namespace of the resource and the pod; default
    /// the client's (in a pod, its service account's).
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// With --kubernetes and no --cr-name: this pod, read for its
    /// xcnf.io/config annotation.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// Instance name for the pin and state directories; defaults to the
    /// config's metadata.name (with --kubernetes, the resource's name).
    #[arg(long, env = "XCNF_INSTANCE", required_if_eq("cleanup", "true"))]
    instance: Option<String>,
    /// Runtime state (API socket, config in force, ownership record);
    /// default /run/xcnf/<instance>.
    #[arg(long, env = "XCNF_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The gRPC API's unix socket (mode 0600); default <state-dir>/api.sock.
    #[arg(long, env = "XCNF_API_SOCKET")]
    api_socket: Option<PathBuf>,
    /// Where bpffs is (or gets) mounted.
    #[arg(long, env = "XCNF_BPFFS", default_value = BPFFS_DEFAULT)]
    bpffs: PathBuf,
    /// The eBPF object; by default searched next to the binary and in the build tree.
    #[arg(long, env = "XCNF_EBPF_OBJECT")]
    ebpf_object: Option<PathBuf>,
    /// VPP's binary-API socket, for `backend: vpp` (memif) interfaces. The
    /// agent connects only when the config has such interfaces.
    #[arg(long, env = "XCNF_VPP_API_SOCKET", default_value = xcnf_agent::vpp::DEFAULT_SOCKET)]
    vpp_api_socket: PathBuf,
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
    /// nsmgr's socket, for the config's NSM interfaces.
    #[arg(long, env = "NSM_SOCKET", default_value = nsm::DEFAULT_SOCKET)]
    nsm_socket: String,
    /// This agent's name in NSM (connection ids, endpoint names); default
    /// POD_NAME, else the instance name.
    #[arg(long, env = "NSM_NAME")]
    nsm_name: Option<String>,
    /// Talk NSM without mTLS and path tokens. Lab setups only: any local
    /// process can then impersonate nsmgr or an endpoint. Off by default;
    /// without it, NSM runs mTLS with SVIDs from --spiffe-endpoint-socket.
    #[arg(long, env = "XCNF_NSM_INSECURE")]
    nsm_insecure: bool,
    /// The SPIFFE Workload API (unix:///path) NSM's mTLS certificates and
    /// token keys come from, as SPIRE's agent serves it to the pod.
    #[arg(long, env = "SPIFFE_ENDPOINT_SOCKET")]
    spiffe_endpoint_socket: Option<String>,
}

/// How long a stopping agent waits for open API calls to finish.
const API_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

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
    let file_config = match args.config.as_deref() {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            // Validated in full before anything is touched: the items the
            // reconciler plans from are exactly what validation resolved.
            let cfg = Config::from_text(path, &text)?;
            Some((path.to_path_buf(), text, cfg))
        }
        None => None,
    };
    // The bound resource, read before anything is touched so the datapath
    // starts with its config.
    let (mut k8s_source, cr_config) = if args.kubernetes {
        let mut source = k8s::Source::connect(&k8s::BindOptions {
            cr_name: args.cr_name.clone(),
            namespace: args.namespace.clone(),
            pod_name: args.pod_name.clone(),
        })
        .await?;
        let cfg = source.initial().await?;
        (Some(source), cfg)
    } else {
        (None, None)
    };
    let bound_name = k8s_source.as_ref().map(|s| s.binding().name.clone());
    if args.check {
        if let Some((path, ..)) = &file_config {
            println!("{}: ok", path.display());
        }
        if let Some(source) = &k8s_source {
            if cr_config.is_none() {
                bail!("{}: missing or invalid (see above)", source.binding());
            }
            println!("{}: ok", source.binding());
        }
        return Ok(());
    }
    let instance = match (&args.instance, &file_config, &bound_name) {
        (Some(i), ..) => i.clone(),
        (None, Some((_, _, cfg)), _) => cfg.metadata.name.clone(),
        (None, None, Some(name)) => name.clone(),
        (None, None, None) => bail!("--instance is required without --config or --kubernetes"),
    };
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(api::RUN_DIR).join(&instance));
    let store = state_dir.join("config.json");
    // The file or the resource wins; without one (or with a resource that
    // is missing or invalid), the config the last run had in force is restored.
    let initial = match (&file_config, &cr_config) {
        (Some((_, _, cfg)), _) => Some(cfg.clone()),
        (None, Some(cfg)) => Some(cfg.clone()),
        (None, None) => stored(&store, bound_name.as_deref())?,
    };

    let socket = args
        .api_socket
        .clone()
        .unwrap_or_else(|| state_dir.join(api::SOCKET_NAME));
    let listener = api::Listener::bind(&socket)?;
    // Until the API serves (it removes its socket on the way out), a start
    // that fails takes the socket down itself: a dead socket in its own
    // directory would pass for an instance to xcnfctl.
    let unbind = || {
        api::socket::remove(&socket);
        if args.state_dir.is_none() {
            // The default directory is the agent's own; removed only if empty.
            let _ = std::fs::remove_dir(&state_dir);
        }
    };

    let netlink = Netlink::connect().inspect_err(|_| unbind())?;
    let object = datapath::find_object(args.ebpf_object.as_deref()).inspect_err(|_| unbind())?;
    let mut system = System::new(
        netlink,
        DatapathSettings {
            object,
            pins: Pins::new(&args.bpffs, &instance),
            log_level: args.ebpf_log_level.as_u8(),
        },
        Some(state_dir.join("owned.json")),
    );
    if args.ebpf_log_level.as_u8() > 0 {
        system.on_load(spawn_ebpf_logger);
    }
    // Kernel and VPP changes both end in a resync; one queued notification
    // is enough, as the engine reads the whole state when it resyncs.
    let (changes_tx, changes) = tokio::sync::mpsc::channel::<()>(1);
    let vpp_slot = api::VppSlot::default();
    system.with_vpp(vpp_connector(
        instance.clone(),
        args.vpp_api_socket.clone(),
        changes_tx.clone(),
        vpp_slot.clone(),
    ));
    let (mut engine, handle, commands) = reconcile::new(system, Some(store.clone()));
    let bindings = reconcile::Bindings::new();
    engine.set_bindings(bindings.clone());
    let nsm_manager = nsm::NsmManager::new(
        &nsm::NsmOptions {
            socket: args.nsm_socket.clone(),
            name: args
                .nsm_name
                .clone()
                .or_else(|| args.pod_name.clone())
                .unwrap_or_else(|| instance.clone()),
            insecure: args.nsm_insecure,
            spiffe_endpoint: args.spiffe_endpoint_socket.clone(),
            listen_dir: state_dir.join("nsm"),
        },
        bindings,
    )
    .context("--nsm-socket")
    .inspect_err(|_| unbind())?;
    let nsm_interfaces = engine.nsm_interfaces();
    let mut started = engine.start(initial).await;
    if let (Err(e), Some(source), Some(_)) = (&started, k8s_source.as_mut(), &cr_config) {
        // Reported in the resource's status and retried; a sidecar that
        // exits would take the pod's datapath down with it.
        warn!(resource = %source.binding(), error = %e, "cannot apply the resource; starting without it");
        source.start_failed(e);
        started = match stored(&store, bound_name.as_deref()) {
            Ok(cfg) => engine.start(cfg).await,
            Err(e) => Err(reconcile::ApplyError::System(format!("{e:#}"))),
        };
    }
    if let (Ok(_), Some(source)) = (&started, k8s_source.as_mut()) {
        source.started();
    }
    let report = match started {
        Ok(r) => r,
        Err(e) => {
            let system = engine.into_backend();
            if let Err(e) = system.shutdown(false).await {
                warn!(error = %e, "could not take the datapath down");
            }
            unbind();
            return match &file_config {
                Some((path, ..)) => Err(anyhow::anyhow!("{}: {e}", path.display())),
                None => Err(e.into()),
            };
        }
    };
    let not_configured: Vec<String> = report
        .statuses
        .iter()
        .filter(|s| s.state != reconcile::ItemState::Configured)
        .map(|s| format!("{} {}", s.key, s.state))
        .collect();

    match Events::subscribe() {
        Ok(mut events) => {
            tokio::spawn(async move {
                while events.recv().await.is_some() {
                    // One queued notification is enough: the engine reads
                    // the whole state when it resyncs.
                    let _ = changes_tx.try_send(());
                }
            });
        }
        Err(e) => {
            warn!(error = %e, "no kernel change notifications: pending items are retried every 30 s only")
        }
    }
    match FibChanges::subscribe() {
        Ok(mut changes) => {
            let pins = Pins::new(&args.bpffs, &instance);
            tokio::spawn(async move {
                while changes.next_burst().await.is_some() {
                    if let Err(e) = route_ctl::bump(&pins) {
                        warn!(error = %e, "cannot invalidate the datapath's cached routes; they expire within a second");
                    }
                }
                warn!("kernel route notifications ended: cached routes now expire by age only");
            });
        }
        Err(e) => {
            warn!(error = %e, "no route notifications: the datapath's cached routes expire by age only (1 s)")
        }
    }
    if let Some((path, text, _)) = file_config {
        tokio::spawn(source::watch_file(path, handle.clone(), text));
    }
    if let Some(source) = k8s_source {
        tokio::spawn(source.run(handle.clone()));
    }
    let (nsm_stop, nsm_stopped) = tokio::sync::oneshot::channel::<()>();
    // NSM runs on its own thread: a transaction that loads programs blocks
    // the reconciler's thread for seconds, and refreshes must not wait.
    let nsm_thread = std::thread::Builder::new()
        .name("nsm".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(nsm_manager.run(nsm_interfaces, async {
                    let _ = nsm_stopped.await;
                })),
                Err(e) => {
                    warn!(error = %e, "cannot start the NSM runtime; NSM interfaces stay pending")
                }
            }
        })
        .context("starting the NSM thread")?;
    let (api_stop, api_stopped) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(listener.serve(
        handle.clone(),
        api::DatapathReads::new(Pins::new(&args.bpffs, &instance)).with_vpp(vpp_slot),
        async {
            let _ = api_stopped.await;
        },
    ));

    // Caught from here on: whoever sees "ready" may stop the agent at once,
    // before the engine first polls for signals, and must get a clean stop
    // rather than the default action of SIGTERM.
    let signals = Signals::install()?;
    if let Some(f) = &args.ready_file {
        std::fs::write(f, b"ready\n").with_context(|| format!("writing {}", f.display()))?;
    }
    info!(
        items = report.statuses.len(),
        not_configured = not_configured.len(),
        "datapath ready"
    );
    for p in &not_configured {
        info!(item = %p, "not configured yet");
    }

    let mut engine = engine.run(commands, changes, signals.wait()).await;
    if let Some(dp) = engine.backend().datapath() {
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
    }
    if let Some(f) = &args.ready_file {
        let _ = std::fs::remove_file(f);
    }
    // NSM connections are closed and registrations withdrawn before the
    // datapath goes: the interfaces NSM made disappear with them.
    let _ = nsm_stop.send(());
    if tokio::task::spawn_blocking(move || nsm_thread.join())
        .await
        .map_or(true, |r| r.is_err())
    {
        warn!("the NSM thread failed");
    }
    let _ = api_stop.send(());
    // A graceful stop waits for every open call to end, and a Watch stream
    // (`xcnfctl watch`) or a client that stopped reading never does: give
    // calls in flight a moment, then close them, so SIGTERM always ends
    // the agent.
    let mut api_task = api_task;
    match tokio::time::timeout(API_DRAIN, &mut api_task).await {
        Ok(Ok(Err(e))) => warn!(error = %e, "API server failed"),
        Ok(Err(e)) => warn!(error = %e, "API server task failed"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => {
            warn!(
                seconds = API_DRAIN.as_secs(),
                "API calls still open after the grace period; closing them"
            );
            api_task.abort();
            api::socket::remove(&socket);
        }
    }
    if !args.keep_datapath {
        // Take down what the agent set up: addresses, routes, neighbours
        // and link settings it made, then the datapath and its pins.
        if let Err(e) = engine.clear().await {
            warn!(error = %e, "could not remove everything the agent configured");
        }
    }
    engine.into_backend().shutdown(args.keep_datapath).await?;
    if args.state_dir.is_none() {
        // The default directory is the agent's own; gone once empty.
        let _ = std::fs::remove_dir(&state_dir);
    }
    Ok(())
}

/// The config the last run had in force, if any. With --kubernetes, only
/// when it came from the same resource: the instance directory may outlive a
/// rebinding, and the reconciler refuses to change the instance's name.
fn stored(store: &std::path::Path, resource: Option<&str>) -> anyhow::Result<Option<Config>> {
    if !store.exists() {
        return Ok(None);
    }
    let cfg = Config::load(store)?;
    if let Some(name) = resource
        && cfg.metadata.name != name
    {
        warn!(path = %store.display(), stored = %cfg.metadata.name, resource = %name, "not restoring the config of another resource");
        return Ok(None);
    }
    info!(path = %store.display(), "restoring the config in force before the restart");
    Ok(Some(cfg))
}

/// Forwards the programs' aya-log records into `tracing` (via the `log` bridge).
fn spawn_ebpf_logger(dp: &mut xcnf_agent::datapath::Datapath) {
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

/// SIGTERM and SIGINT, caught from [`Signals::install`] on: one that
/// arrives before [`Signals::wait`] is polled is kept for it.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        })
    }

    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM received"),
            _ = self.int.recv() => info!("SIGINT received"),
        }
    }
}

/// Opens the VPP connection when the config first needs it. Every new
/// epoch (VPP came up, or came back after a restart with its configuration
/// lost) and every loss of the connection triggers a resync.
fn vpp_connector(
    instance: String,
    socket: PathBuf,
    changes: tokio::sync::mpsc::Sender<()>,
    slot: api::VppSlot,
) -> reconcile::system::VppConnect {
    Box::new(move || {
        info!(socket = %socket.display(), "connecting to VPP's API");
        let conn = vpp::VppConnection::start(
            socket.clone(),
            vpp::ClientOptions {
                client_name: format!("xcnf-agent-{instance}"),
                ..vpp::ClientOptions::default()
            },
            vpp::Backoff::default(),
        );
        let mut status = conn.subscribe();
        let changes = changes.clone();
        tokio::spawn(async move {
            let mut last = status.borrow().clone();
            while status.changed().await.is_ok() {
                let now = status.borrow_and_update().clone();
                let first_failure = now.error.is_some() && last.error.is_none();
                if now.connected != last.connected || now.epoch != last.epoch || first_failure {
                    match (&now.connected, &now.error) {
                        (true, _) => info!(epoch = now.epoch, "connected to VPP"),
                        (false, Some(e)) => warn!(error = %e, "VPP not reachable"),
                        (false, None) => warn!("VPP not reachable"),
                    }
                    let _ = changes.try_send(());
                }
                last = now;
            }
        });
        let conn = std::sync::Arc::new(conn);
        // The API reads VPP (sessions, CLI) through the same connection.
        let _ = slot.set(conn.clone());
        conn
    })
}
