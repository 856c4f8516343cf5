//! The reconciler task: transactions from the front ends, and resyncs when
//! the kernel changes or a retry is due.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use tokio::{
    sync::{broadcast, mpsc, watch},
    time::Instant,
};
use tracing::{debug, info, warn};

use super::{
    backend::{Backend, Outcome},
    bindings::Bindings,
    handle::{ApplyError, ApplyMode, ApplyReport, Command, Handle, Inbox, PlannedOp},
    item::{Item, ItemKey, Items, resolved_items},
    plan::{Step, plan, unmet},
    status::{ItemState, ItemStatus},
};
use crate::config::{Config, Interface};

/// A full resync this often even without kernel events: neighbour entries
/// and link MTUs change without the events the agent subscribes to.
const RESYNC_EVERY: Duration = Duration::from_secs(30);
/// Kernel events come in bursts (a new veth: link, addresses, routes); wait
/// this long for the burst to end before resyncing once.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Retries of a failing item back off from 1 s up to this, and after
/// `MAX_ATTEMPTS` the item is Failed until the config or the system changes.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
const MAX_ATTEMPTS: u32 = 8;

/// Owns the desired and applied state; see the module docs of `reconcile`.
pub struct Engine<B: Backend> {
    backend: B,
    config: Option<Config>,
    desired: Items,
    applied: Items,
    states: BTreeMap<ItemKey, ItemStatus>,
    retries: BTreeMap<ItemKey, (u32, Instant)>,
    events: broadcast::Sender<ItemStatus>,
    /// Where the config in force is kept, so a restarted agent started
    /// without `--config` (config given over gRPC) restores it.
    store: Option<PathBuf>,
    /// Host interfaces bound by NSM; a change re-plans the config in force.
    bindings: Bindings,
    /// The NSM interfaces of the config in force, for the NSM manager.
    nsm: watch::Sender<Vec<Interface>>,
    /// A re-plan after a binding change failed; tried again at the next resync.
    rebind_due: bool,
}

/// Creates the engine and the handle front ends use to reach it.
pub fn new<B: Backend>(backend: B, store: Option<PathBuf>) -> (Engine<B>, Handle, Inbox) {
    let (tx, rx) = mpsc::channel(32);
    let (events, _) = broadcast::channel(1024);
    let engine = Engine {
        backend,
        config: None,
        desired: Items::new(),
        applied: Items::new(),
        states: BTreeMap::new(),
        retries: BTreeMap::new(),
        events: events.clone(),
        store,
        bindings: Bindings::new(),
        nsm: watch::channel(Vec::new()).0,
        rebind_due: false,
    };
    (engine, Handle { tx, events }, Inbox(rx))
}

impl<B: Backend> Engine<B> {
    /// Shares the NSM bindings the items are planned with (before `start`).
    pub fn set_bindings(&mut self, bindings: Bindings) {
        self.bindings = bindings;
    }

    /// The NSM interfaces of the config in force, updated after every
    /// transaction that changes them.
    pub fn nsm_interfaces(&self) -> watch::Receiver<Vec<Interface>> {
        self.nsm.subscribe()
    }

    /// The first transaction of this process: the config from the file or the
    /// store (or nothing). Afterwards, what an earlier run left that this
    /// config does not have is removed.
    pub async fn start(&mut self, config: Option<Config>) -> Result<ApplyReport, ApplyError> {
        let report = match config {
            Some(c) => self.apply(c, ApplyMode::Replace, false).await?,
            None => self.report(Vec::new(), true),
        };
        if let Err(e) = self.backend.remove_leftovers(&self.desired).await {
            warn!(error = %e, "could not remove what an earlier run left behind");
        }
        Ok(report)
    }

