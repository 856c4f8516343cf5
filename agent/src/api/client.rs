//! The client side: dialling an agent's socket.

use std::path::Path;

use tonic::transport::{Channel, Endpoint};
use xcnf_proto::v1alpha1::agent_service_client::AgentServiceClient;

use super::ApiError;

/// Connects to the agent serving on the unix socket `path`.
pub async fn connect(path: &Path) -> Result<AgentServiceClient<Channel>, ApiError> {
    let err = |e: tonic::transport::Error| {
        let mut root: &dyn std::error::Error = &e;
        while let Some(next) = root.source() {
            root = next;
        }
        ApiError::Connect {
            path: path.to_path_buf(),
            reason: root.to_string(),
        }
    };
    let endpoint = Endpoint::from_shared(format!("unix:{}", path.display())).map_err(err)?;
    let channel = endpoint.connect().await.map_err(err)?;
    Ok(AgentServiceClient::new(channel))
}
