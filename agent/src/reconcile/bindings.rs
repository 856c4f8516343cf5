//! Interfaces whose kernel name or memif socket someone else decides: an
//! NSM interface's host interface (kernel mechanism) or VPP memif socket
//! (memif mechanism) is known only once NSM has connected it. The NSM side
//! writes here; the reconciler reads it when it flattens the config into
//! items, and re-plans whenever a binding changes.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex},
};

use tokio::sync::watch;

use crate::config::{Ipv4Prefix, MemifMode, MemifRole};

/// Where a logical interface without a fixed host name stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Its host interface (in the agent's namespace) is this one.
    Bound(String),
    /// A memif in VPP on the socket NSM agreed on.
    Memif(NsmMemif),
    /// Not connected; the reason becomes the items' Pending reason.
    Waiting(String),
}

/// What an NSM connection over the memif mechanism makes in VPP. Unlike a
/// kernel interface, which the forwarder creates and addresses, a memif is
/// ours to create, and the connection's IP context is ours to program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsmMemif {
    /// As VPP takes it: a path, or `abstract:name[,netns_name=path]`.
    pub socket: String,
    /// Slave as a client (the forwarder is master), master as an endpoint.
    pub role: MemifRole,
    /// Ethernet, or IP when the service's payload is IP.
    pub mode: MemifMode,
    /// Our side's addresses from the IP context.
    pub addresses: Vec<Ipv4Prefix>,
    /// Routes from the IP context, through this memif.
    pub routes: Vec<(Ipv4Prefix, Option<Ipv4Addr>)>,
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