    /// Serves commands and kernel change notifications until `commands`
    /// closes or `stop` fires.
    pub async fn run(
        mut self,
        Inbox(mut commands): Inbox,
        mut changes: mpsc::Receiver<()>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Self {
        tokio::pin!(stop);
        let mut changes_open = true;
        let mut bound = self.bindings.subscribe();
        // Bindings made between `start` and now.
        self.rebind().await;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                Ok(()) = bound.changed() => {
                    bound.borrow_and_update();
                    self.rebind().await;
                }
                c = commands.recv() => match c {
                    Some(c) => self.command(c).await,
                    None => break,
                },
                c = changes.recv(), if changes_open => {
                    if c.is_none() {
                        changes_open = false;
                        warn!("kernel change notifications stopped; resyncing every {}s only", RESYNC_EVERY.as_secs());
                        continue;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    while changes.try_recv().is_ok() {}
                    // Kernel changes re-arm failed items too.
                    self.retries.retain(|_, (n, _)| *n < MAX_ATTEMPTS);
                    self.resync().await;
                }
                () = tokio::time::sleep_until(wake) => {
                    if self.rebind_due {
                        self.rebind().await;
                    }
                    self.resync().await
                }
                () = &mut stop => break,
            }
        }
        self
    }

    /// The backend, for shutdown.
    pub fn into_backend(self) -> B {
        self.backend
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Removes every item, as an empty config would.
    pub async fn clear(&mut self) -> Result<ApplyReport, ApplyError> {
        self.transact(None, Items::new(), false).await
    }

    /// Every item's status.
    pub fn statuses(&self) -> Vec<ItemStatus> {
        let mut v: Vec<ItemStatus> = self.states.values().cloned().collect();
        v.sort_by(|a, b| (a.key.phase(), &a.key).cmp(&(b.key.phase(), &b.key)));
        v
    }

    fn next_wake(&self) -> Instant {
        let periodic = Instant::now()
            + if self.rebind_due {
                Duration::from_secs(2)
            } else {
                RESYNC_EVERY
            };
        self.retries
            .values()
            .filter(|(n, _)| *n < MAX_ATTEMPTS)
            .map(|(_, at)| *at)
            .min()
            .map_or(periodic, |r| r.min(periodic))
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::Apply {
                config,
                mode,
                dry_run,
                reply,
            } => {
                let r = self.apply(*config, mode, dry_run).await;
                let _ = reply.send(r);
            }
            Command::Delete {
                patch,
                dry_run,
                reply,
            } => {
                let r = self.delete(patch.map(|p| *p), dry_run).await;
                let _ = reply.send(r);
            }
            Command::Get { reply } => {
                let _ = reply.send(self.config.clone());
            }
            Command::Status { reply } => {
                let _ = reply.send(self.statuses());
            }
        }
    }

    async fn delete(
        &mut self,
        patch: Option<Config>,
        dry_run: bool,
    ) -> Result<ApplyReport, ApplyError> {
        let Some(current) = self.config.clone() else {
            return match patch {
                None => Ok(self.report(Vec::new(), !dry_run)),
                Some(_) => Err(ApplyError::Invalid(vec![crate::config::FieldError {
                    path: "spec".into(),
                    message: "there is no config in force to delete from".into(),
                }])),
            };
        };
        match patch {
            None => self.transact(None, Items::new(), dry_run).await,
            Some(p) => {
                let next = current
                    .remove(&p)
                    .map_err(|e| ApplyError::Invalid(vec![e]))?;
                let resolved = next.resolve().map_err(ApplyError::Invalid)?;
                let desired = resolved_items(&next, &resolved, &self.bindings.snapshot());
                self.transact(Some(next), desired, dry_run).await
            }
        }
    }

    /// Validates and applies a config as one transaction.
    pub async fn apply(
        &mut self,
        config: Config,
        mode: ApplyMode,
        dry_run: bool,
    ) -> Result<ApplyReport, ApplyError> {
        let config = match (mode, &self.config) {
            (ApplyMode::Merge, Some(current)) => current
                .merge(&config)
                .map_err(|e| ApplyError::Invalid(vec![e]))?,
            _ => config,
        };
        let resolved = config.resolve().map_err(ApplyError::Invalid)?;
        if let Some(current) = &self.config
            && current.metadata.name != config.metadata.name
        {
            return Err(ApplyError::Invalid(vec![crate::config::FieldError {
                path: "metadata.name".into(),
                message: format!(
                    "{:?} differs from the running instance {:?}; the instance name cannot change while the agent runs",
                    config.metadata.name, current.metadata.name
                ),
            }]));
        }
        let desired = resolved_items(&config, &resolved, &self.bindings.snapshot());
        self.transact(Some(config), desired, dry_run).await
    }

