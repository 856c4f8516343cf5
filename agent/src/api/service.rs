//! `AgentService`: each RPC is a thin adapter over the reconciler's handle
//! or a datapath read.

use std::{collections::HashMap, future::Future, pin::Pin};

use tokio::sync::{
    broadcast::{self, error::RecvError},
    mpsc,
};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use xcnf_proto::v1alpha1::{self as pb, agent_service_server::AgentService};

use super::{
    convert::{self, apply_error, invalid},
    reads::DatapathReads,
    sessions,
};
use crate::{
    config::{Backend, Config, FieldError},
    nat::NatError,
    reconcile::{ApplyError, ApplyMode, Handle, ItemState, ItemStatus},
    vpp::VppError,
};

/// The service state: the reconciler's handle and the pinned maps.
#[derive(Clone)]
pub struct Api {
    handle: Handle,
    reads: DatapathReads,
}

impl Api {
    pub fn new(handle: Handle, reads: DatapathReads) -> Self {
        Self { handle, reads }
    }

    /// Whether the config in force has its NAT44 domain in VPP.
    async fn nat_in_vpp(&self) -> bool {
        let Ok(Some(cfg)) = self.handle.get().await else {
            return false;
        };
        let Some(nat) = &cfg.spec.nat44 else {
            return false;
        };
        nat.inside.iter().chain(&nat.outside).any(|n| {
            cfg.spec
                .interfaces
                .iter()
                .any(|i| &i.name == n && i.backend() == Backend::Vpp)
        })
    }

    /// Runs a blocking map read off the async threads (a session table can
    /// hold hundreds of thousands of entries).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&DatapathReads) -> Result<T, NatError> + Send + 'static,
    ) -> Result<T, Status> {
        let reads = self.reads.clone();
        tokio::task::spawn_blocking(move || f(&reads))
            .await
            .map_err(|e| Status::internal(format!("datapath read failed: {e}")))?
            .map_err(read_error)
    }
}

