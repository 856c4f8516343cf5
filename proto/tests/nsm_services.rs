//! NSM services: the descriptor set names the upstream files, packages,
//! imports and methods (so the gRPC paths are networkservicemesh/api's), and
//! the generated clients really send to those paths: each client here talks to
//! the generated server in-process, through a layer that records the HTTP/2
//! path of every call.

use std::error::Error;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use prost::Message;
use prost_types::{FileDescriptorSet, Timestamp};
use tonic::codegen::tokio_stream::{self, Stream};
use tonic::codegen::{Service, http};
use tonic::{Request, Response, Status};
use xcnf_proto::nsm::FILE_DESCRIPTOR_SET;
use xcnf_proto::nsm::connection::monitor_connection_client::MonitorConnectionClient;
use xcnf_proto::nsm::connection::monitor_connection_server::{
    MonitorConnection, MonitorConnectionServer,
};
use xcnf_proto::nsm::connection::{
    Connection, ConnectionEvent, ConnectionEventType, MonitorScopeSelector, PathSegment, State,
};
use xcnf_proto::nsm::networkservice::NetworkServiceRequest;
use xcnf_proto::nsm::networkservice::network_service_client::NetworkServiceClient;
use xcnf_proto::nsm::networkservice::network_service_server::{
    NetworkService, NetworkServiceServer,
};
use xcnf_proto::nsm::registry::network_service_endpoint_registry_client::NetworkServiceEndpointRegistryClient;
use xcnf_proto::nsm::registry::network_service_endpoint_registry_server::{
    NetworkServiceEndpointRegistry, NetworkServiceEndpointRegistryServer,
};
use xcnf_proto::nsm::registry::network_service_registry_client::NetworkServiceRegistryClient;
use xcnf_proto::nsm::registry::network_service_registry_server::{
    NetworkServiceRegistry, NetworkServiceRegistryServer,
};
use xcnf_proto::nsm::registry::{
    self, NetworkServiceEndpoint, NetworkServiceEndpointQuery, NetworkServiceEndpointResponse,
    NetworkServiceQuery, NetworkServiceResponse,
};

type TestResult = Result<(), Box<dyn Error>>;

/// Every NSM method xcnf uses, as networkservicemesh/api v1.x defines it:
/// (gRPC path, input type, output type, server streaming).
const UPSTREAM_METHODS: &[(&str, &str, &str, bool)] = &[
    (
        "/networkservice.NetworkService/Request",
        ".networkservice.NetworkServiceRequest",
        ".connection.Connection",
        false,
    ),
    (
        "/networkservice.NetworkService/Close",
        ".connection.Connection",
        ".google.protobuf.Empty",
        false,
    ),
    (
        "/connection.MonitorConnection/MonitorConnections",
        ".connection.MonitorScopeSelector",
        ".connection.ConnectionEvent",
        true,
    ),
    (
        "/registry.NetworkServiceEndpointRegistry/Register",
        ".registry.NetworkServiceEndpoint",
        ".registry.NetworkServiceEndpoint",
        false,
    ),
    (
        "/registry.NetworkServiceEndpointRegistry/Find",
        ".registry.NetworkServiceEndpointQuery",
        ".registry.NetworkServiceEndpointResponse",
        true,
    ),
    (
        "/registry.NetworkServiceEndpointRegistry/Unregister",
        ".registry.NetworkServiceEndpoint",
        ".google.protobuf.Empty",
        false,
    ),
    (
        "/registry.NetworkServiceRegistry/Register",
        ".registry.NetworkService",
        ".registry.NetworkService",
        false,
    ),
    (
        "/registry.NetworkServiceRegistry/Find",
        ".registry.NetworkServiceQuery",
        ".registry.NetworkServiceResponse",
        true,
    ),
    (
        "/registry.NetworkServiceRegistry/Unregister",
        ".registry.NetworkService",
        ".google.protobuf.Empty",
        false,
    ),
];

#[test]
fn descriptor_set_has_upstream_files_packages_and_imports() -> TestResult {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)?;
    let mut got: Vec<(&str, &str, Vec<&str>)> = fds
        .file
        .iter()
        .map(|f| {
            (
                f.name(),
                f.package(),
                f.dependency.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "connection.proto",
            "connection",
            vec!["google/protobuf/timestamp.proto", "connectioncontext.proto"],
        ),
        ("connectioncontext.proto", "connectioncontext", vec![]),
        ("google/protobuf/empty.proto", "google.protobuf", vec![]),
        ("google/protobuf/timestamp.proto", "google.protobuf", vec![]),
        (
            "networkservice.proto",
            "networkservice",
            vec!["connection.proto", "google/protobuf/empty.proto"],
        ),
        (
            "registry.proto",
            "registry",
            vec![
                "google/protobuf/empty.proto",
                "google/protobuf/timestamp.proto",
            ],
        ),
    ];
    assert_eq!(got, want);
    Ok(())
}

