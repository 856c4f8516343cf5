//! Runs one NSM client or endpoint per NSM interface of the config in
//! force: starts those that appear, restarts those whose NSM settings
//! changed, closes those removed, and closes everything on shutdown.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{
    Context,
    client::{self, ClientHandle, ClientSpec},
    endpoint::{self, EndpointHandle},
    security::{Security, SecurityError, SecurityOptions, WorkloadError},
    transport::{TransportError, unix_path},
};
use crate::{
    config::{Interface, NsmInterface, NsmRole},
    reconcile::{Binding, Bindings},
};

/// nsmgr's socket in NSM deployments (cmd-nsmgr `ListenOn`).
pub const DEFAULT_SOCKET: &str = "unix:///var/lib/networkservicemesh/nsm.io.sock";

/// How the agent takes part in NSM.
#[derive(Clone, Debug)]
pub struct NsmOptions {
    /// nsmgr's socket URL (`NSM_SOCKET`).
    pub socket: String,
    /// This agent's name in NSM: client path segments and connection ids,
    /// and the prefix of its endpoints' names.
    pub name: String,
    /// Run without mTLS and path tokens (lab only; logged loudly).
    pub insecure: bool,
    /// The SPIFFE Workload API (`unix:///...`, `SPIFFE_ENDPOINT_SOCKET`)
    /// the SVIDs come from, unless `insecure`.
    pub spiffe_endpoint: Option<String>,
    /// Where the endpoints' listen sockets go.
    pub listen_dir: PathBuf,
}

enum Running {
    Client(ClientHandle),
    Endpoint(EndpointHandle),
}

impl Running {
    async fn close(self) {
        match self {
            Self::Client(c) => c.close().await,
            Self::Endpoint(e) => e.close().await,
        }
    }
}

pub struct NsmManager {
    ctx: Arc<Context>,
    running: BTreeMap<String, (NsmInterface, Running)>,
    /// The Workload API to get the first SVID from, once [`NsmManager::run`]
    /// runs (its stream must live on the NSM thread's runtime).
    spiffe: Option<String>,
}

/// How long one attempt waits for the first SVID before the NSM interfaces'
/// status shows why there is none (attempts go on after that).
const SVID_WAIT: Duration = Duration::from_secs(5);

/// Gets SPIFFE mode's first SVID, retrying until it comes: until then the
/// NSM interfaces are Pending with the last error, naming the socket, and
/// the rest of the config applies as usual.
async fn load_spiffe(endpoint: String, tx: watch::Sender<Result<Security, String>>) {
    loop {
        let opts = SecurityOptions {
            insecure: false,
            spiffe_endpoint: Some(endpoint.clone()),
            first_svid_wait: SVID_WAIT,
            ..SecurityOptions::default()
        };
        match Security::from_options(opts).await {
            Ok(s) => {
                info!(id = ?s.own_id().map(|i| i.to_string()), %endpoint, "NSM security: mTLS with SPIFFE X.509-SVIDs and signed path tokens");
                drop(tx.send_replace(Ok(s)));
                return;
            }
            Err(e) => {
                warn!(%endpoint, error = %e, "NSM security: no SPIFFE X.509-SVID yet; NSM interfaces wait");
                let fatal = matches!(e, SecurityError::Workload(WorkloadError::Endpoint(_)));
                drop(tx.send_replace(Err(format!("NSM security: {e}"))));
                if fatal || tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

impl NsmManager {
    pub fn new(opts: &NsmOptions, bindings: Bindings) -> Result<Self, TransportError> {
        let socket = unix_path(&opts.socket)?;
        let (security, spiffe) = match (opts.insecure, &opts.spiffe_endpoint) {
            (true, _) => (Ok(Security::insecure()), None),
            (false, Some(endpoint)) => (
                Err(format!(
                    "NSM security: waiting for an X.509-SVID from the SPIFFE Workload API at {endpoint}"
                )),
                Some(endpoint.clone()),
            ),
            (false, None) => (
                Err("NSM security: no SPIFFE Workload API socket (--spiffe-endpoint-socket or SPIFFE_ENDPOINT_SOCKET) for mTLS; --nsm-insecure turns NSM security off, in a lab only".to_string()),
                None,
            ),
        };
        Ok(Self {
            ctx: Arc::new(Context {
                socket,
                name: opts.name.clone(),
                bindings,
                security: watch::channel(security).0,
                listen_dir: opts.listen_dir.clone(),
            }),
            running: BTreeMap::new(),
            spiffe,
        })
    }

    /// Brings the running clients and endpoints in line with `interfaces`.
    pub async fn update(&mut self, interfaces: &[Interface]) {
        let wanted: BTreeMap<&str, &NsmInterface> = interfaces
            .iter()
            .filter_map(|i| i.nsm.as_ref().map(|n| (i.name.as_str(), n)))
            .collect();
        let stale: Vec<String> = self
            .running
            .iter()
            .filter(|(name, (spec, _))| wanted.get(name.as_str()) != Some(&spec))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, r)) = self.running.remove(&name) {
                r.close().await;
            }
            self.ctx.bindings.remove(&name);
        }
        for (name, spec) in wanted {
            if self.running.contains_key(name) {
                continue;
            }
            if let Err(e) = self.ctx.security() {
                error!(interface = %name, error = %e, "NSM interface cannot connect");
                self.ctx.bindings.set(
                    name,
                    Binding::Waiting(format!(
                        "waiting for NSM connection to {}: {e}",
                        spec.network_service
                    )),
                );
                continue;
            }
            info!(interface = %name, service = %spec.network_service, role = ?spec.role, "starting NSM {}", if spec.role == NsmRole::Client { "client" } else { "endpoint" });
            let r = match spec.role {
                NsmRole::Client => Running::Client(client::spawn(
                    self.ctx.clone(),
                    ClientSpec {
                        logical: name.to_owned(),
                        network_service: spec.network_service.clone(),
                        labels: spec.labels.clone().into_iter().collect(),
                        interface_name: spec.interface_name.clone().unwrap_or_default(),
                        mechanism: spec.mechanism,
                    },
                )),
                NsmRole::Endpoint => {
                    Running::Endpoint(endpoint::spawn(self.ctx.clone(), name, spec))
                }
            };
            self.running.insert(name.to_owned(), (spec.clone(), r));
        }
    }

    /// Follows the NSM interfaces of the config in force until `stop`
    /// fires, then closes every connection and registration.
    pub async fn run(
        mut self,
        mut interfaces: watch::Receiver<Vec<Interface>>,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        let mut security = self.ctx.security.subscribe();
        let loader = self
            .spiffe
            .take()
            .map(|endpoint| tokio::spawn(load_spiffe(endpoint, self.ctx.security.clone())));
        loop {
            let now = interfaces.borrow_and_update().clone();
            security.mark_unchanged();
            self.update(&now).await;
            tokio::select! {
                r = interfaces.changed() => if r.is_err() { break },
                // The SVID arrived (the interfaces start) or why not changed.
                _ = security.changed() => {}
                () = &mut stop => break,
            }
        }
        if let Some(l) = loader {
            l.abort();
        }
        self.shutdown().await;
    }

    /// Closes every client connection and unregisters every endpoint.
    pub async fn shutdown(mut self) {
        let all = std::mem::take(&mut self.running);
        let closing = all.into_values().map(|(_, r)| r.close());
        futures::future::join_all(closing).await;
    }
}