/// VPP not there is something the caller can wait for or fix; a refused
/// command is the caller's; anything else is the agent's problem.
fn vpp_error(e: VppError) -> Status {
    match &e {
        _ if e.is_unreachable() => Status::unavailable(e.to_string()),
        VppError::Retval { .. } => Status::invalid_argument(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
}

/// No pins: the datapath was never started (or was cleaned up), which the
/// caller can fix; anything else is the agent's problem.
fn read_error(e: NatError) -> Status {
    match e {
        NatError::Open { .. } => Status::failed_precondition(format!("no datapath: {e}")),
        NatError::Map { .. } | NatError::Clock(_) => Status::internal(e.to_string()),
    }
}

fn field(path: &str, message: impl Into<String>) -> Vec<FieldError> {
    vec![FieldError {
        path: path.to_owned(),
        message: message.into(),
    }]
}

fn statuses(items: &[ItemStatus]) -> Vec<pb::ItemStatus> {
    items.iter().map(convert::status_to_pb).collect()
}

fn snapshot(items: &[ItemStatus]) -> pb::WatchEvent {
    pb::WatchEvent {
        event: Some(pb::watch_event::Event::Snapshot(pb::StatusSnapshot {
            items: statuses(items),
        })),
    }
}

/// Logical interface name by host interface name, and the config's order.
fn logical_names(cfg: Option<&Config>) -> (HashMap<String, (usize, String)>, Vec<String>) {
    let mut by_host = HashMap::new();
    let mut order = Vec::new();
    for (i, itf) in cfg
        .map(|c| c.spec.interfaces.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        order.push(itf.name.clone());
        if let Some(k) = &itf.kernel {
            by_host.insert(k.host_if_name.clone(), (i, itf.name.clone()));
        }
    }
    (by_host, order)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for Api {
    async fn get(&self, _: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let Some(cfg) = self.handle.get().await.map_err(apply_error)? else {
            return Ok(Response::new(pb::GetResponse::default()));
        };
        let yaml = serde_yaml::to_string(&cfg)
            .map_err(|e| Status::internal(format!("cannot encode the config as YAML: {e}")))?;
        Ok(Response::new(pb::GetResponse {
            present: true,
            yaml,
            config: Some(convert::config_to_proto(&cfg)),
        }))
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let req = req.into_inner();
        let mode = match req.mode() {
            pb::apply_request::Mode::Replace => ApplyMode::Replace,
            pb::apply_request::Mode::Merge => ApplyMode::Merge,
            pb::apply_request::Mode::Unspecified => {
                return Err(invalid(&field(
                    "mode",
                    "required: MODE_REPLACE or MODE_MERGE",
                )));
            }
        };
        let cfg = convert::document(req.document, "document")
            .map_err(|e| invalid(&e))?
            .ok_or_else(|| invalid(&field("document", "required")))?;
        let report = self
            .handle
            .apply(cfg, mode, req.dry_run)
            .await
            .inspect_err(
                |e| tracing::info!(?mode, dry_run = req.dry_run, error = %e, "API apply refused"),
            )
            .map_err(apply_error)?;
        tracing::info!(
            ?mode,
            dry_run = req.dry_run,
            steps = report.plan.len(),
            "API apply"
        );
        Ok(Response::new(pb::ApplyResponse {
            report: Some(convert::report_to_pb(&report)),
        }))
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let req = req.into_inner();
        let patch = convert::document(req.patch, "patch").map_err(|e| invalid(&e))?;
        let whole = patch.is_none();
        let report = self
            .handle
            .delete(patch, req.dry_run)
            .await
            .inspect_err(
                |e| tracing::info!(whole, dry_run = req.dry_run, error = %e, "API delete refused"),
            )
            .map_err(apply_error)?;
        tracing::info!(
            whole,
            dry_run = req.dry_run,
            steps = report.plan.len(),
            "API delete"
        );
        Ok(Response::new(pb::DeleteResponse {
            report: Some(convert::report_to_pb(&report)),
        }))
    }

    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let items = self.handle.status().await.map_err(apply_error)?;
        Ok(Response::new(pb::StatusResponse {
            items: statuses(&items),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Subscribe before the snapshot, so no change falls between the two.
        let events = self.handle.watch();
        let first = self.handle.status().await.map_err(apply_error)?;
        let handle = self.handle.clone();
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(forward_events(events, first, tx, move || {
            let handle = handle.clone();
            async move { handle.status().await }
        }));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stats(
        &self,
        req: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let wanted = req.into_inner().interfaces;
        // Names are only for display: counters are still served when the
        // reconciler cannot answer.
        let cfg = self.handle.get().await.ok().flatten();
        let (by_host, order) = logical_names(cfg.as_ref());
        let unknown: Vec<FieldError> = wanted
            .iter()
            .enumerate()
            .filter(|(_, w)| !order.contains(w))
            .map(|(i, w)| FieldError {
                path: format!("interfaces[{i}]"),
                message: format!("no interface named {w:?} in the config"),
            })
            .collect();
        if !unknown.is_empty() {
            return Err(invalid(&unknown));
        }
        let mut rows: Vec<(usize, pb::InterfaceCounters)> = self
            .read(DatapathReads::counters)
            .await?
            .into_iter()
            .filter_map(|c| {
                let (pos, name) = by_host
                    .get(&c.host_if_name)
                    .cloned()
                    .unwrap_or((usize::MAX, String::new()));
                if !wanted.is_empty() && !wanted.contains(&name) {
                    return None;
                }
                let mut pb = convert::counters_to_pb(&c.counters);
                pb.interface = name;
                pb.host_if_name = c.host_if_name;
                pb.ifindex = c.ifindex;
                pb.nat_role = convert::nat_role_to_pb(c.role).into();
                Some((pos, pb))
            })
            .collect();
        // Config order, then interfaces the config no longer names (stable: by ifindex).
        rows.sort_by_key(|(pos, _)| *pos);
        Ok(Response::new(pb::StatsResponse {
            interfaces: rows.into_iter().map(|(_, r)| r).collect(),
        }))
    }

    async fn nat_sessions(
        &self,
        req: Request<pb::NatSessionsRequest>,
    ) -> Result<Response<pb::NatSessionsResponse>, Status> {
        let req = req.into_inner();
        let filter = sessions::Filter::from_pb(req.filter.as_ref()).map_err(|e| invalid(&e))?;
        let (views, map_entries) = if self.nat_in_vpp().await {
            let views = self.reads.vpp_sessions().await.map_err(vpp_error)?;
            let n = views.len() as u64;
            (views, n)
        } else {
            self.read(DatapathReads::sessions).await?
        };
        let page = sessions::page(views, &filter, req.page_size, &req.page_token)
            .map_err(|e| invalid(&e))?;
        Ok(Response::new(pb::NatSessionsResponse {
            sessions: page.sessions.iter().map(convert::session_to_pb).collect(),
            next_page_token: page.next_token,
            total: page.total,
            map_entries,
        }))
    }

    async fn nat_stats(
        &self,
        _: Request<pb::NatStatsRequest>,
    ) -> Result<Response<pb::NatStatsResponse>, Status> {
        let s = self.read(DatapathReads::nat_summary).await?;
        Ok(Response::new(convert::nat_stats_to_pb(
            &s.config, s.active, &s.stats,
        )))
    }

    async fn vpp_cli(
        &self,
        req: Request<pb::VppCliRequest>,
    ) -> Result<Response<pb::VppCliResponse>, Status> {
        let command = req.into_inner().command;
        if command.trim().is_empty() {
            return Err(invalid(&field("command", "is empty")));
        }
        let output = self.reads.vpp_cli(&command).await.map_err(vpp_error)?;
        Ok(Response::new(pb::VppCliResponse { output }))
    }

    async fn health(
        &self,
        _: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        Ok(Response::new(match self.handle.status().await {
            Ok(items) => health(&items),
            Err(e) => pb::HealthResponse {
                status: pb::health_response::ServingStatus::NotServing.into(),
                reason: e.to_string(),
                ..Default::default()
            },
        }))
    }
}

/// Feeds one Watch stream: the snapshot `first`, then every change. When
/// the stream falls behind the broadcast, the missed changes are replaced by
/// a fresh snapshot from `resync`. Ends when the client goes away or the
/// reconciler stops.
pub(crate) async fn forward_events<F, Fut>(
    mut events: broadcast::Receiver<ItemStatus>,
    first: Vec<ItemStatus>,
    tx: mpsc::Sender<Result<pb::WatchEvent, Status>>,
    resync: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Vec<ItemStatus>, ApplyError>>,
{
    if tx.send(Ok(snapshot(&first))).await.is_err() {
        return;
    }
    loop {
        let event = tokio::select! {
            () = tx.closed() => return,
            r = events.recv() => r,
        };
        let out = match event {
            Ok(s) => Ok(pb::WatchEvent {
                event: Some(pb::watch_event::Event::Change(convert::status_to_pb(&s))),
            }),
            Err(RecvError::Lagged(missed)) => {
                // The backlog is older than a fresh snapshot: drop it.
                events = events.resubscribe();
                tracing::debug!(missed, "watch stream fell behind; sending a snapshot");
                resync()
                    .await
                    .map(|all| snapshot(&all))
                    .map_err(apply_error)
            }
            Err(RecvError::Closed) => Err(Status::unavailable("the reconciler has stopped")),
        };
        let last = out.is_err();
        if tx.send(out).await.is_err() || last {
            return;
        }
    }
}

/// SERVING when every item is configured; otherwise why not.
pub fn health(items: &[ItemStatus]) -> pb::HealthResponse {
    let mut r = pb::HealthResponse {
        items: items.len() as u32,
        ..Default::default()
    };
    for s in items {
        match s.state {
            ItemState::Configured => r.configured += 1,
            ItemState::Pending(_) => r.pending += 1,
            ItemState::Failed(_) => r.failed += 1,
            ItemState::Retrying { .. } => r.retrying += 1,
            ItemState::Removed => {}
        }
        if s.state != ItemState::Configured {
            r.not_configured.push(s.key.to_string());
        }
    }
    let serving = r.not_configured.is_empty();
    r.set_status(if serving {
        pb::health_response::ServingStatus::Serving
    } else {
        pb::health_response::ServingStatus::NotServing
    });
    if !serving {
        r.reason = format!(
            "{} of {} items not configured ({} pending, {} failed, {} retrying)",
            r.not_configured.len(),
            r.items,
            r.pending,
            r.failed,
            r.retrying
        );
    }
    r
}
