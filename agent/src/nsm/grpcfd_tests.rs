//! grpcfd: descriptors travel beside the bytes, are found by inode, and the
//! URLs are rewritten on the way in and restored on the way out; the same
//! through tonic over the transport.

use std::{
    os::fd::AsRawFd,
    os::unix::fs::MetadataExt,
    time::{Duration, SystemTime},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{UnixListener, UnixStream},
    time::Instant,
};
use tonic::{Request, Response, Status};
use xcnf_proto::nsm::{
    connection::{Connection, Mechanism},
    networkservice::{
        NetworkServiceRequest,
        network_service_client::NetworkServiceClient,
        network_service_server::{NetworkService, NetworkServiceServer},
    },
};

use super::{
    grpcfd::{FdShared, FdStream, INODE_URL, inode_url, parse_inode_url},
    security::Security,
    transport::{ConnInfo, connect, incoming},
};

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "xcnf-grpcfd-{tag}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{e}"));
    d
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[test]
fn inode_urls_round_trip() {
    assert_eq!(inode_url((64769, 4026531840)), "inode://64769/4026531840");
    assert_eq!(
        parse_inode_url("inode://64769/4026531840"),
        Some((64769, 4026531840))
    );
    assert_eq!(parse_inode_url("file:///proc/self/ns/net"), None);
    assert_eq!(parse_inode_url("inode://1/x"), None);
}

#[tokio::test]
async fn a_descriptor_arrives_with_the_bytes_and_is_found_by_inode() {
    let dir = scratch("raw");
    let file = dir.join("f");
    std::fs::write(&file, b"hello").unwrap_or_else(|e| panic!("{e}"));
    let meta = std::fs::metadata(&file).unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
    let (sa, sb) = (FdShared::new(), FdShared::new());
    let (mut wa, mut rb) = (FdStream::new(a, sa.clone()), FdStream::new(b, sb.clone()));

    let orig = format!("file://{}", file.display());
    let url = sa.send_file(&orig).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(url, inode_url((meta.dev(), meta.ino())));
    wa.write_all(b"message")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = [0u8; 7];
    rb.read_exact(&mut buf)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        &buf, b"message",
        "the byte that carried the descriptor is data too"
    );

    let local = sb
        .recv_file(&url, soon())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let path = local
        .strip_prefix("file://")
        .unwrap_or_else(|| panic!("{local}"));
    assert!(
        path.starts_with(&format!("/proc/{}/fd/", std::process::id())),
        "{local}"
    );
    // The received descriptor is the same file: same inode, same content.
    let got = std::fs::metadata(path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((got.dev(), got.ino()), (meta.dev(), meta.ino()));
    assert_eq!(std::fs::read(path).unwrap_or_default(), b"hello");
    assert_eq!(sb.restore(&local), url);
    assert_eq!(sa.restore(&url), orig);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_missing_descriptor_times_out() {
    let fds = FdShared::new();
    let e = fds
        .recv_file("inode://1/2", Instant::now() + Duration::from_millis(50))
        .await;
    assert!(e.is_err(), "{e:?}");
}

#[tokio::test]
async fn many_descriptors_go_in_batches_of_64() {
    let dir = scratch("many");
    let (a, b) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
    let (sa, sb) = (FdShared::new(), FdShared::new());
    let (mut wa, mut rb) = (FdStream::new(a, sa.clone()), FdStream::new(b, sb.clone()));
    let mut urls = Vec::new();
    for i in 0..100 {
        let f = dir.join(format!("f{i}"));
        std::fs::write(&f, b"x").unwrap_or_else(|e| panic!("{e}"));
        urls.push(
            sa.send_file(&format!("file://{}", f.display()))
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    let writer = tokio::spawn(async move { wa.write_all(b"0123456789").await.map(|()| wa) });
    let mut buf = [0u8; 10];
    rb.read_exact(&mut buf)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&buf, b"0123456789");
    let _wa = writer.await.unwrap_or_else(|e| panic!("{e}"));
    for u in &urls {
        sb.recv_file(u, soon())
            .await
            .unwrap_or_else(|e| panic!("{u}: {e}"));
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Echoes the request's mechanism after checking its descriptor arrived:
/// the inode of the file it opens through the rewritten URL goes back in
/// the `seen` parameter.
struct Echo;

#[tonic::async_trait]
impl NetworkService for Echo {
    async fn request(
        &self,
        req: Request<NetworkServiceRequest>,
    ) -> Result<Response<Connection>, Status> {
        let info = req
            .extensions()
            .get::<ConnInfo>()
            .cloned()
            .ok_or_else(|| Status::internal("no connection info"))?;
        let mut m = req
            .into_inner()
            .mechanism_preferences
            .into_iter()
            .next()
            .ok_or_else(|| Status::invalid_argument("no mechanism"))?;
        info.inner
            .recv_mechanism(&mut m, soon())
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let local = m.parameters.get(INODE_URL).cloned().unwrap_or_default();
        let meta = std::fs::metadata(local.trim_start_matches("file://"))
            .map_err(|e| Status::internal(e.to_string()))?;
        m.parameters
            .insert("seen".into(), format!("{}/{}", meta.dev(), meta.ino()));
        m.parameters.insert("local".into(), local);
        info.inner.restore_mechanism(&mut m);
        Ok(Response::new(Connection {
            mechanism: Some(m),
            ..Default::default()
        }))
    }

    async fn close(&self, _: Request<Connection>) -> Result<Response<()>, Status> {
        Ok(Response::new(()))
    }
}

#[tokio::test]
async fn through_grpc_the_netns_descriptor_arrives_and_urls_are_restored() {
    let dir = scratch("grpc");
    let sock = dir.join("s.sock");
    let listener = UnixListener::bind(&sock).unwrap_or_else(|e| panic!("{e}"));
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NetworkServiceServer::new(Echo))
            .serve_with_incoming(incoming(listener, &Security::Insecure)),
    );
    let dialed = connect(&sock, &Security::Insecure)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dialed.peer(), None);
    let (channel, fds) = (dialed.channel, dialed.fds);
    let netns = std::fs::metadata("/proc/self/ns/net").unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..2 {
        let mut m = Mechanism {
            cls: "LOCAL".into(),
            r#type: "KERNEL".into(),
            parameters: [(
                INODE_URL.to_string(),
                "file:///proc/self/ns/net".to_string(),
            )]
            .into(),
        };
        fds.send_mechanism(&mut m).unwrap_or_else(|e| panic!("{e}"));
        let sent = m.parameters[INODE_URL].clone();
        assert_eq!(sent, inode_url((netns.dev(), netns.ino())));
        let reply = NetworkServiceClient::new(channel.clone())
            .request(NetworkServiceRequest {
                connection: Some(Connection::default()),
                mechanism_preferences: vec![m],
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner();
        let mut got = reply.mechanism.unwrap_or_default();
        assert_eq!(
            got.parameters["seen"],
            format!("{}/{}", netns.dev(), netns.ino())
        );
        assert!(got.parameters["local"].contains("/fd/"), "{got:?}");
        // The server put back the inode URL; the client restores its own.
        assert_eq!(got.parameters[INODE_URL], sent);
        fds.restore_mechanism(&mut got);
        assert_eq!(got.parameters[INODE_URL], "file:///proc/self/ns/net");
    }
    server.abort();
    let _ = fds.received((0, 0)).map(|f| f.as_raw_fd());
    let _ = std::fs::remove_dir_all(dir);
}