    /// Re-plans the config in force with the current NSM bindings: an
    /// interface NSM connected (or lost) takes its items along.
    async fn rebind(&mut self) {
        self.rebind_due = false;
        let Some(config) = self.config.clone() else {
            return;
        };
        let desired = match config.resolve() {
            Ok(r) => resolved_items(&config, &r, &self.bindings.snapshot()),
            Err(_) => return,
        };
        if desired == self.desired {
            return;
        }
        if let Err(e) = self.transact(Some(config), desired, false).await {
            warn!(error = %e, "cannot apply the changed NSM bindings; retrying at the next resync");
            self.rebind_due = true;
        }
    }

    /// Takes the system from the applied items to `desired`, the items of
    /// `config` (validated by the caller).
    async fn transact(
        &mut self,
        config: Option<Config>,
        desired: Items,
        dry_run: bool,
    ) -> Result<ApplyReport, ApplyError> {
        let steps = plan(&self.applied, &desired);
        if dry_run {
            let ops = simulate(&steps, &self.applied, &desired);
            return Ok(self.report(ops, false));
        }
        if let Err(e) = self.backend.prepare(&desired).await {
            return Err(ApplyError::System(e.to_string()));
        }
        let before = self.applied.clone();
        let mut undo: Vec<Step> = Vec::new();
        let mut pending: BTreeMap<ItemKey, String> = BTreeMap::new();
        let mut ops = Vec::new();
        for s in &steps {
            let detail = s
                .new
                .as_ref()
                .or(s.old.as_ref())
                .map(Item::summary)
                .unwrap_or_default();
            let mut planned = PlannedOp {
                op: s.op,
                key: s.key.clone(),
                detail,
                pending: None,
            };
            let result = match (&s.old, &s.new) {
                (Some(old), None) => self
                    .backend
                    .delete(&s.key, old)
                    .await
                    .map(|()| Outcome::Done),
                (old, Some(new)) => {
                    if let Some(dep) = unmet(&s.key, new, &self.applied, &desired) {
                        let reason = self.waiting_for(&dep, &pending);
                        planned.pending = Some(reason.clone());
                        pending.insert(s.key.clone(), reason);
                        ops.push(planned);
                        continue;
                    }
                    match old {
                        Some(old) => self.backend.update(&s.key, old, new).await,
                        None => self.backend.create(&s.key, new).await,
                    }
                }
                (None, None) => Ok(Outcome::Done),
            };
            match result {
                Ok(Outcome::Done) => {
                    debug!(op = s.op.name(), item = %s.key, "applied");
                    match &s.new {
                        Some(new) => self.applied.insert(s.key.clone(), new.clone()),
                        None => self.applied.remove(&s.key),
                    };
                    undo.push(s.clone());
                }
                Ok(Outcome::Pending(reason)) => {
                    planned.pending = Some(reason.clone());
                    pending.insert(s.key.clone(), reason);
                }
                Err(e) => {
                    let reverted = self.rollback(undo, before).await;
                    warn!(item = %s.key, error = %e, reverted = reverted.len(), "transaction failed and was rolled back");
                    let _ = self.events.send(ItemStatus {
                        key: s.key.clone(),
                        state: ItemState::Failed(e.to_string()),
                        detail: planned.detail,
                        since: SystemTime::now(),
                    });
                    return Err(ApplyError::Failed {
                        key: s.key.clone(),
                        error: e.to_string(),
                        reverted,
                    });
                }
            }
            ops.push(planned);
        }
        let changed = !steps.is_empty();
        self.commit(config, desired, pending);
        if changed {
            info!(steps = steps.len(), "config applied");
            release_free_heap();
        }
        Ok(self.report(ops, true))
    }

