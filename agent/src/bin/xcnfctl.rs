//! `xcnfctl`: the command-line client of a running agent's gRPC API
//! (`/run/xcnf/<instance>/api.sock`).
//!
//! With `--pins`, the datapath reads (`stats`, `nat sessions`, `nat stats`)
//! open the pinned maps directly instead: that still works when the agent is
//! down but its datapath was kept, which is when it is needed most.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::ExitCode,
    time::SystemTime,
};

use anyhow::{Context as _, bail};
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use tonic::{Code, Status, transport::Channel};
use xcnf_agent::{
    api::{
        DatapathReads, RUN_DIR, SOCKET_NAME, client, convert, render,
        sessions::{self, Filter},
    },
    config::Config,
    datapath::{BPFFS_DEFAULT, Pins},
};
use xcnf_proto::v1alpha1::{self as pb, agent_service_client::AgentServiceClient};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure: cannot reach the agent, or the agent could not do it
  2  usage error
  3  invalid config: nothing changed; every field error is printed, one per line
  4  the transaction failed and was rolled back: the previous config stays in force
  5  `status`, `health`: some item is not configured (pending, failed or retrying)";

/// Control a running xcnf agent through its gRPC API.
#[derive(Debug, Parser)]
#[command(version, after_help = EXIT_CODES)]
struct Args {
    /// The agent's API socket [default: /run/xcnf/<instance>/api.sock].
    #[arg(long, env = "XCNF_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// The agent instance; defaults to the only one running (under /run/xcnf,
    /// or with --pins under <bpffs>/xcnf).
    #[arg(long, env = "XCNF_INSTANCE", global = true)]
    instance: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    /// Datapath reads (stats, nat) from the pinned maps, without the agent.
    /// Interfaces are then shown by kernel name only.
    #[arg(long, global = true)]
    pins: bool,
    /// Where bpffs is mounted (with --pins).
    #[arg(long, env = "XCNF_BPFFS", default_value = BPFFS_DEFAULT, global = true)]
    bpffs: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Every config item's status; exit code 5 unless all are configured.
    Status,
    /// The config in force, or changes to it.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Per-interface packet counters, with every non-zero pass and drop reason.
    #[command(alias = "counters")]
    Stats {
        /// Only these logical interfaces.
        interfaces: Vec<String>,
    },
    /// NAT44 sessions and statistics.
    Nat {
        #[command(subcommand)]
        what: NatCommand,
    },
    /// Print status changes as they happen (first, every item's status).
    Watch,
    /// Serving when every item is configured; exit code 5 when not.
    Health,
    /// The VPP this agent drives for its memif interfaces.
    Vpp {
        #[command(subcommand)]
        what: VppCommand,
    },
}