#[test]
fn descriptor_set_has_exactly_the_upstream_methods() -> TestResult {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)?;
    let mut got = Vec::new();
    for file in &fds.file {
        for service in &file.service {
            for method in &service.method {
                assert!(
                    !method.client_streaming(),
                    "{} is client-streaming",
                    method.name()
                );
                got.push((
                    format!("/{}.{}/{}", file.package(), service.name(), method.name()),
                    method.input_type().to_owned(),
                    method.output_type().to_owned(),
                    method.server_streaming(),
                ));
            }
        }
    }
    let want: Vec<(String, String, String, bool)> = UPSTREAM_METHODS
        .iter()
        .map(|(p, i, o, s)| (p.to_string(), i.to_string(), o.to_string(), *s))
        .collect();
    got.sort();
    let mut want_sorted = want;
    want_sorted.sort();
    assert_eq!(got, want_sorted);
    Ok(())
}

#[test]
fn generated_service_names_are_the_upstream_ones() {
    use xcnf_proto::nsm::connection::monitor_connection_server;
    use xcnf_proto::nsm::networkservice::network_service_server;
    use xcnf_proto::nsm::registry::{
        network_service_endpoint_registry_server, network_service_registry_server,
    };
    assert_eq!(
        network_service_server::SERVICE_NAME,
        "networkservice.NetworkService"
    );
    assert_eq!(
        monitor_connection_server::SERVICE_NAME,
        "connection.MonitorConnection"
    );
    assert_eq!(
        network_service_endpoint_registry_server::SERVICE_NAME,
        "registry.NetworkServiceEndpointRegistry"
    );
    assert_eq!(
        network_service_registry_server::SERVICE_NAME,
        "registry.NetworkServiceRegistry"
    );
}

/// Records the path of every request on its way to the wrapped server.
struct Recorder<S> {
    inner: S,
    paths: Arc<Mutex<Vec<String>>>,
}

impl<S, B> Service<http::Request<B>> for Recorder<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> S::Future {
        // A poisoned lock leaves the path out, which the test then reports.
        if let Ok(mut paths) = self.paths.lock() {
            paths.push(req.uri().path().to_owned());
        }
        self.inner.call(req)
    }
}

/// An endpoint that accepts the first preferred mechanism.
struct Endpoint;

#[tonic::async_trait]
impl NetworkService for Endpoint {
    async fn request(
        &self,
        request: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let request = request.into_inner();
        let mut conn = request
            .connection
            .ok_or_else(|| Status::invalid_argument("connection missing"))?;
        conn.mechanism = request.mechanism_preferences.into_iter().next();
        conn.state = State::Up.into();
        Ok(Response::new(conn))
    }

