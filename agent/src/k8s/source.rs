//! The bound `CNFConfiguration` as a live config source.
//!
//! The resource is watched with kube-runtime's watcher, filtered to its name:
//! the watcher lists, then watches from the list's resourceVersion with
//! bookmarks, and re-lists when the API server says the version is gone
//! (410). A 410 that comes as the HTTP answer to the watch request itself is
//! not an error event, and the watcher would retry the same stale version
//! forever; the source then starts a new watcher, which lists afresh. Any
//! other error (API server restarting, network) is retried with backoff
//! while the running config stays in force.
//!
//! Every new generation is applied through the reconciler, like a file edit
//! (the whole spec replaces the running config). A spec that does not parse
//! or validate changes nothing and is reported as `Ready=False, Invalid` with
//! the field paths; a transaction the kernel refused is rolled back by the
//! reconciler, reported as `Failed`, and retried with backoff. The status is
//! rewritten when the reconciler's item states change (debounced) and only
//! when it differs from the one on the resource, so the agent's own status
//! writes, which come back as watch events, settle at once. A deleted
//! resource leaves the running config in force until it is recreated.

use std::time::Duration;

use futures::{StreamExt as _, stream::BoxStream};
use kube::{
    Api, Client,
    api::{ApiResource, Patch, PatchParams},
    core::DynamicObject,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::{sync::broadcast, time::Instant};
use tracing::{error, info, warn};

use super::{
    Binding, CnfConfiguration, K8sError,
    convert::to_config,
    status::{self, CnfConfigurationStatus, Observed, Rejection},
};
use crate::{
    config::Config,
    reconcile::{ApplyError, ApplyMode, Handle},
};

/// Item state changes come in bursts (one transaction changes many items):
/// the status is written this long after the first of a burst.
const STATUS_DEBOUNCE: Duration = Duration::from_millis(250);
/// A status write that failed is tried again after this long.
const STATUS_RETRY: Duration = Duration::from_secs(5);
/// The same status is not written twice within this time: a server that
/// stores it differently from what was sent (so it never compares equal)
/// costs one write per this period, not a write loop.
const REWRITE_AFTER: Duration = Duration::from_secs(30);
/// Backoff of re-applying a spec whose transaction failed.
const RETRY_MIN: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// What identifies one version of the spec: a new resource (uid), a new
/// generation, or (for API servers that do not count generations) a
/// different spec.
#[derive(Clone, Debug, PartialEq)]
struct SpecKey {
    uid: Option<String>,
    generation: Option<i64>,
    spec: Option<serde_json::Value>,
}

impl SpecKey {
    fn of(obj: &DynamicObject) -> Self {
        Self {
            uid: obj.metadata.uid.clone(),
            generation: obj.metadata.generation,
            spec: obj.data.get("spec").cloned(),
        }
    }
}

/// The Kubernetes config source of one agent.
pub struct Source {
    api: Api<DynamicObject>,
    binding: Binding,
    /// The resource as last seen (its status is the one to compare with).
    current: Option<DynamicObject>,
    /// The spec version last processed, applied or rejected.
    seen: Option<SpecKey>,
    /// Why the processed version is not in force.
    rejection: Option<Rejection>,
    /// The generation whose spec is in force, when it came from the resource.
    in_force: Option<i64>,
    /// A config read at startup, in force once the reconciler started with it.
    starting: Option<(SpecKey, Option<i64>)>,
    retry: Option<(Instant, Duration)>,
    status_due: Option<Instant>,
    last_write: Option<(CnfConfigurationStatus, Instant)>,
    /// The resource was in the watcher's current (re-)list.
    listed: bool,
}

impl Source {
    /// Connects with the in-cluster config or KUBECONFIG and finds the bound
    /// resource's name.
    pub async fn connect(options: &super::BindOptions) -> Result<Self, K8sError> {
        let client = Client::try_default().await.map_err(K8sError::Client)?;
        let binding = Binding::resolve(&client, options).await?;
        Ok(Self::new(client, binding))
    }

    pub fn new(client: Client, binding: Binding) -> Self {
        let resource = ApiResource::erase::<CnfConfiguration>(&());
        Self {
            api: Api::namespaced_with(client, &binding.namespace, &resource),
            binding,
            current: None,
            seen: None,
            rejection: None,
            in_force: None,
            starting: None,
            retry: None,
            status_due: None,
            last_write: None,
            listed: false,
        }
    }

    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Reads the resource once, before the reconciler starts, so the agent
    /// starts with its config. `None` when it does not exist yet or is
    /// invalid (then the status says why, once the source runs). An API
    /// server that cannot be reached is an error: the pod restarts.
    pub async fn initial(&mut self) -> Result<Option<Config>, K8sError> {
        let found = self
            .api
            .get_opt(&self.binding.name)
            .await
            .map_err(|error| K8sError::Get {
                namespace: self.binding.namespace.clone(),
                name: self.binding.name.clone(),
                error,
            })?;
        let Some(obj) = found else {
            warn!(resource = %self.binding, "not found; waiting for it to be created");
            return Ok(None);
        };
        let key = SpecKey::of(&obj);
        let generation = obj.metadata.generation;
        self.current = Some(obj.clone());
        self.seen = Some(key.clone());
        let checked = to_config(&obj).and_then(|c| {
            let errors = match c.validate() {
                Ok(()) => crate::reconcile::item::items(&c).err(),
                Err(e) => Some(e),
            };
            match errors {
                None => Ok(c),
                Some(e) => Err(join(&e)),
            }
        });
        match checked {
            Ok(c) => {
                self.starting = Some((key, generation));
                Ok(Some(c))
            }
            Err(e) => {
                error!(resource = %self.binding, error = %e, "invalid; starting without it");
                self.rejection = Some(Rejection::Invalid(e));
                Ok(None)
            }
        }
    }

    /// The reconciler started with the config [`Self::initial`] returned.
    pub fn started(&mut self) {
        if let Some((_, generation)) = self.starting.take() {
            self.in_force = generation;
            info!(resource = %self.binding, generation, "applied");
        }
    }

    /// The reconciler refused to start with that config (the agent then
    /// starts without it): reported as Failed, and retried.
    pub fn start_failed(&mut self, e: &ApplyError) {
        if self.starting.take().is_some() {
            self.failed(e);
        }
    }

    /// Watches the resource and applies it through `handle`, writing its
    /// status, until the reconciler stops.
    pub async fn run(mut self, handle: Handle) {
        let mut item_events = handle.watch();
        let mut watch = self.watcher();
        info!(resource = %self.binding, "watching");
        self.status_soon(Duration::ZERO);
        loop {
            let status_at = self.status_due;
            let retry_at = self.retry.map(|(at, _)| at);
            let going = tokio::select! {
                ev = watch.next() => match ev {
                    Some(Ok(ev)) => self.on_event(ev, &handle).await,
                    Some(Err(e)) => {
                        if is_gone(&e) {
                            info!(resource = %self.binding, "resource version gone (410); listing again");
                            watch = self.watcher();
                        } else {
                            warn!(resource = %self.binding, error = %e, "watch failed; retrying");
                        }
                        true
                    }
                    None => {
                        watch = self.watcher();
                        true
                    }
                },
                ev = item_events.recv() => match ev {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.status_soon(STATUS_DEBOUNCE);
                        true
                    }
                    Err(broadcast::error::RecvError::Closed) => false,
                },
                () = sleep_until(status_at) => {
                    self.status_due = None;
                    self.write_status(&handle).await
                }
                () = sleep_until(retry_at) => {
                    self.retry = self.retry.map(|(_, backoff)| (Instant::now(), backoff));
                    self.apply(&handle).await
                }
            };
            if !going {
                info!(resource = %self.binding, "the reconciler stopped; no longer watching");
                return;
            }
        }
    }

    fn watcher(&self) -> BoxStream<'static, Result<watcher::Event<DynamicObject>, watcher::Error>> {
        let mut config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.binding.name));
        // Bookmarks move the resume point forward while nothing changes, so
        // a watch that times out resumes instead of re-listing.
        config.bookmarks = true;
        watcher(self.api.clone(), config).default_backoff().boxed()
    }

    /// Returns false once the reconciler has stopped.
    async fn on_event(&mut self, ev: watcher::Event<DynamicObject>, handle: &Handle) -> bool {
        match ev {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                if obj.metadata.name.as_deref() != Some(self.binding.name.as_str()) {
                    return true;
                }
                self.listed = true;
                self.on_resource(obj, handle).await
            }
            watcher::Event::Delete(obj) => {
                if obj.metadata.name.as_deref() == Some(self.binding.name.as_str()) {
                    self.gone();
                }
                true
            }
            watcher::Event::Init => {
                self.listed = false;
                true
            }
            watcher::Event::InitDone => {
                // A (re-)list without the resource: it was deleted while
                // the watch was down.
                if self.current.is_some() && !self.listed {
                    self.gone();
                }
                true
            }
        }
    }

    fn gone(&mut self) {
        warn!(resource = %self.binding, "deleted; the running config stays in force until it is recreated");
        self.current = None;
        self.retry = None;
        self.status_due = None;
    }

    async fn on_resource(&mut self, obj: DynamicObject, handle: &Handle) -> bool {
        let key = SpecKey::of(&obj);
        self.current = Some(obj);
        if self.seen.as_ref() != Some(&key) {
            self.seen = Some(key);
            self.rejection = None;
            self.retry = None;
            if !self.apply(handle).await {
                return false;
            }
        }
        // Also after the agent's own status write: compares and settles.
        self.status_soon(Duration::ZERO);
        true
    }

    /// Applies the current resource. Returns false once the reconciler has stopped.
    async fn apply(&mut self, handle: &Handle) -> bool {
        let Some(obj) = &self.current else {
            self.retry = None;
            return true;
        };
        let generation = obj.metadata.generation;
        let config = match to_config(obj) {
            Ok(c) => c,
            Err(e) => {
                error!(resource = %self.binding, generation, error = %e, "invalid; the running config stays");
                self.rejection = Some(Rejection::Invalid(e));
                self.retry = None;
                self.status_soon(Duration::ZERO);
                return true;
            }
        };
        match handle.apply(config, ApplyMode::Replace, false).await {
            Ok(report) => {
                let pending = report.plan.iter().filter(|o| o.pending.is_some()).count();
                info!(resource = %self.binding, generation, steps = report.plan.len(), pending, "applied");
                self.rejection = None;
                self.retry = None;
                self.in_force = generation;
            }
            Err(ApplyError::Stopped) => return false,
            Err(ApplyError::Invalid(errors)) => {
                let e = join(&errors);
                error!(resource = %self.binding, generation, error = %e, "invalid; the running config stays");
                self.rejection = Some(Rejection::Invalid(e));
                self.retry = None;
            }
            Err(e) => {
                error!(resource = %self.binding, generation, error = %e, "apply failed; the running config stays");
                self.failed(&e);
            }
        }
        self.status_soon(Duration::ZERO);
        true
    }

    fn failed(&mut self, e: &ApplyError) {
        self.rejection = Some(Rejection::Failed(e.to_string()));
        let backoff = match self.retry {
            Some((_, b)) => (b * 2).min(RETRY_MAX),
            None => RETRY_MIN,
        };
        self.retry = Some((Instant::now() + backoff, backoff));
    }

    fn status_soon(&mut self, after: Duration) {
        let at = Instant::now() + after;
        self.status_due = Some(self.status_due.map_or(at, |due| due.min(at)));
    }

    /// Writes the status if it differs from the one on the resource.
    /// Returns false once the reconciler has stopped.
    async fn write_status(&mut self, handle: &Handle) -> bool {
        let Some(obj) = &self.current else {
            return true;
        };
        let Ok(items) = handle.status().await else {
            return false;
        };
        let previous: Option<CnfConfigurationStatus> = obj
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok());
        let want = status::compute(
            &Observed {
                generation: self.seen.as_ref().and_then(|k| k.generation),
                rejection: self.rejection.as_ref(),
                in_force: self.in_force,
                items: &items,
            },
            previous.as_ref(),
            &status::now(),
        );
        if previous.as_ref() == Some(&want) {
            return true;
        }
        if let Some((last, at)) = &self.last_write
            && *last == want
            && at.elapsed() < REWRITE_AFTER
        {
            return true;
        }
        let patch = serde_json::json!({ "status": &want });
        match self
            .api
            .patch_status(
                &self.binding.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(updated) => {
                self.last_write = Some((want, Instant::now()));
                // The answer carries the new status: the watch event of
                // this write then compares equal.
                if self.current.as_ref().map(SpecKey::of) == Some(SpecKey::of(&updated)) {
                    self.current = Some(updated);
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => self.gone(),
            Err(e) => {
                warn!(resource = %self.binding, error = %e, "cannot write the status; retrying");
                self.status_soon(STATUS_RETRY);
            }
        }
        true
    }
}

/// 410 Gone in any of the shapes the watcher reports it.
fn is_gone(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::WatchError(s) => s.code == 410,
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
        | watcher::Error::InitialListFailed(kube::Error::Api(s)) => s.code == 410,
        _ => false,
    }
}

fn join(errors: &[crate::config::FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