#[derive(Debug, Subcommand)]
enum VppCommand {
    /// Run one VPP debug CLI command, as `vppctl` would: `xcnfctl vpp cli "show interface"`.
    Cli { command: String },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the config in force (YAML; `-o json` for JSON).
    Get,
    /// Apply a config file (`-` for stdin) as one transaction.
    Apply {
        file: PathBuf,
        /// Add or replace the file's items, keep the others (default: the
        /// file becomes the whole config).
        #[arg(long)]
        merge: bool,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Remove the items a file names (`-` for stdin), or the whole config.
    Delete {
        file: Option<PathBuf>,
        /// Print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NatCommand {
    /// One line per session: endpoints, kind, state, age, idle time, traffic.
    Sessions(SessionsArgs),
    /// Configuration summary, active sessions and event counters.
    Stats,
}

#[derive(Debug, ClapArgs)]
struct SessionsArgs {
    /// `KEY=VALUE[,KEY=VALUE...]`, all must match: `proto=tcp|udp|icmp|N`,
    /// `addr=ADDRESS|PREFIX|TEXT` (any endpoint), `port=N` (any endpoint),
    /// `kind=snat|dnat|static|hairpin|addr-only`.
    #[arg(long, value_parser = parse_filter)]
    filter: Option<pb::NatSessionFilter>,
    /// Print one page of this many sessions and the token of the next
    /// (default: every session).
    #[arg(long)]
    page_size: Option<u32>,
    /// Start after the page that returned this token.
    #[arg(long)]
    page_token: Option<String>,
}

fn parse_filter(s: &str) -> Result<pb::NatSessionFilter, String> {
    let mut f = pb::NatSessionFilter::default();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: want KEY=VALUE"))?;
        match k {
            "proto" | "protocol" => {
                f.ip_protocol = match v {
                    "tcp" => 6,
                    "udp" => 17,
                    "icmp" => 1,
                    n => n
                        .parse::<u8>()
                        .map(u32::from)
                        .map_err(|_| format!("proto {n:?}: want tcp, udp, icmp or 0-255"))?,
                }
            }
            "addr" | "address" => f.address = v.to_owned(),
            "port" => {
                f.port = v
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .map(u32::from)
                    .ok_or_else(|| format!("port {v:?}: want 1-65535"))?
            }
            "kind" => {
                use pb::nat_session::Kind;
                let kind = match v {
                    "snat" => Kind::Snat,
                    "dnat" => Kind::Dnat,
                    "static" => Kind::StaticSnat,
                    "hairpin" => Kind::Hairpin,
                    "addr-only" => Kind::AddressOnly,
                    _ => {
                        return Err(format!(
                            "kind {v:?}: want snat, dnat, static, hairpin or addr-only"
                        ));
                    }
                };
                f.kind = kind.into();
            }
            _ => {
                return Err(format!(
                    "{k:?}: unknown filter key (proto, addr, port, kind)"
                ));
            }
        }
    }
    Ok(f)
}

/// How a command that ran ends.
enum Done {
    Ok,
    NotConfigured,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("xcnfctl: error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(&args)) {
        Ok(Done::Ok) => ExitCode::SUCCESS,
        Ok(Done::NotConfigured) => ExitCode::from(5),
        Err(e) => exit_for(&e),
    }
}

/// Prints the error and picks the exit code from the gRPC status, if any.
fn exit_for(e: &anyhow::Error) -> ExitCode {
    let Some(st) = e.downcast_ref::<Status>() else {
        eprintln!("xcnfctl: error: {e:#}");
        return ExitCode::from(1);
    };
    match st.code() {
        Code::InvalidArgument => {
            eprintln!("xcnfctl: invalid (nothing changed):");
            for fe in convert::field_errors(st) {
                if fe.path.is_empty() {
                    eprintln!("{}", fe.message);
                } else {
                    eprintln!("{fe}");
                }
            }
            ExitCode::from(3)
        }
        Code::Aborted => {
            eprintln!("xcnfctl: transaction failed: {}", st.message());
            ExitCode::from(4)
        }
        _ => {
            eprintln!("xcnfctl: error: {:?}: {}", st.code(), st.message());
            ExitCode::from(1)
        }
    }
}

async fn run(args: &Args) -> anyhow::Result<Done> {
    if args.pins {
        return run_pins(args);
    }
    let socket = match &args.socket {
        Some(s) => s.clone(),
        None => {
            let run = Path::new(RUN_DIR);
            let instance = match &args.instance {
                Some(i) => i.clone(),
                None => only_instance(run, "agent sockets")?,
            };
            run.join(instance).join(SOCKET_NAME)
        }
    };
    let mut api = client::connect(&socket).await?;
    match &args.command {
        Command::Status => {
            let items = api.status(pb::StatusRequest {}).await?.into_inner().items;
            emit(
                args.output,
                || render::status_table(&items, SystemTime::now()),
                || Value::Array(items.iter().map(render::status_json).collect()),
            )?;
            Ok(configured(
                items
                    .iter()
                    .all(|s| s.state() == pb::item_status::State::Configured),
            ))
        }
        Command::Health => {
            let h = api.health(pb::HealthRequest {}).await?.into_inner();
            emit(
                args.output,
                || render::health_text(&h),
                || render::health_json(&h),
            )?;
            Ok(configured(
                h.status() == pb::health_response::ServingStatus::Serving,
            ))
        }
        Command::Config { what } => config(&mut api, what, args.output).await,
        Command::Stats { interfaces } => {
            let r = api
                .stats(pb::StatsRequest {
                    interfaces: interfaces.clone(),
                })
                .await?
                .into_inner();
            emit(
                args.output,
                || render::stats_text(&r),
                || render::stats_json(&r),
            )?;
            Ok(Done::Ok)
        }
        Command::Nat {
            what: NatCommand::Stats,
        } => {
            let r = api.nat_stats(pb::NatStatsRequest {}).await?.into_inner();
            emit(
                args.output,
                || render::nat_stats_text(&r),
                || render::nat_stats_json(&r),
            )?;
            Ok(Done::Ok)
        }
        Command::Nat {
            what: NatCommand::Sessions(s),
        } => {
            let r = nat_sessions(&mut api, s).await?;
            emit_sessions(args.output, &r)?;
            Ok(Done::Ok)
        }
        Command::Watch => watch(&mut api, args.output).await,
        Command::Vpp {
            what: VppCommand::Cli { command },
        } => {
            let r = api
                .vpp_cli(pb::VppCliRequest {
                    command: command.clone(),
                })
                .await?
                .into_inner();
            emit(
                args.output,
                || r.output.clone(),
                || serde_json::json!({ "output": r.output }),
            )?;
            Ok(Done::Ok)
        }
    }
}

fn configured(all: bool) -> Done {
    if all { Done::Ok } else { Done::NotConfigured }
}

/// The only directory under `dir`: the instance when none is named.
fn only_instance(dir: &Path, what: &str) -> anyhow::Result<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: no {what} (is an agent running?)", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{}: no {what} (is an agent running?)", dir.display()),
        many => bail!(
            "{}: several instances ({}); choose one with --instance",
            dir.display(),
            many.join(", ")
        ),
    }
}