    /// Undoes `done` newest first; returns the keys reverted. A step whose
    /// undo fails is left for the resync to put right.
    async fn rollback(&mut self, done: Vec<Step>, before: Items) -> Vec<ItemKey> {
        let mut reverted = Vec::new();
        let mut broken = Vec::new();
        for s in done.into_iter().rev() {
            let r = match (&s.old, &s.new) {
                (None, Some(new)) => self.backend.delete(&s.key, new).await,
                (Some(old), None) => self.backend.create(&s.key, old).await.map(|_| ()),
                (Some(old), Some(new)) => self.backend.update(&s.key, new, old).await.map(|_| ()),
                (None, None) => Ok(()),
            };
            match r {
                Ok(()) => reverted.push(s.key),
                Err(e) => {
                    warn!(item = %s.key, error = %e, "could not revert; the resync will retry");
                    broken.push(s.key);
                }
            }
        }
        self.applied = before;
        for k in broken {
            self.applied.remove(&k);
            self.retries
                .insert(k, (1, Instant::now() + Duration::from_secs(1)));
        }
        reverted
    }

    fn commit(
        &mut self,
        config: Option<Config>,
        desired: Items,
        pending: BTreeMap<ItemKey, String>,
    ) {
        for (k, old) in std::mem::take(&mut self.states) {
            if !desired.contains_key(&k) {
                self.retries.remove(&k);
                let _ = self.events.send(ItemStatus {
                    state: ItemState::Removed,
                    since: SystemTime::now(),
                    ..old
                });
            } else {
                self.states.insert(k, old);
            }
        }
        self.desired = desired;
        self.config = config;
        let nsm: Vec<Interface> = self
            .config
            .iter()
            .flat_map(|c| c.spec.interfaces.iter())
            .filter(|i| i.nsm.is_some())
            .cloned()
            .collect();
        self.nsm.send_if_modified(|cur| {
            let changed = *cur != nsm;
            if changed {
                *cur = nsm;
            }
            changed
        });
        for k in self.desired.keys().cloned().collect::<Vec<_>>() {
            let state = if self.applied.get(&k) == self.desired.get(&k) {
                self.retries.remove(&k);
                ItemState::Configured
            } else if let Some(r) = pending.get(&k) {
                ItemState::Pending(r.clone())
            } else {
                match self.states.get(&k) {
                    Some(s) => s.state.clone(),
                    None => ItemState::Pending("not applied yet".into()),
                }
            };
            self.set_state(&k, state);
        }
        self.persist();
    }

    fn set_state(&mut self, k: &ItemKey, state: ItemState) {
        let detail = self.desired.get(k).map(Item::summary).unwrap_or_default();
        if let Some(s) = self.states.get(k)
            && s.state == state
            && s.detail == detail
        {
            return;
        }
        match &state {
            ItemState::Pending(r) => info!(item = %k, reason = %r, "pending"),
            ItemState::Retrying { error, attempt } => {
                warn!(item = %k, attempt, error = %error, "failed, will retry")
            }
            ItemState::Failed(e) => {
                warn!(item = %k, error = %e, "failed, giving up until the config or the system changes")
            }
            ItemState::Configured => info!(item = %k, "configured"),
            ItemState::Removed => {}
        }
        let st = ItemStatus {
            key: k.clone(),
            state,
            detail,
            since: SystemTime::now(),
        };
        let _ = self.events.send(st.clone());
        self.states.insert(k.clone(), st);
    }

    fn waiting_for(&self, dep: &ItemKey, pending: &BTreeMap<ItemKey, String>) -> String {
        let why = pending
            .get(dep)
            .cloned()
            .or_else(|| self.states.get(dep).map(|s| s.state.reason()))
            .filter(|r| !r.is_empty());
        match why {
            Some(r) => format!("waiting for {dep}: {r}"),
            None => format!("waiting for {dep}"),
        }
    }

