//! Interfaces whose kernel name someone else decides: an NSM interface's
//! host interface is known only once NSM has connected it. The NSM side
//! writes here; the reconciler reads it when it flattens the config into
//! items, and re-plans whenever a binding changes.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

/// Where a logical interface without a fixed host name stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Its host interface (in the agent's namespace) is this one.
    Bound(String),
    /// Not connected; the reason becomes the items' Pending reason.
    Waiting(String),
}

/// Logical interface name -> binding, shared between the NSM manager and
/// the reconciler. Cloning shares.
#[derive(Clone, Debug)]
pub struct Bindings {
    map: Arc<Mutex<BTreeMap<String, Binding>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Bindings {
    fn default() -> Self {
        Self {
            map: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl Bindings {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Binding>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a binding; the reconciler re-plans if it changed.
    pub fn set(&self, logical: &str, b: Binding) {
        let changed = self.lock().insert(logical.to_owned(), b.clone()) != Some(b);
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Forgets a logical interface (removed from the config).
    pub fn remove(&self, logical: &str) {
        if self.lock().remove(logical).is_some() {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    pub fn get(&self, logical: &str) -> Option<Binding> {
        self.lock().get(logical).cloned()
    }

    pub fn snapshot(&self) -> BTreeMap<String, Binding> {
        self.lock().clone()
    }

    /// Fires after every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
