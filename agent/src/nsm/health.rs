//! gRPC health checking (`grpc.health.v1`) on an NSM endpoint's socket, as
//! NSM's own endpoints serve it next to NetworkService and
//! MonitorConnection: probes and NSM tooling ask it whether the endpoint
//! serves. The endpoint answers only while its server runs, so SERVING is
//! the only status a live server reports.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use xcnf_proto::health::{
    HealthCheckRequest, HealthCheckResponse, health_check_response::ServingStatus,
    health_server::Health,
};

/// The services an endpoint serves, by their gRPC names.
pub const SERVICES: &[&str] = &[
    "networkservice.NetworkService",
    "connection.MonitorConnection",
];

#[derive(Clone, Copy, Debug, Default)]
pub struct EndpointHealth;

fn known(service: &str) -> bool {
    service.is_empty() || SERVICES.contains(&service)
}

fn reply(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Health for EndpointHealth {
    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        if known(&service) {
            Ok(Response::new(reply(ServingStatus::Serving)))
        } else {
            // The protocol's answer for a service the server does not know.
            Err(Status::not_found(format!("unknown service {service:?}")))
        }
    }

    type WatchStream = WatchStream;

    /// The status now, then nothing until the server goes away: it cannot
    /// change while the server answers.
    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let status = if known(&req.into_inner().service) {
            ServingStatus::Serving
        } else {
            ServingStatus::ServiceUnknown
        };
        let once = tokio_stream::once(Ok(reply(status)));
        Ok(Response::new(Box::pin(once.chain(tokio_stream::pending()))))
    }
}