    /// Puts right whatever differs between desired and actual state: items
    /// whose interface appeared, items that vanished with their interface,
    /// retries that are due.
    pub async fn resync(&mut self) {
        if let Err(e) = self.backend.prepare(&self.desired).await {
            warn!(error = %e, "resync: cannot read the system state");
            return;
        }
        // Drift first, dependents before what they depend on, so that a
        // vanished interface takes its items out of `applied` with it.
        let mut keys: Vec<ItemKey> = self.applied.keys().cloned().collect();
        keys.sort_by_key(|k| std::cmp::Reverse(k.phase()));
        for k in keys {
            let Some(item) = self.applied.get(&k).cloned() else {
                continue;
            };
            match self.backend.in_place(&k, &item).await {
                Ok(true) => {}
                Ok(false) => {
                    info!(item = %k, "no longer in place, re-applying");
                    // Release whatever is left (a defunct link pin).
                    let _ = self.backend.delete(&k, &item).await;
                    self.applied.remove(&k);
                }
                Err(e) => warn!(item = %k, error = %e, "resync: cannot check"),
            }
        }
        let mut todo: Vec<ItemKey> = self
            .desired
            .iter()
            .filter(|(k, v)| self.applied.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        todo.sort_by_key(|k| k.phase());
        let now = Instant::now();
        let mut pending = BTreeMap::new();
        for k in todo {
            if let Some((n, at)) = self.retries.get(&k)
                && (*n >= MAX_ATTEMPTS || *at > now)
            {
                continue;
            }
            let Some(new) = self.desired.get(&k).cloned() else {
                continue;
            };
            if let Some(dep) = unmet(&k, &new, &self.applied, &self.desired) {
                let reason = self.waiting_for(&dep, &pending);
                pending.insert(k.clone(), reason.clone());
                self.set_state(&k, ItemState::Pending(reason));
                continue;
            }
            let r = match self.applied.get(&k).cloned() {
                Some(old) => self.backend.update(&k, &old, &new).await,
                None => self.backend.create(&k, &new).await,
            };
            match r {
                Ok(Outcome::Done) => {
                    self.applied.insert(k.clone(), new);
                    self.retries.remove(&k);
                    self.set_state(&k, ItemState::Configured);
                }
                Ok(Outcome::Pending(reason)) => {
                    pending.insert(k.clone(), reason.clone());
                    self.set_state(&k, ItemState::Pending(reason));
                }
                Err(e) => {
                    let attempt = self.retries.get(&k).map_or(1, |(n, _)| n + 1);
                    let backoff = Duration::from_secs(1 << attempt.min(6)).min(MAX_BACKOFF);
                    self.retries
                        .insert(k.clone(), (attempt, Instant::now() + backoff));
                    let state = if attempt >= MAX_ATTEMPTS {
                        ItemState::Failed(e.to_string())
                    } else {
                        ItemState::Retrying {
                            error: e.to_string(),
                            attempt,
                        }
                    };
                    self.set_state(&k, state);
                }
            }
        }
    }

    fn report(&self, plan: Vec<PlannedOp>, applied: bool) -> ApplyReport {
        ApplyReport {
            plan,
            applied,
            statuses: self.statuses(),
        }
    }

    /// JSON, not YAML: it is read only by the agent, and serialising a
    /// 10 000-mapping config as YAML took 30 ms of every transaction.
    fn persist(&self) {
        let Some(path) = &self.store else { return };
        let r = match &self.config {
            Some(c) => serde_json::to_vec(c)
                .map_err(std::io::Error::other)
                .and_then(|bytes| super::record::write_atomically(path, &bytes)),
            None => match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(e) = r {
            warn!(path = %path.display(), error = %e, "cannot store the config in force; a restart without --config will not restore it");
        }
    }
}

/// Gives the heap's free pages back to the kernel. A large config is
/// parsed, validated, planned and stored through many short-lived
/// allocations, and glibc keeps what they freed (fragmented between the
/// long-lived ones) mapped: with 10 000 static mappings the agent held
/// about 19 MiB it no longer used, more than its live data.
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only works on glibc's own heap; no precondition.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// What a transaction would do, marking steps whose dependencies would
/// still be missing. The backend may still find more pending at run time
/// (an interface that does not exist), which only the real run can tell.
fn simulate(steps: &[Step], applied: &Items, desired: &Items) -> Vec<PlannedOp> {
    let mut sim = applied.clone();
    steps
        .iter()
        .map(|s| {
            let mut pending = None;
            match &s.new {
                Some(new) => match unmet(&s.key, new, &sim, desired) {
                    Some(dep) => pending = Some(format!("waiting for {dep}")),
                    None => {
                        sim.insert(s.key.clone(), new.clone());
                    }
                },
                None => {
                    sim.remove(&s.key);
                }
            }
            PlannedOp {
                op: s.op,
                key: s.key.clone(),
                detail: s
                    .new
                    .as_ref()
                    .or(s.old.as_ref())
                    .map(Item::summary)
                    .unwrap_or_default(),
                pending,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeSet,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::reconcile::{StepError, backend::Outcome, item::LinkSpec};

    /// Records every step; refuses the steps it is told to; reports links
    /// whose host interface "does not exist" as pending. Planning and
    /// rollback are what is under test, not the kernel.
    #[derive(Clone, Default)]
    struct Fake {
        log: Arc<Mutex<Vec<String>>>,
        fail: Arc<Mutex<BTreeSet<String>>>,
        missing: Arc<Mutex<BTreeSet<String>>>,
        gone: Arc<Mutex<BTreeSet<String>>>,
    }

    impl Fake {
        fn log(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
        }
        fn set(set: &Arc<Mutex<BTreeSet<String>>>, k: &str, on: bool) {
            let mut s = set.lock().unwrap_or_else(|e| e.into_inner());
            if on {
                s.insert(k.into());
            } else {
                s.remove(k);
            }
        }
        fn step(&self, what: &str, key: &ItemKey) -> Result<Outcome, StepError> {
            if self
                .fail
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key.to_string())
            {
                return Err(StepError(format!("{key}: refused")));
            }
            if let (ItemKey::Link(_), "create" | "update") = (key, what)
                && self
                    .missing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&key.to_string())
            {
                return Ok(Outcome::Pending("host interface does not exist".into()));
            }
            self.log
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{what} {key}"));
            Ok(Outcome::Done)
        }
    }

    impl Backend for Fake {
        async fn prepare(&mut self, _: &Items) -> Result<(), StepError> {
            Ok(())
        }
        async fn create(&mut self, key: &ItemKey, item: &Item) -> Result<Outcome, StepError> {
            if let Item::Link(LinkSpec {
                waiting: Some(r), ..
            }) = item
            {
                return Ok(Outcome::Pending(r.clone()));
            }
            self.step("create", key)
        }
        async fn update(
            &mut self,
            key: &ItemKey,
            _: &Item,
            new: &Item,
        ) -> Result<Outcome, StepError> {
            if let Item::Link(LinkSpec {
                waiting: Some(r), ..
            }) = new
            {
                return Ok(Outcome::Pending(r.clone()));
            }
            self.step("update", key)
        }
        async fn delete(&mut self, key: &ItemKey, _: &Item) -> Result<(), StepError> {
            self.step("delete", key).map(|_| ())
        }
        async fn in_place(&mut self, key: &ItemKey, _: &Item) -> Result<bool, StepError> {
            Ok(!self
                .gone
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&key.to_string()))
        }
        async fn remove_leftovers(&mut self, _: &Items) -> Result<(), StepError> {
            Ok(())
        }
    }

    const BASE: &str = r#"
apiVersion: xcnf.io/v1alpha1
kind: CNFConfiguration
metadata: {name: t}
spec:
  interfaces:
    - name: inside
      kernel: {hostIfName: c0}
      ipAddresses: [192.168.100.1/24]
    - name: outside
      kernel: {hostIfName: c1}
      ipAddresses: [80.80.80.100/24]
  routes:
    - {dst: 10.0.0.0/8, via: 80.80.80.1, interface: outside}
  nat44:
    inside: [inside]
    outside: [outside]
    pools: [{first: 80.80.80.100, last: 80.80.80.105}]
"#;

    fn cfg(yaml: &str) -> Config {
        let c = Config::parse(yaml).unwrap_or_else(|e| panic!("{e}"));
        c.validate().unwrap_or_else(|e| panic!("{e:?}"));
        c
    }

    fn engine() -> (Engine<Fake>, Fake) {
        let fake = Fake::default();
        let (e, _, _) = new(fake.clone(), None);
        (e, fake)
    }

    fn states(e: &Engine<Fake>) -> Vec<String> {
        e.statuses()
            .iter()
            .map(|s| format!("{} {}", s.key, s.state))
            .collect()
    }

    async fn apply(e: &mut Engine<Fake>, yaml: &str) -> Result<ApplyReport, ApplyError> {
        e.apply(cfg(yaml), ApplyMode::Replace, false).await
    }

    #[tokio::test]
    async fn applies_in_dependency_order() {
        let (mut e, fake) = engine();
        apply(&mut e, BASE)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            fake.log(),
            [
                "create interface/inside",
                "create interface/outside",
                "create address/inside/192.168.100.1/24",
                "create address/outside/80.80.80.100/24",
                "create route/10.0.0.0/8/metric/0",
                "create nat44",
                "create datapath/inside",
                "create datapath/outside",
            ]
        );
        assert!(
            states(&e).iter().all(|s| s.ends_with(" configured")),
            "{:?}",
            states(&e)
        );
    }

    #[tokio::test]
    async fn a_failed_step_reverts_the_transaction_and_keeps_the_old_config() {
        let (mut e, fake) = engine();
        apply(&mut e, BASE)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        fake.log();
        let before = states(&e);
        let next = BASE
            .replace(
                "ipAddresses: [80.80.80.100/24]",
                "ipAddresses: [80.80.80.100/24, 80.80.80.200/24]",
            )
            .replace("dst: 10.0.0.0/8", "dst: 10.0.0.0/16");
        Fake::set(&fake.fail, "route/10.0.0.0/16/metric/0", true);
        let err = apply(&mut e, &next)
            .await
            .err()
            .unwrap_or_else(|| panic!("must fail"));
        let ApplyError::Failed { key, reverted, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(key.to_string(), "route/10.0.0.0/16/metric/0");
        assert_eq!(
            fake.log(),
            [
                "delete route/10.0.0.0/8/metric/0",
                "create address/outside/80.80.80.200/24",
                // rollback, newest first
                "delete address/outside/80.80.80.200/24",
                "create route/10.0.0.0/8/metric/0",
            ]
        );
        assert_eq!(reverted.len(), 2);
        assert_eq!(states(&e), before);
        assert_eq!(
            e.config.as_ref().map(|c| c.spec.routes[0].dst.as_str()),
            Some("10.0.0.0/8")
        );
        // The same update applies once the kernel accepts it.
        Fake::set(&fake.fail, "route/10.0.0.0/16/metric/0", false);
        apply(&mut e, &next)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
    }

    #[tokio::test]
    async fn missing_interface_keeps_its_items_pending_until_it_appears() {
        let (mut e, fake) = engine();
        Fake::set(&fake.missing, "interface/outside", true);
        apply(&mut e, BASE)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let s = states(&e);
        assert!(
            s.contains(&"interface/outside pending (host interface does not exist)".to_string()),
            "{s:?}"
        );
        assert!(
            s.contains(&"route/10.0.0.0/8/metric/0 pending (waiting for interface/outside: host interface does not exist)".to_string()),
            "{s:?}"
        );
        assert!(
            s.contains(&"datapath/inside configured".to_string()),
            "{s:?}"
        );
        fake.log();
        Fake::set(&fake.missing, "interface/outside", false);
        e.resync().await;
        assert_eq!(
            fake.log(),
            [
                "create interface/outside",
                "create address/outside/80.80.80.100/24",
                "create route/10.0.0.0/8/metric/0",
                "create datapath/outside",
            ]
        );
        assert!(states(&e).iter().all(|s| s.ends_with(" configured")));
    }

    #[tokio::test]
    async fn an_nsm_interface_is_pending_until_bound_and_follows_its_binding() {
        let (mut e, fake) = engine();
        let bindings = Bindings::new();
        e.set_bindings(bindings.clone());
        let yaml = BASE.replace(
            "kernel: {hostIfName: c1}",
            "nsm: {networkService: web, role: client, interfaceName: nsm1}",
        );
        apply(&mut e, &yaml)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let s = states(&e);
        assert!(
            s.contains(
                &"interface/outside pending (waiting for NSM connection to web)".to_string()
            ),
            "{s:?}"
        );
        assert!(
            s.contains(&"route/10.0.0.0/8/metric/0 pending (waiting for interface/outside: waiting for NSM connection to web)".to_string()),
            "{s:?}"
        );
        assert_eq!(
            *e.nsm_interfaces().borrow(),
            vec![
                e.config
                    .as_ref()
                    .map(|c| c.spec.interfaces[1].clone())
                    .unwrap_or_default()
            ]
        );
        fake.log();
        bindings.set("outside", crate::reconcile::Binding::Bound("nsm1".into()));
        e.rebind().await;
        assert_eq!(
            fake.log(),
            [
                "create interface/outside",
                "create address/outside/80.80.80.100/24",
                "create route/10.0.0.0/8/metric/0",
                "create datapath/outside",
            ]
        );
        assert!(
            states(&e).iter().all(|s| s.ends_with(" configured")),
            "{:?}",
            states(&e)
        );
        // Lost (healing): everything on it waits again, with the reason.
        bindings.set(
            "outside",
            crate::reconcile::Binding::Waiting("waiting for NSM connection to web: gone".into()),
        );
        e.rebind().await;
        let log = fake.log();
        assert!(
            log.contains(&"delete route/10.0.0.0/8/metric/0".to_string()),
            "{log:?}"
        );
        assert!(
            log.contains(&"delete datapath/outside".to_string()),
            "{log:?}"
        );
        assert!(
            states(&e).contains(
                &"interface/outside pending (waiting for NSM connection to web: gone)".to_string()
            ),
            "{:?}",
            states(&e)
        );
    }

    #[tokio::test]
    async fn one_changed_mapping_touches_only_the_nat_tables() {
        let (mut e, fake) = engine();
        apply(&mut e, BASE)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        fake.log();
        let next = format!(
            "{BASE}    staticMappings: [{{protocol: tcp, external: \"80.80.80.100:8080\", local: \"192.168.100.10:80\"}}]\n"
        );
        let r = apply(&mut e, &next)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(fake.log(), ["update nat44"]);
        assert_eq!(r.plan.len(), 1);
    }

    #[tokio::test]
    async fn dry_run_changes_nothing_and_says_what_would_wait() {
        let (mut e, fake) = engine();
        let r = e
            .apply(cfg(BASE), ApplyMode::Replace, true)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        assert!(!r.applied);
        assert_eq!(r.plan.len(), 8);
        assert!(fake.log().is_empty());
        assert!(e.config.is_none());
    }

    #[tokio::test]
    async fn vanished_items_are_reapplied_on_resync() {
        let (mut e, fake) = engine();
        apply(&mut e, BASE)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        fake.log();
        Fake::set(&fake.gone, "route/10.0.0.0/8/metric/0", true);
        e.resync().await;
        Fake::set(&fake.gone, "route/10.0.0.0/8/metric/0", false);
        assert_eq!(
            fake.log(),
            [
                "delete route/10.0.0.0/8/metric/0",
                "create route/10.0.0.0/8/metric/0"
            ]
        );
    }

    #[tokio::test]
    async fn invalid_config_is_refused_with_field_paths() {
        let (mut e, fake) = engine();
        let bad = BASE.replace("hostIfName: c1", "hostIfName: \"a/b\"");
        let c = Config::parse(&bad).unwrap_or_else(|e| panic!("{e}"));
        let err = e.apply(c, ApplyMode::Replace, false).await.err();
        let Some(ApplyError::Invalid(errs)) = err else {
            panic!("{err:?}")
        };
        assert_eq!(errs[0].path, "spec.interfaces[1].kernel.hostIfName");
        assert!(fake.log().is_empty());
    }

    #[tokio::test]
    async fn failed_retries_back_off_and_then_succeed() {
        let (mut e, fake) = engine();
        Fake::set(&fake.missing, "interface/outside", true);
        apply(&mut e, BASE)
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        Fake::set(&fake.missing, "interface/outside", false);
        Fake::set(&fake.fail, "interface/outside", true);
        e.resync().await;
        assert!(
            states(&e).contains(
                &"interface/outside retrying (attempt 1: interface/outside: refused)".to_string()
            ),
            "{:?}",
            states(&e)
        );
        Fake::set(&fake.fail, "interface/outside", false);
        // Not due yet: nothing happens.
        fake.log();
        e.resync().await;
        assert!(fake.log().is_empty());
        e.retries.clear();
        e.resync().await;
        assert!(states(&e).iter().all(|s| s.ends_with(" configured")));
    }
}