    async fn close(&self, request: Request<Connection>) -> Result<Response<()>, Status> {
        if request.get_ref().id.is_empty() {
            return Err(Status::invalid_argument("connection id missing"));
        }
        Ok(Response::new(()))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<ConnectionEvent, Status>> + Send>>;

/// Reports one connection per selected path segment, DOWN.
struct Monitor;

#[tonic::async_trait]
impl MonitorConnection for Monitor {
    type MonitorConnectionsStream = EventStream;

    async fn monitor_connections(
        &self,
        request: Request<MonitorScopeSelector>,
    ) -> Result<Response<EventStream>, Status> {
        let connections = request
            .into_inner()
            .path_segments
            .into_iter()
            .map(|seg| {
                let conn = Connection {
                    id: seg.id.clone(),
                    state: State::Down.into(),
                    ..Connection::default()
                };
                (seg.id, conn)
            })
            .collect();
        let event = ConnectionEvent {
            r#type: ConnectionEventType::InitialStateTransfer.into(),
            connections,
        };
        Ok(Response::new(Box::pin(tokio_stream::iter([Ok(event)]))))
    }
}

const EXPIRES: Timestamp = Timestamp {
    seconds: 1_700_000_600,
    nanos: 0,
};

type NseStream = Pin<Box<dyn Stream<Item = Result<NetworkServiceEndpointResponse, Status>> + Send>>;
type NsStream = Pin<Box<dyn Stream<Item = Result<NetworkServiceResponse, Status>> + Send>>;

/// A registry that sets the expiration and finds what is queried, then its
/// deletion.
struct Registry;

#[tonic::async_trait]
impl NetworkServiceEndpointRegistry for Registry {
    type FindStream = NseStream;

    async fn register(
        &self,
        request: Request<NetworkServiceEndpoint>,
    ) -> Result<Response<NetworkServiceEndpoint>, Status> {
        let mut nse = request.into_inner();
        nse.expiration_time = Some(EXPIRES);
        Ok(Response::new(nse))
    }

    async fn find(
        &self,
        request: Request<NetworkServiceEndpointQuery>,
    ) -> Result<Response<NseStream>, Status> {
        let nse = request.into_inner().network_service_endpoint;
        let found = [false, true].map(|deleted| {
            Ok(NetworkServiceEndpointResponse {
                network_service_endpoint: nse.clone(),
                deleted,
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(found))))
    }

    async fn unregister(
        &self,
        _request: Request<NetworkServiceEndpoint>,
    ) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}

#[tonic::async_trait]
impl NetworkServiceRegistry for Registry {
    type FindStream = NsStream;

    async fn register(
        &self,
        request: Request<registry::NetworkService>,
    ) -> Result<Response<registry::NetworkService>, Status> {
        let mut ns = request.into_inner();
        ns.path_ids.push("registry".to_owned());
        Ok(Response::new(ns))
    }

    async fn find(
        &self,
        request: Request<NetworkServiceQuery>,
    ) -> Result<Response<NsStream>, Status> {
        let ns = request.into_inner().network_service;
        let found = [false, true].map(|deleted| {
            Ok(NetworkServiceResponse {
                network_service: ns.clone(),
                deleted,
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(found))))
    }

    async fn unregister(
        &self,
        _request: Request<registry::NetworkService>,
    ) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}

#[tokio::test]
async fn generated_clients_call_the_upstream_paths() -> TestResult {
    let paths = Arc::new(Mutex::new(Vec::new()));
    let mut ns = NetworkServiceClient::new(Recorder {
        inner: NetworkServiceServer::new(Endpoint),
        paths: Arc::clone(&paths),
    });
    let request = NetworkServiceRequest {
        connection: Some(Connection {
            id: "c1".to_owned(),
            network_service: "svc".to_owned(),
            ..Connection::default()
        }),
        mechanism_preferences: vec![xcnf_proto::nsm::connection::Mechanism {
            cls: "LOCAL".to_owned(),
            r#type: "KERNEL".to_owned(),
            parameters: [("name".to_owned(), "nsm-1".to_owned())].into(),
        }],
    };
    let conn = ns.request(request.clone()).await?.into_inner();
    assert_eq!(
        conn.mechanism,
        request.mechanism_preferences.first().cloned()
    );
    assert_eq!(conn.state(), State::Up);
    ns.close(conn).await?;

    let mut monitor = MonitorConnectionClient::new(Recorder {
        inner: MonitorConnectionServer::new(Monitor),
        paths: Arc::clone(&paths),
    });
    let selector = MonitorScopeSelector {
        path_segments: vec![PathSegment {
            name: "nsc".to_owned(),
            id: "c1".to_owned(),
            ..PathSegment::default()
        }],
        network_services: vec![],
    };
    let mut events = monitor.monitor_connections(selector).await?.into_inner();
    let event = events.message().await?.ok_or("no initial event")?;
    assert_eq!(event.r#type(), ConnectionEventType::InitialStateTransfer);
    let down = event.connections.get("c1").ok_or("c1 not reported")?;
    assert_eq!(down.state(), State::Down);
    assert!(events.message().await?.is_none());

    let mut nse_registry = NetworkServiceEndpointRegistryClient::new(Recorder {
        inner: NetworkServiceEndpointRegistryServer::new(Registry),
        paths: Arc::clone(&paths),
    });
    let nse = NetworkServiceEndpoint {
        name: "nse-1".to_owned(),
        network_service_names: vec!["svc".to_owned()],
        url: "unix:///tmp/nse/listen.on".to_owned(),
        ..NetworkServiceEndpoint::default()
    };
    let registered = nse_registry.register(nse.clone()).await?.into_inner();
    assert_eq!(registered.expiration_time, Some(EXPIRES));
    let mut found = nse_registry
        .find(NetworkServiceEndpointQuery {
            network_service_endpoint: Some(nse.clone()),
            watch: true,
        })
        .await?
        .into_inner();
    let first = found.message().await?.ok_or("no first find result")?;
    assert_eq!(first.network_service_endpoint.as_ref(), Some(&nse));
    assert!(!first.deleted);
    assert!(found.message().await?.ok_or("no deletion")?.deleted);
    assert!(found.message().await?.is_none());
    nse_registry.unregister(registered).await?;

    let mut ns_registry = NetworkServiceRegistryClient::new(Recorder {
        inner: NetworkServiceRegistryServer::new(Registry),
        paths: Arc::clone(&paths),
    });
    let service = registry::NetworkService {
        name: "svc".to_owned(),
        payload: "ETHERNET".to_owned(),
        ..registry::NetworkService::default()
    };
    let registered = ns_registry.register(service.clone()).await?.into_inner();
    assert_eq!(registered.path_ids, ["registry"]);
    let mut found = ns_registry
        .find(NetworkServiceQuery {
            network_service: Some(service.clone()),
            watch: false,
        })
        .await?
        .into_inner();
    let first = found.message().await?.ok_or("no first find result")?;
    assert_eq!(first.network_service, Some(service));
    assert!(found.message().await?.ok_or("no deletion")?.deleted);
    assert!(found.message().await?.is_none());
    ns_registry.unregister(registered).await?;

    let got = paths
        .lock()
        .unwrap_or_else(|e| panic!("path recorder poisoned: {e}"))
        .clone();
    let want: Vec<&str> = UPSTREAM_METHODS.iter().map(|m| m.0).collect();
    assert_eq!(got, want);
    Ok(())
}
