//! An endpoint's registration with the NSM registry (through nsmgr's
//! socket): register with the listen socket's descriptor passed by grpcfd,
//! re-register at 2/3 of the granted lifetime, unregister on exit.

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::watch;
use tracing::{info, warn};
use xcnf_proto::nsm::registry::{
    NetworkServiceEndpoint, NetworkServiceLabels,
    network_service_endpoint_registry_client::NetworkServiceEndpointRegistryClient,
};

use super::{
    Context,
    security::token::DEFAULT_MAX_TOKEN_LIFETIME,
    system_time, timestamp,
    transport::{self, CALL_TIMEOUT},
};

const RETRY: Duration = Duration::from_secs(1);

/// What an endpoint registers.
#[derive(Clone, Debug)]
pub struct Registration {
    pub name: String,
    pub service: String,
    pub labels: HashMap<String, String>,
    /// `file://` URL of the listen socket.
    pub url: String,
}

async fn register(ctx: &Context, reg: &Registration) -> Result<NetworkServiceEndpoint, String> {
    let security = ctx.security()?;
    let dialed = transport::connect(&ctx.socket, &security)
        .await
        .map_err(|e| e.to_string())?;
    let url = dialed.fds.send_file(&reg.url).map_err(|e| e.to_string())?;
    let token = security
        .hop_token(dialed.peer().as_ref())
        .map_err(|e| e.to_string())?;
    let req = transport::signed(
        NetworkServiceEndpoint {
            name: reg.name.clone(),
            network_service_names: vec![reg.service.clone()],
            network_service_labels: [(
                reg.service.clone(),
                NetworkServiceLabels {
                    labels: reg.labels.clone(),
                },
            )]
            .into(),
            url,
            expiration_time: Some(timestamp(token.expires)),
            ..Default::default()
        },
        &token,
    )?;
    NetworkServiceEndpointRegistryClient::new(dialed.channel)
        .register(req)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.message().to_owned())
}

async fn unregister(ctx: &Context, reg: &Registration) -> Result<(), String> {
    let security = ctx.security()?;
    let dialed = transport::connect(&ctx.socket, &security)
        .await
        .map_err(|e| e.to_string())?;
    let token = security
        .hop_token(dialed.peer().as_ref())
        .map_err(|e| e.to_string())?;
    let req = transport::signed(
        NetworkServiceEndpoint {
            name: reg.name.clone(),
            network_service_names: vec![reg.service.clone()],
            ..Default::default()
        },
        &token,
    )?;
    NetworkServiceEndpointRegistryClient::new(dialed.channel)
        .unregister(req)
        .await
        .map(|_| ())
        .map_err(|s| s.message().to_owned())
}

/// Keeps `reg` registered until `stop` fires, then unregisters.
pub async fn keep_registered(
    ctx: Arc<Context>,
    reg: Registration,
    socket: &Path,
    mut stop: watch::Receiver<bool>,
) {
    let mut registered = false;
    loop {
        let wait = match register(&ctx, &reg).await {
            Ok(nse) => {
                if !registered {
                    info!(endpoint = %reg.name, service = %reg.service, socket = %socket.display(), "NSM endpoint registered");
                }
                registered = true;
                let left = nse
                    .expiration_time
                    .as_ref()
                    .map(system_time)
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or(DEFAULT_MAX_TOKEN_LIFETIME);
                (left * 2 / 3).max(Duration::from_millis(100))
            }
            Err(e) => {
                warn!(endpoint = %reg.name, error = %e, "NSM registration failed; retrying");
                RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => break,
        }
    }
    if registered {
        match tokio::time::timeout(CALL_TIMEOUT, unregister(&ctx, &reg)).await {
            Ok(Ok(())) => info!(endpoint = %reg.name, "NSM endpoint unregistered"),
            Ok(Err(e)) => warn!(endpoint = %reg.name, error = %e, "NSM unregister failed"),
            Err(_) => warn!(endpoint = %reg.name, "NSM unregister timed out"),
        }
    }
}