fn emit(
    output: Output,
    table: impl FnOnce() -> String,
    value: impl FnOnce() -> Value,
) -> anyhow::Result<()> {
    match output {
        Output::Table => out(&table()),
        Output::Json => out(&format!("{}\n", serde_json::to_string_pretty(&value())?)),
        Output::Yaml => out(&serde_yaml::to_string(&value())?),
    }
}

/// Writes to stdout. A reader that went away (`xcnfctl ... | head`) ends
/// the program quietly, as SIGPIPE would, instead of `print!`'s panic.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

fn read_document(file: &Path) -> anyhow::Result<Option<pb::ConfigDocument>> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the config from stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?
    };
    Ok(Some(pb::ConfigDocument {
        format: Some(pb::config_document::Format::Yaml(text)),
    }))
}

async fn config(
    api: &mut AgentServiceClient<Channel>,
    what: &ConfigCommand,
    output: Output,
) -> anyhow::Result<Done> {
    let report = match what {
        ConfigCommand::Get => {
            let r = api.get(pb::GetRequest {}).await?.into_inner();
            if !r.present {
                if output == Output::Table {
                    eprintln!("xcnfctl: the agent has no config in force");
                } else {
                    emit(output, String::new, || Value::Null)?;
                }
                return Ok(Done::Ok);
            }
            match output {
                Output::Table | Output::Yaml => out(&r.yaml)?,
                Output::Json => {
                    let cfg = Config::parse(&r.yaml).map_err(|e| {
                        anyhow::anyhow!("the agent sent a config this xcnfctl cannot read: {e}")
                    })?;
                    out(&format!("{}\n", serde_json::to_string_pretty(&cfg)?))?;
                }
            }
            return Ok(Done::Ok);
        }
        ConfigCommand::Apply {
            file,
            merge,
            dry_run,
        } => {
            let mode = if *merge {
                pb::apply_request::Mode::Merge
            } else {
                pb::apply_request::Mode::Replace
            };
            api.apply(pb::ApplyRequest {
                document: read_document(file)?,
                mode: mode.into(),
                dry_run: *dry_run,
            })
            .await?
            .into_inner()
            .report
        }
        ConfigCommand::Delete { file, dry_run } => {
            let patch = match file {
                Some(f) => read_document(f)?,
                None => None,
            };
            api.delete(pb::DeleteRequest {
                patch,
                dry_run: *dry_run,
            })
            .await?
            .into_inner()
            .report
        }
    };
    let report = report.unwrap_or_default();
    emit(
        output,
        || render::report_text(&report),
        || render::report_json(&report),
    )?;
    Ok(Done::Ok)
}

async fn nat_sessions(
    api: &mut AgentServiceClient<Channel>,
    s: &SessionsArgs,
) -> anyhow::Result<pb::NatSessionsResponse> {
    let one_page = s.page_size.is_some() || s.page_token.is_some();
    let mut req = pb::NatSessionsRequest {
        page_size: s.page_size.unwrap_or(sessions::DEFAULT_PAGE_SIZE),
        page_token: s.page_token.clone().unwrap_or_default(),
        filter: s.filter.clone(),
    };
    let mut all = api.nat_sessions(req.clone()).await?.into_inner();
    while !one_page && !all.next_page_token.is_empty() {
        req.page_token = std::mem::take(&mut all.next_page_token);
        let next = api.nat_sessions(req.clone()).await?.into_inner();
        all.sessions.extend(next.sessions);
        all.next_page_token = next.next_page_token;
        all.total = next.total;
        all.map_entries = next.map_entries;
    }
    Ok(all)
}

fn emit_sessions(output: Output, r: &pb::NatSessionsResponse) -> anyhow::Result<()> {
    emit(
        output,
        || {
            let mut text = render::sessions_text(r);
            if !r.next_page_token.is_empty() {
                text.push_str(&format!("next page: --page-token {}\n", r.next_page_token));
            }
            text
        },
        || {
            serde_json::json!({
                "sessions": r.sessions.iter().map(render::session_json).collect::<Vec<_>>(),
                "total": r.total,
                "mapEntries": r.map_entries,
                "nextPageToken": r.next_page_token,
            })
        },
    )
}

async fn watch(api: &mut AgentServiceClient<Channel>, output: Output) -> anyhow::Result<Done> {
    let mut stream = api.watch(pb::WatchRequest {}).await?.into_inner();
    loop {
        let event = tokio::select! {
            e = stream.message() => e.map_err(|status| {
                // An agent that stops closes its streams: say so rather
                // than print the transport's h2 error.
                anyhow::anyhow!(
                    "the watch stream ended: {} (the agent stopped or restarted?)",
                    status.message()
                )
            })?,
            _ = tokio::signal::ctrl_c() => return Ok(Done::Ok),
        };
        let Some(event) = event else {
            bail!("the agent ended the watch stream");
        };
        match output {
            Output::Table => out(&render::watch_text(&event, SystemTime::now()))?,
            // One document per event, so a consumer can read them as they come.
            Output::Json => out(&format!(
                "{}\n",
                serde_json::to_string(&render::watch_json(&event))?
            ))?,
            Output::Yaml => out(&format!(
                "---\n{}",
                serde_yaml::to_string(&render::watch_json(&event))?
            ))?,
        }
    }
}

/// `--pins`: the datapath reads straight from the pinned maps, rendered
/// through the same messages as the API's answers.
fn run_pins(args: &Args) -> anyhow::Result<Done> {
    let instance = match &args.instance {
        Some(i) => i.clone(),
        None => only_instance(&args.bpffs.join("xcnf"), "pinned xcnf datapaths")?,
    };
    let reads = DatapathReads::new(Pins::new(&args.bpffs, &instance));
    match &args.command {
        Command::Stats { interfaces } => {
            let r = pb::StatsResponse {
                interfaces: reads
                    .counters()?
                    .into_iter()
                    .filter(|c| interfaces.is_empty() || interfaces.contains(&c.host_if_name))
                    .map(|c| {
                        let mut pb = convert::counters_to_pb(&c.counters);
                        pb.host_if_name = c.host_if_name;
                        pb.ifindex = c.ifindex;
                        pb.nat_role = convert::nat_role_to_pb(c.role).into();
                        pb
                    })
                    .collect(),
            };
            emit(
                args.output,
                || render::stats_text(&r),
                || render::stats_json(&r),
            )?;
        }
        Command::Nat {
            what: NatCommand::Stats,
        } => {
            let s = reads.nat_summary()?;
            let r = convert::nat_stats_to_pb(&s.config, s.active, &s.stats);
            emit(
                args.output,
                || render::nat_stats_text(&r),
                || render::nat_stats_json(&r),
            )?;
        }
        Command::Nat {
            what: NatCommand::Sessions(s),
        } => {
            let filter = Filter::from_pb(s.filter.as_ref()).map_err(|e| invalid_status(&e))?;
            let (views, map_entries) = reads.sessions()?;
            let one_page = s.page_size.is_some() || s.page_token.is_some();
            let size = if one_page {
                s.page_size.unwrap_or(sessions::DEFAULT_PAGE_SIZE)
            } else {
                u32::try_from(views.len())
                    .unwrap_or(u32::MAX)
                    .clamp(1, sessions::MAX_PAGE_SIZE)
            };
            let mut token = s.page_token.clone().unwrap_or_default();
            let mut r = pb::NatSessionsResponse {
                map_entries,
                ..Default::default()
            };
            loop {
                let page = sessions::page(views.clone(), &filter, size, &token)
                    .map_err(|e| invalid_status(&e))?;
                r.sessions
                    .extend(page.sessions.iter().map(convert::session_to_pb));
                r.total = page.total;
                token = page.next_token;
                if one_page || token.is_empty() {
                    break;
                }
            }
            r.next_page_token = token;
            emit_sessions(args.output, &r)?;
        }
        _ => bail!(
            "--pins only serves `stats`, `nat sessions` and `nat stats`; the rest needs the agent"
        ),
    }
    Ok(Done::Ok)
}

fn invalid_status(errors: &[xcnf_agent::config::FieldError]) -> anyhow::Error {
    convert::invalid(errors).into()
}
